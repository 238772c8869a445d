//! The Gecko-style API on actix-web: the same routes, JSON and rules as the
//! axum example.

use actix_cors::Cors;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use teamkey::KeyManager;
use teamkey::actix::{AuthError, Authenticated, ManagesKeys, management_scope};
use teamkey::sqlx::SqlitePool;

use crate::demo;

/// Registers the API; the app data must hold `web::Data<KeyManager>` and
/// `web::Data<SqlitePool>`.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    // Browsers may call the API from other origins: answer their preflights.
    let cors = Cors::default()
        .allow_any_origin()
        .allowed_methods(["GET", "POST", "DELETE"])
        .allowed_headers(["x-api-key", "content-type", "accept"]);
    cfg.service(
        web::scope("/api/v1")
            .wrap(cors)
            .route("/scans", web::get().to(list_scans))
            .route("/scans", web::post().to(start_scan))
            .service(management_scope::<ManagesKeys>()),
    );
}

/// The app data `configure` needs.
pub(crate) fn data(keys: KeyManager, db: SqlitePool) -> (web::Data<KeyManager>, web::Data<SqlitePool>) {
    (web::Data::new(keys), web::Data::new(db))
}

#[derive(Deserialize)]
struct ScanQuery {
    limit: Option<String>,
}

async fn list_scans(
    caller: Authenticated,
    db: web::Data<SqlitePool>,
    query: Result<web::Query<ScanQuery>, actix_web::Error>,
) -> HttpResponse {
    let limit = match &query {
        Ok(q) => q.limit.as_deref(),
        Err(_) => Some(""),
    };
    let (status, body) = demo::scans(&db, caller.team_id(), limit).await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .content_type("application/json")
        .body(body)
}

/// Starting a scan needs `scans:write`; reading needs only a key of the team.
async fn start_scan(
    caller: Authenticated,
    db: web::Data<SqlitePool>,
    body: web::Bytes,
) -> Result<HttpResponse, AuthError> {
    caller.require_scope(demo::SCANS_WRITE)?;
    let (status, body) = demo::start_scan(&db, caller.team_id(), &body).await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok(HttpResponse::build(status)
        .content_type("application/json")
        .body(body))
}
