//! Where a request came from: the client's address (for last-used IPs)
//! and the request context of audit events.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderName, header};
use teamkey_core::events::RequestContext;

/// The client's IP address, as the application knows it: put it into the
/// request's extensions, and teamkey uses it rather than the socket's peer
/// address, both as a key's last-used IP (when the manager
/// [records client IPs](teamkey_core::KeyManagerBuilder::record_client_ips))
/// and in the audit events of management calls.
///
/// Without it, teamkey takes the peer address from axum's
/// [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo), which is there
/// when the app is served with
/// `into_make_service_with_connect_info::<SocketAddr>()`; otherwise no
/// address is known. teamkey never reads `X-Forwarded-For` or `Forwarded`:
/// any client can send them. Behind a reverse proxy, the peer is the proxy;
/// insert a `ClientIp` from a middleware that reads the header your proxy
/// sets, and only on requests that came through it:
///
/// ```
/// use axum::{Router, extract::Request, middleware::{self, Next}, response::Response};
/// use teamkey_axum::ClientIp;
///
/// // Only sound when every request comes through the proxy, which sets
/// // X-Real-IP itself (replacing whatever the client sent).
/// async fn real_ip(mut request: Request, next: Next) -> Response {
///     let ip = request
///         .headers()
///         .get("x-real-ip")
///         .and_then(|v| v.to_str().ok())
///         .and_then(|v| v.parse().ok());
///     if let Some(ip) = ip {
///         request.extensions_mut().insert(ClientIp(ip));
///     }
///     next.run(request).await
/// }
///
/// // Outside the key guard, so that the guard sees it.
/// let app: Router = Router::new().layer(middleware::from_fn(real_ip));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// The client's address: the app's [`ClientIp`], else the peer's from
/// `ConnectInfo`. Two extension lookups: cheap enough for every request.
pub(crate) fn client_ip(extensions: &Extensions) -> Option<IpAddr> {
    let ip = match extensions.get::<ClientIp>() {
        Some(ClientIp(ip)) => *ip,
        None => extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip(),
    };
    // A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`.
    Some(ip.to_canonical())
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id (`X-Request-Id`), client address and `User-Agent`,
/// cut and cleaned by the core.
pub(crate) fn request_context(headers: &HeaderMap, extensions: &Extensions) -> RequestContext {
    let mut context = RequestContext::new();
    if let Some(id) = headers.get(&REQUEST_ID) {
        context = context.request_id(id.as_bytes());
    }
    if let Some(ip) = client_ip(extensions) {
        context = context.client_ip(ip);
    }
    if let Some(agent) = headers.get(header::USER_AGENT) {
        context = context.user_agent(agent.as_bytes());
    }
    context
}

/// Extracts the [`request_context`]; never fails.
pub(crate) struct RequestOrigin(pub(crate) RequestContext);

impl<S: Send + Sync> FromRequestParts<S> for RequestOrigin {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self(request_context(&parts.headers, &parts.extensions)))
    }
}
