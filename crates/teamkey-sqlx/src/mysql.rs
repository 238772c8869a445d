//! MySQL and MariaDB: `DATETIME(6)` times in UTC, binary collations.

use sqlx::MySql;
use sqlx::mysql::{MySqlPool, MySqlRow};

use crate::common::{TOUCH_CHUNK, touch_case_sql};
use crate::{MIGRATIONS_TABLE, MigrateError, SqlxStore};

type DbTime = OffsetDateTime;

fn to_db(at: OffsetDateTime) -> DbTime {
    at
}

fn from_db(at: DbTime) -> Result<OffsetDateTime, sqlx::Error> {
    Ok(at)
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
    pub(super) const LOCK_FOR_ROTATION: &str =
        "SELECT replaced_by FROM api_keys WHERE id = ? AND team_id = ? AND revoked_at IS NULL FOR UPDATE";
    pub(super) const RETIRE: &str = "UPDATE api_keys SET replaced_by = ?, \
         expires_at = LEAST(COALESCE(expires_at, ?), ?) WHERE id = ?";
}

/// One statement per 1,000 keys.
async fn touch(pool: &MySqlPool, uses: &[KeyUse]) -> Result<(), sqlx::Error> {
    for chunk in uses.chunks(TOUCH_CHUNK) {
        // Built from fixed fragments and `?` only (see touch_case_sql).
        let sql = touch_case_sql(chunk.len());
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for u in chunk {
            query = query.bind(u.key_id.as_str()).bind(u.at).bind(u.at);
        }
        for u in chunk {
            query = query.bind(u.key_id.as_str());
        }
        query.execute(pool).await?;
    }
    Ok(())
}

impl_key_store! {
    db: MySql,
    row: MySqlRow,
    begin_rotation: "BEGIN",
    touch: touch,
}

impl SqlxStore<MySql> {
    /// Creates or updates the `api_keys` table, tracked in
    /// [`MIGRATIONS_TABLE`]. Safe to run on every start.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        let mut migrator = sqlx::migrate!("./migrations/mysql");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(&self.pool).await
    }
}
