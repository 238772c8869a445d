//! Team policy (plan gating), the audit trail and client addresses
//! through the axum adapter, in process. The scenarios are the actix
//! adapter's, word for word (see the line below the app).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use teamkey_axum::{Authenticated, ClientIp, KeyAdmin, ManagesKeys, RequireApiKey, management_routes};
use teamkey_core::events::{Actor, EventQuery, KeyEvent};
use teamkey_core::time::{Duration, OffsetDateTime};
use teamkey_core::{
    Authority, CreateOptions, KeyId, KeyManager, KeyRecord, KeyStore, KeyUse, ManualClock, MemoryStore,
    PolicyError, RotateOutcome, Rotation, Scopes, StoreError, TeamId, TeamPolicy, TeamRules,
};
use tower::ServiceExt;

/// The app: `/api/v1` behind the key guard (a route reading the caller,
/// and the management routes for `ManagesKeys`), the management routes
/// for dashboard users at `/dashboard`, and `/whoami`, which verifies the
/// key in its extractor alone. Outermost, a proxy's middleware that sets
/// `ClientIp` from `x-real-ip`, as `ClientIp`'s docs show.
fn router(keys: &KeyManager) -> Router {
    let caller = async |caller: Authenticated| caller.team_id().to_string();
    let api = Router::new()
        .route("/scans", routing::get(caller))
        .merge(management_routes::<KeyManager, ManagesKeys>())
        .layer(RequireApiKey::new(keys.clone()));
    Router::new()
        .nest("/api/v1", api)
        .nest("/dashboard", management_routes::<KeyManager, Dashboard>())
        .route("/whoami", routing::get(caller))
        .layer(middleware::from_fn(real_ip))
        .with_state(keys.clone())
}

async fn real_ip(mut request: Request, next: Next) -> Response {
    let ip = request
        .headers()
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if let Some(ip) = ip {
        request.extensions_mut().insert(ClientIp(ip));
    }
    next.run(request).await
}

impl<S: Send + Sync> FromRequestParts<S> for Dashboard {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, StatusCode> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        dashboard_user(header("x-user"), header("x-team")).ok_or(StatusCode::UNAUTHORIZED)
    }
}

async fn send(app: &Router, req: Req) -> Answer {
    let mut request = Request::builder().method(req.method).uri(&req.uri);
    for (name, value) in &req.headers {
        request = request.header(*name, value);
    }
    if req.body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let mut request = request.body(Body::from(req.body.unwrap_or_default())).unwrap();
    // What `into_make_service_with_connect_info::<SocketAddr>()` inserts.
    if let Some(peer) = req.peer {
        request.extensions_mut().insert(ConnectInfo(peer));
    }
    let response = app.clone().oneshot(request).await.unwrap();
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
async fn a_team_without_api_access_gets_the_plan_answer() {
    let f = fixture(MemoryStore::new(), false).await;
    let app = router(&f.keys);
    the_plan_answer(&f, async |r| send(&app, r).await).await;
}

#[tokio::test]
async fn the_plan_gates_management() {
    let f = fixture(MemoryStore::new(), false).await;
    let app = router(&f.keys);
    plans_gate_management(&f, async |r| send(&app, r).await).await;
}

// Client IPs on: events carry the address only where the app keeps them.
#[tokio::test]
async fn changes_through_the_api_are_in_the_audit_trail() {
    let f = fixture(MemoryStore::new(), true).await;
    let app = router(&f.keys);
    the_audit_trail(&f, async |r| send(&app, r).await).await;
}

#[tokio::test]
async fn a_store_without_events_answers_501() {
    let f = fixture(NoEvents(MemoryStore::new()), false).await;
    let app = router(&f.keys);
    a_store_without_events(&f, async |r| send(&app, r).await).await;
}

#[tokio::test]
async fn the_client_ip_is_kept_when_asked() {
    let f = fixture(MemoryStore::new(), true).await;
    let app = router(&f.keys);
    last_used_ips(&f, async |r| send(&app, r).await).await;
    let f = fixture(MemoryStore::new(), false).await;
    let app = router(&f.keys);
    no_ips_unless_asked(&f, async |r| send(&app, r).await).await;
}

/// Over a real socket: axum's `ConnectInfo` gives the guard the peer.
#[tokio::test]
async fn the_peer_address_comes_from_connect_info() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let f = fixture(MemoryStore::new(), true).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = router(&f.keys).into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(axum::serve(listener, service).into_future());
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /api/v1/scans HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {}\r\nConnection: close\r\n\r\n",
        f.acme_plain
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(f.last_used_ip(&f.acme_plain).await.as_deref(), Some("127.0.0.1"));
    server.abort();
}

