//! Layers: `RequireApiKeyLayer` guards a whole router, `RequireScopeLayer`
//! one route.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use teamkey_core::{HeaderRules, KeyManager, Principal};
use tower_layer::Layer;
use tower_service::Service;

use crate::AuthRejection;
use crate::extract::verify;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Guards every route below it: a request without a valid key never
/// reaches a handler. The verified [`Principal`] goes into the request's
/// extensions (and [`Authenticated`](crate::Authenticated) finds it there).
/// CORS preflights (`OPTIONS` with `Access-Control-Request-Method`) pass,
/// so that a CORS layer outside can answer them.
#[derive(Debug, Clone)]
pub struct RequireApiKeyLayer {
    manager: KeyManager,
    rules: Arc<HeaderRules>,
}

impl RequireApiKeyLayer {
    /// Keys in `X-API-Key`, verified by `manager`.
    pub fn new(manager: KeyManager) -> Self {
        Self {
            manager,
            rules: Arc::new(HeaderRules::default()),
        }
    }

    /// Other header rules (header name, `Authorization: Bearer`, length cap).
    pub fn rules(mut self, rules: HeaderRules) -> Self {
        self.rules = Arc::new(rules);
        self
    }
}

impl<S> Layer<S> for RequireApiKeyLayer {
    type Service = RequireApiKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireApiKey {
            inner,
            manager: self.manager.clone(),
            rules: Arc::clone(&self.rules),
        }
    }
}

/// The service made by [`RequireApiKeyLayer`].
#[derive(Debug, Clone)]
pub struct RequireApiKey<S> {
    inner: S,
    manager: KeyManager,
    rules: Arc<HeaderRules>,
}

fn is_preflight(request: &Request) -> bool {
    request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl<S> Service<Request> for RequireApiKey<S>
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
            if !is_preflight(&request) {
                match verify(&manager, &rules, request.headers()).await {
                    Ok(principal) => {
                        request.extensions_mut().insert(principal);
                    }
                    Err(e) => return Ok(AuthRejection::from(e).into_response()),
                }
            }
            inner.call(request).await
        })
    }
}

/// Guards a route by scope: `.route_layer(RequireScopeLayer::new("keys:manage"))`
/// under a [`RequireApiKeyLayer`]. A missing scope is a 403; no principal
/// at all (no key layer above) is a 401.
#[derive(Debug, Clone)]
pub struct RequireScopeLayer {
    scope: Arc<str>,
}

impl RequireScopeLayer {
    /// Requires `scope`.
    pub fn new(scope: &str) -> Self {
        Self { scope: scope.into() }
    }
}

impl<S> Layer<S> for RequireScopeLayer {
    type Service = RequireScope<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScope {
            inner,
            scope: Arc::clone(&self.scope),
        }
    }
}

/// The service made by [`RequireScopeLayer`].
#[derive(Debug, Clone)]
pub struct RequireScope<S> {
    inner: S,
    scope: Arc<str>,
}

impl<S> Service<Request> for RequireScope<S>
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

    fn call(&mut self, request: Request) -> Self::Future {
        let refusal = match request.extensions().get::<Principal>() {
            Some(p) if p.has_scope(&self.scope) => None,
            Some(_) => Some(AuthRejection::MissingScope(self.scope.to_string())),
            None => Some(AuthRejection::Unauthorized),
        };
        match refusal {
            Some(rejection) => Box::pin(async move { Ok(rejection.into_response()) }),
            None => Box::pin(self.inner.call(request)),
        }
    }
}
