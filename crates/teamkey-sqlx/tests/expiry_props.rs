//! Property: every expiry the API accepts (within the manager's maximum
//! lifetime; as a lifetime or as an instant in any UTC offset, with digits
//! below the microsecond) is stored and read back exactly, to the
//! microsecond and in UTC, on every database: by `get`, by `list_page`,
//! and through a rotation, whose successor keeps it. Every expiry past the
//! maximum is refused as invalid input, and nothing is written.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support {
    pub(crate) mod databases;
}

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::databases::{MyDatabase, PgSchema, env_url, my_store, pg_store};
use teamkey_core::{
    CreateOptions, DEFAULT_MAX_LIFETIME, KeyManager, KeyStore, ManageError, ManualClock, PageRequest, TeamId,
    ValidationError,
};
use teamkey_sqlx::SqlxStore;
use teamkey_sqlx::sqlx::sqlite::SqlitePoolOptions;
use time::macros::datetime;
use time::{Duration, OffsetDateTime, UtcOffset};

/// Cases per database: enough to cross offsets and digits, a few seconds each.
const CASES: u32 = 32;
/// The manager's clock: whole microseconds, as the manager stores times.
const NOW: OffsetDateTime = datetime!(2026-06-01 12:34:56.123456 UTC);
const MAX_SECONDS: i64 = DEFAULT_MAX_LIFETIME.whole_seconds();
const MAX_MICROS: i64 = MAX_SECONDS * 1_000_000;
/// Offsets an RFC 3339 time may carry: up to 23:59 (and a bit) either way.
const OFFSET_SECONDS: std::ops::RangeInclusive<i32> = -86_399..=86_399;

/// An expiry as a client asks for it.
#[derive(Debug, Clone, Copy)]
enum Ask {
    /// `expires_in`, in seconds.
    In(i64),
    /// `expires_at`: NOW + `micros` + `nanos` (below a microsecond),
    /// written in an offset of `offset` seconds.
    At { micros: i64, nanos: i64, offset: i32 },
}

impl Ask {
    fn options(self) -> CreateOptions {
        match self {
            Self::In(seconds) => CreateOptions::new().expires_in(Duration::seconds(seconds)),
            Self::At { .. } => CreateOptions::new().expires_at(self.instant()),
        }
    }

    /// The `expires_at` asked for; for an instant too far for any offset,
    /// the instant in UTC.
    fn instant(self) -> OffsetDateTime {
        match self {
            Self::In(seconds) => NOW + Duration::seconds(seconds),
            Self::At {
                micros,
                nanos,
                offset,
            } => {
                let at = NOW + Duration::microseconds(micros) + Duration::nanoseconds(nanos);
                let offset = UtcOffset::from_whole_seconds(offset).unwrap();
                at.checked_to_offset(offset).unwrap_or(at)
            }
        }
    }

    /// What must be stored: UTC, cut to the microsecond.
    fn stored(self) -> OffsetDateTime {
        match self {
            Self::In(seconds) => NOW + Duration::seconds(seconds),
            Self::At { micros, .. } => NOW + Duration::microseconds(micros),
        }
    }
}

fn accepted() -> impl Strategy<Value = Ask> {
    let at = (1..=MAX_MICROS, 0..1_000_i64, OFFSET_SECONDS).prop_map(|(micros, nanos, offset)| Ask::At {
        micros,
        nanos,
        offset,
    });
    prop_oneof![
        4 => at,
        3 => (1..=MAX_SECONDS).prop_map(Ask::In),
        // The edges: a microsecond from now, and the maximum itself.
        1 => Just(Ask::At { micros: 1, nanos: 999, offset: 86_399 }),
        1 => Just(Ask::In(MAX_SECONDS)),
        1 => Just(Ask::At { micros: MAX_MICROS, nanos: 999, offset: -86_399 }),
    ]
}

fn refused() -> impl Strategy<Value = Ask> {
    // Up to the last instant `time` holds, 9999-12-31, from NOW.
    let last = (datetime!(9999-12-31 23:59:59.999 UTC) - NOW).whole_microseconds();
    let last = i64::try_from(last).unwrap();
    let at =
        (MAX_MICROS + 1..=last, 0..1_000_i64, OFFSET_SECONDS).prop_map(|(micros, nanos, offset)| Ask::At {
            micros,
            nanos,
            offset,
        });
    prop_oneof![
        3 => at,
        2 => (MAX_SECONDS + 1..=i64::MAX).prop_map(Ask::In),
        1 => Just(Ask::In(i64::MAX)),
        1 => Just(Ask::At { micros: MAX_MICROS + 1, nanos: 0, offset: 0 }),
    ]
}

