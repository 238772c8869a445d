//! What a key extractor found is kept in the request even when it lets no
//! principal through: a 429 whose error the app swallowed, and a limited
//! key let through by a limiter failing open. The request's later
//! extractors and guards answer from it, with no second store read and no
//! second question to the limiter (as on actix); and so is a key without
//! a limit whose record had to be read from the store.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use teamkey_axum::{AuthRejection, Authenticated, MaybeAuthenticated, RequireApiKey};
use teamkey_core::test_kit::CountingStore;
use teamkey_core::{
    CreateOptions, KeyId, KeyManager, LocalRateLimiter, MemoryStore, RateDecision, RateLimit, RateLimitError,
    RateLimiter, TeamId,
};
use tower::ServiceExt;

/// A limiter that times out, counting the questions it got.
struct Down(Arc<AtomicUsize>);

#[teamkey_core::async_trait]
impl RateLimiter for Down {
    async fn check(&self, _: &KeyId, _: RateLimit) -> Result<RateDecision, RateLimitError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err("timed out".into())
    }
}

/// A manager whose store counts its reads, and a key of one request a minute.
async fn setup(limiter: impl RateLimiter) -> (KeyManager, Arc<CountingStore<MemoryStore>>, String) {
    let one = RateLimit::new(1, std::time::Duration::from_secs(60)).unwrap();
    setup_with(limiter, CreateOptions::new().rate_limit(one)).await
}

/// The same, with a key made with `options`.
async fn setup_with(
    limiter: impl RateLimiter,
    options: CreateOptions,
) -> (KeyManager, Arc<CountingStore<MemoryStore>>, String) {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let keys = KeyManager::builder(Arc::clone(&store))
        .rate_limiter(limiter)
        .build();
    let made = keys
        .create(&TeamId::new("acme").unwrap(), "k", options)
        .await
        .unwrap();
    (keys, store, made.key.expose_secret().to_owned())
}

/// `handler` behind `RequireApiKey`, behind a middleware whose extractor
/// logs the caller.
fn guarded_and_logged<H, T>(keys: KeyManager, handler: H) -> Router
where
    H: axum::handler::Handler<T, KeyManager>,
    T: 'static,
{
    Router::new()
        .route("/", get(handler))
        .layer(RequireApiKey::new(keys.clone()))
        .layer(middleware::from_fn_with_state(keys.clone(), log_caller))
        .with_state(keys)
}

fn reads(store: &CountingStore<MemoryStore>) -> usize {
    store.counts().get.load(Ordering::SeqCst)
}

async fn send(app: &Router, key: &str) -> u16 {
    let request = Request::get("/")
        .header("x-api-key", key)
        .body(Body::empty())
        .unwrap();
    app.clone().oneshot(request).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_swallowed_429_is_the_next_extractors_answer_without_a_second_read() {
    let (keys, store, key) = setup(LocalRateLimiter::new()).await;
    let handler = |_logged: Result<Authenticated, AuthRejection>, _caller: Authenticated| async { "ok" };
    let app = Router::new().route("/", get(handler)).with_state(keys);
    assert_eq!(send(&app, &key).await, 200);
    let before = reads(&store);
    assert_eq!(send(&app, &key).await, 429);
    assert_eq!(reads(&store) - before, 1, "a refused request: one store read");
}

/// An extractor in a middleware outside the guard, its error swallowed
/// (to log the caller, say): the guard answers the same 429.
async fn log_caller(
    axum::extract::State(keys): axum::extract::State<KeyManager>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let _caller = Authenticated::from_request_parts(&mut parts, &keys).await.ok();
    next.run(Request::from_parts(parts, body)).await
}

#[tokio::test]
async fn a_swallowed_429_is_the_guards_answer_without_a_second_read() {
    let (keys, store, key) = setup(LocalRateLimiter::new()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let handler = move |_caller: Authenticated| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { "ok" }
    };
    let app = guarded_and_logged(keys, handler);
    let before = reads(&store);
    // The first request: admitted by the outer extractor, kept for the
    // guard (a principal without a layer's slot goes to the extensions).
    assert_eq!(send(&app, &key).await, 200);
    assert_eq!(send(&app, &key).await, 429);
    assert_eq!(reads(&store) - before, 2, "one store read a request");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the 429 never reaches the handler"
    );
}

#[tokio::test]
async fn a_limited_key_let_through_open_is_not_checked_again() {
    let checks = Arc::new(AtomicUsize::new(0));
    let (keys, store, key) = setup(Down(Arc::clone(&checks))).await;
    let handler = |_caller: Authenticated, _again: MaybeAuthenticated| async { "ok" };
    let app = Router::new().route("/", get(handler)).with_state(keys);
    let before = reads(&store);
    assert_eq!(send(&app, &key).await, 200);
    assert_eq!(
        (reads(&store) - before, checks.load(Ordering::SeqCst)),
        (1, 1),
        "(store reads, limiter checks) for one request"
    );
}

#[tokio::test]
async fn a_key_without_a_limit_read_from_the_store_is_not_read_again() {
    let (keys, store, key) = setup_with(LocalRateLimiter::new(), CreateOptions::new()).await;
    let handler = |_caller: Authenticated, _again: MaybeAuthenticated| async { "ok" };
    let app = guarded_and_logged(keys, handler);
    let before = reads(&store);
    assert_eq!(send(&app, &key).await, 200);
    assert_eq!(
        reads(&store) - before,
        1,
        "three extractors and a guard: one store read"
    );
}
