//! The real `teamkey` binary against SQLite (always) and PostgreSQL (when
//! `TEAMKEY_TEST_POSTGRES_URL` is set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::hash::{BuildHasher, RandomState};
use std::process::{Command, Output};

use teamkey_core::{KeyFormat, KeyManager, TeamId};
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
    Command::new(env!("CARGO_BIN_EXE_teamkey"))
        .args(args)
        .env_remove("TEAMKEY_PREFIX")
        .env("DATABASE_URL", url)
        .output()
        .expect("run teamkey")
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
    let out = teamkey(url, args);
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
