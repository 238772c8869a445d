//! `verify` and `admit` return `Eager`: their work starts at the call, not
//! at the first poll. What that means for a caller who makes the future
//! outside the runtime that awaits it, or who never awaits it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::time::Duration as StdDuration;

use teamkey_core::events::{EventKind, EventQuery};
use teamkey_core::{
    Admission, CreateOptions, KeyManager, LocalRateLimiter, ManualClock, MemoryStore, Now, RateLimit, TeamId,
    VerifyError,
};
use time::Duration;
use time::macros::datetime;

fn acme() -> TeamId {
    TeamId::new("acme").unwrap()
}

fn one_per_minute() -> RateLimit {
    RateLimit::new(1, StdDuration::from_secs(60)).unwrap()
}

fn limited_manager(clock: &ManualClock) -> KeyManager {
    KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .rate_limiter(LocalRateLimiter::new().clock(clock.clone()))
        .build()
}

/// A manager on a manual clock, and a key of it that expired an hour ago.
async fn a_key_expired_an_hour_ago() -> (KeyManager, String) {
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .build();
    let key = keys
        .create(
            &acme(),
            "short",
            CreateOptions::new().expires_in(Duration::hours(1)),
        )
        .await
        .unwrap();
    clock.advance(Duration::hours(2));
    let secret = key.key.expose_secret().to_owned();
    (keys, secret)
}

