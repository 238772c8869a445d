//! The Gecko example's Settings > API Keys page, in process: its session
//! store on each database, sign-in and sign-out, the security headers, the
//! same-origin and CSRF checks, the one-time reveal, isolation between
//! teams, and the plans. The browser tests (`browser_tests/`) drive the
//! same page in Chromium.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

#[allow(dead_code)]
#[path = "../demo.rs"]
mod demo;

#[allow(dead_code)]
#[path = "../app.rs"]
mod app;

#[allow(dead_code)]
#[path = "../settings/mod.rs"]
mod settings;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use teamkey::sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use teamkey::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use teamkey::sqlx::sqlite::SqlitePoolOptions;
use teamkey::sqlx::{self, AssertSqlSafe};
use teamkey::time::{Duration, OffsetDateTime};
use teamkey::{KeyManager, SqlxStore};
use tower::ServiceExt;
use tower_sessions::session::{Id, Record};
use tower_sessions::{ExpiredDeletion, SessionStore};

const HOST: &str = "gecko.test";
const ORIGIN: &str = "http://gecko.test";

/// The demo over an in-memory database: its manager, its users (with the
/// passwords printed at the first start), the API and the page.
struct Fixture {
    app: Router,
    db: demo::Db,
    keys: KeyManager,
    passwords: HashMap<&'static str, String>,
}

async fn fixture() -> Fixture {
    fixture_with(settings::Config::new(ORIGIN, false).unwrap()).await
}

/// The demo, with the page served as `config` says.
async fn fixture_with(config: settings::Config) -> Fixture {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let store = SqlxStore::new(pool.clone());
    store.migrate().await.unwrap();
    let db = demo::Db::Sqlite(pool);
    demo::prepare(&db).await.unwrap();
    // initech's key from before the plans, as the demo seeds it.
    demo::legacy_key(&KeyManager::new(store.clone())).await.unwrap();
    let keys = demo::gated(KeyManager::builder(store)).build();
    let seeded = settings::prepare(&db).await.unwrap();
    assert_eq!(seeded.len(), 3, "acme, globex and initech each get an owner");
    assert!(settings::prepare(&db).await.unwrap().is_empty(), "seeded once");
    let passwords = seeded.into_iter().map(|u| (u.email, u.password)).collect();
    let state = app::AppState {
        keys: keys.clone(),
        db: db.clone(),
    };
    // As main.rs serves them.
    let app = app::router(state.clone()).merge(settings::router(state, &config));
    Fixture {
        app,
        db,
        keys,
        passwords,
    }
}

/// An answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    /// The CSRF token of a page.
    fn csrf(&self) -> String {
        let start = self
            .body
            .find(r#"<meta name="csrf-token" content=""#)
            .expect("no CSRF token")
            + 33;
        let end = self.body[start..].find('"').unwrap();
        self.body[start..start + end].to_owned()
    }
}

/// One person's browser: a cookie jar of one cookie, and the site's origin
/// on every request (as a browser sends it with a POST).
struct Browser<'a> {
    app: &'a Router,
    cookie: Option<String>,
    origin: &'static str,
    /// The peer's address, as `into_make_service_with_connect_info` gives it.
    ip: Option<IpAddr>,
}

impl<'a> Browser<'a> {
    fn new(f: &'a Fixture) -> Self {
        Self {
            app: &f.app,
            cookie: None,
            origin: ORIGIN,
            ip: None,
        }
    }

    /// The same browser, connecting from `ip`.
    fn at(mut self, ip: &str) -> Self {
        self.ip = Some(ip.parse().unwrap());
        self
    }

