//! What the three databases share: row decoding, error mapping, the batch
//! update builder, and the `KeyStore` implementation itself, which each
//! database module instantiates with its own SQL.

use teamkey_core::{HashVersion, KeyId, KeyName, KeyRecord, Scopes, SecretDigest, StoreError, TeamId};
use time::OffsetDateTime;

/// The columns of `api_keys`, in `KeyRecord` order (a literal, for `concat!`).
macro_rules! columns {
    () => {
        "id, team_id, name, preview, digest, hash_version, scopes, \
         created_at, last_used_at, expires_at, revoked_at, replaced_by"
    };
}

/// The statements MySQL and SQLite share: both take `?` parameters.
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
}

/// Keys per last-used statement on databases that take them as bind
/// parameters (4 parameters each; MySQL allows 65,535, SQLite 32,766).
pub(crate) const TOUCH_CHUNK: usize = 1_000;

/// Unique violations are key-id collisions; everything else is the backend's.
pub(crate) fn store_error(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::backend(error),
    }
}

/// Scopes are stored space-separated: no scope can contain a space.
pub(crate) fn scopes_text(scopes: &Scopes) -> String {
    let parts: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    parts.join(" ")
}

/// A row as read, before validation.
pub(crate) struct RawRecord {
    pub(crate) id: String,
    pub(crate) team_id: String,
    pub(crate) name: String,
    pub(crate) preview: String,
    pub(crate) digest: Vec<u8>,
    pub(crate) hash_version: i16,
    pub(crate) scopes: String,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) last_used_at: Option<OffsetDateTime>,
    pub(crate) expires_at: Option<OffsetDateTime>,
    pub(crate) revoked_at: Option<OffsetDateTime>,
    pub(crate) replaced_by: Option<String>,
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::backend(format!("api_keys row has an invalid {what}: {detail}"))
}

impl RawRecord {
    /// The record, or a backend error naming the bad column: a row that
    /// breaks teamkey's rules was not written by teamkey.
    pub(crate) fn into_record(self) -> Result<KeyRecord, StoreError> {
        let digest: [u8; 32] = self
            .digest
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("digest", "not 32 bytes"))?;
        let mut record = KeyRecord::new(
            KeyId::parse(&self.id).map_err(|e| corrupt("id", e))?,
            TeamId::new(&self.team_id).map_err(|e| corrupt("team_id", e))?,
            KeyName::new(&self.name).map_err(|e| corrupt("name", e))?,
            self.preview,
            SecretDigest::from_bytes(digest),
            HashVersion::from_code(self.hash_version)
                .ok_or_else(|| corrupt("hash_version", self.hash_version))?,
            Scopes::new(self.scopes.split_whitespace()).map_err(|e| corrupt("scopes", e))?,
            self.created_at,
        );
        record.last_used_at = self.last_used_at;
        record.expires_at = self.expires_at;
        record.revoked_at = self.revoked_at;
        record.replaced_by = self
            .replaced_by
            .map(|id| KeyId::parse(&id))
            .transpose()
            .map_err(|e| corrupt("replaced_by", e))?;
        Ok(record)
    }
}

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

/// `touch(pool, uses)` for databases without array parameters: one
/// `touch_case_sql` statement per [`TOUCH_CHUNK`] keys, times through the
/// calling module's `to_db`.
macro_rules! impl_touch_by_case {
    ($pool:ty) => {
        async fn touch(pool: &$pool, uses: &[KeyUse]) -> Result<(), sqlx::Error> {
            for chunk in uses.chunks(crate::common::TOUCH_CHUNK) {
                // Built from fixed fragments and `?` only (see touch_case_sql).
                let sql = crate::common::touch_case_sql(chunk.len());
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for u in chunk {
                    query = query
                        .bind(u.key_id.as_str())
                        .bind(to_db(u.at))
                        .bind(to_db(u.at));
                }
                for u in chunk {
                    query = query.bind(u.key_id.as_str());
                }
                query.execute(pool).await?;
            }
            Ok(())
        }
    };
}

