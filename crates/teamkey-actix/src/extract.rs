//! `Authenticated` and `MaybeAuthenticated` extractors.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

use actix_web::dev::{Extensions, Payload};
use actix_web::http::header::{AUTHORIZATION, HeaderName};
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use teamkey_core::{Eager, HeaderProblem, HeaderRules, KeyManager, Principal, VerifyError};

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
/// guard counted it. The first extractor to run counts it, and the others
/// take its outcome: a refusal too, so a `429` swallowed by the first
/// (`Option<..>`, `Result<..>`, a middleware's `.extract().ok()`) is still
/// the answer of the next, as on axum.
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
pub(crate) fn verify<'a>(
    manager: &'a KeyManager,
    rules: &HeaderRules,
    req: &'a HttpRequest,
) -> Eager<'a, Result<Principal, VerifyError>> {
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
    manager.verify_headers_from(rules, key_header, authorization, client_ip)
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

// How the extractors of one request share its admission: actix calls
// `from_request` on every extractor of a handler before it polls any, and
// then polls them in turn, in one task. The first to be polled with no
// outcome kept claims the admission (`Admitting`), verifies the key and
// admits it; the others wait for it, then take its outcome from the
// request's extensions rather than verify and count again:
//
// - allowed: the `Principal` (and `Admitted`, a limited key's headers);
// - refused: `Refused`, the same 429 (or 503), whether or not the
//   extractor that got it had its error swallowed (`Option<..>`,
//   `Result<..>`, a middleware's `.extract().ok()`): the handler's own
//   extractor answers it, as on axum;
// - no admission (a bad key, no key, no manager): nothing, and the next
//   extractor verifies the key itself, and admits it if it is valid.
//
// An unlimited key's principal is kept only when the request has several
// extractors (`Several`), so that one `Authenticated` costs no allocation.
// The markers are zero-sized: inserting them allocates nothing.

/// A key extractor was started for this request.
struct Started;

/// More than one key extractor was started for this request: the one that
/// admits keeps the principal for the others even when no limit applies.
struct Several;

/// An extractor of this request has claimed its admission: it is
/// verifying the key and will admit it.
struct Admitting;

/// The extractors waiting for the one that is [`Admitting`]; only when one
/// was polled before the admission was made (a store or limiter that
/// answers later).
struct Waiting(Vec<Waker>);

/// The refusal of this request's admission, for its other extractors and
/// the guards.
struct Refused(AuthRejection);

/// The outcome of this request's admission, when one is kept: the
/// principal a guard or an extractor verified and admitted, or the
/// refusal.
fn settled(extensions: &Extensions) -> Option<Result<Principal, AuthRejection>> {
    match extensions.get::<Principal>() {
        Some(principal) => Some(Ok(principal.clone())),
        None => refusal_in(extensions).map(Err),
    }
}

/// The refusal a key extractor kept in `req` (one a middleware ran and
/// swallowed, say): answered as it is, never counted again.
pub(crate) fn kept_refusal(req: &HttpRequest) -> Option<AuthRejection> {
    refusal_in(&req.extensions())
}

fn refusal_in(extensions: &Extensions) -> Option<AuthRejection> {
    extensions
        .get::<Refused>()
        .map(|Refused(refusal)| refusal.clone())
}

/// Starts an extractor: the outcome kept in `req`, if any; else the
/// extractor is noted, and it will verify or wait at its first poll.
fn start(req: &HttpRequest) -> Option<Result<Principal, AuthRejection>> {
    let mut extensions = req.extensions_mut();
    if let Some(settled) = settled(&extensions) {
        return Some(settled);
    }
    if extensions.contains::<Started>() {
        extensions.insert(Several);
    } else {
        extensions.insert(Started);
    }
    None
}

/// Where an extractor stands with the admission of its request.
enum Turn<'a> {
    /// Made: its outcome.
    Settled(Result<Principal, AuthRejection>),
    /// Being made by another extractor: wait for it.
    Wait,
    /// Claimed by this one, to make.
    Admit(Claim<'a>),
}

/// This extractor's turn: the outcome kept, or else wait for the extractor
/// admitting the request, or else claim the admission.
fn turn(req: &HttpRequest) -> Turn<'_> {
    let mut extensions = req.extensions_mut();
    if let Some(settled) = settled(&extensions) {
        return Turn::Settled(settled);
    }
    if extensions.contains::<Admitting>() {
        return Turn::Wait;
    }
    extensions.insert(Admitting);
    Turn::Admit(Claim(req))
}

