//! A teamkey [`KeyStore`](teamkey_core::KeyStore) over [sqlx]: PostgreSQL,
//! SQLite and MySQL/MariaDB, one feature each (`postgres`, `sqlite`, `mysql`).
//!
//! It takes the pool your application already has, keeps one `api_keys`
//! table, and brings its own migrations, tracked in their own table
//! (`_teamkey_migrations`) so they never mix with your application's.
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use teamkey_core::{CreateOptions, KeyManager, TeamId};
//! use teamkey_sqlx::SqlxStore;
//!
//! let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
//! let store = SqlxStore::new(pool);
//! store.migrate().await?;
//!
//! let keys = KeyManager::new(store);
//! let team = TeamId::new("acme")?;
//! let created = keys.create(&team, "Production", CreateOptions::default()).await?;
//! assert_eq!(keys.verify(created.key.expose_secret()).await?.team_id(), &team);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```
//!
//! Request path: one indexed point query per verification, no write.
//! Last-used times arrive in batches and are written with one statement per
//! batch (PostgreSQL: `UNNEST`; SQLite and MySQL: one `CASE` update per
//! 1,000 keys). Rotation runs in one transaction that locks the old key's
//! row (`SELECT … FOR UPDATE`; on SQLite, `BEGIN IMMEDIATE` takes the
//! database's write lock), so concurrent rotations yield one successor.
//!
//! [sqlx]: https://docs.rs/sqlx
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;

#[macro_use]
mod common;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

/// The sqlx crate, re-exported so that pools match the store's version.
pub use sqlx;
pub use sqlx::migrate::MigrateError;

/// The table teamkey's migrations are tracked in, apart from the
/// application's `_sqlx_migrations`.
pub const MIGRATIONS_TABLE: &str = "_teamkey_migrations";

/// Keys in a SQL database, through an sqlx pool. Cheap to clone.
///
/// `SqlxStore<Postgres>`, `SqlxStore<Sqlite>` and `SqlxStore<MySql>`
/// implement [`KeyStore`](teamkey_core::KeyStore); each has a `migrate`.
pub struct SqlxStore<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
}

impl<DB: sqlx::Database> SqlxStore<DB> {
    /// A store over an existing pool. Run [`migrate`](Self::migrate) once
    /// (at start-up, or from the `teamkey migrate` command) before use.
    pub fn new(pool: sqlx::Pool<DB>) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        &self.pool
    }
}

impl<DB: sqlx::Database> Clone for SqlxStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

impl<DB: sqlx::Database> fmt::Debug for SqlxStore<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlxStore")
            .field("database", &DB::NAME)
            .finish_non_exhaustive()
    }
}
