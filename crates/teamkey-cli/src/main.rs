//! `teamkey`: manage team API keys in the database your service uses.
//!
//! ```text
//! teamkey [--database-url URL] [--prefix P] migrate
//! teamkey create --team TEAM --name NAME [--scope S]... [--expires-in DUR]
//! teamkey list --team TEAM [--json]
//! teamkey revoke --team TEAM ID
//! teamkey rotate --team TEAM ID [--grace DUR]
//! ```
//!
//! A full key is printed only by `create` and `rotate`, alone on stdout.

mod database;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use teamkey_core::{CreateOptions, KeyFormat, KeyId, ManageError, NewKey, Scopes, TeamId};

/// Manage team-scoped API keys.
#[derive(Debug, Parser)]
#[command(name = "teamkey", version, about)]
struct Cli {
    /// Database URL: postgres://…, mysql://… (or mariadb://…), sqlite://…
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://teamkey.db?mode=rwc",
        global = true,
        hide_env_values = true
    )]
    database_url: String,

    /// Key prefix: issuer and environment, such as tk_live or tk_test.
    #[arg(long, env = "TEAMKEY_PREFIX", default_value = teamkey_core::DEFAULT_PREFIX, global = true)]
    prefix: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update teamkey's table (every other command does it too).
    Migrate,
    /// Create a key; prints the full key, once, on stdout.
    Create {
        /// The team that owns the key.
        #[arg(long)]
        team: String,
        /// A descriptive name, such as "CI/CD Pipeline".
        #[arg(long)]
        name: String,
        /// A permission; repeat for several.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime, such as 90d, 24h or 30m.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// List a team's active keys.
    List {
        /// The team.
        #[arg(long)]
        team: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke {
        /// The team that owns the key.
        #[arg(long)]
        team: String,
        /// The key id (the 12 characters after the prefix).
        id: String,
    },
    /// Replace a key by a new one with the same name and scopes; prints the
    /// new key on stdout. The old key keeps working for the grace period.
    Rotate {
        /// The team that owns the key.
        #[arg(long)]
        team: String,
        /// The key id.
        id: String,
        /// How long the old key keeps working, such as 24h; 0 ends it now.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0")]
        grace: std::time::Duration,
    },
}

/// A failure, said in one line.
#[derive(Debug)]
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&Failure(format!("cannot start the runtime: {e}"))),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => fail(&failure),
    }
}

fn fail(failure: &Failure) -> ExitCode {
    // One line, whatever the error text held.
    eprintln!("teamkey: error: {}", failure.0.replace('\n', " "));
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let format = KeyFormat::new(&cli.prefix).map_err(|e| Failure(format!("--prefix: {e}")))?;
    let store = database::connect(&cli.database_url).await?;
    store.migrate().await?;
    let keys = store.into_manager(format);
    match cli.command {
        Command::Migrate => eprintln!("teamkey: database is up to date"),
        Command::Create {
            team,
            name,
            scopes,
            expires_in,
        } => {
            let team = team_id(&team)?;
            let scopes = Scopes::new(&scopes).map_err(|e| Failure(format!("--scope: {e}")))?;
            let mut options = CreateOptions::new().scopes(scopes);
            if let Some(lifetime) = expires_in {
                // Past i64 seconds is far past any allowed lifetime: the core refuses it.
                let seconds = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
                options = options.expires_in(time::Duration::seconds(seconds));
            }
            let created = keys.create(&team, &name, options).await?;
            announce(
                &created,
                &format!("Created key {} for team {team}", created.info.id),
            );
        }
        Command::List { team, json } => {
            let listed = keys.list(&team_id(&team)?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else {
                print!("{}", table::render(&listed));
            }
        }
        Command::Revoke { team, id } => {
            let (team, id) = (team_id(&team)?, key_id(&id)?);
            keys.revoke(&team, &id)
                .await
                .map_err(|e| not_found(e, &team, &id))?;
            eprintln!("teamkey: revoked key {id}; it no longer works");
        }
        Command::Rotate { team, id, grace } => {
            let (team, id) = (team_id(&team)?, key_id(&id)?);
            let grace = time::Duration::try_from(grace)?;
            let rotated = keys
                .rotate(&team, &id, grace)
                .await
                .map_err(|e| not_found(e, &team, &id))?;
            let until = if grace.is_zero() {
                "no longer works".to_owned()
            } else {
                format!(
                    "keeps working for {}",
                    humantime::format_duration(grace.unsigned_abs())
                )
            };
            announce(
                &rotated,
                &format!("Rotated key {id} into {}; the old key {until}", rotated.info.id),
            );
        }
    }
    Ok(())
}

/// The full key alone on stdout; everything else on stderr.
fn announce(new: &NewKey, what: &str) {
    println!("{}", new.key.expose_secret());
    eprintln!("teamkey: {what} ({}).", new.info.preview);
    eprintln!("teamkey: store the key now: it will not be shown again.");
}

fn team_id(team: &str) -> Result<TeamId, Failure> {
    TeamId::new(team).map_err(|e| Failure(format!("--team: {e}")))
}

fn key_id(id: &str) -> Result<KeyId, Failure> {
    KeyId::parse(id).map_err(|e| Failure(format!("{id:?}: {e}")))
}

fn not_found(error: ManageError, team: &TeamId, id: &KeyId) -> Failure {
    match error {
        ManageError::NotFound => Failure(format!("no active key {id} in team {team}")),
        other => Failure(other.to_string()),
    }
}
