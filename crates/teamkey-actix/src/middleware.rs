//! Middleware: `RequireApiKey` guards an `App` or `Scope`, `RequireScope`
//! a route or scope by scope.

use std::future::{Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{Error, HttpMessage, ResponseError};
use teamkey_core::{HeaderRules, KeyManager, Now, Principal, RateLimitHeaders};

use crate::AuthRejection;
use crate::extract::{app_manager_ref, default_rules, kept_refusal, log_no_manager, verify};
use crate::limit::{add_headers, admitted};

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// Guards everything it wraps: a request without a valid key never reaches
/// a handler. The verified [`Principal`] goes into the request extensions
/// (and [`Authenticated`](crate::Authenticated) finds it there).
///
/// Right after verification it takes the request from the key's rate limit
/// ([`KeyManager::admit`]): over the limit, the `429` (with `Retry-After`
/// and the `RateLimit` headers), and the handler never runs; within it,
/// whatever the services inside answer gets `RateLimit-Policy` and
/// `RateLimit`. The extractors inside count nothing again.
///
/// No method is exempt: a CORS preflight carries no key, so it gets the 401
/// too. Wrap the CORS middleware outside this one
/// (`.wrap(RequireApiKey::new()).wrap(cors)`, the last `wrap` being the
/// outer one) so that it answers preflights before they get here.
///
/// The [`KeyManager`] is the one given here, or else the app's
/// `web::Data<KeyManager>`; with neither, every request is a 500
/// ([`AuthRejection::Misconfigured`]) and an error log naming the fix.
#[derive(Debug, Clone, Default)]
pub struct RequireApiKey {
    manager: Option<KeyManager>,
    rules: Rc<HeaderRules>,
}

impl RequireApiKey {
    /// Uses the app's `web::Data<KeyManager>` and the default header rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses this manager rather than the app data.
    pub fn with_manager(manager: KeyManager) -> Self {
        Self {
            manager: Some(manager),
            ..Self::default()
        }
    }

    /// Other header rules (header name, `Authorization: Bearer`, length cap).
    pub fn rules(mut self, rules: HeaderRules) -> Self {
        self.rules = Rc::new(rules);
        self
    }
}

impl<S, B> Transform<S, ServiceRequest> for RequireApiKey
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = RequireApiKeyMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(RequireApiKeyMiddleware {
            inner: Rc::new(Guard {
                service,
                manager: self.manager.clone(),
                rules: Rc::clone(&self.rules),
            }),
        }))
    }
}

/// The service made by [`RequireApiKey`].
#[derive(Debug)]
pub struct RequireApiKeyMiddleware<S> {
    // One `Rc` for all a request's future needs: one count to move per
    // request, rather than one each plus the manager's atomic one.
    inner: Rc<Guard<S>>,
}

#[derive(Debug)]
struct Guard<S> {
    service: S,
    manager: Option<KeyManager>,
    rules: Rc<HeaderRules>,
}

impl<S, B> Service<ServiceRequest> for RequireApiKeyMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = GuardFuture<S::Future, B>;

    fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Error>> {
        self.inner.service.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        // A guard outside this one (a `RequireScope` with a manager)
        // verified and admitted the key: once is enough, and counting the
        // request twice would halve the key's quota.
        if req.extensions().contains::<Principal>() {
            return GuardFuture::inner(self.inner.service.call(req), None);
        }
        // A key extractor run outside (a middleware's `.extract()`,
        // its error swallowed) was refused: the same answer, and the
        // request is not counted again.
        if let Some(refusal) = kept_refusal(req.request()) {
            return GuardFuture::refused(req, refusal, None);
        }
        // Preflights included: behind `web::route()` or a default
        // service, letting one through would run the handler without a key.
        // The app's manager is borrowed from the request, not cloned.
        let Some(manager) = self
            .inner
            .manager
            .as_ref()
            .or_else(|| app_manager_ref(req.request()))
        else {
            log_no_manager("RequireApiKey", "RequireApiKey::with_manager(manager)");
            return GuardFuture::refused(req, AuthRejection::Misconfigured, None);
        };
        let admitted = match verify_and_admit_now(manager, &self.inner.rules, &req) {
            Some(admitted) => admitted,
            None => {
                // The store or the limiter must be waited for: the one
                // path that boxes, and clones the manager.
                let (guard, manager) = (Rc::clone(&self.inner), manager.clone());
                return GuardFuture::waiting(async move {
                    match verify_and_admit(&manager, &guard.rules, &req).await {
                        Ok((principal, limit)) => {
                            req.extensions_mut().insert(principal);
                            GuardFuture::inner(guard.service.call(req), limit).await
                        }
                        Err(refusal) => GuardFuture::<S::Future, B>::refused(req, refusal, None).await,
                    }
                });
            }
        };
        match admitted {
            Ok((principal, limit)) => {
                req.extensions_mut().insert(principal);
                GuardFuture::inner(self.inner.service.call(req), limit)
            }
            Err(refusal) => GuardFuture::refused(req, refusal, None),
        }
    }
}

