//! What the axum and actix-web demo servers share: configuration, the demo
//! database (SQLite, PostgreSQL or MySQL/MariaDB), the demo data, the
//! teams' plans, the quickstart key, the expiry sweep and the scans
//! queries. No web framework here.

use serde::Serialize;
use teamkey::sqlx::{self, MySqlPool, PgPool, SqlitePool};
use teamkey::time::Duration;
use teamkey::{
    CreateOptions, KeyFormat, KeyManager, KeyManagerBuilder, LocalRateLimiter, NewKey, PolicyError,
    RateLimit, RedisRateLimiter, Scopes, SqlxStore, TeamId, TeamPolicy, TeamRules,
};

/// The demo's database unless `DATABASE_URL` names another.
const DEFAULT_DATABASE_URL: &str = "sqlite://gecko_api.db?mode=rwc";

/// `DATABASE_URL`, `BIND_ADDR`, `TEAMKEY_PREFIX`, with their defaults, and
/// `REDIS_URL`, if set.
pub(crate) struct Config {
    pub(crate) database_url: String,
    pub(crate) bind_addr: String,
    pub(crate) prefix: String,
    /// Where the rate limits are counted: in Redis, shared by every
    /// instance, when set; else in this process. Never printed: it may
    /// hold a password.
    pub(crate) redis_url: Option<String>,
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
            database_url: env_or("DATABASE_URL", DEFAULT_DATABASE_URL),
            bind_addr: env_or("BIND_ADDR", "127.0.0.1:3000"),
            prefix: env_or("TEAMKEY_PREFIX", teamkey::DEFAULT_PREFIX),
            redis_url: std::env::var("REDIS_URL").ok().filter(|v| !v.is_empty()),
        }
    }
}

/// The demo's database: the keys and the scans live in the same one.
#[derive(Clone, Debug)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    MySql(MySqlPool),
}

/// The demo's SQL, per database (placeholders and "insert if absent" differ).
struct Sql {
    create: &'static str,
    seed: &'static str,
    list: &'static str,
    insert: &'static str,
}

const SQLITE: Sql = Sql {
    create: "CREATE TABLE IF NOT EXISTS scans (id VARCHAR(64) PRIMARY KEY, team VARCHAR(128) NOT NULL, \
             target VARCHAR(255) NOT NULL, status VARCHAR(32) NOT NULL, created_at VARCHAR(32) NOT NULL)",
    seed: "INSERT OR IGNORE INTO scans (id, team, target, status, created_at) VALUES (?, ?, ?, ?, ?)",
    list: "SELECT id, team, target, status, created_at FROM scans WHERE team = ? \
           ORDER BY created_at DESC, id LIMIT ?",
    insert: "INSERT INTO scans (id, team, target, status, created_at) VALUES (?, ?, ?, 'queued', ?)",
};

const POSTGRES: Sql = Sql {
    create: SQLITE.create,
    seed: "INSERT INTO scans (id, team, target, status, created_at) VALUES ($1, $2, $3, $4, $5) \
           ON CONFLICT DO NOTHING",
    list: "SELECT id, team, target, status, created_at FROM scans WHERE team = $1 \
           ORDER BY created_at DESC, id LIMIT $2",
    insert: "INSERT INTO scans (id, team, target, status, created_at) VALUES ($1, $2, $3, 'queued', $4)",
};

const MYSQL: Sql = Sql {
    // Binary collation: team 'ACME' is not team 'acme'.
    create: "CREATE TABLE IF NOT EXISTS scans (id VARCHAR(64) PRIMARY KEY, team VARCHAR(128) NOT NULL, \
             target VARCHAR(255) NOT NULL, status VARCHAR(32) NOT NULL, created_at VARCHAR(32) NOT NULL) \
             CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    seed: "INSERT IGNORE INTO scans (id, team, target, status, created_at) VALUES (?, ?, ?, ?, ?)",
    list: SQLITE.list,
    insert: SQLITE.insert,
};

