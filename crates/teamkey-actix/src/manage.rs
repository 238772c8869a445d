//! The key-management endpoints as an actix `Scope`: `GET/POST /api-keys`,
//! `GET /api-keys/events`, `DELETE /api-keys/{id}`,
//! `POST /api-keys/{id}/rotate`.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, Scope, web};
use teamkey_core::events::Actor;
pub use teamkey_core::management::KeyAdmin;
use teamkey_core::management::{self, MANAGE_SCOPE};
use teamkey_core::{Authority, KeyManager, TeamId};

use crate::context::request_context;
use crate::{AuthRejection, Authenticated};

/// teamkey's own [`KeyAdmin`]: a valid API key carrying `keys:manage`. It
/// grants only what it holds ([`Authority::of_key`]): scopes it has, keys
/// that do not outlive it, and it rotates or revokes only keys no broader
/// than itself. Its changes are recorded as made by the key
/// ([`Actor::Key`]); [`management_routes`] adds the request they came from.
#[derive(Debug, Clone)]
pub struct ManagesKeys(pub Authenticated);

impl KeyAdmin for ManagesKeys {
    fn team_id(&self) -> &TeamId {
        self.0.team_id()
    }

    fn authority(&self) -> Authority {
        Authority::of_key(&self.0)
    }

    fn actor(&self) -> Actor {
        Actor::Key {
            key_id: self.0.key_id(),
        }
    }
}

/// `admin` with the context of `req`.
fn in_request<'a, A: KeyAdmin>(admin: &'a A, req: &HttpRequest) -> impl KeyAdmin + 'a {
    management::in_request(admin, request_context(req))
}

impl FromRequest for ManagesKeys {
    type Error = AuthRejection;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AuthRejection>> + 'static>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let caller = Authenticated::from_request(req, payload);
        Box::pin(async move {
            let caller = caller.await?;
            caller.require_scope(MANAGE_SCOPE)?;
            Ok(Self(caller))
        })
    }
}

/// The management routes, `/api-keys` (`GET`, `POST`),
/// `/api-keys/events` (`GET`), `/api-keys/{id}` (`DELETE`) and
/// `/api-keys/{id}/rotate` (`POST`), for the team of each caller `A` (for
/// example [`ManagesKeys`], or the app's own signed-in user), with the same
/// JSON and rules as the axum adapter (see [`teamkey_core::management`]).
/// Needs `web::Data<KeyManager>`:
/// `web::scope("/api/v1").service(management_routes::<ManagesKeys>())`.
///
/// The audit events of creations, rotations and revocations name
/// [`KeyAdmin::actor`] and carry the request's `X-Request-Id`,
/// `User-Agent` and client address (a [`ClientIp`](crate::ClientIp) the
/// app inserted, else the peer address), where `A`'s own
/// [`KeyAdmin::context`] does not give them.
///
/// The axum adapter's function has the same name: "routes" says what it
/// gives whatever each framework calls the container (an actix `Scope`
/// here, an axum `Router` there).
pub fn management_routes<A: KeyAdmin + FromRequest + 'static>() -> Scope {
    web::scope("/api-keys")
        .route("", web::get().to(list::<A>))
        .route("", web::post().to(create::<A>))
        // Before `/{id}`, which would take "events" for a key id. Each
        // route is a resource guarded by its method, so DELETE here falls
        // through to `/{id}` and is the 404 of any id that is no key's.
        .route("/events", web::get().to(events::<A>))
        .route("/{id}", web::delete().to(revoke::<A>))
        .route("/{id}/rotate", web::post().to(rotate::<A>))
}

/// The 0.1 name of [`management_routes`].
#[deprecated(
    since = "0.2.0",
    note = "renamed to `management_routes`, the name both adapters use"
)]
pub fn management_scope<A: KeyAdmin + FromRequest + 'static>() -> Scope {
    management_routes::<A>()
}

/// Renders a core management reply, with its headers (`Cache-Control:
/// no-store` on every one).
pub(crate) fn respond(reply: management::Reply) -> HttpResponse {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    for (name, value) in reply.headers() {
        response.insert_header((HeaderName::from_static(name), HeaderValue::from_static(value)));
    }
    match reply.body {
        Some(body) => response.content_type("application/json").body(body),
        None => response.finish(),
    }
}

/// The one `Content-Type`; two of them are no declared type at all (415).
fn content_type(req: &HttpRequest) -> Option<&[u8]> {
    let mut values = req.headers().get_all(CONTENT_TYPE);
    match (values.next(), values.next()) {
        (Some(one), None) => Some(one.as_bytes()),
        _ => None,
    }
}

async fn list<A: KeyAdmin + FromRequest + 'static>(
    admin: A,
    keys: web::Data<KeyManager>,
    req: HttpRequest,
) -> HttpResponse {
    respond(management::list(&keys, &admin, req.query_string()).await)
}

async fn events<A: KeyAdmin + FromRequest + 'static>(
    admin: A,
    keys: web::Data<KeyManager>,
    req: HttpRequest,
) -> HttpResponse {
    respond(management::events(&keys, &admin, req.query_string()).await)
}

// Only the changes take the request context: lists record no event.

async fn create<A: KeyAdmin + FromRequest + 'static>(
    admin: A,
    keys: web::Data<KeyManager>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let admin = in_request(&admin, &req);
    respond(management::create(&keys, &admin, content_type(&req), &body).await)
}

async fn revoke<A: KeyAdmin + FromRequest + 'static>(
    admin: A,
    keys: web::Data<KeyManager>,
    id: web::Path<String>,
    req: HttpRequest,
) -> HttpResponse {
    respond(management::revoke(&keys, &in_request(&admin, &req), &id).await)
}

async fn rotate<A: KeyAdmin + FromRequest + 'static>(
    admin: A,
    keys: web::Data<KeyManager>,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let admin = in_request(&admin, &req);
    respond(management::rotate(&keys, &admin, &id, content_type(&req), &body).await)
}
