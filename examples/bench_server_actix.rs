//! Two copies of `GET /api/v1/scans` on actix-web in one process: one behind
//! teamkey's middleware, one open, for `benches/http-throughput.sh`.
//!
//! `bench_server_actix memory|memory-limited|sqlite|sqlite-cached|postgres|postgres-cached`
//! prints `KEY=… AUTH=port OPEN=port`, then serves until SIGTERM or Ctrl-C,
//! and then removes what the store left behind (see `bench_server.rs`).
//! With `memory-limited` the key has a rate limit it never hits, and the
//! line ends with `UNLIMITED_KEY=…`, a key of the same manager without one;
//! the middleware adds the headers.
//!
//! `TEAMKEY_BENCH_STAND_IN=<ns>` (store `memory` only) puts a stand-in in
//! teamkey's place, as `bench_server` does for axum: a middleware that
//! verifies nothing, spins for `<ns>` nanoseconds and leaves a caller in
//! the request's extensions (one reference-counted value, as a principal
//! is), and `web::ReqData` taking it in the handler. With 0 it measures
//! what any middleware and extractor pair costs actix.

#[path = "bench_common.rs"]
mod bench_common;

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Service;
use actix_web::{App, HttpMessage, HttpResponse, HttpServer, web};
use bench_common::{Bench, Page, SCANS, spin_for, stand_in};
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

/// What the stand-in's middleware leaves for the handler: a team, shared.
#[derive(Clone)]
struct StandInCaller(Arc<str>);

async fn with_stand_in(caller: web::ReqData<StandInCaller>) -> HttpResponse {
    scans_of(&caller.0)
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
    let stand_in = stand_in();
    if stand_in.is_some() && store != "memory" {
        return Err("the actix stand-in takes the store memory only".into());
    }
    let caller = StandInCaller(Arc::from("acme"));
    let auth = HttpServer::new(move || {
        let app = App::new().app_data(data.clone());
        let scope = web::scope("/api/v1");
        match stand_in {
            Some(ns) => {
                let (caller, spin) = (caller.clone(), Duration::from_nanos(ns));
                app.service(
                    scope
                        .wrap_fn(move |req, service| {
                            spin_for(spin);
                            req.extensions_mut().insert(caller.clone());
                            service.call(req)
                        })
                        .route("/scans", web::get().to(with_stand_in)),
                )
            }
            None => app.service(
                scope
                    .wrap(RequireApiKey::new())
                    .route("/scans", web::get().to(with_auth)),
            ),
        }
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