// ---------------------------------------------------------------------
// From here to the end, this file is the other adapter's
// `tests/plans_and_events.rs` word for word: the same scenarios, the same
// expected bytes. Only the part above (the app and how a request is sent)
// is the framework's.
// ---------------------------------------------------------------------

const UNAUTHORIZED: &str = r#"{"error":"unauthorized","message":"A valid API key is required."}"#;
const UNAVAILABLE: &str =
    r#"{"error":"unavailable","message":"API keys cannot be checked right now; retry later."}"#;
/// The guards' answer to a valid key of a team whose plan has no API access.
const PLAN_REQUIRED: &str = r#"{"error":"plan_required","message":"This API key is valid, but your team's plan does not include API access. Upgrade the plan to use the API."}"#;
/// The management API's answer to a creation the team's plan does not allow.
const PLAN_REQUIRED_TO_CREATE: &str = r#"{"error":"plan_required","message":"Your team's plan does not include API access. Upgrade the plan to create API keys."}"#;
const MANAGEMENT_UNAVAILABLE: &str =
    r#"{"error":"unavailable","message":"API keys cannot be managed right now; retry later."}"#;

/// The most active keys acme's plan allows.
const ACME_QUOTA: usize = 3;

/// The teams' plans, as an app would read them from its own tables:
/// acme is on Pro (its scopes, at most three keys), initech on Free (no
/// API access), umbrella on Enterprise (keys expire within 90 days), and
/// the plan of `broken` cannot be read.
struct Plans;

#[teamkey_core::async_trait]
impl TeamPolicy for Plans {
    async fn rules(&self, team: &TeamId) -> Result<TeamRules, PolicyError> {
        Ok(match team.as_str() {
            "acme" => TeamRules::allow_all()
                .grantable_scopes(Scopes::new(["keys:manage", "scans:read", "scans:write"])?)
                .max_active_keys(ACME_QUOTA),
            "initech" => TeamRules::no_api_access(),
            "umbrella" => TeamRules::allow_all().require_expiry_within(Duration::days(90)),
            "broken" => return Err("the plans database is down".into()),
            _ => TeamRules::allow_all(),
        })
    }
}

/// A signed-in user of the app's dashboard, managing their team's keys:
/// an app-defined admin, named in events by their email.
struct Dashboard {
    team: TeamId,
    user: String,
}

impl KeyAdmin for Dashboard {
    fn team_id(&self) -> &TeamId {
        &self.team
    }
    fn authority(&self) -> Authority {
        Authority::whole_team()
    }
    fn actor(&self) -> Actor {
        Actor::user(&self.user)
    }
}

/// The signed-in user, from the stand-in session headers `x-user` and
/// `x-team`.
fn dashboard_user(user: Option<&str>, team: Option<&str>) -> Option<Dashboard> {
    Some(Dashboard {
        team: TeamId::new(team?).ok()?,
        user: user?.to_owned(),
    })
}