/// Runs `$body` with `$pool` bound to whichever pool `$db` holds and `$sql`
/// to that database's statements: the `SQLITE`, `POSTGRES` or `MYSQL` of
/// the module that calls it (placeholders and upserts differ).
macro_rules! on_db {
    ($db:expr, |$pool:ident, $sql:ident| $body:expr) => {
        match $db {
            crate::demo::Db::Sqlite($pool) => {
                let $sql = &SQLITE;
                $body
            }
            crate::demo::Db::Postgres($pool) => {
                let $sql = &POSTGRES;
                $body
            }
            crate::demo::Db::MySql($pool) => {
                let $sql = &MYSQL;
                $body
            }
        }
    };
}
// For the settings page's modules too (not every binary has them).
#[allow(unused_imports)]
pub(crate) use on_db;

impl Db {
    /// Connects to `url`: `sqlite:`, `postgres:` (or `postgresql:`), or
    /// `mysql:` (or `mariadb:`), with any sqlx URL options.
    pub(crate) async fn connect(url: &str) -> Result<Self, Box<dyn std::error::Error>> {
        // Only the scheme is ever printed: the rest may hold a password.
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        Ok(match scheme {
            "sqlite" => Self::Sqlite(SqlitePool::connect(url).await?),
            "postgres" | "postgresql" => Self::Postgres(PgPool::connect(url).await?),
            "mysql" => Self::MySql(MySqlPool::connect(url).await?),
            "mariadb" => Self::MySql(MySqlPool::connect(&url.replacen("mariadb:", "mysql:", 1)).await?),
            other => {
                return Err(format!(
                    "DATABASE_URL has the scheme {other:?}; use sqlite:, postgres: or mysql: (or mariadb:)"
                )
                .into());
            }
        })
    }

    /// Closes the pool: every later query fails (for outage tests).
    #[allow(dead_code)] // used by tests/gecko_api.rs, which includes this file
    pub(crate) async fn close(&self) {
        on_db!(self, |pool, _sql| pool.close().await);
    }

    /// teamkey's store over this database, migrated, and two managers
    /// over it: the one the server uses, gated by the teams' [`Plans`],
    /// which caches verifications, kept honest by the database's own feed
    /// of changes (so keys revoked by another instance or the `teamkey`
    /// command are refused here within a second); and one without the
    /// plans, to seed keys made before the plans existed.
    async fn key_managers(
        &self,
        format: KeyFormat,
        limiter: Limiter,
    ) -> Result<(KeyManager, KeyManager), sqlx::migrate::MigrateError> {
        Ok(on_db!(self, |pool, _sql| {
            let store = SqlxStore::new(pool.clone());
            store.migrate().await?;
            let before_the_plans = KeyManager::builder(store.clone()).format(format.clone()).build();
            let keys = limiter
                .on(gated(KeyManager::builder(store.clone()).format(format)))
                .cache(store.invalidations())
                .build();
            (keys, before_the_plans)
        }))
    }
}

/// Where the server counts each key's requests against its plan's rate
/// limit ([`Plan::rate_limit`]).
pub(crate) enum Limiter {
    /// In this process (the default): each instance counts alone.
    Local(LocalRateLimiter),
    /// In Redis (`REDIS_URL`), one quota per key for every instance. If
    /// Redis is down, requests go through, with a warning in the log.
    Redis(RedisRateLimiter),
}

impl Limiter {
    /// The limiter `config` asks for. Connects lazily: the demo starts
    /// even while Redis is down.
    pub(crate) fn from_config(config: &Config) -> Result<Self, Box<dyn std::error::Error>> {
        Ok(match &config.redis_url {
            // The error names the setting, never the URL (it may hold a password).
            Some(url) => Self::Redis(
                RedisRateLimiter::builder(url.as_str())
                    .build()
                    .map_err(|e| format!("REDIS_URL: {e}"))?,
            ),
            None => Self::Local(LocalRateLimiter::new()),
        })
    }

