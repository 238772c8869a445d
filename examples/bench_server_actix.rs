//! Two copies of `GET /api/v1/scans` on actix-web in one process: one behind
//! teamkey's middleware, one open, for `benches/http-throughput.sh`.
//!
//! `bench_server_actix memory|sqlite` prints `KEY=… AUTH=port OPEN=port`, then serves.

#[path = "bench_scans.rs"]
mod bench_scans;

use actix_web::{App, HttpResponse, HttpServer, web};
use bench_scans::{Page, SCANS};
use teamkey::actix::{Authenticated, RequireApiKey};
use teamkey::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use teamkey::{CreateOptions, KeyManager, MemoryStore, SqlxStore, TeamId};

/// The same work for both: the team's scans as JSON.
fn scans_of(team: &str) -> HttpResponse {
    HttpResponse::Ok().json(Page {
        data: SCANS.iter().filter(|s| s.team == team).cloned().collect(),
    })
}

async fn with_auth(caller: Authenticated) -> HttpResponse {
    scans_of(caller.team_id().as_str())
}

async fn without_auth() -> HttpResponse {
    scans_of("acme")
}

async fn manager(store: &str) -> Result<KeyManager, Box<dyn std::error::Error>> {
    Ok(match store {
        "memory" => KeyManager::new(MemoryStore::new()),
        "sqlite" => {
            let path =
                std::env::temp_dir().join(format!("teamkey-http-bench-actix-{}.db", std::process::id()));
            let options = SqliteConnectOptions::new().filename(path).create_if_missing(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await?;
            let store = SqlxStore::new(pool);
            store.migrate().await?;
            KeyManager::new(store)
        }
        other => return Err(format!("unknown store {other:?}: use memory or sqlite").into()),
    })
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = std::env::args().nth(1).unwrap_or_else(|| "memory".into());
    let keys = manager(&store).await?;
    let made = keys
        .create(&TeamId::new("acme")?, "bench", CreateOptions::default())
        .await?;
    let data = web::Data::new(keys);
    // One worker each: the load generator gets the other core.
    let auth = HttpServer::new(move || {
        App::new().app_data(data.clone()).service(
            web::scope("/api/v1")
                .wrap(RequireApiKey::new())
                .route("/scans", web::get().to(with_auth)),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")?;
    // The same scope structure on both sides, so only teamkey differs.
    let open = HttpServer::new(|| {
        App::new().service(web::scope("/api/v1").route("/scans", web::get().to(without_auth)))
    })
    .workers(1)
    .bind("127.0.0.1:0")?;
    let port = |server: &[std::net::SocketAddr]| server.first().map_or(0, std::net::SocketAddr::port);
    println!(
        "KEY={} AUTH={} OPEN={}",
        made.key.expose_secret(),
        port(&auth.addrs()),
        port(&open.addrs())
    );
    let (a, b) = tokio::join!(auth.run(), open.run());
    a?;
    b?;
    Ok(())
}