/// Implements `KeyStore` for `SqlxStore<$db>` from the calling module's
/// `sql` constants and its `to_db`/`from_db` time conversions.
macro_rules! impl_key_store {
    (
        db: $db:ty,
        row: $row:ty,
        begin_rotation: $begin:expr,
        touch: $touch:ident $(,)?
    ) => {
        use sqlx::Row as _;
        use teamkey_core::{KeyId, KeyRecord, KeyUse, RotateOutcome, Rotation, StoreError, TeamId};
        use time::OffsetDateTime;

        use crate::common::{RawRecord, scopes_text, store_error};

        fn decode(row: &$row) -> Result<KeyRecord, StoreError> {
            let raw = (|| -> Result<RawRecord, sqlx::Error> {
                Ok(RawRecord {
                    id: row.try_get("id")?,
                    team_id: row.try_get("team_id")?,
                    name: row.try_get("name")?,
                    preview: row.try_get("preview")?,
                    digest: row.try_get("digest")?,
                    hash_version: row.try_get("hash_version")?,
                    scopes: row.try_get("scopes")?,
                    created_at: from_db(row.try_get("created_at")?)?,
                    last_used_at: row
                        .try_get::<Option<DbTime>, _>("last_used_at")?
                        .map(from_db)
                        .transpose()?,
                    expires_at: row
                        .try_get::<Option<DbTime>, _>("expires_at")?
                        .map(from_db)
                        .transpose()?,
                    revoked_at: row
                        .try_get::<Option<DbTime>, _>("revoked_at")?
                        .map(from_db)
                        .transpose()?,
                    replaced_by: row.try_get("replaced_by")?,
                })
            })()
            .map_err(StoreError::backend)?;
            raw.into_record()
        }

        async fn insert_record<'e, E>(executor: E, r: &KeyRecord) -> Result<(), StoreError>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            sqlx::query(sql::INSERT)
                .bind(r.id.as_str())
                .bind(r.team_id.as_str())
                .bind(r.name.as_str())
                .bind(r.preview.as_str())
                .bind(&r.digest.as_bytes()[..])
                .bind(r.hash_version.code())
                .bind(scopes_text(&r.scopes))
                .bind(to_db(r.created_at))
                .bind(r.last_used_at.map(to_db))
                .bind(r.expires_at.map(to_db))
                .bind(r.revoked_at.map(to_db))
                .bind(r.replaced_by.as_ref().map(KeyId::as_str))
                .execute(executor)
                .await
                .map_err(store_error)?;
            Ok(())
        }

        #[async_trait::async_trait]
        impl teamkey_core::KeyStore for crate::SqlxStore<$db> {
            async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
                insert_record(&self.pool, record).await
            }

            async fn get(&self, key_id: &KeyId) -> Result<Option<std::sync::Arc<KeyRecord>>, StoreError> {
                let row = sqlx::query(sql::GET)
                    .bind(key_id.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(store_error)?;
                row.map(|row| decode(&row).map(std::sync::Arc::new))
                    .transpose()
            }

            async fn list(&self, team_id: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
                let rows = sqlx::query(sql::LIST)
                    .bind(team_id.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(store_error)?;
                rows.iter().map(decode).collect()
            }

            async fn revoke(
                &self,
                team_id: &TeamId,
                key_id: &KeyId,
                at: OffsetDateTime,
            ) -> Result<bool, StoreError> {
                let done = sqlx::query(sql::REVOKE)
                    .bind(to_db(at))
                    .bind(key_id.as_str())
                    .bind(team_id.as_str())
                    .execute(&self.pool)
                    .await
                    .map_err(store_error)?;
                Ok(done.rows_affected() == 1)
            }

            async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
                let mut tx = self.pool.begin_with($begin).await.map_err(store_error)?;
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
                            .bind(to_db(rotation.retire_at))
                            .bind(to_db(rotation.retire_at))
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

            async fn record_last_used(&self, uses: &[KeyUse]) -> Result<(), StoreError> {
                if uses.is_empty() {
                    return Ok(());
                }
                $touch(&self.pool, uses).await.map_err(store_error)
            }
        }
    };
}
