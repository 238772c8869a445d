//! The Gecko-style API on axum: `GET /api/v1/scans` scoped to the caller's
//! team, the key-management routes under `/api/v1/api-keys`, and their
//! OpenAPI document at `/api/v1/openapi.json`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, Query, State};
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use teamkey::KeyManager;
use teamkey::axum::{
    AuthRejection, Authenticated, ManagesKeys, RequireApiKey, management_routes, openapi_json,
};
use tower_http::cors::{Any, CorsLayer};

use crate::demo;

/// What the handlers share.
#[derive(Clone, FromRef)]
pub(crate) struct AppState {
    /// Verifies keys and runs their lifecycle.
    pub(crate) keys: KeyManager,
    /// The application's own data (scans).
    pub(crate) db: demo::Db,
}

/// The whole API. Layer order, outermost first: CORS, the key guard, the
/// routes (the layer added last runs first).
pub(crate) fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/scans", get(list_scans).post(start_scan))
        .merge(management_routes::<AppState, ManagesKeys>())
        // Every /api/v1 request needs a key; the handlers' extractors take
        // the principal the guard verified. The guard takes the manager
        // from the state: configured once.
        .layer(RequireApiKey::from_state(&state))
        // Added after the guard, so outside it: the document needs no key.
        .route("/openapi.json", openapi_json(&demo::openapi()));
    // Outside the guard: a preflight carries no key, so CORS must answer it
    // before the guard would refuse it.
    Router::new().nest("/api/v1", v1).layer(cors()).with_state(state)
}

/// Browsers may call the API from other origins: this answers their
/// preflights, and must sit outside the key guard.
pub(crate) fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            HeaderName::from_static("x-api-key"),
            header::CONTENT_TYPE,
            header::ACCEPT,
        ])
        // Else a script on another origin cannot read how much of its
        // key's quota is left, nor how long to wait after a 429.
        .expose_headers([
            HeaderName::from_static("ratelimit"),
            HeaderName::from_static("ratelimit-policy"),
            header::RETRY_AFTER,
        ])
}

#[derive(Deserialize)]
struct ScanQuery {
    limit: Option<String>,
}

async fn list_scans(
    caller: Authenticated,
    State(db): State<demo::Db>,
    query: Result<Query<ScanQuery>, QueryRejection>,
) -> Response {
    let limit = match &query {
        Ok(Query(q)) => q.limit.as_deref(),
        Err(_) => Some(""),
    };
    let (status, body) = demo::scans(&db, caller.team_id(), limit).await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Starting a scan needs `scans:write`; reading needs only a key of the team.
async fn start_scan(
    caller: Authenticated,
    State(db): State<demo::Db>,
    body: Bytes,
) -> Result<Response, AuthRejection> {
    caller.require_scope(demo::SCANS_WRITE)?;
    let (status, body) = demo::start_scan(&db, caller.team_id(), &body).await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}
