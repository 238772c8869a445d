//! A store whose tables were never created, or are older than this
//! version, says what to do: one `error` line naming
//! `SqlxStore::migrate()`, for verification and management alike, while
//! every call still fails as a store failure (503).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support {
    pub(crate) mod databases;
}

use std::io::Write;
use std::sync::{Arc, Mutex};

use support::databases::{MyDatabase, PgSchema, env_url};
use teamkey_core::events::{EventKind, EventQuery, KeyEvent, Origin};
use teamkey_core::{
    CreateOptions, HashVersion, KeyFormat, KeyId, KeyManager, KeyName, KeyRecord, KeyStore, KeyUse,
    ManageError, PageRequest, Rejection, Rotation, Scopes, SecretDigest, StoreError, TeamId, VerifyError,
};
use teamkey_sqlx::SqlxStore;
use teamkey_sqlx::sqlx::mysql::MySqlPoolOptions;
use teamkey_sqlx::sqlx::postgres::PgPoolOptions;
use teamkey_sqlx::sqlx::sqlite::SqlitePoolOptions;
use teamkey_sqlx::sqlx::{self, Pool};
use time::OffsetDateTime;

const HINT: &str = "SqlxStore::migrate()";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The `ERROR` lines naming the hint since the last call.
    fn take_hints(&self) -> Vec<String> {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap());
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .filter(|line| line.contains("ERROR") && line.contains(HINT))
            .map(str::to_owned)
            .collect()
    }
}

fn assert_store_failure<T: std::fmt::Debug>(result: Result<T, ManageError>, what: &str) {
    match result {
        Err(ManageError::Store(StoreError::Backend(source))) => {
            assert!(source.to_string().contains(HINT), "{what}: {source}");
        }
        other => panic!("{what}: a store failure, got {other:?}"),
    }
}

fn record(team: &TeamId) -> KeyRecord {
    KeyRecord::new(
        KeyId::parse("unmigrated01").unwrap(),
        team.clone(),
        KeyName::new("n").unwrap(),
        "tk_live_unmigrated01…abcd",
        SecretDigest::from_bytes([0; 32]),
        HashVersion::PrefixedSha256,
        Scopes::default(),
        OffsetDateTime::now_utc(),
    )
}

/// Each call, on a store of its own, fails as a store failure and logs the
/// hint once; a burst of calls on one store logs it once.
async fn every_call_says_to_migrate<DB>(pool: Pool<DB>)
where
    DB: sqlx::Database,
    SqlxStore<DB>: KeyStore,
{
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let team = TeamId::new("acme").unwrap();
    let id = KeyId::parse("unmigrated01").unwrap();
    let key = KeyFormat::default().generate().unwrap();
    let store = || SqlxStore::new(pool.clone());
    let keys = || KeyManager::new(store());
    let one_hint = |what: &str| {
        let hints = captured.take_hints();
        assert_eq!(hints.len(), 1, "{what}: one error line, got {hints:#?}");
    };

    let err = keys().verify(key.expose_secret()).await.unwrap_err();
    assert!(matches!(err, VerifyError::Store(_)), "{err}");
    assert_eq!(err.rejection(), Rejection::Unavailable);
    one_hint("verify");

    assert_store_failure(keys().create(&team, "k", CreateOptions::new()).await, "create");
    one_hint("create");
    assert_store_failure(keys().list(&team).await, "list");
    one_hint("list");
    assert_store_failure(keys().list_page(&team, PageRequest::default()).await, "list_page");
    one_hint("list_page");
    assert_store_failure(keys().find(&team, &id).await, "find");
    one_hint("find");
    assert_store_failure(keys().revoke(&team, &id).await, "revoke");
    one_hint("revoke");
    assert_store_failure(keys().rotate(&team, &id, time::Duration::ZERO).await, "rotate");
    one_hint("rotate");

    let now = OffsetDateTime::now_utc();
    let event = |kind| KeyEvent::new(kind, now, &record(&team), &Origin::system());
    let direct = store();
    assert!(
        direct
            .insert(&record(&team), &event(EventKind::Created))
            .await
            .is_err()
    );
    one_hint("insert");
    let direct = store();
    let rotation = Rotation::new(team.clone(), id, now, record(&team), event(EventKind::Rotated));
    assert!(direct.rotate(&rotation).await.is_err());
    one_hint("store rotate");
    let direct = store();
    let uses = [KeyUse::new(id, now)];
    assert!(direct.record_last_used(&uses).await.is_err());
    one_hint("record_last_used");
    let direct = store();
    assert!(direct.append_event(&event(EventKind::Expired)).await.is_err());
    one_hint("append_event");
    assert_store_failure(keys().events(&team, EventQuery::newest(10)).await, "events");
    one_hint("events");
    let direct = store();
    assert!(
        direct
            .expiring(&teamkey_core::ExpiringQuery::new(now, now, 10))
            .await
            .is_err()
    );
    one_hint("expiring");

    // A service under load: one line, not one per request.
    let keys = keys();
    for _ in 0..50 {
        assert!(keys.verify(key.expose_secret()).await.is_err());
        assert!(keys.list(&team).await.is_err());
    }
    one_hint("a burst of calls on one store");
}

