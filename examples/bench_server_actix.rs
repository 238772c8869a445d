//! Two copies of `GET /api/v1/scans` on actix-web in one process: one behind
//! teamkey's middleware, one open, for `benches/http-throughput.sh`.
//!
//! `bench_server_actix memory|memory-limited|sqlite|sqlite-cached|postgres|postgres-cached`
//! prints `KEY=… AUTH=port OPEN=port`, then serves until SIGTERM or Ctrl-C,
//! and then removes what the store left behind (see `bench_server.rs`).
//! With `memory-limited` the key has a rate limit it never hits, and the
//! line ends with `UNLIMITED_KEY=…`, a key of the same manager without one;
//! the middleware adds the headers.

#[path = "bench_common.rs"]
mod bench_common;

use actix_web::{App, HttpResponse, HttpServer, web};
use bench_common::{Bench, Page, SCANS};
use teamkey::actix::{Authenticated, RequireApiKey};

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

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = std::env::args().nth(1).unwrap_or_else(|| "memory".into());
    let bench = Bench::new(&store).await?;
    let made = bench.keys().await?;
    let data = web::Data::new(bench.keys.clone());
    let open_data = data.clone();
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
    // The same app data and scope on both sides, so only teamkey differs.
    let open = HttpServer::new(move || {
        App::new()
            .app_data(open_data.clone())
            .service(web::scope("/api/v1").route("/scans", web::get().to(without_auth)))
    })
    .workers(1)
    .bind("127.0.0.1:0")?;
    let port = |server: &[std::net::SocketAddr]| server.first().map_or(0, std::net::SocketAddr::port);
    Bench::announce(&made, port(&auth.addrs()), port(&open.addrs()));
    // Both stop on SIGTERM or Ctrl-C: actix handles them.
    let (a, b) = tokio::join!(auth.run(), open.run());
    bench.cleanup().await;
    a?;
    b?;
    Ok(())
}
