//! Audit events on every database: each change records exactly one event
//! in its own transaction (and a failed change none), events read back
//! field for field, page newest first within their team only, once-only
//! events are recorded once however many instances race, expiry sweeps
//! warn once, lineage and last-used addresses round-trip, bad rows are
//! errors, events invalidate no cache, and event pages and expiry sweeps
//! walk their indexes.
//!
//! PostgreSQL and MySQL/MariaDB run when `TEAMKEY_TEST_POSTGRES_URL` and
//! `TEAMKEY_TEST_MYSQL_URL` are set; each test works in a schema or
//! database of its own. SQLite (a file, so that racing tasks get
//! connections of their own) always runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support {
    pub(crate) mod databases;
    pub(crate) mod probe;
}

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use support::databases::{MyDatabase, PgSchema, env_url, my_store, pg_store, unique};
use support::probe::StatementLog;
use teamkey_core::events::{
    Actor, EventKind, EventQuery, EventSink, KeyEvent, Origin, RequestContext, SinkError,
};
use teamkey_core::{
    CreateOptions, HashVersion, KeyFormat, KeyId, KeyManager, KeyName, KeyRecord, KeyStore, KeyUse,
    ManualClock, RotateOutcome, Rotation, Scopes, SecretDigest, StoreError, TeamId, VerifyError,
};
use teamkey_sqlx::SqlxStore;
use teamkey_sqlx::sqlx::postgres::PgListener;
use teamkey_sqlx::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use teamkey_sqlx::sqlx::{self, AssertSqlSafe};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use tokio::sync::Barrier;

/// When the checks happen (microseconds, as stored).
const T0: OffsetDateTime = datetime!(2030-01-01 12:00:00.123456 UTC);
/// Expiry sweeps run years later: `expiring` spans every team, and no key
/// of the other checks expires after this.
const SWEEP_T0: OffsetDateTime = datetime!(2040-06-01 08:00:00.5 UTC);

/// A random key id: what a generated key has.
fn fresh_key_id() -> KeyId {
    KeyFormat::default().generate().unwrap().id()
}

/// A team id no other check uses.
fn team(label: &str) -> TeamId {
    TeamId::new(format!("{label}-{}", fresh_key_id())).unwrap()
}

fn record(team: &TeamId, name: &str) -> KeyRecord {
    let id = fresh_key_id();
    let mut record = KeyRecord::new(
        id,
        team.clone(),
        KeyName::new(name).unwrap(),
        format!("tk_live_{id}…abcd"),
        SecretDigest::from_bytes([3; 32]),
        HashVersion::PrefixedSha256,
        Scopes::new(["scans:read"]).unwrap(),
        T0,
    );
    record.expires_at = Some(T0 + Duration::days(30));
    record
}

fn operator() -> Origin {
    Origin::new(Actor::operator("kit"))
}

fn event(kind: EventKind, at: OffsetDateTime, record: &KeyRecord) -> KeyEvent {
    KeyEvent::new(kind, at, record, &operator())
}

fn created(record: &KeyRecord) -> KeyEvent {
    event(EventKind::Created, record.created_at, record)
}

/// The revocation of `record`'s id by `team` (another team's, to try one).
fn revocation(record: &KeyRecord, team: &TeamId, at: OffsetDateTime) -> KeyEvent {
    let mut as_seen = record.clone();
    as_seen.team_id = team.clone();
    event(EventKind::Revoked, at, &as_seen)
}

fn rotation(old: &KeyRecord, team: &TeamId, mut successor: KeyRecord) -> Rotation {
    successor.rotated_from = Some(old.id);
    let mut rotated = event(EventKind::Rotated, T0 + Duration::seconds(1), old);
    rotated.team_id = team.clone();
    rotated.successor_id = Some(successor.id);
    Rotation::new(team.clone(), old.id, T0 + Duration::hours(1), successor, rotated)
}

fn once(kind: EventKind, record: &KeyRecord, days_left: Option<u8>) -> KeyEvent {
    let mut event = KeyEvent::new(kind, T0, record, &Origin::system());
    event.days_left = days_left;
    event
}

async fn all_events(store: &impl KeyStore, team: &TeamId) -> Vec<KeyEvent> {
    store.events(team, &EventQuery::newest(1_000)).await.unwrap()
}

