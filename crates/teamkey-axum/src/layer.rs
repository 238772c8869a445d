//! Layers: `RequireApiKey` guards a whole router, `RequireScope`
//! one route.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::extract::{FromRef, Request};
use axum::response::{IntoResponse, Response};
use teamkey_core::{HeaderRules, KeyManager, Now, Principal, RateLimitHeaders};
use tower_layer::Layer;
use tower_service::Service;

use crate::AuthRejection;
use crate::extract::{default_rules, kept_refusal, verify};
use crate::limit::{add_headers, admitted, admitted_earlier};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Guards every route below it: a request without a valid key never
/// reaches a handler. The verified [`Principal`] goes into the request's
/// extensions (and [`Authenticated`](crate::Authenticated) finds it there).
///
/// Right after verification it takes the request from the key's rate limit
/// ([`KeyManager::admit`]): over the limit, the `429` (with `Retry-After`
/// and the `RateLimit` headers), and the handler never runs; within it,
/// whatever the routes below answer gets `RateLimit-Policy` and `RateLimit`.
/// The extractors behind it count nothing again.
///
/// Give it the manager the router's state already holds, so that it is
/// configured once:
///
/// ```
/// use axum::{Router, extract::FromRef, routing::get};
/// use teamkey_axum::RequireApiKey;
/// use teamkey_core::{KeyManager, MemoryStore};
///
/// #[derive(Clone, FromRef)]
/// struct AppState {
///     keys: KeyManager,
/// }
///
/// let state = AppState { keys: KeyManager::new(MemoryStore::new()) };
/// let app: Router = Router::new()
///     .route("/scans", get(|| async { "scans" }))
///     .layer(RequireApiKey::from_state(&state))
///     .with_state(state);
/// ```
///
/// (A layer never sees the router's state by itself, which is why axum
/// needs the manager here while actix's `RequireApiKey::new()` reads it
/// from the app data at request time.)
///
/// No method is exempt: a CORS preflight carries no key, so it gets the 401
/// too. Put the CORS layer outside this one (`.layer(guard).layer(cors)`)
/// so that it answers preflights before they get here.
#[derive(Debug, Clone)]
pub struct RequireApiKey {
    manager: KeyManager,
    rules: Arc<HeaderRules>,
}

impl RequireApiKey {
    /// Keys in `X-API-Key`, verified by `manager`.
    pub fn new(manager: KeyManager) -> Self {
        Self {
            manager,
            rules: Arc::new(HeaderRules::default()),
        }
    }

    /// Keys in `X-API-Key`, verified by the [`KeyManager`] of the router's
    /// state (any state with `KeyManager: FromRef<S>`, as the extractors
    /// need anyway): `.layer(RequireApiKey::from_state(&state))`.
    pub fn from_state<S>(state: &S) -> Self
    where
        KeyManager: FromRef<S>,
    {
        Self::new(KeyManager::from_ref(state))
    }

    /// The same as [`new`](Self::new), under the name the actix adapter's
    /// `RequireApiKey::with_manager` has.
    pub fn with_manager(manager: KeyManager) -> Self {
        Self::new(manager)
    }

    /// Other header rules (header name, `Authorization: Bearer`, length cap).
    pub fn rules(mut self, rules: HeaderRules) -> Self {
        self.rules = Arc::new(rules);
        self
    }
}

impl<S> Layer<S> for RequireApiKey {
    type Service = RequireApiKeyMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireApiKeyMiddleware {
            inner,
            manager: self.manager.clone(),
            rules: Arc::clone(&self.rules),
        }
    }
}

/// The service made by [`RequireApiKey`].
#[derive(Debug, Clone)]
pub struct RequireApiKeyMiddleware<S> {
    inner: S,
    manager: KeyManager,
    rules: Arc<HeaderRules>,
}

impl<S> Service<Request> for RequireApiKeyMiddleware<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = GuardFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // A guard outside this one (a `RequireScope` with its manager)
        // verified and admitted the key: once is enough, and counting
        // the request twice would halve the key's quota.
        if request.extensions().get::<Principal>().is_some() {
            return GuardFuture::inner(self.inner.call(request), None);
        }
        // A key extractor outside (in a middleware, under
        // `AddRateLimitHeaders`) admitted it and left it in that
        // layer's slot, which adds the headers: counted already.
        if let Some(principal) = admitted_earlier(request.extensions()) {
            request.extensions_mut().insert(principal);
            return GuardFuture::inner(self.inner.call(request), None);
        }
        // Such an extractor was refused by the key's limit, its error
        // swallowed: the same answer, and the request not counted again.
        if let Some(refusal) = kept_refusal(request.extensions()) {
            return GuardFuture::answered(refusal.into_response());
        }
        // Preflights included: behind `any(..)` or a fallback, letting
        // one through would run the handler without a key.
        let verified = match verify(
            &self.manager,
            &self.rules,
            request.headers(),
            request.extensions(),
        )
        .now()
        {
            Now::Ready(verified) => Some(verified),
            Now::Waiting(_) => None,
        };
        let verified = match verified {
            Some(Ok(principal)) => principal,
            Some(Err(e)) => return GuardFuture::answered(AuthRejection::from(e).into_response()),
            // The store (or the team's policy) must be waited for: the
            // one path that boxes, and clones the services inside.
            None => return self.verify_later(request),
        };
        // Over its limit: the 429, and the handler never runs.
        let admission = match self.manager.admit(&verified).now() {
            Now::Ready(admission) => Some(admission),
            Now::Waiting(_) => None,
        };
        let limit = match admission.map(admitted) {
            Some(Ok(limit)) => limit,
            Some(Err(refusal)) => return GuardFuture::answered(refusal.into_response()),
            // The limiter (Redis) must be waited for.
            None => return self.admit_later(request, verified),
        };
        request.extensions_mut().insert(verified);
        // Called here, on the service that was polled ready.
        GuardFuture::inner(self.inner.call(request), limit)
    }
}