    /// `builder` counting with this limiter.
    pub(crate) fn on(self, builder: KeyManagerBuilder) -> KeyManagerBuilder {
        match self {
            Self::Local(local) => builder.rate_limiter(local),
            Self::Redis(redis) => builder.rate_limiter(redis),
        }
    }
}

/// What the demo's server sets on its manager, beside the store's own
/// settings: the teams' plans, and each key's last client address, shown
/// in the key table. (An IP address is personal data in some places: a
/// real service records it only where it may keep it.)
pub(crate) fn gated(builder: KeyManagerBuilder) -> KeyManagerBuilder {
    builder.policy(Plans).record_client_ips(true)
}

/// The demo, open: its database, the server's manager, and initech's key
/// from before the plans if it was made just now (to print once).
pub(crate) struct Demo {
    pub(crate) db: Db,
    pub(crate) keys: KeyManager,
    pub(crate) legacy: Option<NewKey>,
    /// Held until the server has seeded what it seeds at a first start:
    /// [`SetupLock::release`] it then.
    pub(crate) setup: SetupLock,
}

/// What both servers' `main` do first: logs to stdout at `info`, reads
/// the configuration from the environment, and [`open`]s the demo.
pub(crate) async fn start() -> Result<(Config, Demo), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .init();
    let config = Config::from_env();
    let demo = open(&config).await?;
    Ok((config, demo))
}

/// Opens and migrates the database, seeds the demo data (scans, and
/// initech's key from before its plan), builds the server's manager, which
/// enforces the plans' rate limits.
pub(crate) async fn open(config: &Config) -> Result<Demo, Box<dyn std::error::Error>> {
    let limiter = Limiter::from_config(config)?;
    let db = Db::connect(&config.database_url).await?;
    // Instances starting together on a new database take turns: else each
    // would find no demo data and seed its own (two Quickstart keys, two
    // sets of demo passwords of which one is wrong).
    let setup = SetupLock::take(&db).await?;
    let (keys, before_the_plans) = db.key_managers(KeyFormat::new(&config.prefix)?, limiter).await?;
    prepare(&db).await?;
    let legacy = legacy_key(&before_the_plans).await?;
    Ok(Demo {
        db,
        keys,
        legacy,
        setup,
    })
}

/// The lock instances of the demo take turns on while they seed: one the
/// database keeps (an advisory lock on PostgreSQL, `GET_LOCK` on MySQL and
/// MariaDB), held by a connection of its own, out of the pool; or on
/// SQLite a file lock beside the database file. Either ends when its
/// holder is dropped (the connection or the file closed), on every path,
/// errors included.
pub(crate) enum SetupLock {
    Postgres(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
    /// The locked file; `None`: an in-memory database, which no other
    /// process can open.
    Sqlite {
        _locked: Option<std::fs::File>,
    },
}

/// The name (or key) of the setup lock in the database.
const SETUP_LOCK: &str = "gecko_demo_setup";
/// How long an instance waits for another's setup.
const SETUP_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl SetupLock {
    /// Waits for the lock, up to [`SETUP_WAIT`].
    async fn take(db: &Db) -> Result<Self, Box<dyn std::error::Error>> {
        let timed_out = || format!("another instance held the demo's setup lock for {SETUP_WAIT:?}");
        Ok(match db {
            Db::Postgres(pool) => {
                let mut held = pool.acquire().await?.detach();
                let wait = format!("SET lock_timeout = '{}s'", SETUP_WAIT.as_secs());
                sqlx::query(sqlx::AssertSqlSafe(wait)).execute(&mut held).await?;
                sqlx::query("SELECT pg_advisory_lock(hashtext($1))")
                    .bind(SETUP_LOCK)
                    .execute(&mut held)
                    .await
                    .map_err(|e| format!("{}: {e}", timed_out()))?;
                Self::Postgres(held)
            }
            Db::MySql(pool) => {
                let mut held = pool.acquire().await?.detach();
                let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, ?)")
                    .bind(SETUP_LOCK)
                    .bind(SETUP_WAIT.as_secs())
                    .fetch_one(&mut held)
                    .await?;
                if locked != Some(1) {
                    return Err(timed_out().into());
                }
                Self::MySql(held)
            }
            Db::Sqlite(pool) => {
                let options = pool.connect_options();
                let database = options.get_filename();
                let in_memory = database
                    .to_str()
                    .is_some_and(|name| name == ":memory:" || name.starts_with("file:"));
                if in_memory {
                    return Ok(Self::Sqlite { _locked: None });
                }
                let mut path = database.as_os_str().to_owned();
                path.push(".setup-lock");
                let file = std::fs::File::create(path)?;
                let give_up = std::time::Instant::now() + SETUP_WAIT;
                loop {
                    // `File::try_lock` is Rust 1.89; the demo runs on sqlx,
                    // which needs 1.94 (tests/gecko_api.rs compiles this
                    // file under the facade's lower rust-version).
                    #[allow(clippy::incompatible_msrv)]
                    match file.try_lock() {
                        Ok(()) => break Self::Sqlite { _locked: Some(file) },
                        Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < give_up => {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        }
                        Err(std::fs::TryLockError::WouldBlock) => return Err(timed_out().into()),
                        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
                    }
                }
            }
        })
    }

