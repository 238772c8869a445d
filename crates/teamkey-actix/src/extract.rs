//! `Authenticated` and `MaybeAuthenticated` extractors.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};

use actix_web::dev::Payload;
use actix_web::http::header::{AUTHORIZATION, HeaderName};
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use teamkey_core::{HeaderProblem, HeaderRules, KeyManager, Principal, VerifyError};

use crate::AuthRejection;
use crate::context::client_ip;
use crate::limit::{Admitted, admitted};

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// The caller, proven by a valid API key. Scope every query by
/// `caller.team_id()`.
///
/// Behind [`RequireApiKey`](crate::RequireApiKey) it takes the principal the
/// middleware verified; on its own it verifies the key itself with the
/// app's `web::Data<KeyManager>` and the app's `HeaderRules`, added with
/// `App::app_data(rules)` (the default rules if absent).
///
/// On its own it also enforces the key's rate limit
/// ([`KeyManager::admit`]): over the limit the handler never runs and the
/// client gets the `429`, headers included. An allowed response carries
/// the `RateLimit` headers only inside [`AddRateLimitHeaders`](crate::AddRateLimitHeaders)
/// (or a guard): an extractor cannot reach the response. However many
/// extractors a handler has, a request is counted once; behind a guard, the
/// guard counted it.
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

/// The app's `web::Data<KeyManager>`, if it has one; borrowed, so no
/// reference count moves per request.
pub(crate) fn app_manager_ref(req: &HttpRequest) -> Option<&KeyManager> {
    req.app_data::<web::Data<KeyManager>>().map(|data| &***data)
}

/// Logs, for `guard`, the setup bug behind [`AuthRejection::Misconfigured`]
/// and how to fix it: `or_else` names the guard's own alternative.
pub(crate) fn log_no_manager(guard: &str, or_else: &str) {
    tracing::error!(
        "teamkey: {guard} has no KeyManager: add App::app_data(web::Data::new(manager)), \
         or use {or_else}; answering 500"
    );
}

/// The default key header, parsed once: looking a header up by `&str`
/// parses the name, and allocates a copy of it, on every request.
static DEFAULT_KEY_HEADER: HeaderName = HeaderName::from_static(HeaderRules::DEFAULT_HEADER);

/// Verifies the key in `req`'s headers by `rules`.
pub(crate) async fn verify(
    manager: &KeyManager,
    rules: &HeaderRules,
    req: &HttpRequest,
) -> Result<Principal, VerifyError> {
    // The address is looked up only if the manager keeps it.
    let client_ip = if manager.records_client_ips() {
        client_ip(req)
    } else {
        None
    };
    let headers = req.headers();
    let key_header = if rules.header_name() == HeaderRules::DEFAULT_HEADER {
        headers.get_all(&DEFAULT_KEY_HEADER)
    } else {
        headers.get_all(rules.header_name())
    };
    let key_header = key_header.map(|v| v.as_bytes());
    // Unread without bearer (`presented` ignores it then): skip the lookup.
    let authorization = if rules.bearer_allowed() {
        headers.get_all(AUTHORIZATION)
    } else {
        Default::default()
    };
    let authorization = authorization.map(|v| v.as_bytes());
    manager
        .verify_headers_from(rules, key_header, authorization, client_ip)
        .await
}

/// Why no principal: the key, its rate limit, or the setup.
enum Failure {
    Key(VerifyError),
    Refused(AuthRejection),
    NoManager,
}

impl From<Failure> for AuthRejection {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Key(error) => error.into(),
            Failure::Refused(refusal) => refusal,
            Failure::NoManager => Self::Misconfigured,
        }
    }
}

/// Marks a request whose key an extractor is verifying, and will admit:
/// actix starts every extractor of a handler before it awaits any, so
/// none of them can see the principal another is about to keep. The first
/// to start admits; the others only verify (a refusal of the first stops
/// the handler anyway).
struct Admitting;

