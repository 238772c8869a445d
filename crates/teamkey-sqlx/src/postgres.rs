//! PostgreSQL: `TIMESTAMPTZ` times, `UNNEST` for last-used batches,
//! `ON CONFLICT DO NOTHING` for events recorded once.

use sqlx::error::{BoxDynError, DatabaseError};
use sqlx::postgres::{PgPool, PgRow, PgTypeInfo, PgValueFormat, PgValueRef};
use sqlx::{Postgres, Row as _};

use crate::common::storable;
use crate::{MIGRATIONS_TABLE, MigrateError, SqlxStore};

/// A time as bound.
type BindTime = OffsetDateTime;

/// A time to bind: checked, in UTC, so that sqlx's `to_offset` is a no-op.
fn to_db(at: OffsetDateTime) -> Result<BindTime, StoreError> {
    storable(at)
}

/// A `TIMESTAMPTZ` as read. sqlx's own decoding adds the value to its
/// epoch unchecked and panics on `infinity` or past year 9999; this one
/// answers an error instead.
struct DbTime(OffsetDateTime);

/// Seconds from the Unix epoch to PostgreSQL's, 2000-01-01.
const PG_EPOCH_UNIX_SECONDS: i64 = 946_684_800;

impl sqlx::Type<Postgres> for DbTime {
    fn type_info() -> PgTypeInfo {
        <OffsetDateTime as sqlx::Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <OffsetDateTime as sqlx::Type<Postgres>>::compatible(ty)
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for DbTime {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        match value.format() {
            // Microseconds since 2000-01-01 UTC, big-endian.
            PgValueFormat::Binary => {
                let bytes: [u8; 8] = value.as_bytes()?.try_into()?;
                let micros = i64::from_be_bytes(bytes);
                let unix_micros = micros
                    .checked_add(PG_EPOCH_UNIX_SECONDS * 1_000_000)
                    .ok_or("TIMESTAMPTZ out of range (infinity?)")?;
                Ok(Self(OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(unix_micros) * 1_000,
                )?))
            }
            // Parsed, never added to: sqlx's text path cannot panic.
            PgValueFormat::Text => <OffsetDateTime as sqlx::Decode<Postgres>>::decode(value).map(Self),
        }
    }
}

/// A nullable `TIMESTAMPTZ` column, decoded without panicking.
fn column_time(row: &PgRow, column: &str) -> Result<Option<OffsetDateTime>, String> {
    let at: Option<DbTime> = row.try_get(column).map_err(|e| e.to_string())?;
    Ok(at.map(|at| at.0))
}

/// `undefined_table` (SQLSTATE 42P01) or `undefined_column` (42703).
fn not_migrated(error: &dyn DatabaseError) -> bool {
    matches!(error.code().as_deref(), Some("42P01" | "42703"))
}

