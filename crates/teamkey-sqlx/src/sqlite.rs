//! SQLite: times as Unix microseconds, `BEGIN IMMEDIATE` for writes,
//! `ON CONFLICT DO NOTHING` for events recorded once.

use sqlx::error::DatabaseError;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row as _, Sqlite};

use crate::common::storable;
use crate::{MIGRATIONS_TABLE, MigrateError, SqlxStore};

/// Unix microseconds, as stored.
type DbTime = i64;

/// A time as bound.
type BindTime = DbTime;

/// A time to bind, checked first: SQLite would store any integer, and a
/// time no read can decode would break its team's key table for good.
fn to_db(at: OffsetDateTime) -> Result<DbTime, StoreError> {
    let utc = storable(at)?;
    // Years 1 to 9999 are about ±2.5e17 µs: always within i64.
    i64::try_from(utc.unix_timestamp_nanos() / 1_000).map_err(StoreError::backend)
}

/// A nullable column of Unix microseconds; any integer is read without
/// panicking, one that is no date as an error.
fn column_time(row: &SqliteRow, column: &str) -> Result<Option<OffsetDateTime>, String> {
    let micros: Option<DbTime> = row.try_get(column).map_err(|e| e.to_string())?;
    micros
        .map(|micros| {
            i128::from(micros)
                .checked_mul(1_000)
                .and_then(|nanos| OffsetDateTime::from_unix_timestamp_nanos(nanos).ok())
                .ok_or_else(|| format!("{micros} µs since 1970 is not a date"))
        })
        .transpose()
}

/// SQLite has no code for it: `SQLITE_ERROR` with "no such table: …",
/// "no such column: …" (a query) or "table … has no column named …" (an
/// insert).
fn not_migrated(error: &dyn DatabaseError) -> bool {
    let message = error.message();
    message.starts_with("no such table")
        || message.starts_with("no such column")
        || message.contains("has no column named")
}

mod sql {
    pub(super) use crate::common::qmark_sql::*;

    // No row locks in SQLite: the transaction's BEGIN IMMEDIATE already holds
    // the database's write lock.
    pub(super) const LOCK_FOR_ROTATION: &str =
        "SELECT replaced_by FROM api_keys WHERE id = ? AND team_id = ? AND revoked_at IS NULL";
    pub(super) const RETIRE: &str = "UPDATE api_keys SET replaced_by = ?, \
         expires_at = min(coalesce(expires_at, ?), ?) WHERE id = ?";
    /// As `INSERT_EVENT`; an event whose once key is recorded writes no
    /// row. Only that conflict is skipped: a clashing event id still fails.
    pub(super) const APPEND_EVENT: &str = concat!(
        "INSERT INTO api_key_events (",
        event_columns!(),
        ", once_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (once_key) DO NOTHING"
    );
    /// How many times `EVENTS` and `EVENTS_BEFORE` bind the team: text
    /// compares bytewise (`BINARY`), trailing spaces included.
    pub(super) const EVENT_TEAM_BINDS: usize = 1;
    /// Binds: team, limit.
    pub(super) const EVENTS: &str = concat!(
        "SELECT ",
        event_columns!(),
        " FROM api_key_events WHERE team_id = ? ORDER BY id DESC LIMIT ?"
    );
    /// Binds: team, before, limit.
    pub(super) const EVENTS_BEFORE: &str = concat!(
        "SELECT ",
        event_columns!(),
        " FROM api_key_events WHERE team_id = ? AND id < ? ORDER BY id DESC LIMIT ?"
    );
}

impl_touch_by_case!(SqlitePool);

impl_key_store! {
    db: Sqlite,
    row: SqliteRow,
    // The write lock from the start: a transaction that read first could not
    // take it later without failing as busy.
    begin_write: "BEGIN IMMEDIATE",
    touch: touch,
}

impl SqlxStore<Sqlite> {
    /// Creates or updates teamkey's tables (`api_keys`, `api_key_events`
    /// and the change feed's), tracked in [`MIGRATIONS_TABLE`]. Safe to run
    /// on every start, by processes starting together on one file too.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        let mut migrator = sqlx::migrate!("./migrations/sqlite");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        // SQLite has no lock to take turns with: a process that read the
        // list of applied migrations just before another applied one fails
        // on it ("already exists"), having written nothing (each migration
        // is one transaction). Asked again, it sees the migration applied.
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match migrator.run(&self.pool).await {
                Err(MigrateError::ExecuteMigration(..) | MigrateError::Execute(_))
                    if std::time::Instant::now() < give_up =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                migrated => return migrated,
            }
        }
    }
}

/// The change log's statements (see `crate::feed::poll`). Ages are
/// microseconds, by the database's clock, as the triggers' `changed_at`.
mod feed_sql {
    /// Binds: age.
    pub(super) const NEWEST_OLDER_THAN: &str = "SELECT MAX(seq) FROM api_key_changes WHERE changed_at < CAST(unixepoch('subsec') * 1000000 AS INTEGER) - ?";
    /// Binds: seq, age.
    pub(super) const PRUNE: &str = "DELETE FROM api_key_changes WHERE seq < ? AND changed_at < CAST(unixepoch('subsec') * 1000000 AS INTEGER) - ?";
}

#[async_trait::async_trait]
impl crate::feed::poll::Polled for Sqlite {
    async fn newest_older_than(pool: &SqlitePool, age_micros: i64) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(feed_sql::NEWEST_OLDER_THAN)
            .bind(age_micros)
            .fetch_one(pool)
            .await
    }

    async fn page(pool: &SqlitePool, sql: String, binds: &[i64]) -> Result<Vec<(i64, String)>, sqlx::Error> {
        // Built from fixed fragments and `?` only (see poll::page_sql).
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            query = query.bind(*bind);
        }
        query.fetch_all(pool).await
    }

    async fn prune(pool: &SqlitePool, below: i64, age_micros: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(feed_sql::PRUNE)
            .bind(below)
            .bind(age_micros)
            .execute(pool)
            .await?;
        Ok(done.rows_affected())
    }
}

crate::feed::poll::impl_polled_source!(Sqlite);