/// A request, whatever the framework.
struct Req {
    method: &'static str,
    uri: String,
    headers: Vec<(&'static str, String)>,
    /// Sent as `application/json`.
    body: Option<String>,
    /// The connection's peer address.
    peer: Option<SocketAddr>,
}

fn get(uri: &str) -> Req {
    Req {
        method: "GET",
        uri: uri.to_owned(),
        headers: Vec::new(),
        body: None,
        peer: None,
    }
}

fn post(uri: &str, body: &str) -> Req {
    Req {
        method: "POST",
        body: Some(body.to_owned()),
        ..get(uri)
    }
}

fn delete(uri: &str) -> Req {
    Req {
        method: "DELETE",
        ..get(uri)
    }
}

impl Req {
    fn key(self, key: &str) -> Self {
        self.header("x-api-key", key)
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn from(mut self, peer: &str) -> Self {
        self.peer = Some(peer.parse().unwrap());
        self
    }

    /// As the dashboard's signed-in `user` of `team`.
    fn signed_in(self, user: &str, team: &str) -> Self {
        self.header("x-user", user).header("x-team", team)
    }
}

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

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
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

/// Keys in every state the scenarios need, made before the plan gate
/// (by a manager without the policy, over the same store), and the gated
/// manager the app serves.
struct Fixture {
    keys: KeyManager,
    clock: ManualClock,
    /// acme: keys:manage, scans:read and billing:admin (which acme's plan
    /// no longer grants).
    acme_admin: String,
    acme_admin_id: String,
    acme_plain: String,
    initech: String,
    initech_revoked: String,
    initech_expired: String,
    umbrella_admin: String,
    broken: String,
    globex_admin: String,
}

async fn fixture(store: impl KeyStore, record_client_ips: bool) -> Fixture {
    let store = Arc::new(store);
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap());
    let before_the_gate = KeyManager::builder(Arc::clone(&store))
        .clock(clock.clone())
        .build();
    let keys = KeyManager::builder(store)
        .clock(clock.clone())
        .policy(Plans)
        .record_client_ips(record_client_ips)
        .build();
    let make = async |team: &str, scopes: &[&str], expires_in: Option<Duration>| {
        let mut options = CreateOptions::new().scopes(Scopes::new(scopes).unwrap());
        options.expires_in = expires_in;
        let team = TeamId::new(team).unwrap();
        before_the_gate.create(&team, "seeded", options).await.unwrap()
    };
    let secret = |made: &teamkey_core::NewKey| made.key.expose_secret().to_owned();
    let manage = ["keys:manage", "scans:read"];
    let acme_admin = make("acme", &["keys:manage", "scans:read", "billing:admin"], None).await;
    let acme_plain = make("acme", &[], None).await;
    let initech = make("initech", &manage, None).await;
    let initech_revoked = make("initech", &[], None).await;
    let initech_team = TeamId::new("initech").unwrap();
    before_the_gate
        .revoke(&initech_team, &initech_revoked.info.id)
        .await
        .unwrap();
    let initech_expired = make("initech", &[], Some(Duration::minutes(1))).await;
    let umbrella_admin = make("umbrella", &manage, None).await;
    let broken = make("broken", &manage, None).await;
    let globex_admin = make("globex", &manage, None).await;
    clock.advance(Duration::minutes(2));
    Fixture {
        keys,
        clock,
        acme_admin_id: acme_admin.info.id.to_string(),
        acme_admin: secret(&acme_admin),
        acme_plain: secret(&acme_plain),
        initech: secret(&initech),
        initech_revoked: secret(&initech_revoked),
        initech_expired: secret(&initech_expired),
        umbrella_admin: secret(&umbrella_admin),
        broken: secret(&broken),
        globex_admin: secret(&globex_admin),
    }
}

impl Fixture {
    /// Every record of `team`, revoked or not: to see that nothing was written.
    async fn records(&self, team: &str) -> usize {
        let team = TeamId::new(team).unwrap();
        self.keys.store().list(&team).await.unwrap().len()
    }

    async fn events(&self, team: &str) -> usize {
        let team = TeamId::new(team).unwrap();
        self.keys
            .events(&team, EventQuery::newest(100))
            .await
            .unwrap()
            .len()
    }

