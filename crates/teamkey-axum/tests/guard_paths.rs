//! `RequireApiKey` answers without boxing when the key's record and its
//! admission are at hand, and boxes the rest when the store or the limiter
//! must be waited for. Each of the three paths enforces the quota, counts a
//! request once, sends the headers, and refuses a bad key alike.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::routing::get;
use teamkey_axum::{Authenticated, RequireApiKey};
use teamkey_core::test_kit::CountingStore;
use teamkey_core::{
    CreateOptions, KeyId, KeyManager, KeyStore, LocalRateLimiter, MemoryStore, RateDecision, RateLimit,
    RateLimitError, RateLimiter, TeamId,
};
use tower::ServiceExt;

/// The in-process limiter behind an `.await` that really waits: the
/// manager cannot admit at once through it.
struct Waiting(LocalRateLimiter);

#[teamkey_core::async_trait]
impl RateLimiter for Waiting {
    async fn check(&self, key_id: &KeyId, limit: RateLimit) -> Result<RateDecision, RateLimitError> {
        tokio::task::yield_now().await;
        self.0.check(key_id, limit).await
    }
}

async fn app(keys: KeyManager, calls: Arc<AtomicUsize>) -> Router {
    let handler = move |caller: Authenticated| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(caller.team_id().to_string())
    };
    Router::new()
        .route("/", get(handler))
        .layer(RequireApiKey::new(keys.clone()))
        .with_state(keys)
}

async fn send(app: &Router, key: &str) -> (StatusCode, Option<String>, Option<String>) {
    let request = Request::get("/")
        .header("x-api-key", key)
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    (response.status(), header("ratelimit"), header("retry-after"))
}

async fn five_then_429(store: impl KeyStore, limiter: impl RateLimiter, path: &str) {
    let keys = KeyManager::builder(store).rate_limiter(limiter).build();
    let acme = TeamId::new("acme").unwrap();
    let five = RateLimit::new(5, std::time::Duration::from_secs(60)).unwrap();
    let limited = keys
        .create(&acme, "limited", CreateOptions::new().rate_limit(five))
        .await
        .unwrap();
    let unlimited = keys.create(&acme, "open", CreateOptions::new()).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app(keys, Arc::clone(&calls)).await;
    for left in (0..5).rev() {
        let (status, state, _) = send(&app, limited.key.expose_secret()).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let state = state.unwrap_or_else(|| panic!("{path}: no RateLimit header"));
        assert!(
            state.starts_with(&format!("\"default\";r={left};")),
            "{path}: {state}"
        );
    }
    let (status, _, retry_after) = send(&app, limited.key.expose_secret()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{path}");
    assert!(retry_after.is_some(), "{path}: no Retry-After");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "{path}: the 429 reached the handler"
    );
    let (status, state, _) = send(&app, unlimited.key.expose_secret()).await;
    assert_eq!((status, state), (StatusCode::OK, None), "{path}");
    let mut wrong = limited.key.expose_secret().to_owned();
    wrong.replace_range(20..21, if &wrong[20..21] == "a" { "b" } else { "a" });
    let (status, _, _) = send(&app, &wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    assert_eq!(calls.load(Ordering::SeqCst), 6, "{path}");
}

#[tokio::test]
async fn record_and_admission_at_hand() {
    five_then_429(MemoryStore::new(), LocalRateLimiter::new(), "at once").await;
}

#[tokio::test]
async fn the_limiter_waited_for() {
    five_then_429(
        MemoryStore::new(),
        Waiting(LocalRateLimiter::new()),
        "limiter waited for",
    )
    .await;
}

#[tokio::test]
async fn the_store_waited_for() {
    let store = CountingStore::new(MemoryStore::new());
    five_then_429(store, LocalRateLimiter::new(), "store waited for").await;
}
