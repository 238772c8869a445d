//! What both bench servers share: the key store, the bench keys and
//! acme's three scans.

use std::error::Error;
use std::path::PathBuf;

use serde::Serialize;
use teamkey::sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use teamkey::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use teamkey::sqlx::{AssertSqlSafe, Postgres, Sqlite};
use teamkey::{
    CreateOptions, KeyManager, LocalRateLimiter, MemoryStore, NewKey, RateLimit, SqlxStore, TeamId,
};

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

/// `TEAMKEY_BENCH_STAND_IN`, if set: nanoseconds, a plain number. Anything
/// else stops the server, rather than measure real auth under the
/// stand-in's name.
pub(crate) fn stand_in() -> Option<u64> {
    let value = std::env::var("TEAMKEY_BENCH_STAND_IN").ok()?;
    match value.parse() {
        Ok(ns) => Some(ns),
        Err(_) => {
            eprintln!("TEAMKEY_BENCH_STAND_IN is nanoseconds, a plain number such as 200, not {value:?}");
            std::process::exit(2);
        }
    }
}

/// The stand-in's pure CPU time: spins on the clock for `spin` (about
/// 20 ns a turn), and reads no clock at all for zero, so that zero
/// measures the stand-in's extractor alone.
pub(crate) fn spin_for(spin: std::time::Duration) {
    if !spin.is_zero() {
        let start = std::time::Instant::now();
        while start.elapsed() < spin {
            std::hint::spin_loop();
        }
    }
}

/// The store names the bench servers take.
pub(crate) const STORES: &str = "memory, memory-limited, sqlite, sqlite-cached, postgres, postgres-cached";

/// `memory-limited`'s quota: far above what one core can serve, so never
/// hit; every request is counted and answered with the `RateLimit` headers.
const NEVER_HIT: (u32, std::time::Duration) = (1_000_000, std::time::Duration::from_secs(1));

