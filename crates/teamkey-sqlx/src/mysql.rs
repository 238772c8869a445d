//! MySQL and MariaDB: `DATETIME(6)` times in UTC, binary collations.

use sqlx::error::{DatabaseError, UnexpectedNullError};
use sqlx::mysql::{MySqlConnection, MySqlPool, MySqlRow};
use sqlx::{Connection as _, MySql, Row as _};
use time::PrimitiveDateTime;

use crate::common::storable;
use crate::{MIGRATIONS_TABLE, MigrateError, SqlxStore};

/// A time as bound.
type BindTime = PrimitiveDateTime;

/// A time to bind: checked, then as the column's own type, `DATETIME` in
/// UTC. (sqlx sends an `OffsetDateTime` as a `TIMESTAMP`, whose range
/// MariaDB applies: year 1 arrived as NULL.)
fn to_db(at: OffsetDateTime) -> Result<BindTime, StoreError> {
    let utc = storable(at)?;
    Ok(PrimitiveDateTime::new(utc.date(), utc.time()))
}

/// A nullable `DATETIME(6)` column, read as UTC. sqlx reads a zero date
/// (`0000-00-00`, which MySQL accepts outside `NO_ZERO_DATE`) as NULL: for
/// `expires_at` that would be "never expires". The raw value tells them
/// apart, and a malformed one is an error before sqlx indexes into it.
fn column_time(row: &MySqlRow, column: &str) -> Result<Option<OffsetDateTime>, String> {
    let bytes = match row.try_get_unchecked::<&[u8], _>(column) {
        Ok(bytes) => bytes,
        Err(sqlx::Error::ColumnDecode { source, .. }) if source.is::<UnexpectedNullError>() => {
            return Ok(None);
        }
        Err(e) => return Err(e.to_string()),
    };
    let well_formed = match bytes.first() {
        // Text protocol: "YYYY-MM-DD hh:mm:ss[.ffffff]", parsed with checks.
        Some(b'0'..=b'9') => true,
        // Binary protocol: a length byte, then that many bytes.
        Some(&len @ (4 | 7 | 11)) => bytes.len() == 1 + usize::from(len),
        Some(0) => return Err("zero date 0000-00-00".to_owned()),
        _ => false,
    };
    if !well_formed {
        return Err("malformed DATETIME value".to_owned());
    }
    let at: PrimitiveDateTime = row.try_get(column).map_err(|e| e.to_string())?;
    Ok(Some(at.assume_utc()))
}

/// `ER_NO_SUCH_TABLE` (1146, SQLSTATE 42S02) or `ER_BAD_FIELD_ERROR`
/// (1054, SQLSTATE 42S22), on MySQL and MariaDB.
fn not_migrated(error: &dyn DatabaseError) -> bool {
    error
        .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
        .is_some_and(|e| matches!(e.number(), 1146 | 1054))
        || matches!(error.code().as_deref(), Some("42S02" | "42S22"))
}

mod sql {
    pub(super) use crate::common::qmark_sql::*;

    pub(super) const LOCK_FOR_ROTATION: &str =
        "SELECT replaced_by FROM api_keys WHERE id = ? AND team_id = ? AND revoked_at IS NULL FOR UPDATE";
    pub(super) const RETIRE: &str = "UPDATE api_keys SET replaced_by = ?, \
         expires_at = LEAST(COALESCE(expires_at, ?), ?) WHERE id = ?";
    /// MySQL has no conflict target to skip only a recorded once key (`ON
    /// DUPLICATE KEY` takes any unique key, and with sqlx's `FOUND_ROWS`
    /// reports a skip as a write; `INSERT IGNORE` also truncates): a plain
    /// insert, whose duplicate-key failure the store then tells apart.
    pub(super) const APPEND_EVENT: &str = INSERT_EVENT;
    /// How many times `EVENTS` and `EVENTS_BEFORE` bind the team: once for
    /// the index, once more as bytes, since `utf8mb4_bin` pads with spaces
    /// ('acme' would match a row of 'acme ').
    pub(super) const EVENT_TEAM_BINDS: usize = 2;
    /// Binds: team, team, limit.
    pub(super) const EVENTS: &str = concat!(
        "SELECT ",
        event_columns!(),
        " FROM api_key_events WHERE team_id = ? AND CAST(team_id AS BINARY) = CAST(? AS BINARY) \
         ORDER BY id DESC LIMIT ?"
    );
    /// Binds: team, team, before, limit.
    pub(super) const EVENTS_BEFORE: &str = concat!(
        "SELECT ",
        event_columns!(),
        " FROM api_key_events WHERE team_id = ? AND CAST(team_id AS BINARY) = CAST(? AS BINARY) \
         AND id < ? ORDER BY id DESC LIMIT ?"
    );
}

