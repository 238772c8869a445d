//! `teamkey`: manage team API keys in the database your service uses.
//!
//! ```text
//! teamkey [--database-url URL] [--prefix P] [--pepper-file PATH] [--actor NAME] migrate
//! teamkey create --team TEAM --name NAME [--scope S]... [--expires-in DUR] [--rate-limit N/WINDOW]
//! teamkey list --team TEAM [--json] [--limit N] [--cursor C]
//! teamkey revoke --team TEAM ID
//! teamkey rotate --team TEAM ID [--grace DUR]
//! teamkey events --team TEAM [--json] [--limit N] [--cursor C]
//! ```
//!
//! A full key is printed only by `create` and `rotate`, alone on stdout.
//!
//! Audit events: `create`, `revoke` and `rotate` are recorded as made by
//! the operator `--actor NAME` (or `TEAMKEY_ACTOR`), else by the OS user
//! (`$USER`, else `$LOGNAME`), else by `cli`. `events` prints a team's
//! events newest first, a page at a time (50 unless `--limit` says
//! otherwise, at most 100); when older events follow, stderr gets
//! `teamkey: more events: --cursor C`, as `list` does for keys.
//!
//! Pepper: a service that stores keys as HMAC-SHA-256 under a server-side
//! pepper needs the CLI to use the same one, from `--pepper-file PATH` (or
//! `TEAMKEY_PEPPER_FILE`; the file's bytes, one trailing newline dropped)
//! or from `TEAMKEY_PEPPER` (its bytes as they are), at least 32 bytes.
//! Never a flag's value: a secret in argv shows in `ps` and shell history.
//! The pepper is never printed.
//!
//! Paging: `list` alone prints all of a team's active keys, as it always
//! did. With `--limit N` (1 to 100) or `--cursor C` it prints one page
//! (50 rows unless `--limit` says otherwise) and, when more keys follow,
//! one line on stderr, `teamkey: more keys: --cursor C`, whose last word
//! is the cursor to pass next. Stdout keeps its format in both modes (the
//! table, or with `--json` a JSON array of rows), so scripts that read it
//! keep working.

mod database;
mod table;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use teamkey_core::events::{Actor, EventId, EventQuery, Origin};
use teamkey_core::{
    CreateOptions, Cursor, DEFAULT_PAGE_LIMIT, KEY_ID_LEN, KeyFormat, KeyId, KeyInfo, KeyManager,
    MAX_PAGE_LIMIT, ManageError, NewKey, OnBehalfOf, PageRequest, Pepper, RateLimit, Scopes, TeamId,
    ValidationError,
};

/// The environment variable that may hold the pepper itself.
const PEPPER_ENV: &str = "TEAMKEY_PEPPER";