    /// The last-used IP of `key`, once the pending uses are written.
    async fn last_used_ip(&self, key: &str) -> Option<String> {
        self.keys.flush_last_used().await.unwrap();
        let key_id = self.keys.format().parse(key).unwrap().key_id();
        let record = self.keys.store().get(&key_id).await.unwrap().unwrap();
        record.last_used_ip.map(|ip| ip.to_string())
    }
}

/// The same key with its last character changed: a bad checksum.
fn with_bad_checksum(key: &str) -> String {
    let last = if key.ends_with('0') { "1" } else { "0" };
    format!("{}{last}", &key[..key.len() - 1])
}

/// A valid key of a team whose plan has no API access gets the plan
/// answer, from the guard and from the extractor alike; any key failure
/// of that team is still the one 401; a policy that cannot answer is 503.
async fn the_plan_answer(f: &Fixture, send: impl AsyncFn(Req) -> Answer) {
    let the_401 = send(get("/api/v1/scans")).await;
    assert_eq!((the_401.status, the_401.body.as_str()), (401, UNAUTHORIZED));
    assert_eq!(the_401.header("www-authenticate"), Some("ApiKey"));

    let mut plan_answers = Vec::new();
    for uri in [
        "/api/v1/scans",
        "/whoami",
        "/api/v1/api-keys",
        "/api/v1/api-keys/events",
    ] {
        let answer = send(get(uri).key(&f.initech)).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (403, PLAN_REQUIRED),
            "{uri}"
        );
        assert_eq!(answer.header("content-type"), Some("application/json"), "{uri}");
        assert_eq!(answer.header("cache-control"), Some("no-store"), "{uri}");
        assert_eq!(
            answer.header("www-authenticate"),
            None,
            "{uri}: not a key failure"
        );
        plan_answers.push(answer);
    }
    assert!(
        plan_answers.iter().all(|a| *a == plan_answers[0]),
        "one plan answer, byte for byte: {plan_answers:#?}"
    );

    for bad in [
        f.initech_revoked.clone(),
        f.initech_expired.clone(),
        with_bad_checksum(&f.initech),
    ] {
        for uri in ["/api/v1/scans", "/whoami"] {
            assert_eq!(
                send(get(uri).key(&bad)).await,
                the_401,
                "{uri}: a bad key of a team without API access is the one 401"
            );
        }
    }

    for uri in ["/api/v1/scans", "/whoami"] {
        let answer = send(get(uri).key(&f.acme_plain)).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "acme"), "{uri}");
        let down = send(get(uri).key(&f.broken)).await;
        assert_eq!((down.status, down.body.as_str()), (503, UNAVAILABLE), "{uri}");
        assert_eq!(down.header("cache-control"), Some("no-store"));
    }
}

