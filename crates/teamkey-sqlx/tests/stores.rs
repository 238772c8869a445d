//! SqlxStore against real databases: the core conformance kit, migrations
//! that coexist with an application's, and outages.
//!
//! PostgreSQL and MySQL/MariaDB run when `TEAMKEY_TEST_POSTGRES_URL` and
//! `TEAMKEY_TEST_MYSQL_URL` are set (CI sets both); each test works in a
//! schema or database of its own. SQLite always runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support {
    pub(crate) mod databases;
}

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{MySql, Postgres};
use support::databases::{MyDatabase, PgSchema, env_url, my_store, pg_store, unique};
use teamkey_core::{CreateOptions, KeyManager, KeyStore, TeamId, VerifyError};
use teamkey_sqlx::SqlxStore;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_passes_the_conformance_kit() {
    // One connection: every connection to `:memory:` is a database of its own.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let store = SqlxStore::new(pool);
    store.migrate().await.unwrap();
    assert_full_kit(teamkey_core::test_kit::check_store(store).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_passes_the_conformance_kit() {
    let path = std::env::temp_dir().join(format!("{}.db", unique("sqlite")));
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    let store = SqlxStore::new(pool.clone());
    store.migrate().await.unwrap();
    assert_full_kit(teamkey_core::test_kit::check_store(store).await);
    pool.close().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_conformance_kit() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let store = pg_store(options, 8).await;
    let pool = store.pool().clone();
    assert_full_kit(teamkey_core::test_kit::check_store(store).await);
    pool.close().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_passes_the_conformance_kit() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    let store = my_store(options, 8).await;
    let pool = store.pool().clone();
    assert_full_kit(teamkey_core::test_kit::check_store(store).await);
    pool.close().await;
    database.drop().await;
}

/// A SQL store keeps events and sweeps expiries: the kit must have
/// checked both, not skipped them.
fn assert_full_kit(report: teamkey_core::test_kit::KitReport) {
    assert!(report.events, "the kit skipped the events");
    assert!(report.expiring, "the kit skipped the expiry sweep");
}

/// The kit's panic message on `store`, which it must reject.
async fn kit_rejection(store: impl KeyStore) -> String {
    let panic = tokio::spawn(teamkey_core::test_kit::check_store(store))
        .await
        .expect_err("the kit must reject this store")
        .into_panic();
    panic.downcast::<String>().map(|m| *m).unwrap_or_default()
}

const LOOSE_TEAMS: &str = "team ids must compare exactly";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_with_a_ci_team_column_fails_the_conformance_kit() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    let store = my_store(options, 8).await;
    let pool = store.pool().clone();
    // What a hand-written schema with the server's default collation does.
    sqlx::query(
        "ALTER TABLE api_keys MODIFY team_id VARCHAR(128) \
         CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL",
    )
    .execute(&pool)
    .await
    .unwrap();
    let message = kit_rejection(store).await;
    assert!(message.contains(LOOSE_TEAMS), "was: {message}");
    pool.close().await;
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_with_a_nondeterministic_team_collation_fails_the_conformance_kit() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let store = pg_store(options, 8).await;
    let pool = store.pool().clone();
    // Case- and accent-insensitive (ICU strength 1).
    for sql in [
        "CREATE COLLATION loose (provider = icu, locale = 'und-u-ks-level1', deterministic = false)",
        "ALTER TABLE api_keys ALTER COLUMN team_id TYPE VARCHAR(128) COLLATE loose",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let message = kit_rejection(store).await;
    assert!(message.contains(LOOSE_TEAMS), "was: {message}");
    pool.close().await;
    schema.drop().await;
}

/// The application's migrations and teamkey's, in one database, in any order.
macro_rules! assert_migrations_coexist {
    ($pool:expr, $db:ty) => {{
        let app = sqlx::migrate!("./tests/app_migrations");
        let teamkey = SqlxStore::<$db>::new($pool.clone());
        app.run(&$pool).await.expect("app migrations");
        teamkey
            .migrate()
            .await
            .expect("teamkey migrations after the app's");
        app.run(&$pool)
            .await
            .expect("app migrations again: teamkey's are not in its table");
        teamkey
            .migrate()
            .await
            .expect("teamkey migrations again: idempotent");
        sqlx::query("INSERT INTO scans (id, target) VALUES (1, 'x')")
            .execute(&$pool)
            .await
            .unwrap();
        let keys = KeyManager::new(teamkey);
        let team = TeamId::new("acme").unwrap();
        let made = keys
            .create(&team, "coexist", CreateOptions::default())
            .await
            .unwrap();
        keys.verify(made.key.expose_secret()).await.unwrap();
    }};
}

#[tokio::test]
async fn migrations_coexist_with_the_applications_on_sqlite() {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    assert_migrations_coexist!(pool, sqlx::Sqlite);
}

#[tokio::test]
async fn migrations_coexist_with_the_applications_on_postgres() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    assert_migrations_coexist!(pool, Postgres);
    pool.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn migrations_coexist_with_the_applications_on_mysql() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    assert_migrations_coexist!(pool, MySql);
    pool.close().await;
    database.drop().await;
}

/// A TCP proxy the test can cut and restore, standing in for a database
/// that goes away and comes back.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let links = Arc::new(Mutex::new(Vec::new()));
        let (up2, links2) = (Arc::clone(&up), Arc::clone(&links));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let upstream = upstream.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                links2.lock().unwrap().push(link.abort_handle());
            }
        });
        Self { port, up, links }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// With the database gone, verify is a store failure (never valid, never a
