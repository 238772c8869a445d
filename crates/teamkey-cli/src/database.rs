//! From a database URL to a migrated store, whichever database it names.

use std::time::Duration;

use teamkey_core::{KeyFormat, KeyManager, Pepper};
use teamkey_sqlx::SqlxStore;
use teamkey_sqlx::sqlx::pool::PoolOptions;
use teamkey_sqlx::sqlx::{self, MySql, Postgres, Sqlite};

use crate::Failure;

/// A store on one of the three databases.
pub(crate) enum Store {
    Postgres(SqlxStore<Postgres>),
    MySql(SqlxStore<MySql>),
    Sqlite(SqlxStore<Sqlite>),
}

/// The URL's scheme, for messages: the rest may hold a password.
fn scheme(url: &str) -> &str {
    url.split_once(':').map_or("?", |(scheme, _)| scheme)
}

/// A command needs one connection, and should not wait long for it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects once, directly: a pool that cannot connect only says it timed
/// out, a connection says why ("connection refused", "password
/// authentication failed", "unable to open database file"...).
async fn pool<DB: sqlx::Database>(url: &str) -> Result<sqlx::Pool<DB>, Failure> {
    let failed = |why: String| Failure(format!("cannot connect to the {} database: {why}", scheme(url)));
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        <DB::Connection as sqlx::Connection>::connect(url),
    )
    .await
    {
        Err(_) => {
            return Err(failed(format!(
                "no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Ok(Ok(probe)) => drop(probe),
    }
    PoolOptions::new()
        .max_connections(1)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect(url)
        .await
        .map_err(|e| failed(e.to_string()))
}

pub(crate) async fn connect(url: &str) -> Result<Store, Failure> {
    let store = match scheme(url) {
        "postgres" | "postgresql" => Store::Postgres(SqlxStore::new(pool(url).await?)),
        "mysql" | "mariadb" => {
            let url = url.replacen("mariadb:", "mysql:", 1);
            Store::MySql(SqlxStore::new(pool(&url).await?))
        }
        "sqlite" => Store::Sqlite(SqlxStore::new(pool(url).await?)),
        other => {
            return Err(Failure(format!(
                "unsupported database URL scheme {other:?}: use postgres://, mysql://, mariadb:// or sqlite://"
            )));
        }
    };
    Ok(store)
}

impl Store {
    pub(crate) async fn migrate(&self) -> Result<(), Failure> {
        let result = match self {
            Self::Postgres(s) => s.migrate().await,
            Self::MySql(s) => s.migrate().await,
            Self::Sqlite(s) => s.migrate().await,
        };
        result.map_err(|e| Failure(format!("cannot migrate the database: {e}")))
    }

    /// A manager with the service's key format and pepper, if it has one.
    pub(crate) fn into_manager(self, format: KeyFormat, pepper: Option<Pepper>) -> KeyManager {
        let builder = match self {
            Self::Postgres(s) => KeyManager::builder(s),
            Self::MySql(s) => KeyManager::builder(s),
            Self::Sqlite(s) => KeyManager::builder(s),
        }
        .format(format);
        match pepper {
            Some(pepper) => builder.pepper(pepper).build(),
            None => builder.build(),
        }
    }
}
