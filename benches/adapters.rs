//! What one `GET /api/v1/scans` costs in process, without the network:
//! the bench servers' apps (`examples/bench_server*.rs`) called directly,
//! guarded by teamkey and open, with the same request (key header
//! included), state and app data. Guarded minus open is what teamkey adds;
//! `verify_headers` is the verification alone, for scale.
//!
//! `limits` (in each adapter's module): the guarded request with a key
//! whose rate limit is never hit (`LocalRateLimiter`, a million requests a
//! second) against a key of the same manager without one: what counting
//! the request and writing the two `RateLimit` headers adds.
//!
//! `cargo bench --bench adapters --features axum,actix,sqlx-sqlite,sqlx-postgres`
//! (the features the bench servers need); docs/performance.md has figures.
//! Without the kernel's TCP work a request costs a fifth of what it does
//! over loopback, so teamkey's share is larger here, and steadier.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use teamkey::{CreateOptions, HeaderRules, KeyManager, LocalRateLimiter, MemoryStore, RateLimit, TeamId};

// The bench servers' scans and page; its store setup goes unused here.
#[allow(dead_code)]
#[path = "../examples/bench_common.rs"]
mod bench_common;

fn main() {
    divan::main();
}

/// A manager over MemoryStore holding 10,001 keys, and the last key made.
fn manager() -> (KeyManager, String) {
    let keys = KeyManager::builder(MemoryStore::new())
        .max_active_keys(20_000)
        .build();
    let key = with_keys(&keys, CreateOptions::default());
    (keys, key)
}

/// The `limits` benches' arguments: the bench key without a limit, or with
/// one it never hits.
const LIMITS: [&str; 2] = ["no limit", "limit on, never hit"];

/// A manager as [`manager`]'s, with a `LocalRateLimiter`, and a key for
/// `case` (one of [`LIMITS`]): the same manager either way, so that only
/// the key's limit differs.
fn limited_manager(case: &str) -> (KeyManager, String) {
    let keys = KeyManager::builder(MemoryStore::new())
        .max_active_keys(20_000)
        .rate_limiter(LocalRateLimiter::new())
        .build();
    let mut options = CreateOptions::default();
    if case == LIMITS[1] {
        let never_hit = RateLimit::new(1_000_000, std::time::Duration::from_secs(1)).expect("limit");
        options = options.rate_limit(never_hit);
    }
    let key = with_keys(&keys, options);
    (keys, key)
}

/// Makes 10,000 keys of acme, then the bench key with `options`.
fn with_keys(keys: &KeyManager, options: CreateOptions) -> String {
    let team = TeamId::new("acme").expect("team");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for i in 0..10_000 {
            keys.create(&team, &format!("key {i}"), CreateOptions::default())
                .await
                .expect("create");
        }
        let made = keys.create(&team, "bench", options).await.expect("create");
        made.key.expose_secret().to_owned()
    })
}

/// Runs a future that never waits to completion with a single poll.
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("MemoryStore futures complete at once"),
    }
}

/// The verification alone, as the adapters call it.
#[divan::bench]
fn verify_headers(bencher: divan::Bencher<'_, '_>) {
    let (keys, key) = manager();
    let rules = HeaderRules::default();
    bencher.bench_local(|| {
        let header = [black_box(key.as_bytes())];
        ready(keys.verify_headers(&rules, header, std::iter::empty())).expect("valid")
    });
}

mod axum {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use axum::{Json, Router};
    use teamkey::axum::{Authenticated, RequireApiKey};
    use tower::ServiceExt;

    use crate::bench_common::{Page, SCANS};

    /// The same work for both: the team's scans as JSON.
    fn scans_of(team: &str) -> Json<Page> {
        Json(Page {
            data: SCANS.iter().filter(|s| s.team == team).cloned().collect(),
        })
    }

    async fn with_auth(caller: Authenticated) -> Json<Page> {
        scans_of(caller.team_id().as_str())
    }

    async fn without_auth() -> Json<Page> {
        scans_of("acme")
    }

