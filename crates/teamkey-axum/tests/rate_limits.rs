//! Per-key rate limits through the axum adapter, in process: every guard
//! and extractor setup enforces the quota, counts a request once and sends
//! the same headers and the same 429. The scenarios are the actix
//! adapter's, word for word (see the line below the app).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::routing::get;
use http_body_util::BodyExt;
use teamkey_axum::{AddRateLimitHeaders, Authenticated, MaybeAuthenticated, RequireApiKey, RequireScope};
use teamkey_core::test_kit::CountingStore;
use teamkey_core::time::{Duration, OffsetDateTime};
use teamkey_core::{
    CreateOptions, KeyId, KeyManager, LimiterFailure, LocalRateLimiter, ManualClock, MemoryStore,
    RateDecision, RateLimit, RateLimitError, RateLimiter, Scopes, TeamId,
};
use tower::ServiceExt;

/// One route per setup (see the paths' constants below), each handler
/// counting its runs in `f.calls` and answering the caller's team.
fn router(f: &Fixture) -> Router {
    let keys = &f.keys;
    let calls = Arc::clone(&f.calls);
    let handler = move |caller: Authenticated| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(caller.team_id().to_string())
    };
    let calls = Arc::clone(&f.calls);
    let twice = move |caller: Authenticated, MaybeAuthenticated(again): MaybeAuthenticated| {
        calls.fetch_add(1, Ordering::SeqCst);
        assert_eq!(again.map(|a| a.key_id()), Some(caller.key_id()));
        std::future::ready(caller.team_id().to_string())
    };
    let scope = || RequireScope::new(SCOPE).with_manager(keys.clone());
    let guarded = Router::new()
        .route(GUARDED, get(handler.clone()))
        .route_layer(RequireApiKey::new(keys.clone()));
    let scoped = Router::new()
        .route(SCOPED, get(handler.clone()))
        .route_layer(scope());
    let scope_outside = Router::new()
        .route(SCOPE_OUTSIDE, get(handler.clone()))
        .route_layer(RequireApiKey::new(keys.clone()))
        .route_layer(scope());
    let extracted = Router::new()
        .route(EXTRACTED, get(handler.clone()))
        .route(TWICE, get(twice))
        .route_layer(AddRateLimitHeaders);
    let bare = Router::new().route(BARE, get(handler));
    Router::new()
        .merge(guarded)
        .merge(scoped)
        .merge(scope_outside)
        .merge(extracted)
        .merge(bare)
        .with_state(keys.clone())
}

async fn send(app: &Router, path: &str, key: Option<&str>) -> Answer {
    let mut request = Request::get(path);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = comparable(
        response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned())),
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

#[tokio::test]
async fn every_setup_enforces_the_quota_counts_once_and_sends_the_headers() {
    for path in [GUARDED, SCOPED, SCOPE_OUTSIDE, EXTRACTED, TWICE, BARE] {
        let f = fixture(Limiter::Local).await;
        let app = router(&f);
        the_quota_and_its_headers(&f, path, async |p, k| send(&app, p, k).await).await;
    }
}

#[tokio::test]
async fn a_failing_limiter_fails_open_unless_set_closed() {
    let open = fixture(Limiter::Down(None)).await;
    let closed = fixture(Limiter::Down(Some(LimiterFailure::Closed))).await;
    let (open_app, closed_app) = (router(&open), router(&closed));
    a_failing_limiter(
        &open,
        &closed,
        async |p, k| send(&open_app, p, k).await,
        async |p, k| send(&closed_app, p, k).await,
    )
    .await;
}

// ---------------------------------------------------------------------
// From here to the end, this file is the other adapter's
// `tests/rate_limits.rs` word for word: the same scenarios, the same
// expected bytes. Only the part above (the app and how a request is sent)
// is the framework's.
// ---------------------------------------------------------------------

/// `RequireApiKey`, then `Authenticated`: the guard admits, the extractor
/// counts nothing again.
const GUARDED: &str = "/guarded";
/// `RequireScope` with the manager, on its own: it verifies and admits.
const SCOPED: &str = "/scoped";
/// `RequireScope` with the manager outside `RequireApiKey`: the scope
/// guard admits, the key guard and the extractor take its principal.
const SCOPE_OUTSIDE: &str = "/scope-outside";
/// `Authenticated` alone, inside `AddRateLimitHeaders`.
const EXTRACTED: &str = "/extracted";
/// `Authenticated` and `MaybeAuthenticated` in one handler, inside
/// `AddRateLimitHeaders`: two extractors, one admission.
const TWICE: &str = "/twice";
/// `Authenticated` alone, nothing around it: the limit is enforced, but an
/// allowed response has no `RateLimit` headers.
const BARE: &str = "/bare";