mod sql {
    pub(super) const INSERT: &str = concat!(
        "INSERT INTO api_keys (",
        columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    );
    pub(super) const GET: &str = concat!("SELECT ", columns!(), " FROM api_keys WHERE id = $1");
    pub(super) const LIST: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM api_keys WHERE team_id = $1 AND revoked_at IS NULL"
    );
    pub(super) const REVOKE: &str =
        "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND team_id = $3 AND revoked_at IS NULL";
    // Ids order bytewise (`COLLATE "C"`), as the core orders them, whatever
    // the database's collation; the page index is built the same way.
    /// Binds: team, now, limit.
    pub(super) const LIST_ACTIVE: &str = concat!(
        active_rows!("$1", "$2"),
        " ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT $3"
    );
    /// Binds: team, now, cursor time, cursor time, cursor id, limit (the
    /// order the `?` databases need; see `qmark_sql::LIST_ACTIVE_AFTER`).
    pub(super) const LIST_ACTIVE_AFTER: &str = concat!(
        active_rows!("$1", "$2"),
        " AND created_at <= $3 AND (created_at < $4 OR id COLLATE \"C\" < $5)",
        " ORDER BY created_at DESC, id COLLATE \"C\" DESC LIMIT $6"
    );
    /// Binds: team, now.
    pub(super) const COUNT_ACTIVE: &str = "SELECT COUNT(*) FROM api_keys WHERE team_id = $1 \
         AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)";
    pub(super) const LOCK_FOR_ROTATION: &str =
        "SELECT replaced_by FROM api_keys WHERE id = $1 AND team_id = $2 AND revoked_at IS NULL FOR UPDATE";
    pub(super) const RETIRE: &str = "UPDATE api_keys SET replaced_by = $1, \
         expires_at = LEAST(COALESCE(expires_at, $2), $3) WHERE id = $4";
    /// A use without an address keeps the one stored.
    pub(super) const TOUCH: &str = "UPDATE api_keys AS k SET last_used_at = u.at, \
         last_used_ip = COALESCE(u.ip, k.last_used_ip) \
         FROM UNNEST($1::varchar[], $2::timestamptz[], $3::varchar[]) AS u(id, at, ip) \
         WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)";
    /// Binds: after, after id, until, limit. Walks the partial expiry index.
    pub(super) const EXPIRING: &str = concat!(
        expiring_rows!("id COLLATE \"C\"", "$1", "$2", "$3"),
        " ORDER BY expires_at, id COLLATE \"C\" LIMIT $4"
    );
    /// Binds: the event's columns, then `once_key`.
    pub(super) const INSERT_EVENT: &str = concat!(
        "INSERT INTO api_key_events (",
        event_columns!(),
        ", once_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    );
    /// As `INSERT_EVENT`; an event whose once key is recorded writes no
    /// row. Only that conflict is skipped: a clashing event id still fails.
    pub(super) const APPEND_EVENT: &str = concat!(
        "INSERT INTO api_key_events (",
        event_columns!(),
        ", once_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (once_key) DO NOTHING"
    );
    /// Binds: once key.
    pub(super) const ONCE_RECORDED: &str = "SELECT COUNT(*) FROM api_key_events WHERE once_key = $1";
    /// How many times `EVENTS` and `EVENTS_BEFORE` bind the team: team ids
    /// compare exactly here (a deterministic collation).
    pub(super) const EVENT_TEAM_BINDS: usize = 1;
    /// Binds: team, limit. Ids compare bytewise (the column is `"C"`).
    pub(super) const EVENTS: &str = concat!(
        "SELECT ",
        event_columns!(),
        " FROM api_key_events WHERE team_id = $1 ORDER BY id DESC LIMIT $2"
    );
    /// Binds: team, before, limit.
    pub(super) const EVENTS_BEFORE: &str = concat!(
        "SELECT ",
        event_columns!(),
        " FROM api_key_events WHERE team_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
    );
}

/// One statement for the whole batch.
async fn touch(pool: &PgPool, uses: &[KeyUse]) -> Result<(), StoreError> {
    let ids: Vec<&str> = uses.iter().map(|u| u.key_id.as_str()).collect();
    let ats = uses.iter().map(|u| to_db(u.at)).collect::<Result<Vec<_>, _>>()?;
    let ips: Vec<Option<String>> = uses.iter().map(|u| u.ip.map(|ip| ip.to_string())).collect();
    sqlx::query(sql::TOUCH)
        .bind(&ids[..])
        .bind(&ats[..])
        .bind(&ips[..])
        .execute(pool)
        .await
        .map_err(store_error)?;
    Ok(())
}

impl_key_store! {
    db: Postgres,
    row: PgRow,
    begin_write: "BEGIN",
    touch: touch,
}

impl SqlxStore<Postgres> {
    /// Creates or updates teamkey's tables (`api_keys`, `api_key_events`
    /// and the change feed's), tracked in [`MIGRATIONS_TABLE`]. Safe to run
    /// on every start.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        let mut migrator = sqlx::migrate!("./migrations/postgres");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(&self.pool).await
    }
}