    /// Lets the next instance set up (it finds the demo seeded): the lock's
    /// connection is closed, or its file.
    pub(crate) async fn release(self) {
        use sqlx::Connection as _;
        match self {
            Self::Postgres(held) => {
                let _ = held.close().await;
            }
            Self::MySql(held) => {
                let _ = held.close().await;
            }
            Self::Sqlite { .. } => {}
        }
    }
}

/// A plan of the demo's: what a team may do with API keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// No API access: keys are refused with 403 `plan_required`, and none
    /// may be made.
    Free,
    /// API access, the demo's scopes, at most 20 active keys, 100
    /// requests per minute per key.
    Pro,
    /// As Pro with 1,000 requests per minute per key, and every new key
    /// expires within 90 days.
    Enterprise,
}

/// Which team is on which plan: in an app, its billing tables. A team not
/// listed is on Free.
pub(crate) const PLANS: [(&str, Plan); 3] = [
    ("acme", Plan::Pro),
    ("globex", Plan::Enterprise),
    ("initech", Plan::Free),
];

/// The most active keys a Pro or Enterprise team may have.
pub(crate) const MAX_KEYS: usize = 20;

/// The longest an Enterprise team's new key may live.
pub(crate) const ENTERPRISE_MAX_LIFETIME: Duration = Duration::days(90);

/// A Pro team's keys: requests per minute, each.
pub(crate) const PRO_REQUESTS_PER_MINUTE: u32 = 100;

/// An Enterprise team's keys: requests per minute, each.
pub(crate) const ENTERPRISE_REQUESTS_PER_MINUTE: u32 = 1_000;

impl Plan {
    /// The plan of `team`.
    pub(crate) fn of(team: &TeamId) -> Self {
        PLANS
            .iter()
            .find(|(name, _)| *name == team.as_str())
            .map_or(Self::Free, |(_, plan)| *plan)
    }

    /// Each key's rate limit on this plan, and the loosest a key's own
    /// `rate_limit` may be; none on Free, which has no API access.
    pub(crate) fn rate_limit(self) -> Option<RateLimit> {
        let per_minute = |requests| RateLimit::new(requests, std::time::Duration::from_secs(60)).ok();
        match self {
            Self::Free => None,
            Self::Pro => per_minute(PRO_REQUESTS_PER_MINUTE),
            Self::Enterprise => per_minute(ENTERPRISE_REQUESTS_PER_MINUTE),
        }
    }