/// The scope the scope guards require; the fixture's keys have it.
const SCOPE: &str = "scans:read";

const POLICY: &str = r#""default";q=5;w=10"#;
const TOO_MANY: &str = r#"{"type":"https://iana.org/assignments/http-problem-types#quota-exceeded","title":"Too Many Requests","status":429,"detail":"This API key is over its rate limit of 5 requests per 10 seconds; retry after 2 seconds.","error":"rate_limited"}"#;
const UNAVAILABLE: &str =
    r#"{"error":"unavailable","message":"API keys cannot be checked right now; retry later."}"#;

/// An answer, whatever the framework.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    /// Sorted, lowercase names; without those that vary by framework
    /// (`content-length`, `date`).
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The headers to compare, of a response's `(name, value)` pairs.
fn comparable(headers: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = headers
        .filter(|(n, _)| n != "content-length" && n != "date")
        .collect();
    headers.sort();
    headers
}

/// The whole 429 of a key with 5 requests per 10 s, refused right after
/// its burst: the same bytes from every guard and extractor, on both
/// adapters.
fn the_429() -> Answer {
    let headers = [
        ("cache-control", "no-store"),
        ("content-type", "application/problem+json"),
        ("ratelimit", r#""default";r=0;t=10"#),
        ("ratelimit-policy", POLICY),
        ("retry-after", "2"),
    ];
    Answer {
        status: 429,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        body: TOO_MANY.to_owned(),
    }
}

/// A limiter that is down (Redis unreachable, say).
struct Down;

#[teamkey_core::async_trait]
impl RateLimiter for Down {
    async fn check(&self, _: &KeyId, _: RateLimit) -> Result<RateDecision, RateLimitError> {
        Err("connection refused".into())
    }
}

/// The manager's limiter in a scenario.
enum Limiter {
    /// `LocalRateLimiter` on the fixture's clock.
    Local,
    /// [`Down`], with this failure mode (`None`: the default).
    Down(Option<LimiterFailure>),
}

/// A manager counting store calls, on a manual clock, with keys of acme:
/// two with 5 requests per 10 s each, one without a limit.
struct Fixture {
    keys: KeyManager,
    store: Arc<CountingStore<MemoryStore>>,
    clock: ManualClock,
    /// The handlers' runs, all routes together.
    calls: Arc<AtomicUsize>,
    limited: String,
    /// Another key of acme, with a quota of its own.
    neighbour: String,
    unlimited: String,
}

async fn fixture(limiter: Limiter) -> Fixture {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap());
    let builder = KeyManager::builder(Arc::clone(&store)).clock(clock.clone());
    let keys = match limiter {
        Limiter::Local => builder.rate_limiter(LocalRateLimiter::new().clock(clock.clone())),
        Limiter::Down(None) => builder.rate_limiter(Down),
        Limiter::Down(Some(mode)) => builder.rate_limiter(Down).on_limiter_failure(mode),
    }
    .build();
    let acme = TeamId::new("acme").unwrap();
    let scopes = || CreateOptions::new().scopes(Scopes::new([SCOPE]).unwrap());
    let five = RateLimit::new(5, std::time::Duration::from_secs(10)).unwrap();
    let make = async |name: &str, options: CreateOptions| {
        let made = keys.create(&acme, name, options).await.unwrap();
        made.key.expose_secret().to_owned()
    };
    let limited = make("limited", scopes().rate_limit(five)).await;
    let neighbour = make("neighbour", scopes().rate_limit(five)).await;
    let unlimited = make("unlimited", scopes()).await;
    Fixture {
        keys,
        store,
        clock,
        calls: Arc::default(),
        limited,
        neighbour,
        unlimited,
    }
}

impl Fixture {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The store's reads so far: key lookups and lists.
    fn reads(&self) -> usize {
        let counts = self.store.counts();
        counts.get.load(Ordering::SeqCst) + counts.list.load(Ordering::SeqCst)
    }
}

