//! Verification reads a cheap, lagging clock, and expiry stays exact: a key
//! that expires in the lag is judged by the precise clock, and a key far
//! from its expiry costs no precise reading at all; nor does a wrong
//! secret, whatever the key's expiry.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use teamkey_core::{
    Clock, CreateOptions, KeyManager, ManualClock, MemoryStore, RECENT_CLOCK_LAG, TeamId, VerifyError,
};
use time::{Duration, OffsetDateTime, macros::datetime};

mod support;

/// A clock whose recent reading is `lag` behind the precise one (which
/// `ManualClock` sets), counting the precise readings.
#[derive(Debug, Clone)]
struct LaggingClock {
    precise: ManualClock,
    lag: Duration,
    precise_reads: Arc<AtomicUsize>,
}

impl Clock for LaggingClock {
    fn now(&self) -> OffsetDateTime {
        self.precise_reads.fetch_add(1, Ordering::SeqCst);
        self.precise.now()
    }

    fn recent_unix_micros(&self) -> i64 {
        let recent = self.precise.now() - self.lag;
        i64::try_from(recent.unix_timestamp_nanos() / 1_000).unwrap()
    }
}

const T0: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

fn lagging(lag: Duration) -> LaggingClock {
    assert!(lag <= RECENT_CLOCK_LAG, "the contract's bound");
    LaggingClock {
        precise: ManualClock::new(T0),
        lag,
        precise_reads: Arc::default(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

#[test]
fn a_key_that_expires_within_the_lag_is_judged_by_the_precise_clock() {
    let rt = runtime();
    let clock = lagging(Duration::milliseconds(900));
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .build();
    let expires_at = T0 + Duration::seconds(10);
    let created = rt
        .block_on(keys.create(
            &TeamId::new("acme").unwrap(),
            "short-lived",
            CreateOptions::new().expires_at(expires_at),
        ))
        .unwrap();
    let key = created.key.expose_secret();

    clock.precise.set(expires_at - Duration::microseconds(1));
    assert!(
        rt.block_on(keys.verify(key)).is_ok(),
        "a microsecond before its expiry"
    );
    // The recent reading (900 ms behind) alone would let it pass for
    // 900 ms more.
    for after in [
        Duration::ZERO,
        Duration::microseconds(1),
        Duration::milliseconds(899),
    ] {
        clock.precise.set(expires_at + after);
        assert!(
            matches!(rt.block_on(keys.verify(key)), Err(VerifyError::Expired { .. })),
            "{after} after its expiry"
        );
    }
}

#[test]
fn a_key_far_from_its_expiry_costs_no_precise_reading() {
    let rt = runtime();
    let clock = lagging(Duration::milliseconds(4));
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .build();
    let team = TeamId::new("acme").unwrap();
    let forever = rt
        .block_on(keys.create(&team, "forever", CreateOptions::default()))
        .unwrap();
    let in_a_day = rt
        .block_on(keys.create(
            &team,
            "a day",
            CreateOptions::new().expires_at(T0 + Duration::days(1)),
        ))
        .unwrap();
    let in_a_moment = rt
        .block_on(keys.create(
            &team,
            "a moment",
            CreateOptions::new().expires_at(T0 + Duration::milliseconds(500)),
        ))
        .unwrap();

    clock.precise_reads.store(0, Ordering::SeqCst);
    for _ in 0..100 {
        rt.block_on(keys.verify(forever.key.expose_secret())).unwrap();
        rt.block_on(keys.verify(in_a_day.key.expose_secret())).unwrap();
    }
    assert_eq!(clock.precise_reads.load(Ordering::SeqCst), 0);
    // Within the lag of its expiry, the key costs one precise reading; a
    // wrong secret no more than for a key without expiry (the refusal's
    // log reads the time of both): timing tells nothing of the expiry.
    let reads = |key: &str| {
        let before = clock.precise_reads.load(Ordering::SeqCst);
        let verified = rt.block_on(keys.verify(key));
        (verified, clock.precise_reads.load(Ordering::SeqCst) - before)
    };
    let (verified, near) = reads(&wrong_secret(in_a_moment.key.expose_secret()));
    assert!(matches!(verified, Err(VerifyError::Mismatch { .. })));
    let (verified, far) = reads(&wrong_secret(forever.key.expose_secret()));
    assert!(matches!(verified, Err(VerifyError::Mismatch { .. })));
    assert_eq!(near, far);
    let (verified, reads) = reads(in_a_moment.key.expose_secret());
    assert!(verified.is_ok());
    assert_eq!(reads, 1);
}

/// `key` with its last secret character changed, checksum recomputed.
fn wrong_secret(key: &str) -> String {
    let body = &key[..key.len() - 6];
    let last = if body.ends_with('a') { "b" } else { "a" };
    support::with_checksum(&format!("{}{last}", &body[..body.len() - 1]))
}