/// bad key); once it is back, the same store works again.
macro_rules! assert_outage_is_unavailable_then_recovers {
    ($store:expr, $proxy:expr) => {{
        let store = $store;
        store.migrate().await.unwrap();
        let keys = KeyManager::new(store);
        let team = TeamId::new("acme").unwrap();
        let made = keys
            .create(&team, "outage", CreateOptions::default())
            .await
            .unwrap();
        let key = made.key.expose_secret();
        keys.verify(key).await.expect("valid before the outage");

        $proxy.cut();
        for _ in 0..3 {
            let err = keys
                .verify(key)
                .await
                .expect_err("no pass while the database is down");
            assert!(matches!(err, VerifyError::Store(_)), "a store failure, not {err}");
            assert_eq!(err.rejection().http_status(), 503);
        }

        $proxy.restore();
        let mut recovered = false;
        // Up to 10 s: generous, for a loaded CI machine.
        for _ in 0..100 {
            if keys.verify(key).await.is_ok() {
                recovered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            recovered,
            "the same store must work again once the database is back"
        );
    }};
}

#[tokio::test]
async fn postgres_outage_is_unavailable_and_recovers() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let upstream = format!("{}:{}", options.get_host(), options.get_port());
    let proxy = Proxy::start(upstream).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options.host("127.0.0.1").port(proxy.port))
        .await
        .unwrap();
    assert_outage_is_unavailable_then_recovers!(SqlxStore::<Postgres>::new(pool.clone()), proxy);
    pool.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn mysql_outage_is_unavailable_and_recovers() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    let upstream = format!("{}:{}", options.get_host(), options.get_port());
    let proxy = Proxy::start(upstream).await;
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options.host("127.0.0.1").port(proxy.port))
        .await
        .unwrap();
    assert_outage_is_unavailable_then_recovers!(SqlxStore::<MySql>::new(pool.clone()), proxy);
    pool.close().await;
    database.drop().await;
}

#[tokio::test]
async fn hostile_names_and_teams_are_stored_exactly_or_refused() {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let store = SqlxStore::new(pool);
    store.migrate().await.unwrap();
    let keys = KeyManager::new(store);
    let team = TeamId::new("o'brien\"; DROP TABLE api_keys; --").unwrap();
    for name in [
        "Robert'); DROP TABLE api_keys;--",
        "100% _real_ \\ \"quoted\"",
        "🦎 Gecko 🔑",
        "  padded  ",
    ] {
        let made = keys.create(&team, name, CreateOptions::default()).await.unwrap();
        let listed = keys.list(&team).await.unwrap();
        let row = listed.iter().find(|k| k.id == made.info.id).unwrap();
        assert_eq!(row.name.as_str(), name.trim());
    }
    let huge = "x".repeat(10 * 1024);
    assert!(keys.create(&team, &huge, CreateOptions::default()).await.is_err());
    assert!(TeamId::new(&huge).is_err());
    assert_eq!(keys.list(&team).await.unwrap().len(), 4);
}
