//! Rate limits: the admission after verification, the `RateLimit` headers
//! on responses, and `AddRateLimitHeaders` for apps that verify keys in
//! extractors only.

use std::cell::RefCell;
use std::future::{Future, Ready, ready};
use std::pin::Pin;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::{Error, HttpMessage};
use teamkey_core::{Admission, RateLimit, RateLimitHeaders};

use crate::AuthRejection;

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

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

/// A limited caller's headers, left in the request's extensions by an
/// extractor that admitted it, for [`AddRateLimitHeaders`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admitted(pub(crate) RateLimitHeaders);

/// Adds the `RateLimit-Policy` and `RateLimit` headers to the responses of
/// routes whose keys are verified by the extractors
/// ([`Authenticated`](crate::Authenticated),
/// [`MaybeAuthenticated`](crate::MaybeAuthenticated),
/// [`ManagesKeys`](crate::ManagesKeys)) with no
/// [`RequireApiKey`](crate::RequireApiKey) middleware.
///
/// An extractor cannot touch the response its handler makes, so on its own
/// it enforces the limit (a refused request gets the whole `429`, headers
/// included, and the handler never runs) but an allowed request's response
/// carries no `RateLimit` headers. This middleware adds them, from what the
/// extractor left in the request. Inside the guards
/// ([`RequireApiKey`](crate::RequireApiKey), or a
/// [`RequireScope`](crate::RequireScope) that verifies the key itself) it is
/// not needed: they add the headers themselves.
///
/// ```
/// use actix_web::{App, HttpResponse, web};
/// use teamkey_actix::{AddRateLimitHeaders, Authenticated};
/// use teamkey_core::{KeyManager, MemoryStore};
///
/// async fn whoami(caller: Authenticated) -> HttpResponse {
///     HttpResponse::Ok().body(caller.team_id().to_string())
/// }
///
/// let app = App::new()
///     .app_data(web::Data::new(KeyManager::new(MemoryStore::new())))
///     .wrap(AddRateLimitHeaders)
///     .route("/whoami", web::get().to(whoami));
/// # drop(app);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AddRateLimitHeaders;

impl<S, B> Transform<S, ServiceRequest> for AddRateLimitHeaders
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = AddRateLimitHeadersMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(AddRateLimitHeadersMiddleware { service }))
    }
}

/// The service made by [`AddRateLimitHeaders`].
#[derive(Debug)]
pub struct AddRateLimitHeadersMiddleware<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for AddRateLimitHeadersMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let response = self.service.call(req);
        Box::pin(async move {
            let mut response = response.await?;
            // The request comes back with the response: what the extractor
            // left in it is still there.
            let limit = response.request().extensions().get::<Admitted>().copied();
            if let Some(Admitted(limit)) = limit {
                add_headers(response.headers_mut(), &limit);
            }
            Ok(response)
        })
    }
}
