//! The demo's people: one owner per team, each with an argon2 password
//! hash (via `password-auth`) in the demo's database. An app has its own
//! users table; this is the smallest one that signs in for real.

use std::sync::OnceLock;

use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::{StdRng, SysRng};
use rand::{SeedableRng, TryRng};
use teamkey::TeamId;
use teamkey::sqlx;
use tokio::sync::OwnedSemaphorePermit;

use crate::demo::Db;

/// The demo users, seeded at the first start: one owner per team. initech
/// is on the Free plan, so its owner sees why it cannot make keys.
pub(crate) const DEMO_USERS: [(&str, &str); 3] = [
    ("owner@acme.test", "acme"),
    ("owner@globex.test", "globex"),
    ("owner@initech.test", "initech"),
];

/// The longest email and password taken: beyond them a sign-in is refused
/// without hashing (argon2 on megabytes would be a cheap way to load the
/// server).
pub(crate) const MAX_EMAIL_LEN: usize = 254;
pub(crate) const MAX_PASSWORD_LEN: usize = 1024;

/// Random demo passwords: 20 characters of base62, about 119 bits.
const PASSWORD_LEN: usize = 20;

struct Sql {
    create: &'static str,
    insert: &'static str,
    find: &'static str,
}

const SQLITE: Sql = Sql {
    create: "CREATE TABLE IF NOT EXISTS demo_users (email VARCHAR(254) PRIMARY KEY, \
             team VARCHAR(128) NOT NULL, password_hash VARCHAR(255) NOT NULL)",
    insert: "INSERT OR IGNORE INTO demo_users (email, team, password_hash) VALUES (?, ?, ?)",
    find: "SELECT team, password_hash FROM demo_users WHERE email = ?",
};

const POSTGRES: Sql = Sql {
    create: SQLITE.create,
    insert: "INSERT INTO demo_users (email, team, password_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    find: "SELECT team, password_hash FROM demo_users WHERE email = $1",
};

const MYSQL: Sql = Sql {
    // Binary collation: the server's default ignores case and accents, and
    // `owner@acmé.test` would sign in as `owner@acme.test` while the sign-in
    // throttle counts it as another email.
    create: "CREATE TABLE IF NOT EXISTS demo_users (email VARCHAR(254) PRIMARY KEY, \
             team VARCHAR(128) NOT NULL, password_hash VARCHAR(255) NOT NULL) \
             CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
    insert: "INSERT IGNORE INTO demo_users (email, team, password_hash) VALUES (?, ?, ?)",
    find: SQLITE.find,
};

/// A demo user made just now, with the password to print once. No `Debug`:
/// the password must not reach a log by accident.
pub(crate) struct SeededUser {
    pub(crate) email: &'static str,
    pub(crate) team: &'static str,
    pub(crate) password: String,
}

/// The users and sessions tables, and the demo users that are absent;
/// returns those made now, with their passwords.
pub(crate) async fn prepare(db: &Db) -> Result<Vec<SeededUser>, Box<dyn std::error::Error>> {
    crate::demo::on_db!(db, |pool, sql| {
        sqlx::query(sql.create).execute(pool).await?;
    });
    super::session_store::create_table(db).await?;
    let mut seeded = Vec::new();
    for (email, team) in DEMO_USERS {
        if find(db, email).await?.is_some() {
            continue;
        }
        let password = random_password()?;
        let hash = hash_password(password.clone()).await?;
        let inserted = crate::demo::on_db!(db, |pool, sql| {
            sqlx::query(sql.insert)
                .bind(email)
                .bind(team)
                .bind(&hash)
                .execute(pool)
                .await?
                .rows_affected()
        });
        // Another instance may have made it first: then its password is
        // the one printed there.
        if inserted == 1 {
            seeded.push(SeededUser {
                email,
                team,
                password,
            });
        }
    }
    // Made now, so that the first sign-in with an unknown email takes no
    // longer than any other.
    tokio::task::spawn_blocking(stand_in_hash);
    Ok(seeded)
}

/// A password from the operating system's CSPRNG.
fn random_password() -> Result<String, rand::rngs::SysError> {
    let mut rng = StdRng::try_from_rng(&mut SysRng)?;
    Ok(Alphanumeric.sample_string(&mut rng, PASSWORD_LEN))
}

/// A random token of 43 base62 characters (about 256 bits): CSRF tokens.
pub(crate) fn random_token() -> Result<String, rand::rngs::SysError> {
    let mut bytes = [0u8; 32];
    SysRng.try_fill_bytes(&mut bytes)?;
    let mut rng = StdRng::from_seed(bytes);
    Ok(Alphanumeric.sample_string(&mut rng, 43))
}

/// Argon2 is slow on purpose: off the async threads. (Only when seeding,
/// one user after another.)
async fn hash_password(password: String) -> Result<String, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || password_auth::generate_hash(password)).await
}

/// The team and password hash of `email`, if such a user exists.
async fn find(db: &Db, email: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    crate::demo::on_db!(db, |pool, sql| {
        sqlx::query_as(sql.find).bind(email).fetch_optional(pool).await
    })
}

/// The team of `email` if it is a user's: sessions are checked against
/// the table on every request, so a removed user is signed out at once.
pub(crate) async fn team_of(db: &Db, email: &str) -> Result<Option<TeamId>, sqlx::Error> {
    Ok(find(db, email)
        .await?
        .and_then(|(team, _)| TeamId::new(team).ok()))
}

/// Emails compare without case or surrounding spaces.
pub(crate) fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// The user's team if `password` is theirs. An unknown email costs the
/// same argon2 verification as a known one, so the answer's timing does
/// not tell which emails have accounts. `permit` is held until the hash
/// is done, even if the request is dropped meanwhile.
pub(crate) async fn check_password(
    db: &Db,
    email: &str,
    password: String,
    permit: OwnedSemaphorePermit,
) -> Result<Option<TeamId>, sqlx::Error> {
    if email.len() > MAX_EMAIL_LEN || password.len() > MAX_PASSWORD_LEN {
        return Ok(None);
    }
    let (team, hash) = match find(db, email).await? {
        Some((team, hash)) => (Some(team), Some(hash)),
        None => (None, None),
    };
    let verified = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let hash = match &hash {
            Some(hash) => hash.as_str(),
            None => stand_in_hash(),
        };
        password_auth::verify_password(password, hash).is_ok()
    })
    .await
    .unwrap_or(false);
    Ok(team.filter(|_| verified).and_then(|team| TeamId::new(team).ok()))
}

/// A hash of no one's password, made once, to verify against when the
/// email is unknown.
fn stand_in_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        // Unguessable even if a password could match it by chance.
        let password = random_password().unwrap_or_else(|_| "stand-in".repeat(4));
        password_auth::generate_hash(password)
    })
}
