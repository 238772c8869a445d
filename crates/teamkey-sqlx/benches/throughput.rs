//! Verifications per second against SQLite and PostgreSQL (and MemoryStore
//! for scale), several concurrent tasks, with SQL statement counts.
//!
//! `TEAMKEY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!  cargo bench -p teamkey-sqlx --all-features --bench throughput`
//!
//! Figures go to docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: a panic is the report

#[path = "../tests/support/databases.rs"]
mod databases;
#[path = "../tests/support/statements.rs"]
mod statements;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use databases::{PgSchema, env_url, pg_store};
use statements::StatementCounter;
use teamkey_core::test_kit::CountingStore;
use teamkey_core::{CreateOptions, KeyManager, KeyStore, MemoryStore, TeamId};
use teamkey_sqlx::SqlxStore;
use teamkey_sqlx::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

const TASKS: usize = 8;

fn seconds() -> Duration {
    let secs = std::env::var("TEAMKEY_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(secs)
}

/// Runs TASKS tasks verifying one of 100 keys each round, for `seconds()`.
async fn measure<S: KeyStore>(label: &str, store: S, counter: &StatementCounter) {
    let store = Arc::new(CountingStore::new(store));
    let keys = KeyManager::new(Arc::clone(&store));
    let team = TeamId::new("bench").unwrap();
    let mut presented = Vec::new();
    for i in 0..100 {
        let made = keys
            .create(&team, &format!("key {i}"), CreateOptions::default())
            .await
            .unwrap();
        presented.push(made.key.expose_secret().to_owned());
    }
    let presented = Arc::new(presented);
    let statements_before = counter.count();
    let deadline = Instant::now() + seconds();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let (keys, presented) = (keys.clone(), Arc::clone(&presented));
        tasks.spawn(async move {
            let mut done = 0usize;
            while Instant::now() < deadline {
                let key = &presented[(t * 13 + done) % presented.len()];
                keys.verify(key).await.expect("valid key");
                done += 1;
            }
            done
        });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let statements = counter.count() - statements_before;
    let writes = store.counts().record_last_used.load(Ordering::SeqCst);
    let flush_before = counter.count();
    keys.flush_last_used().await.unwrap();
    let flush_statements = counter.count() - flush_before;
    println!(
        "{label:<28} {:>9.0} verifications/s   {total:>8} verifications   {:.3} statements/verify   \
         {writes} last-used writes during the run, {flush_statements} statement to flush them",
        total as f64 / elapsed,
        statements as f64 / total as f64,
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let counter = StatementCounter::install();
    println!(
        "{TASKS} concurrent tasks, {} s each, 2 runtime threads",
        seconds().as_secs()
    );
    runtime.block_on(async {
        measure("MemoryStore", MemoryStore::new(), &counter).await;

        let path = std::env::temp_dir().join(format!("teamkey-bench-{}.db", std::process::id()));
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
        measure("SQLite (file, WAL, pool 4)", store, &counter).await;
        pool.close().await;
        let _ = std::fs::remove_file(&path);

        let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
            return;
        };
        let (schema, options) = PgSchema::new(&url).await;
        let store = pg_store(options, 8).await;
        let pool = store.pool().clone();
        measure("PostgreSQL (loopback, pool 8)", store, &counter).await;
        pool.close().await;
        schema.drop().await;
    });
}
