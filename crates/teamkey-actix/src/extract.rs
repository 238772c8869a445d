//! `Authenticated` and `MaybeAuthenticated` extractors.

use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;

use actix_web::dev::Payload;
use actix_web::http::header::{AUTHORIZATION, HeaderMap};
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use teamkey_core::{HeaderProblem, HeaderRules, KeyManager, Principal, VerifyError};

use crate::AuthRejection;

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// The caller, proven by a valid API key. Scope every query by
/// `caller.team_id()`.
///
/// Behind [`RequireApiKey`](crate::RequireApiKey) it takes the principal the
/// middleware verified; on its own it verifies the key itself with the
/// app's `web::Data<KeyManager>` and the app's `HeaderRules`, added with
/// `App::app_data(rules)` (the default rules if absent).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

impl Authenticated {
    /// Refuses with 403 unless the key carries `scope`:
    /// `caller.require_scope("scans:write")?;`
    pub fn require_scope(&self, scope: &str) -> Result<(), AuthRejection> {
        if self.0.has_scope(scope) {
            Ok(())
        } else {
            Err(AuthRejection::MissingScope(scope.to_owned()))
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
/// valid key, and still a 401 for a bad one.
///
/// Not `Option<Authenticated>`: actix-web has its own `Option<T>`
/// extractor for every `T`, which turns any error into `None`, so a bad
/// key would pass as anonymous. The axum adapter has a
/// `MaybeAuthenticated` too, so that code reads the same in both.
#[derive(Debug, Clone)]
pub struct MaybeAuthenticated(pub Option<Authenticated>);

/// The rules when the application sets none.
pub(crate) fn default_rules() -> &'static HeaderRules {
    static DEFAULT_RULES: LazyLock<HeaderRules> = LazyLock::new(HeaderRules::default);
    &DEFAULT_RULES
}

/// The app's `web::Data<KeyManager>`, if it has one.
pub(crate) fn app_manager(req: &HttpRequest) -> Option<KeyManager> {
    req.app_data::<web::Data<KeyManager>>()
        .map(|data| KeyManager::clone(data))
}

/// Logs, for `guard`, the setup bug behind [`AuthRejection::Misconfigured`]
/// and how to fix it: `or_else` names the guard's own alternative.
pub(crate) fn log_no_manager(guard: &str, or_else: &str) {
    tracing::error!(
        "teamkey: {guard} has no KeyManager: add App::app_data(web::Data::new(manager)), \
         or use {or_else}; answering 500"
    );
}

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

/// Why no principal: the key, or the setup.
enum Failure {
    Key(VerifyError),
    NoManager,
}

impl From<Failure> for AuthRejection {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Key(error) => error.into(),
            Failure::NoManager => Self::Misconfigured,
        }
    }
}

async fn principal(req: HttpRequest) -> Result<Principal, Failure> {
    if let Some(principal) = req.extensions().get::<Principal>() {
        return Ok(principal.clone());
    }
    // Checked before the key: a missing manager is found on the first
    // request, with a key or without.
    let Some(manager) = app_manager(&req) else {
        log_no_manager(
            "the Authenticated extractor",
            "RequireApiKey::with_manager(manager) in front of the handler",
        );
        return Err(Failure::NoManager);
    };
    let rules = req.app_data::<HeaderRules>().unwrap_or_else(|| default_rules());
    verify(&manager, rules, req.headers()).await.map_err(Failure::Key)
}

impl FromRequest for Authenticated {
    type Error = AuthRejection;
    type Future = LocalBoxFuture<Result<Self, AuthRejection>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move { Ok(Self(principal(req).await?)) })
    }
}

impl FromRequest for MaybeAuthenticated {
    type Error = AuthRejection;
    type Future = LocalBoxFuture<Result<Self, AuthRejection>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            match principal(req).await {
                Ok(principal) => Ok(Self(Some(Authenticated(principal)))),
                Err(Failure::Key(VerifyError::Header(HeaderProblem::Missing))) => Ok(Self(None)),
                Err(e) => Err(e.into()),
            }
        })
    }
}