impl_touch_by_case!(MySqlPool);

impl_key_store! {
    db: MySql,
    row: MySqlRow,
    begin_write: "BEGIN",
    touch: touch,
}

impl SqlxStore<MySql> {
    /// Creates or updates teamkey's tables (`api_keys`, `api_key_events`
    /// and the change feed's), tracked in [`MIGRATIONS_TABLE`]. Safe to run
    /// on every start, by instances starting together too: they take
    /// turns (waiting up to a minute for each other).
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        const LOCK: &str = "teamkey_migrate";
        const WAIT_SECONDS: i64 = 60;
        let mut migrator = sqlx::migrate!("./migrations/mysql");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        // sqlx's own lock is `GET_LOCK(name, -1)`, which MariaDB answers at
        // once without the lock: instances starting together applied the
        // same migration twice. This one waits, and is checked. It is held
        // by a connection of its own, outside the pool, so that a pool of
        // one connection can still migrate.
        let mut holder = MySqlConnection::connect_with(&self.pool.connect_options()).await?;
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
            .bind(LOCK)
            .bind(WAIT_SECONDS)
            .fetch_one(&mut holder)
            .await?;
        if locked != Some(1) {
            return Err(MigrateError::Execute(sqlx::Error::Protocol(format!(
                "another instance held teamkey's migration lock ({LOCK}) for {WAIT_SECONDS} s"
            ))));
        }
        let migrated = migrator.run(&self.pool).await;
        // Closing the connection releases the lock, should this fail.
        let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(LOCK)
            .execute(&mut holder)
            .await;
        let _ = holder.close().await;
        migrated
    }
}

/// The change log's statements (see `crate::feed::poll`). Ages are
/// microseconds, by the database's clock, as the triggers' `changed_at`.
mod feed_sql {
    /// Binds: age.
    pub(super) const NEWEST_OLDER_THAN: &str =
        "SELECT MAX(seq) FROM api_key_changes WHERE changed_at < UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND";
    /// Binds: seq, age.
    pub(super) const PRUNE: &str = "DELETE FROM api_key_changes WHERE seq < ? AND changed_at < UTC_TIMESTAMP(6) - INTERVAL ? MICROSECOND";
}

#[async_trait::async_trait]
impl crate::feed::poll::Polled for MySql {
    async fn newest_older_than(pool: &MySqlPool, age_micros: i64) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(feed_sql::NEWEST_OLDER_THAN)
            .bind(age_micros)
            .fetch_one(pool)
            .await
    }

    async fn page(pool: &MySqlPool, sql: String, binds: &[i64]) -> Result<Vec<(i64, String)>, sqlx::Error> {
        // Built from fixed fragments and `?` only (see poll::page_sql).
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            query = query.bind(*bind);
        }
        query.fetch_all(pool).await
    }

    async fn prune(pool: &MySqlPool, below: i64, age_micros: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(feed_sql::PRUNE)
            .bind(below)
            .bind(age_micros)
            .execute(pool)
            .await?;
        Ok(done.rows_affected())
    }
}

crate::feed::poll::impl_polled_source!(MySql);