/// Verifies the key in `req` by `rules` and takes the request from its
/// rate limit: the principal and the headers to send, or the refusal.
async fn verify_and_admit(
    manager: &KeyManager,
    rules: &HeaderRules,
    req: &ServiceRequest,
) -> Result<(Principal, Option<RateLimitHeaders>), AuthRejection> {
    let principal = verify(manager, rules, req.request()).await?;
    let limit = admitted(manager.admit(&principal).await)?;
    Ok((principal, limit))
}

/// [`verify_and_admit`] when neither step has to wait (the record in
/// memory, the limiter in process); `None` when one must, and nothing was
/// counted. When only the admission must wait (Redis), `verify_and_admit`
/// verifies the key again: from memory, so at no store call.
fn verify_and_admit_now(
    manager: &KeyManager,
    rules: &HeaderRules,
    req: &ServiceRequest,
) -> Option<Result<(Principal, Option<RateLimitHeaders>), AuthRejection>> {
    let principal = match verify(manager, rules, req.request()).now() {
        Now::Ready(Ok(principal)) => principal,
        Now::Ready(Err(error)) => return Some(Err(error.into())),
        Now::Waiting(_) => return None,
    };
    let Now::Ready(admission) = manager.admit(&principal).now() else {
        return None;
    };
    Some(admitted(admission).map(|limit| (principal, limit)))
}

pin_project_lite::pin_project! {
    /// The future of [`RequireApiKeyMiddleware`] and
    /// [`RequireScopeMiddleware`] (their `Service::Future`, named here so
    /// that it can be written): the services inside (with the `RateLimit`
    /// headers added to their response), or a refusal. Boxed only when
    /// verification has to wait for the store or the team policy, or
    /// admission for the limiter (Redis).
    pub struct GuardFuture<F, B> {
        #[pin]
        state: Guarding<F, B>,
    }
}

pin_project_lite::pin_project! {
    #[project = GuardingProj]
    enum Guarding<F, B> {
        Refused { response: Option<ServiceResponse<EitherBody<B>>> },
        Inner { #[pin] response: F, limit: Option<RateLimitHeaders> },
        Waiting { rest: LocalBoxFuture<Result<ServiceResponse<EitherBody<B>>, Error>> },
    }
}

impl<F, B> GuardFuture<F, B> {
    /// The inner services' answer, with `limit`'s headers when set.
    fn inner(response: F, limit: Option<RateLimitHeaders>) -> Self {
        Self {
            state: Guarding::Inner { response, limit },
        }
    }

    /// `refusal`, answered without the inner services (with `limit`'s
    /// headers when set).
    fn refused(req: ServiceRequest, refusal: AuthRejection, limit: Option<&RateLimitHeaders>) -> Self {
        let mut response = req.into_response(refusal.error_response()).map_into_right_body();
        if let Some(limit) = limit {
            add_headers(response.headers_mut(), limit);
        }
        Self {
            state: Guarding::Refused {
                response: Some(response),
            },
        }
    }

    fn waiting(rest: impl Future<Output = Result<ServiceResponse<EitherBody<B>>, Error>> + 'static) -> Self {
        Self {
            state: Guarding::Waiting { rest: Box::pin(rest) },
        }
    }
}

impl<F, B> Future for GuardFuture<F, B>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            GuardingProj::Refused { response } => Poll::Ready(Ok(response
                .take()
                .expect("`GuardFuture` polled after completion"))),
            GuardingProj::Inner { response, limit } => {
                let mut response = ready!(response.poll(cx))?.map_into_left_body();
                if let Some(limit) = limit {
                    add_headers(response.headers_mut(), limit);
                }
                Poll::Ready(Ok(response))
            }
            GuardingProj::Waiting { rest } => rest.as_mut().poll(cx),
        }
    }
}

impl<F, B> std::fmt::Debug for GuardFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            Guarding::Refused { .. } => "refused",
            Guarding::Inner { .. } => "inner",
            Guarding::Waiting { .. } => "waiting",
        };
        f.debug_tuple("GuardFuture").field(&state).finish()
    }
}

/// Requires a scope: a missing scope is a 403.
///
/// Inside [`RequireApiKey`] it checks the principal the middleware
/// verified: `.wrap(RequireScope::new("keys:manage")).wrap(RequireApiKey::new())`,
/// the last `wrap` being the outer one. On its own, or outside
/// `RequireApiKey`, it verifies the key itself, as
/// [`Authenticated`](crate::Authenticated) does: with the manager given by
/// [`with_manager`](Self::with_manager) or else the app's
/// `web::Data<KeyManager>`, and the header rules given by
/// [`rules`](Self::rules) or else the app's `HeaderRules` (or the default).
/// A bad key is the same 401 as everywhere, a store failure 503; with no
/// manager at all it answers 500 and logs the fix, never a 401 to a caller
/// whose key may be valid.
///
/// When it verifies the key itself, it also enforces the key's rate limit
/// and adds the `RateLimit` headers, as [`RequireApiKey`] does; inside a
/// [`RequireApiKey`] that middleware has done both.
#[derive(Debug, Clone)]
pub struct RequireScope {
    scope: Rc<str>,
    manager: Option<KeyManager>,
    rules: Option<Rc<HeaderRules>>,
}