fn assert_exact(at: Option<OffsetDateTime>, ask: Ask, what: &str) {
    let expected = ask.stored();
    assert_eq!(at, Some(expected), "{what} for {ask:?}");
    let at = at.unwrap();
    assert_eq!(at.offset(), UtcOffset::UTC, "{what}: UTC");
    assert_eq!(at.nanosecond() % 1_000, 0, "{what}: whole microseconds");
}

/// One accepted expiry: create, read back, rotate, read back again.
async fn round_trip<S: KeyStore + Clone>(keys: &KeyManager, store: &S, team: &TeamId, ask: Ask) {
    let made = keys.create(team, "expiring", ask.options()).await.unwrap();
    assert_exact(made.info.expires_at, ask, "create");
    let read = store.get(&made.info.id).await.unwrap().unwrap();
    assert_exact(read.expires_at, ask, "get");
    let found = keys.find(team, &made.info.id).await.unwrap().unwrap();
    assert_exact(found.expires_at, ask, "find");
    let page = keys.list_page(team, PageRequest::default()).await.unwrap();
    assert_eq!(page.keys.len(), 1);
    assert_exact(page.keys[0].expires_at, ask, "list_page");

    let next = keys.rotate(team, &made.info.id, Duration::ZERO).await.unwrap();
    assert_exact(next.info.expires_at, ask, "rotated");
    let successor = store.get(&next.info.id).await.unwrap().unwrap();
    assert_exact(successor.expires_at, ask, "successor, read back");
    let old = store.get(&made.info.id).await.unwrap().unwrap();
    assert_eq!(old.expires_at, Some(NOW), "the old key retires now, not later");
}

/// The property on one database.
fn expiries_round_trip<S: KeyStore + Clone>(runtime: &tokio::runtime::Runtime, store: S) {
    let keys = KeyManager::builder(store.clone())
        .clock(ManualClock::new(NOW))
        .build();
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    // A team per case (shrinking reruns cases): each sees only its own key.
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&accepted(), |ask| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let team = TeamId::new(format!("accepted-{n}")).unwrap();
            runtime.block_on(round_trip(&keys, &store, &team, ask));
            Ok(())
        })
        .unwrap();

    let team = TeamId::new("refused").unwrap();
    let mut runner = TestRunner::new(Config::with_cases(CASES));
    runner
        .run(&refused(), |ask| {
            runtime.block_on(async {
                let err = keys.create(&team, "too far", ask.options()).await.unwrap_err();
                assert!(
                    matches!(err, ManageError::Invalid(ValidationError::ExpiryTooFar { .. })),
                    "{ask:?}: {err}"
                );
                assert!(store.list(&team).await.unwrap().is_empty(), "nothing written");
            });
            Ok(())
        })
        .unwrap();
    // The expiry that broke key tables: year 10000 once in UTC.
    let at = datetime!(9999-12-31 23:59:59 -23:59);
    let err = runtime
        .block_on(keys.create(&team, "year 10000", CreateOptions::new().expires_at(at)))
        .unwrap_err();
    assert!(
        matches!(err, ManageError::Invalid(ValidationError::ExpiryTooFar { .. })),
        "{err}"
    );
    assert!(runtime.block_on(store.list(&team)).unwrap().is_empty());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn sqlite_stores_every_accepted_expiry_exactly() {
    let rt = runtime();
    let store = rt.block_on(async {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let store = SqlxStore::new(pool);
        store.migrate().await.unwrap();
        store
    });
    expiries_round_trip(&rt, store);
}

#[test]
fn postgres_stores_every_accepted_expiry_exactly() {
    let Some(url) = env_url("TEAMKEY_TEST_POSTGRES_URL") else {
        return;
    };
    let rt = runtime();
    let (schema, store) = rt.block_on(async {
        let (schema, options) = PgSchema::new(&url).await;
        (schema, pg_store(options, 2).await)
    });
    expiries_round_trip(&rt, store.clone());
    rt.block_on(async {
        store.pool().close().await;
        schema.drop().await;
    });
}

#[test]
fn mysql_stores_every_accepted_expiry_exactly() {
    let Some(url) = env_url("TEAMKEY_TEST_MYSQL_URL") else {
        return;
    };
    let rt = runtime();
    let (database, store) = rt.block_on(async {
        let (database, options) = MyDatabase::new(&url).await;
        (database, my_store(options, 2).await)
    });
    expiries_round_trip(&rt, store.clone());
    rt.block_on(async {
        store.pool().close().await;
        database.drop().await;
    });
}
