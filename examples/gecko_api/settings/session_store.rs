//! tower-sessions' `SessionStore` on the demo's own sqlx pool (SQLite,
//! PostgreSQL or MySQL/MariaDB). `tower-sessions-sqlx-store` is built on
//! sqlx 0.8, whose SQLite library cannot link beside sqlx 0.9; the trait is
//! small, so the demo implements it.
//!
//! The table keeps the SHA-256 of each session id, never the id itself: a
//! copy of the database signs no one in.

use std::fmt;

use sha2::{Digest, Sha256};
use teamkey::sqlx;
use teamkey::time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion, SessionStore};

use crate::demo::Db;

struct Sql {
    create: &'static str,
    insert: &'static str,
    upsert: &'static str,
    load: &'static str,
    delete: &'static str,
    delete_expired: &'static str,
}

const SQLITE: Sql = Sql {
    create: "CREATE TABLE IF NOT EXISTS demo_sessions (id_hash VARCHAR(64) PRIMARY KEY, \
             data TEXT NOT NULL, expires_at BIGINT NOT NULL)",
    insert: "INSERT INTO demo_sessions (id_hash, data, expires_at) VALUES (?, ?, ?)",
    upsert: "INSERT INTO demo_sessions (id_hash, data, expires_at) VALUES (?, ?, ?) \
             ON CONFLICT (id_hash) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
    load: "SELECT data, expires_at FROM demo_sessions WHERE id_hash = ? AND expires_at > ?",
    delete: "DELETE FROM demo_sessions WHERE id_hash = ?",
    delete_expired: "DELETE FROM demo_sessions WHERE expires_at <= ?",
};

const POSTGRES: Sql = Sql {
    create: SQLITE.create,
    insert: "INSERT INTO demo_sessions (id_hash, data, expires_at) VALUES ($1, $2, $3)",
    upsert: "INSERT INTO demo_sessions (id_hash, data, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id_hash) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
    load: "SELECT data, expires_at FROM demo_sessions WHERE id_hash = $1 AND expires_at > $2",
    delete: "DELETE FROM demo_sessions WHERE id_hash = $1",
    delete_expired: "DELETE FROM demo_sessions WHERE expires_at <= $1",
};

const MYSQL: Sql = Sql {
    create: SQLITE.create,
    insert: SQLITE.insert,
    upsert: "INSERT INTO demo_sessions (id_hash, data, expires_at) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE data = VALUES(data), expires_at = VALUES(expires_at)",
    load: SQLITE.load,
    delete: SQLITE.delete,
    delete_expired: SQLITE.delete_expired,
};

/// How often `create` draws a new id after a collision (2^-128 each)
/// before it gives up.
const ID_ATTEMPTS: usize = 4;

/// Sessions in the demo's database.
#[derive(Clone)]
pub(crate) struct SqlSessionStore {
    db: Db,
}

// tower-sessions wants `Debug`; the pool's own would print its options.
impl fmt::Debug for SqlSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlSessionStore").finish_non_exhaustive()
    }
}

impl SqlSessionStore {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }
}

/// The sessions table, if absent.
pub(crate) async fn create_table(db: &Db) -> Result<(), sqlx::Error> {
    crate::demo::on_db!(db, |pool, sql| {
        sqlx::query(sql.create).execute(pool).await?;
    });
    Ok(())
}

/// What the table keeps of an id: its SHA-256, in hex.
fn id_hash(id: &Id) -> String {
    hex::encode(Sha256::digest(id.to_string().as_bytes()))
}

fn backend(e: sqlx::Error) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[teamkey::async_trait]
impl SessionStore for SqlSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let data =
            serde_json::to_string(&record.data).map_err(|e| session_store::Error::Encode(e.to_string()))?;
        for _ in 0..ID_ATTEMPTS {
            let hash = id_hash(&record.id);
            let expires_at = record.expiry_date.unix_timestamp();
            let inserted = crate::demo::on_db!(&self.db, |pool, sql| {
                sqlx::query(sql.insert)
                    .bind(&hash)
                    .bind(&data)
                    .bind(expires_at)
                    .execute(pool)
                    .await
                    .map(drop)
            });
            match inserted {
                Ok(_) => return Ok(()),
                // Never seen in practice; a new random id is the answer.
                Err(e) if is_unique_violation(&e) => record.id = Id::default(),
                Err(e) => return Err(backend(e)),
            }
        }
        Err(session_store::Error::Backend("no free session id".into()))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let data =
            serde_json::to_string(&record.data).map_err(|e| session_store::Error::Encode(e.to_string()))?;
        let hash = id_hash(&record.id);
        let expires_at = record.expiry_date.unix_timestamp();
        crate::demo::on_db!(&self.db, |pool, sql| {
            sqlx::query(sql.upsert)
                .bind(&hash)
                .bind(&data)
                .bind(expires_at)
                .execute(pool)
                .await
                .map_err(backend)?;
        });
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let hash = id_hash(id);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let row: Option<(String, i64)> = crate::demo::on_db!(&self.db, |pool, sql| {
            sqlx::query_as(sql.load)
                .bind(&hash)
                .bind(now)
                .fetch_optional(pool)
                .await
                .map_err(backend)?
        });
        let Some((data, expires_at)) = row else {
            return Ok(None);
        };
        Ok(Some(Record {
            id: *id,
            data: serde_json::from_str(&data).map_err(|e| session_store::Error::Decode(e.to_string()))?,
            expiry_date: OffsetDateTime::from_unix_timestamp(expires_at)
                .map_err(|e| session_store::Error::Decode(e.to_string()))?,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let hash = id_hash(id);
        crate::demo::on_db!(&self.db, |pool, sql| {
            sqlx::query(sql.delete)
                .bind(&hash)
                .execute(pool)
                .await
                .map_err(backend)?;
        });
        Ok(())
    }
}

#[teamkey::async_trait]
impl ExpiredDeletion for SqlSessionStore {
    async fn delete_expired(&self) -> session_store::Result<()> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        crate::demo::on_db!(&self.db, |pool, sql| {
            sqlx::query(sql.delete_expired)
                .bind(now)
                .execute(pool)
                .await
                .map_err(backend)?;
        });
        Ok(())
    }
}

/// Deletes expired sessions once an hour, for ever. Expired sessions are
/// never loaded anyway; this only keeps the table small. (tower-sessions'
/// own loop stops at the first error; this one logs it and goes on.)
pub(crate) async fn delete_expired_hourly(store: SqlSessionStore) {
    let mut every_hour = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        every_hour.tick().await;
        if let Err(e) = store.delete_expired().await {
            tracing::warn!(error = %e, "deleting expired sessions failed; retried in an hour");
        }
    }
}
