//! The key-management API: `GET/POST /api-keys`, `DELETE /api-keys/{id}`,
//! `POST /api-keys/{id}/rotate`, to nest where the app likes.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
pub use teamkey_core::management::KeyAdmin;
use teamkey_core::management::{self, MANAGE_SCOPE};
use teamkey_core::{Authority, KeyManager, TeamId};

use crate::{AuthRejection, Authenticated};

/// teamkey's own [`KeyAdmin`]: a valid API key carrying `keys:manage`. It
/// grants only what it holds ([`Authority::of_key`]): scopes it has, keys
/// that do not outlive it, and it rotates or revokes only keys no broader
/// than itself.
#[derive(Debug, Clone)]
pub struct ManagesKeys(pub Authenticated);

impl KeyAdmin for ManagesKeys {
    fn team_id(&self) -> &TeamId {
        self.0.team_id()
    }

    fn authority(&self) -> Authority {
        Authority::of_key(&self.0)
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

/// The management routes, `GET/POST /api-keys`, `DELETE /api-keys/{id}`
/// and `POST /api-keys/{id}/rotate`, for the team of each caller `A` (for
/// example [`ManagesKeys`]), with the JSON and rules of
/// [`teamkey_core::management`]. Nest or merge it where the API lives:
/// `Router::new().nest("/api/v1", management_routes::<_, ManagesKeys>())`.
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

async fn create<A: KeyAdmin + Sync>(
    admin: A,
    State(keys): State<KeyManager>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(management::create(&keys, &admin, content_type(&headers), &body).await)
}

async fn revoke<A: KeyAdmin + Sync>(
    admin: A,
    State(keys): State<KeyManager>,
    Path(id): Path<String>,
) -> Response {
    respond(management::revoke(&keys, &admin, &id).await)
}

async fn rotate<A: KeyAdmin + Sync>(
    admin: A,
    State(keys): State<KeyManager>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    respond(management::rotate(&keys, &admin, &id, content_type(&headers), &body).await)
}