    /// The `Authenticated` extractor (true) or nothing (false), same state.
    #[divan::bench(args = [false, true])]
    fn get_scans(bencher: divan::Bencher<'_, '_>, guarded: bool) {
        let (keys, key) = super::manager();
        let route = if guarded {
            get(with_auth)
        } else {
            get(without_auth)
        };
        let app = Router::new().route("/api/v1/scans", route).with_state(keys);
        serve(bencher, &app, &key);
    }

    /// The `Authenticated` extractor alone, with a key without a limit or
    /// with one never hit: the admission, and no headers (an extractor
    /// cannot add them).
    #[divan::bench(args = super::LIMITS)]
    fn limits_extractor(bencher: divan::Bencher<'_, '_>, case: &str) {
        let (keys, key) = super::limited_manager(case);
        let app = Router::new()
            .route("/api/v1/scans", get(with_auth))
            .with_state(keys);
        serve(bencher, &app, &key);
    }

    /// `RequireApiKey` and the extractor, with a key without a limit or
    /// with one never hit: the admission and the two headers written.
    #[divan::bench(args = super::LIMITS)]
    fn limits_guard(bencher: divan::Bencher<'_, '_>, case: &str) {
        let (keys, key) = super::limited_manager(case);
        let app = Router::new()
            .route("/api/v1/scans", get(with_auth))
            .layer(RequireApiKey::new(keys.clone()))
            .with_state(keys);
        serve(bencher, &app, &key);
    }

    fn serve(bencher: divan::Bencher<'_, '_>, app: &Router, key: &str) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        bencher.bench_local(|| {
            let request = Request::get("/api/v1/scans")
                .header("x-api-key", key)
                .body(Body::empty())
                .expect("request");
            let response = rt.block_on(app.clone().oneshot(request)).expect("infallible");
            assert!(response.status().is_success());
            response
        });
    }
}

mod actix {
    use actix_web::body::MessageBody;
    use actix_web::dev::{Service, ServiceResponse};
    use actix_web::rt::SystemRunner;
    use actix_web::{App, HttpResponse, test, web};
    use teamkey::actix::{Authenticated, RequireApiKey};

    use crate::bench_common::{Page, SCANS};

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

    /// `RequireApiKey` and the `Authenticated` extractor (true) or neither
    /// (false); same app data, same scope.
    #[divan::bench(args = [false, true])]
    fn get_scans(bencher: divan::Bencher<'_, '_>, guarded: bool) {
        let (keys, key) = super::manager();
        let app = App::new().app_data(web::Data::new(keys));
        let system = actix_web::rt::System::new();
        if guarded {
            let scope = web::scope("/api/v1")
                .wrap(RequireApiKey::new())
                .route("/scans", web::get().to(with_auth));
            let service = system.block_on(test::init_service(app.service(scope)));
            serve(bencher, &system, &service, &key);
        } else {
            let scope = web::scope("/api/v1").route("/scans", web::get().to(without_auth));
            let service = system.block_on(test::init_service(app.service(scope)));
            serve(bencher, &system, &service, &key);
        }
    }

    /// `RequireApiKey` and the extractor, with a key without a limit or
    /// with one never hit: the admission and the two headers written.
    #[divan::bench(args = super::LIMITS)]
    fn limits(bencher: divan::Bencher<'_, '_>, case: &str) {
        let (keys, key) = super::limited_manager(case);
        let app = App::new().app_data(web::Data::new(keys));
        let system = actix_web::rt::System::new();
        let scope = web::scope("/api/v1")
            .wrap(RequireApiKey::new())
            .route("/scans", web::get().to(with_auth));
        let service = system.block_on(test::init_service(app.service(scope)));
        serve(bencher, &system, &service, &key);
    }

    fn serve<S, B>(bencher: divan::Bencher<'_, '_>, system: &SystemRunner, service: &S, key: &str)
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        bencher.bench_local(|| {
            let request = test::TestRequest::get()
                .uri("/api/v1/scans")
                .insert_header(("x-api-key", key))
                .to_request();
            let response = system.block_on(service.call(request)).expect("response");
            assert!(response.status().is_success());
            response
        });
    }
}
