//! A teamkey [`KeyStore`](teamkey_core::KeyStore) over [sqlx]: PostgreSQL,
//! SQLite and MySQL/MariaDB, one feature each (`postgres`, `sqlite`, `mysql`).
//!
//! It takes the pool your application already has, keeps an `api_keys`
//! table and its audit log `api_key_events`, and brings its own
//! migrations, tracked in their own table (`_teamkey_migrations`) so they
//! never mix with your application's.
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
//! Key tables page with one query on the `(team_id, created_at, id)`
//! index (`list_active`), and the per-team key limit is one `COUNT`
//! (`count_active`), however many revoked or expired keys a team has.
//!
//! ## Audit events
//!
//! Every change (create, rotate, revoke) writes its event to
//! `api_key_events` in the change's own transaction: both or neither. A
//! team's history pages newest first on the `(team_id, id)` index (event
//! ids are UUIDv7, so they sort by time). `key.expired` and `key.expiring`
//! carry a unique `once_key`, so that however many instances record one,
//! it is recorded once. Expiry sweeps
//! ([`KeyManager::sweep_expiring`](teamkey_core::KeyManager::sweep_expiring))
//! read an index on `expires_at`. Recording an event invalidates no cache.
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use teamkey_core::events::{Actor, EventKind, EventQuery, Origin};
//! use teamkey_core::{CreateOptions, KeyManager, TeamId};
//! use teamkey_sqlx::SqlxStore;
//!
//! let store = SqlxStore::new(sqlx::SqlitePool::connect("sqlite::memory:").await?);
//! store.migrate().await?;
//! let keys = KeyManager::new(store);
//! let team = TeamId::new("acme")?;
//! keys.on_behalf_of(Origin::new(Actor::operator("ops")))
//!     .create(&team, "CI", CreateOptions::new())
//!     .await?;
//! let events = keys.events(&team, EventQuery::newest(50)).await?;
//! assert_eq!(events[0].kind, EventKind::Created);
//! assert_eq!(events[0].actor, Actor::operator("ops"));
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```
//!
//! Times are stored with microsecond precision, in UTC, within years 1 to
//! 9999: the store refuses any other instant with a
//! [`StoreError::Backend`] before it
//! reaches the database, and a row holding one reads as that error too,
//! never as a panic.
//!
//! ## Verification cache
//!
//! [`SqlxStore::invalidations`] is the database's feed of changed keys, for
//! the core's verification cache: a cached verification runs no SQL, and a
//! change by any writer (another instance, the `teamkey` CLI, a hand-written
//! `UPDATE api_keys …`) is refused by every instance within a second.
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use teamkey_core::KeyManager;
//! use teamkey_sqlx::SqlxStore;
//!
//! let pool = sqlx::SqlitePool::connect("sqlite::memory:").await?;
//! let store = SqlxStore::new(pool);
//! store.migrate().await?;
//! let keys = KeyManager::builder(store.clone()).cache(store.invalidations()).build();
//! # assert_eq!(keys.cached_entries(), Some(0));
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```
//!
//! The migrations install triggers on `api_keys` that report every change
//! but the last-used pair (`last_used_at`, `last_used_ip`): PostgreSQL
//! sends a `NOTIFY`, which the feed `LISTEN`s for with a heartbeat every
//! 250 ms; MySQL/MariaDB and SQLite log the key id in `api_key_changes`,
//! which the feed polls every 250 ms with one indexed query. See
//! [`SqlxInvalidations`].
//!
//! A store whose tables are missing or older than this version (never
//! migrated, or not since an upgrade) answers every call with
//! `StoreError::Backend` (verification: 503) and logs, at most once a
//! minute, one `error` line saying to run [`SqlxStore::migrate`].
//!
//! [sqlx]: https://docs.rs/sqlx
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// Without a backend feature there is no store, and the helpers the backends
// share go unused: one line here instead of a dead-code warning for each.
#![cfg_attr(
    not(any(feature = "postgres", feature = "sqlite", feature = "mysql")),
    allow(dead_code, unused_macros)
)]

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use teamkey_core::StoreError;

#[macro_use]
mod common;
mod feed;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use feed::{
    DEFAULT_INTERVAL, DEFAULT_LATE_COMMITS, DEFAULT_RETENTION, DEFAULT_TIMEOUT, SqlxInvalidations,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use feed::{LISTENER_APPLICATION_NAME, NOTIFY_CHANNEL};

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
    /// Unix second of the last "not migrated" line, 0 for never; shared
    /// by clones, so that one misconfigured service logs one line a minute.
    not_migrated_logged: Arc<AtomicU64>,
}

/// Seconds between two "not migrated" lines of one store.
const MISSING_TABLE_LOG_INTERVAL_SECS: u64 = 60;

impl<DB: sqlx::Database> SqlxStore<DB> {
    /// A store over an existing pool. Run [`migrate`](Self::migrate) once
    /// (at start-up, or from the `teamkey migrate` command) before use.
    pub fn new(pool: sqlx::Pool<DB>) -> Self {
        Self {
            pool,
            not_migrated_logged: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &sqlx::Pool<DB> {
        &self.pool
    }

    /// Passes `result` through; on a missing table or column, first tells
    /// the operator what to do, in one line, at most once a minute.
    pub(crate) fn watched<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Backend(source)) = &result
            && source.is::<common::NotMigrated>()
        {
            self.log_not_migrated();
        }
        result
    }

    fn log_not_migrated(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs().max(1));
        let last = self.not_migrated_logged.load(Ordering::Relaxed);
        let due = last == 0 || now >= last.saturating_add(MISSING_TABLE_LOG_INTERVAL_SECS);
        if due
            && self
                .not_migrated_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(database = DB::NAME, "teamkey: {}", common::NOT_MIGRATED);
        }
    }
}

impl<DB: sqlx::Database> Clone for SqlxStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            not_migrated_logged: Arc::clone(&self.not_migrated_logged),
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
