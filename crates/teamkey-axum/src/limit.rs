//! Rate limits: the admission after verification, the `RateLimit` headers
//! on responses, and `AddRateLimitHeaders` for apps that verify keys in
//! extractors only.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use teamkey_core::{Admission, Principal, RateLimit, RateLimitHeaders};
use tower_layer::Layer;
use tower_service::Service;

use crate::AuthRejection;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The headers to send for an admitted caller (`None`: no limit applies),
/// or the refusal to answer instead of running the handler.
pub(crate) fn admitted(admission: Admission) -> Result<Option<RateLimitHeaders>, AuthRejection> {
    match admission {
        Admission::Unlimited => Ok(None),
        Admission::Allowed(headers) => Ok(Some(headers)),
        Admission::Refused(answer) => Err(AuthRejection::refused(answer)),
    }
}

// Parsed at compile time: `from_static` at run time checks every byte.
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Writes `RateLimit-Policy` and `RateLimit`: the only place their values
/// are formatted, once the response exists.
pub(crate) fn add_headers(headers: &mut HeaderMap, limit: &RateLimitHeaders) {
    // Room for both at once: at most one regrowth of the map.
    headers.reserve(2);
    if let Some(policy) = policy_value(limit) {
        headers.insert(RATELIMIT_POLICY.clone(), policy);
    }
    // Numbers and a quoted token: always a valid value; never a panic.
    // From the `String`: its buffer becomes the value, uncopied.
    if let Ok(state) = HeaderValue::try_from(limit.state()) {
        headers.insert(RATELIMIT.clone(), state);
    }
}

/// Quotas whose `RateLimit-Policy` value a thread keeps.
const POLICIES_KEPT: usize = 8;

thread_local! {
    /// `RateLimit-Policy` values already written on this thread, by quota.
    /// A service has a few quotas (its plans'), so each value is formatted
    /// and checked once, then shared: a clone is a reference count.
    static POLICIES: RefCell<Vec<(RateLimit, HeaderValue)>> = const { RefCell::new(Vec::new()) };
}

/// The `RateLimit-Policy` value of `limit`'s quota, from this thread's
/// [`POLICIES`] or else made (and kept, the oldest quota dropped first).
fn policy_value(limit: &RateLimitHeaders) -> Option<HeaderValue> {
    let quota = limit.limit();
    POLICIES
        .try_with(|policies| {
            // Never borrowed twice (nothing here calls back), but a busy
            // cell means formatting afresh, never a panic.
            let mut policies = policies.try_borrow_mut().ok()?;
            if let Some((_, value)) = policies.iter().find(|(kept, _)| *kept == quota) {
                return Some(value.clone());
            }
            let value = HeaderValue::try_from(limit.policy()).ok()?;
            if policies.len() == POLICIES_KEPT {
                policies.remove(0);
            }
            policies.push((quota, value.clone()));
            Some(value)
        })
        .ok()
        .flatten()
        .or_else(|| HeaderValue::try_from(limit.policy()).ok())
}

/// Where the extractors leave a limited caller for [`AddRateLimitHeaders`]
/// (the request's extensions do not come back with the response, so the
/// layer keeps a handle on this), and for the request's later extractors.
#[derive(Debug, Clone, Default)]
struct HeaderSlot(Arc<Mutex<Option<(Principal, RateLimitHeaders)>>>);

impl HeaderSlot {
    /// Never contended (one request's extractors, then its response), and a
    /// lock is cheaper than `OnceLock::set`'s state machine.
    fn lock(&self) -> MutexGuard<'_, Option<(Principal, RateLimitHeaders)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands the admitted `principal` and its headers to an
/// [`AddRateLimitHeaders`] around the route: `false` if there is none, and
/// the caller must keep the principal for later extractors itself.
pub(crate) fn leave_for_layer(
    extensions: &Extensions,
    principal: &Principal,
    limit: RateLimitHeaders,
) -> bool {
    let Some(slot) = extensions.get::<HeaderSlot>() else {
        return false;
    };
    // A request is admitted once, so the slot is empty; if not, the first
    // admission stays.
    slot.lock().get_or_insert_with(|| (principal.clone(), limit));
    true
}

/// The principal an earlier extractor of this request admitted and left
/// for [`AddRateLimitHeaders`].
pub(crate) fn admitted_earlier(extensions: &Extensions) -> Option<Principal> {
    let slot = extensions.get::<HeaderSlot>()?;
    let kept = slot.lock();
    kept.as_ref().map(|(principal, _)| principal.clone())
}

/// Adds the `RateLimit-Policy` and `RateLimit` headers to the responses of
/// routes whose keys are verified by the extractors
/// ([`Authenticated`](crate::Authenticated),
/// [`MaybeAuthenticated`](crate::MaybeAuthenticated),
/// [`ManagesKeys`](crate::ManagesKeys)) with no [`RequireApiKey`](crate::RequireApiKey)
/// guard.
///
/// An extractor cannot touch the response its handler makes, so on its own
/// it enforces the limit (a refused request gets the whole `429`, headers
/// included, and the handler never runs) but an allowed request's response
/// carries no `RateLimit` headers. This layer adds them. Behind the guards
/// ([`RequireApiKey`](crate::RequireApiKey), or a
/// [`RequireScope`](crate::RequireScope) that verifies the key itself) it is
/// not needed: they add the headers themselves.
///
/// ```
/// use axum::{Router, extract::FromRef, routing::get};
/// use teamkey_axum::{AddRateLimitHeaders, Authenticated};
/// use teamkey_core::{KeyManager, MemoryStore};
///
/// #[derive(Clone, FromRef)]
/// struct AppState {
///     keys: KeyManager,
/// }
///
/// async fn whoami(caller: Authenticated) -> String {
///     caller.team_id().to_string()
/// }
///
/// let state = AppState { keys: KeyManager::new(MemoryStore::new()) };
/// let app: Router = Router::new()
///     .route("/whoami", get(whoami))
///     .layer(AddRateLimitHeaders)
///     .with_state(state);
/// ```
///
/// It costs two small allocations per request, limited key or not: the
/// slot the extractor fills and the future that waits for the response.
#[derive(Debug, Clone, Copy, Default)]
pub struct AddRateLimitHeaders;

impl<S> Layer<S> for AddRateLimitHeaders {
    type Service = AddRateLimitHeadersMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AddRateLimitHeadersMiddleware { inner }
    }
}

/// The service made by [`AddRateLimitHeaders`].
#[derive(Debug, Clone)]
pub struct AddRateLimitHeadersMiddleware<S> {
    inner: S,
}

impl<S> Service<Request> for AddRateLimitHeadersMiddleware<S>
where
    S: Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // Nested inside another `AddRateLimitHeaders`: share its slot, so
        // that an admission made between the two is still seen inside.
        let slot = match request.extensions().get::<HeaderSlot>() {
            Some(outer) => outer.clone(),
            None => {
                let slot = HeaderSlot::default();
                request.extensions_mut().insert(slot.clone());
                slot
            }
        };
        // Called here, on the service that was polled ready.
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            // Read, not taken: a handler still running after the response
            // (spawned past a `202`) must find the request counted.
            let limit = slot.lock().as_ref().map(|(_, limit)| *limit);
            if let Some(limit) = limit {
                add_headers(response.headers_mut(), &limit);
            }
            Ok(response)
        })
    }
}