/// A runtime for sync code to `block_on`: futures made outside it.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The usual way sync code calls async code: `runtime.block_on(fut)`.
/// The future is made on the calling thread, outside the runtime, and the
/// refusal happens at the call, where no runtime is current. The key is
/// not marked "key.expired recorded" there (nothing could record it), so
/// the first refusal inside the runtime records it, once.
#[test]
fn key_expired_is_recorded_when_verify_is_built_outside_the_runtime() {
    let runtime = runtime();
    let (keys, secret) = runtime.block_on(a_key_expired_an_hour_ago());
    let secret = secret.as_str();

    // A sync integration: the future is made here, awaited by the runtime.
    assert!(matches!(
        runtime.block_on(keys.verify(secret)),
        Err(VerifyError::Expired { .. })
    ));
    // Later refusals, now from inside the runtime.
    let expired = runtime.block_on(async {
        for _ in 0..3 {
            assert!(matches!(
                keys.verify(secret).await,
                Err(VerifyError::Expired { .. })
            ));
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
        let events = keys.events(&acme(), EventQuery::newest(10)).await.unwrap();
        events.iter().filter(|e| e.kind == EventKind::Expired).count()
    });
    assert_eq!(
        expired, 1,
        "the expired key's presentation must be recorded once as key.expired, \
         however the verification future was driven"
    );
}

/// A refusal inside a runtime that ends before the task recording
/// `key.expired` ran (a set-up runtime, say) leaves the event to the next
/// refusal, in whichever runtime comes next.
#[test]
fn key_expired_is_recorded_when_the_runtime_that_marked_it_ends_first() {
    let setup = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (keys, secret) = setup.block_on(a_key_expired_an_hour_ago());
    let secret = secret.as_str();
    // Refused at once, inside the runtime: the recording task is spawned
    // there, and the runtime ends before it runs.
    assert!(matches!(
        setup.block_on(async { keys.verify(secret).await }),
        Err(VerifyError::Expired { .. })
    ));
    drop(setup);

    let serving = runtime();
    let expired = serving.block_on(async {
        assert!(matches!(
            keys.verify(secret).await,
            Err(VerifyError::Expired { .. })
        ));
        tokio::time::sleep(StdDuration::from_millis(50)).await;
        let events = keys.events(&acme(), EventQuery::newest(10)).await.unwrap();
        events.iter().filter(|e| e.kind == EventKind::Expired).count()
    });
    assert_eq!(
        expired, 1,
        "recorded once, by the refusal in the runtime that lived"
    );
}

/// The same for `admit`: a refusal made outside the runtime leaves the
/// hour's `key.rate_limited` to the first refusal inside it.
#[test]
fn key_rate_limited_is_recorded_when_admit_is_built_outside_the_runtime() {
    let runtime = runtime();
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let keys = limited_manager(&clock);
    let key = runtime
        .block_on(keys.create(
            &acme(),
            "limited",
            CreateOptions::new().rate_limit(one_per_minute()),
        ))
        .unwrap();
    let principal = runtime.block_on(keys.verify(key.key.expose_secret())).unwrap();
    assert!(matches!(
        runtime.block_on(keys.admit(&principal)),
        Admission::Allowed(_)
    ));
    // Over the limit, the admission made here, awaited by the runtime.
    assert!(matches!(
        runtime.block_on(keys.admit(&principal)),
        Admission::Refused(_)
    ));
    let limited = runtime.block_on(async {
        for _ in 0..3 {
            assert!(matches!(keys.admit(&principal).await, Admission::Refused(_)));
            tokio::time::sleep(StdDuration::from_millis(20)).await;
        }
        let events = keys.events(&acme(), EventQuery::newest(10)).await.unwrap();
        events.iter().filter(|e| e.kind == EventKind::RateLimited).count()
    });
    assert_eq!(
        limited, 1,
        "the first refusal of the hour must be recorded as key.rate_limited"
    );
}

/// As documented on `KeyManager::admit`: an in-process limiter decides at
/// the call, so an admission made and dropped (the losing branch of a
/// `select!`) has counted the request. (A Redis limiter is asked only when
/// awaited.)
#[tokio::test]
async fn an_in_process_admission_counts_at_the_call_even_if_dropped() {
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let keys = limited_manager(&clock);
    let key = keys
        .create(
            &acme(),
            "limited",
            CreateOptions::new().rate_limit(one_per_minute()),
        )
        .await
        .unwrap();
    let principal = keys.verify(key.key.expose_secret()).await.unwrap();

    // e.g. `select! { _ = shutdown => return, a = keys.admit(&p) => .. }`
    // with the shutdown branch winning: the admission is never awaited.
    drop(keys.admit(&principal));

    assert!(
        matches!(keys.admit(&principal).await, Admission::Refused(_)),
        "the dropped admission used the key's only request"
    );
}

/// As documented on `KeyManager::verify`: a verification answered from
/// memory is done at the call, so an expired key presented and dropped is
/// still recorded as `key.expired`, once.
#[tokio::test]
async fn a_verification_from_memory_is_done_at_the_call_even_if_dropped() {
    let (keys, secret) = a_key_expired_an_hour_ago().await;

    drop(keys.verify(&secret));
    drop(keys.verify(&secret));
    tokio::time::sleep(StdDuration::from_millis(50)).await;

    let events = keys.events(&acme(), EventQuery::newest(10)).await.unwrap();
    assert_eq!(
        events.iter().filter(|e| e.kind == EventKind::Expired).count(),
        1,
        "the refusal happened at the call: {events:?}"
    );
}

/// A `MemoryStore` shared through an `Arc` (two managers over one store,
/// say) is still answered at the call, without `KeyStore::get`'s boxed
/// future.
#[tokio::test]
async fn a_shared_memory_store_answers_at_the_call() {
    let store = Arc::new(MemoryStore::new());
    let keys = KeyManager::builder(Arc::clone(&store))
        .rate_limiter(LocalRateLimiter::new())
        .default_rate_limit(one_per_minute())
        .build();
    let other = KeyManager::new(Arc::clone(&store));
    let key = keys
        .create(&acme(), "shared", CreateOptions::new())
        .await
        .unwrap();
    for manager in [&keys, &other] {
        let Now::Ready(verified) = manager.verify(key.key.expose_secret()).now() else {
            panic!("a shared MemoryStore must answer at the call");
        };
        verified.unwrap();
    }
    let caller = keys.verify(key.key.expose_secret()).await.unwrap();
    assert!(matches!(
        keys.admit(&caller).now(),
        Now::Ready(Admission::Allowed(_))
    ));
}