impl<S> RequireApiKeyMiddleware<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    /// The services inside, the clone that was polled ready taken for a
    /// call made later.
    fn take_inner(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }

    /// Verifies and admits the key in a future of its own: the store or
    /// the team's policy must be waited for. (The verification begun in
    /// `call` borrowed the request's headers, so it starts again here.)
    fn verify_later(&mut self, request: Request) -> GuardFuture<S::Future, S::Error> {
        let mut inner = self.take_inner();
        let (manager, rules) = (self.manager.clone(), Arc::clone(&self.rules));
        GuardFuture::boxed(async move {
            let principal = match verify(&manager, &rules, request.headers(), request.extensions()).await {
                Ok(principal) => principal,
                Err(e) => return Ok(AuthRejection::from(e).into_response()),
            };
            admit_and_call(&manager, principal, request, &mut inner).await
        })
    }

    /// Admits the verified `principal` in a future of its own: the limiter
    /// must be waited for.
    fn admit_later(&mut self, request: Request, principal: Principal) -> GuardFuture<S::Future, S::Error> {
        let mut inner = self.take_inner();
        let manager = self.manager.clone();
        GuardFuture::boxed(async move { admit_and_call(&manager, principal, request, &mut inner).await })
    }
}

/// Admits `principal`, then answers with `inner` and the `RateLimit`
/// headers, or with the refusal.
async fn admit_and_call<S>(
    manager: &KeyManager,
    principal: Principal,
    mut request: Request,
    inner: &mut S,
) -> Result<Response, S::Error>
where
    S: Service<Request, Response = Response>,
{
    // Over its limit: the 429, and the handler never runs.
    let limit = match admitted(manager.admit(&principal).await) {
        Ok(limit) => limit,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    request.extensions_mut().insert(principal);
    let mut response = inner.call(request).await?;
    if let Some(limit) = &limit {
        add_headers(response.headers_mut(), limit);
    }
    Ok(response)
}

pin_project_lite::pin_project! {
    /// The future of [`RequireApiKeyMiddleware`] and
    /// [`RequireScopeMiddleware`] (their `Service::Future`, named here so
    /// that it can be written): the services inside, with the `RateLimit`
    /// headers added to their response, or a refusal. Boxed only for a
    /// refusal, or when a verification has to wait for the store or the
    /// team's policy, or an admission for the limiter (Redis).
    pub struct GuardFuture<F, E> {
        #[pin]
        state: Guarding<F, E>,
    }
}

pin_project_lite::pin_project! {
    // Kept to the inner future and the headers: everything else is boxed,
    // off the path of a key verified from memory.
    #[project = GuardingProj]
    enum Guarding<F, E> {
        Inner { #[pin] response: F, limit: Option<RateLimitHeaders> },
        Boxed { rest: BoxFuture<Result<Response, E>> },
    }
}

impl<F, E: 'static> GuardFuture<F, E> {
    /// The inner services' answer, with `limit`'s headers when set.
    fn inner(response: F, limit: Option<RateLimitHeaders>) -> Self {
        Self {
            state: Guarding::Inner { response, limit },
        }
    }

    /// `response`, made without the services inside.
    fn answered(response: Response) -> Self {
        Self::boxed(async move { Ok(response) })
    }

    fn boxed(rest: impl Future<Output = Result<Response, E>> + Send + 'static) -> Self {
        Self {
            state: Guarding::Boxed { rest: Box::pin(rest) },
        }
    }
}

impl<F, E> Future for GuardFuture<F, E>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            GuardingProj::Inner { response, limit } => {
                let mut response = ready!(response.poll(cx))?;
                if let Some(limit) = limit {
                    add_headers(response.headers_mut(), limit);
                }
                Poll::Ready(Ok(response))
            }
            GuardingProj::Boxed { rest } => rest.as_mut().poll(cx),
        }
    }
}

impl<F, E> std::fmt::Debug for GuardFuture<F, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            Guarding::Inner { .. } => "inner",
            Guarding::Boxed { .. } => "boxed",
        };
        f.debug_tuple("GuardFuture").field(&state).finish()
    }
}

