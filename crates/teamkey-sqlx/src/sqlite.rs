//! SQLite: times as Unix microseconds, `BEGIN IMMEDIATE` for rotation.

use sqlx::Sqlite;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use crate::common::{TOUCH_CHUNK, touch_case_sql};
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
    pub(super) const INSERT: &str = concat!(
        "INSERT INTO api_keys (",
        columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    );
    pub(super) const GET: &str = concat!("SELECT ", columns!(), " FROM api_keys WHERE id = ?");
    pub(super) const LIST: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM api_keys WHERE team_id = ? AND revoked_at IS NULL"
    );
    pub(super) const REVOKE: &str =
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND team_id = ? AND revoked_at IS NULL";
    // No row locks in SQLite: the transaction's BEGIN IMMEDIATE already holds
    // the database's write lock.
    pub(super) const LOCK_FOR_ROTATION: &str =
        "SELECT replaced_by FROM api_keys WHERE id = ? AND team_id = ? AND revoked_at IS NULL";
    pub(super) const RETIRE: &str = "UPDATE api_keys SET replaced_by = ?, \
         expires_at = min(coalesce(expires_at, ?), ?) WHERE id = ?";
}

/// One statement per 1,000 keys.
async fn touch(pool: &SqlitePool, uses: &[KeyUse]) -> Result<(), sqlx::Error> {
    for chunk in uses.chunks(TOUCH_CHUNK) {
        // Built from fixed fragments and `?` only (see touch_case_sql).
        let sql = touch_case_sql(chunk.len());
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for u in chunk {
            query = query.bind(u.key_id.as_str()).bind(to_db(u.at)).bind(to_db(u.at));
        }
        for u in chunk {
            query = query.bind(u.key_id.as_str());
        }
        query.execute(pool).await?;
    }
    Ok(())
}

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
