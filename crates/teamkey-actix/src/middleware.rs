//! Middleware: `RequireApiKey` guards an `App` or `Scope`, `RequireScope`
//! a route or scope by scope.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;

use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::Method;
use actix_web::http::header::ACCESS_CONTROL_REQUEST_METHOD;
use actix_web::{Error, HttpMessage, ResponseError};
use teamkey_core::{HeaderRules, KeyManager, Principal};

use crate::AuthError;
use crate::extract::{app_manager, log_no_manager, verify};

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// Guards everything it wraps: a request without a valid key never reaches
/// a handler. The verified [`Principal`] goes into the request extensions
/// (and [`Authenticated`](crate::Authenticated) finds it there). CORS
/// preflights (`OPTIONS` with `Access-Control-Request-Method`) pass.
///
/// The [`KeyManager`] is the one given here, or else the app's
/// `web::Data<KeyManager>`; with neither, every request is a 500
/// ([`AuthError::Misconfigured`]) and an error log naming the fix.
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
        ready(Ok(RequireApiKeyMiddleware {
            service: Rc::new(service),
            manager: self.manager.clone(),
            rules: Rc::clone(&self.rules),
        }))
    }
}

/// The service made by [`RequireApiKey`].
#[derive(Debug)]
pub struct RequireApiKeyMiddleware<S> {
    service: Rc<S>,
    manager: Option<KeyManager>,
    rules: Rc<HeaderRules>,
}

fn is_preflight(req: &ServiceRequest) -> bool {
    req.method() == Method::OPTIONS && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

impl<S, B> Service<ServiceRequest> for RequireApiKeyMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let rules = Rc::clone(&self.rules);
        let manager = self.manager.clone().or_else(|| app_manager(req.request()));
        Box::pin(async move {
            if !is_preflight(&req) {
                let verified = match &manager {
                    Some(manager) => verify(manager, &rules, req.headers())
                        .await
                        .map_err(AuthError::from),
                    None => {
                        log_no_manager("RequireApiKey", "RequireApiKey::with_manager(manager)");
                        Err(AuthError::Misconfigured)
                    }
                };
                match verified {
                    Ok(principal) => {
                        req.extensions_mut().insert(principal);
                    }
                    Err(refusal) => {
                        return Ok(req.into_response(refusal.error_response()).map_into_right_body());
                    }
                }
            }
            service.call(req).await.map(ServiceResponse::map_into_left_body)
        })
    }
}

/// Requires a scope of the principal [`RequireApiKey`] verified:
/// `.wrap(RequireScope::new("keys:manage"))` inside it. A missing scope is
/// a 403; no principal at all is a 401.
#[derive(Debug, Clone)]
pub struct RequireScope {
    scope: Rc<str>,
}

impl RequireScope {
    /// Requires `scope`.
    pub fn new(scope: &str) -> Self {
        Self { scope: scope.into() }
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
        ready(Ok(RequireScopeMiddleware {
            service: Rc::new(service),
            scope: Rc::clone(&self.scope),
        }))
    }
}

/// The service made by [`RequireScope`].
#[derive(Debug)]
pub struct RequireScopeMiddleware<S> {
    service: Rc<S>,
    scope: Rc<str>,
}

impl<S, B> Service<ServiceRequest> for RequireScopeMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let refusal = match req.extensions().get::<Principal>() {
            Some(p) if p.has_scope(&self.scope) => None,
            Some(_) => Some(AuthError::MissingScope(self.scope.to_string())),
            None => Some(AuthError::Unauthorized),
        };
        let service = Rc::clone(&self.service);
        Box::pin(async move {
            match refusal {
                Some(refusal) => Ok(req.into_response(refusal.error_response()).map_into_right_body()),
                None => service.call(req).await.map(ServiceResponse::map_into_left_body),
            }
        })
    }
}
