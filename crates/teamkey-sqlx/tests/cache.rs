//! The verification cache over real databases, fed by
//! `SqlxStore::invalidations()`: whoever changes a key (another instance, a
//! plain manager as the `teamkey` CLI runs one, raw SQL), every cached
//! instance refuses it within 1 s; a lost or half-open PostgreSQL listener
//! never lets a revoked key through and the cache comes back; a cached
//! verification runs no SQL at all.
//!
//! PostgreSQL and MySQL/MariaDB run when `TEAMKEY_TEST_POSTGRES_URL` and
//! `TEAMKEY_TEST_MYSQL_URL` are set; SQLite (a file, so that two pools share
//! it) always runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support {
    pub(crate) mod databases;
    pub(crate) mod probe;
    pub(crate) mod proxy;
}

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::databases::{MyDatabase, PgSchema, env_url, my_store, pg_store, unique};
use support::probe::StatementLog;
use support::proxy::FreezingProxy;
use teamkey_core::{
    CreateOptions, InvalidationSource, KeyManager, KeyStore, NewKey, Rejection, TeamId, VerifyError,
};
use teamkey_sqlx::sqlx;
use teamkey_sqlx::sqlx::postgres::PgPoolOptions;
use teamkey_sqlx::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use teamkey_sqlx::{SqlxInvalidations, SqlxStore};

/// The promise: another writer's change is refused everywhere within 1 s.
const WITHIN: Duration = Duration::from_secs(1);
/// What the test's own loop may add to a measure: it verifies every 2 ms,
/// on a machine that may be busy with other tests.
const SLACK: Duration = Duration::from_millis(100);

fn team() -> TeamId {
    TeamId::new("acme").unwrap()
}

fn cached<DB>(store: &SqlxStore<DB>) -> KeyManager
where
    DB: sqlx::Database,
    SqlxStore<DB>: KeyStore,
    SqlxInvalidations<DB>: InvalidationSource,
{
    KeyManager::builder(store.clone())
        .cache(store.invalidations())
        .build()
}

/// Whether `keys` verified `key` from its cache: valid, and no SQL ran.
async fn is_hit(keys: &KeyManager, key: &str) -> bool {
    let (result, statements) = StatementLog::global().probe(keys.verify(key)).await;
    result.is_ok() && statements.is_empty()
}