    /// What the plan allows, as teamkey applies it.
    pub(crate) fn rules(self) -> Result<TeamRules, PolicyError> {
        let paid = || -> Result<TeamRules, PolicyError> {
            let rules = TeamRules::allow_all()
                .grantable_scopes(Scopes::new(QUICKSTART_SCOPES)?)
                .max_active_keys(MAX_KEYS);
            Ok(match self.rate_limit() {
                Some(limit) => rules.rate_limit(limit),
                None => rules,
            })
        };
        Ok(match self {
            Self::Free => TeamRules::no_api_access(),
            Self::Pro => paid()?,
            Self::Enterprise => paid()?.require_expiry_within(ENTERPRISE_MAX_LIFETIME),
        })
    }
}

/// The teams' plans, asked by teamkey when a key is verified (kept per
/// team for 30 s) and on every change.
pub(crate) struct Plans;

#[teamkey::async_trait]
impl TeamPolicy for Plans {
    async fn rules(&self, team: &TeamId) -> Result<TeamRules, PolicyError> {
        Plan::of(team).rules()
    }
}

/// The name of initech's key from before the plans.
pub(crate) const LEGACY_KEY_NAME: &str = "Legacy integration";

/// A key for `initech` if it has none, made by a manager without the
/// plans (`before_the_plans`): a key of a team whose plan has no API
/// access, as an app that introduces plans would find.
pub(crate) async fn legacy_key(
    before_the_plans: &KeyManager,
) -> Result<Option<NewKey>, Box<dyn std::error::Error>> {
    let initech = TeamId::new("initech")?;
    if !before_the_plans.list(&initech).await?.is_empty() {
        return Ok(None);
    }
    let options = CreateOptions::new().scopes(Scopes::new(["keys:manage", "scans:read"])?);
    Ok(Some(
        before_the_plans
            .create(&initech, LEGACY_KEY_NAME, options)
            .await?,
    ))
}

/// Records `key.expiring` for keys that expire within 7 days, then within
/// a day: once an hour, for ever (each notice is recorded once, however
/// often this runs and on however many instances).
pub(crate) async fn sweep_expiring_hourly(keys: KeyManager) {
    let mut every_hour = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        every_hour.tick().await;
        sweep_expiring(&keys).await;
    }
}

/// One expiry sweep, logged.
pub(crate) async fn sweep_expiring(keys: &KeyManager) {
    match keys.sweep_expiring().await {
        Ok(0) => {}
        Ok(recorded) => tracing::info!(recorded, "expiry sweep: key.expiring events recorded"),
        // Retried at the next hour; nothing depends on one sweep.
        Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
    }
}

