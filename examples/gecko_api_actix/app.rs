//! The Gecko-style API on actix-web: the same routes, JSON and rules as the
//! axum example.

use actix_cors::Cors;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use teamkey::KeyManager;
use teamkey::actix::{
    AuthRejection, Authenticated, ManagesKeys, RequireApiKey, management_routes, openapi_json,
};

use crate::demo;

/// Registers the API; the app data must hold `web::Data<KeyManager>` and
/// `web::Data<demo::Db>`.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    // Registered before the /api/v1 scope, so matched first and outside
    // its key guard: the document needs no key. CORS as for the API.
    cfg.service(
        web::resource("/api/v1/openapi.json")
            .wrap(cors())
            .route(openapi_json(&demo::openapi())),
    );
    cfg.service(
        web::scope("/api/v1")
            // Every /api/v1 request needs a key; the handlers' extractors
            // take the principal the guard verified.
            .wrap(RequireApiKey::new())
            // The last `wrap` is the outer one: CORS answers a preflight,
            // which carries no key, before the guard would refuse it.
            .wrap(cors())
            .route("/scans", web::get().to(list_scans))
            .route("/scans", web::post().to(start_scan))
            .service(management_routes::<ManagesKeys>()),
    );
}

/// Browsers may call the API from other origins: this answers their
/// preflights, and must sit outside the key guard.
pub(crate) fn cors() -> Cors {
    Cors::default()
        .allow_any_origin()
        .allowed_methods(["GET", "POST", "DELETE"])
        .allowed_headers(["x-api-key", "content-type", "accept"])
        // Else a script on another origin cannot read how much of its
        // key's quota is left, nor how long to wait after a 429.
        .expose_headers(["ratelimit", "ratelimit-policy", "retry-after"])
}

/// The app data `configure` needs.
pub(crate) fn data(keys: KeyManager, db: demo::Db) -> (web::Data<KeyManager>, web::Data<demo::Db>) {
    (web::Data::new(keys), web::Data::new(db))
}

#[derive(Deserialize)]
struct ScanQuery {
    limit: Option<String>,
}

async fn list_scans(
    caller: Authenticated,
    db: web::Data<demo::Db>,
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
    db: web::Data<demo::Db>,
    body: web::Bytes,
) -> Result<HttpResponse, AuthRejection> {
    caller.require_scope(demo::SCANS_WRITE)?;
    let (status, body) = demo::start_scan(&db, caller.team_id(), &body).await;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok(HttpResponse::build(status)
        .content_type("application/json")
        .body(body))
}
