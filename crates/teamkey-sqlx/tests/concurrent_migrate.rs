//! Instances of a service start together: each runs `SqlxStore::migrate()`
//! on the same empty database at once, and every one must start.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support {
    pub(crate) mod databases;
}

use support::databases::{MyDatabase, PgSchema, env_url, unique};
use teamkey_sqlx::SqlxStore;
use teamkey_sqlx::sqlx::mysql::MySqlPoolOptions;
use teamkey_sqlx::sqlx::postgres::PgPoolOptions;
use teamkey_sqlx::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// How many instances start at once.
const INSTANCES: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_migrating_one_new_sqlite_file_at_once_all_start() {
    for round in 0..10 {
        let path = std::env::temp_dir().join(format!("{}.db", unique("migrate")));
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let mut starts = Vec::new();
        for _ in 0..INSTANCES {
            // A pool each, as separate processes would have.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await
                .unwrap();
            starts.push(tokio::spawn(async move { SqlxStore::new(pool).migrate().await }));
        }
        for start in starts {
            start
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_migrating_one_new_postgres_schema_at_once_all_start() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let mut starts = Vec::new();
    for _ in 0..INSTANCES {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .unwrap();
        starts.push(tokio::spawn(async move { SqlxStore::new(pool).migrate().await }));
    }
    for start in starts {
        start.await.unwrap().unwrap();
    }
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_migrating_one_new_mysql_database_at_once_all_start() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    let mut starts = Vec::new();
    for _ in 0..INSTANCES {
        let pool = MySqlPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .unwrap();
        starts.push(tokio::spawn(async move { SqlxStore::new(pool).migrate().await }));
    }
    for start in starts {
        start.await.unwrap().unwrap();
    }
    database.drop().await;
}
