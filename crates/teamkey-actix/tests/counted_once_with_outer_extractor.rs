//! The actix side of `teamkey-axum/tests/counted_once_with_outer_extractor.rs`:
//! a key extractor run in a middleware outside the guard counts the
//! request; the guard takes its principal and counts nothing again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use actix_web::dev::Service as _;
use actix_web::{App, HttpResponse, test, web};
use teamkey_actix::{AddRateLimitHeaders, MaybeAuthenticated, RequireApiKey};
use teamkey_core::time::OffsetDateTime;
use teamkey_core::{
    CreateOptions, KeyManager, LocalRateLimiter, ManualClock, MemoryStore, RateLimit, Scopes, TeamId,
};

#[actix_web::test]
async fn an_extractor_outside_require_api_key_counts_the_request_once() {
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap());
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .rate_limiter(LocalRateLimiter::new().clock(clock))
        .build();
    let five = RateLimit::new(5, std::time::Duration::from_secs(10)).unwrap();
    let made = keys
        .create(
            &TeamId::new("acme").unwrap(),
            "k",
            CreateOptions::new()
                .scopes(Scopes::new(["scans:read"]).unwrap())
                .rate_limit(five),
        )
        .await
        .unwrap();
    let key = made.key.expose_secret().to_owned();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(keys))
            .service(web::scope("").wrap(RequireApiKey::new()).route(
                "/scans",
                web::get().to(|| async { HttpResponse::Ok().body("scans") }),
            ))
            // Logs the caller: any key extractor in an app-wide middleware.
            .wrap_fn(|mut req, srv| {
                let caller = futures_lite(req.extract::<MaybeAuthenticated>());
                let _ = caller;
                srv.call(req)
            })
            .wrap(AddRateLimitHeaders),
    )
    .await;
    let mut allowed = 0;
    for _ in 0..10 {
        let request = test::TestRequest::get()
            .uri("/scans")
            .insert_header(("x-api-key", key.as_str()))
            .to_request();
        if test::call_service(&app, request).await.status() == 200 {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5, "a quota of 5 in a burst");
}

/// Polls a future that is ready at once (a MemoryStore and an in-process
/// limiter need no waiting).
fn futures_lite<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("not ready at once"),
    }
}
