//! What the three databases share: time bounds, row decoding, error
//! mapping, the batch update builder, and the `KeyStore` implementation
//! itself, which each database module instantiates with its own SQL.

use std::fmt;

use sqlx::error::DatabaseError;
use teamkey_core::{KeyId, Scopes, StoreError};
use time::macros::datetime;
use time::{OffsetDateTime, UtcOffset};

/// The columns of `api_keys`, in `KeyRecord` order (a literal, for `concat!`).
macro_rules! columns {
    () => {
        "id, team_id, name, preview, digest, hash_version, scopes, \
         created_at, last_used_at, expires_at, revoked_at, replaced_by"
    };
}

/// What one page of a team's key table selects, before the cursor: active
/// rows only, so that the `(team_id, created_at, id)` index is walked from
/// the newest row and the walk stops at the page's end.
macro_rules! active_rows {
    ($team:literal, $now:literal) => {
        concat!(
            "SELECT ",
            columns!(),
            " FROM api_keys WHERE team_id = ",
            $team,
            " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ",
            $now,
            ")"
        )
    };
}

#[cfg(any(feature = "mysql", feature = "sqlite"))]
/// The statements MySQL and SQLite share: both take `?` parameters and
/// compare ids bytewise (MySQL: `ascii_bin`; SQLite: `BINARY`), as the core
/// orders them.
pub(crate) mod qmark_sql {
    pub(crate) const INSERT: &str = concat!(
        "INSERT INTO api_keys (",
        columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    );
    pub(crate) const GET: &str = concat!("SELECT ", columns!(), " FROM api_keys WHERE id = ?");
    pub(crate) const LIST: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM api_keys WHERE team_id = ? AND revoked_at IS NULL"
    );
    pub(crate) const REVOKE: &str =
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND team_id = ? AND revoked_at IS NULL";
    /// Binds: team, now, limit.
    pub(crate) const LIST_ACTIVE: &str = concat!(
        active_rows!("?", "?"),
        " ORDER BY created_at DESC, id DESC LIMIT ?"
    );
    /// Binds: team, now, cursor time, cursor time, cursor id, limit.
    /// `(created_at, id) < (t, i)` as `created_at <= t AND (created_at < t
    /// OR id < i)`: the same meaning on every database, and the first
    /// conjunct bounds the index range where row values would not.
    pub(crate) const LIST_ACTIVE_AFTER: &str = concat!(
        active_rows!("?", "?"),
        " AND created_at <= ? AND (created_at < ? OR id < ?)",
        " ORDER BY created_at DESC, id DESC LIMIT ?"
    );
    /// Binds: team, now.
    pub(crate) const COUNT_ACTIVE: &str = "SELECT COUNT(*) FROM api_keys WHERE team_id = ? \
         AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)";
}

#[cfg(any(feature = "mysql", feature = "sqlite"))]
/// Keys per last-used statement on databases that take them as bind
/// parameters (4 parameters each; MySQL allows 65,535, SQLite 32,766).
pub(crate) const TOUCH_CHUNK: usize = 1_000;

/// The years a stored time may fall in, in UTC: what `DATETIME`,
/// `TIMESTAMPTZ` and the `time` crate all hold without overflow.
const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// `at` in UTC if it falls within [`YEARS`]. Never panics, whatever the
/// offset (`to_offset` would, for 9999-12-31T23:59:59-23:59).
fn bounded(at: OffsetDateTime) -> Option<OffsetDateTime> {
    at.checked_to_offset(UtcOffset::UTC)
        .filter(|utc| YEARS.contains(&utc.year()))
}

/// A time to bind, in UTC; refused before any driver sees it if it lies
/// outside years 1 to 9999. sqlx panics encoding some of those (PostgreSQL
/// and MySQL convert to UTC with `to_offset`), and SQLite would store what
/// no read can decode.
pub(crate) fn storable(at: OffsetDateTime) -> Result<OffsetDateTime, StoreError> {
    bounded(at).ok_or_else(|| {
        StoreError::backend(format!(
            "time {at} is outside years 1 to 9999 UTC, which teamkey does not store"
        ))
    })
}

/// A time as read, if within [`YEARS`].
pub(crate) fn readable(at: OffsetDateTime) -> Result<OffsetDateTime, String> {
    bounded(at).ok_or_else(|| format!("{at} is outside years 1 to 9999 UTC"))
}

/// Where a page's cursor puts the query, once its time is checked.
pub(crate) enum CursorBound {
    /// Before year 1: no stored row is older, the page is empty.
    Nothing,
    /// After year 9999: every stored row is older; no bound.
    Everything,
    /// An ordinary cursor, in UTC.
    At(OffsetDateTime),
}

