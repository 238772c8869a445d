//! Times outside years 1 to 9999 UTC never reach a driver, and a row
//! holding one (written by hand, by another tool) reads as an error naming
//! the key, never as a panic.
//!
//! What panics without the guards, in sqlx 0.9 itself: binding an
//! `OffsetDateTime` whose UTC form is past 9999 on PostgreSQL and MySQL
//! (`to_offset` in their encoders), and decoding a PostgreSQL
//! `TIMESTAMPTZ` of `infinity` or past 9999 (unchecked addition to its
//! epoch). SQLite took such a time as an integer, and its team's key table
//! failed on every read afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support {
    pub(crate) mod databases;
}

use std::panic::{AssertUnwindSafe, catch_unwind};

use support::databases::{MyDatabase, PgSchema, env_url, my_store, pg_store};
use teamkey_core::events::{EventKind, EventQuery, KeyEvent, Origin};
use teamkey_core::{
    HashVersion, KeyId, KeyName, KeyRecord, KeyStore, KeyUse, ListQuery, RotateOutcome, Rotation, Scopes,
    SecretDigest, StoreError, TeamId,
};
use teamkey_sqlx::SqlxStore;
use teamkey_sqlx::sqlx::sqlite::SqlitePoolOptions;
use teamkey_sqlx::sqlx::{self, MySql, Postgres, Row as _};
use time::OffsetDateTime;
use time::macros::datetime;

/// 9999-12-31T23:59:59-23:59 is 10000-01-01T23:58:59Z: the expiry that
/// crashed PostgreSQL and MySQL inserts and broke SQLite key tables.
const YEAR_10000: OffsetDateTime = datetime!(9999-12-31 23:59:59 -23:59);
/// 0001-01-01T00:00+00:01 is year 0 in UTC.
const YEAR_0: OffsetDateTime = datetime!(0001-01-01 0:00 +00:01);
const FIRST: OffsetDateTime = datetime!(0001-01-01 0:00 UTC);
const LAST: OffsetDateTime = datetime!(9999-12-31 23:59:59.999999 UTC);
const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

fn team() -> TeamId {
    TeamId::new("acme").unwrap()
}

fn record(id: &str, created_at: OffsetDateTime) -> KeyRecord {
    KeyRecord::new(
        KeyId::parse(id).unwrap(),
        team(),
        KeyName::new("dated").unwrap(),
        format!("tk_live_{id}…abcd"),
        SecretDigest::from_bytes([9; 32]),
        HashVersion::PrefixedSha256,
        Scopes::default(),
        created_at,
    )
}

/// `kind` of `record` at `at`, by teamkey itself.
fn event(kind: EventKind, at: OffsetDateTime, record: &KeyRecord) -> KeyEvent {
    KeyEvent::new(kind, at, record, &Origin::system())
}

/// Inserts `record` with its `key.created` event.
async fn insert(store: &impl KeyStore, record: &KeyRecord) -> Result<(), StoreError> {
    store
        .insert(record, &event(EventKind::Created, record.created_at, record))
        .await
}

/// The rotation of `old` to `successor`, retiring at `retire_at`.
fn rotation(old: &KeyRecord, retire_at: OffsetDateTime, mut successor: KeyRecord) -> Rotation {
    successor.rotated_from = Some(old.id);
    let mut rotated = event(EventKind::Rotated, NOW, old);
    rotated.successor_id = Some(successor.id);
    Rotation::new(team(), old.id, retire_at, successor, rotated)
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    match result {
        Err(StoreError::Backend(source)) => {
            assert!(
                source.to_string().contains("outside years 1 to 9999 UTC"),
                "{what}: a clear message, got {source}"
            );
        }
        other => panic!("{what}: a backend error, got {other:?}"),
    }
}

#[test]
fn sqlx_itself_panics_binding_a_time_past_9999() {
    // What the store must never hand to sqlx: these panics are in the
    // drivers' encoders, at bind time, before any I/O.
    let pg = catch_unwind(|| sqlx::query::<Postgres>("SELECT $1").bind(YEAR_10000));
    assert!(pg.is_err(), "PostgreSQL encoding panics");
    let my = catch_unwind(|| sqlx::query::<MySql>("SELECT ?").bind(YEAR_10000));
    assert!(my.is_err(), "MySQL encoding panics");
}