#[tokio::test]
async fn sqlite_unmigrated_store_says_to_migrate() {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    every_call_says_to_migrate(pool.clone()).await;
    let store = SqlxStore::new(pool);
    store.migrate().await.unwrap();
    assert!(
        store
            .list(&TeamId::new("acme").unwrap())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn postgres_unmigrated_store_says_to_migrate() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    every_call_says_to_migrate(pool.clone()).await;
    pool.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn mysql_unmigrated_store_says_to_migrate() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    every_call_says_to_migrate(pool.clone()).await;
    pool.close().await;
    database.drop().await;
}

/// The last migration before events: what a database upgraded by the
/// previous release holds.
const BEFORE_EVENTS: i64 = 20261215000000;

/// A store whose database the previous release migrated (no events table,
/// no lineage columns) says to migrate too, rather than failing on a
/// column it does not name; once migrated, it works.
async fn a_stale_schema_says_to_migrate<DB>(pool: Pool<DB>)
where
    DB: sqlx::Database,
    SqlxStore<DB>: KeyStore,
{
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let team = TeamId::new("acme").unwrap();
    let keys = || KeyManager::new(SqlxStore::new(pool.clone()));
    let key = KeyFormat::default().generate().unwrap();

    let err = keys().verify(key.expose_secret()).await.unwrap_err();
    match err {
        VerifyError::Store(StoreError::Backend(source)) => {
            assert!(source.to_string().contains(HINT), "verify: {source}");
        }
        other => panic!("verify: a store failure, got {other}"),
    }
    assert_store_failure(keys().create(&team, "k", CreateOptions::new()).await, "create");
    assert_store_failure(keys().list(&team).await, "list");
    assert_store_failure(keys().events(&team, EventQuery::newest(10)).await, "events");
    assert_eq!(captured.take_hints().len(), 4, "one line per store");
}

macro_rules! migrated_before_events {
    ($pool:expr, $dir:literal) => {{
        let mut migrator = sqlx::migrate!($dir);
        migrator.dangerous_set_table_name(teamkey_sqlx::MIGRATIONS_TABLE);
        migrator.run_to(BEFORE_EVENTS, &$pool).await.unwrap();
        a_stale_schema_says_to_migrate($pool.clone()).await;
        let store = SqlxStore::new($pool.clone());
        store.migrate().await.unwrap();
        let keys = KeyManager::new(store);
        let made = keys
            .create(&TeamId::new("acme").unwrap(), "k", CreateOptions::new())
            .await
            .unwrap();
        keys.verify(made.key.expose_secret()).await.unwrap();
    }};
}

#[tokio::test]
async fn sqlite_schema_before_events_says_to_migrate() {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    migrated_before_events!(pool, "./migrations/sqlite");
}

#[tokio::test]
async fn postgres_schema_before_events_says_to_migrate() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    migrated_before_events!(pool, "./migrations/postgres");
    pool.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn mysql_schema_before_events_says_to_migrate() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    migrated_before_events!(pool, "./migrations/mysql");
    pool.close().await;
    database.drop().await;
}
