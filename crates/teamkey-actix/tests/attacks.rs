//! Attacks on rate limits over HTTP (actix) that once found a defect, kept
//! so that they stay fixed: a key limited to one request a minute gets its
//! second refused, through the guard and through the extractor alike (no
//! guard or extractor counted requests); and through a handler whose first
//! key extractor's refusal is swallowed (the others only verified the key,
//! and the handler ran).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpResponse, test, web};
use teamkey_actix::{Authenticated, MaybeAuthenticated, RequireApiKey, RequireScope};
use teamkey_core::events::KeyEvent;
use teamkey_core::test_kit::CountingStore;
use teamkey_core::time::OffsetDateTime;
use teamkey_core::{
    CreateOptions, KeyId, KeyManager, KeyRecord, KeyStore, KeyUse, LocalRateLimiter, ManualClock,
    MemoryStore, RateDecision, RateLimit, RateLimitError, RateLimiter, RotateOutcome, Rotation, Scopes,
    StoreError, TeamId,
};

#[actix_web::test]
async fn a_key_limited_to_one_a_minute_gets_429_on_its_second_request() {
    let keys = KeyManager::builder(MemoryStore::new())
        .rate_limiter(LocalRateLimiter::new())
        .build();
    let who = async |caller: Authenticated| HttpResponse::Ok().body(caller.team_id().to_string());
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(keys.clone()))
            .route("/whoami", web::get().to(who))
            .service(
                web::scope("/api")
                    .wrap(RequireApiKey::new())
                    .route("/scans", web::get().to(who)),
            ),
    )
    .await;
    let acme = TeamId::new("acme").unwrap();
    for path in ["/api/scans", "/whoami"] {
        // One quota per key: a fresh key for each path.
        let made = keys
            .create(
                &acme,
                "limited",
                CreateOptions::new().rate_limit(RateLimit::new(1, Duration::from_secs(60)).unwrap()),
            )
            .await
            .unwrap();
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let request = test::TestRequest::get()
                .uri(path)
                .append_header(("x-api-key", made.key.expose_secret()))
                .to_request();
            statuses.push(test::call_service(&app, request).await.status().as_u16());
        }
        assert_eq!(
            statuses,
            [200, 429, 429, 429, 429],
            "{path}: 5 requests of a 1/min key"
        );
    }
}

/// A limiter that answers on its second poll, as Redis would: the
/// extractor admitting the request is still waiting for it when actix
/// polls the handler's next extractor.
struct Slow(LocalRateLimiter);

#[teamkey_core::async_trait]
impl RateLimiter for Slow {
    async fn check(&self, key_id: &KeyId, limit: RateLimit) -> Result<RateDecision, RateLimitError> {
        later().await;
        self.0.check(key_id, limit).await
    }
}

/// Ready on the second poll: what a network round trip looks like to the
/// futures waiting on it.
async fn later() {
    let mut polled = false;
    std::future::poll_fn(|cx| {
        if polled {
            return Poll::Ready(());
        }
        polled = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// A manager on a manual clock (so that two keys refused at the same
/// moment get the same bytes), counting store calls, its limiter local or
/// [`Slow`].
fn manager(slow: bool) -> (KeyManager, Arc<CountingStore<MemoryStore>>) {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap());
    let limiter = LocalRateLimiter::new().clock(clock.clone());
    let builder = KeyManager::builder(Arc::clone(&store)).clock(clock);
    let keys = if slow {
        builder.rate_limiter(Slow(limiter)).build()
    } else {
        builder.rate_limiter(limiter).build()
    };
    (keys, store)
}

/// The scope of the keys [`key`] makes, which `RequireScope` routes require.
const SCOPE: &str = "scans:read";

/// A fresh key of acme, with [`SCOPE`] and `per_minute` requests a minute
/// (none: no limit).
async fn key(keys: &KeyManager, per_minute: Option<u32>) -> String {
    let acme = TeamId::new("acme").unwrap();
    let mut options = CreateOptions::new().scopes(Scopes::new([SCOPE]).unwrap());
    if let Some(n) = per_minute {
        options = options.rate_limit(RateLimit::new(n, Duration::from_secs(60)).unwrap());
    }
    let made = keys.create(&acme, "k", options).await.unwrap();
    made.key.expose_secret().to_owned()
}

/// A middleware that looks at the caller, if any (to log it, say), and
/// swallows the extractor's error: the handler's own extractor decides.
async fn peek(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let _caller = req.extract::<Authenticated>().await.ok();
    next.call(req).await
}

/// Status, headers (sorted, without `date` and `content-length`) and body.
type Sent = (u16, Vec<(String, String)>, String);

async fn send<S, B>(app: &S, path: &str, key: &str) -> Sent
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let request = test::TestRequest::get()
        .uri(path)
        .insert_header(("x-api-key", key))
        .to_request();
    let response = test::call_service(app, request).await;
    let status = response.status().as_u16();
    let mut headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(n, _)| *n != "date" && *n != "content-length")
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    let body = String::from_utf8(test::read_body(response).await.to_vec()).unwrap();
    (status, headers, body)
}

