//! PostgreSQL: `TIMESTAMPTZ` times, `UNNEST` for last-used batches.

use sqlx::Postgres;
use sqlx::postgres::{PgPool, PgRow};

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
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    );
    pub(super) const GET: &str = concat!("SELECT ", columns!(), " FROM api_keys WHERE id = $1");
    pub(super) const LIST: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM api_keys WHERE team_id = $1 AND revoked_at IS NULL"
    );
    pub(super) const REVOKE: &str =
        "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND team_id = $3 AND revoked_at IS NULL";
    pub(super) const LOCK_FOR_ROTATION: &str =
        "SELECT replaced_by FROM api_keys WHERE id = $1 AND team_id = $2 AND revoked_at IS NULL FOR UPDATE";
    pub(super) const RETIRE: &str = "UPDATE api_keys SET replaced_by = $1, \
         expires_at = LEAST(COALESCE(expires_at, $2), $3) WHERE id = $4";
    pub(super) const TOUCH: &str = "UPDATE api_keys AS k SET last_used_at = u.at \
         FROM UNNEST($1::varchar[], $2::timestamptz[]) AS u(id, at) \
         WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)";
}

/// One statement for the whole batch.
async fn touch(pool: &PgPool, uses: &[KeyUse]) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = uses.iter().map(|u| u.key_id.as_str()).collect();
    let ats: Vec<OffsetDateTime> = uses.iter().map(|u| u.at).collect();
    sqlx::query(sql::TOUCH)
        .bind(&ids[..])
        .bind(&ats[..])
        .execute(pool)
        .await?;
    Ok(())
}

impl_key_store! {
    db: Postgres,
    row: PgRow,
    begin_rotation: "BEGIN",
    touch: touch,
}

impl SqlxStore<Postgres> {
    /// Creates or updates the `api_keys` table, tracked in
    /// [`MIGRATIONS_TABLE`]. Safe to run on every start.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        let mut migrator = sqlx::migrate!("./migrations/postgres");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(&self.pool).await
    }
}