/// Verifies `key` until `keys` serves it from its cache (its feed is up).
async fn warm(keys: &KeyManager, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_hit(keys, key).await {
        assert!(
            Instant::now() < deadline,
            "the cache never served the key: is the feed up?"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Warms every key on every instance, then again once the feeds have
/// reported the keys' creation (which forgets them, as it must: an id may
/// be cached as unknown), so that each instance serves them all from cache.
async fn warm_all(instances: &[&KeyManager], made: &[NewKey]) {
    for _ in 0..2 {
        for keys in instances {
            for made in made {
                warm(keys, made.key.expose_secret()).await;
            }
        }
        tokio::time::sleep(3 * teamkey_sqlx::DEFAULT_INTERVAL).await;
    }
    for keys in instances {
        for made in made {
            assert!(is_hit(keys, made.key.expose_secret()).await, "served from cache");
        }
    }
}

/// How long after `since` `keys` first refused `key`, as a key refusal
/// (never a 503).
async fn refused_after(keys: &KeyManager, key: &str, since: Instant) -> Duration {
    loop {
        if let Err(e) = keys.verify(key).await {
            assert_eq!(e.rejection(), Rejection::Unauthorized, "a key refusal, not {e}");
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "still served 10 s after the change"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn assert_within(what: &str, took: Duration) {
    eprintln!("{what}: refused after {took:?}");
    assert!(
        took <= WITHIN + SLACK,
        "{what}: still served {took:?} after the change"
    );
}

/// Both instances refuse `key` within 1 s of `since`.
async fn both_refuse(a: &KeyManager, b: &KeyManager, key: &str, since: Instant, what: &str) {
    let (on_a, on_b) = tokio::join!(refused_after(a, key, since), refused_after(b, key, since));
    assert_within(&format!("{what}, on A"), on_a);
    assert_within(&format!("{what}, on B"), on_b);
}

/// Raw SQL in one database's dialect, each binding one key id.
struct RawSql {
    revoke: &'static str,
    delete: &'static str,
    touch: &'static str,
}

async fn keys_named(keys: &KeyManager, names: &[&str]) -> Vec<NewKey> {
    let mut made = Vec::new();
    for name in names {
        made.push(
            keys.create(&team(), name, CreateOptions::default())
                .await
                .unwrap(),
        );
    }
    made
}

/// Two cached instances (over stores `$a` and `$b`) and every kind of
/// writer (the instance, a plain manager over `$c`, raw SQL on `$c`'s pool).
macro_rules! every_writer_reaches_both_instances {
    ($a:expr, $b:expr, $c:expr, $raw:expr) => {{
        let (a_store, b_store, c_store) = ($a, $b, $c);
        let raw_pool = c_store.pool().clone();
        let raw: RawSql = $raw;
        let a = cached(&a_store);
        let b = cached(&b_store);
        // What `teamkey revoke` and `teamkey rotate` run: a manager without
        // cache (recording client addresses, for the last-used check below).
        let plain = KeyManager::builder(c_store).record_client_ips(true).build();
        let made = keys_named(
            &plain,
            &["by-a", "by-plain", "by-sql", "rotated", "deleted", "touched"],
        )
        .await;
        let key = |i: usize| made[i].key.expose_secret();
        warm_all(&[&a, &b], &made).await;

        a.revoke(&team(), &made[0].info.id).await.unwrap();
        let since = Instant::now();
        assert!(
            matches!(a.verify(key(0)).await, Err(VerifyError::Revoked { .. })),
            "the writing instance refuses at once"
        );
        assert_within(
            "revoked by instance A, on B",
            refused_after(&b, key(0), since).await,
        );

        plain.revoke(&team(), &made[1].info.id).await.unwrap();
        both_refuse(&a, &b, key(1), Instant::now(), "revoked as the CLI does").await;

        sqlx::query(raw.revoke)
            .bind(made[2].info.id.as_str())
            .execute(&raw_pool)
            .await
            .unwrap();
        both_refuse(&a, &b, key(2), Instant::now(), "revoked by raw SQL").await;

        let successor = a
            .rotate(&team(), &made[3].info.id, time::Duration::ZERO)
            .await
            .unwrap();
        let since = Instant::now();
        assert_within(
            "rotated with grace 0 on A, old key on B",
            refused_after(&b, key(3), since).await,
        );
        b.verify(successor.key.expose_secret())
            .await
            .expect("the successor verifies on B");

        sqlx::query(raw.delete)
            .bind(made[4].info.id.as_str())
            .execute(&raw_pool)
            .await
            .unwrap();
        both_refuse(&a, &b, key(4), Instant::now(), "deleted by raw SQL").await;

        // Last-used writes (time and client address) change no
        // verification: they invalidate nothing, neither through the
        // manager's batched flush nor by hand.
        plain
            .verify_from(key(5), Some("192.0.2.1".parse().unwrap()))
            .await
            .unwrap();
        plain.flush_last_used().await.unwrap();
        sqlx::query(raw.touch)
            .bind(made[5].info.id.as_str())
            .execute(&raw_pool)
            .await
            .unwrap();
        tokio::time::sleep(4 * teamkey_sqlx::DEFAULT_INTERVAL).await;
        assert!(
            is_hit(&a, key(5)).await,
            "a last-used write invalidated A's entry"
        );
        assert!(
            is_hit(&b, key(5)).await,
            "a last-used write invalidated B's entry"
        );
        raw_pool.close().await;
    }};
}

const PG_SQL: RawSql = RawSql {
    revoke: "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
    delete: "DELETE FROM api_keys WHERE id = $1",
    touch: "UPDATE api_keys SET last_used_at = now(), last_used_ip = '192.0.2.2' WHERE id = $1",
};

const MY_SQL: RawSql = RawSql {
    revoke: "UPDATE api_keys SET revoked_at = UTC_TIMESTAMP(6) WHERE id = ?",
    delete: "DELETE FROM api_keys WHERE id = ?",
    touch: "UPDATE api_keys SET last_used_at = UTC_TIMESTAMP(6), last_used_ip = '192.0.2.2' WHERE id = ?",
};

const SQLITE_SQL: RawSql = RawSql {
    revoke: "UPDATE api_keys SET revoked_at = CAST(unixepoch('subsec') * 1000000 AS INTEGER) WHERE id = ?",
    delete: "DELETE FROM api_keys WHERE id = ?",
    touch: "UPDATE api_keys SET last_used_at = CAST(unixepoch('subsec') * 1000000 AS INTEGER), \
            last_used_ip = '192.0.2.2' WHERE id = ?",
};

/// A SQLite database file of the test's own, removed when dropped.
struct SqliteFile(PathBuf);

impl SqliteFile {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("{}.db", unique("cache"))))
    }

    /// A migrated store over a pool of its own on the file.
    async fn store(&self) -> SqlxStore<sqlx::Sqlite> {
        let options = SqliteConnectOptions::new()
            .filename(&self.0)
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .unwrap();
        let store = SqlxStore::new(pool);
        store.migrate().await.unwrap();
        store
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_every_writer_reaches_every_instance_within_a_second() {
    let file = SqliteFile::new();
    every_writer_reaches_both_instances!(
        file.store().await,
        file.store().await,
        file.store().await,
        SQLITE_SQL
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_writer_reaches_every_instance_within_a_second() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    every_writer_reaches_both_instances!(
        pg_store(options.clone(), 4).await,
        pg_store(options.clone(), 4).await,
        pg_store(options, 2).await,
        PG_SQL
    );
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_every_writer_reaches_every_instance_within_a_second() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    every_writer_reaches_both_instances!(
        my_store(options.clone(), 4).await,
        my_store(options.clone(), 4).await,
        my_store(options, 2).await,
        MY_SQL
    );
    database.drop().await;
}

/// A transaction that wrote its change first but commits after another
/// writer's later change has been read (MySQL: its change-log seq is the
/// lower one) is still seen within 1 s; so is one left open while a new
/// instance starts.
macro_rules! late_commits_are_seen {
    ($a:expr, $b:expr, $c:expr, $raw:expr) => {{
        let (a_store, b_store, c_store) = ($a, $b, $c);
        let raw: RawSql = $raw;
        let raw_pool = c_store.pool().clone();
        let b = cached(&b_store);
        let plain = KeyManager::new(c_store);
        let made = keys_named(&plain, &["late", "early", "late-at-start", "other"]).await;
        let key = |i: usize| made[i].key.expose_secret();
        warm_all(&[&b], &made).await;

        let mut late = raw_pool.begin().await.unwrap();
        sqlx::query(raw.revoke)
            .bind(made[0].info.id.as_str())
            .execute(&mut *late)
            .await
            .unwrap();
        plain.revoke(&team(), &made[1].info.id).await.unwrap();
        assert_within(
            "the later change, committed first",
            refused_after(&b, key(1), Instant::now()).await,
        );
        // B has read past the late transaction's change by now.
        tokio::time::sleep(2 * teamkey_sqlx::DEFAULT_INTERVAL).await;
        b.verify(key(0)).await.expect("not committed yet");
        late.commit().await.unwrap();
        assert_within(
            "the earlier change, committed late",
            refused_after(&b, key(0), Instant::now()).await,
        );

        // An instance whose feed starts while a change is uncommitted.
        let mut open = raw_pool.begin().await.unwrap();
        sqlx::query(raw.revoke)
            .bind(made[2].info.id.as_str())
            .execute(&mut *open)
            .await
            .unwrap();
        plain.revoke(&team(), &made[3].info.id).await.unwrap();
        let a = cached(&a_store);
        warm(&a, key(2)).await;
        tokio::time::sleep(2 * teamkey_sqlx::DEFAULT_INTERVAL).await;
        open.commit().await.unwrap();
        assert_within(
            "a change pending when the feed started",
            refused_after(&a, key(2), Instant::now()).await,
        );
        raw_pool.close().await;
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_late_commits_are_seen() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    late_commits_are_seen!(
        my_store(options.clone(), 4).await,
        my_store(options.clone(), 4).await,
        my_store(options, 4).await,
        MY_SQL
    );
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_late_commits_are_seen() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    late_commits_are_seen!(
        pg_store(options.clone(), 4).await,
        pg_store(options.clone(), 4).await,
        pg_store(options, 4).await,
        PG_SQL
    );
    schema.drop().await;
}

/// Verifies `key` on `keys` every 5 ms for `span` after `since`; the last
/// time it was accepted, if ever.
async fn last_accepted(keys: &KeyManager, key: &str, since: Instant, span: Duration) -> Option<Duration> {
    let mut last = None;
    while since.elapsed() < span {
        if keys.verify(key).await.is_ok() {
            last = Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    last
}

fn assert_nothing_served_after_a_second(what: &str, last: Option<Duration>) {
    eprintln!("{what}: last accepted {last:?} after the revoke");
    assert!(
        last.is_none_or(|at| at <= WITHIN + SLACK),
        "{what}: the revoked key was still accepted {last:?} after the revoke"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_terminated_listener_lets_nothing_through_and_comes_back() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let a_store = pg_store(options.clone(), 4).await;
    let b_store = pg_store(options, 4).await;
    let raw_pool = a_store.pool().clone();
    let listener_name = unique("listener");
    let b = KeyManager::builder(b_store.clone())
        .cache(b_store.invalidations().application_name(&listener_name))
        .build();
    let plain = KeyManager::new(a_store);
    let made = keys_named(&plain, &["revoked", "kept"]).await;
    let (revoked, kept) = (made[0].key.expose_secret(), made[1].key.expose_secret());
    warm_all(&[&b], &made).await;

    let terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1";
    let killed: Vec<bool> = sqlx::query_scalar(terminate)
        .bind(&listener_name)
        .fetch_all(&admin)
        .await
        .unwrap();
    assert_eq!(killed, [true], "one listening connection, terminated");
    sqlx::query(PG_SQL.revoke)
        .bind(made[0].info.id.as_str())
        .execute(&raw_pool)
        .await
        .unwrap();
    let since = Instant::now();
    let last = last_accepted(&b, revoked, since, WITHIN + Duration::from_millis(500)).await;
    assert_nothing_served_after_a_second("listener terminated", last);

    // The feed listens again, and the cache serves hits again.
    warm(&b, kept).await;
    let listening: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&listener_name)
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!(listening, 1, "listening again, on one connection");
    assert!(b.verify(revoked).await.is_err());
    raw_pool.close().await;
    admin.close().await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_half_open_listener_lets_nothing_through_and_comes_back() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let proxy = FreezingProxy::start(format!("{}:{}", options.get_host(), options.get_port())).await;
    let a_store = pg_store(options.clone(), 4).await;
    let b_store = pg_store(options.clone(), 4).await;
    let raw_pool = a_store.pool().clone();
    // Only the listener goes through the proxy: the pool (and the
    // heartbeats it sends) stays healthy, the listener falls silent.
    let through_proxy = options.host("127.0.0.1").port(proxy.port);
    let b = KeyManager::builder(b_store.clone())
        .cache(b_store.invalidations().listener_options(through_proxy))
        .build();
    let plain = KeyManager::new(a_store);
    let made = keys_named(&plain, &["revoked", "kept"]).await;
    let (revoked, kept) = (made[0].key.expose_secret(), made[1].key.expose_secret());
    warm_all(&[&b], &made).await;

    proxy.freeze();
    sqlx::query(PG_SQL.revoke)
        .bind(made[0].info.id.as_str())
        .execute(&raw_pool)
        .await
        .unwrap();
    let since = Instant::now();
    let last = last_accepted(&b, revoked, since, WITHIN + Duration::from_millis(500)).await;
    assert_nothing_served_after_a_second("listener half-open", last);

    // The silent listener is given up, a new one connects, hits resume.
    warm(&b, kept).await;
    assert!(b.verify(revoked).await.is_err());
    raw_pool.close().await;
    schema.drop().await;
}

const VERIFICATIONS: usize = 10_000;

/// 10,000 verifications of a cached key run no SQL statement at all. The
/// feed's own polls and heartbeats run on its task, outside the probe.
async fn assert_cached_verifications_run_no_sql(label: &str, keys: &KeyManager) {
    let made = keys
        .create(&team(), "counted", CreateOptions::default())
        .await
        .unwrap();
    warm_all(&[keys], std::slice::from_ref(&made)).await;
    let key = made.key.expose_secret();
    let (_, statements) = StatementLog::global()
        .probe(async {
            for _ in 0..VERIFICATIONS {
                keys.verify(key).await.unwrap();
            }
        })
        .await;
    eprintln!(
        "{label}: {} SQL statements for {VERIFICATIONS} cached verifications",
        statements.len()
    );
    assert!(statements.is_empty(), "{label}: {statements:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_verifications_run_no_sql() {
    let file = SqliteFile::new();
    let store = file.store().await;
    assert_cached_verifications_run_no_sql("SQLite", &cached(&store)).await;

    if let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") {
        let (schema, options) = PgSchema::new(&url).await;
        let store = pg_store(options, 2).await;
        assert_cached_verifications_run_no_sql("PostgreSQL", &cached(&store)).await;
        schema.drop().await;
    }
    if let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") {
        let (database, options) = MyDatabase::new(&url).await;
        let store = my_store(options, 2).await;
        assert_cached_verifications_run_no_sql("MySQL", &cached(&store)).await;
        database.drop().await;
    }
}

/// `(seq_scan, idx_scan)` of the schema's api_keys, once every connection
/// of `pool` has flushed its statistics.
async fn scans(admin: &sqlx::PgPool, pool: &sqlx::PgPool, schema: &str) -> (i64, i64) {
    // Backends flush table statistics at most once a second, when idle:
    // ask each connection of the pool to flush at its next chance.
    let mut held = Vec::new();
    for _ in 0..pool.size() {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&mut *conn)
            .await
            .unwrap();
        held.push(conn);
    }
    drop(held);
    // And a little over that second, for a connection that was busy.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    sqlx::query_as(
        "SELECT COALESCE(seq_scan, 0), COALESCE(idx_scan, 0) FROM pg_stat_user_tables \
         WHERE schemaname = $1 AND relname = 'api_keys'",
    )
    .bind(schema)
    .fetch_one(admin)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cached_verifications_scan_nothing() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let schema_name = schema.name().to_owned();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let store = pg_store(options, 2).await;
    let pool = store.pool().clone();

    let mut figures = Vec::new();
    for (label, keys) in [
        ("uncached", KeyManager::new(store.clone())),
        ("cached", cached(&store)),
    ] {
        let made = keys
            .create(&team(), label, CreateOptions::default())
            .await
            .unwrap();
        if label == "cached" {
            warm_all(&[&keys], std::slice::from_ref(&made)).await;
        }
        let key = made.key.expose_secret();
        let before = scans(&admin, &pool, &schema_name).await;
        for _ in 0..VERIFICATIONS {
            keys.verify(key).await.unwrap();
        }
        let after = scans(&admin, &pool, &schema_name).await;
        let (seq, idx) = (after.0 - before.0, after.1 - before.1);
        eprintln!(
            "pg_stat_user_tables, {label}: {VERIFICATIONS} verifications, {seq} seq_scan, {idx} idx_scan \
             ({:.4} scans per verification)",
            (seq + idx) as f64 / VERIFICATIONS as f64
        );
        figures.push(seq + idx);
    }
    assert!(
        figures[0] >= VERIFICATIONS as i64,
        "uncached: one index scan each ({})",
        figures[0]
    );
    // A last-used flush may scan once; nothing per verification.
    assert!(figures[1] <= 2, "cached: {} scans", figures[1]);
    pool.close().await;
    admin.close().await;
    schema.drop().await;
}
