//! The Gecko example apps, axum and actix-web, in process: one HTTP
//! conformance table, team isolation, the teams' plans and the management
//! API (with its audit trail) run against both; then the axum app once over
//! a real TCP socket with a real client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

#[allow(dead_code)]
#[path = "../examples/gecko_api/demo.rs"]
mod demo;

#[path = "../examples/gecko_api/app.rs"]
mod app;

#[path = "../examples/gecko_api_actix/app.rs"]
mod actix_app;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use teamkey::sqlx::sqlite::SqlitePoolOptions;
use teamkey::{
    Clock, CreateOptions, KeyFormat, KeyManager, LocalRateLimiter, ManualClock, RateLimit, Scopes, SqlxStore,
    TeamId,
};
use time::Duration;
use time::macros::datetime;
use tower::ServiceExt;

const UNAUTHORIZED: &str = r#"{"error":"unauthorized","message":"A valid API key is required."}"#;
const UNAVAILABLE: &str =
    r#"{"error":"unavailable","message":"API keys cannot be checked right now; retry later."}"#;
/// A valid key of a team whose plan has no API access (initech, on Free).
const PLAN_REQUIRED: &str = r#"{"error":"plan_required","message":"This API key is valid, but your team's plan does not include API access. Upgrade the plan to use the API."}"#;
/// The fixture's `limited` key past its quota of one request per minute.
const TOO_MANY: &str = r#"{"type":"https://iana.org/assignments/http-problem-types#quota-exceeded","title":"Too Many Requests","status":429,"detail":"This API key is over its rate limit of 1 request per 60 seconds; retry after 60 seconds.","error":"rate_limited"}"#;
/// The `RateLimit-Policy` of acme's keys: its Pro plan's.
const PRO_POLICY: &str = r#""default";q=100;w=60"#;

/// The example app over an in-memory database, a manual clock, and keys in
/// every state the table needs.
struct Fixture {
    db: demo::Db,
    /// The demo's manager, gated by its plans.
    keys: KeyManager,
    clock: ManualClock,
    /// acme, scope keys:manage.
    admin: String,
    /// acme, no scope.
    plain: String,
    revoked: String,
    expired: String,
    rotated_in_grace: String,
    rotated_after_grace: String,
    /// globex, scope keys:manage.
    globex: String,
    globex_id: String,
    /// initech's key from before the plans, as the demo seeds it.
    initech: String,
    /// initech, revoked.
    initech_revoked: String,
    /// acme, with a rate limit of its own: one request per minute.
    limited: String,
}

async fn fixture() -> Fixture {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let store = SqlxStore::new(pool.clone());
    store.migrate().await.unwrap();
    let db = demo::Db::Sqlite(pool);
    demo::prepare(&db).await.unwrap();
    let clock = ManualClock::new(datetime!(2026-11-27 12:00 UTC));
    // The keys below are made before the plans, as the demo seeds
    // initech's: globex's admin never expires, though its plan now wants
    // every new key to.
    let seed = KeyManager::builder(store.clone()).clock(clock.clone()).build();
    // The demo's limiter, on the test's clock.
    let limiter = demo::Limiter::Local(LocalRateLimiter::new().clock(clock.clone()));
    let keys = limiter
        .on(demo::gated(KeyManager::builder(store).clock(clock.clone())))
        .build();
    let (acme, globex) = (TeamId::new("acme").unwrap(), TeamId::new("globex").unwrap());
    // The admin holds what the demo's management tests grant.
    let manage = || CreateOptions::new().scopes(Scopes::new(["keys:manage", "scans:read"]).unwrap());
    let make = |team: &TeamId, name: &str, options: CreateOptions| {
        let (seed, team, name) = (seed.clone(), team.clone(), name.to_owned());
        async move { seed.create(&team, &name, options).await.unwrap() }
    };
    let admin = make(&acme, "admin", manage()).await;
    let plain = make(&acme, "plain", CreateOptions::default()).await;
    let revoked = make(&acme, "revoked", CreateOptions::default()).await;
    seed.revoke(&acme, &revoked.info.id).await.unwrap();
    let expiring = CreateOptions::new().expires_at(clock.now() + Duration::hours(1));
    let expired = make(&acme, "expired", expiring).await;
    let in_grace = make(&acme, "in grace", CreateOptions::default()).await;
    seed.rotate(&acme, &in_grace.info.id, Duration::hours(10))
        .await
        .unwrap();
    let after_grace = make(&acme, "after grace", CreateOptions::default()).await;
    seed.rotate(&acme, &after_grace.info.id, Duration::hours(1))
        .await
        .unwrap();
    let globex_key = make(&globex, "globex admin", manage()).await;
    let initech = demo::legacy_key(&seed)
        .await
        .unwrap()
        .expect("initech had no key");
    assert!(demo::legacy_key(&seed).await.unwrap().is_none(), "seeded once");
    let one_a_minute = RateLimit::new(1, std::time::Duration::from_secs(60)).unwrap();
    let limited = make(&acme, "limited", CreateOptions::new().rate_limit(one_a_minute)).await;
    let initech_team = TeamId::new("initech").unwrap();
    let initech_revoked = make(&initech_team, "revoked", CreateOptions::default()).await;
    seed.revoke(&initech_team, &initech_revoked.info.id)
        .await
        .unwrap();
    clock.advance(Duration::hours(2));

    let secret = |k: &teamkey::NewKey| k.key.expose_secret().to_owned();
    Fixture {
        db,
        keys,
        clock,
        admin: secret(&admin),
        plain: secret(&plain),
        revoked: secret(&revoked),
        expired: secret(&expired),
        rotated_in_grace: secret(&in_grace),
        rotated_after_grace: secret(&after_grace),
        globex: secret(&globex_key),
        globex_id: globex_key.info.id.to_string(),
        initech: secret(&initech),
        initech_revoked: secret(&initech_revoked),
        limited: secret(&limited),
    }
}