/// Whether the extractor starting now is the request's first to verify,
/// and so the one to admit.
fn claim_admission(req: &HttpRequest) -> bool {
    let mut extensions = req.extensions_mut();
    if extensions.contains::<Admitting>() {
        return false;
    }
    // A zero-sized value: its box allocates nothing.
    extensions.insert(Admitting);
    true
}

/// Verifies the key itself, and admits it if `admits`: no middleware put a
/// principal into `req`.
async fn principal(req: HttpRequest, admits: bool) -> Result<Principal, Failure> {
    // The extractor that admits is polled first: if it kept its principal
    // (a limited key's) by now, that is the one verification.
    if !admits && let Some(principal) = verified(&req) {
        return Ok(principal);
    }
    // Checked before the key: a missing manager is found on the first
    // request, with a key or without.
    let Some(manager) = app_manager_ref(&req) else {
        log_no_manager(
            "the Authenticated extractor",
            "RequireApiKey::with_manager(manager) in front of the handler",
        );
        return Err(Failure::NoManager);
    };
    let rules = req.app_data::<HeaderRules>().unwrap_or_else(|| default_rules());
    let principal = verify(manager, rules, &req).await.map_err(Failure::Key)?;
    if !admits {
        return Ok(principal);
    }
    if let Some(limit) = admitted(manager.admit(&principal).await).map_err(Failure::Refused)? {
        // Counted: a later extractor of this request takes this principal
        // rather than count the request again, and `AddRateLimitHeaders`
        // finds the headers. (Without a limit nothing is kept.)
        let mut extensions = req.extensions_mut();
        extensions.insert(principal.clone());
        extensions.insert(Admitted(limit));
    }
    Ok(principal)
}

/// The future of the [`Authenticated`] and [`MaybeAuthenticated`]
/// extractors. Behind [`RequireApiKey`](crate::RequireApiKey) it is ready
/// at once, with the principal the middleware verified: no request clone
/// and no allocation per request. On its own it verifies the key.
pub struct ExtractFuture<T>(Extracting<T>);

enum Extracting<T> {
    Found(Ready<Result<T, AuthRejection>>),
    Verifying(LocalBoxFuture<Result<T, AuthRejection>>),
}

impl<T> Future for ExtractFuture<T> {
    type Output = Result<T, AuthRejection>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Both variants are `Unpin`, so `Self` is.
        match &mut self.get_mut().0 {
            Extracting::Found(found) => Pin::new(found).poll(cx),
            Extracting::Verifying(verifying) => verifying.as_mut().poll(cx),
        }
    }
}

impl<T> std::fmt::Debug for ExtractFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.0 {
            Extracting::Found(_) => "found",
            Extracting::Verifying(_) => "verifying",
        };
        f.debug_tuple("ExtractFuture").field(&state).finish()
    }
}

/// The principal a middleware put into the request, if any.
fn verified(req: &HttpRequest) -> Option<Principal> {
    req.extensions().get::<Principal>().cloned()
}

impl FromRequest for Authenticated {
    type Error = AuthRejection;
    type Future = ExtractFuture<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        if let Some(principal) = verified(req) {
            return ExtractFuture(Extracting::Found(ready(Ok(Self(principal)))));
        }
        let admits = claim_admission(req);
        let req = req.clone();
        ExtractFuture(Extracting::Verifying(Box::pin(async move {
            Ok(Self(principal(req, admits).await?))
        })))
    }
}

impl FromRequest for MaybeAuthenticated {
    type Error = AuthRejection;
    type Future = ExtractFuture<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        if let Some(principal) = verified(req) {
            return ExtractFuture(Extracting::Found(ready(Ok(Self(Some(Authenticated(principal)))))));
        }
        let admits = claim_admission(req);
        let req = req.clone();
        ExtractFuture(Extracting::Verifying(Box::pin(async move {
            match principal(req, admits).await {
                Ok(principal) => Ok(Self(Some(Authenticated(principal)))),
                Err(Failure::Key(VerifyError::Header(HeaderProblem::Missing))) => Ok(Self(None)),
                Err(e) => Err(e.into()),
            }
        })))
    }
}