/// Every write and query refuses an out-of-range time with a backend error
/// and writes nothing; years 1 and 9999 are stored exactly.
async fn bounds_hold(store: &impl KeyStore) {
    for (label, at) in [("year 10000", YEAR_10000), ("year 0", YEAR_0)] {
        let mut bad = record("badExpiry001", NOW);
        bad.expires_at = Some(at);
        assert_refused(insert(store, &bad).await, &format!("expires_at {label}"));
        assert!(store.get(&bad.id).await.unwrap().is_none(), "nothing written");
        assert_refused(
            insert(store, &record("badCreated01", at)).await,
            &format!("created_at {label}"),
        );
        let mut bad = record("badLastUse01", NOW);
        bad.last_used_at = Some(at);
        assert_refused(insert(store, &bad).await, &format!("last_used_at {label}"));
        let mut bad = record("badRevoked01", NOW);
        bad.revoked_at = Some(at);
        assert_refused(insert(store, &bad).await, &format!("revoked_at {label}"));
    }
    // The team's table still reads: nothing unreadable got in.
    assert!(store.list(&team()).await.unwrap().is_empty());

    let good = record("goodKey00001", NOW);
    insert(store, &good).await.unwrap();
    assert_refused(
        store.revoke(&event(EventKind::Revoked, YEAR_10000, &good)).await,
        "revoke",
    );
    assert_refused(
        store.record_last_used(&[KeyUse::new(good.id, YEAR_10000)]).await,
        "last used",
    );
    let mut expiring = event(EventKind::Expiring, YEAR_10000, &good);
    expiring.days_left = Some(7);
    assert_refused(store.append_event(&expiring).await, "append_event");
    assert_refused(
        store
            .expiring(&teamkey_core::ExpiringQuery::new(NOW, YEAR_10000, 10))
            .await,
        "expiring until",
    );
    assert_refused(
        store
            .expiring(&teamkey_core::ExpiringQuery::new(YEAR_0, NOW, 10))
            .await,
        "expiring after",
    );
    assert_refused(
        store
            .list_active(&team(), &ListQuery::new(YEAR_10000, None, 10))
            .await,
        "list_active now",
    );
    assert_refused(store.count_active(&team(), YEAR_0).await, "count_active now");
    let successor = record("successor001", NOW);
    let refused = rotation(&good, YEAR_10000, successor.clone());
    assert_refused(store.rotate(&refused).await, "rotate retire_at");
    let mut far_successor = successor.clone();
    far_successor.expires_at = Some(YEAR_10000);
    assert_refused(
        store.rotate(&rotation(&good, NOW, far_successor)).await,
        "rotate successor",
    );
    let mut late_event = rotation(&good, NOW, successor.clone());
    late_event.event.at = YEAR_10000;
    assert_refused(store.rotate(&late_event).await, "rotate event");
    let unchanged = store.get(&good.id).await.unwrap().unwrap();
    assert_eq!(*unchanged, good, "a refused rotation changes nothing");
    assert!(store.get(&successor.id).await.unwrap().is_none());
    assert!(
        store
            .events(&team(), &EventQuery::newest(10))
            .await
            .unwrap()
            .iter()
            .all(|e| e.kind == EventKind::Created),
        "refused changes record no event"
    );
    assert_eq!(
        store.rotate(&rotation(&good, NOW, successor)).await.unwrap(),
        RotateOutcome::Rotated
    );

    // The edges of the range, to the microsecond, in any offset.
    let mut edge = record("edgeKey00001", FIRST);
    edge.expires_at = Some(LAST.to_offset(time::macros::offset!(-23:59)));
    edge.last_used_at = Some(FIRST.to_offset(time::macros::offset!(+5:30)));
    insert(store, &edge).await.unwrap();
    let read = store.get(&edge.id).await.unwrap().unwrap();
    assert_eq!(read.created_at, FIRST);
    assert_eq!(read.expires_at, Some(LAST));
    assert_eq!(read.last_used_at, Some(FIRST));
    assert_eq!(read.expires_at.unwrap().offset(), time::UtcOffset::UTC);
}

/// A row with an unreadable time makes that key's lookups, and its team's
/// lists while it is active, fail with an error naming the key; nothing
/// panics, other keys still verify. `active` of `bad_ids` are unexpired.
async fn unreadable_rows_are_errors(store: &impl KeyStore, bad_ids: &[&str], active: usize) {
    let good = record("fineKey00001", NOW);
    insert(store, &good).await.unwrap();
    for id in bad_ids {
        let id = KeyId::parse(id).unwrap();
        match store.get(&id).await {
            Err(StoreError::Backend(source)) => {
                let message = source.to_string();
                assert!(message.contains(id.as_str()), "names the key: {message}");
            }
            other => panic!("row {id}: a backend error, got {other:?}"),
        }
    }
    assert!(store.get(&good.id).await.unwrap().is_some());
    assert!(
        store.list(&team()).await.is_err(),
        "list reads every unrevoked row"
    );
    let page = store.list_active(&team(), &ListQuery::new(NOW, None, 10)).await;
    if active > 0 {
        assert!(page.is_err());
    } else {
        assert_eq!(page.unwrap().len(), 1, "expired rows are not even read");
    }
    // Counting decodes no time: still right.
    assert_eq!(store.count_active(&team(), NOW).await.unwrap(), active + 1);
}

