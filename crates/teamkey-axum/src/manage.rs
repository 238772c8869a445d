//! The key-management API: `GET/POST /api-keys`, `DELETE /api-keys/{id}`,
//! `POST /api-keys/{id}/rotate`, to nest where the app likes.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use teamkey_core::management::{self, MANAGE_SCOPE};
use teamkey_core::{KeyManager, TeamId};

use crate::{AuthRejection, Authenticated};

/// Whoever may manage a team's keys, as the application decides: implement
/// it for your own session or admin extractor. The management routes act on
/// [`KeyAdmin::team_id`]'s keys only.
pub trait KeyAdmin {
    /// The team whose keys the caller manages.
    fn team_id(&self) -> &TeamId;
}

/// teamkey's own [`KeyAdmin`]: a valid API key carrying `keys:manage`.
#[derive(Debug, Clone)]
pub struct ManagesKeys(pub Authenticated);

impl KeyAdmin for ManagesKeys {
    fn team_id(&self) -> &TeamId {
        self.0.team_id()
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

/// The management routes, for the team of each caller `A` (for example
/// [`ManagesKeys`]). Nest it: `Router::new().nest("/api/v1", management_router::<_, ManagesKeys>())`.
pub fn management_router<S, A>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    KeyManager: FromRef<S>,
    A: KeyAdmin + FromRequestParts<S> + Send + 'static,
    A::Rejection: IntoResponse,
{
    Router::new()
        .route("/api-keys", get(list::<A>).post(create::<A>))
        .route("/api-keys/{id}", delete(revoke::<A>))
        .route("/api-keys/{id}/rotate", post(rotate::<A>))
}

/// Renders a core management reply.
fn respond(reply: management::Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match reply.body {
        Some(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        None => status.into_response(),
    }
}

async fn list<A: KeyAdmin>(admin: A, State(keys): State<KeyManager>) -> Response {
    respond(management::list(&keys, admin.team_id()).await)
}

async fn create<A: KeyAdmin>(admin: A, State(keys): State<KeyManager>, body: Bytes) -> Response {
    respond(management::create(&keys, admin.team_id(), &body).await)
}

async fn revoke<A: KeyAdmin>(admin: A, State(keys): State<KeyManager>, Path(id): Path<String>) -> Response {
    respond(management::revoke(&keys, admin.team_id(), &id).await)
}

async fn rotate<A: KeyAdmin>(
    admin: A,
    State(keys): State<KeyManager>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    respond(management::rotate(&keys, admin.team_id(), &id, &body).await)
}
