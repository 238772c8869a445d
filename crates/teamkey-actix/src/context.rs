//! Where a request came from: the client's address (for last-used IPs)
//! and the request context of audit events.

use std::net::IpAddr;

use actix_web::http::header::{HeaderName, USER_AGENT};
use actix_web::{HttpMessage, HttpRequest};
use teamkey_core::events::RequestContext;

/// The client's IP address, as the application knows it: put it into the
/// request's extensions, and teamkey uses it rather than the connection's
/// peer address, both as a key's last-used IP (when the manager
/// [records client IPs](teamkey_core::KeyManagerBuilder::record_client_ips))
/// and in the audit events of management calls.
///
/// Without it, teamkey takes the peer address
/// ([`HttpRequest::peer_addr`]). It never reads `X-Forwarded-For` or
/// `Forwarded` (nor actix's `realip_remote_addr`, which trusts them): any
/// client can send them. Behind a reverse proxy, the peer is the proxy;
/// insert a `ClientIp` from a middleware that reads the header your proxy
/// sets, and only on requests that came through it:
///
/// ```
/// use actix_web::{App, HttpMessage, dev::ServiceRequest, middleware::{Next, from_fn}};
/// use actix_web::{Error, body::MessageBody, dev::ServiceResponse};
/// use teamkey_actix::ClientIp;
///
/// // Only sound when every request comes through the proxy, which sets
/// // X-Real-IP itself (replacing whatever the client sent).
/// async fn real_ip(
///     request: ServiceRequest,
///     next: Next<impl MessageBody>,
/// ) -> Result<ServiceResponse<impl MessageBody>, Error> {
///     let ip = request
///         .headers()
///         .get("x-real-ip")
///         .and_then(|v| v.to_str().ok())
///         .and_then(|v| v.parse().ok());
///     if let Some(ip) = ip {
///         request.extensions_mut().insert(ClientIp(ip));
///     }
///     next.call(request).await
/// }
///
/// // Wrapped last, so outside the key guard, which then sees it.
/// let app = App::new().wrap(from_fn(real_ip));
/// # drop(app);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// The client's address: the app's [`ClientIp`], else the peer's. One
/// extension lookup and a field read: cheap enough for every request.
pub(crate) fn client_ip(req: &HttpRequest) -> Option<IpAddr> {
    let ip = match req.extensions().get::<ClientIp>() {
        Some(ClientIp(ip)) => *ip,
        None => req.peer_addr()?.ip(),
    };
    // A dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`.
    Some(ip.to_canonical())
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id (`X-Request-Id`), client address and `User-Agent`,
/// cut and cleaned by the core.
pub(crate) fn request_context(req: &HttpRequest) -> RequestContext {
    let headers = req.headers();
    let mut context = RequestContext::new();
    if let Some(id) = headers.get(&REQUEST_ID) {
        context = context.request_id(id.as_bytes());
    }
    if let Some(ip) = client_ip(req) {
        context = context.client_ip(ip);
    }
    if let Some(agent) = headers.get(USER_AGENT) {
        context = context.user_agent(agent.as_bytes());
    }
    context
}