/// The seeded scans: teams `acme` and `globex`, a few each.
const SEED: [(&str, &str, &str, &str, &str); 5] = [
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

/// The scans table, and the seeded scans if absent.
pub(crate) async fn prepare(db: &Db) -> Result<(), sqlx::Error> {
    on_db!(db, |pool, sql| {
        sqlx::query(sql.create).execute(pool).await?;
        for (id, team, target, status, created_at) in SEED {
            sqlx::query(sql.seed)
                .bind(id)
                .bind(team)
                .bind(target)
                .bind(status)
                .bind(created_at)
                .execute(pool)
                .await?;
        }
    });
    Ok(())
}

/// The OpenAPI document of the key-management routes, as both apps mount
/// them: under `/api/v1`. Both serve it at `/api/v1/openapi.json`.
pub(crate) fn openapi() -> teamkey::utoipa::openapi::OpenApi {
    teamkey::management::openapi("/api/v1")
}

/// The scopes the demo's routes check: reading scans needs none beyond a
/// key of the team; starting one needs `scans:write`.
pub(crate) const SCANS_WRITE: &str = "scans:write";

/// The Quickstart key's scopes: it manages keys and may grant the demo's
/// scopes, since a key grants only what it holds.
pub(crate) const QUICKSTART_SCOPES: [&str; 3] = ["keys:manage", "scans:read", SCANS_WRITE];

/// A `Quickstart` key for `acme` if acme has no key yet, printed once with
/// a ready curl line; initech's key from before the plans, if just made,
/// with the line that shows its plan answer; the routes.
pub(crate) async fn announce_quickstart(
    keys: &KeyManager,
    addr: &str,
    config: &Config,
    legacy: Option<&NewKey>,
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
            println!(
                "Its key events (created, rotated, revoked...):\n\n  curl 'http://{addr}/api/v1/api-keys/events' -H 'X-API-Key: {key}'\n"
            );
        }
        None => {
            // `$DATABASE_URL`, never its value: it may hold a password.
            let url = if std::env::var_os("DATABASE_URL").is_some() {
                "\"$DATABASE_URL\"".to_owned()
            } else {
                format!("'{DEFAULT_DATABASE_URL}'")
            };
            println!(
                "\nacme already has API keys; create more against this server's database with\n\n  \
                 teamkey --database-url {url} create --team acme --name NAME\n"
            );
        }
    }
    println!(
        "Plans: acme is on Pro (at most {MAX_KEYS} keys), globex on Enterprise (keys expire within {} days),\n\
         initech on Free: no API access.",
        ENTERPRISE_MAX_LIFETIME.whole_days()
    );
    let counted = match config.redis_url {
        Some(_) => "in Redis (REDIS_URL), shared by every instance",
        None => "in this process (set REDIS_URL to count them in Redis)",
    };
    println!(
        "Rate limits: acme's keys {PRO_REQUESTS_PER_MINUTE} requests per 60 s each, globex's \
         {ENTERPRISE_REQUESTS_PER_MINUTE}, counted {counted}.\n\
         `curl -i` shows RateLimit-Policy and RateLimit; past the limit the answer is 429 with Retry-After."
    );
    if let Some(legacy) = legacy {
        let key = legacy.key.expose_secret();
        println!(
            "\nSeeded initech's \"{LEGACY_KEY_NAME}\" key, made before the plans. It is shown only this once:\n\n  {key}\n\n\
             It is valid, but initech's plan has no API access: this gets 403 plan_required, and so does\n\
             creating a key with it:\n\n  curl -i 'http://{addr}/api/v1/scans' -H 'X-API-Key: {key}'\n"
        );
    }
    println!("Gecko API listening on http://{addr}");
    println!("  GET    /api/v1/scans                  the caller's team's scans");
    println!("  POST   /api/v1/scans                  start one (scans:write)");
    println!("  GET    /api/v1/api-keys               the team's keys (this and below: keys:manage)");
    println!("  POST   /api/v1/api-keys               create one");
    println!("  GET    /api/v1/api-keys/events        the team's key events, newest first");
    println!("  DELETE /api/v1/api-keys/{{id}}          revoke");
    println!("  POST   /api/v1/api-keys/{{id}}/rotate   rotate");
    println!("Key management API described at http://{addr}/api/v1/openapi.json");
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

/// A scans row: id, team, target, status, created_at.
type ScanRow = (String, String, String, String, String);

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
pub(crate) async fn scans(db: &Db, team: &TeamId, limit: Option<&str>) -> (u16, String) {
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
    let rows: Result<Vec<ScanRow>, sqlx::Error> = on_db!(db, |pool, sql| {
        sqlx::query_as(sql.list)
            .bind(team.as_str())
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
    });
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
pub(crate) async fn start_scan(db: &Db, team: &TeamId, body: &[u8]) -> (u16, String) {
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
    let inserted = on_db!(db, |pool, sql| {
        sqlx::query(sql.insert)
            .bind(&id)
            .bind(team.as_str())
            .bind(&target)
            .bind(&created_at)
            .execute(pool)
            .await
            .map(drop)
    });
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
