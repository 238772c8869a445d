//! The slot between the extractors and `AddRateLimitHeaders`: it keeps a
//! request's admission for the request's whole life, so that an extractor
//! that runs late, or inside a nested layer, never counts it again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use teamkey_axum::{AddRateLimitHeaders, Authenticated};
use teamkey_core::time::OffsetDateTime;
use teamkey_core::{
    CreateOptions, KeyManager, LocalRateLimiter, ManualClock, MemoryStore, RateLimit, TeamId,
};
use tokio::sync::{Notify, mpsc};
use tower::ServiceExt;

#[derive(Clone)]
struct Background {
    keys: KeyManager,
    /// Fired by the test once it has the 202: the work starts after it.
    go: Arc<Notify>,
}

/// "Accept now, work later": authenticates the caller (counting the
/// request, the admission left in the layer's slot), answers 202, and runs
/// the handler in the background. The handler's own `Authenticated` runs
/// after the 202 went out through `AddRateLimitHeaders`.
async fn accept_then_work(State(bg): State<Background>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Err(refusal) = Authenticated::from_request_parts(&mut parts, &bg.keys).await {
        return refusal.into_response();
    }
    let request = Request::from_parts(parts, body);
    tokio::spawn(async move {
        bg.go.notified().await;
        next.run(request).await;
    });
    StatusCode::ACCEPTED.into_response()
}

/// A request is counted once against its key's limit, whenever its later
/// extractors run. With the `OnceLock` slot the handler's extractor found
/// the admission kept; the layer now `take()`s it when the 202 is made, so
/// the handler's extractor finds nothing, verifies and admits the key
/// again, and one request costs two: with a quota of 2 the second request
/// is refused.
#[tokio::test]
async fn a_request_is_counted_once_even_when_its_handler_runs_after_the_response() {
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap());
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .rate_limiter(LocalRateLimiter::new().clock(clock.clone()))
        .build();
    let acme = TeamId::new("acme").unwrap();
    let two_a_minute = RateLimit::new(2, std::time::Duration::from_secs(60)).unwrap();
    let key = keys
        .create(&acme, "worker", CreateOptions::new().rate_limit(two_a_minute))
        .await
        .unwrap();
    let key = key.key.expose_secret().to_owned();

    let (ran, mut handler_ran) = mpsc::unbounded_channel::<()>();
    let handler = move |_caller: Authenticated| {
        let _ = ran.send(());
        std::future::ready(StatusCode::OK)
    };
    let bg = Background {
        keys: keys.clone(),
        go: Arc::default(),
    };
    let app: Router = Router::new()
        .route("/jobs", post(handler))
        .layer(from_fn_with_state(bg.clone(), accept_then_work))
        .layer(AddRateLimitHeaders)
        .with_state(keys.clone());
    let send = || {
        app.clone().oneshot(
            Request::post("/jobs")
                .header("x-api-key", &key)
                .body(Body::empty())
                .unwrap(),
        )
    };

    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(
        first.headers().contains_key("ratelimit"),
        "the layer saw the admission"
    );
    bg.go.notify_one();
    handler_ran.recv().await.expect("the background handler ran");

    let second = send().await.unwrap();
    assert_eq!(
        second.status(),
        StatusCode::ACCEPTED,
        "the first request must have cost one of the two: its handler's extractor counted it again"
    );
}

/// Authenticates the caller (counting the request) and goes on.
async fn authenticate_then_next(State(keys): State<KeyManager>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Err(refusal) = Authenticated::from_request_parts(&mut parts, &keys).await {
        return refusal.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// `AddRateLimitHeaders` on the app and again on a nested router, with a
/// middleware between them that authenticates: the inner layer puts a
/// fresh, empty slot over the one the middleware's extractor filled, so
/// the handler's extractor finds no admission and counts the request again.
#[tokio::test]
async fn nested_add_rate_limit_headers_count_a_request_once() {
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap());
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .rate_limiter(LocalRateLimiter::new().clock(clock.clone()))
        .build();
    let acme = TeamId::new("acme").unwrap();
    let two_a_minute = RateLimit::new(2, std::time::Duration::from_secs(60)).unwrap();
    let key = keys
        .create(&acme, "worker", CreateOptions::new().rate_limit(two_a_minute))
        .await
        .unwrap();
    let key = key.key.expose_secret().to_owned();
    let inner: Router<KeyManager> = Router::new()
        .route(
            "/jobs",
            post(|_caller: Authenticated| std::future::ready(StatusCode::OK)),
        )
        .layer(AddRateLimitHeaders);
    let app: Router = Router::new()
        .nest("/v1", inner)
        .layer(from_fn_with_state(keys.clone(), authenticate_then_next))
        .layer(AddRateLimitHeaders)
        .with_state(keys.clone());
    let send = || {
        app.clone().oneshot(
            Request::post("/v1/jobs")
                .header("x-api-key", &key)
                .body(Body::empty())
                .unwrap(),
        )
    };
    assert_eq!(send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        send().await.unwrap().status(),
        StatusCode::OK,
        "the first request must have cost one of the two"
    );
}