impl RequireScope {
    /// Requires `scope`.
    pub fn new(scope: &str) -> Self {
        Self {
            scope: scope.into(),
            manager: None,
            rules: None,
        }
    }

    /// Verifies keys with this manager rather than the app data, when no
    /// [`RequireApiKey`] did it first.
    pub fn with_manager(mut self, manager: KeyManager) -> Self {
        self.manager = Some(manager);
        self
    }

    /// Header rules for the keys this middleware verifies itself, rather
    /// than the app's `HeaderRules`.
    pub fn rules(mut self, rules: HeaderRules) -> Self {
        self.rules = Some(Rc::new(rules));
        self
    }
}

impl<S, B> Transform<S, ServiceRequest> for RequireScope
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = RequireScopeMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(RequireScopeMiddleware {
            inner: Rc::new(ScopeGuard {
                service,
                scope: Rc::clone(&self.scope),
                manager: self.manager.clone(),
                rules: self.rules.clone(),
            }),
        }))
    }
}

/// The service made by [`RequireScope`].
#[derive(Debug)]
pub struct RequireScopeMiddleware<S> {
    // As for `RequireApiKeyMiddleware`: one `Rc` to move per request.
    inner: Rc<ScopeGuard<S>>,
}

#[derive(Debug)]
struct ScopeGuard<S> {
    service: S,
    scope: Rc<str>,
    manager: Option<KeyManager>,
    rules: Option<Rc<HeaderRules>>,
}

impl<S, B> Service<ServiceRequest> for RequireScopeMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = GuardFuture<S::Future, B>;

    fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Error>> {
        self.inner.service.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let guard = &self.inner;
        let verified_outside = req
            .extensions()
            .get::<Principal>()
            .map(|p| p.has_scope(&guard.scope));
        match verified_outside {
            Some(true) => return GuardFuture::inner(guard.service.call(req), None),
            Some(false) => return GuardFuture::refused(req, self.missing_scope(), None),
            None => {}
        }
        // As in `RequireApiKey`: a refusal kept by a key extractor run
        // outside is answered as it is, not counted again.
        if let Some(refusal) = kept_refusal(req.request()) {
            return GuardFuture::refused(req, refusal, None);
        }
        // The manager is looked up (and borrowed) only when there is a key
        // to verify here.
        let Some(manager) = guard.manager.as_ref().or_else(|| app_manager_ref(req.request())) else {
            log_no_manager(
                "RequireScope",
                "RequireScope::new(scope).with_manager(manager), or wrap RequireApiKey outside RequireScope",
            );
            return GuardFuture::refused(req, AuthRejection::Misconfigured, None);
        };
        let rules = match &guard.rules {
            Some(rules) => rules,
            None => req.app_data::<HeaderRules>().unwrap_or_else(|| default_rules()),
        };
        match verify_and_admit_now(manager, rules, &req) {
            Some(admitted) => self.admitted(req, admitted),
            None => {
                // As in `RequireApiKey`: only the path that waits owns copies.
                let (this, manager, rules) = (self.clone_handle(), manager.clone(), rules.clone());
                GuardFuture::waiting(async move {
                    let admitted = verify_and_admit(&manager, &rules, &req).await;
                    this.admitted(req, admitted).await
                })
            }
        }
    }
}

impl<S, B> RequireScopeMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    fn clone_handle(&self) -> Self {
        Self {
            inner: Rc::clone(&self.inner),
        }
    }

    fn missing_scope(&self) -> AuthRejection {
        AuthRejection::MissingScope(self.inner.scope.to_string())
    }

    /// The inner services for a key `admitted` here that has the scope,
    /// else the refusal. Admitted before the scope is checked, as inside
    /// `RequireApiKey`: a valid key's request counts whatever the route
    /// answers, and its response carries the `RateLimit` headers.
    fn admitted(
        &self,
        req: ServiceRequest,
        admitted: Result<(Principal, Option<RateLimitHeaders>), AuthRejection>,
    ) -> GuardFuture<S::Future, B> {
        match admitted {
            Ok((principal, limit)) if principal.has_scope(&self.inner.scope) => {
                // Handlers, extractors and a `RequireApiKey` inside take it
                // from here: one verification, one admission.
                req.extensions_mut().insert(principal);
                GuardFuture::inner(self.inner.service.call(req), limit)
            }
            Ok((_, limit)) => GuardFuture::refused(req, self.missing_scope(), limit.as_ref()),
            Err(refusal) => GuardFuture::refused(req, refusal, None),
        }
    }
}