/// Manage team-scoped API keys.
#[derive(Debug, Parser)]
#[command(
    name = "teamkey",
    version,
    about,
    after_help = "Environment: DATABASE_URL, TEAMKEY_PREFIX, TEAMKEY_PEPPER_FILE and TEAMKEY_ACTOR \
                  stand for their options; TEAMKEY_PEPPER holds the pepper itself (there is no flag for it, so that \
                  it stays out of argv and shell history). A service with a pepper needs keys made \
                  with the same one."
)]
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
    // Values hidden in help: clap shows an unset variable as `NAME=`,
    // which reads as set to nothing.
    #[arg(
        long,
        env = "TEAMKEY_PREFIX",
        default_value = teamkey_core::DEFAULT_PREFIX,
        global = true,
        hide_env_values = true
    )]
    prefix: String,

    /// A file holding the service's pepper (at least 32 bytes; one trailing
    /// newline is dropped). Or set TEAMKEY_PEPPER to the pepper itself.
    #[arg(
        long,
        env = "TEAMKEY_PEPPER_FILE",
        global = true,
        value_name = "PATH",
        hide_env_values = true
    )]
    pepper_file: Option<PathBuf>,

    /// Who makes the change, for the audit events of create, revoke and
    /// rotate (default: the OS user, else "cli").
    #[arg(
        long,
        env = "TEAMKEY_ACTOR",
        global = true,
        value_name = "NAME",
        hide_env_values = true
    )]
    actor: Option<String>,

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
        /// Lifetime, such as 90d, 24h or 30m; at most 10 years.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
        /// The key's own rate limit: REQUESTS/WINDOW, such as 100/60s or
        /// 5000/1h (1 to 1,000,000 requests; a window of 1s to 1d).
        #[arg(long, value_parser = rate_limit)]
        rate_limit: Option<RateLimit>,
    },
    /// List a team's active keys, newest first: all of them, or one page
    /// with --limit or --cursor.
    #[command(
        after_help = "With --limit or --cursor, one page is printed; when more keys follow, \
                            stderr gets one line, \"teamkey: more keys: --cursor C\", whose last word \
                            is the cursor for the next page. Stdout is the same table or JSON array \
                            either way."
    )]
    List {
        /// The team.
        #[arg(long)]
        team: String,
        /// Print a JSON array of rows instead of a table.
        #[arg(long)]
        json: bool,
        /// One page of at most this many keys (1 to 100; default 50 when
        /// paging).
        #[arg(long, value_parser = page_limit)]
        limit: Option<usize>,
        /// The page after this cursor, as printed by the previous page.
        #[arg(long, value_parser = page_cursor)]
        cursor: Option<Cursor>,
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
        /// How long the old key keeps working, such as 24h (at most 7 days);
        /// 0 ends it now.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0")]
        grace: std::time::Duration,
    },
    /// A team's audit events, newest first: who created, rotated and
    /// revoked its keys, and which expired or are about to.
    #[command(
        after_help = "One page is printed (50 events unless --limit says otherwise); when older \
                            events follow, stderr gets one line, \"teamkey: more events: --cursor C\", \
                            whose last word is the cursor for the next page."
    )]
    Events {
        /// The team.
        #[arg(long)]
        team: String,
        /// Print a JSON array of events instead of a table.
        #[arg(long)]
        json: bool,
        // Checked by the command, not by clap: bad input is one line and
        // exit code 1, a negative number included.
        /// At most this many events (1 to 100; default 50).
        #[arg(long, allow_hyphen_values = true)]
        limit: Option<String>,
        /// The page after this cursor, as printed by the previous page.
        #[arg(long, allow_hyphen_values = true)]
        cursor: Option<String>,
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
    let pepper = pepper(cli.pepper_file.as_deref(), std::env::var_os(PEPPER_ENV))?;
    let store = database::connect(&cli.database_url).await?;
    store.migrate().await?;
    let keys = store.into_manager(format, pepper);
    // Asked only by the commands that change something: a bad --actor
    // does not stop a `list`.
    let acting = || Ok::<_, Failure>(keys.on_behalf_of(Origin::new(actor(cli.actor.as_deref())?)));
    match cli.command {
        Command::Migrate => eprintln!("teamkey: database is up to date"),
        Command::Create {
            team,
            name,
            scopes,
            expires_in,
            rate_limit,
        } => {
            let team = team_id(&team)?;
            let scopes = Scopes::new(&scopes).map_err(|e| Failure(format!("--scope: {e}")))?;
            let mut options = CreateOptions::new().scopes(scopes);
            if let Some(lifetime) = expires_in {
                options = options.expires_in(duration(lifetime));
            }
            options.rate_limit = rate_limit;
            let by = acting()?;
            let created = by.create(&team, &name, options).await.map_err(|e| match e {
                ManageError::Invalid(
                    e @ (ValidationError::ExpiryTooFar { .. } | ValidationError::ExpiryNotInFuture),
                ) => Failure(format!("--expires-in: {e}")),
                other => Failure(other.to_string()),
            })?;
            announce(
                &by,
                &team,
                &created,
                &format!("Created key {} for team {team}", created.info.id),
            )
            .await?;
        }
        Command::List {
            team,
            json,
            limit,
            cursor,
        } => {
            let team = team_id(&team)?;
            let (listed, next) = if limit.is_none() && cursor.is_none() {
                (all_keys(&keys, &team).await?, None)
            } else {
                let mut request = PageRequest::first(limit.unwrap_or(DEFAULT_PAGE_LIMIT))?;
                if let Some(cursor) = cursor {
                    request = request.after(cursor);
                }
                let page = keys.list_page(&team, request).await?;
                (page.keys, page.next)
            };
            if json {
                write_out(&format!("{}\n", serde_json::to_string_pretty(&listed)?))?;
            } else {
                write_out(&table::keys(&listed))?;
            }
            // On stderr: stdout stays the table or array scripts already read.
            if let Some(next) = next {
                eprintln!("teamkey: more keys: --cursor {next}");
            }
        }
        Command::Revoke { team, id } => {
            let (team, id) = (team_id(&team)?, key_id(&id)?);
            acting()?
                .revoke(&team, &id)
                .await
                .map_err(|e| not_found(e, &team, &id))?;
            eprintln!("teamkey: revoked key {id}; it no longer works");
        }
        Command::Rotate { team, id, grace } => {
            let (team, id) = (team_id(&team)?, key_id(&id)?);
            let grace = duration(grace);
            let by = acting()?;
            let rotated = by.rotate(&team, &id, grace).await.map_err(|e| match e {
                ManageError::Invalid(
                    e @ (ValidationError::GraceTooLong { .. } | ValidationError::NegativeGrace),
                ) => Failure(format!("--grace: {e}")),
                other => not_found(other, &team, &id),
            })?;
            let until = if grace.is_zero() {
                "no longer works".to_owned()
            } else {
                format!(
                    "keeps working for {}",
                    humantime::format_duration(grace.unsigned_abs())
                        .to_string()
                        .replace("day", " day")
                )
            };
            announce(
                &by,
                &team,
                &rotated,
                &format!("Rotated key {id} into {}; the old key {until}", rotated.info.id),
            )
            .await?;
        }
        Command::Events {
            team,
            json,
            limit,
            cursor,
        } => {
            let team = team_id(&team)?;
            let limit = match limit {
                Some(text) => event_limit(&text)?,
                None => DEFAULT_PAGE_LIMIT,
            };
            // One more than shown: whether older events follow.
            let mut query = EventQuery::newest(limit + 1);
            if let Some(text) = cursor {
                query = query.before(event_cursor(&text)?);
            }
            let mut events = keys.events(&team, query).await?;
            let next = if events.len() > limit {
                events.truncate(limit);
                events.last().map(|e| e.id)
            } else {
                None
            };
            if json {
                write_out(&format!("{}\n", serde_json::to_string_pretty(&events)?))?;
            } else {
                write_out(&table::events(&events))?;
            }
            if let Some(next) = next {
                eprintln!("teamkey: more events: --cursor {next}");
            }
        }
    }
    Ok(())
}