/// Guards a route by scope: a missing scope is a 403.
///
/// Under a [`RequireApiKey`] it checks the principal that layer
/// verified: `.route_layer(RequireScope::new("keys:manage"))` then
/// `.layer(RequireApiKey::new(keys))`, the later call being the outer
/// layer. On its own, or outside the key layer, it verifies the key itself
/// with the manager given by [`with_manager`](Self::with_manager) (a route
/// layer sees no state): a bad key is the same 401 as everywhere, a store
/// failure 503. With neither a principal nor a manager it cannot tell a
/// good key from a bad one, so it answers 500 and logs the fix: never a 401
/// to a caller whose key may be valid.
///
/// When it verifies the key itself, it also enforces the key's rate limit
/// and adds the `RateLimit` headers, as [`RequireApiKey`] does; under a
/// [`RequireApiKey`] that layer has done both.
#[derive(Debug, Clone)]
pub struct RequireScope {
    scope: Arc<str>,
    manager: Option<KeyManager>,
    rules: Option<Arc<HeaderRules>>,
}

impl RequireScope {
    /// Requires `scope` of the principal verified by a [`RequireApiKey`]
    /// outside this layer.
    pub fn new(scope: &str) -> Self {
        Self {
            scope: scope.into(),
            manager: None,
            rules: None,
        }
    }

    /// Verifies the key with `manager` when no [`RequireApiKey`] did
    /// it first, so the layer also works alone or in either order.
    pub fn with_manager(mut self, manager: KeyManager) -> Self {
        self.manager = Some(manager);
        self
    }

    /// Header rules for the keys this layer verifies itself; without them,
    /// the [`HeaderRules`] from an `Extension` (as for
    /// [`Authenticated`](crate::Authenticated)), or the default rules.
    pub fn rules(mut self, rules: HeaderRules) -> Self {
        self.rules = Some(Arc::new(rules));
        self
    }
}

impl<S> Layer<S> for RequireScope {
    type Service = RequireScopeMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopeMiddleware {
            inner,
            scope: Arc::clone(&self.scope),
            manager: self.manager.clone(),
            rules: self.rules.clone(),
        }
    }
}

/// The service made by [`RequireScope`].
#[derive(Debug, Clone)]
pub struct RequireScopeMiddleware<S> {
    inner: S,
    scope: Arc<str>,
    manager: Option<KeyManager>,
    rules: Option<Arc<HeaderRules>>,
}

impl<S> Service<Request> for RequireScopeMiddleware<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = GuardFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // Verified and admitted outside: by a guard, or by a key
        // extractor in a middleware (under `AddRateLimitHeaders`, which
        // keeps it in its slot): counted already.
        let verified_outside = match request.extensions().get::<Principal>() {
            Some(principal) => Some(principal.has_scope(&self.scope)),
            None => admitted_earlier(request.extensions()).map(|principal| {
                let has_scope = principal.has_scope(&self.scope);
                request.extensions_mut().insert(principal);
                has_scope
            }),
        };
        match verified_outside {
            // Called here, on the service that was polled ready.
            Some(true) => return GuardFuture::inner(self.inner.call(request), None),
            Some(false) => {
                return GuardFuture::answered(
                    AuthRejection::MissingScope(self.scope.to_string()).into_response(),
                );
            }
            None => {}
        }
        // As in `RequireApiKey`: a refusal kept by a key extractor outside
        // is answered as it is, not counted again.
        if let Some(refusal) = kept_refusal(request.extensions()) {
            return GuardFuture::answered(refusal.into_response());
        }
        // The clone that was polled ready serves this request, later.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let scope = Arc::clone(&self.scope);
        let (manager, rules) = (self.manager.clone(), self.rules.clone());
        GuardFuture::boxed(async move {
            let Some(manager) = manager else {
                tracing::error!(
                    scope = &*scope,
                    "teamkey: RequireScope found no verified key and has no KeyManager; \
                     put RequireApiKey outside RequireScope, or give RequireScope \
                     the KeyManager (RequireScope::new(scope).with_manager(manager)); answering 500"
                );
                return Ok(AuthRejection::Misconfigured.into_response());
            };
            let rules = match &rules {
                Some(rules) => rules,
                None => request
                    .extensions()
                    .get::<HeaderRules>()
                    .unwrap_or_else(|| default_rules()),
            };
            let principal = match verify(&manager, rules, request.headers(), request.extensions()).await {
                Ok(principal) => principal,
                Err(e) => return Ok(AuthRejection::from(e).into_response()),
            };
            // Admitted before the scope is checked, as behind `RequireApiKey`:
            // a valid key's request counts whatever the route answers.
            let limit = match admitted(manager.admit(&principal).await) {
                Ok(limit) => limit,
                Err(refusal) => return Ok(refusal.into_response()),
            };
            let mut response = if principal.has_scope(&scope) {
                // Handlers, extractors and a `RequireApiKey` below take it
                // from here: one verification, one admission.
                request.extensions_mut().insert(principal);
                inner.call(request).await?
            } else {
                AuthRejection::MissingScope(scope.to_string()).into_response()
            };
            if let Some(limit) = &limit {
                add_headers(response.headers_mut(), limit);
            }
            Ok(response)
        })
    }
}
