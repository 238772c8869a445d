//! `list_active` and `count_active` on every database: one statement on
//! the page index, reading at most a page of rows, newest first, with a
//! cursor that never skips or repeats a key, and only the team's active
//! keys.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support {
    pub(crate) mod databases;
    pub(crate) mod probe;
}

use support::databases::{MyDatabase, PgSchema, env_url, my_store, pg_store};
use support::probe::{Statement, StatementLog};
use teamkey_core::events::{EventKind, KeyEvent, Origin};
use teamkey_core::{
    Clock, CreateOptions, Cursor, HashVersion, KeyId, KeyInfo, KeyManager, KeyName, KeyRecord, KeyStore,
    ListQuery, ManualClock, PageRequest, Scopes, SecretDigest, TeamId,
};
use teamkey_sqlx::SqlxStore;
use teamkey_sqlx::sqlx::sqlite::SqlitePoolOptions;
use teamkey_sqlx::sqlx::{self, AssertSqlSafe, Row as _};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const PAGE: usize = 7;

/// Ids that sort differently bytewise (`B` < `Z` < `a` < `b`, as teamkey
/// orders them) and in a natural-language collation (a < B < b < Z).
const TIED_IDS: [&str; 4] = ["aaaaaaaaaaaa", "BBBBBBBBBBBB", "ZZZZZZZZZZZZ", "bbbbbbbbbbbb"];

fn team(name: &str) -> TeamId {
    TeamId::new(name).unwrap()
}

/// The SQL the store ran for a first page and for a page after a cursor.
struct PageSql {
    first: String,
    after: String,
}

fn one_statement(statements: &[Statement], what: &str) -> Statement {
    assert_eq!(statements.len(), 1, "{what}: one statement, got {statements:#?}");
    statements[0].clone()
}

/// Every page of `team`'s keys through the manager, checking each page's
/// shape; the rows in order.
async fn all_pages(keys: &KeyManager, team: &TeamId, limit: usize) -> (Vec<KeyInfo>, usize) {
    let mut rows = Vec::new();
    let mut request = PageRequest::first(limit).unwrap();
    let mut pages = 0;
    loop {
        let page = keys.list_page(team, request).await.unwrap();
        pages += 1;
        assert!(page.keys.len() <= limit);
        rows.extend(page.keys.iter().cloned());
        match page.next {
            Some(next) => {
                assert_eq!(page.keys.len(), limit, "only the last page is short");
                // The cursor is the last row shown: the next page starts after it.
                assert_eq!(next, cursor_after(page.keys.last().unwrap()));
                request = request.after(next.to_string().parse().unwrap());
            }
            None => return (rows, pages),
        }
        assert!(pages < 1_000, "paging does not end");
    }
}

/// The cursor after a row as shown.
fn cursor_after(info: &KeyInfo) -> Cursor {
    let micros = info.created_at.unix_timestamp_nanos() / 1_000;
    format!("{micros}.{}", info.id).parse().unwrap()
}

/// Newest first, as the core orders records: `created_at`, then id bytes.
fn newest_first(rows: &mut [KeyInfo]) {
    rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
}

fn tied_record(team: &TeamId, id: &str, at: OffsetDateTime) -> KeyRecord {
    KeyRecord::new(
        KeyId::parse(id).unwrap(),
        team.clone(),
        KeyName::new(format!("tied {id}")).unwrap(),
        format!("tk_live_{id}…xxxx"),
        SecretDigest::from_bytes([1; 32]),
        HashVersion::PrefixedSha256,
        Scopes::default(),
        at,
    )
}