fn kinds(events: &[KeyEvent]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

async fn get(store: &impl KeyStore, id: &KeyId) -> KeyRecord {
    KeyRecord::clone(&store.get(id).await.unwrap().expect("the record"))
}

/// Every event the manager hands to the app's sink.
#[derive(Clone, Default)]
struct Delivered(Arc<Mutex<Vec<KeyEvent>>>);

#[teamkey_core::async_trait]
impl EventSink for Delivered {
    async fn deliver(&self, event: &KeyEvent) -> Result<(), SinkError> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

impl Delivered {
    /// The first `n` events delivered (newest first), waiting up to 5 s
    /// for them: delivery runs on tasks of its own.
    async fn wait_for(&self, n: usize) -> Vec<KeyEvent> {
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let mut got = self.0.lock().unwrap().clone();
            if got.len() >= n || Instant::now() > deadline {
                got.sort_by_key(|e| std::cmp::Reverse(e.id));
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// Raw SQL on the store's database, for rows teamkey would never write.
enum Raw {
    Pg(sqlx::PgPool),
    My(sqlx::MySqlPool),
    Lite(sqlx::SqlitePool),
}

impl Raw {
    async fn execute(&self, sql: String) -> u64 {
        let sql = AssertSqlSafe(sql);
        match self {
            Self::Pg(pool) => sqlx::query(sql).execute(pool).await.unwrap().rows_affected(),
            Self::My(pool) => sqlx::query(sql).execute(pool).await.unwrap().rows_affected(),
            Self::Lite(pool) => sqlx::query(sql).execute(pool).await.unwrap().rows_affected(),
        }
    }

    async fn count(&self, sql: String) -> i64 {
        let sql = AssertSqlSafe(sql);
        match self {
            Self::Pg(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
            Self::My(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
            Self::Lite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        }
    }

    /// A time no read may accept, as an SQL literal.
    fn unreadable_time(&self) -> &'static str {
        match self {
            Self::Pg(_) => "'infinity'::timestamptz",
            Self::My(_) => "'0000-06-01 00:00:00'",
            Self::Lite(_) => "9223372036854775807",
        }
    }

    /// A copy of event `source` under a new id, for team `team`. Ids and
    /// teams here are made by the test: safe inside SQL text.
    async fn copy_event(&self, source: &KeyEvent, team: &str) -> String {
        let id = KeyEvent::new(EventKind::Created, T0, &record(&source.team_id, "x"), &operator())
            .id
            .to_string();
        let written = self
            .execute(format!(
                "INSERT INTO api_key_events (id, event_type, occurred_at, team_id, actor_type, actor_id, \
                 key_id, key_name, preview, scopes, successor_id, days_left, request_id, client_ip, user_agent) \
                 SELECT '{id}', event_type, occurred_at, '{team}', actor_type, actor_id, key_id, key_name, \
                 preview, scopes, successor_id, days_left, request_id, client_ip, user_agent \
                 FROM api_key_events WHERE id = '{}'",
                source.id
            ))
            .await;
        assert_eq!(written, 1, "copied the event");
        id
    }
}

/// Each change through a manager records exactly one event, with the key's
/// public fields, the actor and the request context, as the sink got it.
async fn changes_record_one_event_each<S: KeyStore + Clone>(store: &S, _: &Raw) {
    let clock = ManualClock::new(T0);
    let sink = Delivered::default();
    // Addresses are kept only where the app keeps client IPs.
    let keys = KeyManager::builder(store.clone())
        .clock(clock.clone())
        .event_sink(sink.clone())
        .record_client_ips(true)
        .build();
    let team = team("changes");
    let ip: IpAddr = "2001:db8::1".parse().unwrap();
    let context = RequestContext::new()
        .request_id("req-42")
        .client_ip(ip)
        .user_agent("curl/8.5 🦎");
    let by_user = keys.on_behalf_of(Origin::new(Actor::user("owner@acme.test")).context(context.clone()));
    let scopes = Scopes::new(["scans:read", "keys:manage"]).unwrap();
    let made = by_user
        .create(
            &team,
            "CI 'quoted' 🦎",
            CreateOptions::new().scopes(scopes.clone()),
        )
        .await
        .unwrap();
    clock.advance(Duration::seconds(1));
    let next = by_user
        .rotate(&team, &made.info.id, Duration::hours(1))
        .await
        .unwrap();
    clock.advance(Duration::seconds(1));
    keys.on_behalf_of(Origin::new(Actor::operator("root")))
        .revoke(&team, &next.info.id)
        .await
        .unwrap();

    let stored = all_events(store, &team).await;
    assert_eq!(
        kinds(&stored),
        [EventKind::Revoked, EventKind::Rotated, EventKind::Created],
        "one event per change, newest first"
    );
    let (revoked, rotated, created) = (&stored[0], &stored[1], &stored[2]);
    for e in &stored {
        assert_eq!(e.team_id, team);
        assert_eq!(e.key_name.as_str(), "CI 'quoted' 🦎");
        assert_eq!(e.scopes, scopes);
        assert_eq!(e.days_left, None);
    }
    assert_eq!(created.key_id, made.info.id);
    assert_eq!(created.preview, made.info.preview);
    assert_eq!(created.at, T0);
    assert_eq!(created.actor, Actor::user("owner@acme.test"));
    assert_eq!(created.context, context);
    assert_eq!(created.successor_id, None);
    assert_eq!(rotated.key_id, made.info.id, "a rotation names the old key");
    assert_eq!(rotated.successor_id, Some(next.info.id));
    assert_eq!(rotated.at, T0 + Duration::seconds(1));
    assert_eq!(rotated.context, context);
    assert_eq!(revoked.key_id, next.info.id);
    assert_eq!(revoked.actor, Actor::operator("root"));
    assert_eq!(revoked.context, RequestContext::new());
    assert_eq!(revoked.at, T0 + Duration::seconds(2));
    assert_eq!(
        sink.wait_for(3).await,
        stored,
        "every field reads back as the sink got it"
    );

    let successor = get(store, &next.info.id).await;
    assert_eq!(successor.rotated_from, Some(made.info.id), "lineage is stored");
    let old = get(store, &made.info.id).await;
    assert_eq!(old.replaced_by, Some(next.info.id));
    assert_eq!(old.rotated_from, None);
}

/// A change the store refuses records no event: an insert conflict, a
/// revoke by another team or of a revoked key, a rotation of a rotated key
/// or by another team.
async fn failed_changes_record_nothing<S: KeyStore + Clone>(store: &S, _: &Raw) {
    let (team, other) = (team("atomic"), team("atomic-other"));
    let a = record(&team, "a");
    store.insert(&a, &created(&a)).await.unwrap();

    let mut clash = record(&other, "clash");
    clash.id = a.id;
    assert!(
        matches!(
            store.insert(&clash, &created(&clash)).await,
            Err(StoreError::Conflict)
        ),
        "an existing id is a conflict"
    );
    assert!(
        !store.revoke(&revocation(&a, &other, T0)).await.unwrap(),
        "another team's key is not revoked"
    );
    let first = record(&team, "a");
    assert_eq!(
        store
            .rotate(&rotation(&a, &other, record(&other, "a")))
            .await
            .unwrap(),
        RotateOutcome::NotFound
    );
    assert_eq!(
        store.rotate(&rotation(&a, &team, first.clone())).await.unwrap(),
        RotateOutcome::Rotated
    );
    let second = record(&team, "a");
    assert_eq!(
        store.rotate(&rotation(&a, &team, second.clone())).await.unwrap(),
        RotateOutcome::AlreadyRotated
    );
    assert!(store.get(&second.id).await.unwrap().is_none());

    let b = record(&team, "b");
    store.insert(&b, &created(&b)).await.unwrap();
    assert!(store.revoke(&revocation(&b, &team, T0)).await.unwrap());
    assert!(
        !store
            .revoke(&revocation(&b, &team, T0 + Duration::seconds(1)))
            .await
            .unwrap(),
        "a revoked key is not revoked again"
    );

    let events = all_events(store, &team).await;
    let mut got: Vec<(EventKind, KeyId)> = events.iter().map(|e| (e.kind, e.key_id)).collect();
    got.sort_by_key(|(kind, id)| (kind.as_str(), *id));
    let mut want = vec![
        (EventKind::Created, a.id),
        (EventKind::Created, b.id),
        (EventKind::Rotated, a.id),
        (EventKind::Revoked, b.id),
    ];
    want.sort_by_key(|(kind, id)| (kind.as_str(), *id));
    assert_eq!(got, want, "exactly the changes made, once each");
    let rotated = events.iter().find(|e| e.kind == EventKind::Rotated).unwrap();
    assert_eq!(rotated.successor_id, Some(first.id));
    assert!(
        all_events(store, &other).await.is_empty(),
        "nothing for the other team"
    );
}

/// Change and event are one transaction: when the event cannot be written
/// (here: its id is taken), the change is undone too.
async fn a_failed_event_undoes_its_change<S: KeyStore + Clone>(store: &S, _: &Raw) {
    let team = team("undo");
    let a = record(&team, "a");
    let first = created(&a);
    store.insert(&a, &first).await.unwrap();

    let b = record(&team, "b");
    let mut taken = created(&b);
    taken.id = first.id;
    assert!(matches!(
        store.insert(&b, &taken).await,
        Err(StoreError::Conflict)
    ));
    assert!(store.get(&b.id).await.unwrap().is_none(), "insert undone");

    let mut taken = revocation(&a, &team, T0);
    taken.id = first.id;
    assert!(matches!(store.revoke(&taken).await, Err(StoreError::Conflict)));
    assert_eq!(get(store, &a.id).await, a, "revoke undone");

    let successor = record(&team, "a");
    let mut taken = rotation(&a, &team, successor.clone());
    taken.event.id = first.id;
    assert!(matches!(store.rotate(&taken).await, Err(StoreError::Conflict)));
    assert_eq!(get(store, &a.id).await, a, "retirement undone");
    assert!(
        store.get(&successor.id).await.unwrap().is_none(),
        "successor undone"
    );

    assert_eq!(all_events(store, &team).await, [first]);
}

/// Pages of `limit` follow `before` newest first, each event once; other
/// teams' events, interleaved in time, never appear.
async fn events_page_by_before<S: KeyStore + Clone>(store: &S, _: &Raw) {
    let (team, other) = (team("pages"), team("pages-other"));
    for i in 0..7 {
        let mut mine = record(&team, &format!("k{i}"));
        mine.created_at = T0 + Duration::seconds(i);
        store.insert(&mine, &created(&mine)).await.unwrap();
        let theirs = record(&other, "theirs");
        store.insert(&theirs, &created(&theirs)).await.unwrap();
    }
    let all = all_events(store, &team).await;
    assert_eq!(all.len(), 7);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert!(all.iter().all(|e| e.team_id == team));

    let (mut seen, mut sizes, mut before) = (Vec::new(), Vec::new(), None);
    loop {
        let mut query = EventQuery::newest(3);
        if let Some(id) = before {
            query = query.before(id);
        }
        let page = store.events(&team, &query).await.unwrap();
        sizes.push(page.len());
        seen.extend(page.iter().cloned());
        match page.last() {
            Some(last) if page.len() == 3 => before = Some(last.id),
            _ => break,
        }
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(seen, all, "every event once, in order");

    // Any event id bounds by time, whoever's it is.
    let theirs = all_events(store, &other).await;
    let mid = &theirs[3];
    let older = store
        .events(&team, &EventQuery::newest(100).before(mid.id))
        .await
        .unwrap();
    assert_eq!(
        older,
        all.iter().filter(|e| e.id < mid.id).cloned().collect::<Vec<_>>()
    );
    assert!(
        store
            .events(&team, &EventQuery::newest(0))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Team ids compare exactly: case, and a trailing space (which MySQL's
/// `utf8mb4_bin` would pad away), or one more character, is another team.
async fn events_are_team_scoped_exactly<S: KeyStore + Clone>(store: &S, raw: &Raw) {
    let suffix = fresh_key_id();
    let lower = TeamId::new(format!("look-{suffix}")).unwrap();
    let upper = TeamId::new(format!("LOOK-{suffix}")).unwrap();
    let mut mine = Vec::new();
    for team in [&lower, &upper] {
        let key = record(team, "look-alike");
        let event = created(&key);
        store.insert(&key, &event).await.unwrap();
        mine.push(event);
    }
    // Rows no TeamId can name, written by hand.
    raw.copy_event(&mine[0], &format!("{lower} ")).await;
    raw.copy_event(&mine[0], &format!("{lower}0")).await;
    raw.copy_event(&mine[1], &format!("{upper} ")).await;
    assert_eq!(all_events(store, &lower).await, [mine[0].clone()]);
    assert_eq!(all_events(store, &upper).await, [mine[1].clone()]);
    assert!(
        store
            .events(&lower, &EventQuery::newest(10).before(mine[1].id))
            .await
            .unwrap()
            .iter()
            .all(|e| e.team_id == lower)
    );
}

/// `key.expired` and each `key.expiring` notice are recorded once per key;
/// events without a once key are appended every time.
async fn once_events_are_recorded_once<S: KeyStore + Clone>(store: &S, _: &Raw) {
    let team = team("once");
    let a = record(&team, "a");
    store.insert(&a, &created(&a)).await.unwrap();
    assert!(
        store
            .append_event(&once(EventKind::Expired, &a, None))
            .await
            .unwrap()
    );
    assert!(
        !store
            .append_event(&once(EventKind::Expired, &a, None))
            .await
            .unwrap()
    );
    assert!(
        store
            .append_event(&once(EventKind::Expiring, &a, Some(7)))
            .await
            .unwrap()
    );
    assert!(
        !store
            .append_event(&once(EventKind::Expiring, &a, Some(7)))
            .await
            .unwrap()
    );
    assert!(
        store
            .append_event(&once(EventKind::Expiring, &a, Some(1)))
            .await
            .unwrap()
    );
    let b = record(&team, "b");
    assert!(
        store
            .append_event(&once(EventKind::Expired, &b, None))
            .await
            .unwrap(),
        "once per key: another key's is its own"
    );
    for _ in 0..2 {
        assert!(
            store
                .append_event(&once(EventKind::Created, &a, None))
                .await
                .unwrap()
        );
    }
    let events = all_events(store, &team).await;
    let count = |kind, days| {
        events
            .iter()
            .filter(|e| e.kind == kind && e.days_left == days)
            .count()
    };
    assert_eq!(count(EventKind::Expired, None), 2);
    assert_eq!(count(EventKind::Expiring, Some(7)), 1);
    assert_eq!(count(EventKind::Expiring, Some(1)), 1);
    assert_eq!(count(EventKind::Created, None), 3);
    let expired = events
        .iter()
        .find(|e| e.kind == EventKind::Expired && e.key_id == a.id)
        .unwrap();
    assert_eq!(expired.actor, Actor::System);

    // Through managers: an expired key presented again and again, to two
    // instances, is one key.expired.
    let clock = ManualClock::new(T0);
    let instance = || KeyManager::builder(store.clone()).clock(clock.clone()).build();
    let (one, two) = (instance(), instance());
    let made = one
        .create(
            &team,
            "short",
            CreateOptions::new().expires_in(Duration::hours(1)),
        )
        .await
        .unwrap();
    clock.advance(Duration::hours(2));
    let expired_of = |events: Vec<KeyEvent>| {
        events
            .into_iter()
            .filter(|e| e.kind == EventKind::Expired && e.key_id == made.info.id)
            .count()
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    loop {
        for keys in [&one, &two] {
            let refused = keys.verify(made.key.expose_secret()).await.unwrap_err();
            assert!(matches!(refused, VerifyError::Expired { .. }), "{refused}");
        }
        let recorded = expired_of(all_events(store, &team).await);
        if recorded > 0 || Instant::now() > deadline {
            assert_eq!(recorded, 1, "key.expired recorded");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Both instances have tried by now; give the latecomer time to write.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(expired_of(all_events(store, &team).await), 1, "and only once");
}

/// Racers at once append the same once-only event, each with an id of its
/// own, as instances would: exactly one records it.
async fn racing_once_events_record_one<S: KeyStore + Clone>(store: &S, _: &Raw) {
    const RACERS: usize = 4;
    for round in 0..12 {
        let team = team("race");
        let key = record(&team, "raced");
        store.insert(&key, &created(&key)).await.unwrap();
        let kind = if round % 2 == 0 {
            EventKind::Expired
        } else {
            EventKind::Expiring
        };
        let days = (kind == EventKind::Expiring).then_some(7);
        let barrier = Arc::new(Barrier::new(RACERS));
        let mut racers = tokio::task::JoinSet::new();
        for _ in 0..RACERS {
            let (store, barrier, event) = (store.clone(), Arc::clone(&barrier), once(kind, &key, days));
            racers.spawn(async move {
                barrier.wait().await;
                store.append_event(&event).await
            });
        }
        let mut wins = 0;
        while let Some(result) = racers.join_next().await {
            wins += usize::from(result.unwrap().expect("a lost race is Ok(false), not an error"));
        }
        assert_eq!(
            wins, 1,
            "round {round}: exactly one of {RACERS} racers records it"
        );
        // Both at T0, in one millisecond: ids order them at random.
        let recorded = kinds(&all_events(store, &team).await);
        assert_eq!(recorded.len(), 2, "round {round}: {recorded:?}");
        assert!(recorded.contains(&kind), "round {round}: {recorded:?}");
    }
}

/// 600 keys sharing one expiry instant (made by one script with one
/// `expires_at`), beside 10 at other instants: one sweep warns every key
/// twice (7 days and 1 day ahead), though the instant spans batches of
/// 500; a second sweep finds them all recorded.
async fn sweeps_warn_every_key_of_one_instant<S: KeyStore + Clone>(store: &S, _: &Raw) {
    let (spread, tied) = (team("spread"), team("tied"));
    let insert = async |team: &TeamId, expires_at: OffsetDateTime| {
        let mut key = record(team, "k");
        key.expires_at = Some(expires_at);
        store.insert(&key, &created(&key)).await.unwrap();
    };
    for i in 0..10 {
        insert(&spread, SWEEP_T0 + Duration::hours(1 + i)).await;
    }
    for _ in 0..600 {
        insert(&tied, SWEEP_T0 + Duration::hours(20)).await;
    }
    let keys = KeyManager::builder(store.clone())
        .clock(ManualClock::new(SWEEP_T0))
        .build();
    let first = keys.sweep_expiring().await.unwrap();
    let second = keys.sweep_expiring().await.unwrap();
    assert_eq!((first, second), (1_220, 0));
    // Every notice is in the store, each team's its own (tied's span pages).
    let notices = async |team: &TeamId| {
        let (mut count, mut query) = (0, EventQuery::newest(1_000));
        loop {
            let page = store.events(team, &query).await.unwrap();
            count += page.iter().filter(|e| e.kind == EventKind::Expiring).count();
            match page.last() {
                Some(last) if page.len() == 1_000 => query = EventQuery::newest(1_000).before(last.id),
                _ => return count,
            }
        }
    };
    assert_eq!((notices(&spread).await, notices(&tied).await), (20, 1_200));
}

/// `sweep_expiring` warns 7 days and 1 day ahead, once per key and notice,
/// never for revoked or rotated-away keys; `expiring` spans all teams,
/// soonest first, within `(after, until]`.
async fn sweeps_warn_once<S: KeyStore + Clone>(store: &S, _: &Raw) {
    let clock = ManualClock::new(SWEEP_T0);
    let keys = KeyManager::builder(store.clone()).clock(clock.clone()).build();
    let (team, other) = (team("sweep"), team("sweep-other"));
    let make = |team: &TeamId, name: &str, lifetime: Duration| {
        let (keys, team, name) = (keys.clone(), team.clone(), name.to_owned());
        async move {
            keys.create(&team, &name, CreateOptions::new().expires_in(lifetime))
                .await
                .unwrap()
                .info
        }
    };
    let late = make(&team, "late", Duration::days(10)).await;
    let soon = make(&team, "soon", Duration::days(3)).await;
    let sooner = make(&team, "sooner", Duration::hours(12)).await;
    let revoked = make(&team, "revoked", Duration::days(2)).await;
    keys.revoke(&team, &revoked.id).await.unwrap();
    let rotated = make(&team, "rotated", Duration::days(2)).await;
    let successor = keys
        .rotate(&team, &rotated.id, Duration::hours(1))
        .await
        .unwrap()
        .info;
    let theirs = make(&other, "theirs", Duration::days(2)).await;

    let ids = |records: Vec<KeyRecord>| records.iter().map(|r| r.id).collect::<Vec<_>>();
    let within = |from: Duration, to: Duration, limit| {
        let query = teamkey_core::ExpiringQuery::new(SWEEP_T0 + from, SWEEP_T0 + to, limit);
        async move { store.expiring(&query).await }
    };
    // The successor and the other team's key expire at the same instant:
    // then by id.
    let mut tied = [successor.id, theirs.id];
    tied.sort();
    assert_eq!(
        ids(within(Duration::ZERO, Duration::days(3), 10).await.unwrap()),
        [vec![sooner.id], tied.to_vec(), vec![soon.id]].concat(),
        "active keys of every team, soonest first; the bound is inclusive"
    );
    assert_eq!(
        ids(within(Duration::hours(12), Duration::days(3), 10).await.unwrap()),
        [tied.to_vec(), vec![soon.id]].concat(),
        "the lower bound is exclusive"
    );
    // Past the first of the two tied keys, by (expiry, id): the second.
    let first_tied = store.get(&tied[0]).await.unwrap().unwrap();
    let query = teamkey_core::ExpiringQuery::new(SWEEP_T0, SWEEP_T0 + Duration::days(3), 10)
        .after_record(&first_tied);
    assert_eq!(
        ids(store.expiring(&query).await.unwrap()),
        [vec![tied[1]], vec![soon.id]].concat(),
        "the cursor goes on within one instant"
    );
    assert_eq!(
        ids(within(Duration::ZERO, Duration::days(30), 1).await.unwrap()),
        [sooner.id]
    );

    assert_eq!(
        keys.sweep_expiring().await.unwrap(),
        5,
        "4 seven-day notices, 1 one-day"
    );
    assert_eq!(keys.sweep_expiring().await.unwrap(), 0, "once");
    clock.advance(Duration::days(3) + Duration::hours(12));
    assert_eq!(
        keys.sweep_expiring().await.unwrap(),
        1,
        "the late key's 7-day notice"
    );
    assert_eq!(keys.sweep_expiring().await.unwrap(), 0, "once");

    let notices = |events: Vec<KeyEvent>| {
        let mut got: Vec<(KeyId, u8)> = events
            .iter()
            .filter(|e| e.kind == EventKind::Expiring)
            .map(|e| (e.key_id, e.days_left.unwrap()))
            .collect();
        got.sort();
        got
    };
    let mut want = vec![
        (soon.id, 7),
        (sooner.id, 7),
        (sooner.id, 1),
        (successor.id, 7),
        (late.id, 7),
    ];
    want.sort();
    assert_eq!(notices(all_events(store, &team).await), want);
    assert_eq!(notices(all_events(store, &other).await), [(theirs.id, 7)]);
    let events = all_events(store, &team).await;
    let first = events
        .iter()
        .find(|e| e.kind == EventKind::Expiring && e.key_id == soon.id)
        .unwrap();
    assert_eq!(first.actor, Actor::System);
    assert_eq!(first.at, SWEEP_T0);
    assert_eq!(first.key_name.as_str(), "soon");
}

/// `last_used_ip` moves with `last_used_at`: written by a newer use, left
/// alone by an older one, kept by a newer use without an address; lineage
/// and addresses round-trip on insert.
async fn lineage_and_last_used_ip_round_trip<S: KeyStore + Clone>(store: &S, _: &Raw) {
    let team = team("ip");
    let v6: IpAddr = "2001:db8::7".parse().unwrap();
    let v4: IpAddr = "192.0.2.9".parse().unwrap();
    let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();

    let mut full = record(&team, "full");
    full.rotated_from = Some(fresh_key_id());
    full.replaced_by = Some(fresh_key_id());
    full.last_used_at = Some(T0);
    full.last_used_ip = Some(mapped);
    store.insert(&full, &created(&full)).await.unwrap();
    assert_eq!(get(store, &full.id).await, full, "every field round-trips");

    let (a, b, c) = (record(&team, "a"), record(&team, "b"), record(&team, "c"));
    for r in [&a, &b, &c] {
        store.insert(r, &created(r)).await.unwrap();
    }
    let t = |minutes| T0 + Duration::minutes(minutes);
    store
        .record_last_used(&[
            KeyUse::new(a.id, t(10)).ip(Some(v6)),
            KeyUse::new(b.id, t(10)),
            KeyUse::new(c.id, t(10)).ip(Some(mapped)),
        ])
        .await
        .unwrap();
    let seen = |r: KeyRecord| (r.last_used_at, r.last_used_ip);
    assert_eq!(seen(get(store, &a.id).await), (Some(t(10)), Some(v6)));
    assert_eq!(seen(get(store, &b.id).await), (Some(t(10)), None));
    assert_eq!(
        seen(get(store, &c.id).await),
        (Some(t(10)), Some(mapped)),
        "an IPv4-mapped IPv6 address stays one"
    );

    store
        .record_last_used(&[KeyUse::new(a.id, t(5)).ip(Some(v4))])
        .await
        .unwrap();
    assert_eq!(
        seen(get(store, &a.id).await),
        (Some(t(10)), Some(v6)),
        "an older use changes neither"
    );
    store.record_last_used(&[KeyUse::new(a.id, t(20))]).await.unwrap();
    assert_eq!(
        seen(get(store, &a.id).await),
        (Some(t(20)), Some(v6)),
        "a newer use without an address keeps the last one"
    );
    store
        .record_last_used(&[KeyUse::new(a.id, t(30)).ip(Some(v4)), KeyUse::new(b.id, t(30))])
        .await
        .unwrap();
    assert_eq!(seen(get(store, &a.id).await), (Some(t(30)), Some(v4)));
    assert_eq!(seen(get(store, &b.id).await), (Some(t(30)), None));

    // A batch past one statement's share (1,000 keys where uses are bind
    // parameters), every use with an address: unknown ids are ignored.
    let mut batch: Vec<KeyUse> = (0..2_500)
        .map(|_| KeyUse::new(fresh_key_id(), t(40)).ip(Some(v6)))
        .collect();
    batch[1_700] = KeyUse::new(c.id, t(40)).ip(Some(v4));
    store.record_last_used(&batch).await.unwrap();
    assert_eq!(seen(get(store, &c.id).await), (Some(t(40)), Some(v4)));

    // Through a manager that records client addresses.
    let clock = ManualClock::new(T0);
    let keys = KeyManager::builder(store.clone())
        .clock(clock.clone())
        .record_client_ips(true)
        .build();
    let made = keys
        .create(&team, "verified", CreateOptions::new())
        .await
        .unwrap();
    clock.advance(Duration::seconds(5));
    keys.verify_from(made.key.expose_secret(), Some(v6))
        .await
        .unwrap();
    assert_eq!(keys.flush_last_used().await.unwrap(), 1);
    let listed = keys.list(&team).await.unwrap();
    let info = listed.iter().find(|k| k.id == made.info.id).unwrap();
    assert_eq!(
        (info.last_used_at, info.last_used_ip),
        (Some(T0 + Duration::seconds(5)), Some(v6))
    );
}

/// A row that breaks a rule in any column reads as a backend error naming
/// the event and the column: never a panic, never a wrong event.
async fn bad_event_rows_are_errors<S: KeyStore + Clone>(store: &S, raw: &Raw) {
    let team = team("bad");
    let key = record(&team, "good");
    let good = created(&key);
    store.insert(&key, &good).await.unwrap();
    for (column, value, named) in [
        ("id", "'not-an-event-id'", "id"),
        ("id", "'00000000-0000-4000-8000-000000000000'", "id"),
        ("event_type", "'key.exploded'", "event_type"),
        ("occurred_at", raw.unreadable_time(), "occurred_at"),
        ("actor_type", "'robot'", "actor"),
        ("actor_id", "NULL", "actor"),
        ("key_id", "'short'", "key_id"),
        ("key_name", "'   '", "key_name"),
        ("scopes", "'not/a/scope'", "scopes"),
        ("successor_id", "'not a key id'", "successor_id"),
        ("days_left", "300", "days_left"),
        ("client_ip", "'not-an-ip'", "client_ip"),
    ] {
        let bad_team = TeamId::new(format!("bad-{}", fresh_key_id())).unwrap();
        let id = raw.copy_event(&good, bad_team.as_str()).await;
        raw.execute(format!(
            "UPDATE api_key_events SET {column} = {value} WHERE id = '{id}'"
        ))
        .await;
        match store.events(&bad_team, &EventQuery::newest(10)).await {
            Err(StoreError::Backend(source)) => {
                let message = source.to_string();
                assert!(
                    message.contains("api_key_events") && message.contains(named),
                    "{column} = {value}: names the table and column: {message}"
                );
            }
            other => panic!("{column} = {value}: a backend error, got {other:?}"),
        }
    }
    assert_eq!(all_events(store, &team).await, [good], "other rows still read");
}

/// What reaches the change feed: how many changes of the check's keys
/// since the last call. (PostgreSQL notifies database-wide: other tests'
/// schemas send theirs on the same channel.)
enum Feed {
    Log(i64),
    Notify(Box<PgListener>),
}

impl Feed {
    async fn start(raw: &Raw) -> Self {
        match raw {
            Raw::Pg(pool) => {
                let mut listener = PgListener::connect_with(pool).await.unwrap();
                listener.listen(teamkey_sqlx::NOTIFY_CHANNEL).await.unwrap();
                Self::Notify(Box::new(listener))
            }
            _ => Self::Log(raw.count("SELECT COUNT(*) FROM api_key_changes".into()).await),
        }
    }

    async fn changes(&mut self, raw: &Raw, keys: &[&KeyRecord]) -> usize {
        match self {
            Self::Log(seen) => {
                let now = raw.count("SELECT COUNT(*) FROM api_key_changes".into()).await;
                let new = usize::try_from(now - *seen).unwrap();
                *seen = now;
                new
            }
            Self::Notify(listener) => {
                let mut new = 0;
                let quiet = std::time::Duration::from_millis(300);
                while let Ok(notification) = tokio::time::timeout(quiet, listener.recv()).await {
                    let payload = notification.unwrap().payload().to_owned();
                    new += usize::from(keys.iter().any(|k| k.id.as_str() == payload));
                }
                new
            }
        }
    }
}

/// Events live apart from keys: recording one invalidates no cache. The
/// new columns behave as their kind: a last-used address changes no
/// verification (no change reported), lineage is part of the record (one).
async fn events_invalidate_nothing<S: KeyStore + Clone>(store: &S, raw: &Raw) {
    let team = team("feed");
    let key = record(&team, "watched");
    store.insert(&key, &created(&key)).await.unwrap();
    let mut feed = Feed::start(raw).await;
    assert!(
        store
            .append_event(&once(EventKind::Expired, &key, None))
            .await
            .unwrap()
    );
    assert!(
        store
            .append_event(&once(EventKind::Expiring, &key, Some(1)))
            .await
            .unwrap()
    );
    store
        .record_last_used(&[
            KeyUse::new(key.id, T0 + Duration::minutes(1)).ip(Some("192.0.2.1".parse().unwrap()))
        ])
        .await
        .unwrap();
    raw.execute(format!(
        "UPDATE api_keys SET last_used_ip = '192.0.2.2' WHERE id = '{}'",
        key.id
    ))
    .await;
    assert_eq!(
        feed.changes(raw, &[&key]).await,
        0,
        "events and last-used addresses invalidate nothing"
    );
    raw.execute(format!(
        "UPDATE api_keys SET rotated_from = 'abcdefABCDEF' WHERE id = '{}'",
        key.id
    ))
    .await;
    assert_eq!(
        feed.changes(raw, &[&key]).await,
        1,
        "a lineage change is a change of the key"
    );
    let other = record(&team, "other");
    store.insert(&other, &created(&other)).await.unwrap();
    assert!(store.revoke(&revocation(&other, &team, T0)).await.unwrap());
    assert_eq!(
        feed.changes(raw, &[&key, &other]).await,
        2,
        "an insert and a revoke with their events: the two changes alone are reported"
    );
}

/// A SQLite database file of the test's own, removed when dropped.
struct SqliteFile(PathBuf);

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn sqlite() -> (SqliteFile, SqlxStore<sqlx::Sqlite>, Raw) {
    let file = SqliteFile(std::env::temp_dir().join(format!("{}.db", unique("events"))));
    let options = SqliteConnectOptions::new()
        .filename(&file.0)
        .create_if_missing(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    let store = SqlxStore::new(pool.clone());
    store.migrate().await.unwrap();
    (file, store, Raw::Lite(pool))
}

/// Each check, as one test per database.
macro_rules! on_every_database {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (_file, store, raw) = super::sqlite().await;
                    super::$check(&store, &raw).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(url) = super::env_url("TEAMKEY_TEST_POSTGRES_URL") else {
                        return;
                    };
                    let (schema, options) = super::PgSchema::new(&url).await;
                    let store = super::pg_store(options, 8).await;
                    let raw = super::Raw::Pg(store.pool().clone());
                    super::$check(&store, &raw).await;
                    store.pool().close().await;
                    schema.drop().await;
                }
            )*
        }

        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(url) = super::env_url("TEAMKEY_TEST_MYSQL_URL") else {
                        return;
                    };
                    let (database, options) = super::MyDatabase::new(&url).await;
                    let store = super::my_store(options, 8).await;
                    let raw = super::Raw::My(store.pool().clone());
                    super::$check(&store, &raw).await;
                    store.pool().close().await;
                    database.drop().await;
                }
            )*
        }
    };
}

on_every_database!(
    changes_record_one_event_each,
    failed_changes_record_nothing,
    a_failed_event_undoes_its_change,
    events_page_by_before,
    events_are_team_scoped_exactly,
    once_events_are_recorded_once,
    racing_once_events_record_one,
    sweeps_warn_once,
    sweeps_warn_every_key_of_one_instant,
    lineage_and_last_used_ip_round_trip,
    bad_event_rows_are_errors,
    events_invalidate_nothing,
);

/// The SQL of an events page (first, and before an id) and of an expiry
/// sweep, as the store runs it: one statement each.
struct EventSql {
    first: String,
    before: String,
    expiring: String,
}

async fn event_sql<S: KeyStore + Clone>(store: &S) -> EventSql {
    let log = StatementLog::global();
    let team = team("plans");
    let key = record(&team, "planned");
    let made = created(&key);
    store.insert(&key, &made).await.unwrap();
    let one = |statements: Vec<support::probe::Statement>| {
        assert_eq!(statements.len(), 1, "one statement: {statements:#?}");
        statements[0].sql.clone()
    };
    let (page, first) = log.probe(store.events(&team, &EventQuery::newest(5))).await;
    assert_eq!(page.unwrap(), std::slice::from_ref(&made));
    let query = EventQuery::newest(5).before(made.id);
    let (page, before) = log.probe(store.events(&team, &query)).await;
    assert!(page.unwrap().is_empty());
    let (soon, expiring) = log
        .probe(store.expiring(&teamkey_core::ExpiringQuery::new(T0, T0 + Duration::days(31), 5)))
        .await;
    assert_eq!(soon.unwrap().len(), 1);
    EventSql {
        first: one(first),
        before: one(before),
        expiring: one(expiring),
    }
}

#[tokio::test]
async fn sqlite_event_pages_and_sweeps_walk_their_indexes() {
    let (_file, store, _) = sqlite().await;
    let sql = event_sql(&store).await;
    for (statement, index) in [
        (sql.first, "api_key_events_team_idx"),
        (sql.before, "api_key_events_team_idx"),
        (sql.expiring, "api_keys_expiring_idx"),
    ] {
        // Unbound parameters plan as NULLs: the plan is the same.
        let plan: Vec<String> = sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {statement}")))
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .map(|row| sqlx::Row::get::<String, _>(row, "detail"))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains(index), "{statement}: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "the index gives the order: {plan}");
    }
}

#[tokio::test]
async fn postgres_event_pages_and_sweeps_walk_their_indexes() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, options) = PgSchema::new(&url).await;
    let store = pg_store(options, 2).await;
    let sql = event_sql(&store).await;
    let mut conn = store.pool().acquire().await.unwrap();
    // With sequential scans off, each plan must walk its index and never
    // sort: the query's order is the index's.
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let explain = |statement: &str| AssertSqlSafe(format!("EXPLAIN {statement}"));
    let first: Vec<String> = sqlx::query_scalar(explain(&sql.first))
        .bind("acme")
        .bind(5_i64)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let before: Vec<String> = sqlx::query_scalar(explain(&sql.before))
        .bind("acme")
        .bind("01890000-0000-7000-8000-000000000000")
        .bind(5_i64)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let expiring: Vec<String> = sqlx::query_scalar(explain(&sql.expiring))
        .bind(T0)
        .bind("~")
        .bind(T0 + Duration::days(7))
        .bind(5_i64)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    for (plan, walk) in [
        (first, "Index Scan Backward using api_key_events_team_idx"),
        (before, "Index Scan Backward using api_key_events_team_idx"),
        (expiring, "Index Scan using api_keys_expiring_idx"),
    ] {
        let plan = plan.join("\n");
        assert!(plan.contains(walk), "{plan}");
        assert!(!plan.contains("Sort"), "{plan}");
    }
    drop(conn);
    store.pool().close().await;
    schema.drop().await;
}

#[tokio::test]
async fn mysql_event_pages_and_sweeps_can_use_their_indexes() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let (database, options) = MyDatabase::new(&url).await;
    let store = my_store(options, 2).await;
    let sql = event_sql(&store).await;
    let explain = |statement: &str| AssertSqlSafe(format!("EXPLAIN {statement}"));
    let possible = |row: sqlx::mysql::MySqlRow| -> String {
        sqlx::Row::try_get::<Option<String>, _>(&row, "possible_keys")
            .unwrap()
            .unwrap_or_default()
    };
    let first = sqlx::query(explain(&sql.first))
        .bind("acme")
        .bind("acme")
        .bind(5_i64)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(possible(first).contains("api_key_events_team_idx"));
    let before = sqlx::query(explain(&sql.before))
        .bind("acme")
        .bind("acme")
        .bind("01890000-0000-7000-8000-000000000000")
        .bind(5_i64)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(possible(before).contains("api_key_events_team_idx"));
    let at = |t: OffsetDateTime| time::PrimitiveDateTime::new(t.date(), t.time());
    let expiring = sqlx::query(explain(&sql.expiring))
        .bind(at(T0))
        .bind("~")
        .bind(at(T0 + Duration::days(7)))
        .bind(5_i64)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(possible(expiring).contains("api_keys_expiring_idx"));
    store.pool().close().await;
    database.drop().await;
}