/// A handler whose first key extractor's refusal is swallowed
/// (`Result<..>`, `Option<..>`, a middleware's `.extract().ok()`) and whose
/// second is `Authenticated`: the first counted the request, and its 429
/// once stayed with it while the second only verified the key and let the
/// handler run (200 five times for a key of one request a minute). The
/// second must answer the same 429, byte for byte, as axum does; the
/// handler never runs for it.
#[actix_web::test]
async fn a_swallowed_refusal_of_the_first_extractor_is_the_second_ones_429() {
    for slow in [false, true] {
        let (keys, _) = manager(slow);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = |calls: &Arc<AtomicUsize>| {
            let calls = Arc::clone(calls);
            move |caller: Authenticated| {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::ready(HttpResponse::Ok().body(caller.team_id().to_string()))
            }
        };
        let result_calls = Arc::clone(&calls);
        let option_calls = Arc::clone(&calls);
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(keys.clone()))
                .route("/plain", web::get().to(counted(&calls)))
                .route(
                    "/result",
                    web::get().to(
                        move |_: Result<MaybeAuthenticated, actix_web::Error>, caller: Authenticated| {
                            result_calls.fetch_add(1, Ordering::SeqCst);
                            std::future::ready(HttpResponse::Ok().body(caller.team_id().to_string()))
                        },
                    ),
                )
                .route(
                    "/option",
                    web::get().to(move |_: Option<Authenticated>, caller: Authenticated| {
                        option_calls.fetch_add(1, Ordering::SeqCst);
                        std::future::ready(HttpResponse::Ok().body(caller.team_id().to_string()))
                    }),
                )
                .service(
                    web::resource("/peek")
                        .wrap(from_fn(peek))
                        .route(web::get().to(counted(&calls))),
                ),
        )
        .await;
        for path in ["/result", "/option", "/peek"] {
            let (plain, swallowed) = (key(&keys, Some(1)).await, key(&keys, Some(1)).await);
            let before = calls.load(Ordering::SeqCst);
            let mut statuses = Vec::new();
            for n in 0..5 {
                let answer = send(&app, path, &swallowed).await;
                statuses.push(answer.0);
                // A key refused at the same moment with a plain extractor:
                // the same 429, byte for byte.
                let reference = send(&app, "/plain", &plain).await;
                if n > 0 {
                    assert_eq!(
                        answer,
                        reference,
                        "{path} (slow limiter: {slow}): request {}",
                        n + 1
                    );
                }
            }
            assert_eq!(
                statuses,
                [200, 429, 429, 429, 429],
                "{path} (slow limiter: {slow}): 5 requests of a 1/min key, as on axum"
            );
            assert_eq!(
                calls.load(Ordering::SeqCst) - before,
                2,
                "{path} (slow limiter: {slow}): the handler ran once for each key"
            );
        }
    }
}

