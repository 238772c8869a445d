//! SQLite: times as Unix microseconds, `BEGIN IMMEDIATE` for rotation.

use sqlx::Sqlite;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use crate::{MIGRATIONS_TABLE, MigrateError, SqlxStore};

type DbTime = i64;

fn to_db(at: OffsetDateTime) -> DbTime {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

fn from_db(micros: DbTime) -> Result<OffsetDateTime, sqlx::Error> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

mod sql {
    pub(super) use crate::common::qmark_sql::*;

    // No row locks in SQLite: the transaction's BEGIN IMMEDIATE already holds
    // the database's write lock.
    pub(super) const LOCK_FOR_ROTATION: &str =
        "SELECT replaced_by FROM api_keys WHERE id = ? AND team_id = ? AND revoked_at IS NULL";
    pub(super) const RETIRE: &str = "UPDATE api_keys SET replaced_by = ?, \
         expires_at = min(coalesce(expires_at, ?), ?) WHERE id = ?";
}

impl_touch_by_case!(SqlitePool);

impl_key_store! {
    db: Sqlite,
    row: SqliteRow,
    begin_rotation: "BEGIN IMMEDIATE",
    touch: touch,
}

impl SqlxStore<Sqlite> {
    /// Creates or updates the `api_keys` table, tracked in
    /// [`MIGRATIONS_TABLE`]. Safe to run on every start.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        let mut migrator = sqlx::migrate!("./migrations/sqlite");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(&self.pool).await
    }
}