/// A cursor is client input: one out of the stored range is answered, not
/// refused as a backend failure (that would be a 503 for a bad request).
pub(crate) fn cursor_bound(at: OffsetDateTime) -> CursorBound {
    match bounded(at) {
        Some(utc) => CursorBound::At(utc),
        // Instants compare across offsets without conversion: no panic.
        None if at < datetime!(0001-01-01 0:00 UTC) => CursorBound::Nothing,
        None => CursorBound::Everything,
    }
}

/// A query failed because `api_keys` does not exist: the database was
/// never migrated. Its text says what to do.
#[derive(Debug)]
pub(crate) struct MissingTable(sqlx::Error);

impl fmt::Display for MissingTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("table api_keys is missing; run SqlxStore::migrate() (or `teamkey migrate`) first")
    }
}

impl std::error::Error for MissingTable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Unique violations are key-id collisions; a missing table is named as
/// such (`undefined_table` knows the database's own code); everything else
/// is the backend's.
pub(crate) fn store_error(error: sqlx::Error, undefined_table: fn(&dyn DatabaseError) -> bool) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        sqlx::Error::Database(db) if undefined_table(&**db) => StoreError::backend(MissingTable(error)),
        _ => StoreError::backend(error),
    }
}

/// A row that breaks teamkey's rules: it was not written by teamkey. Names
/// the row's key id when it has a valid one, so that it can be found.
pub(crate) fn corrupt(key_id: Option<&KeyId>, column: &str, detail: impl fmt::Display) -> StoreError {
    let message = match key_id {
        Some(id) => format!("api_keys row {id} has an invalid {column}: {detail}"),
        None => format!("an api_keys row has an invalid {column}: {detail}"),
    };
    StoreError::backend(message)
}

/// Scopes are stored space-separated: no scope can contain a space.
pub(crate) fn scopes_text(scopes: &Scopes) -> String {
    let parts: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    parts.join(" ")
}

#[cfg(any(feature = "mysql", feature = "sqlite"))]
/// `UPDATE api_keys SET last_used_at = CASE … END WHERE id IN (…)` for `n`
/// keys, with `?` parameters: per key `id, at, at`, then the `n` ids. Made
/// of fixed fragments only, never of input.
pub(crate) fn touch_case_sql(n: usize) -> String {
    let mut sql = String::from("UPDATE api_keys SET last_used_at = CASE");
    for _ in 0..n {
        sql.push_str(" WHEN id = ? AND (last_used_at IS NULL OR last_used_at < ?) THEN ?");
    }
    sql.push_str(" ELSE last_used_at END WHERE id IN (");
    sql.push_str(&vec!["?"; n].join(", "));
    sql.push(')');
    sql
}

#[cfg(any(feature = "mysql", feature = "sqlite"))]
/// `touch(pool, uses)` for databases without array parameters: one
/// `touch_case_sql` statement per [`TOUCH_CHUNK`] keys, times through the
/// calling module's `to_db`.
macro_rules! impl_touch_by_case {
    ($pool:ty) => {
        async fn touch(pool: &$pool, uses: &[KeyUse]) -> Result<(), StoreError> {
            for chunk in uses.chunks(crate::common::TOUCH_CHUNK) {
                // Times first: a bad one refuses the chunk before any bind.
                let ats = chunk
                    .iter()
                    .map(|u| to_db(u.at))
                    .collect::<Result<Vec<_>, _>>()?;
                // Built from fixed fragments and `?` only (see touch_case_sql).
                let sql = crate::common::touch_case_sql(chunk.len());
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (u, at) in chunk.iter().zip(&ats) {
                    query = query.bind(u.key_id.as_str()).bind(*at).bind(*at);
                }
                for u in chunk {
                    query = query.bind(u.key_id.as_str());
                }
                query.execute(pool).await.map_err(store_error)?;
            }
            Ok(())
        }
    };
}

