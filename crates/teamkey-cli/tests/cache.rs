//! A revoke or rotation made with the `teamkey` binary reaches a running
//! service's verification cache within 1 s, through the triggers its
//! `migrate` installs: SQLite (always), PostgreSQL and MySQL/MariaDB (when
//! `TEAMKEY_TEST_POSTGRES_URL` and `TEAMKEY_TEST_MYSQL_URL` are set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::hash::{BuildHasher, RandomState};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use teamkey_core::test_kit::CountingStore;
use teamkey_core::{CreateOptions, InvalidationSource, KeyManager, KeyStore, TeamId};
use teamkey_sqlx::sqlx::{self, AssertSqlSafe};
use teamkey_sqlx::{SqlxInvalidations, SqlxStore};

/// The promise, and what the test's own loop may add to a measure.
const WITHIN: Duration = Duration::from_millis(1_100);

fn unique(label: &str) -> String {
    format!(
        "teamkey_cli_{label}_{:016x}",
        RandomState::new().hash_one(std::time::SystemTime::now())
    )
}

fn env_url(var: &str) -> Option<String> {
    let url = std::env::var(var).ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("\n*** SKIPPED: {var} is not set; this test did not touch a database. ***\n");
    }
    url
}

/// Runs `teamkey` on `url`, off the runtime's thread; fails on failure.
async fn teamkey(url: &str, args: &[&str]) -> Output {
    let (url, args): (String, Vec<String>) = (url.to_owned(), args.iter().map(|&a| a.to_owned()).collect());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_teamkey"))
            .args(&args)
            .env_remove("TEAMKEY_PREFIX")
            .env_remove("TEAMKEY_PEPPER")
            .env_remove("TEAMKEY_PEPPER_FILE")
            .env("DATABASE_URL", url)
            .output()
            .expect("run teamkey")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "teamkey failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// How long after `since` `keys` first refused `key`.
async fn refused_after(keys: &KeyManager, key: &str, since: Instant) -> Duration {
    while keys.verify(key).await.is_ok() {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "still served 10 s after the change"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    since.elapsed()
}

/// A service's cached manager over `store`; `teamkey revoke` and `teamkey
/// rotate` on `url` reach it within 1 s.
async fn cli_changes_reach_the_cache<DB>(url: &str, store: SqlxStore<DB>)
where
    DB: sqlx::Database,
    SqlxStore<DB>: KeyStore,
    SqlxInvalidations<DB>: InvalidationSource,
{
    let counted = Arc::new(CountingStore::new(store.clone()));
    let keys = KeyManager::builder(Arc::clone(&counted))
        .cache(store.invalidations())
        .build();
    let team = TeamId::new("acme").unwrap();
    let revoked = keys
        .create(&team, "revoked", CreateOptions::default())
        .await
        .unwrap();
    let rotated = keys
        .create(&team, "rotated", CreateOptions::default())
        .await
        .unwrap();
    let presented = [revoked.key.expose_secret(), rotated.key.expose_secret()];
    // Cached, once the feed has reported the creations (which forget the ids).
    let gets = || counted.counts().get.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for key in presented {
            keys.verify(key).await.unwrap();
        }
        let before = gets();
        for key in presented {
            keys.verify(key).await.unwrap();
        }
        if gets() == before {
            break;
        }
        assert!(Instant::now() < deadline, "the cache never served the keys");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    teamkey(url, &["revoke", "--team", "acme", revoked.info.id.as_str()]).await;
    let took = refused_after(&keys, presented[0], Instant::now()).await;
    eprintln!("teamkey revoke: refused after {took:?}");
    assert!(took <= WITHIN, "teamkey revoke: still served {took:?} after");

    let out = teamkey(url, &["rotate", "--team", "acme", rotated.info.id.as_str()]).await;
    let took = refused_after(&keys, presented[1], Instant::now()).await;
    eprintln!("teamkey rotate (grace 0): old key refused after {took:?}");
    assert!(
        took <= WITHIN,
        "teamkey rotate: old key still served {took:?} after"
    );
    let successor = String::from_utf8(out.stdout).unwrap();
    keys.verify(successor.trim_end())
        .await
        .expect("the successor verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cli_changes_reach_a_running_cache() {
    let path = std::env::temp_dir().join(format!("{}.db", unique("cache")));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    teamkey(&url, &["migrate"]).await;
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    cli_changes_reach_the_cache(&url, SqlxStore::new(pool.clone())).await;
    pool.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.clone().into_os_string();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cli_changes_reach_a_running_cache() {
    let Some(base) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    let schema = unique("pg");
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    teamkey(&url, &["migrate"]).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    cli_changes_reach_the_cache(&url, SqlxStore::new(pool.clone())).await;
    pool.close().await;
    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_cli_changes_reach_a_running_cache() {
    let Some(base) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let admin = sqlx::MySqlPool::connect(&base).await.unwrap();
    let database = unique("my");
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&admin)
        .await
        .unwrap();
    // The same server, the test's own database.
    let (server, _) = base.rsplit_once('/').expect("a URL with a database");
    let url = format!("{server}/{database}");
    teamkey(&url, &["migrate"]).await;
    let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
    cli_changes_reach_the_cache(&url, SqlxStore::new(pool.clone())).await;
    pool.close().await;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE {database}")))
        .execute(&admin)
        .await
        .unwrap();
}