async fn sqlite_store() -> SqlxStore<sqlx::Sqlite> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let store = SqlxStore::new(pool);
    store.migrate().await.unwrap();
    store
}

#[tokio::test]
async fn sqlite_refuses_times_outside_the_years_it_can_read() {
    bounds_hold(&sqlite_store().await).await;
}

#[tokio::test]
async fn sqlite_rows_with_unreadable_times_are_errors() {
    let store = sqlite_store().await;
    let now = NOW.unix_timestamp() * 1_000_000;
    for (id, created_at, expires_at) in [
        // Microseconds no date has: the row that made a team's list fail for good.
        ("sqliteMax001", now, Some(i64::MAX)),
        ("sqliteMin001", i64::MIN, None),
        // Year -5000: a date, but not one teamkey writes.
        ("sqliteOld001", -220_000_000_000_000_000, None),
    ] {
        sqlx::query(
            "INSERT INTO api_keys (id, team_id, name, preview, digest, hash_version, scopes, created_at, expires_at) \
             VALUES (?, 'acme', 'bad', 'tk_live_x', zeroblob(32), 3, '', ?, ?)",
        )
        .bind(id)
        .bind(created_at)
        .bind(expires_at)
        .execute(store.pool())
        .await
        .unwrap();
    }
    unreadable_rows_are_errors(&store, &["sqliteMax001", "sqliteMin001", "sqliteOld001"], 3).await;
}

#[tokio::test]
async fn postgres_refuses_times_outside_the_years_it_can_read() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let store = pg_store(options, 2).await;
    bounds_hold(&store).await;
    store.pool().close().await;
    schema.drop().await;
}

#[tokio::test]
async fn postgres_rows_with_unreadable_times_are_errors_not_panics() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let store = pg_store(options, 2).await;

    // sqlx's own decoding of these panics: the store must not use it.
    let row = sqlx::query("SELECT 'infinity'::timestamptz AS t")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let decoded = catch_unwind(AssertUnwindSafe(|| row.try_get::<OffsetDateTime, _>("t")));
    assert!(decoded.is_err(), "sqlx panics decoding infinity");

    for (id, expires_at) in [
        ("pgInfinity01", "infinity"),
        ("pgYear10000a", "10000-01-01 00:00:00+00"),
        ("pgYear0BC001", "0001-06-01 00:00:00+00 BC"),
    ] {
        sqlx::query(
            "INSERT INTO api_keys (id, team_id, name, preview, digest, hash_version, scopes, created_at, expires_at) \
             VALUES ($1, 'acme', 'bad', 'tk_live_x', decode(repeat('00', 32), 'hex'), 3, '', now(), $2::timestamptz)",
        )
        .bind(id)
        .bind(expires_at)
        .execute(store.pool())
        .await
        .unwrap();
    }
    // The BC row has long expired: lists skip it, its own lookup fails.
    let bad = ["pgInfinity01", "pgYear10000a", "pgYear0BC001"];
    unreadable_rows_are_errors(&store, &bad, 2).await;
    store.pool().close().await;
    schema.drop().await;
}

#[tokio::test]
async fn mysql_refuses_times_outside_the_years_it_can_read() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    let store = my_store(options, 2).await;
    bounds_hold(&store).await;
    store.pool().close().await;
    database.drop().await;
}

#[tokio::test]
async fn mysql_rows_with_unreadable_times_are_errors_not_panics() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    let store = my_store(options, 2).await;
    for (id, expires_at) in [
        ("myZeroDate01", "0000-00-00 00:00:00"),
        ("myYearZero01", "0000-06-01 00:00:00"),
        ("myZeroMonth1", "2030-00-10 00:00:00"),
    ] {
        sqlx::query(
            "INSERT INTO api_keys (id, team_id, name, preview, digest, hash_version, scopes, created_at, expires_at) \
             VALUES (?, 'acme', 'bad', 'tk_live_x', UNHEX(REPEAT('00', 32)), 3, '', UTC_TIMESTAMP(6), ?)",
        )
        .bind(id)
        .bind(expires_at)
        .execute(store.pool())
        .await
        .unwrap();
    }
    // Zero dates compare below any time (expired, so lists skip them);
    // 2030-00-10 compares above now: active.
    let bad = ["myZeroDate01", "myYearZero01", "myZeroMonth1"];
    unreadable_rows_are_errors(&store, &bad, 1).await;
    store.pool().close().await;
    database.drop().await;
}