/// The management API refuses what the team's plan does not allow, and
/// writes nothing then.
async fn plans_gate_management(f: &Fixture, send: impl AsyncFn(Req) -> Answer) {
    let keys = "/api/v1/api-keys";
    let (records, events) = (f.records("initech").await, f.events("initech").await);

    // No API access: a dashboard user of initech may not create a key.
    let refused =
        send(post("/dashboard/api-keys", r#"{"name":"CI"}"#).signed_in("owner@initech.test", "initech"))
            .await;
    assert_eq!(
        (refused.status, refused.body.as_str()),
        (403, PLAN_REQUIRED_TO_CREATE)
    );
    assert_eq!(refused.header("cache-control"), Some("no-store"));
    // Nor may initech's own key, which the guard stops first.
    let refused = send(post(keys, r#"{"name":"CI"}"#).key(&f.initech)).await;
    assert_eq!((refused.status, refused.body.as_str()), (403, PLAN_REQUIRED));
    assert_eq!(f.records("initech").await, records, "nothing written");
    assert_eq!(f.events("initech").await, events, "no event");

    // Scopes beyond the plan, even ones the caller holds.
    let records = f.records("acme").await;
    let beyond = send(
        post(
            keys,
            r#"{"name":"billing","scopes":["scans:read","billing:admin"]}"#,
        )
        .key(&f.acme_admin),
    )
    .await;
    assert_eq!(beyond.status, 403, "{}", beyond.body);
    assert_eq!(beyond.json()["error"], "scopes_not_in_plan");
    assert_eq!(beyond.json()["refused_scopes"], json!(["billing:admin"]));
    assert_eq!(f.records("acme").await, records, "nothing written");

    // A plan that requires expiry: none, or one too far, is a 422.
    for body in [
        r#"{"name":"forever"}"#,
        r#"{"name":"too long","expires_in":7862400}"#,
    ] {
        let answer = send(post(keys, body).key(&f.umbrella_admin)).await;
        assert_eq!(answer.status, 422, "{body}: {}", answer.body);
        assert_eq!(answer.json()["error"], "invalid_request", "{body}");
    }
    let ok = send(post(keys, r#"{"name":"quarterly","expires_in":7776000}"#).key(&f.umbrella_admin)).await;
    assert_eq!(ok.status, 201, "{}", ok.body);

    // The plan's quota: acme has two keys and may have three.
    let third = send(post(keys, r#"{"name":"third"}"#).key(&f.acme_admin)).await;
    assert_eq!(third.status, 201, "{}", third.body);
    for request in [
        post(keys, r#"{"name":"fourth"}"#).key(&f.acme_admin),
        post("/dashboard/api-keys", r#"{"name":"fourth"}"#).signed_in("owner@acme.test", "acme"),
    ] {
        let full = send(request).await;
        assert_eq!(full.status, 422, "{}", full.body);
        assert_eq!(full.json()["error"], "too_many_keys");
        assert_eq!(full.json()["max_active_keys"], ACME_QUOTA);
    }
    assert_eq!(f.records("acme").await, records + 1);

    // A policy that cannot answer: 503, nothing written.
    let records = f.records("broken").await;
    let down =
        send(post("/dashboard/api-keys", r#"{"name":"x"}"#).signed_in("owner@broken.test", "broken")).await;
    assert_eq!((down.status, down.body.as_str()), (503, MANAGEMENT_UNAVAILABLE));
    assert_eq!(f.records("broken").await, records);
}

/// The events of changes made through the API, newest first, with who
/// made them and from which request; paged; one team's only.
async fn the_audit_trail(f: &Fixture, send: impl AsyncFn(Req) -> Answer) {
    let keys = "/api/v1/api-keys";
    let events = "/api/v1/api-keys/events";
    let from = |request: Req, id: &str| {
        request
            .key(&f.acme_admin)
            .header("x-request-id", id)
            .header("user-agent", "audit-test/1.0")
            .from("203.0.113.7:50000")
    };
    let created = send(from(
        post(keys, r#"{"name":"CI","scopes":["scans:read"]}"#),
        "req-create",
    ))
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let (created_id, created_key) = (created.json()["id"].clone(), created.json()["key"].clone());
    f.clock.advance(Duration::seconds(1));
    let rotate = format!("{keys}/{}/rotate", created_id.as_str().unwrap());
    let rotated = send(from(post(&rotate, "{}"), "req-rotate")).await;
    assert_eq!(rotated.status, 201, "{}", rotated.body);
    let (successor_id, successor_key) = (rotated.json()["id"].clone(), rotated.json()["key"].clone());
    assert_eq!(rotated.json()["rotated_from"], created_id);
    f.clock.advance(Duration::seconds(1));
    let revoke = format!("{keys}/{}", successor_id.as_str().unwrap());
    assert_eq!(send(from(delete(&revoke), "req-revoke")).await.status, 204);

    let listed = send(get(events).key(&f.acme_admin)).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.header("cache-control"), Some("no-store"));
    assert_eq!(listed.header("content-type"), Some("application/json"));
    for secret in [&created_key, &successor_key] {
        let secret = secret.as_str().unwrap();
        assert!(!listed.body.contains(&secret[20..]), "an event never holds a key");
    }
    let page = listed.json();
    let data = page["data"].as_array().unwrap();
    let newest: Vec<&str> = data.iter().take(3).map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(newest, ["key.revoked", "key.rotated", "key.created"]);
    let actor = json!({ "type": "key", "key_id": f.acme_admin_id });
    for (event, request_id) in data.iter().zip(["req-revoke", "req-rotate", "req-create"]) {
        assert_eq!(event["actor"], actor, "{event}");
        assert_eq!(event["team_id"], "acme");
        assert_eq!(
            event["context"],
            json!({
                "request_id": request_id,
                "client_ip": "203.0.113.7",
                "user_agent": "audit-test/1.0",
            }),
            "{event}"
        );
    }
    assert_eq!(
        (&data[0]["key_id"], &data[0]["successor_id"]),
        (&successor_id, &Value::Null)
    );
    assert_eq!(
        (&data[1]["key_id"], &data[1]["successor_id"]),
        (&created_id, &successor_id)
    );
    assert_eq!(data[1]["key_name"], "CI");
    assert_eq!(data[1]["scopes"], json!(["scans:read"]));
    assert_eq!(&data[2]["key_id"], &created_id);
    // The keys seeded before: created by no one through the API.
    assert!(
        data[3..]
            .iter()
            .all(|e| e["type"] == "key.created" && e["actor"] == json!({ "type": "system" }))
    );
    assert_eq!(page["next_cursor"], Value::Null);

    // An app-defined admin names itself; the request fills in the context.
    let by_user = post("/dashboard/api-keys", r#"{"name":"from the dashboard"}"#)
        .signed_in("owner@acme.test", "acme")
        .header("x-request-id", "req-dashboard");
    assert_eq!(send(by_user).await.status, 201);
    let newest = &send(get(&format!("{events}?limit=1")).key(&f.acme_admin))
        .await
        .json()["data"][0];
    assert_eq!(
        newest["actor"],
        json!({ "type": "user", "id": "owner@acme.test" })
    );
    assert_eq!(
        newest["context"],
        json!({ "request_id": "req-dashboard", "client_ip": null, "user_agent": null })
    );

    // One at a time, following next_cursor, gives the same list.
    let everything = send(get(events).key(&f.acme_admin)).await.json()["data"].clone();
    let mut paged = Vec::new();
    let mut uri = format!("{events}?limit=1");
    loop {
        let page = send(get(&uri).key(&f.acme_admin)).await.json();
        assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
        paged.push(page["data"][0].clone());
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("{events}?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(Value::Array(paged), everything);

    for (query, status) in [
        ("cursor=nope", 422),
        ("cursor=00000000-0000-4000-8000-000000000000", 422),
        ("limit=0", 422),
        ("limit=101", 422),
        ("limit=x", 400),
    ] {
        let answer = send(get(&format!("{events}?{query}")).key(&f.acme_admin)).await;
        assert_eq!(answer.status, status, "{query}: {}", answer.body);
        assert_eq!(answer.json()["error"], "invalid_request", "{query}");
    }

    // Another team sees none of it, with or without acme's cursor.
    let acme_cursor = everything[0]["id"].as_str().unwrap().to_owned();
    for uri in [events.to_owned(), format!("{events}?cursor={acme_cursor}")] {
        let globex = send(get(&uri).key(&f.globex_admin)).await;
        assert_eq!(globex.status, 200, "{}", globex.body);
        let data = globex.json()["data"].clone();
        assert!(
            data.as_array().unwrap().iter().all(|e| e["team_id"] == "globex"),
            "{data}"
        );
        assert!(!globex.body.contains(&f.acme_admin_id), "{uri}");
        assert!(!globex.body.contains(created_id.as_str().unwrap()), "{uri}");
    }

    // "events" is no key: DELETE on it is the 404 of any other non-key id.
    let not_found = send(delete(events).key(&f.acme_admin)).await;
    assert_eq!(
        not_found,
        send(delete(&format!("{keys}/not-a-key")).key(&f.acme_admin)).await
    );
    assert_eq!(not_found.status, 404);
    assert_eq!(not_found.json()["error"], "not_found");
    // An id that is no text once decoded is no key's either: the same 404,
    // JSON, never the framework's plain-text rejection.
    assert_eq!(
        not_found,
        send(delete(&format!("{keys}/%FF")).key(&f.acme_admin)).await
    );
    let rotated = send(post(&format!("{keys}/%FF/rotate"), "{}").key(&f.acme_admin)).await;
    assert_eq!(
        (rotated.status, rotated.json()["error"].clone()),
        (404, "not_found".into())
    );
    assert_eq!(
        send(post(&format!("{events}/rotate"), "{}").key(&f.acme_admin))
            .await
            .status,
        404
    );
    // Reading events takes a key with keys:manage, like every management route.
    assert_eq!(send(get(events)).await.body, UNAUTHORIZED);
    let plain = send(get(events).key(&f.acme_plain)).await;
    assert_eq!(plain.status, 403);
    assert_eq!(plain.json()["required_scope"], "keys:manage");
}

/// A store that keeps no events answers 501 on the events route; the
/// changes still work.
async fn a_store_without_events(f: &Fixture, send: impl AsyncFn(Req) -> Answer) {
    let events = send(get("/api/v1/api-keys/events").key(&f.acme_admin)).await;
    assert_eq!(events.status, 501, "{}", events.body);
    assert_eq!(events.json()["error"], "not_implemented");
    let created = send(post("/api/v1/api-keys", r#"{"name":"CI"}"#).key(&f.acme_admin)).await;
    assert_eq!(created.status, 201, "{}", created.body);
}

/// With client IPs recorded: the peer address, or the app's `ClientIp`,
/// never `X-Forwarded-For`; by the guard and by the extractor alike.
async fn last_used_ips(f: &Fixture, send: impl AsyncFn(Req) -> Answer) {
    let scans = get("/api/v1/scans")
        .key(&f.acme_plain)
        .header("x-forwarded-for", "198.51.100.1")
        .from("203.0.113.7:50000");
    assert_eq!(send(scans).await.status, 200);
    assert_eq!(
        f.last_used_ip(&f.acme_plain).await.as_deref(),
        Some("203.0.113.7")
    );

    f.clock.advance(Duration::seconds(1));
    let mapped = get("/whoami")
        .key(&f.acme_plain)
        .from("[::ffff:203.0.113.8]:50000");
    assert_eq!(send(mapped).await.status, 200);
    assert_eq!(
        f.last_used_ip(&f.acme_plain).await.as_deref(),
        Some("203.0.113.8")
    );

    // The test app's proxy middleware sets `ClientIp` from `x-real-ip`.
    f.clock.advance(Duration::seconds(1));
    let proxied = get("/api/v1/scans")
        .key(&f.acme_plain)
        .header("x-real-ip", "192.0.2.44")
        .from("10.0.0.2:50000");
    assert_eq!(send(proxied).await.status, 200);
    assert_eq!(f.last_used_ip(&f.acme_plain).await.as_deref(), Some("192.0.2.44"));

    // The key table shows it.
    let listed = send(get("/api/v1/api-keys").key(&f.acme_admin)).await.json();
    let row = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "seeded" && k["scopes"] == json!([]))
        .unwrap()
        .clone();
    assert_eq!(row["last_used_ip"], "192.0.2.44");
}

/// Without `record_client_ips`, no address is kept or shown.
async fn no_ips_unless_asked(f: &Fixture, send: impl AsyncFn(Req) -> Answer) {
    let scans = get("/api/v1/scans").key(&f.acme_plain).from("203.0.113.7:50000");
    assert_eq!(send(scans).await.status, 200);
    assert_eq!(f.last_used_ip(&f.acme_plain).await, None);
    let listed = send(get("/api/v1/api-keys").key(&f.acme_admin)).await;
    assert!(!listed.body.contains("last_used_ip"), "{}", listed.body);
    assert!(!listed.body.contains("203.0.113.7"), "{}", listed.body);
}

/// A `MemoryStore` that keeps no events: a custom store from before them.
struct NoEvents(MemoryStore);

#[teamkey_core::async_trait]
impl KeyStore for NoEvents {
    async fn insert(&self, record: &KeyRecord, event: &KeyEvent) -> Result<(), StoreError> {
        self.0.insert(record, event).await
    }
    async fn get(&self, key_id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        self.0.get(key_id).await
    }
    async fn list(&self, team_id: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
        self.0.list(team_id).await
    }
    async fn revoke(&self, event: &KeyEvent) -> Result<bool, StoreError> {
        self.0.revoke(event).await
    }
    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        self.0.rotate(rotation).await
    }
    async fn record_last_used(&self, uses: &[KeyUse]) -> Result<(), StoreError> {
        self.0.record_last_used(uses).await
    }
}
