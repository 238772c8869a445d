//! Upgrading a teamkey 0.1 database: a table made by the first migration
//! alone, holding a row exactly as 0.1 wrote it (hash version 1, SHA-256 of
//! the secret alone), then `SqlxStore::migrate()`. The old key still
//! verifies under its own prefix and no other; new keys are version 3.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support {
    pub(crate) mod databases;
}

use sha2::{Digest as _, Sha256};
use support::databases::{MyDatabase, PgSchema, env_url};
use teamkey_core::events::{EventKind, EventQuery};
use teamkey_core::{
    CreateOptions, HashVersion, KeyFormat, KeyId, KeyManager, PageRequest, TeamId, VerifyError,
};
use teamkey_sqlx::sqlx::mysql::MySqlPoolOptions;
use teamkey_sqlx::sqlx::postgres::PgPoolOptions;
use teamkey_sqlx::sqlx::sqlite::SqlitePoolOptions;
use teamkey_sqlx::sqlx::{self, AssertSqlSafe};
use teamkey_sqlx::{MIGRATIONS_TABLE, SqlxStore};
use time::OffsetDateTime;

/// The migration teamkey 0.1 shipped, and the only one it knew.
const FIRST_VERSION: i64 = 20261127000000;

/// A well-formed `tk_test` key, its id, the SHA-256 of its secret alone
/// and its preview: what 0.1 stored.
struct OldKey {
    key: String,
    id: KeyId,
    digest: Vec<u8>,
    preview: String,
}

fn old_key() -> OldKey {
    let format = KeyFormat::new("tk_test").unwrap();
    let generated = format.generate().unwrap();
    let key = generated.expose_secret().to_owned();
    let id = format.parse(&key).unwrap().key_id();
    // tk_test_ (8), the key id (12), the secret, the checksum (6).
    let secret = &key[8 + 12..key.len() - 6];
    assert_eq!(secret.len(), format.secret_len());
    let digest = Sha256::digest(secret.as_bytes()).to_vec();
    let preview = format!("tk_test_{id}…{}", &key[key.len() - 4..]);
    OldKey {
        id,
        key,
        digest,
        preview,
    }
}

/// `key` under another prefix, its checksum recomputed: well formed, so
/// only the digest check can refuse it.
fn re_prefixed(key: &str, from: &str, to: &str) -> String {
    let body = key.replacen(from, to, 1);
    let body = &body[..body.len() - 6];
    format!("{body}{:0>6}", base62::encode(crc32fast::hash(body.as_bytes())))
}

fn team() -> TeamId {
    TeamId::new("acme").unwrap()
}

/// Everything that must hold once `store` has been migrated over a 0.1 table.
async fn upgraded<S: teamkey_core::KeyStore + Clone>(store: S, old: &OldKey) {
    let test = KeyManager::builder(store.clone())
        .format(KeyFormat::new("tk_test").unwrap())
        .build();
    let live = KeyManager::new(store.clone());

    let who = test.verify(&old.key).await.expect("the 0.1 key still verifies");
    assert_eq!(who.team_id(), &team());
    assert_eq!(who.key_id(), old.id);

    let forged = re_prefixed(&old.key, "tk_test_", "tk_live_");
    assert!(live.format().parse(&forged).is_ok(), "the forgery is well formed");
    let err = live.verify(&forged).await.unwrap_err();
    assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");

    let page = test.list_page(&team(), PageRequest::default()).await.unwrap();
    assert_eq!(page.keys.len(), 1, "the old row pages through the new index");
    assert_eq!(page.keys[0].preview, old.preview);

    for keys in [&test, &live] {
        let made = keys
            .create(&team(), "after the upgrade", CreateOptions::new())
            .await
            .unwrap();
        keys.verify(made.key.expose_secret()).await.unwrap();
        let record = store.get(&made.info.id).await.unwrap().unwrap();
        assert_eq!(record.hash_version, HashVersion::PrefixedSha256);
        assert_eq!(record.hash_version.code(), 3);
    }
    let old_record = store.get(&old.id).await.unwrap().unwrap();
    assert_eq!(
        old_record.hash_version,
        HashVersion::Sha256,
        "old rows are left as they were"
    );
    assert_eq!(
        (old_record.rotated_from, old_record.last_used_ip),
        (None, None),
        "and read with the new columns empty"
    );

    // The old key rotates, with lineage and an event, like any other.
    let successor = test.rotate(&team(), &old.id, time::Duration::ZERO).await.unwrap();
    let successor = store.get(&successor.info.id).await.unwrap().unwrap();
    assert_eq!(successor.rotated_from, Some(old.id));
    let events = test.events(&team(), EventQuery::newest(10)).await.unwrap();
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::Rotated, EventKind::Created, EventKind::Created],
        "changes since the upgrade are recorded; nothing is made up for 0.1's"
    );
}

