//! The key-management API: `GET/POST /api-keys`, `GET /api-keys/events`,
//! `DELETE /api-keys/{id}`, `POST /api-keys/{id}/rotate`, to nest where the
//! app likes.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRef, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use teamkey_core::events::Actor;
pub use teamkey_core::management::KeyAdmin;
use teamkey_core::management::{self, MANAGE_SCOPE};
use teamkey_core::{Authority, KeyManager, TeamId};

use crate::context::RequestOrigin;
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

impl<S> FromRequestParts<S> for ManagesKeys
where
    S: Send + Sync,
    KeyManager: FromRef<S>,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Authenticated::from_request_parts(parts, state).await?;
        caller.require_scope(MANAGE_SCOPE)?;
        Ok(Self(caller))
    }
}

/// The management routes, `GET/POST /api-keys`, `GET /api-keys/events`,
/// `DELETE /api-keys/{id}` and `POST /api-keys/{id}/rotate`, for the team
/// of each caller `A` (for example [`ManagesKeys`], or the app's own
/// signed-in user), with the JSON and rules of [`teamkey_core::management`].
/// Nest or merge it where the API lives:
/// `Router::new().nest("/api/v1", management_routes::<_, ManagesKeys>())`.
///
/// The audit events of creations, rotations and revocations name
/// [`KeyAdmin::actor`] and carry the request's `X-Request-Id`,
/// `User-Agent` and client address (a [`ClientIp`](crate::ClientIp) the
/// app inserted, else the peer's from `ConnectInfo<SocketAddr>`, else none),
/// where `A`'s own [`KeyAdmin::context`] does not give them.
///
/// The actix adapter's function has the same name: "routes" says what it
/// gives whatever each framework calls the container (an axum `Router`
/// here, an actix `Scope` there).
pub fn management_routes<S, A>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    KeyManager: FromRef<S>,
    A: KeyAdmin + FromRequestParts<S> + Send + Sync + 'static,
    A::Rejection: IntoResponse,
{
    Router::new()
        .route("/api-keys", get(list::<A>).post(create::<A>))
        // A static segment outranks `{id}`, so "events" is never taken for
        // a key id; DELETE on it must still be the 404 of any id that is no
        // key's, not the 405 of a path without DELETE.
        .route("/api-keys/events", get(events::<A>).delete(revoke_events::<A>))
        .route("/api-keys/{id}", delete(revoke::<A>))
        .route("/api-keys/{id}/rotate", post(rotate::<A>))
}

/// The 0.1 name of [`management_routes`].
#[deprecated(
    since = "0.2.0",
    note = "renamed to `management_routes`, the name both adapters use"
)]
pub fn management_router<S, A>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    KeyManager: FromRef<S>,
    A: KeyAdmin + FromRequestParts<S> + Send + Sync + 'static,
    A::Rejection: IntoResponse,
{
    management_routes::<S, A>()
}

/// Renders a core management reply, with its headers (`Cache-Control:
/// no-store` on every one).
pub(crate) fn respond(reply: management::Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = reply.headers();
    let mut response = match reply.body {
        Some(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        None => status.into_response(),
    };
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    response
}

/// The one `Content-Type`; two of them are no declared type at all (415).
fn content_type(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(header::CONTENT_TYPE).into_iter();
    match (values.next(), values.next()) {
        (Some(one), None) => Some(one.as_bytes()),
        _ => None,
    }
}

async fn list<A: KeyAdmin + Sync>(
    admin: A,
    State(keys): State<KeyManager>,
    RawQuery(query): RawQuery,
) -> Response {
    respond(management::list(&keys, &admin, query.as_deref().unwrap_or_default()).await)
}

async fn events<A: KeyAdmin + Sync>(
    admin: A,
    State(keys): State<KeyManager>,
    RawQuery(query): RawQuery,
) -> Response {
    respond(management::events(&keys, &admin, query.as_deref().unwrap_or_default()).await)
}

// Only the changes take the request context: lists record no event.

async fn create<A: KeyAdmin + Sync>(
    admin: A,
    State(keys): State<KeyManager>,
    RequestOrigin(request): RequestOrigin,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let admin = management::in_request(&admin, request);
    respond(management::create(&keys, &admin, content_type(&headers), &body).await)
}

/// The `{id}` of the path. One axum cannot decode (not UTF-8 once
/// percent-decoded) is no key's id either: it gets the core's JSON 404,
/// after the caller is checked, not axum's plain-text rejection.
fn path_id(id: Result<Path<String>, PathRejection>) -> String {
    id.map(|Path(id)| id).unwrap_or_default()
}

async fn revoke<A: KeyAdmin + Sync>(
    admin: A,
    State(keys): State<KeyManager>,
    RequestOrigin(request): RequestOrigin,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = path_id(id);
    respond(management::revoke(&keys, &management::in_request(&admin, request), &id).await)
}

/// `DELETE /api-keys/events`: what `DELETE /api-keys/{id}` answers for an
/// id that is no key's (404, after the caller is checked).
async fn revoke_events<A: KeyAdmin + Sync>(
    admin: A,
    State(keys): State<KeyManager>,
    RequestOrigin(request): RequestOrigin,
) -> Response {
    respond(management::revoke(&keys, &management::in_request(&admin, request), "events").await)
}

async fn rotate<A: KeyAdmin + Sync>(
    admin: A,
    State(keys): State<KeyManager>,
    RequestOrigin(request): RequestOrigin,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = path_id(id);
    let admin = management::in_request(&admin, request);
    respond(management::rotate(&keys, &admin, &id, content_type(&headers), &body).await)
}
