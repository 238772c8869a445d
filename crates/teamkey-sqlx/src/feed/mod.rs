//! The database's feed of changed keys, for a verification cache: what
//! [`SqlxStore::invalidations`] returns.
//!
//! Every writer's change reaches it from the database itself (triggers, see
//! the migrations): PostgreSQL announces it with `NOTIFY`, MySQL/MariaDB and
//! SQLite log it in `api_key_changes`, which the feed polls.

use std::fmt;
use std::time::Duration;

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
use teamkey_core::{InvalidationSink, KeyId, StoreError};

use crate::SqlxStore;

#[cfg(feature = "postgres")]
mod listen;
#[cfg(any(feature = "mysql", feature = "sqlite"))]
pub(crate) mod poll;

#[cfg(feature = "postgres")]
pub use listen::{LISTENER_APPLICATION_NAME, NOTIFY_CHANNEL};

/// How often the feed proves itself by default: one heartbeat (PostgreSQL)
/// or one poll (MySQL, SQLite) every 250 ms. Another writer's change is
/// seen about this late, on average half of it.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(250);

/// How long a heartbeat may take to come back, or a poll to answer, by
/// default, before the feed counts its channel as lost: the cache's trust
/// window, past which one proof could not keep the cache trusted anyway.
pub const DEFAULT_TIMEOUT: Duration = teamkey_core::DEFAULT_TRUST_WINDOW;

/// How long, by default, a poller keeps looking for a change-log row that
/// was skipped (its transaction had not committed when later rows were
/// read). See `SqlxInvalidations::late_commits` (MySQL, SQLite).
pub const DEFAULT_LATE_COMMITS: Duration = Duration::from_secs(5 * 60);

/// How old a change-log row gets before pollers delete it, by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(15 * 60);

/// The change feed of one database, for
/// [`KeyManagerBuilder::cache`](teamkey_core::KeyManagerBuilder::cache):
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn run(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use teamkey_core::KeyManager;
/// use teamkey_sqlx::SqlxStore;
///
/// let store = SqlxStore::new(pool);
/// store.migrate().await?;
/// let keys = KeyManager::builder(store.clone()).cache(store.invalidations()).build();
/// # Ok(())
/// # }
/// ```
///
/// - PostgreSQL: a trigger sends `NOTIFY teamkey_api_keys, '<key id>'` for
///   each changed key; the feed `LISTEN`s on a connection of its own (made
///   from the pool's options), and every [`interval`](Self::interval) sends
///   a heartbeat `NOTIFY` through the pool on a channel of its own. Notices
///   arrive in commit order, so a heartbeat back means every change
///   committed before it was sent has been reported.
/// - MySQL/MariaDB and SQLite: triggers log each changed key in
///   `api_key_changes`; the feed reads the new rows every
///   [`interval`](Self::interval), one indexed query, and re-reads for a
///   while the rows it skipped, which may belong to transactions that had
///   not committed yet (see `late_commits`). It deletes rows older than
///   `retention` about once a minute.
///
/// A lost channel (a failed query or connection, a heartbeat not back
/// within [`timeout`](Self::timeout)) ends [`run`](teamkey_core::InvalidationSource::run)
/// with the error: the cache is flushed and bypassed until the feed is
/// back. Cheap to clone.
pub struct SqlxInvalidations<DB: sqlx::Database> {
    pub(crate) pool: sqlx::Pool<DB>,
    pub(crate) config: Config,
}

/// The feed's settings; each database reads the ones that apply to it.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    #[cfg(any(feature = "mysql", feature = "sqlite"))]
    pub(crate) late_commits: Duration,
    #[cfg(any(feature = "mysql", feature = "sqlite"))]
    pub(crate) retention: Duration,
    #[cfg(feature = "postgres")]
    pub(crate) listener: listen::ListenerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            #[cfg(any(feature = "mysql", feature = "sqlite"))]
            late_commits: DEFAULT_LATE_COMMITS,
            #[cfg(any(feature = "mysql", feature = "sqlite"))]
            retention: DEFAULT_RETENTION,
            #[cfg(feature = "postgres")]
            listener: listen::ListenerConfig::default(),
        }
    }
}

