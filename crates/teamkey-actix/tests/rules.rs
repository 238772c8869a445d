//! The middleware, the extractors and their header rules, in process.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::http::{Method, StatusCode};
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, test, web};
use teamkey_actix::{AuthRejection, Authenticated, MaybeAuthenticated, RequireApiKey, RequireScope};
use teamkey_core::test_kit::{CountingStore, UnavailableStore};
use teamkey_core::{CreateOptions, HeaderRules, KeyManager, MemoryStore, Principal, Scopes, TeamId};

async fn manager_with_key(scopes: &[&str]) -> (KeyManager, String) {
    let keys = KeyManager::new(MemoryStore::new());
    let options = CreateOptions::new().scopes(Scopes::new(scopes).unwrap());
    let made = keys
        .create(&TeamId::new("acme").unwrap(), "test", options)
        .await
        .unwrap();
    (keys, made.key.expose_secret().to_owned())
}

/// Sends a request; returns status and body.
macro_rules! call {
    ($app:expr, $method:expr, [$(($name:expr, $value:expr)),* $(,)?]) => {{
        let request = test::TestRequest::default().method($method).uri("/")
            $(.append_header(($name, $value)))*
            .to_request();
        let response = test::call_service(&$app, request).await;
        let status = response.status();
        let body = test::read_body(response).await;
        (status, String::from_utf8(body.to_vec()).unwrap())
    }};
}

#[actix_web::test]
async fn the_middleware_keeps_bad_keys_away_from_handlers() {
    let (keys, key) = manager_with_key(&[]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(keys))
            .wrap(RequireApiKey::new())
            .route(
                "/",
                web::get().to(move |req: HttpRequest| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let team = req
                        .extensions()
                        .get::<Principal>()
                        .map(|p| p.team_id().to_string());
                    async move { HttpResponse::Ok().body(team.unwrap_or_default()) }
                }),
            ),
    )
    .await;
    assert_eq!(call!(app, Method::GET, []).0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call!(app, Method::GET, [("x-api-key", "nope")]).0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call!(
            app,
            Method::GET,
            [("x-api-key", key.as_str()), ("x-api-key", key.as_str())]
        )
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the handler never ran for a bad key"
    );
    assert_eq!(
        call!(app, Method::GET, [("x-api-key", key.as_str())]),
        (StatusCode::OK, "acme".into())
    );
}

#[actix_web::test]
async fn behind_the_middleware_the_extractors_look_nothing_up_again() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let keys = KeyManager::new(Arc::clone(&store));
    let made = keys
        .create(&TeamId::new("acme").unwrap(), "test", CreateOptions::new())
        .await
        .unwrap();
    let key = made.key.expose_secret().to_owned();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(keys))
            .wrap(RequireApiKey::new())
            .route(
                "/",
                web::get().to(|caller: Authenticated, maybe: MaybeAuthenticated| async move {
                    let again = maybe.0.map(|c| c.team_id().to_string());
                    HttpResponse::Ok().body(format!("{} {}", caller.team_id(), again.unwrap_or_default()))
                }),
            ),
    )
    .await;
    let before = store.counts().get.load(Ordering::SeqCst);
    assert_eq!(
        call!(app, Method::GET, [("x-api-key", key.as_str())]),
        (StatusCode::OK, "acme acme".into())
    );
    assert_eq!(
        store.counts().get.load(Ordering::SeqCst) - before,
        1,
        "one lookup, by the middleware"
    );
}

#[actix_web::test]
async fn header_rules_are_configurable() {
    let (keys, key) = manager_with_key(&[]).await;
    let bearer = format!("Bearer {key}");
    let app = test::init_service(
        App::new()
            .wrap(
                RequireApiKey::with_manager(keys).rules(
                    HeaderRules::new()
                        .header("X-Team-Key")
                        .unwrap()
                        .allow_bearer(true),
                ),
            )
            .route("/", web::get().to(HttpResponse::Ok)),
    )
    .await;
    assert_eq!(
        call!(app, Method::GET, [("x-api-key", key.as_str())]).0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call!(app, Method::GET, [("x-team-key", key.as_str())]).0,
        StatusCode::OK
    );
    assert_eq!(
        call!(app, Method::GET, [("authorization", bearer.as_str())]).0,
        StatusCode::OK
    );
    let both = call!(
        app,
        Method::GET,
        [("authorization", bearer.as_str()), ("x-team-key", key.as_str())]
    );
    assert_eq!(both.0, StatusCode::UNAUTHORIZED, "never two keys");
}