/// Who the changes are made by: `--actor` (or `TEAMKEY_ACTOR`), else the
/// OS user, else `cli`. A name is cut and cleaned as the core does it; one
/// left empty is refused, rather than recorded as nobody.
fn actor(flag: Option<&str>) -> Result<Actor, Failure> {
    if let Some(name) = flag {
        let actor = Actor::operator(name);
        return match actor.id() {
            Some(id) if !id.is_empty() => Ok(actor),
            _ => Err(Failure("--actor: give a name (it was empty)".to_owned())),
        };
    }
    let os_user = ["USER", "LOGNAME"]
        .into_iter()
        .filter_map(|var| std::env::var(var).ok())
        .map(Actor::operator)
        .find(|actor| actor.id().is_some_and(|id| !id.is_empty()));
    Ok(os_user.unwrap_or_else(|| Actor::operator("cli")))
}

/// `--limit` of `events`: a page size from 1 to the core's maximum.
fn event_limit(text: &str) -> Result<usize, Failure> {
    text.parse()
        .ok()
        .filter(|n| (1..=MAX_PAGE_LIMIT).contains(n))
        .ok_or_else(|| Failure(format!("--limit: give a number from 1 to {MAX_PAGE_LIMIT}")))
}

/// `--cursor` of `events`: the event id a previous page printed.
fn event_cursor(text: &str) -> Result<EventId, Failure> {
    EventId::parse(text).map_err(|e| {
        Failure(format!(
            "--cursor: {e}; pass the cursor the previous page printed"
        ))
    })
}

