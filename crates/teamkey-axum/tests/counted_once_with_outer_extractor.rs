//! A request whose key an extractor admitted in a middleware outside the
//! guard (`from_fn` with `MaybeAuthenticated`, say, for logging), under
//! `AddRateLimitHeaders`, is counted once: the extractor leaves the
//! principal in that layer's slot, and the guards take it from there.
//! (Found by an attack review: they verified and counted again, and a key
//! of 5 per 10 s got 2 requests through.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::get;
use teamkey_axum::{AddRateLimitHeaders, MaybeAuthenticated, RequireApiKey, RequireScope};
use teamkey_core::time::OffsetDateTime;
use teamkey_core::{
    CreateOptions, KeyManager, LocalRateLimiter, ManualClock, MemoryStore, RateLimit, Scopes, TeamId,
};
use tower::ServiceExt;

/// Logs the caller (any key extractor in an app-wide middleware).
async fn log_caller(caller: MaybeAuthenticated, request: Request, next: Next) -> Response {
    let _team = caller.0.map(|c| c.team_id().to_string());
    next.run(request).await
}

async fn setup() -> (KeyManager, String) {
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
    (keys, made.key.expose_secret().to_owned())
}

async fn allowed(app: Router, key: &str) -> usize {
    let mut allowed = 0;
    for _ in 0..10 {
        let response = app
            .clone()
            .oneshot(
                Request::get("/scans")
                    .header("x-api-key", key)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        if response.status() == 200 {
            allowed += 1;
        }
    }
    allowed
}

#[tokio::test]
async fn an_extractor_outside_require_api_key_counts_the_request_once() {
    let (keys, key) = setup().await;
    let app = Router::new()
        .route("/scans", get(|| async { "scans" }))
        .route_layer(RequireApiKey::new(keys.clone()))
        .layer(from_fn_with_state(keys.clone(), log_caller))
        .layer(AddRateLimitHeaders)
        .with_state(keys);
    assert_eq!(allowed(app, &key).await, 5, "a quota of 5 in a burst");
}

#[tokio::test]
async fn an_extractor_outside_require_scope_counts_the_request_once() {
    let (keys, key) = setup().await;
    let app = Router::new()
        .route("/scans", get(|| async { "scans" }))
        .route_layer(RequireScope::new("scans:read").with_manager(keys.clone()))
        .layer(from_fn_with_state(keys.clone(), log_caller))
        .layer(AddRateLimitHeaders)
        .with_state(keys);
    assert_eq!(allowed(app, &key).await, 5, "a quota of 5 in a burst");
}