#[actix_web::test]
async fn scopes_as_middleware_or_in_a_handler() {
    let (keys, plain) = manager_with_key(&[]).await;
    let writer = keys
        .create(
            &TeamId::new("acme").unwrap(),
            "writer",
            CreateOptions::new().scopes(Scopes::new(["scans:write"]).unwrap()),
        )
        .await
        .unwrap();
    let writer = writer.key.expose_secret().to_owned();
    let by_middleware = test::init_service(
        App::new()
            .app_data(web::Data::new(keys.clone()))
            .wrap(RequireScope::new("scans:write"))
            .wrap(RequireApiKey::new())
            .route("/", web::get().to(HttpResponse::Ok)),
    )
    .await;
    let (status, body) = call!(by_middleware, Method::GET, [("x-api-key", plain.as_str())]);
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains(r#""required_scope":"scans:write""#), "{body}");
    assert_eq!(
        call!(by_middleware, Method::GET, [("x-api-key", writer.as_str())]).0,
        StatusCode::OK
    );

    let in_handler = test::init_service(App::new().app_data(web::Data::new(keys)).route(
        "/",
        web::get().to(|caller: Authenticated| async move {
            caller.require_scope("scans:write")?;
            Ok::<_, AuthRejection>(HttpResponse::Ok().finish())
        }),
    ))
    .await;
    assert_eq!(
        call!(in_handler, Method::GET, [("x-api-key", plain.as_str())]).0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call!(in_handler, Method::GET, [("x-api-key", writer.as_str())]).0,
        StatusCode::OK
    );
}

#[actix_web::test]
async fn optional_auth_is_none_only_without_a_key() {
    let (keys, key) = manager_with_key(&[]).await;
    let app = test::init_service(App::new().app_data(web::Data::new(keys)).route(
        "/",
        web::get().to(|caller: MaybeAuthenticated| async move {
            HttpResponse::Ok().body(
                caller
                    .0
                    .map_or("anonymous".to_owned(), |c| c.team_id().to_string()),
            )
        }),
    ))
    .await;
    assert_eq!(call!(app, Method::GET, []), (StatusCode::OK, "anonymous".into()));
    assert_eq!(
        call!(app, Method::GET, [("x-api-key", key.as_str())]),
        (StatusCode::OK, "acme".into())
    );
    assert_eq!(
        call!(app, Method::GET, [("x-api-key", "bad")]).0,
        StatusCode::UNAUTHORIZED
    );
}

#[actix_web::test]
async fn a_store_failure_is_503_never_401_or_a_pass() {
    let key = teamkey_core::KeyFormat::default().generate().unwrap();
    let down = test::init_service(
        App::new()
            .app_data(web::Data::new(KeyManager::new(UnavailableStore)))
            .wrap(RequireApiKey::new())
            .route("/", web::get().to(HttpResponse::Ok)),
    )
    .await;
    let (status, body) = call!(down, Method::GET, [("x-api-key", key.expose_secret())]);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("unavailable"), "{body}");
    assert_eq!(
        call!(down, Method::GET, [("x-api-key", "garbage")]).0,
        StatusCode::UNAUTHORIZED
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

const INTERNAL: &str = r#"{"error":"internal","message":"Internal server error."}"#;

/// Sends a request to `uri`; returns status, headers (sorted) and body.
async fn send<S, B>(
    app: &S,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Vec<(String, String)>, String)
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let mut request = test::TestRequest::default().method(method).uri(uri);
    for (name, value) in headers {
        request = request.append_header((*name, *value));
    }
    let response = test::call_service(app, request.to_request()).await;
    let status = response.status();
    let mut names: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    names.sort();
    let body = test::read_body(response).await;
    (status, names, String::from_utf8(body.to_vec()).unwrap())
}

#[actix_web::test]
async fn no_key_manager_is_a_loud_500_never_a_503_retry_later() {
    let logs = Logs::default();
    let _logging = logs.capture();
    let key = teamkey_core::KeyFormat::default().generate().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let middleware = test::init_service(App::new().wrap(RequireApiKey::new()).route(
        "/",
        web::get().to(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            HttpResponse::Ok()
        }),
    ))
    .await;
    let extractors = test::init_service(
        App::new()
            .route(
                "/",
                web::get().to(|_: Authenticated| async { HttpResponse::Ok().finish() }),
            )
            .route(
                "/maybe",
                web::get().to(|_: MaybeAuthenticated| async { HttpResponse::Ok().finish() }),
            ),
    )
    .await;
    // With or without a key: nothing can be checked, and that is no
    // caller's fault, nor something a retry would fix.
    for headers in [vec![("x-api-key", key.expose_secret())], vec![]] {
        for (status, names, body) in [
            send(&middleware, Method::GET, "/", &headers).await,
            send(&extractors, Method::GET, "/", &headers).await,
            send(&extractors, Method::GET, "/maybe", &headers).await,
        ] {
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL)
            );
            assert!(
                names.iter().all(|(n, _)| n != "retry-after"),
                "no retry-after: {names:?}"
            );
            assert!(names.contains(&("content-type".into(), "application/json".into())));
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let logs = logs.text();
    assert!(
        logs.contains("ERROR") && logs.contains("App::app_data(web::Data::new(manager))"),
        "the log names the fix: {logs}"
    );
    assert!(logs.contains("RequireApiKey::with_manager"), "{logs}");
}