/// An answer, whatever the framework.
struct Answer {
    status: StatusCode,
    /// Sorted, lowercase names.
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

type Headers = Vec<(&'static str, Vec<u8>)>;

fn axum_app(f: &Fixture) -> Router {
    app::router(app::AppState {
        keys: f.keys.clone(),
        db: f.db.clone(),
    })
}

async fn axum_send(app: &Router, method: &str, uri: &str, headers: &Headers, body: &str) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, HeaderValue::from_bytes(value).unwrap());
    }
    if !body.is_empty() && !has_content_type(headers) {
        request = request.header("content-type", "application/json");
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    headers.sort();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// The actix example app as an in-process service.
macro_rules! actix_service {
    ($f:expr) => {{
        let (keys, db) = actix_app::data($f.keys.clone(), $f.db.clone());
        actix_web::test::init_service(
            actix_web::App::new()
                .app_data(keys)
                .app_data(db)
                .configure(actix_app::configure),
        )
        .await
    }};
}

async fn actix_send<S, B>(service: &S, method: &str, uri: &str, headers: &Headers, body: &str) -> Answer
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let mut request = actix_web::test::TestRequest::default()
        .method(actix_web::http::Method::from_bytes(method.as_bytes()).unwrap())
        .uri(uri);
    for (name, value) in headers {
        request = request.append_header((
            *name,
            actix_web::http::header::HeaderValue::from_bytes(value).unwrap(),
        ));
    }
    if !body.is_empty() {
        if !has_content_type(headers) {
            request = request.insert_header(("content-type", "application/json"));
        }
        request = request.set_payload(body.to_owned());
    }
    let response = actix_web::test::call_service(service, request.to_request()).await;
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    headers.sort();
    let bytes = actix_web::test::read_body(response).await;
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// An answer's headers without those that vary by framework and request
/// (CORS, `vary`, `date`, `content-length`), never by the refusal.
fn comparable(answer: &Answer) -> Vec<(String, String)> {
    answer
        .headers
        .iter()
        .filter(|(n, _)| {
            !n.starts_with("access-control") && n != "vary" && n != "date" && n != "content-length"
        })
        .cloned()
        .collect()
}

/// Requests with a body are JSON unless a test says otherwise.
fn has_content_type(headers: &Headers) -> bool {
    headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
}

fn text(value: &str) -> Vec<u8> {
    value.as_bytes().to_vec()
}

/// A key with one character changed and the checksum still valid.
fn with_valid_checksum_but_unknown() -> String {
    KeyFormat::default()
        .generate()
        .unwrap()
        .expose_secret()
        .to_owned()
}

fn with_bad_checksum(key: &str) -> String {
    let mut bad = key.to_owned();
    let last = if key.ends_with('0') { "1" } else { "0" };
    bad.replace_range(key.len() - 1.., last);
    bad
}

/// What a row expects back.
enum Expect {
    /// This status; any body.
    Status(StatusCode),
    /// This status and exactly this body.
    Exactly(StatusCode, &'static str),
    /// The CORS layer's answer to a preflight for `GET` with `X-API-Key`.
    CorsPreflight,
    /// `200` within a rate limit: this `RateLimit-Policy`, and this `RateLimit`.
    Limited(&'static str, &'static str),
    /// `429`: this problem body, and these `Retry-After` and `RateLimit`
    /// values with the policy of [`Expect::Limited`] before it.
    TooManyRequests(&'static str, &'static str, &'static str),
}

/// What a browser sends before a cross-origin `GET` with `X-API-Key`.
fn preflight() -> Headers {
    vec![
        ("Origin", text("https://app.example")),
        ("Access-Control-Request-Method", text("GET")),
        ("Access-Control-Request-Headers", text("x-api-key")),
    ]
}

/// A 2xx from the CORS layer that lets the browser send the real request.
fn assert_cors_preflight(answer: &Answer, name: &str) {
    assert!(
        answer.status.is_success(),
        "{name}: {} {}",
        answer.status,
        answer.body
    );
    assert!(
        answer.header("access-control-allow-origin").is_some(),
        "{name}: {:?}",
        answer.headers
    );
    let allowed = |header: &str| answer.header(header).unwrap_or_default().to_ascii_lowercase();
    assert!(
        allowed("access-control-allow-methods").contains("get"),
        "{name}: {:?}",
        answer.headers
    );
    assert!(
        allowed("access-control-allow-headers").contains("x-api-key"),
        "{name}: {:?}",
        answer.headers
    );
}

/// One row: name, method, path and query, headers, expected answer.
type Row = (&'static str, &'static str, String, Headers, Expect);

#[tokio::test]
async fn axum_passes_the_conformance_table() {
    let f = fixture().await;
    let app = axum_app(&f);
    conformance_table(&f, async |m, uri, h, b| axum_send(&app, m, &uri, &h, &b).await).await;
}

#[actix_web::test]
async fn actix_passes_the_conformance_table() {
    let f = fixture().await;
    let service = actix_service!(f);
    conformance_table(&f, async |m, uri, h, b| {
        actix_send(&service, m, &uri, &h, &b).await
    })
    .await;
}

/// Both adapters give these answers, and the same 401 for every key failure.
async fn conformance_table(f: &Fixture, send: impl AsyncFn(&'static str, String, Headers, String) -> Answer) {
    let scans = "/api/v1/scans";
    let key = |k: &str| vec![("X-API-Key", text(k))];
    let long = "k".repeat(10 * 1024);
    let rows: Vec<Row> = vec![
        (
            "valid key",
            "GET",
            scans.into(),
            key(&f.plain),
            Expect::Limited(PRO_POLICY, r#""default";r=99;t=1"#),
        ),
        (
            "missing header",
            "GET",
            scans.into(),
            vec![],
            Expect::Exactly(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        ),
        (
            "empty value",
            "GET",
            scans.into(),
            key(""),
            Expect::Exactly(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        ),
        (
            "whitespace-padded",
            "GET",
            scans.into(),
            key(&format!(" {} ", f.plain)),
            Expect::Exactly(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        ),
        (
            "lowercase header name",
            "GET",
            scans.into(),
            vec![("x-api-key", text(&f.plain))],
            Expect::Status(StatusCode::OK),
        ),
        (
            "two X-API-Key headers",
            "GET",
            scans.into(),
            vec![("X-API-Key", text(&f.plain)), ("X-API-Key", text(&f.plain))],
            Expect::Exactly(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        ),
        (
            "10 KiB value",
            "GET",
            scans.into(),
            key(&long),
            Expect::Exactly(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        ),
        (
            "non-ASCII bytes",
            "GET",
            scans.into(),
            vec![("X-API-Key", "tk_live_é".as_bytes().to_vec())],
            Expect::Exactly(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        ),
        (
            "wrong prefix",
            "GET",
            scans.into(),
            key(&f.plain.replacen("tk_live", "tk_test", 1)),
            Expect::Exactly(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        ),
        (
            "bad checksum",
            "GET",
            scans.into(),
            key(&with_bad_checksum(&f.plain)),
            Expect::Exactly(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        ),
        (
            "well-formed unknown key",
            "GET",
            scans.into(),
            key(&with_valid_checksum_but_unknown()),
            Expect::Exactly(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        ),
        (
            "revoked",
            "GET",
            scans.into(),
            key(&f.revoked),
            Expect::Exactly(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        ),
        (
            "expired",
            "GET",
            scans.into(),
            key(&f.expired),
            Expect::Exactly(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        ),
        (
            "rotated, inside grace",
            "GET",
            scans.into(),
            key(&f.rotated_in_grace),
            Expect::Status(StatusCode::OK),
        ),
        (
            "rotated, after grace",
            "GET",
            scans.into(),
            key(&f.rotated_after_grace),
            Expect::Exactly(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        ),
        (
            "key in query string only",
            "GET",
            format!("{scans}?api_key={}&x-api-key={}", f.plain, f.plain),
            vec![],
            Expect::Exactly(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        ),
        (
            "another team's resource",
            "DELETE",
            format!("/api/v1/api-keys/{}", f.globex_id),
            key(&f.admin),
            Expect::Status(StatusCode::NOT_FOUND),
        ),
        (
            "missing scope",
            "GET",
            "/api/v1/api-keys".into(),
            key(&f.plain),
            Expect::Exactly(
                StatusCode::FORBIDDEN,
                r#"{"error":"forbidden","message":"This API key lacks the scope this request needs.","required_scope":"keys:manage"}"#,
            ),
        ),
        (
            // Answered by the CORS layer outside the key guard: a preflight
            // carries no key, and the guard itself would refuse it.
            "OPTIONS preflight",
            "OPTIONS",
            scans.into(),
            preflight(),
            Expect::CorsPreflight,
        ),
        (
            "bad limit",
            "GET",
            format!("{scans}?limit=1000"),
            key(&f.plain),
            Expect::Status(StatusCode::BAD_REQUEST),
        ),
        (
            "valid key, plan without API access",
            "GET",
            scans.into(),
            key(&f.initech),
            Expect::Exactly(StatusCode::FORBIDDEN, PLAN_REQUIRED),
        ),
        (
            "valid key, plan without API access, listing keys",
            "GET",
            "/api/v1/api-keys".into(),
            key(&f.initech),
            Expect::Exactly(StatusCode::FORBIDDEN, PLAN_REQUIRED),
        ),
        (
            "valid key, plan without API access, creating a key",
            "POST",
            "/api/v1/api-keys".into(),
            key(&f.initech),
            Expect::Exactly(StatusCode::FORBIDDEN, PLAN_REQUIRED),
        ),
        (
            "valid key, plan without API access, reading events",
            "GET",
            "/api/v1/api-keys/events".into(),
            key(&f.initech),
            Expect::Exactly(StatusCode::FORBIDDEN, PLAN_REQUIRED),
        ),
        (
            "revoked key, plan without API access",
            "GET",
            scans.into(),
            key(&f.initech_revoked),
            Expect::Exactly(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        ),
        (
            "bad checksum, plan without API access",
            "GET",
            scans.into(),
            key(&with_bad_checksum(&f.initech)),
            Expect::Exactly(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        ),
        (
            "key with its own rate limit, within it",
            "GET",
            scans.into(),
            key(&f.limited),
            Expect::Limited(r#""default";q=1;w=60"#, r#""default";r=0;t=60"#),
        ),
        (
            "key with its own rate limit, over it",
            "GET",
            scans.into(),
            key(&f.limited),
            Expect::TooManyRequests(TOO_MANY, "60", r#""default";r=0;t=60"#),
        ),
        (
            "over its rate limit, on a management route",
            "GET",
            "/api/v1/api-keys".into(),
            key(&f.limited),
            Expect::TooManyRequests(TOO_MANY, "60", r#""default";r=0;t=60"#),
        ),
    ];

    let mut unauthorized_answers = Vec::new();
    let mut plan_answers = Vec::new();
    let mut too_many_answers = Vec::new();
    let mut policy = None;
    for (name, method, uri, headers, expect) in rows {
        let answer = send(method, uri, headers, String::new()).await;
        match expect {
            Expect::Limited(expected_policy, state) => {
                assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.body);
                assert_eq!(answer.header("ratelimit-policy"), Some(expected_policy), "{name}");
                assert_eq!(answer.header("ratelimit"), Some(state), "{name}");
                policy = Some(expected_policy);
            }
            Expect::TooManyRequests(body, retry_after, state) => {
                assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{name}");
                assert_eq!(answer.body, body, "{name}");
                assert_eq!(
                    comparable(&answer),
                    [
                        ("cache-control", "no-store"),
                        ("content-type", "application/problem+json"),
                        ("ratelimit", state),
                        ("ratelimit-policy", policy.unwrap()),
                        ("retry-after", retry_after),
                    ]
                    .map(|(n, v)| (n.to_owned(), v.to_owned())),
                    "{name}: the whole 429"
                );
                too_many_answers.push((comparable(&answer), answer.body));
                continue;
            }
            Expect::Status(status) => assert_eq!(answer.status, status, "{name}: {}", answer.body),
            Expect::Exactly(status, body) => {
                assert_eq!(answer.status, status, "{name}");
                assert_eq!(answer.body, body, "{name}");
                assert_eq!(answer.header("content-type"), Some("application/json"), "{name}");
                assert_eq!(answer.header("cache-control"), Some("no-store"), "{name}");
            }
            Expect::CorsPreflight => assert_cors_preflight(&answer, name),
        }
        let whole = (name, comparable(&answer), answer.body);
        if answer.status == StatusCode::UNAUTHORIZED {
            unauthorized_answers.push(whole);
        } else if whole.2 == PLAN_REQUIRED {
            plan_answers.push(whole);
        }
    }
    // Every key failure is the same answer, byte for byte; so is every
    // plan refusal.
    for answers in [&unauthorized_answers, &plan_answers] {
        let (_, first_headers, first_body) = &answers[0];
        for (name, headers, body) in answers {
            assert_eq!(
                (headers, body),
                (first_headers, first_body),
                "{name} differs from the others"
            );
        }
    }
    assert!(unauthorized_answers.len() >= 14);
    assert_eq!(plan_answers.len(), 4);
    assert_eq!(too_many_answers.len(), 2);
    assert_eq!(
        too_many_answers[0], too_many_answers[1],
        "one 429, from any route"
    );

    // Last row: the store goes down. 503, never 401, never 200.
    f.db.close().await;
    let answer = send("GET", scans.into(), key(&f.plain), String::new()).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "store down");
    assert_eq!(answer.body, UNAVAILABLE);
}

/// A handler behind the example's guard and CORS layer that takes every
/// method (`any`, `web::route()`), counting its calls: preflights must never
/// reach it.
fn counting(calls: &Arc<AtomicUsize>) -> impl Fn() -> std::future::Ready<&'static str> + Clone + use<> {
    let calls = Arc::clone(calls);
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready("ran")
    }
}

#[tokio::test]
async fn axum_preflights_get_the_cors_answer_and_never_a_handler() {
    use teamkey::axum::RequireApiKey;

    let f = fixture().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let route = || Router::new().route("/api/v1/anything", axum::routing::any(counting(&calls)));
    // As in the example: the layer added last is the outer one.
    let cors_outside = route()
        .layer(RequireApiKey::new(f.keys.clone()))
        .layer(app::cors());
    let cors_inside = route()
        .layer(app::cors())
        .layer(RequireApiKey::new(f.keys.clone()));
    let uri = "/api/v1/anything";

    let answered = axum_send(&cors_outside, "OPTIONS", uri, &preflight(), "").await;
    assert_cors_preflight(&answered, "CORS outside the guard");
    let refused = axum_send(&cors_inside, "OPTIONS", uri, &preflight(), "").await;
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        "CORS inside the guard: the keyless preflight is refused"
    );
    // tower-http's CorsLayer answers every OPTIONS itself, preflight or not.
    let keyless = axum_send(&cors_outside, "OPTIONS", uri, &vec![], "").await;
    assert_ne!(keyless.body, "ran");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no handler ran without a key");

    let with_key = vec![("X-API-Key", text(&f.plain))];
    let ran = axum_send(&cors_outside, "GET", uri, &with_key, "").await;
    assert_eq!((ran.status, ran.body.as_str()), (StatusCode::OK, "ran"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[actix_web::test]
async fn actix_preflights_get_the_cors_answer_and_never_a_handler() {
    use actix_web::{App, test, web};
    use teamkey::actix::RequireApiKey;

    let f = fixture().await;
    let calls = Arc::new(AtomicUsize::new(0));
    // As in the example: the last `wrap` is the outer one.
    let cors_outside = test::init_service(
        App::new().app_data(web::Data::new(f.keys.clone())).service(
            web::scope("/api/v1")
                .wrap(RequireApiKey::new())
                .wrap(actix_app::cors())
                .route("/anything", web::route().to(counting(&calls))),
        ),
    )
    .await;
    let cors_inside = test::init_service(
        App::new().app_data(web::Data::new(f.keys.clone())).service(
            web::scope("/api/v1")
                .wrap(actix_app::cors())
                .wrap(RequireApiKey::new())
                .route("/anything", web::route().to(counting(&calls))),
        ),
    )
    .await;
    let uri = "/api/v1/anything";

    let answered = actix_send(&cors_outside, "OPTIONS", uri, &preflight(), "").await;
    assert_cors_preflight(&answered, "CORS outside the guard");
    let refused = actix_send(&cors_inside, "OPTIONS", uri, &preflight(), "").await;
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        "CORS inside the guard: the keyless preflight is refused"
    );
    // actix-cors passes an OPTIONS that is no preflight on, to the guard.
    let keyless = actix_send(&cors_outside, "OPTIONS", uri, &vec![], "").await;
    assert_eq!(
        keyless.status,
        StatusCode::UNAUTHORIZED,
        "a plain OPTIONS is no preflight"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no handler ran without a key");

    let with_key = vec![("X-API-Key", text(&f.plain))];
    let ran = actix_send(&cors_outside, "GET", uri, &with_key, "").await;
    assert_eq!((ran.status, ran.body.as_str()), (StatusCode::OK, "ran"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[actix_web::test]
async fn both_apps_serve_the_same_openapi_document_and_it_tells_the_truth() {
    let f = fixture().await;
    let axum = axum_app(&f);
    let actix = actix_service!(f);
    let uri = "/api/v1/openapi.json";
    // No key: the document is public.
    let from_axum = axum_send(&axum, "GET", uri, &vec![], "").await;
    let from_actix = actix_send(&actix, "GET", uri, &vec![], "").await;
    for (name, answer) in [("axum", &from_axum), ("actix", &from_actix)] {
        assert_eq!(answer.status, StatusCode::OK, "{name}: {}", answer.body);
        assert_eq!(answer.header("content-type"), Some("application/json"), "{name}");
    }
    assert_eq!(
        from_axum.body, from_actix.body,
        "the same bytes from both adapters"
    );
    let expected = demo::openapi().to_pretty_json().unwrap();
    assert_eq!(from_axum.body, expected);

    // Every documented operation exists where the document says, and
    // answers one of the statuses it lists.
    let doc: serde_json::Value = serde_json::from_str(&from_axum.body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let admin = vec![("X-API-Key", text(&f.admin))];
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        assert!(path.starts_with("/api/v1/api-keys"), "{path}");
        let path = path.replace("{id}", "AAAAAAAAAAAA");
        for (method, operation) in item.as_object().unwrap() {
            let method: &'static str = match method.as_str() {
                "get" => "GET",
                "post" => "POST",
                "delete" => "DELETE",
                other => panic!("undocumented method {other}"),
            };
            let body = if method == "POST" { "{}" } else { "" };
            let documented = operation["responses"].as_object().unwrap();
            for answer in [
                axum_send(&axum, method, &path, &admin, body).await,
                actix_send(&actix, method, &path, &admin, body).await,
                axum_send(&axum, method, &path, &vec![], body).await,
                actix_send(&actix, method, &path, &vec![], body).await,
            ] {
                assert!(
                    documented.contains_key(answer.status.as_str()),
                    "{method} {path}: {} is not documented",
                    answer.status
                );
            }
            operations += 1;
        }
    }
    assert_eq!(operations, 5);
}

#[tokio::test]
async fn axum_keeps_teams_apart() {
    let f = fixture().await;
    let app = axum_app(&f);
    teams_never_see_each_other(&f, async |m, uri, h, b| axum_send(&app, m, &uri, &h, &b).await).await;
}

#[actix_web::test]
async fn actix_keeps_teams_apart() {
    let f = fixture().await;
    let service = actix_service!(f);
    teams_never_see_each_other(&f, async |m, uri, h, b| {
        actix_send(&service, m, &uri, &h, &b).await
    })
    .await;
}

async fn teams_never_see_each_other(
    f: &Fixture,
    send: impl AsyncFn(&'static str, String, Headers, String) -> Answer,
) {
    let call = async |m: &'static str, uri: &str, h: &[(&'static str, Vec<u8>)], b: &str| {
        send(m, uri.to_owned(), h.to_vec(), b.to_owned()).await
    };
    let acme = call(
        "GET",
        "/api/v1/scans?limit=100",
        &[("X-API-Key", text(&f.admin))],
        "",
    )
    .await;
    let acme: serde_json::Value = serde_json::from_str(&acme.body).unwrap();
    let teams: Vec<&str> = acme["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["team"].as_str().unwrap())
        .collect();
    assert_eq!(teams, ["acme", "acme", "acme"]);
    for scan in acme["data"].as_array().unwrap() {
        for field in ["id", "team", "target", "status", "created_at"] {
            assert!(scan.get(field).is_some(), "scan field {field}");
        }
    }

    let globex = call("GET", "/api/v1/scans", &[("X-API-Key", text(&f.globex))], "").await;
    assert!(!globex.body.contains("acme"), "{}", globex.body);

    let listed = call("GET", "/api/v1/api-keys", &[("X-API-Key", text(&f.admin))], "").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(
        !listed.body.contains(&f.globex_id),
        "acme must not see globex's keys"
    );
    assert!(
        !listed.body.contains(&f.admin[20..60]),
        "a list never shows a secret"
    );

    let revoke = format!("/api/v1/api-keys/{}", f.globex_id);
    let refused = call("DELETE", &revoke, &[("X-API-Key", text(&f.admin))], "").await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND);
    let still = call("GET", "/api/v1/scans", &[("X-API-Key", text(&f.globex))], "").await;
    assert_eq!(still.status, StatusCode::OK, "globex's key must still work");

    let events = "/api/v1/api-keys/events?limit=100";
    let acme = call("GET", events, &[("X-API-Key", text(&f.admin))], "").await;
    assert!(
        !acme.body.contains(&f.globex_id),
        "acme must not see globex's events"
    );
    let globex = call("GET", events, &[("X-API-Key", text(&f.globex))], "").await;
    let globex: serde_json::Value = serde_json::from_str(&globex.body).unwrap();
    let teams: Vec<&str> = globex["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["team_id"].as_str().unwrap())
        .collect();
    assert_eq!(teams, ["globex"], "globex's one key.created, nothing of acme's");
}

#[tokio::test]
async fn axum_applies_the_plans() {
    let f = fixture().await;
    let app = axum_app(&f);
    the_teams_plans(&f, async |m, uri, h, b| axum_send(&app, m, &uri, &h, &b).await).await;
}

#[actix_web::test]
async fn actix_applies_the_plans() {
    let f = fixture().await;
    let service = actix_service!(f);
    the_teams_plans(&f, async |m, uri, h, b| {
        actix_send(&service, m, &uri, &h, &b).await
    })
    .await;
}

#[tokio::test]
async fn axum_lets_other_origins_read_the_rate_limit_headers() {
    let f = fixture().await;
    let app = axum_app(&f);
    rate_limit_headers_are_exposed(&f, async |m, uri, h, b| axum_send(&app, m, &uri, &h, &b).await).await;
}

#[actix_web::test]
async fn actix_lets_other_origins_read_the_rate_limit_headers() {
    let f = fixture().await;
    let service = actix_service!(f);
    rate_limit_headers_are_exposed(&f, async |m, uri, h, b| {
        actix_send(&service, m, &uri, &h, &b).await
    })
    .await;
}

/// A browser hides every response header from a cross-origin script
/// unless CORS exposes it: the quota and the wait after a 429 must be.
async fn rate_limit_headers_are_exposed(
    f: &Fixture,
    send: impl AsyncFn(&'static str, String, Headers, String) -> Answer,
) {
    let headers = vec![
        ("X-API-Key", text(&f.limited)),
        ("Origin", text("https://app.example")),
    ];
    for status in [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS] {
        let answer = send("GET", "/api/v1/scans".into(), headers.clone(), String::new()).await;
        assert_eq!(answer.status, status, "{}", answer.body);
        let exposed = answer
            .header("access-control-expose-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let exposed: Vec<&str> = exposed.split(',').map(str::trim).collect();
        for name in ["ratelimit", "ratelimit-policy", "retry-after"] {
            assert!(exposed.contains(&name), "{status}: {name} not in {exposed:?}");
        }
    }
}

/// initech (Free) has no API access: its key from before the plans is
/// refused with the plan answer, and it creates nothing; acme (Pro) works
/// as before; globex (Enterprise) makes only keys that expire within 90
/// days.
async fn the_teams_plans(f: &Fixture, send: impl AsyncFn(&'static str, String, Headers, String) -> Answer) {
    let call = async |m: &'static str, uri: &str, h: &[(&'static str, Vec<u8>)], b: &str| {
        send(m, uri.to_owned(), h.to_vec(), b.to_owned()).await
    };
    let keys = "/api/v1/api-keys";
    let initech = [("X-API-Key", text(&f.initech))];
    let initech_team = TeamId::new("initech").unwrap();
    let before = f.keys.store().list(&initech_team).await.unwrap().len();
    for (method, uri, body) in [
        ("GET", "/api/v1/scans", ""),
        ("POST", "/api/v1/scans", r#"{"target":"github.com/initech/tps"}"#),
        ("POST", keys, r#"{"name":"CI"}"#),
        ("GET", keys, ""),
    ] {
        let answer = call(method, uri, &initech, body).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::FORBIDDEN, PLAN_REQUIRED),
            "{method} {uri}"
        );
        assert_eq!(answer.header("cache-control"), Some("no-store"));
    }
    let after = f.keys.store().list(&initech_team).await.unwrap().len();
    assert_eq!(after, before, "initech created nothing");
    assert_eq!(demo::Plan::of(&initech_team), demo::Plan::Free);

    let acme = call("GET", "/api/v1/scans", &[("X-API-Key", text(&f.admin))], "").await;
    assert_eq!(acme.status, StatusCode::OK);

    let globex = [("X-API-Key", text(&f.globex))];
    let forever = call("POST", keys, &globex, r#"{"name":"forever"}"#).await;
    assert_eq!(
        forever.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        forever.body
    );
    assert!(forever.body.contains("expire"), "{}", forever.body);
    let days_91 = call("POST", keys, &globex, r#"{"name":"long","expires_in":7862400}"#).await;
    assert_eq!(
        days_91.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        days_91.body
    );
    let days_90 = call(
        "POST",
        keys,
        &globex,
        r#"{"name":"quarterly","expires_in":7776000}"#,
    )
    .await;
    assert_eq!(days_90.status, StatusCode::CREATED, "{}", days_90.body);
}

#[tokio::test]
async fn the_demo_sweeps_keys_that_expire_soon_once() {
    let f = fixture().await;
    let acme = TeamId::new("acme").unwrap();
    let soon = CreateOptions::new().expires_in(Duration::days(3));
    let made = f.keys.create(&acme, "expires soon", soon).await.unwrap();
    demo::sweep_expiring(&f.keys).await;
    demo::sweep_expiring(&f.keys).await;
    let events = f
        .keys
        .events(&acme, teamkey::events::EventQuery::newest(100))
        .await
        .unwrap();
    let notices: Vec<Option<u8>> = events
        .iter()
        .filter(|e| e.kind == teamkey::events::EventKind::Expiring && e.key_id == made.info.id)
        .map(|e| e.days_left)
        .collect();
    assert_eq!(notices, [Some(7)], "one 7-day notice, however often it runs");
}

#[tokio::test]
async fn axum_management_api() {
    let f = fixture().await;
    let app = axum_app(&f);
    management_api_lifecycle_and_bad_input(&f, async |m, uri, h, b| axum_send(&app, m, &uri, &h, &b).await)
        .await;
}

#[actix_web::test]
async fn actix_management_api() {
    let f = fixture().await;
    let service = actix_service!(f);
    management_api_lifecycle_and_bad_input(&f, async |m, uri, h, b| {
        actix_send(&service, m, &uri, &h, &b).await
    })
    .await;
}

async fn management_api_lifecycle_and_bad_input(
    f: &Fixture,
    send: impl AsyncFn(&'static str, String, Headers, String) -> Answer,
) {
    let call = async |m: &'static str, uri: &str, h: &[(&'static str, Vec<u8>)], b: &str| {
        send(m, uri.to_owned(), h.to_vec(), b.to_owned()).await
    };
    let admin = [("X-API-Key", text(&f.admin))];
    let keys = "/api/v1/api-keys";

    let with_request_id = [
        ("X-API-Key", text(&f.admin)),
        ("X-Request-Id", text("req-create")),
        ("User-Agent", text("gecko-test/1.0")),
    ];
    let created = call(
        "POST",
        keys,
        &with_request_id,
        r#"{"name":"CI/CD Pipeline","scopes":["scans:read"]}"#,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let created: serde_json::Value = serde_json::from_str(&created.body).unwrap();
    let new_key = created["key"].as_str().unwrap().to_owned();
    let new_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "CI/CD Pipeline");
    assert_eq!(
        call("GET", "/api/v1/scans", &[("X-API-Key", text(&new_key))], "")
            .await
            .status,
        StatusCode::OK
    );

    let listed = call("GET", keys, &admin, "").await;
    let listed: serde_json::Value = serde_json::from_str(&listed.body).unwrap();
    let row = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == new_id.as_str())
        .unwrap()
        .clone();
    let mut fields: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "created_at",
            "expires_at",
            "id",
            "last_used_at",
            "name",
            "preview",
            "rate_limit",
            "replaced_by",
            "rotated_from",
            "scopes"
        ]
    );
    assert!(
        !listed.to_string().contains(&new_key),
        "the full key is shown once only"
    );

    let rotated = call(
        "POST",
        &format!("{keys}/{new_id}/rotate"),
        &admin,
        r#"{"grace_seconds":0}"#,
    )
    .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.body);
    let rotated: serde_json::Value = serde_json::from_str(&rotated.body).unwrap();
    let next_key = rotated["key"].as_str().unwrap().to_owned();
    assert_eq!(
        call("GET", "/api/v1/scans", &[("X-API-Key", text(&new_key))], "")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let again = call("POST", &format!("{keys}/{new_id}/rotate"), &admin, "{}").await;
    assert_eq!(
        again.status,
        StatusCode::NOT_FOUND,
        "a retired key cannot be rotated: {}",
        again.body
    );

    let next_id = rotated["id"].as_str().unwrap();
    assert_eq!(rotated["rotated_from"], new_id.as_str());
    f.clock.advance(Duration::seconds(1));
    assert_eq!(
        call("DELETE", &format!("{keys}/{next_id}"), &admin, "")
            .await
            .status,
        StatusCode::NO_CONTENT
    );

    // The audit trail: newest first, the admin key as the actor of its
    // changes. (teamkey itself may add `key.expired` for the retired key
    // presented above, off the request path: the system's, not the admin's.)
    let events = call("GET", &format!("{keys}/events?limit=100"), &admin, "").await;
    assert_eq!(events.status, StatusCode::OK, "{}", events.body);
    assert_eq!(events.header("cache-control"), Some("no-store"));
    assert!(!events.body.contains(&new_key[20..]), "no key in an event");
    let events: serde_json::Value = serde_json::from_str(&events.body).unwrap();
    let admin_id = f.keys.verify(&f.admin).await.unwrap().key_id().to_string();
    let by_admin = serde_json::json!({ "type": "key", "key_id": admin_id });
    let (data, others): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .partition(|e| e["actor"] == by_admin);
    let kinds: Vec<&str> = data.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["key.revoked", "key.rotated", "key.created"]);
    assert!(data.iter().all(|e| e["team_id"] == "acme"));
    assert_eq!(data[0]["key_id"], next_id);
    assert_eq!(
        (&data[1]["key_id"], &data[1]["successor_id"]),
        (&created["id"], &rotated["id"])
    );
    assert_eq!(data[2]["context"]["request_id"], "req-create");
    assert_eq!(data[2]["context"]["user_agent"], "gecko-test/1.0");
    assert!(
        others.iter().all(|e| e["team_id"] == "acme"
            && e["actor"] == serde_json::json!({ "type": "system" })
            && e["context"]["request_id"].is_null()),
        "the fixture's events and teamkey's own, all of acme: {others:?}"
    );
    let bad = call("GET", &format!("{keys}/events?cursor=nope"), &admin, "").await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let not_a_key = call("DELETE", &format!("{keys}/events"), &admin, "").await;
    assert_eq!(not_a_key.status, StatusCode::NOT_FOUND, "{}", not_a_key.body);
    assert_eq!(
        call("GET", "/api/v1/scans", &[("X-API-Key", text(&next_key))], "")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call("DELETE", &format!("{keys}/{next_id}"), &admin, "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call("DELETE", &format!("{keys}/not-a-key-id"), &admin, "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    for (body, status) in [
        ("{not json", StatusCode::BAD_REQUEST),
        (r#"{"name":""}"#, StatusCode::UNPROCESSABLE_ENTITY),
        (r#"{"name":"   "}"#, StatusCode::UNPROCESSABLE_ENTITY),
        (r#"{"name":"bad\u0000name"}"#, StatusCode::UNPROCESSABLE_ENTITY),
        (r#"{"scopes":["a"]}"#, StatusCode::UNPROCESSABLE_ENTITY),
        (
            r#"{"name":"x","scopes":["not a scope"]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"name":"x","expires_at":"2000-01-01T00:00:00Z"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let answer = call("POST", keys, &admin, body).await;
        assert_eq!(answer.status, status, "{body:?}: {}", answer.body);
        let json: serde_json::Value = serde_json::from_str(&answer.body).expect("errors are JSON");
        assert_eq!(json["error"], "invalid_request");
    }
    // No body, no content type: not JSON.
    let empty = call("POST", keys, &admin, "").await;
    assert_eq!(empty.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", empty.body);
    let long_name = format!(r#"{{"name":"{}"}}"#, "n".repeat(10 * 1024));
    assert_eq!(
        call("POST", keys, &admin, &long_name).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let names: Vec<String> = f
        .keys
        .list(&TeamId::new("acme").unwrap())
        .await
        .unwrap()
        .iter()
        .map(|k| k.name.to_string())
        .collect();
    assert!(
        !names.iter().any(|n| n.is_empty() || n.len() > 100),
        "nothing invalid was written: {names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_real_socket_with_a_real_client() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let f = fixture().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // As the demo serves it: with the peer's address.
    let service = axum_app(&f).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(axum::serve(listener, service).into_future());
    let client: Client<_, http_body_util::Empty<axum::body::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();

    let get = |key: Option<&str>| {
        let mut request =
            Request::get(format!("http://{addr}/api/v1/scans?limit=10")).header("Accept", "application/json");
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        client.request(request.body(http_body_util::Empty::new()).unwrap())
    };
    let ok = get(Some(&f.plain)).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let body = ok.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["data"].as_array().unwrap().len(), 3);
    let refused = get(None).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, UNAUTHORIZED.as_bytes());
    let plan = get(Some(&f.initech)).await.unwrap();
    assert_eq!(plan.status(), StatusCode::FORBIDDEN);
    let body = plan.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, PLAN_REQUIRED.as_bytes());
    // The demo records each key's last client address.
    f.keys.flush_last_used().await.unwrap();
    let plain = f.keys.verify(&f.plain).await.unwrap();
    let row = f
        .keys
        .find(plain.team_id(), &plain.key_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.last_used_ip, Some([127, 0, 0, 1].into()));
    server.abort();
}

#[tokio::test]
async fn axum_management_least_privilege() {
    let f = fixture().await;
    let app = axum_app(&f);
    least_privilege_and_replies(&f, async |m, uri, h, b| axum_send(&app, m, &uri, &h, &b).await).await;
}

#[actix_web::test]
async fn actix_management_least_privilege() {
    let f = fixture().await;
    let service = actix_service!(f);
    least_privilege_and_replies(&f, async |m, uri, h, b| {
        actix_send(&service, m, &uri, &h, &b).await
    })
    .await;
}

/// A `keys:manage` key grants only what it holds and touches only keys no
/// broader than itself; grace is bounded; mutations must be JSON; every
/// reply is `no-store`; scopes gate the demo's own routes.
async fn least_privilege_and_replies(
    f: &Fixture,
    send: impl AsyncFn(&'static str, String, Headers, String) -> Answer,
) {
    let call = async |m: &'static str, uri: &str, h: &[(&'static str, Vec<u8>)], b: &str| {
        send(m, uri.to_owned(), h.to_vec(), b.to_owned()).await
    };
    let admin = [("X-API-Key", text(&f.admin))];
    let keys = "/api/v1/api-keys";
    let acme = TeamId::new("acme").unwrap();
    let count = async || f.keys.list(&acme).await.unwrap().len();
    let before = count().await;

    let broader = call(
        "POST",
        keys,
        &admin,
        r#"{"name":"x","scopes":["billing:admin","scans:write"]}"#,
    )
    .await;
    assert_eq!(broader.status, StatusCode::FORBIDDEN, "{}", broader.body);
    let json: serde_json::Value = serde_json::from_str(&broader.body).unwrap();
    assert_eq!(
        json["refused_scopes"],
        serde_json::json!(["billing:admin", "scans:write"])
    );
    assert_eq!(broader.header("cache-control"), Some("no-store"));

    let writer = f
        .keys
        .create(
            &acme,
            "deployer",
            CreateOptions::new().scopes(Scopes::new(["scans:write"]).unwrap()),
        )
        .await
        .unwrap();
    let writer_id = writer.info.id.to_string();
    for (method, uri, body) in [
        ("POST", format!("{keys}/{writer_id}/rotate"), "{}"),
        ("DELETE", format!("{keys}/{writer_id}"), ""),
    ] {
        let refused = call(method, &uri, &admin, body).await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{method} {uri}: {}",
            refused.body
        );
        assert!(!refused.body.contains("tk_live_"), "no successor key");
    }
    let writer_key = [("X-API-Key", text(writer.key.expose_secret()))];
    let started = call(
        "POST",
        "/api/v1/scans",
        &writer_key,
        r#"{"target":"github.com/acme/new"}"#,
    )
    .await;
    assert_eq!(
        started.status,
        StatusCode::CREATED,
        "the deployer still works: {}",
        started.body
    );

    let own_id = f.keys.verify(&f.admin).await.unwrap().key_id().to_string();
    for grace in ["4294967295", "604801"] {
        let body = format!(r#"{{"grace_seconds":{grace}}}"#);
        let answer = call("POST", &format!("{keys}/{own_id}/rotate"), &admin, &body).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{grace}: {}",
            answer.body
        );
    }

    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        let headers = [
            ("X-API-Key", text(&f.admin)),
            ("Content-Type", text(content_type)),
        ];
        let answer = call("POST", keys, &headers, r#"{"name":"from a form"}"#).await;
        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
        let rotate = call("POST", &format!("{keys}/{own_id}/rotate"), &headers, "{}").await;
        assert_eq!(
            rotate.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
    }
    // Two Content-Type headers declare nothing, whichever comes first.
    let twice = [
        ("X-API-Key", text(&f.admin)),
        ("Content-Type", text("text/plain")),
        ("Content-Type", text("application/json")),
    ];
    let answer = call("POST", keys, &twice, r#"{"name":"twice"}"#).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let twice = [twice[0].clone(), twice[2].clone(), twice[1].clone()];
    let answer = call("POST", keys, &twice, r#"{"name":"twice"}"#).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(count().await, before + 1, "only the deployer was written");

    let created = call(
        "POST",
        keys,
        &admin,
        r#"{"name":"reader","scopes":["scans:read"],"expires_in":3600}"#,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let listed = call("GET", &format!("{keys}?limit=1"), &admin, "").await;
    assert_eq!(listed.header("cache-control"), Some("no-store"));
    let listed: serde_json::Value = serde_json::from_str(&listed.body).unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert!(listed["next_cursor"].is_string());

    // Reading scans needs any key of the team; starting one, scans:write.
    let plain = [("X-API-Key", text(&f.plain))];
    assert_eq!(
        call("GET", "/api/v1/scans", &plain, "").await.status,
        StatusCode::OK
    );
    let denied = call("POST", "/api/v1/scans", &plain, r#"{"target":"x"}"#).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(denied.body.contains("scans:write"));
}

#[tokio::test]
async fn the_demo_names_an_unknown_database_scheme_and_never_the_url() {
    for url in [
        "redis://user:hunter2@127.0.0.1/0",
        "hunter2",
        "mongodb+srv://u:hunter2@x",
    ] {
        let error = demo::Db::connect(url).await.unwrap_err().to_string();
        assert!(error.contains("use sqlite:, postgres: or mysql:"), "{error}");
        assert!(!error.contains("hunter2"), "the URL's password leaked: {error}");
    }
}

#[tokio::test]
async fn the_demo_never_prints_the_redis_url() {
    for url in [
        "hunter2://user:hunter2@127.0.0.1/0",
        "redis://user:hunter2@127.0.0.1:notaport/0",
        "redis://user:hunter2@[::1/0",
        "redis://user:hunter2@127.0.0.1/notadb",
    ] {
        let config = demo::Config {
            database_url: "sqlite::memory:".into(),
            bind_addr: "127.0.0.1:0".into(),
            prefix: "tk_live".into(),
            redis_url: Some(url.into()),
        };
        match demo::Limiter::from_config(&config) {
            Ok(_) => panic!("{url:?} was taken"),
            Err(error) => {
                let error = error.to_string();
                assert!(error.starts_with("REDIS_URL: "), "{error}");
                assert!(!error.contains("hunter2"), "the URL's password leaked: {error}");
            }
        }
    }
}

/// Instances of the demo starting together on one new database take turns
/// while they migrate and seed: one makes the Quickstart key and initech's
/// key from before the plans, the others find them.
async fn instances_starting_together(database_url: String) {
    let config = || demo::Config {
        database_url: database_url.clone(),
        bind_addr: "127.0.0.1:0".into(),
        prefix: "tk_live".into(),
        redis_url: None,
    };
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let config = config();
            tokio::spawn(async move {
                let demo = demo::open(&config).await.unwrap();
                demo::announce_quickstart(&demo.keys, "127.0.0.1:0", &config, demo.legacy.as_ref())
                    .await
                    .unwrap();
                demo.setup.release().await;
                (demo.keys, demo.legacy.is_some())
            })
        })
        .collect();
    let mut legacy_made = 0;
    let mut keys = None;
    for start in starts {
        let (manager, made) = start.await.unwrap();
        legacy_made += usize::from(made);
        keys = Some(manager);
    }
    let keys = keys.unwrap();
    assert_eq!(legacy_made, 1, "one instance seeds initech's old key");
    let acme = keys.list(&TeamId::new("acme").unwrap()).await.unwrap();
    assert_eq!(acme.len(), 1, "one Quickstart key: {acme:?}");
    let initech = keys.list(&TeamId::new("initech").unwrap()).await.unwrap();
    assert_eq!(initech.len(), 1, "one key from before the plans");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_instances_starting_together_on_one_sqlite_file_seed_once() {
    let path = std::env::temp_dir().join(format!("gecko-together-{}.db", std::process::id()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    instances_starting_together(url).await;
    for suffix in ["", "-wal", "-shm", ".setup-lock"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_instances_starting_together_on_postgres_seed_once() {
    let Some(url) = std::env::var("TEAMKEY_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("*** SKIPPED: TEAMKEY_TEST_POSTGRES_URL is not set ***");
        return;
    };
    let schema = format!("gecko_together_{}", std::process::id());
    let admin = teamkey::sqlx::PgPool::connect(&url).await.unwrap();
    teamkey::sqlx::query(teamkey::sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let separator = if url.contains('?') { '&' } else { '?' };
    instances_starting_together(format!("{url}{separator}options=-c%20search_path%3D{schema}")).await;
    teamkey::sqlx::query(teamkey::sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA {schema} CASCADE"
    )))
    .execute(&admin)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_instances_starting_together_on_mariadb_seed_once() {
    let Some(url) = std::env::var("TEAMKEY_TEST_MYSQL_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("*** SKIPPED: TEAMKEY_TEST_MYSQL_URL is not set ***");
        return;
    };
    let database = format!("gecko_together_{}", std::process::id());
    let admin = teamkey::sqlx::MySqlPool::connect(&url).await.unwrap();
    teamkey::sqlx::query(teamkey::sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {database}"
    )))
    .execute(&admin)
    .await
    .unwrap();
    // The same server, this database.
    let (server, _) = url.rsplit_once('/').unwrap();
    instances_starting_together(format!("{server}/{database}")).await;
    teamkey::sqlx::query(teamkey::sqlx::AssertSqlSafe(format!("DROP DATABASE {database}")))
        .execute(&admin)
        .await
        .unwrap();
}