/// `"default";r=…;t=…`
fn state(remaining: u32, reset_seconds: u32) -> String {
    format!(r#""default";r={remaining};t={reset_seconds}"#)
}

/// Five requests in a burst are allowed, each with the quota's headers;
/// the sixth is the 429 and never reaches the handler; each costs one
/// store read, the verification's. Another key of the team has its own
/// quota; a key without a limit gets no headers; a window later the key is
/// whole again.
async fn the_quota_and_its_headers(
    f: &Fixture,
    path: &str,
    send: impl AsyncFn(&str, Option<&str>) -> Answer,
) {
    // Only the guards and `AddRateLimitHeaders` can reach an allowed response.
    let headed = path != BARE;
    let expect = |answer: &Answer, remaining: u32, reset: u32, what: &str| {
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "acme"),
            "{path}: {what}"
        );
        if headed {
            assert_eq!(answer.header("ratelimit-policy"), Some(POLICY), "{path}: {what}");
            assert_eq!(
                answer.header("ratelimit"),
                Some(state(remaining, reset).as_str()),
                "{path}: {what}"
            );
        } else {
            assert_eq!(answer.header("ratelimit-policy"), None, "{path}: {what}");
            assert_eq!(answer.header("ratelimit"), None, "{path}: {what}");
        }
    };
    let reads = f.reads();
    for n in 1..=5 {
        let answer = send(path, Some(&f.limited)).await;
        // One allowance back every 2 s: the quota is whole 2 s per request used.
        expect(&answer, 5 - n, 2 * n, &format!("request {n}"));
    }
    assert_eq!(f.calls(), 5);
    let refused = send(path, Some(&f.limited)).await;
    assert_eq!(refused, the_429(), "{path}: request 6");
    assert_eq!(f.calls(), 5, "{path}: the handler never ran for the sixth");
    assert_eq!(
        f.reads() - reads,
        6,
        "{path}: one store read per request, the verification's; the limit costs none"
    );

    let neighbour = send(path, Some(&f.neighbour)).await;
    expect(&neighbour, 4, 2, "another key of the team");
    let unlimited = send(path, Some(&f.unlimited)).await;
    assert_eq!(
        (unlimited.status, unlimited.body.as_str()),
        (200, "acme"),
        "{path}"
    );
    assert_eq!(
        unlimited.header("ratelimit-policy"),
        None,
        "{path}: no limit, no headers"
    );
    assert_eq!(unlimited.header("ratelimit"), None, "{path}");
    assert_eq!(
        send(path, Some(&f.limited)).await,
        the_429(),
        "{path}: still refused"
    );

    f.clock.advance(Duration::seconds(10));
    let again = send(path, Some(&f.limited)).await;
    expect(&again, 4, 2, "a window later");
    assert_eq!(f.calls(), 8);
}

/// A limiter that fails lets requests through by default, without
/// headers; configured closed, it is the 503 of a store that is down, and
/// no handler runs.
async fn a_failing_limiter(
    open: &Fixture,
    closed: &Fixture,
    send_open: impl AsyncFn(&str, Option<&str>) -> Answer,
    send_closed: impl AsyncFn(&str, Option<&str>) -> Answer,
) {
    for path in [GUARDED, SCOPED, EXTRACTED, BARE] {
        let answer = send_open(path, Some(&open.limited)).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "acme"), "{path}");
        assert_eq!(answer.header("ratelimit-policy"), None, "{path}");
        assert_eq!(answer.header("ratelimit"), None, "{path}");
        assert_eq!(answer.header("retry-after"), None, "{path}");

        let refused = send_closed(path, Some(&closed.limited)).await;
        assert_eq!(
            (refused.status, refused.body.as_str()),
            (503, UNAVAILABLE),
            "{path}"
        );
        assert_eq!(refused.header("retry-after"), Some("5"), "{path}");
        assert_eq!(refused.header("cache-control"), Some("no-store"), "{path}");
        assert_eq!(refused.header("content-type"), Some("application/json"), "{path}");
        // A key without a limit never asks the limiter.
        let unlimited = send_closed(path, Some(&closed.unlimited)).await;
        assert_eq!(unlimited.status, 200, "{path}");
    }
    assert_eq!(open.calls(), 4);
    assert_eq!(closed.calls(), 4, "only the unlimited key's requests ran");
}
