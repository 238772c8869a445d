//! What both bench servers share: the key store and acme's three scans.

use serde::Serialize;
use teamkey::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use teamkey::{KeyManager, MemoryStore, SqlxStore};

#[derive(Clone, Serialize)]
pub(crate) struct Scan {
    pub(crate) id: &'static str,
    pub(crate) team: &'static str,
    pub(crate) target: &'static str,
    pub(crate) status: &'static str,
    pub(crate) created_at: &'static str,
}

pub(crate) const SCANS: [Scan; 3] = [
    Scan {
        id: "scn_acme_3",
        team: "acme",
        target: "github.com/acme/mobile",
        status: "running",
        created_at: "2026-11-22T09:00:00Z",
    },
    Scan {
        id: "scn_acme_2",
        team: "acme",
        target: "github.com/acme/api",
        status: "completed",
        created_at: "2026-11-21T09:00:00Z",
    },
    Scan {
        id: "scn_acme_1",
        team: "acme",
        target: "github.com/acme/web",
        status: "completed",
        created_at: "2026-11-20T09:00:00Z",
    },
];

#[derive(Serialize)]
pub(crate) struct Page {
    pub(crate) data: Vec<Scan>,
}

/// The key store to bench: `memory`, or `sqlite` in a temporary file.
pub(crate) async fn manager(store: &str) -> Result<KeyManager, Box<dyn std::error::Error>> {
    Ok(match store {
        "memory" => KeyManager::new(MemoryStore::new()),
        "sqlite" => {
            let path = std::env::temp_dir().join(format!("teamkey-http-bench-{}.db", std::process::id()));
            let options = SqliteConnectOptions::new().filename(path).create_if_missing(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await?;
            let store = SqlxStore::new(pool);
            store.migrate().await?;
            KeyManager::new(store)
        }
        other => return Err(format!("unknown store {other:?}: use memory or sqlite").into()),
    })
}