/// A handler that counts its calls and echoes the principal's team.
fn echo_team(
    calls: &Arc<AtomicUsize>,
) -> impl Fn(HttpRequest) -> std::future::Ready<HttpResponse> + Clone + 'static + use<> {
    let calls = Arc::clone(calls);
    move |req: HttpRequest| {
        calls.fetch_add(1, Ordering::SeqCst);
        let team = req
            .extensions()
            .get::<Principal>()
            .map(|p| p.team_id().to_string());
        std::future::ready(HttpResponse::Ok().body(team.unwrap_or_default()))
    }
}

async fn manager_with_writer_and_plain() -> (KeyManager, String, String) {
    let (keys, plain) = manager_with_key(&[]).await;
    let writer = keys
        .create(
            &TeamId::new("acme").unwrap(),
            "writer",
            CreateOptions::new().scopes(Scopes::new(["scans:write"]).unwrap()),
        )
        .await
        .unwrap();
    (keys, writer.key.expose_secret().to_owned(), plain)
}

#[actix_web::test]
async fn require_scope_verifies_the_key_itself_alone_or_in_the_wrong_order() {
    let (keys, writer, plain) = manager_with_writer_and_plain().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let alone = test::init_service(
        App::new()
            .app_data(web::Data::new(keys.clone()))
            .wrap(RequireScope::new("scans:write"))
            .route("/", web::get().to(echo_team(&calls))),
    )
    .await;
    // actix: the last `wrap` is the outer one, so the scope runs first here.
    let wrong_order = test::init_service(
        App::new()
            .app_data(web::Data::new(keys.clone()))
            .wrap(RequireApiKey::new())
            .wrap(RequireScope::new("scans:write"))
            .route("/", web::get().to(echo_team(&calls))),
    )
    .await;
    let key_guard = test::init_service(
        App::new()
            .wrap(RequireApiKey::with_manager(keys))
            .route("/", web::get().to(HttpResponse::Ok)),
    )
    .await;
    let the_401 = send(&key_guard, Method::GET, "/", &[]).await;
    assert_eq!(the_401.0, StatusCode::UNAUTHORIZED);

    for (status, _, body) in [
        send(&alone, Method::GET, "/", &[("x-api-key", &writer)]).await,
        send(&wrong_order, Method::GET, "/", &[("x-api-key", &writer)]).await,
    ] {
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "acme"),
            "a valid key with the scope"
        );
    }
    for app_answer in [
        send(&alone, Method::GET, "/", &[("x-api-key", &plain)]).await,
        send(&wrong_order, Method::GET, "/", &[("x-api-key", &plain)]).await,
    ] {
        assert_eq!(app_answer.0, StatusCode::FORBIDDEN);
        assert!(
            app_answer.2.contains(r#""required_scope":"scans:write""#),
            "{}",
            app_answer.2
        );
    }
    for bad in [
        vec![],
        vec![("x-api-key", "nope")],
        vec![("x-api-key", &writer[..40])],
    ] {
        assert_eq!(
            send(&alone, Method::GET, "/", &bad).await,
            the_401,
            "one 401, byte for byte"
        );
        assert_eq!(send(&wrong_order, Method::GET, "/", &bad).await, the_401);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "only the writer's requests ran");

    let key = teamkey_core::KeyFormat::default().generate().unwrap();
    let down = test::init_service(
        App::new()
            .app_data(web::Data::new(KeyManager::new(UnavailableStore)))
            .wrap(RequireScope::new("scans:write"))
            .route("/", web::get().to(echo_team(&calls))),
    )
    .await;
    let (status, _, body) = send(&down, Method::GET, "/", &[("x-api-key", key.expose_secret())]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[actix_web::test]
async fn require_scope_without_any_manager_is_a_loud_500_never_a_401() {
    let (_, writer, _) = manager_with_writer_and_plain().await;
    let logs = Logs::default();
    let _logging = logs.capture();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = test::init_service(
        App::new()
            .wrap(RequireScope::new("scans:write"))
            .route("/", web::get().to(echo_team(&calls))),
    )
    .await;
    let (status, _, body) = send(&app, Method::GET, "/", &[("x-api-key", &writer)]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let logs = logs.text();
    assert!(
        logs.contains("ERROR")
            && logs.contains("RequireScope")
            && logs.contains("App::app_data(web::Data::new(manager))"),
        "the log names the fix: {logs}"
    );
}

#[actix_web::test]
async fn require_scope_takes_its_own_manager_and_header_rules_or_the_apps() {
    let (keys, writer, _) = manager_with_writer_and_plain().await;
    let custom = || HeaderRules::new().header("X-Team-Key").unwrap();
    let given = test::init_service(
        App::new()
            .wrap(
                RequireScope::new("scans:write")
                    .with_manager(keys.clone())
                    .rules(custom()),
            )
            .route("/", web::get().to(HttpResponse::Ok)),
    )
    .await;
    // As for the extractor: the app's `HeaderRules` when none are given.
    let from_app = test::init_service(
        App::new()
            .app_data(web::Data::new(keys))
            .app_data(custom())
            .wrap(RequireScope::new("scans:write"))
            .route("/", web::get().to(HttpResponse::Ok)),
    )
    .await;
    for (name, value, status) in [
        ("x-api-key", writer.as_str(), StatusCode::UNAUTHORIZED),
        ("x-team-key", writer.as_str(), StatusCode::OK),
    ] {
        assert_eq!(
            send(&given, Method::GET, "/", &[(name, value)]).await.0,
            status,
            "{name}"
        );
        assert_eq!(
            send(&from_app, Method::GET, "/", &[(name, value)]).await.0,
            status,
            "{name}"
        );
    }
}

#[actix_web::test]
async fn a_preflight_never_reaches_a_guarded_handler() {
    let (keys, key) = manager_with_key(&[]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    // `web::route()` and the default service take OPTIONS too: only the
    // guard stands between a preflight and the handler.
    let by_route = test::init_service(
        App::new()
            .app_data(web::Data::new(keys.clone()))
            .wrap(RequireApiKey::new())
            .route("/", web::route().to(echo_team(&calls))),
    )
    .await;
    let by_default = test::init_service(
        App::new()
            .wrap(RequireApiKey::with_manager(keys))
            .default_service(web::to(echo_team(&calls))),
    )
    .await;
    let preflight = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "x-api-key"),
    ];
    let the_401 = send(&by_route, Method::GET, "/", &[]).await;
    assert_eq!(the_401.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(&by_route, Method::OPTIONS, "/", &preflight).await,
        the_401,
        "a keyless preflight is the one 401"
    );
    assert_eq!(send(&by_default, Method::OPTIONS, "/", &preflight).await, the_401);
    assert_eq!(send(&by_route, Method::OPTIONS, "/", &[]).await, the_401);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no handler ran for a preflight");
    // The guard looks at keys, not methods: OPTIONS with a key passes.
    let (status, _, body) = send(&by_route, Method::OPTIONS, "/", &[("x-api-key", &key)]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "acme"));
}

#[actix_web::test]
async fn app_data_header_rules_reach_every_extractor() {
    let (keys, key) = manager_with_key(&["keys:manage"]).await;
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(keys))
            // The rules themselves, as the crate docs say.
            .app_data(HeaderRules::new().header("X-Team-Key").unwrap())
            .route(
                "/",
                web::get().to(|caller: Authenticated| async move {
                    HttpResponse::Ok().body(caller.team_id().to_string())
                }),
            )
            .route(
                "/maybe",
                web::get().to(|caller: MaybeAuthenticated| async move {
                    HttpResponse::Ok().body(
                        caller
                            .0
                            .map_or("anonymous".to_owned(), |c| c.team_id().to_string()),
                    )
                }),
            )
            .route(
                "/manage",
                web::get().to(|caller: teamkey_actix::ManagesKeys| async move {
                    HttpResponse::Ok().body(caller.0.team_id().to_string())
                }),
            ),
    )
    .await;
    for uri in ["/", "/maybe", "/manage"] {
        let (status, _, body) = send(&app, Method::GET, uri, &[("x-team-key", &key)]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "acme"), "{uri}");
    }
    for uri in ["/", "/manage"] {
        let (status, _, _) = send(&app, Method::GET, uri, &[("x-api-key", &key)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: X-API-Key is not read");
    }
    let (status, _, body) = send(&app, Method::GET, "/maybe", &[("x-api-key", &key)]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "anonymous"));
}

/// 0.1 code still compiles (with deprecation warnings) and works the same.
#[actix_web::test]
#[allow(deprecated)]
async fn the_0_1_names_still_work() {
    use teamkey_actix::{AuthError, ManagesKeys, management_scope};
    let (keys, key) = manager_with_key(&["keys:manage"]).await;
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(keys))
            .service(management_scope::<ManagesKeys>())
            .route(
                "/",
                web::get().to(|caller: Authenticated| async move {
                    caller.require_scope("scans:write")?;
                    Ok::<_, AuthError>(HttpResponse::Ok().finish())
                }),
            ),
    )
    .await;
    let (status, _, _) = send(&app, Method::GET, "/api-keys", &[("x-api-key", &key)]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(&app, Method::GET, "/", &[("x-api-key", &key)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(AuthError::Unauthorized, AuthRejection::Unauthorized);
}
