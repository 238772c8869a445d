//! The key-management API: `GET/POST /api-keys`, `DELETE /api-keys/{id}`,
//! `POST /api-keys/{id}/rotate`, to nest where the app likes.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use teamkey_core::{CreateOptions, KeyId, KeyInfo, KeyManager, ManageError, NewKey, Scopes, TeamId};
use time::OffsetDateTime;

use crate::{AuthRejection, Authenticated};

/// The scope that lets a key manage its own team's keys.
pub const MANAGE_SCOPE: &str = "keys:manage";

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

/// A JSON error: `{"error": code, "message": text}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: "No such API key.".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

impl From<ManageError> for ApiError {
    fn from(error: ManageError) -> Self {
        match error {
            ManageError::Invalid(e) => Self {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_request",
                message: e.to_string(),
            },
            ManageError::NotFound => Self::not_found(),
            ManageError::AlreadyRotated => Self {
                status: StatusCode::CONFLICT,
                code: "already_rotated",
                message: "This key was already rotated; rotate its successor.".into(),
            },
            _ => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "unavailable",
                message: "API keys cannot be managed right now; retry later.".into(),
            },
        }
    }
}

/// Parses a JSON body: malformed JSON is 400, well-formed but wrong is 422.
fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let status = match e.classify() {
            serde_json::error::Category::Data => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError {
            status,
            code: "invalid_request",
            message: format!("Invalid JSON body: {e}"),
        }
    })
}

/// A key id from the path; anything that is not one is simply not found.
fn key_id(id: &str) -> Result<KeyId, ApiError> {
    KeyId::parse(id).map_err(|_| ApiError::not_found())
}

#[derive(Serialize)]
struct Listed {
    data: Vec<KeyInfo>,
}

async fn list<A: KeyAdmin>(admin: A, State(keys): State<KeyManager>) -> Result<Json<Listed>, ApiError> {
    Ok(Json(Listed {
        data: keys.list(admin.team_id()).await?,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
}

/// The full key, shown this once, beside its table row.
#[derive(Serialize)]
struct Created<'a> {
    key: &'a str,
    #[serde(flatten)]
    info: &'a KeyInfo,
}

fn created(new: &NewKey) -> Response {
    let body = Created {
        key: new.key.expose_secret(),
        info: &new.info,
    };
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn create<A: KeyAdmin>(
    admin: A,
    State(keys): State<KeyManager>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CreateRequest = json_body(&body)?;
    let scopes = Scopes::new(&request.scopes).map_err(ManageError::from)?;
    let options = CreateOptions {
        scopes,
        expires_at: request.expires_at,
    };
    let new = keys.create(admin.team_id(), &request.name, options).await?;
    Ok(created(&new))
}

async fn revoke<A: KeyAdmin>(
    admin: A,
    State(keys): State<KeyManager>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    keys.revoke(admin.team_id(), &key_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateRequest {
    #[serde(default)]
    grace_seconds: u32,
}

async fn rotate<A: KeyAdmin>(
    admin: A,
    State(keys): State<KeyManager>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = key_id(&id)?;
    let request: RotateRequest = if body.is_empty() {
        RotateRequest::default()
    } else {
        json_body(&body)?
    };
    let grace = time::Duration::seconds(i64::from(request.grace_seconds));
    let new = keys.rotate(admin.team_id(), &id, grace).await?;
    Ok(created(&new))
}