/// Implements `KeyStore` for `SqlxStore<$db>` from the calling module's
/// `sql` constants, its time conversions (`to_db` for binds, `column_time`
/// for reads), and its `undefined_table` test.
macro_rules! impl_key_store {
    (
        db: $db:ty,
        row: $row:ty,
        begin_rotation: $begin:expr,
        touch: $touch:ident $(,)?
    ) => {
        use teamkey_core::{
            HashVersion, KeyId, KeyName, KeyRecord, KeyUse, ListQuery, RotateOutcome, Rotation, Scopes,
            SecretDigest, StoreError, TeamId,
        };
        use time::OffsetDateTime;

        use crate::common::{CursorBound, corrupt, cursor_bound, readable, scopes_text};

        /// Errors through the shared mapping, with this database's test for
        /// a missing table.
        fn store_error(error: sqlx::Error) -> StoreError {
            crate::common::store_error(error, undefined_table)
        }

        /// A nullable time column of a row whose id is `id`, within the
        /// stored years.
        fn read_time(
            row: &$row,
            id: &KeyId,
            column: &'static str,
        ) -> Result<Option<OffsetDateTime>, StoreError> {
            column_time(row, column)
                .and_then(|at| at.map(readable).transpose())
                .map_err(|e| corrupt(Some(id), column, e))
        }

        /// The record in `row`, or a backend error naming the row and the
        /// bad column. Never panics, whatever the row holds.
        fn decode(row: &$row) -> Result<KeyRecord, StoreError> {
            let text = |column: &'static str, id: Option<&KeyId>| -> Result<String, StoreError> {
                row.try_get(column).map_err(|e| corrupt(id, column, e))
            };
            let id = KeyId::parse(&text("id", None)?).map_err(|e| corrupt(None, "id", e))?;
            let id_ref = Some(&id);
            let digest: Vec<u8> = row
                .try_get("digest")
                .map_err(|e| corrupt(id_ref, "digest", e))?;
            let digest: [u8; 32] = digest
                .as_slice()
                .try_into()
                .map_err(|_| corrupt(id_ref, "digest", "not 32 bytes"))?;
            let code: i16 = row
                .try_get("hash_version")
                .map_err(|e| corrupt(id_ref, "hash_version", e))?;
            let scopes = text("scopes", id_ref)?;
            let mut record = KeyRecord::new(
                id,
                TeamId::new(text("team_id", id_ref)?).map_err(|e| corrupt(id_ref, "team_id", e))?,
                KeyName::new(text("name", id_ref)?).map_err(|e| corrupt(id_ref, "name", e))?,
                text("preview", id_ref)?,
                SecretDigest::from_bytes(digest),
                HashVersion::from_code(code).ok_or_else(|| corrupt(id_ref, "hash_version", code))?,
                Scopes::new(scopes.split_whitespace()).map_err(|e| corrupt(id_ref, "scopes", e))?,
                read_time(row, &id, "created_at")?.ok_or_else(|| corrupt(id_ref, "created_at", "NULL"))?,
            );
            record.last_used_at = read_time(row, &id, "last_used_at")?;
            record.expires_at = read_time(row, &id, "expires_at")?;
            record.revoked_at = read_time(row, &id, "revoked_at")?;
            let replaced_by: Option<String> = row
                .try_get("replaced_by")
                .map_err(|e| corrupt(id_ref, "replaced_by", e))?;
            record.replaced_by = replaced_by
                .map(|s| KeyId::parse(&s))
                .transpose()
                .map_err(|e| corrupt(id_ref, "replaced_by", e))?;
            Ok(record)
        }

        async fn insert_record<'e, E>(executor: E, r: &KeyRecord) -> Result<(), StoreError>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            // Every time is checked before the first bind.
            let created_at = to_db(r.created_at)?;
            let last_used_at = r.last_used_at.map(to_db).transpose()?;
            let expires_at = r.expires_at.map(to_db).transpose()?;
            let revoked_at = r.revoked_at.map(to_db).transpose()?;
            sqlx::query(sql::INSERT)
                .bind(r.id.as_str())
                .bind(r.team_id.as_str())
                .bind(r.name.as_str())
                .bind(r.preview.as_str())
                .bind(&r.digest.as_bytes()[..])
                .bind(r.hash_version.code())
                .bind(scopes_text(&r.scopes))
                .bind(created_at)
                .bind(last_used_at)
                .bind(expires_at)
                .bind(revoked_at)
                .bind(r.replaced_by.as_ref().map(KeyId::as_str))
                .execute(executor)
                .await
                .map_err(store_error)?;
            Ok(())
        }

        async fn get(
            pool: &sqlx::Pool<$db>,
            key_id: &KeyId,
        ) -> Result<Option<std::sync::Arc<KeyRecord>>, StoreError> {
            let row = sqlx::query(sql::GET)
                .bind(key_id.as_str())
                .fetch_optional(pool)
                .await
                .map_err(store_error)?;
            row.map(|row| decode(&row).map(std::sync::Arc::new))
                .transpose()
        }

        async fn list(pool: &sqlx::Pool<$db>, team_id: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
            let rows = sqlx::query(sql::LIST)
                .bind(team_id.as_str())
                .fetch_all(pool)
                .await
                .map_err(store_error)?;
            rows.iter().map(decode).collect()
        }

        async fn list_active(
            pool: &sqlx::Pool<$db>,
            team_id: &TeamId,
            query: &ListQuery,
        ) -> Result<Vec<KeyRecord>, StoreError> {
            let now = to_db(query.now)?;
            // Past i64 rows is past any table: no bound at all.
            let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
            let after = match query
                .after
                .map(|c| (cursor_bound(c.created_at()), c.key_id()))
            {
                None | Some((CursorBound::Everything, _)) => None,
                Some((CursorBound::Nothing, _)) => return Ok(Vec::new()),
                Some((CursorBound::At(at), id)) => Some((to_db(at)?, id)),
            };
            let rows = match after {
                None => {
                    sqlx::query(sql::LIST_ACTIVE)
                        .bind(team_id.as_str())
                        .bind(now)
                        .bind(limit)
                        .fetch_all(pool)
                        .await
                }
                Some((at, id)) => {
                    sqlx::query(sql::LIST_ACTIVE_AFTER)
                        .bind(team_id.as_str())
                        .bind(now)
                        .bind(at)
                        .bind(at)
                        .bind(id.as_str())
                        .bind(limit)
                        .fetch_all(pool)
                        .await
                }
            }
            .map_err(store_error)?;
            rows.iter().map(decode).collect()
        }

        async fn count_active(
            pool: &sqlx::Pool<$db>,
            team_id: &TeamId,
            now: OffsetDateTime,
        ) -> Result<usize, StoreError> {
            let count: i64 = sqlx::query_scalar(sql::COUNT_ACTIVE)
                .bind(team_id.as_str())
                .bind(to_db(now)?)
                .fetch_one(pool)
                .await
                .map_err(store_error)?;
            usize::try_from(count).map_err(|_| StoreError::backend(format!("COUNT(*) answered {count}")))
        }

        async fn revoke(
            pool: &sqlx::Pool<$db>,
            team_id: &TeamId,
            key_id: &KeyId,
            at: OffsetDateTime,
        ) -> Result<bool, StoreError> {
            let done = sqlx::query(sql::REVOKE)
                .bind(to_db(at)?)
                .bind(key_id.as_str())
                .bind(team_id.as_str())
                .execute(pool)
                .await
                .map_err(store_error)?;
            Ok(done.rows_affected() == 1)
        }

        async fn rotate(pool: &sqlx::Pool<$db>, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
            // Every time checked before the transaction starts: a refusal
            // leaves nothing to undo.
            let retire_at = to_db(rotation.retire_at)?;
            let s = &rotation.successor;
            for at in [
                Some(s.created_at),
                s.last_used_at,
                s.expires_at,
                s.revoked_at,
            ]
            .into_iter()
            .flatten()
            {
                to_db(at)?;
            }
            let mut tx = pool.begin_with($begin).await.map_err(store_error)?;
            let locked: Option<Option<String>> = sqlx::query_scalar(sql::LOCK_FOR_ROTATION)
                .bind(rotation.old.as_str())
                .bind(rotation.team_id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_error)?;
            let outcome = match locked {
                None => RotateOutcome::NotFound,
                Some(Some(_)) => RotateOutcome::AlreadyRotated,
                Some(None) => {
                    sqlx::query(sql::RETIRE)
                        .bind(rotation.successor.id.as_str())
                        .bind(retire_at)
                        .bind(retire_at)
                        .bind(rotation.old.as_str())
                        .execute(&mut *tx)
                        .await
                        .map_err(store_error)?;
                    insert_record(&mut *tx, &rotation.successor).await?;
                    RotateOutcome::Rotated
                }
            };
            // Nothing was written unless rotated; committing either way
            // releases the lock at once.
            tx.commit().await.map_err(store_error)?;
            Ok(outcome)
        }

        #[async_trait::async_trait]
        impl teamkey_core::KeyStore for crate::SqlxStore<$db> {
            async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
                self.watched(insert_record(&self.pool, record).await)
            }

            async fn get(&self, key_id: &KeyId) -> Result<Option<std::sync::Arc<KeyRecord>>, StoreError> {
                self.watched(get(&self.pool, key_id).await)
            }

            async fn list(&self, team_id: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
                self.watched(list(&self.pool, team_id).await)
            }

            async fn list_active(
                &self,
                team_id: &TeamId,
                query: &ListQuery,
            ) -> Result<Vec<KeyRecord>, StoreError> {
                self.watched(list_active(&self.pool, team_id, query).await)
            }

            async fn count_active(&self, team_id: &TeamId, now: OffsetDateTime) -> Result<usize, StoreError> {
                self.watched(count_active(&self.pool, team_id, now).await)
            }

            async fn revoke(
                &self,
                team_id: &TeamId,
                key_id: &KeyId,
                at: OffsetDateTime,
            ) -> Result<bool, StoreError> {
                self.watched(revoke(&self.pool, team_id, key_id, at).await)
            }

            async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
                self.watched(rotate(&self.pool, rotation).await)
            }

            async fn record_last_used(&self, uses: &[KeyUse]) -> Result<(), StoreError> {
                if uses.is_empty() {
                    return Ok(());
                }
                self.watched($touch(&self.pool, uses).await)
            }
        }
    };
}