/// Where `postgres` connects unless `TEAMKEY_BENCH_POSTGRES_URL` says otherwise.
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The manager over `store`, behind the verification cache (fed by the
/// database's own change feed) when `cached`. A macro: written once for
/// every `SqlxStore<DB>`.
macro_rules! manager_over {
    ($store:expr, $cached:expr) => {{
        let store = $store;
        let manager: Result<KeyManager, Box<dyn Error>> = if $cached {
            Ok(KeyManager::builder(store.clone())
                .cache(store.invalidations())
                .build())
        } else {
            Ok(KeyManager::new(store))
        };
        manager
    }};
}

/// The key manager to bench, and what to remove once the server stops.
pub(crate) struct Bench {
    pub(crate) keys: KeyManager,
    /// The bench key's rate limit (`memory-limited`): the server then
    /// serves a second key, without one, to compare with.
    pub(crate) limit: Option<RateLimit>,
    cleanup: Cleanup,
}

/// The keys a bench server loads with.
pub(crate) struct BenchKeys {
    /// The key of the `KEY=` line.
    pub(crate) key: NewKey,
    /// With a limited store, a key of the same manager without a limit:
    /// the `UNLIMITED_KEY=` line, the baseline of the limit's cost.
    pub(crate) unlimited: Option<NewKey>,
}

enum Cleanup {
    Nothing,
    /// The SQLite database file (and its WAL files).
    File(PathBuf),
    /// The PostgreSQL schema of this run, with a connection to drop it.
    Schema {
        admin: PgPool,
        name: String,
    },
}

impl Cleanup {
    async fn run(self) {
        match self {
            Self::Nothing => {}
            Self::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            Self::Schema { admin, name } => {
                let sql = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
                if let Err(e) = teamkey::sqlx::query(AssertSqlSafe(sql)).execute(&admin).await {
                    eprintln!("could not drop schema {name}: {e}");
                }
            }
        }
    }
}

impl Bench {
    /// The key store to bench, by name (see [`STORES`]). `-cached` puts the
    /// verification cache in front of the SQL store.
    pub(crate) async fn new(store: &str) -> Result<Self, Box<dyn Error>> {
        let (backend, cached) = match store.strip_suffix("-cached") {
            Some(backend) => (backend, true),
            None => (store, false),
        };
        let mut limit = None;
        let (keys, cleanup) = match backend {
            "memory" if !cached => (Ok(KeyManager::new(MemoryStore::new())), Cleanup::Nothing),
            "memory-limited" if !cached => {
                limit = Some(RateLimit::new(NEVER_HIT.0, NEVER_HIT.1)?);
                // No default limit: the limit is the bench key's own, so
                // that the unlimited key is served by the same manager.
                let keys = KeyManager::builder(MemoryStore::new())
                    .rate_limiter(LocalRateLimiter::new())
                    .build();
                (Ok(keys), Cleanup::Nothing)
            }
            "sqlite" => {
                let path = std::env::temp_dir().join(format!("teamkey-http-bench-{}.db", std::process::id()));
                let keys = match sqlite(&path).await {
                    Ok(store) => manager_over!(store, cached),
                    Err(e) => Err(e),
                };
                (keys, Cleanup::File(path))
            }
            "postgres" => {
                let url = std::env::var("TEAMKEY_BENCH_POSTGRES_URL")
                    .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
                // A schema of this run's own: the tests' tables stay untouched.
                let name = format!("teamkey_http_bench_{}", std::process::id());
                let admin = PgPoolOptions::new().max_connections(1).connect(&url).await?;
                let sql = format!("CREATE SCHEMA {name}");
                teamkey::sqlx::query(AssertSqlSafe(sql)).execute(&admin).await?;
                let keys = match postgres(&url, &name).await {
                    Ok(store) => manager_over!(store, cached),
                    Err(e) => Err(e),
                };
                (keys, Cleanup::Schema { admin, name })
            }
            _ => return Err(format!("unknown store {store:?}: use one of {STORES}").into()),
        };
        match keys {
            Ok(keys) => Ok(Self { keys, limit, cleanup }),
            Err(e) => {
                cleanup.run().await;
                Err(e)
            }
        }
    }

    /// acme's bench key (with the store's limit, if any) and, with a
    /// limit, one without.
    pub(crate) async fn keys(&self) -> Result<BenchKeys, Box<dyn Error>> {
        let acme = TeamId::new("acme")?;
        let mut options = CreateOptions::default();
        options.rate_limit = self.limit;
        let key = self.keys.create(&acme, "bench", options).await?;
        let unlimited = match self.limit {
            Some(_) => Some(
                self.keys
                    .create(&acme, "bench, no limit", CreateOptions::default())
                    .await?,
            ),
            None => None,
        };
        Ok(BenchKeys { key, unlimited })
    }

    /// What the server prints for `benches/http-throughput.sh`:
    /// `KEY=… AUTH=port OPEN=port`, and ` UNLIMITED_KEY=…` with a limit.
    pub(crate) fn announce(keys: &BenchKeys, auth: u16, open: u16) {
        let mut line = format!("KEY={} AUTH={auth} OPEN={open}", keys.key.key.expose_secret());
        if let Some(unlimited) = &keys.unlimited {
            line.push_str(&format!(" UNLIMITED_KEY={}", unlimited.key.expose_secret()));
        }
        println!("{line}");
    }

    /// Removes what the store left behind: call it when the servers stop.
    pub(crate) async fn cleanup(self) {
        self.cleanup.run().await;
    }
}

async fn sqlite(path: &std::path::Path) -> Result<SqlxStore<Sqlite>, Box<dyn Error>> {
    let options = SqliteConnectOptions::new().filename(path).create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    let store = SqlxStore::new(pool);
    store.migrate().await?;
    Ok(store)
}

async fn postgres(url: &str, schema: &str) -> Result<SqlxStore<Postgres>, Box<dyn Error>> {
    let options: PgConnectOptions = url.parse()?;
    let options = options.options([("search_path", schema)]);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    let store = SqlxStore::new(pool);
    store.migrate().await?;
    Ok(store)
}