/// How many migrations teamkey's own table records.
macro_rules! applied {
    ($pool:expr) => {{
        let sql = format!("SELECT COUNT(*) FROM {MIGRATIONS_TABLE}");
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&$pool)
            .await
            .unwrap();
        count
    }};
}

/// How many migrations this version embeds.
macro_rules! embedded {
    ($dir:literal) => {
        i64::try_from(sqlx::migrate!($dir).iter().count()).unwrap()
    };
}

/// 0.1's migration alone, as 0.1 ran it: embedded, tracked in teamkey's table.
macro_rules! migrate_like_0_1 {
    ($pool:expr, $dir:literal) => {{
        let mut first = sqlx::migrate!($dir);
        first.dangerous_set_table_name(MIGRATIONS_TABLE);
        first.run_to(FIRST_VERSION, &$pool).await.unwrap();
        assert_eq!(applied!($pool), 1, "only 0.1's migration");
    }};
}

#[tokio::test]
async fn a_0_1_sqlite_database_upgrades() {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    migrate_like_0_1!(pool, "./migrations/sqlite");
    let old = old_key();
    let created_at = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000;
    // 0.1's INSERT, with times as Unix microseconds.
    sqlx::query(
        "INSERT INTO api_keys (id, team_id, name, preview, digest, hash_version, scopes, \
         created_at, last_used_at, expires_at, revoked_at, replaced_by) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(old.id.as_str())
    .bind("acme")
    .bind("made by 0.1")
    .bind(&old.preview)
    .bind(&old.digest)
    .bind(1_i16)
    .bind("scans:read")
    .bind(i64::try_from(created_at).unwrap())
    .bind(None::<i64>)
    .bind(None::<i64>)
    .bind(None::<i64>)
    .bind(None::<&str>)
    .execute(&pool)
    .await
    .unwrap();

    let store = SqlxStore::new(pool.clone());
    store.migrate().await.unwrap();
    assert_eq!(
        applied!(pool),
        embedded!("./migrations/sqlite"),
        "every migration since"
    );
    upgraded(store, &old).await;
}

#[tokio::test]
async fn a_0_1_postgres_database_upgrades() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    migrate_like_0_1!(pool, "./migrations/postgres");
    let old = old_key();
    sqlx::query(
        "INSERT INTO api_keys (id, team_id, name, preview, digest, hash_version, scopes, \
         created_at, last_used_at, expires_at, revoked_at, replaced_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(old.id.as_str())
    .bind("acme")
    .bind("made by 0.1")
    .bind(&old.preview)
    .bind(&old.digest)
    .bind(1_i16)
    .bind("scans:read")
    .bind(OffsetDateTime::now_utc())
    .bind(None::<OffsetDateTime>)
    .bind(None::<OffsetDateTime>)
    .bind(None::<OffsetDateTime>)
    .bind(None::<&str>)
    .execute(&pool)
    .await
    .unwrap();

    let store = SqlxStore::new(pool.clone());
    store.migrate().await.unwrap();
    assert_eq!(
        applied!(pool),
        embedded!("./migrations/postgres"),
        "every migration since"
    );
    upgraded(store, &old).await;
    pool.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn a_0_1_mysql_database_upgrades() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    let pool = MySqlPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    migrate_like_0_1!(pool, "./migrations/mysql");
    let old = old_key();
    // 0.1 bound its times as `OffsetDateTime`, which sqlx sends as TIMESTAMP.
    sqlx::query(
        "INSERT INTO api_keys (id, team_id, name, preview, digest, hash_version, scopes, \
         created_at, last_used_at, expires_at, revoked_at, replaced_by) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(old.id.as_str())
    .bind("acme")
    .bind("made by 0.1")
    .bind(&old.preview)
    .bind(&old.digest)
    .bind(1_i16)
    .bind("scans:read")
    .bind(OffsetDateTime::now_utc())
    .bind(None::<OffsetDateTime>)
    .bind(None::<OffsetDateTime>)
    .bind(None::<OffsetDateTime>)
    .bind(None::<&str>)
    .execute(&pool)
    .await
    .unwrap();

    let store = SqlxStore::new(pool.clone());
    store.migrate().await.unwrap();
    assert_eq!(
        applied!(pool),
        embedded!("./migrations/mysql"),
        "every migration since"
    );
    upgraded(store, &old).await;
    pool.close().await;
    database.drop().await;
}
