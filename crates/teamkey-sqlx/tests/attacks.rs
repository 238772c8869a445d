//! Review of issue 11 on the SQL stores: the expiry sweep skips keys
//! that share an expiry instant past a batch, on every database.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support {
    pub(crate) mod databases;
}

use std::sync::Arc;

use support::databases::{MyDatabase, PgSchema, env_url, my_store, pg_store, unique};
use teamkey_core::events::{EventKind, EventQuery, KeyEvent, Origin};
use teamkey_core::{
    HashVersion, KeyFormat, KeyManager, KeyName, KeyRecord, KeyStore, ManualClock, Scopes, SecretDigest,
    TeamId,
};
use teamkey_sqlx::SqlxStore;
use teamkey_sqlx::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const NOW: OffsetDateTime = datetime!(2045-01-01 0:00 UTC);

fn record(team: &TeamId, expires_at: OffsetDateTime) -> KeyRecord {
    let id = KeyFormat::default().generate().unwrap().id();
    let mut r = KeyRecord::new(
        id,
        team.clone(),
        KeyName::new("k").unwrap(),
        format!("tk_live_{id}…abcd"),
        SecretDigest::from_bytes([3; 32]),
        HashVersion::PrefixedSha256,
        Scopes::new(["scans:read"]).unwrap(),
        NOW - Duration::days(1),
    );
    r.expires_at = Some(expires_at);
    r
}

async fn all_events(store: &impl KeyStore, team: &TeamId) -> Vec<KeyEvent> {
    let mut out = Vec::new();
    let mut q = EventQuery::newest(1000);
    loop {
        let page = store.events(team, &q).await.unwrap();
        out.extend(page.iter().cloned());
        match page.last() {
            Some(l) if page.len() == 1000 => q = EventQuery::newest(1000).before(l.id),
            _ => return out,
        }
    }
}

/// 600 keys sharing one expiry instant (made by one script with one
/// `expires_at`), and 10 at other instants: every key gets its 7-day and
/// 1-day notices. `sweep_expiring` pages by `after = last expiry` over
/// `expires_at > after`, so keys past the 500th of one instant are skipped,
/// on every run.
async fn sweep_tied<S: KeyStore + Clone>(store: &S, db: &str) {
    let (spread, tied) = (TeamId::new("spread").unwrap(), TeamId::new("tied").unwrap());
    let origin = Origin::system();
    for i in 0..10i64 {
        let r = record(&spread, NOW + Duration::hours(1 + i));
        store
            .insert(&r, &KeyEvent::new(EventKind::Created, NOW, &r, &origin))
            .await
            .unwrap();
    }
    for _ in 0..600 {
        let r = record(&tied, NOW + Duration::hours(20));
        store
            .insert(&r, &KeyEvent::new(EventKind::Created, NOW, &r, &origin))
            .await
            .unwrap();
    }
    let keys = KeyManager::builder(store.clone())
        .clock(ManualClock::new(NOW))
        .build();
    let first = keys.sweep_expiring().await.unwrap();
    let second = keys.sweep_expiring().await.unwrap();
    let count = |events: Vec<KeyEvent>| events.iter().filter(|e| e.kind == EventKind::Expiring).count();
    let (s, t) = (
        count(all_events(store, &spread).await),
        count(all_events(store, &tied).await),
    );
    assert_eq!(
        (s, t),
        (20, 1_200),
        "{db}: notices (spread, tied) after two sweeps recording {first} and {second}"
    );
}

async fn run<S: KeyStore + Clone>(store: &S, db: &str) {
    sweep_tied(store, db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let path = std::env::temp_dir().join(format!("{}.db", unique("review")));
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    let store = SqlxStore::new(pool);
    store.migrate().await.unwrap();
    let store = Arc::new(store);
    run(&store, "sqlite").await;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let store = Arc::new(pg_store(options, 8).await);
    run(&store, "postgres").await;
    store.pool().close().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    let store = Arc::new(my_store(options, 8).await);
    run(&store, "mysql").await;
    store.pool().close().await;
    database.drop().await;
}