/// However many key extractors a handler has (and a peeking middleware, or
/// one with a guard behind it, in front), a request is counted once: a key of three
/// requests a minute gets three 200s and then 429s. The extractors after
/// the first take its principal: one store read per request, an unlimited
/// key's included.
#[actix_web::test]
async fn several_extractors_count_a_request_once() {
    for slow in [false, true] {
        let (keys, store) = manager(slow);
        let both = |a: Authenticated, b: Authenticated| {
            assert_eq!(a.key_id(), b.key_id());
            std::future::ready(HttpResponse::Ok().body(a.team_id().to_string()))
        };
        let three = |MaybeAuthenticated(a): MaybeAuthenticated, b: Authenticated, c: Authenticated| {
            assert_eq!(a.map(|a| a.key_id()), Some(b.key_id()));
            assert_eq!(b.key_id(), c.key_id());
            std::future::ready(HttpResponse::Ok().body(b.team_id().to_string()))
        };
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(keys.clone()))
                .route("/two", web::get().to(both))
                .route("/three", web::get().to(three))
                .service(
                    web::resource("/peek-two")
                        .wrap(from_fn(peek))
                        .route(web::get().to(both)),
                )
                .service(
                    web::resource("/peek-guarded-two")
                        .wrap(RequireApiKey::new())
                        .wrap(from_fn(peek))
                        .route(web::get().to(both)),
                )
                .service(
                    web::resource("/peek-scoped-two")
                        .wrap(RequireScope::new(SCOPE))
                        .wrap(from_fn(peek))
                        .route(web::get().to(both)),
                ),
        )
        .await;
        for path in [
            "/two",
            "/three",
            "/peek-two",
            "/peek-guarded-two",
            "/peek-scoped-two",
        ] {
            let limited = key(&keys, Some(3)).await;
            let reads = store.counts().get.load(Ordering::SeqCst);
            let mut statuses = Vec::new();
            for _ in 0..5 {
                statuses.push(send(&app, path, &limited).await.0);
            }
            assert_eq!(
                statuses,
                [200, 200, 200, 429, 429],
                "{path} (slow limiter: {slow}): 5 requests of a 3/min key"
            );
            assert_eq!(
                store.counts().get.load(Ordering::SeqCst) - reads,
                5,
                "{path} (slow limiter: {slow}): one store read per request"
            );
        }
        // No middleware: the extractors of one handler share one
        // verification of a key without a limit too.
        for path in ["/two", "/three"] {
            let unlimited = key(&keys, None).await;
            let reads = store.counts().get.load(Ordering::SeqCst);
            for _ in 0..3 {
                assert_eq!(send(&app, path, &unlimited).await.0, 200, "{path}");
            }
            assert_eq!(
                store.counts().get.load(Ordering::SeqCst) - reads,
                3,
                "{path} (slow limiter: {slow}): one store read per request of an unlimited key"
            );
        }
    }
}

/// A store whose key lookups answer on their second poll, as a database
/// would: the extractor verifying the key is still waiting for it when
/// actix polls the handler's next extractor.
struct SlowStore(Arc<CountingStore<MemoryStore>>);

#[teamkey_core::async_trait]
impl KeyStore for SlowStore {
    async fn insert(&self, record: &KeyRecord, event: &KeyEvent) -> Result<(), StoreError> {
        self.0.insert(record, event).await
    }
    async fn get(&self, key_id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        later().await;
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

/// With a store that answers later, the handler's second extractor waits
/// for the first one's verification: it takes its principal (one store
/// read per request, even for a key without a limit) or its refusal, and
/// when the first one admitted nothing (an unknown key, no key) it
/// verifies the key itself: the same 401, never a hang, never a pass.
#[actix_web::test]
async fn a_second_extractor_waits_for_the_first_ones_verification() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let keys = KeyManager::builder(SlowStore(Arc::clone(&store)))
        .rate_limiter(LocalRateLimiter::new())
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let result_calls = Arc::clone(&calls);
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(keys.clone()))
            .route(
                "/plain",
                web::get().to(|caller: Authenticated| async move { caller.team_id().to_string() }),
            )
            .route(
                "/result",
                web::get().to(
                    move |_: Result<MaybeAuthenticated, actix_web::Error>, caller: Authenticated| {
                        result_calls.fetch_add(1, Ordering::SeqCst);
                        std::future::ready(caller.team_id().to_string())
                    },
                ),
            ),
    )
    .await;
    let reads = || store.counts().get.load(Ordering::SeqCst);

    let unlimited = key(&keys, None).await;
    let before = reads();
    for _ in 0..3 {
        assert_eq!(send(&app, "/result", &unlimited).await.0, 200);
    }
    assert_eq!(reads() - before, 3, "one store read per request");

    let limited = key(&keys, Some(1)).await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(send(&app, "/result", &limited).await.0);
    }
    assert_eq!(statuses, [200, 429, 429]);

    // Well formed, but no key of this store.
    let (elsewhere, _) = manager(false);
    let unknown = key(&elsewhere, None).await;
    let refused = send(&app, "/result", &unknown).await;
    assert_eq!(refused.0, 401);
    assert_eq!(refused, send(&app, "/plain", &unknown).await, "the same 401");
    let request = test::TestRequest::get().uri("/result").to_request();
    assert_eq!(
        test::call_service(&app, request).await.status().as_u16(),
        401,
        "no key"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4, "3 unlimited, 1 limited");
}
