//! What the axum and actix-web demo servers share: configuration, the demo
//! data, the quickstart key and the scans query. No web framework here.

use serde::Serialize;
use teamkey::sqlx::{self, SqlitePool};
use teamkey::{CreateOptions, KeyFormat, KeyManager, NewKey, Scopes, SqlxStore, TeamId};

/// `DATABASE_URL`, `BIND_ADDR`, `TEAMKEY_PREFIX`, with their defaults.
pub(crate) struct Config {
    pub(crate) database_url: String,
    pub(crate) bind_addr: String,
    pub(crate) prefix: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

impl Config {
    pub(crate) fn from_env() -> Self {
        Self {
            database_url: env_or("DATABASE_URL", "sqlite://gecko_api.db?mode=rwc"),
            bind_addr: env_or("BIND_ADDR", "127.0.0.1:3000"),
            prefix: env_or("TEAMKEY_PREFIX", teamkey::DEFAULT_PREFIX),
        }
    }
}

/// Opens and migrates the database, seeds the demo data, builds the manager.
pub(crate) async fn open(config: &Config) -> Result<(SqlitePool, KeyManager), Box<dyn std::error::Error>> {
    let db = SqlitePool::connect(&config.database_url).await?;
    let store = SqlxStore::new(db.clone());
    store.migrate().await?;
    prepare(&db).await?;
    let keys = KeyManager::builder(store)
        .format(KeyFormat::new(&config.prefix)?)
        .build();
    Ok((db, keys))
}

/// The scans table, and teams `acme` and `globex` with a few scans each.
pub(crate) async fn prepare(db: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS scans (id TEXT PRIMARY KEY, team TEXT NOT NULL, \
         target TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL)",
    )
    .execute(db)
    .await?;
    let seed = [
        (
            "scn_acme_1",
            "acme",
            "github.com/acme/web",
            "completed",
            "2026-11-20T09:00:00Z",
        ),
        (
            "scn_acme_2",
            "acme",
            "github.com/acme/api",
            "completed",
            "2026-11-21T09:00:00Z",
        ),
        (
            "scn_acme_3",
            "acme",
            "github.com/acme/mobile",
            "running",
            "2026-11-22T09:00:00Z",
        ),
        (
            "scn_globex_1",
            "globex",
            "github.com/globex/core",
            "completed",
            "2026-11-20T10:00:00Z",
        ),
        (
            "scn_globex_2",
            "globex",
            "github.com/globex/billing",
            "failed",
            "2026-11-21T10:00:00Z",
        ),
    ];
    for (id, team, target, status, created_at) in seed {
        sqlx::query(
            "INSERT OR IGNORE INTO scans (id, team, target, status, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(team)
        .bind(target)
        .bind(status)
        .bind(created_at)
        .execute(db)
        .await?;
    }
    Ok(())
}

/// The scopes the demo's routes check: reading scans needs none beyond a
/// key of the team; starting one needs `scans:write`.
pub(crate) const SCANS_WRITE: &str = "scans:write";

/// The Quickstart key's scopes: it manages keys and may grant the demo's
/// scopes, since a key grants only what it holds.
pub(crate) const QUICKSTART_SCOPES: [&str; 3] = ["keys:manage", "scans:read", SCANS_WRITE];

/// A `Quickstart` key for `acme` if acme has no key yet, printed once with
/// a ready curl line.
pub(crate) async fn announce_quickstart(
    keys: &KeyManager,
    addr: &str,
    config: &Config,
) -> Result<(), Box<dyn std::error::Error>> {
    match quickstart_key(keys).await? {
        Some(new) => {
            let key = new.key.expose_secret();
            let scopes = QUICKSTART_SCOPES.join(", ");
            println!(
                "\nCreated the team acme's first API key, \"Quickstart\" ({scopes}). It is shown only this once:\n\n  {key}\n"
            );
            // The URL is quoted: zsh would glob the `?`.
            println!(
                "Try it:\n\n  curl 'http://{addr}/api/v1/scans?limit=10' -H 'X-API-Key: {key}' -H 'Accept: application/json'\n"
            );
        }
        None => println!(
            "\nacme already has API keys; create more against this server's database with\n\n  \
             teamkey --database-url '{}' create --team acme --name NAME\n",
            config.database_url
        ),
    }
    println!("Gecko API listening on http://{addr}");
    Ok(())
}

/// A `Quickstart` key for `acme` if acme has none.
pub(crate) async fn quickstart_key(keys: &KeyManager) -> Result<Option<NewKey>, Box<dyn std::error::Error>> {
    let acme = TeamId::new("acme")?;
    if !keys.list(&acme).await?.is_empty() {
        return Ok(None);
    }
    let options = CreateOptions::new().scopes(Scopes::new(QUICKSTART_SCOPES)?);
    Ok(Some(keys.create(&acme, "Quickstart", options).await?))
}

/// One scan of the demo data.
#[derive(Debug, Serialize)]
struct Scan {
    id: String,
    team: String,
    target: String,
    status: String,
    created_at: String,
}

/// `GET /api/v1/scans?limit=N` for `team`: a status and a JSON body.
/// `limit` is 1 to 100, 20 when absent; anything else is a 400.
pub(crate) async fn scans(db: &SqlitePool, team: &TeamId, limit: Option<&str>) -> (u16, String) {
    let error = |status: u16, code: &str, message: &str| {
        (
            status,
            serde_json::json!({ "error": code, "message": message }).to_string(),
        )
    };
    let limit = match limit.map(str::parse::<u8>) {
        None => 20,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return error(400, "invalid_request", "limit must be an integer from 1 to 100"),
    };
    // Every query is scoped by the caller's team.
    let rows = sqlx::query_as::<_, (String, String, String, String, String)>(
        "SELECT id, team, target, status, created_at FROM scans WHERE team = ? \
         ORDER BY created_at DESC, id LIMIT ?",
    )
    .bind(team.as_str())
    .bind(i64::from(limit))
    .fetch_all(db)
    .await;
    match rows {
        Ok(rows) => {
            let data: Vec<Scan> = rows
                .into_iter()
                .map(|(id, team, target, status, created_at)| Scan {
                    id,
                    team,
                    target,
                    status,
                    created_at,
                })
                .collect();
            (200, serde_json::json!({ "data": data }).to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "scans query failed");
            error(503, "unavailable", "Scans are unavailable.")
        }
    }
}

/// `POST /api/v1/scans` with `{"target": "..."}` for `team`: starts a scan
/// (here: records it as `queued`). A status and a JSON body.
pub(crate) async fn start_scan(db: &SqlitePool, team: &TeamId, body: &[u8]) -> (u16, String) {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        target: String,
    }
    let error = |status: u16, code: &str, message: &str| {
        (
            status,
            serde_json::json!({ "error": code, "message": message }).to_string(),
        )
    };
    let target = match serde_json::from_slice::<Request>(body) {
        Ok(r) if (1..=200).contains(&r.target.chars().count()) && !r.target.chars().any(char::is_control) => {
            r.target
        }
        _ => {
            return error(
                422,
                "invalid_request",
                "Send {\"target\": \"...\"}: 1 to 200 characters, no control characters.",
            );
        }
    };
    // Whole seconds, like the seeded scans.
    let now = teamkey::time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    // Unique enough for a demo: one SQLite file, a nanosecond clock.
    let id = format!(
        "scn_{}",
        teamkey::time::OffsetDateTime::now_utc().unix_timestamp_nanos()
    );
    let created_at = now
        .format(&teamkey::time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let inserted =
        sqlx::query("INSERT INTO scans (id, team, target, status, created_at) VALUES (?, ?, ?, 'queued', ?)")
            .bind(&id)
            .bind(team.as_str())
            .bind(&target)
            .bind(&created_at)
            .execute(db)
            .await;
    match inserted {
        Ok(_) => {
            let scan = Scan {
                id,
                team: team.as_str().to_owned(),
                target,
                status: "queued".into(),
                created_at,
            };
            (201, serde_json::json!(scan).to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "scan insert failed");
            error(503, "unavailable", "Scans are unavailable.")
        }
    }
}