    /// Sends a request, with `Host` (unless `headers` has one), the
    /// session cookie and the extra headers; keeps the cookie the answer
    /// sets.
    async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
            request = request.header(header::HOST, HOST);
        }
        if let Some(ip) = self.ip {
            request = request.extension(ConnectInfo(SocketAddr::new(ip, 50_000)));
        }
        if let Some(cookie) = &self.cookie {
            request = request.header(header::COOKIE, cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .app
            .clone()
            .oneshot(request.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        for set in headers.get_all(header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap();
            assert!(
                pair.starts_with("gecko_session=") || pair.starts_with("__Host-gecko_session="),
                "{set}"
            );
            // A removal sets an empty value and an expiry in the past.
            self.cookie = (!set.contains("Max-Age=0")).then(|| pair.to_owned());
        }
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Answer {
        self.send("GET", path, &[], "").await
    }

    /// The sign-in form, posted from the site.
    async fn sign_in(&mut self, email: &str, password: &str) -> Answer {
        let form = serde_urlencoded::to_string([("email", email), ("password", password)]).unwrap();
        self.send(
            "POST",
            "/login",
            &[
                ("origin", self.origin),
                ("sec-fetch-site", "same-origin"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            &form,
        )
        .await
    }

    /// Signs in as the owner of `email` and returns the page's CSRF token.
    async fn signed_in(&mut self, f: &Fixture, email: &str) -> String {
        let answer = self.sign_in(email, &f.passwords[email]).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        assert_eq!(answer.header("location"), Some("/settings/api-keys"));
        let page = self.get("/settings/api-keys").await;
        assert_eq!(page.status, StatusCode::OK);
        page.csrf()
    }

    /// A call of the page's script: same origin, the token, JSON.
    async fn api(&mut self, method: &str, path: &str, csrf: &str, body: Option<Value>) -> Answer {
        let path = format!("{}{path}", settings::API_BASE);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut headers = vec![
            ("origin", self.origin),
            ("sec-fetch-site", "same-origin"),
            ("x-csrf-token", csrf),
        ];
        if !body.is_empty() {
            headers.push(("content-type", "application/json"));
        }
        self.send(method, &path, &headers, &body).await
    }
}

/// A key's answer on the API it is for.
async fn scans_with(f: &Fixture, key: &str) -> Answer {
    let mut anyone = Browser::new(f);
    anyone
        .send("GET", "/api/v1/scans", &[("x-api-key", key)], "")
        .await
}

fn assert_page_headers(answer: &Answer) {
    assert_eq!(
        answer.header("content-security-policy"),
        Some(settings::CONTENT_SECURITY_POLICY)
    );
    let csp = settings::CONTENT_SECURITY_POLICY;
    assert!(
        csp.contains("script-src 'self';") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("require-trusted-types-for 'script'"), "{csp}");
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(answer.header("cross-origin-opener-policy"), Some("same-origin"));
    assert_eq!(answer.header("cross-origin-resource-policy"), Some("same-origin"));
}

/// No inline script or style, and no event-handler attribute: the CSP
/// would block them, so the page must not need them.
fn assert_no_inline_code(html: &str) {
    for (i, _) in html.match_indices("<script") {
        let tag = &html[i..i + html[i..].find('>').unwrap()];
        assert!(tag.contains(" src="), "inline script: {tag}");
    }
    assert!(!html.contains("<style"), "inline style");
    assert!(!html.contains(" style="), "style attribute");
    let lower = html.to_ascii_lowercase();
    for handler in [" onclick=", " onload=", " onsubmit=", " onerror=", "javascript:"] {
        assert!(!lower.contains(handler), "{handler}");
    }
}

#[tokio::test]
async fn the_sign_in_page_has_its_form_and_strict_headers() {
    let f = fixture().await;
    let mut browser = Browser::new(&f);
    let login = browser.get("/login").await;
    assert_eq!(login.status, StatusCode::OK);
    assert_page_headers(&login);
    assert_eq!(login.header("cache-control"), Some("no-store"));
    assert_no_inline_code(&login.body);
    for text in [
        r#"<label for="email">Email</label>"#,
        r#"<label for="password">Password</label>"#,
        r#"type="submit">Sign in</button>"#,
    ] {
        assert!(login.body.contains(text), "{text} in {}", login.body);
    }
    // Nothing is stored for a visitor who has not signed in.
    assert!(login.header("set-cookie").is_none());
    // The assets are the app's own, with the same policy.
    for (path, kind) in [
        ("/static/settings/api-keys.js", "text/javascript"),
        ("/static/settings/settings.css", "text/css"),
    ] {
        let asset = browser.get(path).await;
        assert_eq!(asset.status, StatusCode::OK);
        assert!(asset.header("content-type").unwrap().starts_with(kind));
        assert_page_headers(&asset);
    }
}

#[tokio::test]
async fn without_a_session_the_page_sends_to_sign_in_and_the_api_refuses() {
    let f = fixture().await;
    let mut browser = Browser::new(&f);
    let page = browser.get("/settings/api-keys").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location"), Some("/login"));
    let list = browser.get("/dashboard/api-keys").await;
    assert_eq!(list.status, StatusCode::UNAUTHORIZED);
    assert_eq!(list.json()["error"], "unauthorized");
    let rows = browser.get("/settings/api-keys/rows").await;
    assert_eq!(rows.status, StatusCode::UNAUTHORIZED);
    // A forged cookie is no session.
    browser.cookie = Some(format!("gecko_session={}", Id::default()));
    assert_eq!(
        browser.get("/settings/api-keys").await.status,
        StatusCode::SEE_OTHER
    );
    browser.cookie = Some("gecko_session=not-an-id".into());
    assert_eq!(
        browser.get("/settings/api-keys").await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn the_api_beside_the_page_keeps_its_own_rules() {
    // Merged into one router, the page's layers stay on the page's routes:
    // API clients send no Origin and no CSRF token, and need neither.
    let f = fixture().await;
    let acme = teamkey::TeamId::new("acme").unwrap();
    let options = teamkey::CreateOptions::new().scopes(teamkey::Scopes::new(["scans:write"]).unwrap());
    let key = f.keys.create(&acme, "writer", options).await.unwrap();
    let mut client = Browser::new(&f);
    let started = client
        .send(
            "POST",
            "/api/v1/scans",
            &[
                ("x-api-key", key.key.expose_secret()),
                ("content-type", "application/json"),
            ],
            r#"{"target": "github.com/acme/web"}"#,
        )
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.body);
    assert!(started.header("set-cookie").is_none());
    assert!(started.header("content-security-policy").is_none());
}

#[tokio::test]
async fn a_session_of_another_shape_is_signed_out_not_an_error() {
    let f = fixture().await;
    let store = settings::SqlSessionStore::new(f.db.clone());
    let mut record = Record {
        id: Id::default(),
        data: [("user".to_owned(), json!(42))].into(),
        expiry_date: OffsetDateTime::now_utc() + Duration::hours(1),
    };
    store.create(&mut record).await.unwrap();
    let mut browser = Browser::new(&f);
    browser.cookie = Some(format!("gecko_session={}", record.id));
    let page = browser.get("/settings/api-keys").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location"), Some("/login"));
    let list = browser.get("/dashboard/api-keys").await;
    assert_eq!(list.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_wrong_password_or_unknown_email_is_refused_alike() {
    let f = fixture().await;
    let mut browser = Browser::new(&f);
    for (email, password) in [
        ("owner@acme.test", "wrong password"),
        ("nobody@acme.test", f.passwords["owner@acme.test"].as_str()),
        ("owner@acme.test", ""),
        ("owner@acme.test", &"x".repeat(5000)),
    ] {
        let answer = browser.sign_in(email, password).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{email}");
        assert!(
            answer.body.contains("Wrong email or password."),
            "{}",
            answer.body
        );
        assert!(!answer.body.contains(password) || password.is_empty());
        assert!(answer.header("set-cookie").is_none());
    }
    // A body that is no form at all is an answer too, not a panic.
    let garbage = browser
        .send(
            "POST",
            "/login",
            &[
                ("origin", ORIGIN),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            "%%%",
        )
        .await;
    assert_eq!(garbage.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        browser.get("/settings/api-keys").await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn signing_in_sets_a_strict_cookie_with_a_new_session_id() {
    let f = fixture().await;
    let mut browser = Browser::new(&f);
    let answer = browser
        .sign_in(" Owner@ACME.test ", &f.passwords["owner@acme.test"])
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let cookie = answer.header("set-cookie").unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    // Plain http on 127.0.0.1 by default; SESSION_COOKIE_SECURE=1 adds it.
    assert!(!cookie.contains("Secure"), "{cookie}");
    let first = browser.cookie.clone().unwrap();
    let page = browser.get("/settings/api-keys").await;
    assert!(page.body.contains("owner@acme.test"));

    // Signing in again (or over a session planted by someone else) gives
    // a new id, and the old one is gone.
    let again = browser
        .sign_in("owner@acme.test", &f.passwords["owner@acme.test"])
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    let second = browser.cookie.clone().unwrap();
    assert_ne!(first, second);
    let mut stale = Browser::new(&f);
    stale.cookie = Some(first);
    assert_eq!(
        stale.get("/settings/api-keys").await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(browser.get("/settings/api-keys").await.status, StatusCode::OK);
}

#[tokio::test]
async fn every_mutation_must_be_same_origin_and_carry_the_token() {
    let f = fixture().await;
    let mut browser = Browser::new(&f);
    let csrf = browser.signed_in(&f, "owner@acme.test").await;
    let body = json!({"name": "forged"}).to_string();
    let json_type = ("content-type", "application/json");
    let refusals: [(&[(&str, &str)], &str); 6] = [
        // Another site's page, with or without the token.
        (
            &[("origin", "http://evil.test"), ("x-csrf-token", &csrf), json_type],
            "cross_site",
        ),
        (
            &[
                ("origin", ORIGIN),
                ("sec-fetch-site", "cross-site"),
                ("x-csrf-token", &csrf),
                json_type,
            ],
            "cross_site",
        ),
        (
            &[("origin", "null"), ("x-csrf-token", &csrf), json_type],
            "cross_site",
        ),
        // No Origin: no browser sends a POST without one.
        (&[("x-csrf-token", &csrf), json_type], "cross_site"),
        // Same origin, but not the page's token.
        (&[("origin", ORIGIN), json_type], "csrf_failed"),
        (
            &[("origin", ORIGIN), ("x-csrf-token", "guessed"), json_type],
            "csrf_failed",
        ),
    ];
    for (headers, code) in refusals {
        let answer = browser.send("POST", "/dashboard/api-keys", headers, &body).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert_eq!(answer.json()["error"], code, "{headers:?}");
    }
    let acme = teamkey::TeamId::new("acme").unwrap();
    assert!(
        f.keys
            .list(&acme)
            .await
            .unwrap()
            .iter()
            .all(|k| k.name.as_str() != "forged"),
        "nothing was made"
    );
    // Sign-out is a mutation too.
    let logout = browser
        .send(
            "POST",
            "/logout",
            &[
                ("origin", ORIGIN),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            "csrf_token=guessed",
        )
        .await;
    assert_eq!(logout.status, StatusCode::FORBIDDEN);
    assert_eq!(browser.get("/settings/api-keys").await.status, StatusCode::OK);
    // And so is a sign-in from another site (login CSRF).
    let forged_login = browser
        .send(
            "POST",
            "/login",
            &[
                ("origin", "http://evil.test"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            "email=owner%40globex.test&password=x",
        )
        .await;
    assert_eq!(forged_login.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_key_made_in_the_page_is_shown_once_works_and_dies_on_delete() {
    let f = fixture().await;
    let mut browser = Browser::new(&f);
    let csrf = browser.signed_in(&f, "owner@acme.test").await;
    let made = browser
        .api(
            "POST",
            "/api-keys",
            &csrf,
            Some(json!({"name": "CI/CD Pipeline", "scopes": ["scans:read"], "expires_in": 2_592_000})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
    // The reveal is never cached.
    assert_eq!(made.header("cache-control"), Some("no-store"));
    let made = made.json();
    let key = made["key"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();

    // The key works on the API, for acme's scans only.
    let scans = scans_with(&f, &key).await;
    assert_eq!(scans.status, StatusCode::OK);
    let scans = scans.json();
    let scans = scans["data"].as_array().unwrap();
    assert_eq!(scans.len(), 3);
    assert!(scans.iter().all(|s| s["team"] == "acme"));

    // Listed with its preview, never the key, on the page and its rows;
    // "Last used" is the use just made (the page writes pending uses).
    for path in ["/settings/api-keys", "/settings/api-keys/rows"] {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_page_headers(&page);
        assert_eq!(page.header("cache-control"), Some("no-store"));
        assert_no_inline_code(&page.body);
        assert!(page.body.contains("CI/CD Pipeline"));
        assert!(page.body.contains(made["preview"].as_str().unwrap()));
        assert!(!page.body.contains(&key), "the full key in {path}");
        assert!(page.body.contains(r#"aria-label="Delete CI/CD Pipeline""#));
        assert!(page.body.contains(r#"aria-label="Rotate CI/CD Pipeline""#));
        assert!(page.body.contains("just now"), "last used");
        assert!(page.body.contains("in 30 days"), "expires");
    }
    let list = browser.api("GET", "/api-keys", &csrf, None).await;
    assert!(!list.body.contains(&key));

    // The audit trail names the person.
    let events = browser.api("GET", "/api-keys/events", &csrf, None).await.json();
    assert_eq!(events["data"][0]["type"], "key.created");
    assert_eq!(
        events["data"][0]["actor"],
        json!({"type": "user", "id": "owner@acme.test"})
    );

    let deleted = browser
        .api("DELETE", &format!("/api-keys/{id}"), &csrf, None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(scans_with(&f, &key).await.status, StatusCode::UNAUTHORIZED);
    let page = browser.get("/settings/api-keys").await;
    assert!(!page.body.contains(r#"aria-label="Delete CI/CD Pipeline""#));
    assert!(!page.body.contains(&id));
}

#[tokio::test]
async fn rotation_shows_the_successor_once_and_the_old_row_expiring() {
    let f = fixture().await;
    let mut browser = Browser::new(&f);
    let csrf = browser.signed_in(&f, "owner@acme.test").await;
    let made = browser
        .api("POST", "/api-keys", &csrf, Some(json!({"name": "Deploy bot"})))
        .await
        .json();
    let (old_key, old_id) = (made["key"].as_str().unwrap(), made["id"].as_str().unwrap());

    let rotated = browser
        .api(
            "POST",
            &format!("/api-keys/{old_id}/rotate"),
            &csrf,
            Some(json!({"grace_seconds": 3600})),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED);
    assert_eq!(rotated.header("cache-control"), Some("no-store"));
    let rotated = rotated.json();
    let new_key = rotated["key"].as_str().unwrap();
    assert_eq!(
        scans_with(&f, old_key).await.status,
        StatusCode::OK,
        "in its grace"
    );
    assert_eq!(scans_with(&f, new_key).await.status, StatusCode::OK);
    let rows = browser.get("/settings/api-keys/rows").await.body;
    assert!(!rows.contains(new_key) && !rows.contains(old_key));
    let old_row = &rows[rows.find(&format!(r#"data-key-id="{old_id}""#)).unwrap()..];
    let old_row = &old_row[..old_row.find("</tr>").unwrap()];
    assert!(old_row.contains("Rotated"), "{old_row}");
    assert!(old_row.contains("Old key: expires"), "{old_row}");
    assert!(old_row.contains("in 1 hour"), "{old_row}");
    assert!(!old_row.contains("data-action=\"rotate\""), "rotated once only");

    // "Now": the successor's successor works, the successor at once not.
    let new_id = rotated["id"].as_str().unwrap();
    let now = browser
        .api(
            "POST",
            &format!("/api-keys/{new_id}/rotate"),
            &csrf,
            Some(json!({"grace_seconds": 0})),
        )
        .await
        .json();
    assert_eq!(
        scans_with(&f, now["key"].as_str().unwrap()).await.status,
        StatusCode::OK
    );
    assert_eq!(scans_with(&f, new_key).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn one_team_sees_and_reaches_nothing_of_another() {
    let f = fixture().await;
    let mut globex = Browser::new(&f);
    let globex_csrf = globex.signed_in(&f, "owner@globex.test").await;
    // Enterprise: every key expires within 90 days, so "Never" is not offered.
    let page = globex.get("/settings/api-keys").await.body;
    assert!(!page.contains(">Never</option>"));
    assert!(page.contains("expire within 90 days"));
    let refused = globex
        .api(
            "POST",
            "/api-keys",
            &globex_csrf,
            Some(json!({"name": "Forever"})),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.body
    );
    let secret = globex
        .api(
            "POST",
            "/api-keys",
            &globex_csrf,
            Some(json!({"name": "Globex billing export", "expires_in": 7_776_000})),
        )
        .await;
    assert_eq!(secret.status, StatusCode::CREATED, "{}", secret.body);
    let secret = secret.json();
    let globex_id = secret["id"].as_str().unwrap();

    let mut acme = Browser::new(&f);
    let csrf = acme.signed_in(&f, "owner@acme.test").await;
    for path in ["/settings/api-keys", "/settings/api-keys/rows"] {
        let body = acme.get(path).await.body;
        assert!(
            !body.contains("Globex billing export") && !body.contains(globex_id),
            "{path}"
        );
        assert!(!body.contains("globex"), "{path}");
    }
    let list = acme.api("GET", "/api-keys", &csrf, None).await.json();
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["id"] != globex_id)
    );
    let delete = acme
        .api("DELETE", &format!("/api-keys/{globex_id}"), &csrf, None)
        .await;
    assert_eq!(delete.status, StatusCode::NOT_FOUND);
    let rotate = acme
        .api(
            "POST",
            &format!("/api-keys/{globex_id}/rotate"),
            &csrf,
            Some(json!({})),
        )
        .await;
    assert_eq!(rotate.status, StatusCode::NOT_FOUND);
    // acme's token is no good in globex's session either.
    let swapped = globex
        .api(
            "POST",
            "/api-keys",
            &csrf,
            Some(json!({"name": "x", "expires_in": 60})),
        )
        .await;
    assert_eq!(swapped.status, StatusCode::FORBIDDEN);
    assert_eq!(
        scans_with(&f, secret["key"].as_str().unwrap()).await.status,
        StatusCode::OK,
        "globex's key untouched"
    );
}

#[tokio::test]
async fn a_team_without_api_access_sees_why_instead_of_the_form() {
    let f = fixture().await;
    let mut initech = Browser::new(&f);
    let csrf = initech.signed_in(&f, "owner@initech.test").await;
    let page = initech.get("/settings/api-keys").await.body;
    assert!(page.contains("Your plan has no API access"), "{page}");
    assert!(!page.contains(r#"id="create-form""#));
    // Its key from before the plans is listed, to delete, not to rotate.
    assert!(page.contains(demo::LEGACY_KEY_NAME));
    assert!(!page.contains(r#"data-action="rotate""#));
    let made = initech
        .api("POST", "/api-keys", &csrf, Some(json!({"name": "x"})))
        .await;
    assert_eq!(made.status, StatusCode::FORBIDDEN);
    assert_eq!(made.json()["error"], "plan_required");
}

#[tokio::test]
async fn signing_out_deletes_the_session_so_its_cookie_is_no_session() {
    let f = fixture().await;
    let mut browser = Browser::new(&f);
    let csrf = browser.signed_in(&f, "owner@acme.test").await;
    let cookie = browser.cookie.clone();
    let form = format!("csrf_token={csrf}");
    let out = browser
        .send(
            "POST",
            "/logout",
            &[
                ("origin", ORIGIN),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            &form,
        )
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(out.header("location"), Some("/login"));
    assert!(browser.cookie.is_none(), "the cookie is removed");
    // The old cookie, replayed, is no session: its row is deleted.
    let mut replay = Browser::new(&f);
    replay.cookie = cookie;
    assert_eq!(
        replay.get("/settings/api-keys").await.status,
        StatusCode::SEE_OTHER
    );
    let list = replay.api("GET", "/api-keys", &csrf, None).await;
    assert_eq!(list.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_sign_in_finding_every_hash_busy_is_refused_at_once_not_queued() {
    let f = fixture().await;
    let password = &f.passwords["owner@acme.test"];
    let [mut a, mut b, mut c, mut d] = [(); 4].map(|()| Browser::new(&f));
    // Polled together in one task: each takes a permit or is refused
    // before the first hash ends. Queued, all four would sign in.
    let (a, b, c, d) = tokio::join!(
        a.sign_in("owner@acme.test", password),
        b.sign_in("owner@acme.test", password),
        c.sign_in("owner@acme.test", password),
        d.sign_in("owner@acme.test", password),
    );
    let (signed_in, refused): (Vec<_>, Vec<_>) = [a, b, c, d]
        .into_iter()
        .partition(|answer| answer.status == StatusCode::SEE_OTHER);
    assert_eq!(signed_in.len(), settings::throttle::HASHING_PERMITS);
    assert!(!refused.is_empty());
    for answer in refused {
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{}", answer.body);
        assert_eq!(answer.header("retry-after"), Some("1"));
        assert_eq!(answer.header("cache-control"), Some("no-store"));
        assert!(
            answer.body.contains("Too many sign-in attempts"),
            "{}",
            answer.body
        );
        assert!(answer.header("set-cookie").is_none());
    }
    // Busy is no failure, and the permits are back.
    let mut later = Browser::new(&f);
    later.signed_in(&f, "owner@acme.test").await;
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_email_known_or_not() {
    let f = fixture().await;
    let limit = settings::throttle::EMAIL_FAILURES;
    let mut browser = Browser::new(&f);
    let mut refusals = Vec::new();
    for email in ["owner@acme.test", "nobody@acme.test"] {
        for _ in 0..limit {
            let answer = browser.sign_in(email, "wrong password").await;
            assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{email}");
        }
        // Past the limit even the right password is refused, unhashed.
        let refused = browser.sign_in(email, &f.passwords["owner@acme.test"]).await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{email}");
        let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!(
            (1..=settings::throttle::WINDOW.as_secs()).contains(&wait),
            "{wait}"
        );
        assert_eq!(refused.header("cache-control"), Some("no-store"));
        assert!(refused.header("set-cookie").is_none());
        refusals.push(refused.body.replace(email, "EMAIL"));
    }
    // Whether the email has an account or not, the refusal reads the same.
    assert_eq!(refusals[0], refusals[1]);
    assert!(refusals[0].contains("Too many sign-in attempts"));

    // Other emails are not held back; a success forgives its email's
    // failures (counted on, the last ones here would be refused).
    for _ in 0..2 {
        for _ in 1..limit {
            let answer = browser.sign_in("owner@globex.test", "wrong password").await;
            assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
        }
        Browser::new(&f).signed_in(&f, "owner@globex.test").await;
    }
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_client_address() {
    let f = fixture().await;
    let mut guesser = Browser::new(&f).at("203.0.113.7");
    for i in 0..settings::throttle::ADDRESS_FAILURES {
        // A new email each time: no email's own limit is reached.
        let answer = guesser.sign_in(&format!("user{i}@acme.test"), "guess").await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let refused = guesser
        .sign_in("owner@acme.test", &f.passwords["owner@acme.test"])
        .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.header("retry-after").is_some());
    assert!(refused.body.contains("Too many sign-in attempts"));
    // Another address is not held back.
    Browser::new(&f)
        .at("203.0.113.8")
        .signed_in(&f, "owner@acme.test")
        .await;
}

#[test]
fn the_public_origin_is_taken_as_browsers_send_it() {
    for (given, origin) in [
        ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
        ("HTTPS://Gecko.Example:443/", "https://gecko.example"),
        ("http://gecko.example:80", "http://gecko.example"),
        ("https://gecko.example:8443", "https://gecko.example:8443"),
        ("http://[::1]:3000", "http://[::1]:3000"),
    ] {
        let config = settings::Config::new(given, false).unwrap();
        assert_eq!(config.public_origin, origin, "{given}");
    }
    for wrong in [
        "",
        "gecko.example",
        "ftp://gecko.example",
        "https://gecko.example/settings",
        "https://gecko.example/?x=1",
        "https://user@gecko.example",
        "https://user:hunter2@gecko.example",
    ] {
        let Err(error) = settings::Config::new(wrong, false) else {
            panic!("{wrong} was taken");
        };
        assert!(!error.contains("hunter2"), "the value's password leaked: {error}");
    }
}

#[tokio::test]
async fn mutations_must_come_from_the_public_origin_by_scheme_host_and_port() {
    let f = fixture().await;
    let mut browser = Browser::new(&f);
    let csrf = browser.signed_in(&f, "owner@acme.test").await;
    let body = json!({"name": "forged"}).to_string();
    // `Host` is the client's to choose: an `Origin` that matches it proves
    // nothing. Nor does a match of the host alone.
    for (host, origin) in [
        ("evil.test", "http://evil.test"),
        (HOST, "https://gecko.test"),
        (HOST, "http://gecko.test:8080"),
        ("gecko.test:8080", "http://gecko.test:8080"),
    ] {
        let answer = browser
            .send(
                "POST",
                "/dashboard/api-keys",
                &[
                    ("host", host),
                    ("origin", origin),
                    ("x-csrf-token", &csrf),
                    ("content-type", "application/json"),
                ],
                &body,
            )
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{origin}");
        assert_eq!(answer.json()["error"], "cross_site", "{origin}");
    }
    // The public origin passes, whatever `Host` a proxy in front passes on.
    let made = browser
        .send(
            "POST",
            "/dashboard/api-keys",
            &[
                ("host", "127.0.0.1:3000"),
                ("origin", ORIGIN),
                ("x-csrf-token", &csrf),
                ("content-type", "application/json"),
            ],
            &json!({"name": "made"}).to_string(),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
}

#[tokio::test]
async fn over_https_the_session_cookie_is_a_host_cookie() {
    let f = fixture_with(settings::Config::new("https://gecko.test", true).unwrap()).await;
    let mut browser = Browser::new(&f);
    browser.origin = "https://gecko.test";
    let answer = browser
        .sign_in("owner@acme.test", &f.passwords["owner@acme.test"])
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let cookie = answer.header("set-cookie").unwrap();
    assert!(cookie.starts_with("__Host-gecko_session="), "{cookie}");
    // What browsers require of a `__Host-` cookie, or they drop it.
    for attribute in ["Secure", "Path=/", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    // It is the session.
    let csrf = browser.get("/settings/api-keys").await.csrf();
    let list = browser.api("GET", "/api-keys", &csrf, None).await;
    assert_eq!(list.status, StatusCode::OK);
}

#[tokio::test]
async fn a_key_id_that_is_no_text_gets_the_pages_json_error() {
    let f = fixture().await;
    let mut browser = Browser::new(&f);
    let csrf = browser.signed_in(&f, "owner@acme.test").await;
    // Percent-decoded, neither is UTF-8, so neither is a key's id: the
    // management API's own JSON 404, as for any other id that is no key's,
    // never axum's plain-text `Path` rejection.
    for (method, path) in [
        ("DELETE", "/api-keys/%FF"),
        ("POST", "/api-keys/%C0%AF/rotate"),
        ("DELETE", "/api-keys/nope"),
    ] {
        let answer = browser.api(method, path, &csrf, Some(json!({}))).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.header("cache-control"), Some("no-store"), "{path}");
        assert_eq!(answer.header("content-type"), Some("application/json"));
        assert_eq!(answer.json()["error"], "not_found", "{path}");
    }
}

#[test]
fn the_page_script_makes_no_html_from_strings() {
    // The CSP requires Trusted Types: each of these would throw.
    let script = include_str!("../settings/static/api-keys.js");
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "DOMParser",
        "createContextualFragment",
        "setHTMLUnsafe",
        "srcdoc",
        "eval(",
        "Function(",
    ] {
        assert!(!script.contains(sink), "{sink}");
    }
}

// The session store, on each database.

/// A name no other run uses.
fn unique(label: &str) -> String {
    format!(
        "gecko_{label}_{:016x}",
        RandomState::new().hash_one(std::time::SystemTime::now())
    )
}

fn env_url(var: &str) -> Option<String> {
    let url = std::env::var(var).ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("\n*** SKIPPED: {var} is not set; this test did not touch a database. ***\n");
    }
    url
}

/// Create, load, save, expire, delete; the table holds no session id.
async fn exercise_session_store(db: demo::Db) {
    settings::prepare(&db).await.unwrap();
    // A user is found by exactly their email: a variant a collation would
    // conflate signs no one in (and would dodge the per-email throttle).
    assert!(
        settings::users::team_of(&db, "owner@acme.test")
            .await
            .unwrap()
            .is_some()
    );
    for variant in ["owner@acmé.test", "OWNER@acme.test", "owner@acme.tést"] {
        assert_eq!(
            settings::users::team_of(&db, variant).await.unwrap(),
            None,
            "{variant}"
        );
    }
    let store = settings::SqlSessionStore::new(db.clone());
    let later = OffsetDateTime::now_utc() + Duration::hours(1);
    let mut record = Record {
        id: Id::default(),
        data: [("user".to_owned(), json!({"email": "owner@acme.test"}))].into(),
        expiry_date: later.replace_nanosecond(0).unwrap(),
    };
    store.create(&mut record).await.unwrap();
    assert_eq!(store.load(&record.id).await.unwrap().as_ref(), Some(&record));
    assert_eq!(store.load(&Id::default()).await.unwrap(), None);

    record.data.insert("csrf".into(), json!("token"));
    store.save(&record).await.unwrap();
    assert_eq!(store.load(&record.id).await.unwrap().as_ref(), Some(&record));

    // What a copy of the database would show: hashes, not ids.
    let stored: Vec<(String,)> = match &db {
        demo::Db::Sqlite(pool) => {
            sqlx::query_as("SELECT id_hash FROM demo_sessions")
                .fetch_all(pool)
                .await
        }
        demo::Db::Postgres(pool) => {
            sqlx::query_as("SELECT id_hash FROM demo_sessions")
                .fetch_all(pool)
                .await
        }
        demo::Db::MySql(pool) => {
            sqlx::query_as("SELECT id_hash FROM demo_sessions")
                .fetch_all(pool)
                .await
        }
    }
    .unwrap();
    // The SHA-256 of the id, in hex, and nowhere the id itself.
    let id = record.id.to_string();
    let expected = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(id.as_bytes()))
    };
    assert!(stored.contains(&(expected,)), "{stored:?}");
    assert!(stored.iter().all(|(hash,)| !hash.contains(&id)));

    // An expired session is not loaded, and the sweep deletes it.
    let mut expired = Record {
        id: Id::default(),
        data: record.data.clone(),
        expiry_date: (OffsetDateTime::now_utc() - Duration::seconds(1))
            .replace_nanosecond(0)
            .unwrap(),
    };
    store.create(&mut expired).await.unwrap();
    assert_eq!(store.load(&expired.id).await.unwrap(), None);
    store.delete_expired().await.unwrap();
    let count = |db: demo::Db| async move {
        let row: (i64,) = match &db {
            demo::Db::Sqlite(pool) => {
                sqlx::query_as("SELECT COUNT(*) FROM demo_sessions")
                    .fetch_one(pool)
                    .await
            }
            demo::Db::Postgres(pool) => {
                sqlx::query_as("SELECT COUNT(*) FROM demo_sessions")
                    .fetch_one(pool)
                    .await
            }
            demo::Db::MySql(pool) => {
                sqlx::query_as("SELECT COUNT(*) FROM demo_sessions")
                    .fetch_one(pool)
                    .await
            }
        }
        .unwrap();
        row.0
    };
    assert_eq!(count(db.clone()).await, 1, "only the live one is left");

    store.delete(&record.id).await.unwrap();
    assert_eq!(store.load(&record.id).await.unwrap(), None);
    assert_eq!(count(db).await, 0);
}

#[tokio::test]
async fn the_session_store_round_trips_and_expires_on_sqlite() {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    exercise_session_store(demo::Db::Sqlite(pool)).await;
}

#[tokio::test]
async fn the_session_store_round_trips_and_expires_on_postgres() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let schema = unique("pg");
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    exercise_session_store(demo::Db::Postgres(pool.clone())).await;
    pool.close().await;
    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_session_store_round_trips_and_expires_on_mysql() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let admin = MySqlPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let database = unique("my");
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&admin)
        .await
        .unwrap();
    let options = MySqlConnectOptions::from_str(&url).unwrap().database(&database);
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    exercise_session_store(demo::Db::MySql(pool.clone())).await;
    pool.close().await;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE {database}")))
        .execute(&admin)
        .await
        .unwrap();
}
