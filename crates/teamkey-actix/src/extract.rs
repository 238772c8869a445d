//! `Authenticated` and `MaybeAuthenticated` extractors.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use actix_web::dev::Payload;
use actix_web::http::header::{AUTHORIZATION, HeaderMap};
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use teamkey_core::{HeaderProblem, HeaderRules, KeyManager, Principal, StoreError, VerifyError};

use crate::AuthError;

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// The caller, proven by a valid API key. Scope every query by
/// `caller.team_id()`.
///
/// Behind [`RequireApiKey`](crate::RequireApiKey) it takes the principal the
/// middleware verified; on its own it verifies the key itself with the
/// `web::Data<KeyManager>` and the `HeaderRules` (default if absent) from
/// the app data.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

impl Authenticated {
    /// Refuses with 403 unless the key carries `scope`:
    /// `caller.require_scope("scans:write")?;`
    pub fn require_scope(&self, scope: &str) -> Result<(), AuthError> {
        if self.0.has_scope(scope) {
            Ok(())
        } else {
            Err(AuthError::MissingScope(scope.to_owned()))
        }
    }
}

impl std::ops::Deref for Authenticated {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.0
    }
}

/// Optional auth: `None` when no key is presented at all, the caller for a
/// valid key, and still a 401 for a bad one. (actix's own
/// `Option<Authenticated>` would turn a bad key into `None`.)
#[derive(Debug, Clone)]
pub struct MaybeAuthenticated(pub Option<Authenticated>);

/// Verifies the key in `headers` by `rules`.
pub(crate) async fn verify(
    manager: &KeyManager,
    rules: &HeaderRules,
    headers: &HeaderMap,
) -> Result<Principal, VerifyError> {
    let key_header = headers.get_all(rules.header_name()).map(|v| v.as_bytes());
    let authorization = headers.get_all(AUTHORIZATION).map(|v| v.as_bytes());
    manager.verify_headers(rules, key_header, authorization).await
}

async fn principal(req: HttpRequest) -> Result<Principal, VerifyError> {
    if let Some(principal) = req.extensions().get::<Principal>() {
        return Ok(principal.clone());
    }
    let Some(manager) = req.app_data::<web::Data<KeyManager>>() else {
        tracing::error!("teamkey: no web::Data<KeyManager> in the app data; refusing with 503");
        return Err(VerifyError::Store(StoreError::backend(
            "no KeyManager configured",
        )));
    };
    static DEFAULT_RULES: LazyLock<HeaderRules> = LazyLock::new(HeaderRules::default);
    let rules = req.app_data::<HeaderRules>().unwrap_or(&DEFAULT_RULES);
    verify(manager, rules, req.headers()).await
}

impl FromRequest for Authenticated {
    type Error = AuthError;
    type Future = LocalBoxFuture<Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Ok(Self(principal(req).await?)) })
    }
}

impl FromRequest for MaybeAuthenticated {
    type Error = AuthError;
    type Future = LocalBoxFuture<Result<Self, AuthError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            match principal(req).await {
                Ok(principal) => Ok(Self(Some(Authenticated(principal)))),
                Err(VerifyError::Header(HeaderProblem::Missing)) => Ok(Self(None)),
                Err(e) => Err(e.into()),
            }
        })
    }
}
