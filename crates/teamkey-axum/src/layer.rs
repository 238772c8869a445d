//! Layers: `RequireApiKey` guards a whole router, `RequireScope`
//! one route.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRef, Request};
use axum::response::{IntoResponse, Response};
use teamkey_core::{HeaderRules, KeyManager, Principal};
use tower_layer::Layer;
use tower_service::Service;

use crate::AuthRejection;
use crate::extract::{default_rules, verify};
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
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (manager, rules) = (self.manager.clone(), Arc::clone(&self.rules));
        Box::pin(async move {
            // A guard outside this one (a `RequireScope` with its manager)
            // verified and admitted the key: once is enough, and counting
            // the request twice would halve the key's quota.
            if request.extensions().get::<Principal>().is_some() {
                return inner.call(request).await;
            }
            // A key extractor outside (in a middleware, under
            // `AddRateLimitHeaders`) admitted it and left it in that
            // layer's slot, which adds the headers: counted already.
            if let Some(principal) = admitted_earlier(request.extensions()) {
                request.extensions_mut().insert(principal);
                return inner.call(request).await;
            }
            // Preflights included: behind `any(..)` or a fallback, letting
            // one through would run the handler without a key.
            let principal = match verify(&manager, &rules, request.headers(), request.extensions()).await {
                Ok(principal) => principal,
                Err(e) => return Ok(AuthRejection::from(e).into_response()),
            };
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
        })
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
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let scope = Arc::clone(&self.scope);
        let (manager, rules) = (self.manager.clone(), self.rules.clone());
        Box::pin(async move {
            // Verified and admitted outside: by a guard, or by a key
            // extractor in a middleware (under `AddRateLimitHeaders`,
            // which keeps it in its slot): counted already.
            let verified_outside = match request.extensions().get::<Principal>() {
                Some(principal) => Some(principal.has_scope(&scope)),
                None => admitted_earlier(request.extensions()).map(|principal| {
                    let has_scope = principal.has_scope(&scope);
                    request.extensions_mut().insert(principal);
                    has_scope
                }),
            };
            match verified_outside {
                Some(true) => return inner.call(request).await,
                Some(false) => return Ok(AuthRejection::MissingScope(scope.to_string()).into_response()),
                None => {}
            }
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