/// The paging contract on `store`; returns the SQL it ran, for the plan checks.
async fn paging_contract<S: KeyStore + Clone>(store: S) -> PageSql {
    let log = StatementLog::global();
    let start = datetime!(2026-03-01 12:00 UTC);
    let clock = ManualClock::new(start);
    let keys = KeyManager::builder(store.clone())
        .clock(clock.clone())
        .max_active_keys(1_000)
        .build();
    let (acme, globex) = (team("acme"), team("globex"));

    // 45 keys, three per second (ties broken by id), some revoked, some
    // expiring; another team's keys at the very same instants.
    let mut expected = Vec::new();
    let mut expiring = 0;
    for i in 0..45 {
        if i % 3 == 0 {
            clock.advance(Duration::seconds(1));
        }
        let options = if i % 5 == 0 {
            CreateOptions::new().expires_in(Duration::minutes(30))
        } else {
            CreateOptions::new()
        };
        let made = keys.create(&acme, &format!("key {i}"), options).await.unwrap();
        if i % 7 == 0 {
            keys.revoke(&acme, &made.info.id).await.unwrap();
        } else if i % 5 == 0 {
            expiring += 1;
        } else {
            expected.push(made.info);
        }
        if i % 9 == 0 {
            keys.create(&globex, &format!("other {i}"), CreateOptions::new())
                .await
                .unwrap();
        }
    }
    // Four keys at one instant, mid-table, in an order collations disagree on.
    let tied_at = start + Duration::milliseconds(7_250);
    for id in TIED_IDS {
        let record = tied_record(&acme, id, tied_at);
        let created = KeyEvent::new(EventKind::Created, tied_at, &record, &Origin::system());
        store.insert(&record, &created).await.unwrap();
        expected.push(record.info());
    }
    clock.advance(Duration::hours(1)); // the 30-minute keys have expired
    newest_first(&mut expected);
    let now = clock.now();

    let (rows, pages) = all_pages(&keys, &acme, PAGE).await;
    assert!(pages >= 4, "several pages: {pages}");
    assert_eq!(
        rows.iter().map(|k| k.id).collect::<Vec<_>>(),
        expected.iter().map(|k| k.id).collect::<Vec<_>>(),
        "every active key once, newest first; no revoked, expired or other team's key"
    );
    assert_eq!(rows, expected, "rows read back as written");

    // One key per page across the tie: no cursor skips or repeats one.
    let (single, _) = all_pages(&keys, &acme, 1).await;
    assert_eq!(single, expected);

    let (others, _) = all_pages(&keys, &globex, PAGE).await;
    assert_eq!(others.len(), 5);
    assert!(others.iter().all(|k| k.name.as_str().starts_with("other")));

    // The store itself: one statement, at most a page of rows, whatever
    // the team's retired keys.
    let query = ListQuery::new(now, None, PAGE);
    let (first, statements) = log.probe(store.list_active(&acme, &query)).await;
    let first = first.unwrap();
    let first_sql = one_statement(&statements, "first page");
    assert_eq!(first.len(), PAGE);
    assert_eq!(first_sql.rows_returned, PAGE as u64, "reads only the page");
    let cursor = Cursor::after(first.last().unwrap());
    let query = ListQuery::new(now, Some(cursor), PAGE);
    let (second, statements) = log.probe(store.list_active(&acme, &query)).await;
    let after_sql = one_statement(&statements, "page after a cursor");
    assert_eq!(after_sql.rows_returned, PAGE as u64, "reads only the page");
    let second: Vec<KeyId> = second.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(
        second,
        expected[PAGE..2 * PAGE].iter().map(|k| k.id).collect::<Vec<_>>()
    );

    let (count, statements) = log.probe(store.count_active(&acme, now)).await;
    assert_eq!(count.unwrap(), expected.len());
    assert_eq!(one_statement(&statements, "count").rows_returned, 1);
    assert_eq!(store.count_active(&globex, now).await.unwrap(), 5);
    assert_eq!(store.count_active(&team("nobody"), now).await.unwrap(), 0);
    assert_eq!(
        store.count_active(&acme, start).await.unwrap(),
        expected.len() + expiring,
        "before they expire, the 30-minute keys count too"
    );

    // Cursors are client input: one before year 1 or after 9999 never
    // reaches the store; the core refuses it as a malformed cursor.
    for out_of_range in [
        "-200000000000000000.abcdefABCDEF",
        "9223372036854775807.abcdefABCDEF",
    ] {
        assert!(out_of_range.parse::<Cursor>().is_err(), "{out_of_range}");
    }
    // The oldest cursor there can be: nothing is older.
    let oldest: Cursor = "-62135596800000000.abcdefABCDEF".parse().unwrap();
    let query = ListQuery::new(now, Some(oldest), PAGE);
    assert!(store.list_active(&acme, &query).await.unwrap().is_empty());
    let page = keys
        .list_page(&acme, PageRequest::first(PAGE).unwrap().after(oldest))
        .await
        .unwrap();
    assert!(page.keys.is_empty() && page.next.is_none());

    PageSql {
        first: first_sql.sql,
        after: after_sql.sql,
    }
}

#[tokio::test]
async fn sqlite_pages_on_the_index() {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let store = SqlxStore::new(pool.clone());
    store.migrate().await.unwrap();
    let sql = paging_contract(store).await;
    for statement in [sql.first, sql.after] {
        let plan: Vec<String> = sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {statement}")))
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("api_keys_team_page_idx"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "the index gives the order: {plan}");
    }
}

#[tokio::test]
async fn postgres_pages_on_the_index_whatever_the_collation() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let store = pg_store(options, 2).await;
    let pool = store.pool().clone();
    // As on a database created with an en_US locale, where 'a' < 'B'.
    sqlx::query(r#"ALTER TABLE api_keys ALTER COLUMN id TYPE VARCHAR(12) COLLATE "en-US-x-icu""#)
        .execute(&pool)
        .await
        .unwrap();
    let sql = paging_contract(store).await;

    // With sequential scans off, the plan must walk the page index
    // backwards and never sort: the query's order is the index's.
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let now = datetime!(2026-03-01 13:00 UTC);
    let first: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {}", sql.first)))
        .bind("acme")
        .bind(now)
        .bind(8_i64)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let after: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {}", sql.after)))
        .bind("acme")
        .bind(now)
        .bind(now)
        .bind(now)
        .bind("abcdefABCDEF")
        .bind(8_i64)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    for plan in [first.join("\n"), after.join("\n")] {
        assert!(
            plan.contains("Index Scan Backward using api_keys_team_page_idx"),
            "{plan}"
        );
        assert!(!plan.contains("Sort"), "{plan}");
    }
    drop(conn);
    pool.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn mysql_pages_on_the_index() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    let store = my_store(options, 2).await;
    let pool = store.pool().clone();
    let sql = paging_contract(store).await;
    let now = datetime!(2026-03-01 13:00 UTC);
    let row = sqlx::query(AssertSqlSafe(format!("EXPLAIN {}", sql.after)))
        .bind("acme")
        .bind(now)
        .bind(now)
        .bind(now)
        .bind("abcdefABCDEF")
        .bind(8_i64)
        .fetch_one(&pool)
        .await
        .unwrap();
    let possible: Option<String> = row.try_get("possible_keys").unwrap();
    assert!(
        possible.unwrap_or_default().contains("api_keys_team_page_idx"),
        "the page index serves the query"
    );
    let mut indexes: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT index_name FROM information_schema.statistics \
         WHERE table_schema = DATABASE() AND table_name = 'api_keys'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    indexes.sort();
    assert_eq!(
        indexes,
        ["PRIMARY", "api_keys_expiring_idx", "api_keys_team_page_idx"],
        "the old team index is gone (the expiry sweeps' is another)"
    );
    pool.close().await;
    database.drop().await;
}