impl<DB: sqlx::Database> SqlxStore<DB> {
    /// The database's feed of changed keys, for a verification cache:
    /// `KeyManager::builder(store.clone()).cache(store.invalidations())`.
    /// Needs the migrations (triggers) of this version; see
    /// [`SqlxInvalidations`] for how each database feeds it and what it costs.
    pub fn invalidations(&self) -> SqlxInvalidations<DB> {
        SqlxInvalidations {
            pool: self.pool.clone(),
            config: Config::default(),
        }
    }
}

impl<DB: sqlx::Database> SqlxInvalidations<DB> {
    /// How often the channel proves itself: the heartbeat on PostgreSQL, the
    /// poll on MySQL and SQLite. Default: [`DEFAULT_INTERVAL`], 250 ms. It
    /// must stay well below the cache's trust window (1 s), or the cache is
    /// trusted only part of the time; it is capped at half of
    /// [`timeout`](Self::timeout) and floored at 10 ms.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.config.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long a heartbeat may take to come back (PostgreSQL), or one poll
    /// query to answer (MySQL, SQLite), before the channel counts as lost.
    /// Default: [`DEFAULT_TIMEOUT`], 1 s.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout.max(Duration::from_millis(20));
        self
    }

    /// The interval as used: never more than half the timeout.
    pub(crate) fn tick(&self) -> Duration {
        self.config.interval.min(self.config.timeout / 2)
    }
}

impl<DB: sqlx::Database> Clone for SqlxInvalidations<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            config: self.config.clone(),
        }
    }
}

impl<DB: sqlx::Database> fmt::Debug for SqlxInvalidations<DB> {
    // Settings only: the pool's options may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlxInvalidations")
            .field("database", &DB::NAME)
            .field("interval", &self.config.interval)
            .field("timeout", &self.config.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
/// A changed key as the database named it. Anything that is no key id
/// (PostgreSQL's `'*'` for a TRUNCATE, a hand-written row) forgets all.
fn report(sink: &InvalidationSink, key_id: &str) {
    match KeyId::parse(key_id) {
        Ok(id) => sink.invalidate(&id),
        Err(_) => sink.invalidate_all(),
    }
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
/// Says why the feed stopped, with every cause: the manager's own line
/// says only that the channel is lost.
fn log_lost(error: &StoreError) {
    tracing::warn!(
        reason = %causes(error),
        "teamkey invalidation feed stopped; the cache is bypassed until it is back"
    );
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
/// The causes of a store error, outermost first, for a log line.
/// (`StoreError`'s own text only says that the backend failed.)
fn causes(error: &StoreError) -> String {
    let mut why = String::new();
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        if !why.is_empty() {
            why.push_str(": ");
        }
        why.push_str(&e.to_string());
        cause = e.source();
    }
    why
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
/// `work`, or a backend error once `limit` has passed.
async fn within<T>(
    limit: Duration,
    what: &'static str,
    work: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(FeedError::failed(what, e)),
        Err(_) => Err(FeedError::lost(format!("{what}: no answer within {limit:?}"))),
    }
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
/// Why a feed stopped: what it was doing, and the database's error if
/// there was one. Never holds connection options (they may hold a password).
#[derive(Debug)]
pub(crate) struct FeedError {
    what: String,
    source: Option<sqlx::Error>,
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
impl FeedError {
    /// `what` failed with the database's `error`.
    pub(crate) fn failed(what: &str, error: sqlx::Error) -> StoreError {
        StoreError::backend(Self {
            what: format!("{what} failed"),
            source: Some(error),
        })
    }

    /// The channel is lost, as `what` says.
    pub(crate) fn lost(what: impl Into<String>) -> StoreError {
        StoreError::backend(Self {
            what: what.into(),
            source: None,
        })
    }
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
impl fmt::Display for FeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "teamkey invalidation feed: {}", self.what)
    }
}

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
impl std::error::Error for FeedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
