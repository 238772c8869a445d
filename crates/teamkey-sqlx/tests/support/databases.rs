//! Databases of a test's own: a PostgreSQL schema or a MySQL database,
//! dropped at the end, so that runs never see each other's rows.

// Shared by several test crates and a bench; each uses a part.
#![allow(dead_code)]

use std::hash::{BuildHasher, RandomState};
use std::str::FromStr;

use teamkey_sqlx::SqlxStore;
use teamkey_sqlx::sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use teamkey_sqlx::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use teamkey_sqlx::sqlx::{self, AssertSqlSafe};

/// A name no other test run uses, valid unquoted in every database.
pub(crate) fn unique(label: &str) -> String {
    format!(
        "teamkey_{label}_{:016x}",
        RandomState::new().hash_one(std::time::SystemTime::now())
    )
}

pub(crate) fn env_url(var: &str) -> Option<String> {
    let url = std::env::var(var).ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("\n*** SKIPPED: {var} is not set; this test did not touch a database. ***\n");
    }
    url
}

/// A Postgres schema of this test's own, dropped at the end.
pub(crate) struct PgSchema {
    admin: sqlx::PgPool,
    name: String,
}

impl PgSchema {
    pub(crate) async fn new(url: &str) -> (Self, PgConnectOptions) {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .expect("connect to Postgres");
        let name = unique("pg");
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&admin)
            .await
            .unwrap();
        let options = PgConnectOptions::from_str(url)
            .unwrap()
            .options([("search_path", name.as_str())]);
        (Self { admin, name }, options)
    }

    /// The schema's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) async fn drop(self) {
        let sql = format!("DROP SCHEMA {} CASCADE", self.name);
        sqlx::query(AssertSqlSafe(sql))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}

/// A MySQL database of this test's own, dropped at the end.
pub(crate) struct MyDatabase {
    admin: sqlx::MySqlPool,
    name: String,
}

impl MyDatabase {
    pub(crate) async fn new(url: &str) -> (Self, MySqlConnectOptions) {
        let admin = MySqlPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .expect("connect to MySQL");
        let name = unique("my");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        let options = MySqlConnectOptions::from_str(url).unwrap().database(&name);
        (Self { admin, name }, options)
    }

    pub(crate) async fn drop(self) {
        let sql = format!("DROP DATABASE {}", self.name);
        sqlx::query(AssertSqlSafe(sql))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}

/// A migrated store over a pool of `max` connections to `options`.
pub(crate) async fn pg_store(options: PgConnectOptions, max: u32) -> SqlxStore<sqlx::Postgres> {
    let pool = PgPoolOptions::new()
        .max_connections(max)
        .connect_with(options)
        .await
        .unwrap();
    let store = SqlxStore::new(pool);
    store.migrate().await.unwrap();
    store
}

/// A migrated store over a pool of `max` connections to `options`.
pub(crate) async fn my_store(options: MySqlConnectOptions, max: u32) -> SqlxStore<sqlx::MySql> {
    let pool = MySqlPoolOptions::new()
        .max_connections(max)
        .connect_with(options)
        .await
        .unwrap();
    let store = SqlxStore::new(pool);
    store.migrate().await.unwrap();
    store
}