/// A parsed duration in the core's type. One too long for it is far past
/// any limit the core allows, so it becomes the longest there is and the
/// core refuses it with its own message: no conversion can fail here.
fn duration(d: std::time::Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// Every active key of `team`, newest first, a page at a time.
async fn all_keys(keys: &KeyManager, team: &TeamId) -> Result<Vec<KeyInfo>, Failure> {
    let mut all = Vec::new();
    let mut request = PageRequest::first(MAX_PAGE_LIMIT)?;
    loop {
        let page = keys.list_page(team, request).await?;
        all.extend(page.keys);
        match page.next {
            Some(next) => request = request.after(next),
            None => return Ok(all),
        }
    }
}

/// `--limit`: a page size the core accepts.
fn page_limit(text: &str) -> Result<usize, String> {
    let limit = text
        .parse()
        .map_err(|_| format!("limit must be between 1 and {MAX_PAGE_LIMIT}"))?;
    PageRequest::first(limit).map_err(|e| e.to_string())?;
    Ok(limit)
}

/// `--cursor`: one this command printed.
fn page_cursor(text: &str) -> Result<Cursor, String> {
    text.parse().map_err(|e: ValidationError| e.to_string())
}

/// The pepper, from `file` or else from the `TEAMKEY_PEPPER` value `env`;
/// `None` if neither is given. Its bytes appear in no message.
fn pepper(file: Option<&Path>, env: Option<OsString>) -> Result<Option<Pepper>, Failure> {
    let (bytes, source) = match (file, env) {
        (None, None) => return Ok(None),
        // Two secrets, one of them wrong: keys made with it would not verify.
        (Some(_), Some(_)) => {
            return Err(Failure(format!(
                "give the pepper by --pepper-file or by {PEPPER_ENV}, not both"
            )));
        }
        (Some(path), None) => {
            let mut bytes =
                std::fs::read(path).map_err(|e| Failure(format!("--pepper-file {}: {e}", path.display())))?;
            // Editors and `echo` end files with a newline; it is not the pepper's.
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
                if bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
            }
            (bytes, "--pepper-file")
        }
        (None, Some(value)) => (value.into_encoded_bytes(), PEPPER_ENV),
    };
    Pepper::new(bytes).map(Some).ok_or_else(|| {
        Failure(format!(
            "the pepper from {source} must be at least {} bytes",
            Pepper::MIN_LEN
        ))
    })
}

/// `text` on stdout, or a one-line failure when stdout is closed (a
/// reader such as `head` that exits early): never a panic.
fn write_out(text: &str) -> Result<(), Failure> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure(format!("cannot write to stdout: {e}")))
}

/// The full key alone on stdout; everything else on stderr. A key that
/// cannot be written out would be lost to its owner yet valid: it is
/// revoked at once, by the same actor.
async fn announce(by: &OnBehalfOf<'_>, team: &TeamId, new: &NewKey, what: &str) -> Result<(), Failure> {
    if let Err(failure) = write_out(&format!("{}\n", new.key.expose_secret())) {
        let revoked = by.revoke(team, &new.info.id).await.is_ok();
        let outcome = if revoked { "it was revoked" } else { "revoke it" };
        return Err(Failure(format!(
            "{}; the new key {} was never shown, so {outcome}",
            failure.0, new.info.id
        )));
    }
    eprintln!("teamkey: {what} ({}).", new.info.preview);
    eprintln!("teamkey: store the key now: it will not be shown again.");
    Ok(())
}

fn team_id(team: &str) -> Result<TeamId, Failure> {
    TeamId::new(team).map_err(|e| Failure(format!("--team: {e}")))
}

fn key_id(id: &str) -> Result<KeyId, Failure> {
    // The input is not repeated: it may be a full key pasted in its id's place.
    KeyId::parse(id).map_err(|e| {
        Failure(format!(
            "key id: {e} (give the {KEY_ID_LEN} characters after the prefix)"
        ))
    })
}

fn not_found(error: ManageError, team: &TeamId, id: &KeyId) -> Failure {
    match error {
        ManageError::NotFound => Failure(format!("no active key {id} in team {team}")),
        other => Failure(other.to_string()),
    }
}

/// `--rate-limit REQUESTS/WINDOW`: `100/60s`, `5000/1h`.
fn rate_limit(text: &str) -> Result<RateLimit, String> {
    let (requests, window) = text
        .split_once('/')
        .ok_or_else(|| "expected REQUESTS/WINDOW, such as 100/60s".to_owned())?;
    let requests: u32 = requests
        .trim()
        .parse()
        .map_err(|_| format!("{requests:?} is not a number of requests"))?;
    let window = humantime::parse_duration(window.trim()).map_err(|e| format!("window {window:?}: {e}"))?;
    RateLimit::new(requests, window).map_err(|e| e.to_string())
}
