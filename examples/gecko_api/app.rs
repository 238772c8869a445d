//! The Gecko-style API as a router, shared by the example binary and the
//! tests: `GET /api/v1/scans` scoped to the caller's team, and the key
//! management routes under `/api/v1/api-keys`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRef, Query, State};
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use teamkey::axum::{Authenticated, ManagesKeys, management_router};
use teamkey::sqlx::{self, SqlitePool};
use teamkey::{CreateOptions, KeyManager, NewKey, Scopes, TeamId};
use tower_http::cors::{Any, CorsLayer};

/// What the handlers share.
#[derive(Clone, FromRef)]
pub(crate) struct AppState {
    /// Verifies keys and runs their lifecycle.
    pub(crate) keys: KeyManager,
    /// The application's own data (scans).
    pub(crate) db: SqlitePool,
}

/// The whole API.
pub(crate) fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/scans", get(list_scans))
        .merge(management_router::<AppState, ManagesKeys>());
    // Browsers may call the API from other origins: answer their preflights.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            HeaderName::from_static("x-api-key"),
            header::CONTENT_TYPE,
            header::ACCEPT,
        ]);
    Router::new().nest("/api/v1", v1).layer(cors).with_state(state)
}

/// One scan of the demo data.
#[derive(Debug, Serialize)]
pub(crate) struct Scan {
    id: String,
    team: String,
    target: String,
    status: String,
    created_at: String,
}

#[derive(Serialize)]
struct Page<T> {
    data: Vec<T>,
}

#[derive(Deserialize)]
struct ScanQuery {
    limit: Option<String>,
}

fn bad_request(message: &str) -> Response {
    let body = serde_json::json!({ "error": "invalid_request", "message": message });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

async fn list_scans(
    caller: Authenticated,
    State(db): State<SqlitePool>,
    query: Result<Query<ScanQuery>, QueryRejection>,
) -> Response {
    const LIMIT: &str = "limit must be an integer from 1 to 100";
    let Ok(Query(query)) = query else {
        return bad_request(LIMIT);
    };
    let limit = match query.limit.as_deref().map(str::parse::<u8>) {
        None => 20,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return bad_request(LIMIT),
    };
    // Every query is scoped by the caller's team.
    let scans = sqlx::query_as::<_, (String, String, String, String, String)>(
        "SELECT id, team, target, status, created_at FROM scans WHERE team = ? \
         ORDER BY created_at DESC, id LIMIT ?",
    )
    .bind(caller.team_id().as_str())
    .bind(i64::from(limit))
    .fetch_all(&db)
    .await;
    match scans {
        Ok(rows) => {
            let data = rows
                .into_iter()
                .map(|(id, team, target, status, created_at)| Scan {
                    id,
                    team,
                    target,
                    status,
                    created_at,
                })
                .collect();
            Json(Page { data }).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "scans query failed");
            let body = serde_json::json!({ "error": "unavailable", "message": "Scans are unavailable." });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// The demo data: teams `acme` and `globex` with a few scans each.
pub(crate) async fn prepare(db: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS scans (id TEXT PRIMARY KEY, team TEXT NOT NULL, \
         target TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL)",
    )
    .execute(db)
    .await?;
    let seed = [
        (
            "scn_acme_1",
            "acme",
            "github.com/acme/web",
            "completed",
            "2026-11-20T09:00:00Z",
        ),
        (
            "scn_acme_2",
            "acme",
            "github.com/acme/api",
            "completed",
            "2026-11-21T09:00:00Z",
        ),
        (
            "scn_acme_3",
            "acme",
            "github.com/acme/mobile",
            "running",
            "2026-11-22T09:00:00Z",
        ),
        (
            "scn_globex_1",
            "globex",
            "github.com/globex/core",
            "completed",
            "2026-11-20T10:00:00Z",
        ),
        (
            "scn_globex_2",
            "globex",
            "github.com/globex/billing",
            "failed",
            "2026-11-21T10:00:00Z",
        ),
    ];
    for (id, team, target, status, created_at) in seed {
        sqlx::query(
            "INSERT OR IGNORE INTO scans (id, team, target, status, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(team)
        .bind(target)
        .bind(status)
        .bind(created_at)
        .execute(db)
        .await?;
    }
    Ok(())
}

/// A `Quickstart` key for `acme` (scope `keys:manage`) if acme has no key yet.
pub(crate) async fn quickstart_key(keys: &KeyManager) -> Result<Option<NewKey>, Box<dyn std::error::Error>> {
    let acme = TeamId::new("acme")?;
    if !keys.list(&acme).await?.is_empty() {
        return Ok(None);
    }
    let options = CreateOptions {
        scopes: Scopes::new(["keys:manage"])?,
        ..Default::default()
    };
    Ok(Some(keys.create(&acme, "Quickstart", options).await?))
}
