//! MySQL/MariaDB and SQLite: polling the trigger-fed `api_key_changes` log.
//!
//! A row's `seq` is assigned when the trigger inserts it, before its
//! transaction commits (on MySQL; SQLite has one writer at a time, so its
//! rows commit in order). A poller that only read `seq > last` would skip a
//! row whose transaction committed after a later one's. So every seq below
//! the newest one seen that has not been seen yet is a *gap*, re-read on
//! each poll for [`late_commits`](SqlxInvalidations::late_commits): a row
//! that commits late is found on the first poll after its commit.
//!
//! Why a poll vouches for everything committed before it began: such a row
//! is in the poll's snapshot, and its seq is either above the newest seen
//! (read), in an open gap (read), or was read before. The one exception is
//! a transaction that commits more than `late_commits` after writing its
//! row; the cache's hard age bound (30 s by default) still limits that.

use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use teamkey_core::{InvalidationSink, StoreError};

use super::{SqlxInvalidations, report, within};

/// Rows read per query; a poll reads pages until one is short.
pub(crate) const PAGE: usize = 1_000;

/// Open gaps tracked at most; past it the oldest are given up (each is a
/// transaction not committed, or rolled back, within `late_commits`).
const MAX_GAPS: usize = 1_000;

/// How often each poller deletes old change rows.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// How long one prune may take: it may wait for row locks, and nothing
/// waits for it.
const PRUNE_TIMEOUT: Duration = Duration::from_secs(30);

/// Retention is kept this much above `late_commits`, so that no row is
/// pruned while some poller may still look for it.
const RETENTION_MARGIN: Duration = Duration::from_secs(60);

/// What a polled database runs. Times are Unix-free: ages in microseconds,
/// measured by the database's own clock, as the triggers' `changed_at` is.
#[async_trait::async_trait]
pub(crate) trait Polled: sqlx::Database {
    /// The newest seq logged more than `age_micros` ago, if any.
    async fn newest_older_than(pool: &sqlx::Pool<Self>, age_micros: i64) -> Result<Option<i64>, sqlx::Error>;

    /// Runs [`page_sql`] with its binds: `(seq, key_id)` rows, by seq.
    async fn page(
        pool: &sqlx::Pool<Self>,
        sql: String,
        binds: &[i64],
    ) -> Result<Vec<(i64, String)>, sqlx::Error>;

    /// Deletes rows below `seq` logged more than `age_micros` ago.
    async fn prune(pool: &sqlx::Pool<Self>, below: i64, age_micros: i64) -> Result<u64, sqlx::Error>;
}

/// Implements `InvalidationSource`, and the poll settings, for a polled
/// database's `SqlxInvalidations`.
macro_rules! impl_polled_source {
    ($db:ty) => {
        #[async_trait::async_trait]
        impl teamkey_core::InvalidationSource for crate::SqlxInvalidations<$db> {
            async fn run(&self, sink: teamkey_core::InvalidationSink) -> teamkey_core::StoreError {
                crate::feed::poll::run(self, sink).await
            }
        }

        impl crate::SqlxInvalidations<$db> {
            /// How long a skipped change-log row is looked for: a
            /// transaction that writes `api_keys` and commits later than
            /// this is seen only when the cache's entry ages out (30 s by
            /// default). Default: [`DEFAULT_LATE_COMMITS`](crate::DEFAULT_LATE_COMMITS),
            /// 5 minutes. Retention is raised to stay one minute above it.
            #[must_use]
            pub fn late_commits(mut self, window: std::time::Duration) -> Self {
                self.config.late_commits = window;
                self
            }

            /// How old a change-log row gets before it is deleted. Default:
            /// [`DEFAULT_RETENTION`](crate::DEFAULT_RETENTION), 15 minutes;
            /// never less than [`late_commits`](Self::late_commits) plus one
            /// minute.
            #[must_use]
            pub fn retention(mut self, retention: std::time::Duration) -> Self {
                self.config.retention = retention;
                self
            }
        }
    };
}

pub(crate) use impl_polled_source;

