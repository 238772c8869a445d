//! The real `teamkey` binary against SQLite (always) and PostgreSQL (when
//! `TEAMKEY_TEST_POSTGRES_URL` is set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::hash::{BuildHasher, RandomState};
use std::process::{Command, Output};

use teamkey_core::{HashVersion, KeyFormat, KeyId, KeyManager, KeyStore, Pepper, TeamId, VerifyError};
use teamkey_sqlx::SqlxStore;
use teamkey_sqlx::sqlx::{self, AssertSqlSafe};

fn unique(label: &str) -> String {
    format!(
        "teamkey_cli_{label}_{:016x}",
        RandomState::new().hash_one(std::time::SystemTime::now())
    )
}

/// Runs `teamkey` with a clean environment but for the database URL.
fn teamkey(url: &str, args: &[&str]) -> Output {
    teamkey_with(url, args, &[])
}

/// Runs `teamkey` with a clean environment but for the database URL and `env`.
fn teamkey_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    command(url, args)
        .envs(env.iter().copied())
        .output()
        .expect("run teamkey")
}

/// `teamkey args` with a clean environment but for the database URL.
fn command(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_teamkey"));
    command
        .args(args)
        .env_remove("TEAMKEY_PREFIX")
        .env_remove("TEAMKEY_PEPPER")
        .env_remove("TEAMKEY_PEPPER_FILE")
        .env("DATABASE_URL", url);
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Succeeds, and says nothing on stderr that could be a key.
fn ok(url: &str, args: &[&str]) -> (String, String) {
    let out = teamkey(url, args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "teamkey {args:?} failed: {stderr}");
    (stdout, stderr)
}

/// Fails with one clear line on stderr and nothing on stdout.
fn refused(url: &str, args: &[&str]) -> String {
    refused_with(url, args, &[])
}

/// [`refused`], with `env` set.
fn refused_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = teamkey_with(url, args, env);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "teamkey {args:?} should fail: {stderr}"
    );
    assert!(out.stdout.is_empty(), "no stdout on failure");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("teamkey: error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The whole lifecycle through the binary; returns every byte it printed
/// apart from the keys themselves.
fn lifecycle(url: &str) {
    let mut printed = String::new();

    let (stdout, stderr) = ok(
        url,
        &[
            "create",
            "--team",
            "acme",
            "--name",
            "CI/CD Pipeline",
            "--scope",
            "scans:read",
        ],
    );
    assert_eq!(stdout.lines().count(), 1, "the key alone on stdout");
    let key = stdout.trim_end().to_owned();
    assert!(KeyFormat::default().parse(&key).is_ok(), "a valid key: {key}");
    let id = &key[8..20];
    assert!(stderr.contains("will not be shown again"), "{stderr}");
    assert!(stderr.contains(id), "stderr names the key id: {stderr}");
    assert!(
        stderr.contains(&format!("tk_live_{id}…{}", &key[key.len() - 4..])),
        "and the preview: {stderr}"
    );
    printed += &stderr;

    let (table, stderr) = ok(url, &["list", "--team", "acme"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(header, ["ID", "NAME", "KEY", "CREATED", "LAST USED"]);
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(id) && row.contains("CI/CD Pipeline") && row.ends_with("never"),
        "{row}"
    );
    printed += &table;
    printed += &stderr;

    let (json, _) = ok(url, &["list", "--team", "acme", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let first = &listed.as_array().unwrap()[0];
    let mut fields: Vec<&str> = first.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "created_at",
            "expires_at",
            "id",
            "last_used_at",
            "name",
            "preview",
            "scopes"
        ]
    );
    assert_eq!(first["id"], id);
    assert_eq!(first["last_used_at"], serde_json::Value::Null);
    assert_eq!(first["scopes"], serde_json::json!(["scans:read"]));
    printed += &json;

    let (empty, _) = ok(url, &["list", "--team", "globex"]);
    assert_eq!(empty.lines().count(), 1, "another team sees no keys: {empty}");

    let (stdout, stderr) = ok(url, &["rotate", "--team", "acme", id, "--grace", "24h"]);
    let next = stdout.trim_end().to_owned();
    assert!(KeyFormat::default().parse(&next).is_ok() && next != key);
    printed += &stderr;
    let (table, _) = ok(url, &["list", "--team", "acme"]);
    assert_eq!(
        table.lines().count(),
        3,
        "old key in its grace period, and the new one: {table}"
    );
    printed += &table;

    refused(url, &["revoke", "--team", "globex", id]);
    let (_, stderr) = ok(url, &["revoke", "--team", "acme", id]);
    printed += &stderr;
    let message = refused(url, &["revoke", "--team", "acme", id]);
    assert!(message.contains("no active key"), "{message}");

    let (stdout, _) = ok(
        url,
        &[
            "create",
            "--team",
            "acme",
            "--name",
            "Short",
            "--expires-in",
            "90d",
        ],
    );
    let short_id = &stdout[8..20];
    let (json, _) = ok(url, &["list", "--team", "acme", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    let short = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == short_id)
        .unwrap();
    assert!(short["expires_at"].is_string());
    printed += &json;

    let hostile = "Robert'); DROP TABLE api_keys;-- \"100%\" _x_ 🦎";
    let (stdout, _) = ok(url, &["create", "--team", "o'brien; --", "--name", hostile]);
    let (json, _) = ok(url, &["list", "--team", "o'brien; --", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed[0]["name"], hostile, "stored and listed exactly");
    assert_eq!(listed[0]["id"], &stdout[8..20]);
    printed += &json;

    for secret in [&key, &next] {
        assert!(
            !printed.contains(&secret[20..60]),
            "a key was printed outside create/rotate stdout"
        );
    }
}

#[test]
fn sqlite_lifecycle_and_errors() {
    let path = std::env::temp_dir().join(format!("{}.db", unique("sqlite")));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    lifecycle(&url);

    // The keys the CLI makes work in the library against the same database.
    let (stdout, _) = ok(&url, &["create", "--team", "acme", "--name", "for the app"]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let keys = KeyManager::new(SqlxStore::new(pool));
        let who = keys.verify(stdout.trim_end()).await.unwrap();
        assert_eq!(who.team_id(), &TeamId::new("acme").unwrap());
        keys.flush_last_used().await.unwrap();
    });
    let (table, _) = ok(&url, &["list", "--team", "acme"]);
    assert!(
        !table.lines().nth(1).unwrap().ends_with("never"),
        "last used is shown once flushed: {table}"
    );

    refused(&url, &["create", "--team", "acme", "--name", "   "]);
    refused(
        &url,
        &["create", "--team", "acme", "--name", &"n".repeat(10 * 1024)],
    );
    refused(&url, &["create", "--team", &"t".repeat(10 * 1024), "--name", "x"]);
    refused(
        &url,
        &[
            "create",
            "--team",
            "acme",
            "--name",
            "x",
            "--scope",
            "not a scope",
        ],
    );
    refused(&url, &["revoke", "--team", "acme", "not-an-id"]);
    refused(&url, &["--prefix", "Bad-Prefix", "list", "--team", "acme"]);
    let bad_duration = teamkey(
        &url,
        &["rotate", "--team", "acme", "abcdefABCDEF", "--grace", "5x"],
    );
    assert_eq!(
        bad_duration.status.code(),
        Some(2),
        "usage errors are clap's exit code 2"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn prefix_comes_from_flag_or_environment() {
    let path = std::env::temp_dir().join(format!("{}.db", unique("prefix")));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let (stdout, _) = ok(
        &url,
        &["--prefix", "gk_test", "create", "--team", "a", "--name", "n"],
    );
    assert!(stdout.starts_with("gk_test_"), "{stdout}");
    let out = Command::new(env!("CARGO_BIN_EXE_teamkey"))
        .args(["create", "--team", "a", "--name", "n"])
        .env("DATABASE_URL", &url)
        .env("TEAMKEY_PREFIX", "gk_live")
        .output()
        .unwrap();
    assert!(text(&out.stdout).starts_with("gk_live_"));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn unusable_database_urls_are_one_clear_line() {
    // Port 9 on loopback: nothing listens there.
    let refused_pg = refused("postgres://user:hunter2@127.0.0.1:9/db", &["list", "--team", "a"]);
    assert!(refused_pg.contains("Connection refused"), "{refused_pg}");
    assert!(
        !refused_pg.contains("hunter2"),
        "passwords stay out of messages: {refused_pg}"
    );
    refused("mysql://root@127.0.0.1:9/db", &["list", "--team", "a"]);
    let scheme = refused("oracle://x", &["list", "--team", "a"]);
    assert!(scheme.contains("unsupported database URL scheme"), "{scheme}");
    refused("sqlite:///nonexistent-dir/teamkey.db", &["list", "--team", "a"]);
    refused("not a url", &["list", "--team", "a"]);
}

#[test]
fn postgres_lifecycle() {
    let Some(base) = std::env::var("TEAMKEY_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("\n*** SKIPPED: TEAMKEY_TEST_POSTGRES_URL is not set. ***\n");
        return;
    };
    let schema = unique("pg");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin = runtime.block_on(sqlx::PgPool::connect(&base)).unwrap();
    let create = format!("CREATE SCHEMA {schema}");
    runtime
        .block_on(sqlx::query(AssertSqlSafe(create)).execute(&admin))
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    lifecycle(&url);
    let drop = format!("DROP SCHEMA {schema} CASCADE");
    runtime
        .block_on(sqlx::query(AssertSqlSafe(drop)).execute(&admin))
        .unwrap();
}

/// A fresh SQLite database file, removed when dropped.
struct TempDb {
    path: std::path::PathBuf,
    url: String,
}

impl TempDb {
    fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{}.db", unique(label)));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self { path, url }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const PEPPER: &str = "pepper-0123456789-abcdefghijklmnop-XYZ";

#[test]
fn keys_made_with_a_pepper_verify_only_with_it() {
    let db = TempDb::new("pepper");
    let url = &db.url;
    let file = std::env::temp_dir().join(format!("{}.pepper", unique("pepper")));
    // As `echo "$PEPPER" > file` writes it: one trailing newline.
    std::fs::write(&file, format!("{PEPPER}\n")).unwrap();
    let file_arg = file.to_str().unwrap();

    let mut printed = String::new();
    let mut made = Vec::new();
    for (args, env) in [
        (
            vec!["create", "--team", "acme", "--name", "from env"],
            vec![("TEAMKEY_PEPPER", PEPPER)],
        ),
        (
            vec![
                "--pepper-file",
                file_arg,
                "create",
                "--team",
                "acme",
                "--name",
                "from file",
            ],
            vec![],
        ),
        (
            vec!["create", "--team", "acme", "--name", "from file env"],
            vec![("TEAMKEY_PEPPER_FILE", file_arg)],
        ),
    ] {
        let out = teamkey_with(url, &args, &env);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{args:?}: {stderr}");
        made.push(stdout.trim_end().to_owned());
        printed += &stdout;
        printed += &stderr;
    }
    let (table, stderr) = ok(url, &["--pepper-file", file_arg, "list", "--team", "acme"]);
    printed += &table;
    printed += &stderr;

    runtime().block_on(async {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let store = SqlxStore::new(pool);
        let peppered = KeyManager::builder(store.clone())
            .pepper(Pepper::new(PEPPER).unwrap())
            .build();
        let plain = KeyManager::new(store.clone());
        let wrong = KeyManager::builder(store.clone())
            .pepper(Pepper::new(format!("{PEPPER}\n")).unwrap())
            .build();
        for key in &made {
            peppered
                .verify(key)
                .await
                .expect("the service's pepper verifies it");
            let err = plain.verify(key).await.unwrap_err();
            assert!(matches!(err, VerifyError::PepperMissing { .. }), "{err}");
            let err = wrong.verify(key).await.unwrap_err();
            assert!(
                matches!(err, VerifyError::Mismatch { .. }),
                "the newline is not the pepper's: {err}"
            );
            let id = KeyId::parse(&key[8..20]).unwrap();
            let record = store.get(&id).await.unwrap().unwrap();
            assert_eq!(record.hash_version, HashVersion::PrefixedHmacSha256);
        }
    });
    assert!(!printed.contains(PEPPER), "the pepper is never printed");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_bad_pepper_is_one_line_and_never_shown() {
    let db = TempDb::new("badpepper");
    let url = &db.url;
    let create = ["create", "--team", "acme", "--name", "n"];
    let short = "too-short-pepper-material";
    let message = refused_with(url, &create, &[("TEAMKEY_PEPPER", short)]);
    assert!(message.contains("at least 32 bytes"), "{message}");
    assert!(!message.contains(short), "{message}");
    // Set but empty: a missing secret, not "no pepper".
    refused_with(url, &create, &[("TEAMKEY_PEPPER", "")]);
    let file = std::env::temp_dir().join(format!("{}.pepper", unique("short")));
    std::fs::write(&file, format!("{short}\n")).unwrap();
    let mut args = vec!["--pepper-file", file.to_str().unwrap()];
    args.extend(create);
    let message = refused(url, &args);
    assert!(
        message.contains("--pepper-file") && !message.contains(short),
        "{message}"
    );
    let message = refused_with(url, &args, &[("TEAMKEY_PEPPER", PEPPER)]);
    assert!(
        message.contains("not both") && !message.contains(PEPPER),
        "{message}"
    );
    let _ = std::fs::remove_file(&file);
    refused(
        url,
        &[
            "--pepper-file",
            "/nonexistent/teamkey.pepper",
            "list",
            "--team",
            "a",
        ],
    );
    let (table, _) = ok(url, &["list", "--team", "acme"]);
    assert_eq!(table.lines().count(), 1, "nothing was created: {table}");
}

#[test]
fn expiries_past_the_maximum_are_one_line_never_a_panic() {
    let db = TempDb::new("expiry");
    let url = &db.url;
    for far in ["10000years", "3651days", "18446744073709551615s"] {
        let message = refused(
            url,
            &["create", "--team", "acme", "--name", "n", "--expires-in", far],
        );
        assert!(
            message.contains("--expires-in") && message.contains("3650 days"),
            "{message}"
        );
    }
    // Too large for the duration parser itself: a usage error, no panic.
    let out = teamkey(
        url,
        &[
            "create",
            "--team",
            "acme",
            "--name",
            "n",
            "--expires-in",
            "99999999999999999999999years",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!text(&out.stderr).contains("panicked"));
    let (table, _) = ok(url, &["list", "--team", "acme"]);
    assert_eq!(table.lines().count(), 1, "nothing was created: {table}");
    ok(
        url,
        &[
            "create",
            "--team",
            "acme",
            "--name",
            "n",
            "--expires-in",
            "3650days",
        ],
    );
}

#[test]
fn rotation_grace_past_seven_days_is_refused() {
    let db = TempDb::new("grace");
    let url = &db.url;
    let (stdout, _) = ok(url, &["create", "--team", "acme", "--name", "n"]);
    let id = &stdout[8..20];
    for grace in ["8d", "1000000000years", "18446744073709551615s"] {
        let message = refused(url, &["rotate", "--team", "acme", id, "--grace", grace]);
        assert!(
            message.contains("--grace") && message.contains("604800 seconds"),
            "{message}"
        );
    }
    let out = teamkey(
        url,
        &[
            "rotate",
            "--team",
            "acme",
            id,
            "--grace",
            "99999999999999999999999years",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!text(&out.stderr).contains("panicked"));
    let (table, _) = ok(url, &["list", "--team", "acme"]);
    assert_eq!(table.lines().count(), 2, "not rotated: {table}");
    ok(url, &["rotate", "--team", "acme", id, "--grace", "7d"]);
}

/// The cursor from `teamkey: more keys: --cursor C` on stderr, if any.
fn next_cursor(stderr: &str) -> Option<String> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("teamkey: more keys: --cursor "))?;
    line.split_whitespace().last().map(str::to_owned)
}

#[test]
fn list_pages_with_limit_and_cursor() {
    let db = TempDb::new("pages");
    let url = &db.url;
    for i in 0..7 {
        ok(url, &["create", "--team", "acme", "--name", &format!("key {i}")]);
    }
    ok(url, &["create", "--team", "globex", "--name", "other"]);

    // Without paging flags: every key, no hint, as before.
    let (json, stderr) = ok(url, &["list", "--team", "acme", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(all.len(), 7);
    assert!(next_cursor(&stderr).is_none(), "{stderr}");
    let all_ids: Vec<&str> = all.iter().map(|k| k["id"].as_str().unwrap()).collect();

    // Pages of 3 as JSON arrays: 3, 3, 1, following the hint.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let mut args = vec!["list", "--team", "acme", "--json", "--limit", "3"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let (json, stderr) = ok(url, &args);
        let page: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        sizes.push(page.len());
        seen.extend(page.iter().map(|k| k["id"].as_str().unwrap().to_owned()));
        cursor = next_cursor(&stderr);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(seen, all_ids, "every key once, in order");

    // The table pages the same way; the hint goes to stderr only.
    let (table, stderr) = ok(url, &["list", "--team", "acme", "--limit", "5"]);
    assert_eq!(table.lines().count(), 6, "header and 5 rows: {table}");
    assert!(!table.contains("--cursor"));
    let next = next_cursor(&stderr).expect("a hint for the next page");
    let (table, stderr) = ok(url, &["list", "--team", "acme", "--cursor", &next]);
    assert_eq!(table.lines().count(), 3, "the 2 keys left: {table}");
    assert!(next_cursor(&stderr).is_none());

    for bad in [
        &["--limit", "0"][..],
        &["--limit", "101"],
        &["--cursor", "not-a-cursor"],
    ] {
        let mut args = vec!["list", "--team", "acme"];
        args.extend(bad);
        let out = teamkey(url, &args);
        assert_eq!(out.status.code(), Some(2), "{bad:?} is a usage error");
        assert!(out.stdout.is_empty() && !text(&out.stderr).contains("panicked"));
    }
}

/// Runs `teamkey` with its stdout a pipe whose reader is already gone, as
/// under `teamkey create … | head -c0`.
fn teamkey_into_a_closed_pipe(url: &str, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    command(url, args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run teamkey")
}

#[test]
fn a_closed_stdout_is_one_line_and_a_key_never_shown_is_revoked() {
    let path = std::env::temp_dir().join(format!("{}.db", unique("pipe")));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    ok(&url, &["create", "--team", "acme", "--name", "kept"]);

    let out = teamkey_into_a_closed_pipe(&url, &["list", "--team", "acme", "--json"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("teamkey: error: cannot write to stdout"),
        "{stderr}"
    );

    let out = teamkey_into_a_closed_pipe(&url, &["create", "--team", "acme", "--name", "lost"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("was never shown, so it was revoked"), "{stderr}");
    let (listed, _) = ok(&url, &["list", "--team", "acme", "--json"]);
    assert!(
        listed.contains("\"kept\"") && !listed.contains("\"lost\""),
        "{listed}"
    );
    let _ = std::fs::remove_file(path);
}
