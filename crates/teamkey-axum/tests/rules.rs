//! The layer, the extractor and their header rules, in process.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, FromRef};
use axum::http::{Method, Request, StatusCode};
use axum::routing::{any, get};
use http_body_util::BodyExt;
use teamkey_axum::{Authenticated, RequireApiKey, RequireScope};
use teamkey_core::test_kit::{CountingStore, UnavailableStore};
use teamkey_core::{CreateOptions, HeaderRules, KeyManager, MemoryStore, Principal, Scopes, TeamId};
use tower::ServiceExt;

async fn manager_with_key(scopes: &[&str]) -> (KeyManager, String) {
    let keys = KeyManager::new(MemoryStore::new());
    let options = CreateOptions::new().scopes(Scopes::new(scopes).unwrap());
    let made = keys
        .create(&TeamId::new("acme").unwrap(), "test", options)
        .await
        .unwrap();
    (keys, made.key.expose_secret().to_owned())
}

async fn call(app: &Router, method: Method, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri("/");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// A router whose handler counts its calls and echoes the layer's principal.
fn guarded(keys: KeyManager, rules: HeaderRules, calls: Arc<AtomicUsize>) -> Router {
    let handler = move |Extension(principal): Extension<Principal>| {
        let calls = Arc::clone(&calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            principal.team_id().to_string()
        }
    };
    Router::new()
        .route("/", get(handler).options(|| async { StatusCode::NO_CONTENT }))
        .layer(RequireApiKey::new(keys).rules(rules))
}

#[tokio::test]
async fn the_layer_keeps_bad_keys_away_from_handlers() {
    let (keys, key) = manager_with_key(&[]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let app = guarded(keys, HeaderRules::default(), Arc::clone(&calls));
    for headers in [
        vec![],
        vec![("x-api-key", "nope")],
        vec![("x-api-key", key.as_str()), ("x-api-key", key.as_str())],
    ] {
        let (status, _) = call(&app, Method::GET, &headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the handler never ran for a bad key"
    );
    let (status, body) = call(&app, Method::GET, &[("x-api-key", &key)]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "acme"),
        "principal in extensions"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn behind_the_layer_the_extractor_looks_nothing_up_again() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let keys = KeyManager::new(Arc::clone(&store));
    let made = keys
        .create(&TeamId::new("acme").unwrap(), "test", CreateOptions::new())
        .await
        .unwrap();
    let key = made.key.expose_secret().to_owned();
    let app = Router::new()
        .route(
            "/",
            get(|caller: Authenticated| async move { caller.team_id().to_string() }),
        )
        .layer(RequireApiKey::new(keys.clone()))
        .with_state(keys);
    let before = store.counts().get.load(Ordering::SeqCst);
    assert_eq!(
        call(&app, Method::GET, &[("x-api-key", &key)]).await,
        (StatusCode::OK, "acme".into())
    );
    assert_eq!(
        store.counts().get.load(Ordering::SeqCst) - before,
        1,
        "one lookup, by the layer"
    );
}

#[tokio::test]
async fn a_preflight_never_reaches_a_guarded_handler() {
    let (keys, key) = manager_with_key(&[]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    // `any` and a fallback take OPTIONS too: only the guard stands between
    // a preflight and the handler.
    let by_any = Router::new()
        .route("/", any(counting(&calls)))
        .layer(RequireApiKey::new(keys.clone()));
    let by_fallback = Router::new()
        .fallback(counting(&calls))
        .layer(RequireApiKey::new(keys.clone()));
    let by_options = guarded(keys, HeaderRules::default(), Arc::clone(&calls));
    let preflight = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "x-api-key"),
    ];
    for app in [&by_any, &by_fallback, &by_options] {
        let the_401 = answer(app, &[]).await;
        assert_eq!(the_401.0, StatusCode::UNAUTHORIZED);
        let refused = answer_to(app, Method::OPTIONS, &preflight).await;
        assert_eq!(refused, the_401, "a keyless preflight is the one 401");
        let (status, _) = call(app, Method::OPTIONS, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no handler ran for a preflight");
    // The guard looks at keys, not methods: OPTIONS with a key passes.
    let (status, body) = call(&by_any, Method::OPTIONS, &[("x-api-key", &key)]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ran"));
}

#[tokio::test]
async fn header_name_and_bearer_are_configurable() {
    let (keys, key) = manager_with_key(&[]).await;
    let bearer = format!("Bearer {key}");
    let custom = guarded(
        keys.clone(),
        HeaderRules::new().header("X-Team-Key").unwrap(),
        Arc::default(),
    );
    assert_eq!(
        call(&custom, Method::GET, &[("x-api-key", &key)]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&custom, Method::GET, &[("X-Team-Key", &key)]).await.0,
        StatusCode::OK
    );

    let default = guarded(keys.clone(), HeaderRules::default(), Arc::default());
    assert_eq!(
        call(&default, Method::GET, &[("authorization", &bearer)]).await.0,
        StatusCode::UNAUTHORIZED
    );

    let with_bearer = guarded(keys, HeaderRules::new().allow_bearer(true), Arc::default());
    assert_eq!(
        call(&with_bearer, Method::GET, &[("authorization", &bearer)])
            .await
            .0,
        StatusCode::OK
    );
    let both = [("authorization", bearer.as_str()), ("x-api-key", key.as_str())];
    assert_eq!(
        call(&with_bearer, Method::GET, &both).await.0,
        StatusCode::UNAUTHORIZED,
        "never two keys"
    );
}

#[tokio::test]
async fn the_length_cap_comes_before_anything_else() {
    let (keys, key) = manager_with_key(&[]).await;
    let capped = guarded(keys, HeaderRules::new().max_len(10), Arc::default());
    assert_eq!(
        call(&capped, Method::GET, &[("x-api-key", &key)]).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn scopes_are_one_line_as_a_layer_or_in_a_handler() {
    let (keys, plain) = manager_with_key(&[]).await;
    let scoped = keys
        .create(
            &TeamId::new("acme").unwrap(),
            "writer",
            CreateOptions::new().scopes(Scopes::new(["scans:write"]).unwrap()),
        )
        .await
        .unwrap();
    let writer = scoped.key.expose_secret();

    let by_layer = Router::new()
        .route("/", get(|| async { "written" }))
        .route_layer(RequireScope::new("scans:write"))
        .layer(RequireApiKey::new(keys.clone()));
    let (status, body) = call(&by_layer, Method::GET, &[("x-api-key", &plain)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains(r#""required_scope":"scans:write""#), "{body}");
    assert_eq!(
        call(&by_layer, Method::GET, &[("x-api-key", writer)]).await.0,
        StatusCode::OK
    );

    let in_handler = Router::new()
        .route(
            "/",
            get(|caller: Authenticated| async move {
                caller.require_scope("scans:write")?;
                Ok::<_, teamkey_axum::AuthRejection>("written")
            }),
        )
        .with_state(keys);
    assert_eq!(
        call(&in_handler, Method::GET, &[("x-api-key", &plain)]).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&in_handler, Method::GET, &[("x-api-key", writer)]).await.0,
        StatusCode::OK
    );
}

#[derive(Clone, FromRef)]
struct State {
    keys: KeyManager,
}

#[tokio::test]
async fn optional_auth_is_none_only_without_a_key() {
    let (keys, key) = manager_with_key(&[]).await;
    let app = Router::new()
        .route(
            "/",
            get(|caller: Option<Authenticated>| async move {
                caller.map_or("anonymous".to_owned(), |c| c.team_id().to_string())
            }),
        )
        .with_state(State { keys });
    assert_eq!(
        call(&app, Method::GET, &[]).await,
        (StatusCode::OK, "anonymous".into())
    );
    assert_eq!(
        call(&app, Method::GET, &[("x-api-key", &key)]).await,
        (StatusCode::OK, "acme".into())
    );
    assert_eq!(
        call(&app, Method::GET, &[("x-api-key", "bad")]).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_extractor_reads_header_rules_from_an_extension() {
    let (keys, key) = manager_with_key(&[]).await;
    let app = Router::new()
        .route(
            "/",
            get(|caller: Authenticated| async move { caller.team_id().to_string() }),
        )
        .layer(Extension(HeaderRules::new().header("X-Team-Key").unwrap()))
        .with_state(State { keys });
    assert_eq!(
        call(&app, Method::GET, &[("x-api-key", &key)]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, Method::GET, &[("x-team-key", &key)]).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_store_failure_is_503_never_401_or_a_pass() {
    let keys = KeyManager::new(UnavailableStore);
    let key = teamkey_core::KeyFormat::default().generate().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = guarded(keys.clone(), HeaderRules::default(), Arc::clone(&calls));
    let (status, body) = call(&app, Method::GET, &[("x-api-key", key.expose_secret())]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("unavailable"));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // Malformed keys are still 401: refused before the store is asked.
    assert_eq!(
        call(&app, Method::GET, &[("x-api-key", "garbage")]).await.0,
        StatusCode::UNAUTHORIZED
    );

    let extractor = Router::new()
        .route("/", get(|_: Authenticated| async { "never" }))
        .with_state(State { keys });
    assert_eq!(
        call(&extractor, Method::GET, &[("x-api-key", key.expose_secret())])
            .await
            .0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// Log lines written while the guard is alive (this thread only).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// A handler that counts its calls.
fn counting(calls: &Arc<AtomicUsize>) -> impl Fn() -> std::future::Ready<&'static str> + Clone + use<> {
    let calls = Arc::clone(calls);
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready("ran")
    }
}

const INTERNAL: &str = r#"{"error":"internal","message":"Internal server error."}"#;

#[tokio::test]
async fn a_scope_layer_with_no_principal_and_no_manager_is_a_loud_500_never_a_401() {
    let (keys, writer) = manager_with_key(&["scans:write"]).await;
    let logs = Logs::default();
    let _logging = logs.capture();
    let calls = Arc::new(AtomicUsize::new(0));
    // `route_layer(key).route_layer(scope)` puts the scope layer outside,
    // where no principal is in the request yet.
    let wrong_order = Router::new()
        .route("/", get(counting(&calls)))
        .route_layer(RequireApiKey::new(keys))
        .route_layer(RequireScope::new("scans:write"));
    let alone = Router::new()
        .route("/", get(counting(&calls)))
        .route_layer(RequireScope::new("scans:write"));
    for app in [wrong_order, alone] {
        for headers in [vec![("x-api-key", writer.as_str())], vec![]] {
            let (status, body) = call(&app, Method::GET, &headers).await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
                "a setup bug, not the caller's fault"
            );
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let logs = logs.text();
    assert!(
        logs.contains("ERROR")
            && logs.contains("put RequireApiKey outside RequireScope, or give RequireScope the KeyManager"),
        "the log names the fix: {logs}"
    );
}

/// Status, headers (sorted) and body: a whole answer, to compare refusals
/// byte for byte.
async fn answer(app: &Router, headers: &[(&str, &str)]) -> (StatusCode, Vec<(String, String)>, String) {
    answer_to(app, Method::GET, headers).await
}

async fn answer_to(
    app: &Router,
    method: Method,
    headers: &[(&str, &str)],
) -> (StatusCode, Vec<(String, String)>, String) {
    let mut request = Request::builder().method(method).uri("/");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let mut names: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    names.sort();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, names, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn a_scope_layer_with_the_manager_verifies_the_key_itself_in_either_order() {
    let (keys, plain) = manager_with_key(&[]).await;
    let writer = keys
        .create(
            &TeamId::new("acme").unwrap(),
            "writer",
            CreateOptions::new().scopes(Scopes::new(["scans:write"]).unwrap()),
        )
        .await
        .unwrap();
    let writer = writer.key.expose_secret();
    let calls = Arc::new(AtomicUsize::new(0));
    // The handler reads the principal the scope layer verified.
    let handler = {
        let calls = Arc::clone(&calls);
        move |Extension(principal): Extension<Principal>| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(principal.team_id().to_string())
        }
    };
    let scope = || RequireScope::new("scans:write").with_manager(keys.clone());
    let alone = Router::new()
        .route("/", get(handler.clone()))
        .route_layer(scope());
    let wrong_order = Router::new()
        .route("/", get(handler.clone()))
        .route_layer(RequireApiKey::new(keys.clone()))
        .route_layer(scope());
    let key_layer_401 = answer(
        &guarded(keys.clone(), HeaderRules::default(), Arc::default()),
        &[],
    )
    .await;
    assert_eq!(key_layer_401.0, StatusCode::UNAUTHORIZED);

    for app in [&alone, &wrong_order] {
        let (status, _, body) = answer(app, &[("x-api-key", writer)]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "acme"));
        let (status, _, body) = answer(app, &[("x-api-key", &plain)]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains(r#""required_scope":"scans:write""#), "{body}");
        for bad in [
            vec![],
            vec![("x-api-key", "nope")],
            vec![("x-api-key", &writer[..40])],
        ] {
            assert_eq!(
                answer(app, &bad).await,
                key_layer_401,
                "a bad key gets the one 401, byte for byte"
            );
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "only the writer's requests ran");

    let down = Router::new()
        .route("/", get(handler))
        .route_layer(RequireScope::new("scans:write").with_manager(KeyManager::new(UnavailableStore)));
    let key = teamkey_core::KeyFormat::default().generate().unwrap();
    let (status, _, body) = answer(&down, &[("x-api-key", key.expose_secret())]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_scope_layer_on_its_own_follows_the_header_rules() {
    let (keys, writer) = manager_with_key(&["scans:write"]).await;
    let custom = HeaderRules::new().header("X-Team-Key").unwrap();
    let by_rules = Router::new().route("/", get(|| async { "ran" })).route_layer(
        RequireScope::new("scans:write")
            .with_manager(keys.clone())
            .rules(custom.clone()),
    );
    // As for the extractor: the rules from an `Extension`, when none are given.
    let by_extension = Router::new()
        .route("/", get(|| async { "ran" }))
        .route_layer(RequireScope::new("scans:write").with_manager(keys))
        .layer(Extension(custom));
    for app in [by_rules, by_extension] {
        assert_eq!(
            call(&app, Method::GET, &[("x-api-key", &writer)]).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(&app, Method::GET, &[("x-team-key", &writer)]).await,
            (StatusCode::OK, "ran".into())
        );
    }
}

#[tokio::test]
async fn the_guard_takes_the_manager_from_the_state() {
    let (keys, key) = manager_with_key(&[]).await;
    let state = State { keys };
    let app = Router::new()
        .route(
            "/",
            get(|caller: Authenticated| async move { caller.team_id().to_string() }),
        )
        .layer(teamkey_axum::RequireApiKey::from_state(&state))
        .with_state(state.clone());
    assert_eq!(
        call(&app, Method::GET, &[("x-api-key", &key)]).await,
        (StatusCode::OK, "acme".into())
    );
    assert_eq!(call(&app, Method::GET, &[]).await.0, StatusCode::UNAUTHORIZED);
    // `with_manager` is the actix adapter's name for the same constructor.
    let by_name = Router::new()
        .route("/", get(|| async { "ran" }))
        .layer(teamkey_axum::RequireApiKey::with_manager(state.keys));
    assert_eq!(
        call(&by_name, Method::GET, &[("x-api-key", &key)]).await,
        (StatusCode::OK, "ran".into())
    );
}

#[tokio::test]
async fn maybe_authenticated_is_option_authenticated_under_the_actix_name() {
    let (keys, key) = manager_with_key(&[]).await;
    let app = Router::new()
        .route(
            "/",
            get(|teamkey_axum::MaybeAuthenticated(caller)| async move {
                caller.map_or("anonymous".to_owned(), |c| c.team_id().to_string())
            }),
        )
        .with_state(State { keys });
    assert_eq!(
        call(&app, Method::GET, &[]).await,
        (StatusCode::OK, "anonymous".into())
    );
    assert_eq!(
        call(&app, Method::GET, &[("x-api-key", &key)]).await,
        (StatusCode::OK, "acme".into())
    );
    let bad = answer(&app, &[("x-api-key", "bad")]).await;
    let the_401 = answer(
        &guarded(
            KeyManager::new(MemoryStore::new()),
            HeaderRules::default(),
            Arc::default(),
        ),
        &[],
    )
    .await;
    assert_eq!(bad, the_401, "a bad key is the one 401, never anonymous");
}

#[tokio::test]
async fn with_rules_sets_the_header_rules_of_every_extractor() {
    let (keys, key) = manager_with_key(&["keys:manage"]).await;
    let rules = || HeaderRules::new().header("X-Team-Key").unwrap();
    let state = State { keys: keys.clone() };
    let authenticated = Router::new()
        .route(
            "/",
            get(|caller: Authenticated| async move { caller.team_id().to_string() }),
        )
        .layer(teamkey_axum::with_rules(rules()))
        .with_state(state.clone());
    let maybe = Router::new()
        .route(
            "/",
            get(|teamkey_axum::MaybeAuthenticated(caller)| async move {
                caller.map_or("anonymous".to_owned(), |c| c.team_id().to_string())
            }),
        )
        .layer(teamkey_axum::with_rules(rules()))
        .with_state(state.clone());
    let manages = Router::new()
        .route(
            "/",
            get(|teamkey_axum::ManagesKeys(caller)| async move { caller.team_id().to_string() }),
        )
        .layer(teamkey_axum::with_rules(rules()))
        .with_state(state);
    let scope = Router::new()
        .route("/", get(|| async { "acme" }))
        .route_layer(RequireScope::new("keys:manage").with_manager(keys))
        .layer(teamkey_axum::with_rules(rules()));
    for app in [&authenticated, &maybe, &manages, &scope] {
        assert_eq!(
            call(app, Method::GET, &[("x-team-key", &key)]).await,
            (StatusCode::OK, "acme".into())
        );
    }
    for app in [&authenticated, &manages, &scope] {
        assert_eq!(
            call(app, Method::GET, &[("x-api-key", &key)]).await.0,
            StatusCode::UNAUTHORIZED,
            "X-API-Key is not read under these rules"
        );
    }
    assert_eq!(
        call(&maybe, Method::GET, &[("x-api-key", &key)]).await,
        (StatusCode::OK, "anonymous".into()),
        "no key in the configured header: anonymous"
    );
}

/// 0.1 code still compiles (with deprecation warnings) and works the same.
#[tokio::test]
#[allow(deprecated)]
async fn the_0_1_names_still_work() {
    use teamkey_axum::{ManagesKeys, RequireApiKeyLayer, RequireScopeLayer, management_router};
    let (keys, key) = manager_with_key(&["keys:manage"]).await;
    let app: Router = Router::new()
        .route("/", get(|| async { "ran" }))
        .route_layer(RequireScopeLayer::new("keys:manage"))
        .layer(RequireApiKeyLayer::new(keys.clone()));
    assert_eq!(
        call(&app, Method::GET, &[("x-api-key", &key)]).await,
        (StatusCode::OK, "ran".into())
    );
    let manage: Router = management_router::<_, ManagesKeys>().with_state(State { keys });
    let request = Request::get("/api-keys")
        .header("x-api-key", &key)
        .body(Body::empty())
        .unwrap();
    assert_eq!(manage.oneshot(request).await.unwrap().status(), StatusCode::OK);
}
