//! The real `teamkey` binary against SQLite (always), PostgreSQL and
//! MySQL/MariaDB (when `TEAMKEY_TEST_POSTGRES_URL` and
//! `TEAMKEY_TEST_MYSQL_URL` are set).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::hash::{BuildHasher, RandomState};
use std::process::{Command, Output};

use teamkey_core::events::KeyEvent;
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

/// `teamkey args` with a clean environment but for the database URL. The
/// OS user is whoever runs the tests: a test that reads the actor of a
/// change names it, or sets or removes `USER` and `LOGNAME` itself.
fn command(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_teamkey"));
    command
        .args(args)
        .env_remove("TEAMKEY_PREFIX")
        .env_remove("TEAMKEY_PEPPER")
        .env_remove("TEAMKEY_PEPPER_FILE")
        .env_remove("TEAMKEY_ACTOR")
        .env("DATABASE_URL", url);
    command
}

/// A table's cells, line by line (cells are two or more spaces apart).
fn cells(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect()
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
            "--actor",
            "alice",
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
    let rows = cells(&table);
    assert_eq!(
        rows[0],
        [
            "ID",
            "NAME",
            "KEY",
            "CREATED",
            "LAST USED",
            "RATE LIMIT",
            "ROTATED FROM",
            "REPLACED BY"
        ]
    );
    let row = &rows[1];
    assert!(
        row[0] == id && row[1] == "CI/CD Pipeline" && row[4..] == ["never", "-", "-", "-"],
        "{row:?}"
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
            "rate_limit",
            "replaced_by",
            "rotated_from",
            "scopes"
        ]
    );
    assert_eq!(first["id"], id);
    assert_eq!(first["last_used_at"], serde_json::Value::Null);
    assert_eq!(first["scopes"], serde_json::json!(["scans:read"]));
    printed += &json;

    let (empty, _) = ok(url, &["list", "--team", "globex"]);
    assert_eq!(empty.lines().count(), 1, "another team sees no keys: {empty}");

    let (stdout, stderr) = ok(
        url,
        &["--actor", "bob", "rotate", "--team", "acme", id, "--grace", "24h"],
    );
    let next = stdout.trim_end().to_owned();
    let next_id = &next[8..20];
    assert!(KeyFormat::default().parse(&next).is_ok() && next != key);
    printed += &stderr;
    let (table, _) = ok(url, &["list", "--team", "acme"]);
    assert_eq!(
        table.lines().count(),
        3,
        "old key in its grace period, and the new one: {table}"
    );
    let lineage: Vec<(&str, &str, &str)> = cells(&table)[1..]
        .iter()
        .map(|row| (row[0], row[6], row[7]))
        .collect();
    assert!(lineage.contains(&(next_id, id, "-")), "{table}");
    assert!(lineage.contains(&(id, "-", next_id)), "{table}");
    printed += &table;
    let (json, _) = ok(url, &["list", "--team", "acme", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let by_id = |want: &str| listed.iter().find(|k| k["id"] == want).unwrap().clone();
    assert_eq!(by_id(next_id)["rotated_from"], id);
    assert_eq!(by_id(next_id)["replaced_by"], serde_json::Value::Null);
    assert_eq!(by_id(id)["replaced_by"], next_id);
    printed += &json;

    refused(url, &["revoke", "--team", "globex", id]);
    let (_, stderr) = ok(url, &["--actor", "carol", "revoke", "--team", "acme", id]);
    printed += &stderr;
    let message = refused(url, &["revoke", "--team", "acme", id]);
    assert!(message.contains("no active key"), "{message}");

    // Every change, newest first, with who made it; refused changes none.
    let (table, stderr) = ok(url, &["events", "--team", "acme"]);
    assert!(next_event_cursor(&stderr).is_none(), "one page: {stderr}");
    let rows = cells(&table);
    assert_eq!(rows[0], ["TIME", "TYPE", "KEY", "NAME", "ACTOR", "SUCCESSOR"]);
    let events: Vec<(&str, &str, &str, &str)> = rows[1..]
        .iter()
        .map(|row| (row[1], row[2], row[4], row[5]))
        .collect();
    assert_eq!(
        events,
        [
            ("key.revoked", id, "operator:carol", "-"),
            ("key.rotated", id, "operator:bob", next_id),
            ("key.created", id, "operator:alice", "-"),
        ]
    );
    assert!(rows[1..].iter().all(|row| row[3] == "CI/CD Pipeline"));
    printed += &table;
    let (json, _) = ok(url, &["events", "--team", "acme", "--json"]);
    let events: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[1]["type"], "key.rotated");
    assert_eq!(events[1]["key_id"], id);
    assert_eq!(events[1]["successor_id"], next_id);
    assert_eq!(
        events[1]["actor"],
        serde_json::json!({"type": "operator", "name": "bob"})
    );
    assert_eq!(events[2]["scopes"], serde_json::json!(["scans:read"]));
    for event in &events {
        let parsed: KeyEvent = serde_json::from_value(event.clone()).unwrap();
        assert_eq!(parsed.team_id.as_str(), "acme", "KeyEvent's own form");
    }
    printed += &json;
    let (empty, _) = ok(url, &["events", "--team", "globex"]);
    assert_eq!(empty.lines().count(), 1, "another team sees no events: {empty}");

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
    assert_ne!(
        cells(&table)[1][4],
        "never",
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

#[test]
fn mysql_lifecycle() {
    let Some(base) = std::env::var("TEAMKEY_TEST_MYSQL_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("\n*** SKIPPED: TEAMKEY_TEST_MYSQL_URL is not set. ***\n");
        return;
    };
    let database = unique("my");
    let runtime = runtime();
    let admin = runtime.block_on(sqlx::MySqlPool::connect(&base)).unwrap();
    let create = format!("CREATE DATABASE {database}");
    runtime
        .block_on(sqlx::query(AssertSqlSafe(create)).execute(&admin))
        .unwrap();
    // The URL's path names the database: the test's own.
    let (server, query) = base
        .split_once('?')
        .map_or((base.as_str(), None), |(s, q)| (s, Some(q)));
    let server = server.rsplit_once('/').map_or(server, |(server, _)| server);
    let url = match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    };
    lifecycle(&url);
    let drop = format!("DROP DATABASE {database}");
    runtime
        .block_on(sqlx::query(AssertSqlSafe(drop)).execute(&admin))
        .unwrap();
}

/// The `ACTOR` cell of the newest event of team `acme`.
fn newest_actor(url: &str) -> String {
    let (table, _) = ok(url, &["events", "--team", "acme", "--limit", "1"]);
    cells(&table)[1][4].to_owned()
}

#[test]
fn changes_are_made_by_the_actor_else_the_os_user_else_cli() {
    let db = TempDb::new("actor");
    let url = &db.url;
    let create = ["create", "--team", "acme", "--name", "n"];
    let run = |args: &[&str], env: &[(&str, &str)], removed: &[&str]| {
        let mut command = command(url, args);
        for var in removed {
            command.env_remove(var);
        }
        let out = command.envs(env.iter().copied()).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    let os_user = ["USER", "LOGNAME"];

    run(
        &["--actor", "alice", "create", "--team", "acme", "--name", "n"],
        &[("USER", "bob")],
        &[],
    );
    assert_eq!(newest_actor(url), "operator:alice", "--actor wins");
    run(&create, &[("TEAMKEY_ACTOR", "deploy-bot"), ("USER", "bob")], &[]);
    assert_eq!(
        newest_actor(url),
        "operator:deploy-bot",
        "TEAMKEY_ACTOR stands for --actor"
    );
    run(&create, &[("USER", "bob"), ("LOGNAME", "robert")], &[]);
    assert_eq!(newest_actor(url), "operator:bob", "else $USER");
    run(&create, &[("LOGNAME", "robert")], &["USER"]);
    assert_eq!(newest_actor(url), "operator:robert", "else $LOGNAME");
    run(&create, &[("USER", " \u{7}")], &["LOGNAME"]);
    assert_eq!(
        newest_actor(url),
        "operator:cli",
        "else cli (a blank user is none)"
    );
    run(&create, &[], &os_user);
    assert_eq!(newest_actor(url), "operator:cli");

    // A name is cleaned as the core cleans it; one left empty is refused.
    let (stdout, _) = ok(
        url,
        &[
            "--actor",
            "eve\u{202e}\t",
            "create",
            "--team",
            "acme",
            "--name",
            "n",
        ],
    );
    assert_eq!(newest_actor(url), "operator:eve");
    let message = refused(url, &["--actor", " ", "revoke", "--team", "acme", &stdout[8..20]]);
    assert!(message.contains("--actor"), "{message}");
    let (table, _) = ok(url, &["list", "--team", "acme"]);
    assert_eq!(
        table.lines().count(),
        8,
        "the refused revoke changed nothing: {table}"
    );
    // Reading needs no actor.
    ok(url, &["--actor", "", "events", "--team", "acme"]);
}

#[test]
fn events_page_with_limit_and_cursor() {
    let db = TempDb::new("events");
    let url = &db.url;
    for i in 0..5 {
        ok(url, &["create", "--team", "acme", "--name", &format!("key {i}")]);
    }
    let (json, stderr) = ok(url, &["events", "--team", "acme", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(all.len(), 5);
    assert!(next_event_cursor(&stderr).is_none(), "{stderr}");
    let names: Vec<&str> = all.iter().map(|e| e["key_name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["key 4", "key 3", "key 2", "key 1", "key 0"],
        "newest first"
    );

    let (mut seen, mut sizes, mut cursor) = (Vec::new(), Vec::new(), None::<String>);
    loop {
        let mut args = vec!["events", "--team", "acme", "--json", "--limit", "2"];
        if let Some(c) = &cursor {
            args.extend(["--cursor", c.as_str()]);
        }
        let (json, stderr) = ok(url, &args);
        let page: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        sizes.push(page.len());
        seen.extend(page);
        cursor = next_event_cursor(&stderr);
        if cursor.is_none() {
            break;
        }
        assert_eq!(
            cursor.as_deref(),
            seen.last().and_then(|e| e["id"].as_str()),
            "the cursor is the last event shown"
        );
    }
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(seen, all, "every event once, in order");

    // The table pages the same way; the hint goes to stderr only.
    let (table, stderr) = ok(url, &["events", "--team", "acme", "--limit", "4"]);
    assert_eq!(table.lines().count(), 5, "header and 4 rows: {table}");
    let next = next_event_cursor(&stderr).expect("a hint for the next page");
    let (table, stderr) = ok(url, &["events", "--team", "acme", "--cursor", &next]);
    assert_eq!(table.lines().count(), 2, "the oldest event: {table}");
    assert!(cells(&table)[1][3] == "key 0" && next_event_cursor(&stderr).is_none());

    // Bad input: one line, exit code 1, nothing on stdout.
    for (bad, named) in [
        (&["--limit", "0"][..], "--limit"),
        (&["--limit", "101"], "--limit"),
        (&["--limit", "-1"], "--limit"),
        (&["--limit", "99999999999999999999999"], "--limit"),
        (&["--limit", "ten"], "--limit"),
        (&["--cursor", "not-a-cursor"], "--cursor"),
        // A UUID, but no event id (version 4).
        (&["--cursor", "00000000-0000-4000-8000-000000000000"], "--cursor"),
        (&["--cursor", &"7".repeat(10 * 1024)], "--cursor"),
    ] {
        let mut args = vec!["events", "--team", "acme"];
        args.extend(bad);
        let message = refused(url, &args);
        assert!(message.contains(named), "{bad:?}: {message}");
    }
    refused(url, &["events", "--team", " acme"]);
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

/// The cursor from `teamkey: more events: --cursor C` on stderr, if any.
fn next_event_cursor(stderr: &str) -> Option<String> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("teamkey: more events: --cursor "))?;
    line.split_whitespace().last().map(str::to_owned)
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

#[test]
fn a_rate_limit_is_set_listed_kept_by_rotation_and_checked() {
    let db = TempDb::new("ratelimit");
    let url = &db.url;
    let (stdout, _) = ok(
        url,
        &[
            "create",
            "--team",
            "acme",
            "--name",
            "limited",
            "--rate-limit",
            "100/60s",
        ],
    );
    let id = stdout[8..20].to_owned();
    let (table, _) = ok(url, &["list", "--team", "acme"]);
    let rows = cells(&table);
    assert_eq!(rows[0][5], "RATE LIMIT", "{table}");
    assert_eq!(rows[1][5], "100/60s", "{table}");
    ok(url, &["rotate", "--team", "acme", &id, "--grace", "1h"]);
    let (json, _) = ok(url, &["list", "--team", "acme", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    for row in json.as_array().unwrap() {
        assert_eq!(
            row["rate_limit"],
            serde_json::json!({"requests": 100, "window_seconds": 60}),
            "the successor keeps the limit: {row}"
        );
    }
    ok(
        url,
        &[
            "create",
            "--team",
            "acme",
            "--name",
            "hourly",
            "--rate-limit",
            "5000/1h",
        ],
    );
    for bad in [
        "0/60s",
        "100",
        "100/0s",
        "100/2d",
        "x/60s",
        "100/1.5s",
        "4294967296/1s",
    ] {
        let out = teamkey(
            url,
            &["create", "--team", "acme", "--name", "bad", "--rate-limit", bad],
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--rate-limit"), "{bad}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    let (table, _) = ok(url, &["list", "--team", "acme"]);
    assert_eq!(table.lines().count(), 4, "nothing written for bad input: {table}");
}

/// Someone revoking a leaked key pastes the full key where its id goes:
/// the refusal does not print the secret back (stderr goes to terminals,
/// CI logs and support tickets).
#[test]
fn a_full_key_given_as_an_id_is_not_echoed() {
    let path = std::env::temp_dir().join(format!("{}.db", unique("echo")));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let (stdout, _) = ok(&url, &["create", "--team", "acme", "--name", "leaked"]);
    let key = stdout.trim();
    let secret = &key[key.len() - 20..];
    for command in ["revoke", "rotate"] {
        let stderr = refused(&url, &[command, "--team", "acme", key]);
        assert!(!stderr.contains(secret), "{command} echoed the key: {stderr}");
    }
    let _ = std::fs::remove_file(&path);
}

/// Help names each variable without a value: none from the caller's
/// environment (the database URL may hold a password), and no `NAME=` for
/// an unset one, which reads as set to nothing (the newcomer's review).
#[test]
fn help_names_the_variables_without_values() {
    let help = teamkey_with(
        "postgres://user:hunter2@db/keys",
        &["--help"],
        &[("TEAMKEY_PREFIX", "tk_test"), ("TEAMKEY_ACTOR", "ci")],
    );
    // Lines wrap at the terminal's width: one space for any run of them.
    let help = String::from_utf8(help.stdout).unwrap();
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for name in [
        "DATABASE_URL",
        "TEAMKEY_PREFIX",
        "TEAMKEY_PEPPER_FILE",
        "TEAMKEY_ACTOR",
    ] {
        assert!(help.contains(&format!("[env: {name}]")), "{name}: {help}");
    }
    for value in ["hunter2", "tk_test]", "=ci", "=]"] {
        assert!(!help.contains(value), "{value}: {help}");
    }
}
