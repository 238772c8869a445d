//! Instances of a service start together: each runs `SqlxStore::migrate()`
//! on the same empty database at once, and every one must start.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support {
    pub(crate) mod databases;
}

use std::future::Future;

use support::databases::{MyDatabase, PgSchema, env_url, unique};
use teamkey_sqlx::sqlx::mysql::MySqlPoolOptions;
use teamkey_sqlx::sqlx::postgres::PgPoolOptions;
use teamkey_sqlx::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use teamkey_sqlx::{MigrateError, SqlxStore};

/// How many instances start at once.
const INSTANCES: usize = 4;

/// Runs [`INSTANCES`] starts at once (each connects a pool of its own, as a
/// process would, and migrates); every one must succeed.
async fn all_start<F>(start: impl Fn() -> F)
where
    F: Future<Output = Result<(), MigrateError>> + Send + 'static,
{
    let starts: Vec<_> = (0..INSTANCES).map(|_| tokio::spawn(start())).collect();
    for (instance, started) in starts.into_iter().enumerate() {
        started
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("instance {instance}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_migrating_one_new_sqlite_file_at_once_all_start() {
    for _ in 0..10 {
        let path = std::env::temp_dir().join(format!("{}.db", unique("migrate")));
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        all_start(|| {
            let options = options.clone();
            async move {
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await?;
                SqlxStore::new(pool).migrate().await
            }
        })
        .await;
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
    all_start(|| {
        let options = options.clone();
        async move {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            SqlxStore::new(pool).migrate().await
        }
    })
    .await;
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_migrating_one_new_mysql_database_at_once_all_start() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    all_start(|| {
        let options = options.clone();
        async move {
            let pool = MySqlPoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await?;
            SqlxStore::new(pool).migrate().await
        }
    })
    .await;
    database.drop().await;
}
