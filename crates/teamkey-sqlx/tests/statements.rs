//! The verify path costs exactly one SQL statement and no write; 10,000
//! verifications of one key inside one interval write last-used at most once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support {
    pub(crate) mod databases;
    pub(crate) mod statements;
}

use support::databases::{PgSchema, env_url, pg_store};
use support::statements::StatementCounter;
use teamkey_core::{CreateOptions, KeyManager, KeyStore, TeamId};
use teamkey_sqlx::SqlxStore;
use teamkey_sqlx::sqlx::sqlite::SqlitePoolOptions;

const VERIFICATIONS: usize = 10_000;

async fn assert_statement_budget(store: impl KeyStore, counter: &StatementCounter) {
    let keys = KeyManager::new(store);
    let team = TeamId::new("acme").unwrap();
    let made = keys
        .create(&team, "counted", CreateOptions::default())
        .await
        .unwrap();
    let key = made.key.expose_secret();

    let before = counter.count();
    keys.verify(key).await.unwrap();
    assert_eq!(counter.count() - before, 1, "one statement per verification");

    let before = counter.count();
    for _ in 0..VERIFICATIONS {
        keys.verify(key).await.unwrap();
    }
    assert_eq!(
        counter.count() - before,
        VERIFICATIONS,
        "exactly one statement each, and no write"
    );

    let before = counter.count();
    assert_eq!(keys.flush_last_used().await.unwrap(), 1);
    assert_eq!(
        counter.count() - before,
        1,
        "the last-used flush is one statement"
    );
    assert!(keys.list(&team).await.unwrap()[0].last_used_at.is_some());
}

#[tokio::test]
async fn verify_is_one_statement_and_last_used_is_batched() {
    let counter = StatementCounter::install();

    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let store = SqlxStore::new(pool);
    store.migrate().await.unwrap();
    assert_statement_budget(store, &counter).await;

    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let store = pg_store(options, 2).await;
    let pool = store.pool().clone();
    assert_statement_budget(store, &counter).await;
    pool.close().await;
    schema.drop().await;
}
