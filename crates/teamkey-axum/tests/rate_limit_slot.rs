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

/// A manager counting in process on a stopped clock, and a key it allows
/// two requests a minute.
async fn key_of_two_a_minute() -> (KeyManager, String) {
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap());
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .rate_limiter(LocalRateLimiter::new().clock(clock.clone()))
        .build();
    let two_a_minute = RateLimit::new(2, std::time::Duration::from_secs(60)).unwrap();
    let made = keys
        .create(
            &TeamId::new("acme").unwrap(),
            "worker",
            CreateOptions::new().rate_limit(two_a_minute),
        )
        .await
        .unwrap();
    let key = made.key.expose_secret().to_owned();
    (keys, key)
}

/// `POST path` with `key`.
async fn post_with(app: &Router, path: &str, key: &str) -> Response {
    let request = Request::post(path)
        .header("x-api-key", key)
        .body(Body::empty())
        .unwrap();
    app.clone().oneshot(request).await.unwrap()
}

/// The request with its caller authenticated (and counted), or the refusal.
async fn authenticated(keys: &KeyManager, request: Request) -> Result<Request, Response> {
    let (mut parts, body) = request.into_parts();
    match Authenticated::from_request_parts(&mut parts, keys).await {
        Ok(_) => Ok(Request::from_parts(parts, body)),
        Err(refusal) => Err(refusal.into_response()),
    }
}

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
    let request = match authenticated(&bg.keys, request).await {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    tokio::spawn(async move {
        bg.go.notified().await;
        next.run(request).await;
    });
    StatusCode::ACCEPTED.into_response()
}

/// A request is counted once against its key's limit, whenever its later
/// extractors run: the layer keeps the admission in its slot after the
/// response, so a handler running past a 202 finds it. (Emptied when the
/// 202 was made, the slot let the handler count the request again: with a
/// quota of 2 the second request was refused.)
#[tokio::test]
async fn a_request_is_counted_once_even_when_its_handler_runs_after_the_response() {
    let (keys, key) = key_of_two_a_minute().await;

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

    let first = post_with(&app, "/jobs", &key).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(
        first.headers().contains_key("ratelimit"),
        "the layer saw the admission"
    );
    bg.go.notify_one();
    handler_ran.recv().await.expect("the background handler ran");

    let second = post_with(&app, "/jobs", &key).await;
    assert_eq!(
        second.status(),
        StatusCode::ACCEPTED,
        "the first request must have cost one of the two: its handler's extractor counted it again"
    );
}

/// Authenticates the caller (counting the request) and goes on.
async fn authenticate_then_next(State(keys): State<KeyManager>, request: Request, next: Next) -> Response {
    match authenticated(&keys, request).await {
        Ok(request) => next.run(request).await,
        Err(refusal) => refusal,
    }
}

/// `AddRateLimitHeaders` on the app and again on a nested router, with a
/// middleware between them that authenticates: the inner layer shares the
/// outer slot, so the handler's extractor finds the middleware's
/// admission. (A fresh inner slot hid it, and the request was counted
/// twice.)
#[tokio::test]
async fn nested_add_rate_limit_headers_count_a_request_once() {
    let (keys, key) = key_of_two_a_minute().await;
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
    assert_eq!(post_with(&app, "/v1/jobs", &key).await.status(), StatusCode::OK);
    assert_eq!(
        post_with(&app, "/v1/jobs", &key).await.status(),
        StatusCode::OK,
        "the first request must have cost one of the two"
    );
}
