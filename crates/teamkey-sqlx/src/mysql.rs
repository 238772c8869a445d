//! MySQL and MariaDB: `DATETIME(6)` times in UTC, binary collations.

use sqlx::MySql;
use sqlx::mysql::{MySqlPool, MySqlRow};

use crate::{MIGRATIONS_TABLE, MigrateError, SqlxStore};

type DbTime = OffsetDateTime;

fn to_db(at: OffsetDateTime) -> DbTime {
    at
}

fn from_db(at: DbTime) -> Result<OffsetDateTime, sqlx::Error> {
    Ok(at)
}

mod sql {
    pub(super) use crate::common::qmark_sql::*;

    pub(super) const LOCK_FOR_ROTATION: &str =
        "SELECT replaced_by FROM api_keys WHERE id = ? AND team_id = ? AND revoked_at IS NULL FOR UPDATE";
    pub(super) const RETIRE: &str = "UPDATE api_keys SET replaced_by = ?, \
         expires_at = LEAST(COALESCE(expires_at, ?), ?) WHERE id = ?";
}

impl_touch_by_case!(MySqlPool);

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