/// Ready once no extractor of `req` is [`Admitting`] it; until then this
/// task is woken when that one is done.
fn admitted_elsewhere(req: &HttpRequest) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| {
        let mut extensions = req.extensions_mut();
        if !extensions.contains::<Admitting>() {
            return Poll::Ready(());
        }
        let waiting = &mut extensions.get_or_insert_with(|| Waiting(Vec::new())).0;
        if !waiting.iter().any(|waker| waker.will_wake(cx.waker())) {
            waiting.push(cx.waker().clone());
        }
        Poll::Pending
    })
}

/// The admission of a request, claimed by the extractor making it. Dropped
/// (the outcome kept, the key refused before admission, or the extractor's
/// future dropped half way), it releases the claim and wakes the
/// extractors waiting: they take the outcome kept, or else one of them
/// makes the admission itself. None waits for ever.
struct Claim<'a>(&'a HttpRequest);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let waiting = {
            let mut extensions = self.0.extensions_mut();
            extensions.remove::<Admitting>();
            extensions.remove::<Waiting>()
        };
        // Woken with the extensions released: a waker may poll at once.
        for waker in waiting.into_iter().flat_map(|Waiting(wakers)| wakers) {
            waker.wake();
        }
    }
}

/// The principal of `req`'s key: the one a middleware or another extractor
/// of the request admitted (or its refusal), or else the key verified and
/// admitted here.
async fn principal(req: HttpRequest) -> Result<Principal, Failure> {
    let _claim = loop {
        match turn(&req) {
            Turn::Settled(settled) => return settled.map_err(Failure::Refused),
            Turn::Wait => admitted_elsewhere(&req).await,
            Turn::Admit(claim) => break claim,
        }
    };
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
    let admission = admitted(manager.admit(&principal).await);
    // Kept before the claim is released (it is dropped last), for the
    // extractors of this request after this one.
    let mut extensions = req.extensions_mut();
    match admission {
        Ok(limit) => {
            // Counted, or a limited key let through by a limiter failing
            // open: never counted again. Without a limit, kept only for
            // the other extractors of a handler with several.
            if limit.is_some() || principal.rate_limit().is_some() || extensions.contains::<Several>() {
                extensions.insert(principal.clone());
            }
            if let Some(limit) = limit {
                // For `AddRateLimitHeaders`.
                extensions.insert(Admitted(limit));
            }
            Ok(principal)
        }
        Err(refusal) => {
            // The same answer from every extractor of the request, even
            // when this one's error is swallowed.
            extensions.insert(Refused(refusal.clone()));
            Err(Failure::Refused(refusal))
        }
    }
}

/// The future of the [`Authenticated`] and [`MaybeAuthenticated`]
/// extractors. Behind [`RequireApiKey`](crate::RequireApiKey) it is ready
/// at once, with the principal the middleware verified: no request clone
/// and no allocation per request; so it is with what another extractor of
/// the request kept (a limited key's principal, or its refusal). Else it
/// verifies the key, or waits for the extractor of the request doing so.
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

impl FromRequest for Authenticated {
    type Error = AuthRejection;
    type Future = ExtractFuture<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        if let Some(settled) = start(req) {
            return ExtractFuture(Extracting::Found(ready(settled.map(Self))));
        }
        let req = req.clone();
        ExtractFuture(Extracting::Verifying(Box::pin(async move {
            Ok(Self(principal(req).await?))
        })))
    }
}

impl FromRequest for MaybeAuthenticated {
    type Error = AuthRejection;
    type Future = ExtractFuture<Self>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        if let Some(settled) = start(req) {
            let found = settled.map(|principal| Self(Some(Authenticated(principal))));
            return ExtractFuture(Extracting::Found(ready(found)));
        }
        let req = req.clone();
        ExtractFuture(Extracting::Verifying(Box::pin(async move {
            match principal(req).await {
                Ok(principal) => Ok(Self(Some(Authenticated(principal)))),
                Err(Failure::Key(VerifyError::Header(HeaderProblem::Missing))) => Ok(Self(None)),
                Err(e) => Err(e.into()),
            }
        })))
    }
}