/// Polls until the channel fails.
pub(crate) async fn run<DB: Polled>(feed: &SqlxInvalidations<DB>, sink: InvalidationSink) -> StoreError {
    let Err(error) = poll(feed, &sink).await;
    super::log_lost(&error);
    error
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

async fn poll<DB: Polled>(
    feed: &SqlxInvalidations<DB>,
    sink: &InvalidationSink,
) -> Result<Infallible, StoreError> {
    let config = &feed.config;
    let late = config.late_commits;

    // Start: rows older than `late` are settled; any seq above the newest
    // of them not visible yet may still commit, so it is a gap.
    let since = Instant::now();
    let base = within(
        config.timeout,
        "reading api_key_changes",
        DB::newest_older_than(&feed.pool, micros(late)),
    )
    .await?;
    let mut gaps = Gaps::new(base.unwrap_or(0));
    // What is visible now is in the store already: the cache is emptied
    // below, so these rows need no reporting.
    read::<DB>(feed, &mut gaps, since, |_| {}).await?;
    sink.connected(since);
    tracing::debug!("teamkey invalidation feed: polling api_key_changes");

    // Pruning runs beside the polls, never between two: a DELETE waits for
    // its commit to reach the disk, which would delay the next poll.
    let prune_below = AtomicI64::new(gaps.prune_below());
    tokio::select! {
        error = poll_loop(feed, sink, &mut gaps, &prune_below) => Err(error),
        never = prune_loop(feed, &prune_below) => match never {},
    }
}

/// Polls every tick until a poll fails.
async fn poll_loop<DB: Polled>(
    feed: &SqlxInvalidations<DB>,
    sink: &InvalidationSink,
    gaps: &mut Gaps,
    prune_below: &AtomicI64,
) -> StoreError {
    let mut ticks = tokio::time::interval(feed.tick());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate
    loop {
        ticks.tick().await;
        let started = Instant::now();
        gaps.expire(started);
        if let Err(error) = read::<DB>(feed, gaps, started, |key_id| report(sink, key_id)).await {
            return error;
        }
        // Everything committed before `started` was in the snapshot.
        sink.confirmed(started);
        prune_below.store(gaps.prune_below(), Ordering::Relaxed);
    }
}

/// Deletes old change rows every [`PRUNE_EVERY`], for ever. A failure only
/// lets the log grow a little longer: it is logged, and the feed goes on.
async fn prune_loop<DB: Polled>(feed: &SqlxInvalidations<DB>, prune_below: &AtomicI64) -> Infallible {
    let retention = feed
        .config
        .retention
        .max(feed.config.late_commits + RETENTION_MARGIN);
    loop {
        tokio::time::sleep(PRUNE_EVERY).await;
        let below = prune_below.load(Ordering::Relaxed);
        let pruned = within(
            feed.config.timeout.max(PRUNE_TIMEOUT),
            "pruning api_key_changes",
            DB::prune(&feed.pool, below, micros(retention)),
        )
        .await;
        if let Err(e) = pruned {
            tracing::warn!(
                reason = %super::causes(&e),
                "teamkey invalidation feed: old api_key_changes rows not pruned"
            );
        }
    }
}

/// Reads every row above the newest seen or in an open gap, page by page.
async fn read<DB: Polled>(
    feed: &SqlxInvalidations<DB>,
    gaps: &mut Gaps,
    now: Instant,
    mut changed: impl FnMut(&str),
) -> Result<(), StoreError> {
    loop {
        let binds = gaps.binds();
        let sql = page_sql(gaps.open.len());
        let rows = within(
            feed.config.timeout,
            "polling api_key_changes",
            DB::page(&feed.pool, sql, &binds),
        )
        .await?;
        for (seq, key_id) in &rows {
            gaps.saw(*seq, now + feed.config.late_commits);
            changed(key_id);
        }
        if rows.len() < PAGE {
            return Ok(());
        }
    }
}

/// `SELECT seq, key_id … WHERE seq > ? OR seq BETWEEN ? AND ? …`, one
/// `BETWEEN` per open gap; binds from [`Gaps::binds`]. Fixed fragments and
/// `?` only, never input.
pub(crate) fn page_sql(gaps: usize) -> String {
    let mut sql = String::from("SELECT seq, key_id FROM api_key_changes WHERE seq > ?");
    for _ in 0..gaps {
        sql.push_str(" OR seq BETWEEN ? AND ?");
    }
    sql.push_str(" ORDER BY seq LIMIT ");
    sql.push_str(&PAGE.to_string());
    sql
}

/// Where a poller stands in the change log.
#[derive(Debug)]
struct Gaps {
    /// The newest seq seen.
    newest: i64,
    /// Seqs below `newest` not seen yet, oldest first, each looked for until
    /// its deadline.
    open: Vec<Gap>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gap {
    first: i64,
    last: i64,
    until: Instant,
}

impl Gaps {
    fn new(newest: i64) -> Self {
        Self {
            newest,
            open: Vec::new(),
        }
    }

    /// The binds of [`page_sql`]`(self.open.len())`.
    fn binds(&self) -> Vec<i64> {
        let mut binds = vec![self.newest];
        for gap in &self.open {
            binds.extend([gap.first, gap.last]);
        }
        binds
    }

    /// Row `seq` was read; any seq it skipped is a new gap, open `until`.
    fn saw(&mut self, seq: i64, until: Instant) {
        if seq > self.newest {
            if seq - self.newest > 1 {
                self.open.push(Gap {
                    first: self.newest + 1,
                    last: seq - 1,
                    until,
                });
                if self.open.len() > MAX_GAPS {
                    let given_up = self.open.len() - MAX_GAPS;
                    self.open.drain(..given_up);
                    tracing::warn!(
                        given_up,
                        "teamkey invalidation feed: too many uncommitted api_key_changes rows; the oldest are no longer looked for"
                    );
                }
            }
            self.newest = seq;
        } else if let Some(i) = self.open.iter().position(|g| g.first <= seq && seq <= g.last) {
            let gap = self.open[i];
            let mut rest = Vec::with_capacity(2);
            if gap.first < seq {
                rest.push(Gap { last: seq - 1, ..gap });
            }
            if seq < gap.last {
                rest.push(Gap {
                    first: seq + 1,
                    ..gap
                });
            }
            self.open.splice(i..=i, rest);
        }
    }

    /// Stops looking for gaps whose time is up.
    fn expire(&mut self, now: Instant) {
        self.open.retain(|g| g.until > now);
    }

    /// Rows below this may be pruned: all seen, or given up. Never the
    /// newest seen, so that the log's auto-increment counter can never
    /// restart below it (older MySQL versions reset it to the table's
    /// maximum on restart).
    fn prune_below(&self) -> i64 {
        self.open
            .first()
            .map_or(self.newest, |g| g.first.min(self.newest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(gaps: &Gaps) -> Vec<(i64, i64)> {
        gaps.open.iter().map(|g| (g.first, g.last)).collect()
    }

    #[test]
    fn skipped_seqs_are_looked_for_until_they_appear_or_expire() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(300);
        let mut gaps = Gaps::new(10);
        assert_eq!(gaps.binds(), [10]);
        assert_eq!(
            page_sql(0),
            "SELECT seq, key_id FROM api_key_changes WHERE seq > ? ORDER BY seq LIMIT 1000"
        );

        // 11 and 13..=14 are not committed yet when 12 and 15 are.
        gaps.saw(12, later);
        gaps.saw(15, later);
        assert_eq!(gaps.newest, 15);
        assert_eq!(ranges(&gaps), [(11, 11), (13, 14)]);
        assert_eq!(gaps.binds(), [15, 11, 11, 13, 14]);
        assert_eq!(
            page_sql(2),
            "SELECT seq, key_id FROM api_key_changes WHERE seq > ? \
             OR seq BETWEEN ? AND ? OR seq BETWEEN ? AND ? ORDER BY seq LIMIT 1000"
        );
        assert_eq!(gaps.prune_below(), 11);

        // 13 commits late, with a lower seq than one already seen.
        gaps.saw(13, later);
        assert_eq!(ranges(&gaps), [(11, 11), (14, 14)]);
        gaps.saw(11, later);
        gaps.saw(15, later); // seen twice: nothing changes
        assert_eq!(ranges(&gaps), [(14, 14)]);

        // 14 rolled back: looked for until its time is up.
        gaps.expire(later - Duration::from_secs(1));
        assert_eq!(ranges(&gaps), [(14, 14)]);
        gaps.expire(later);
        assert!(gaps.open.is_empty());
        assert_eq!(gaps.prune_below(), 15, "never the newest row");
    }

    #[test]
    fn a_gap_split_in_the_middle_keeps_both_sides_in_order() {
        let until = Instant::now() + Duration::from_secs(60);
        let mut gaps = Gaps::new(0);
        gaps.saw(100, until);
        gaps.saw(200, until);
        gaps.saw(50, until);
        gaps.saw(150, until);
        assert_eq!(ranges(&gaps), [(1, 49), (51, 99), (101, 149), (151, 199)]);
    }

    #[test]
    fn gaps_are_bounded() {
        let until = Instant::now() + Duration::from_secs(60);
        let mut gaps = Gaps::new(0);
        for seq in (2..=2 * (MAX_GAPS as i64 + 10)).step_by(2) {
            gaps.saw(seq, until);
        }
        assert_eq!(gaps.open.len(), MAX_GAPS);
        assert_eq!(gaps.open[0].first, 21, "the oldest were given up");
    }
}

/// The change log's own statements, on SQLite (always) and MySQL (when
/// `TEAMKEY_TEST_MYSQL_URL` is set, in a database of the test's own).
#[cfg(all(test, feature = "sqlite"))]
mod log_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

    use super::*;
    use crate::SqlxStore;

    const MINUTE: i64 = 60_000_000;

    async fn sqlite() -> sqlx::SqlitePool {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        SqlxStore::new(pool.clone()).migrate().await.unwrap();
        pool
    }

    /// Rows logged `age_minutes` ago, as `(seq, key id)`.
    async fn log(pool: &sqlx::SqlitePool, rows: &[(i64, &str, i64)]) {
        for (seq, key_id, age_minutes) in rows {
            sqlx::query(
                "INSERT INTO api_key_changes (seq, key_id, changed_at) \
                 VALUES (?, ?, CAST(unixepoch('subsec') * 1000000 AS INTEGER) - ?)",
            )
            .bind(seq)
            .bind(key_id)
            .bind(age_minutes * MINUTE)
            .execute(pool)
            .await
            .unwrap();
        }
    }

    async fn seqs(pool: &sqlx::SqlitePool) -> Vec<i64> {
        sqlx::query_scalar("SELECT seq FROM api_key_changes ORDER BY seq")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn sqlite_start_point_pages_and_pruning() {
        let pool = sqlite().await;
        assert_eq!(
            sqlx::Sqlite::newest_older_than(&pool, 5 * MINUTE).await.unwrap(),
            None
        );
        log(
            &pool,
            &[(1, "a", 30), (2, "b", 20), (4, "c", 10), (6, "d", 1), (7, "e", 0)],
        )
        .await;
        assert_eq!(
            sqlx::Sqlite::newest_older_than(&pool, 5 * MINUTE).await.unwrap(),
            Some(4)
        );

        let mut gaps = Gaps::new(0);
        gaps.saw(2, Instant::now() + Duration::from_secs(60));
        gaps.saw(6, Instant::now() + Duration::from_secs(60));
        let rows = sqlx::Sqlite::page(&pool, page_sql(gaps.open.len()), &gaps.binds())
            .await
            .unwrap();
        assert_eq!(
            rows,
            [(1, "a".to_owned()), (4, "c".to_owned()), (7, "e".to_owned())]
        );

        // Old rows go, but never the newest seen nor any still looked for.
        assert_eq!(sqlx::Sqlite::prune(&pool, 2, 15 * MINUTE).await.unwrap(), 1);
        assert_eq!(seqs(&pool).await, [2, 4, 6, 7]);
        assert_eq!(sqlx::Sqlite::prune(&pool, 7, 5 * MINUTE).await.unwrap(), 2);
        assert_eq!(seqs(&pool).await, [6, 7]);
    }

    #[cfg(feature = "mysql")]
    #[tokio::test]
    async fn mysql_start_point_pages_and_pruning() {
        use std::hash::{BuildHasher, RandomState};
        use std::str::FromStr;

        let Some(url) = std::env::var("TEAMKEY_TEST_MYSQL_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            eprintln!(
                "\n*** SKIPPED: TEAMKEY_TEST_MYSQL_URL is not set; this test did not touch a database. ***\n"
            );
            return;
        };
        let admin = sqlx::MySqlPool::connect(&url).await.unwrap();
        let name = format!(
            "teamkey_log_{:016x}",
            RandomState::new().hash_one(std::time::SystemTime::now())
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        let options = sqlx::mysql::MySqlConnectOptions::from_str(&url)
            .unwrap()
            .database(&name);
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        SqlxStore::new(pool.clone()).migrate().await.unwrap();

        assert_eq!(
            sqlx::MySql::newest_older_than(&pool, 5 * MINUTE).await.unwrap(),
            None
        );
        for (seq, key_id, age_minutes) in [(1, "a", 30), (2, "b", 20), (4, "c", 10), (6, "d", 1), (7, "e", 0)]
        {
            sqlx::query(
                "INSERT INTO api_key_changes (seq, key_id, changed_at) \
                 VALUES (?, ?, UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND)",
            )
            .bind(seq)
            .bind(key_id)
            .bind(age_minutes * MINUTE)
            .execute(&pool)
            .await
            .unwrap();
        }
        assert_eq!(
            sqlx::MySql::newest_older_than(&pool, 5 * MINUTE).await.unwrap(),
            Some(4)
        );
        let mut gaps = Gaps::new(0);
        gaps.saw(2, Instant::now() + Duration::from_secs(60));
        gaps.saw(6, Instant::now() + Duration::from_secs(60));
        let rows = sqlx::MySql::page(&pool, page_sql(gaps.open.len()), &gaps.binds())
            .await
            .unwrap();
        assert_eq!(
            rows,
            [(1, "a".to_owned()), (4, "c".to_owned()), (7, "e".to_owned())]
        );
        assert_eq!(sqlx::MySql::prune(&pool, 2, 15 * MINUTE).await.unwrap(), 1);
        assert_eq!(sqlx::MySql::prune(&pool, 7, 5 * MINUTE).await.unwrap(), 2);
        let left: Vec<i64> = sqlx::query_scalar("SELECT seq FROM api_key_changes ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(left, [6, 7]);

        pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
    }
}
