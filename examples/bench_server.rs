//! Two copies of `GET /api/v1/scans` in one process: one behind teamkey, one
//! open, for `benches/http-throughput.sh` to load side by side.
//!
//! `bench_server memory|memory-limited|sqlite|sqlite-cached|postgres|postgres-cached`
//! prints `KEY=… AUTH=port OPEN=port`, then serves until SIGTERM or
//! Ctrl-C, and then removes what the store left behind. `postgres` connects
//! to `TEAMKEY_BENCH_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) and works in a schema of its
//! own. `memory-limited` gives the key a rate limit it never hits, adds
//! `UNLIMITED_KEY=…` (a key of the same manager without one) to the line,
//! and puts `AddRateLimitHeaders` around the authenticated route, so that
//! its responses carry the headers (the extractor alone cannot add them).
//!
//! `TEAMKEY_BENCH_STAND_IN=<ns>` puts a stand-in on the guarded route: an
//! extractor that verifies nothing and spins for `<ns>` nanoseconds. It
//! calibrates the method: what an extractor costs with 0, and what a
//! known amount of pure CPU time per request does to the ratio. With
//! `memory-limited`, the stand-in also gives the bench key's responses
//! two headers shaped as `RateLimit-Policy` and `RateLimit` (the second
//! formatted per request), and the unlimited key's none: the pair "limit
//! on / no limit" then measures what two such headers cost axum and hyper
//! alone, the floor under the real limit's ratio.
//!
//! `TEAMKEY_BENCH_AXUM=guard` serves the guarded route as the Gecko example
//! and the README do, and as actix's bench server always does: the
//! `RequireApiKey` layer in front, the `Authenticated` extractor taking the
//! principal it left (the layer adds the `RateLimit` headers itself, so no
//! `AddRateLimitHeaders`). Unset, or `extractor`: the extractor alone.

#[path = "bench_common.rs"]
mod bench_common;

use std::convert::Infallible;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bench_common::{Bench, Page, SCANS, spin_for, stand_in};
use teamkey::axum::{AddRateLimitHeaders, Authenticated, RequireApiKey};

/// The same work for both: the team's scans as JSON.
fn scans_of(team: &str) -> Json<Page> {
    Json(Page {
        data: SCANS.iter().filter(|s| s.team == team).cloned().collect(),
    })
}

async fn with_auth(caller: Authenticated) -> Json<Page> {
    scans_of(caller.team_id().as_str())
}

/// The stand-in for auth (see the module documentation): `headers` when
/// the request's key is not the one without a limit, under `memory-limited`.
struct StandIn {
    headers: bool,
}

/// `memory-limited`: the key without a limit, whose responses the stand-in
/// leaves without headers.
static UNLIMITED_KEY: OnceLock<String> = OnceLock::new();

impl<S: Send + Sync> FromRequestParts<S> for StandIn {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        // Read once at start, not per request.
        static SPIN: OnceLock<Duration> = OnceLock::new();
        let spin = SPIN.get_or_init(|| Duration::from_nanos(stand_in().unwrap_or(0)));
        let headers = UNLIMITED_KEY.get().is_some_and(|unlimited| {
            parts
                .headers
                .get("x-api-key")
                .is_some_and(|key| key.as_bytes() != unlimited.as_bytes())
        });
        spin_for(*spin);
        Ok(StandIn { headers })
    }
}

async fn with_stand_in(stand_in: StandIn) -> Response {
    let mut response = scans_of("acme").into_response();
    if stand_in.headers {
        // What teamkey sends, made the cheapest way: a constant policy, and
        // the state formatted per request (its count goes down).
        static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
        static STATE: HeaderName = HeaderName::from_static("ratelimit");
        static LEFT: AtomicU64 = AtomicU64::new(u64::MAX);
        let left = LEFT.fetch_sub(1, Ordering::Relaxed) % 1_000_000;
        let headers = response.headers_mut();
        headers.insert(
            POLICY.clone(),
            HeaderValue::from_static("\"default\";q=1000000;w=1"),
        );
        if let Ok(state) = HeaderValue::try_from(format!("\"default\";r={left};t=1")) {
            headers.insert(STATE.clone(), state);
        }
    }
    response
}

/// `TEAMKEY_BENCH_AXUM`: whether `RequireApiKey` guards the route (see the
/// module documentation). Anything but `guard` or `extractor` stops the
/// server, rather than measure one setup under the other's name.
fn guarded_by_layer() -> bool {
    match std::env::var("TEAMKEY_BENCH_AXUM").as_deref() {
        Err(_) | Ok("extractor") => false,
        Ok("guard") => true,
        Ok(other) => {
            eprintln!("TEAMKEY_BENCH_AXUM is guard or extractor, not {other:?}");
            std::process::exit(2);
        }
    }
}

async fn without_auth() -> Json<Page> {
    scans_of("acme")
}

/// SIGTERM or Ctrl-C, as actix-web stops on.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = terminate.recv() => return,
                _ = tokio::signal::ctrl_c() => return,
            }
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One worker: the load generator gets the other core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = std::env::args().nth(1).unwrap_or_else(|| "memory".into());
        let bench = Bench::new(&store).await?;
        let keys = bench.keys.clone();
        let made = bench.keys().await?;
        if let (Some(_), Some(unlimited)) = (stand_in(), &made.unlimited) {
            let _ = UNLIMITED_KEY.set(unlimited.key.expose_secret().to_owned());
        }
        // The same router on both sides, state included (axum clones the
        // state for every request): only the handler's extractor differs.
        let open = Router::new()
            .route("/api/v1/scans", get(without_auth))
            .with_state(keys.clone());
        if stand_in().is_some() && guarded_by_layer() {
            return Err(
                "TEAMKEY_BENCH_STAND_IN replaces the key check: it does not go with TEAMKEY_BENCH_AXUM=guard"
                    .into(),
            );
        }
        let mut auth = match stand_in() {
            Some(_) => Router::new().route("/api/v1/scans", get(with_stand_in)),
            None => Router::new().route("/api/v1/scans", get(with_auth)),
        };
        if guarded_by_layer() {
            auth = auth.layer(RequireApiKey::from_state(&keys));
        } else if bench.limit.is_some() {
            auth = auth.layer(AddRateLimitHeaders);
        }
        let auth = auth.with_state(keys);
        let auth_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let open_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Bench::announce(
            &made,
            auth_listener.local_addr()?.port(),
            open_listener.local_addr()?.port(),
        );
        let served = tokio::try_join!(
            axum::serve(auth_listener, auth).with_graceful_shutdown(stopped()),
            axum::serve(open_listener, open).with_graceful_shutdown(stopped()),
        );
        bench.cleanup().await;
        served.map(|_| ()).map_err(Into::into)
    })
}
