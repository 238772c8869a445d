//! Attacks on the coarse clocks (`CLOCK_MONOTONIC_COARSE` for the local
//! rate limiter and the policy cache, `Clock::recent_unix_micros` for
//! expiry): what they let through that the precise clocks did not.
//!
//! Each test measures real time with `std::time::Instant` (the precise
//! monotonic clock) *around* the library's calls: before the first call
//! and after the last, so that with a precise clock inside the library the
//! measured interval can only be longer than the one the library saw.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use teamkey_core::{
    Clock, CreateOptions, KeyId, KeyManager, LocalRateLimiter, ManualClock, MemoryStore, PolicyError,
    RateLimit, TeamId, TeamPolicy, TeamRules, VerifyError,
};
use time::OffsetDateTime;
use time::macros::datetime;

mod support;

/// Tells when the limiter's clock moves: a key of 1,000,000 a second
/// whose burst is spent is allowed again only once that clock has moved
/// (then by thousands: it is drained again at once).
struct Ticks {
    limiter: LocalRateLimiter,
    probe: KeyId,
    limit: RateLimit,
}

impl Ticks {
    fn new() -> Self {
        let ticks = Self {
            limiter: LocalRateLimiter::new(),
            probe: KeyId::parse("tickTOCKtick").unwrap(),
            limit: RateLimit::new(1_000_000, Duration::from_secs(1)).unwrap(),
        };
        ticks.drain();
        ticks
    }

    /// Spends whatever the probe has; `true` if it had anything (the
    /// limiter's clock moved since the last drain).
    fn drain(&self) -> bool {
        let mut moved = false;
        while self.limiter.decide(&self.probe, self.limit).allowed {
            moved = true;
        }
        moved
    }

    /// Spins until the limiter's clock moves; the instant it was seen to.
    fn next(&self) -> Instant {
        let give_up = Instant::now() + Duration::from_secs(5);
        loop {
            if self.limiter.decide(&self.probe, self.limit).allowed {
                let seen = Instant::now();
                self.drain();
                return seen;
            }
            assert!(Instant::now() < give_up, "the clock never moved");
        }
    }
}

/// docs/rate-limits.md: "a whole window's worth may come in one burst,
/// then one request per `window / requests`", and on the coarse clock "a
/// window may admit a tick's worth of requests beyond its quota (none at
/// 100 a minute ...)": at 21 a second a tick (4 ms) is worth 0.08 of a
/// request, none. With a precise monotonic clock the request after a full
/// burst is allowed no sooner than 1/21 s (47.6 ms) after the burst: the
/// limiter reads the burst's time after `before` and the next request's
/// before `after`. On the coarse clock, a burst sent late in a tick is
/// stamped with the tick's start, up to a tick early, and so is the refill:
/// the 22nd request gets in up to a tick early, a whole request beyond
/// the quota. The burst is timed late in a tick (seen through a probe key
/// of the same limiter) so that the test does not depend on luck.
#[test]
fn after_a_full_burst_the_next_request_waits_a_whole_interval() {
    let ticks = Ticks::new();
    // The tick, as this process sees it (microseconds on a precise clock,
    // which the probe sees move at once: the bound below is the same).
    ticks.next();
    let seen: Vec<Instant> = (0..6).map(|_| ticks.next()).collect();
    let tick = seen.windows(2).map(|w| w[1].duration_since(w[0])).min().unwrap();
    let limit = RateLimit::new(21, Duration::from_secs(1)).unwrap();
    let interval = Duration::from_secs(1) / 21;
    let mut gaps = Vec::new();
    for round in 0..5u8 {
        let key = KeyId::parse(&format!("abcdefABCD{round:02}")).unwrap();
        // Late in a tick: 70% of it after the clock moved. (Whatever the
        // phase, the bound below must hold; this only makes the coarse
        // clock's lag at the burst large, so the test fails every time.)
        let moved = ticks.next();
        while moved.elapsed() < tick * 7 / 10 {
            std::hint::spin_loop();
        }
        let before = Instant::now();
        let burst = (0..21).all(|_| ticks.limiter.decide(&key, limit).allowed);
        assert!(burst, "round {round}: the burst of 21");
        let give_up = Instant::now() + Duration::from_secs(5);
        let after = loop {
            let allowed = ticks.limiter.decide(&key, limit).allowed;
            let now = Instant::now();
            if allowed {
                break now;
            }
            assert!(now < give_up, "round {round}: never allowed again");
        };
        gaps.push(after.duration_since(before));
    }
    assert!(
        gaps.iter().all(|gap| *gap >= interval),
        "21 a second (one per {interval:?} after the burst), yet the 22nd request came {gaps:?} after the burst (tick {tick:?})"
    );
}

/// Counts its answers: how many times the policy was asked.
#[derive(Clone, Default)]
struct Counting(Arc<AtomicUsize>);

#[teamkey_core::async_trait]
impl TeamPolicy for Counting {
    async fn rules(&self, _: &TeamId) -> Result<TeamRules, PolicyError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(TeamRules::allow_all())
    }
}

/// `policy_ttl`'s rustdoc and docs/policy-and-events.md: "a plan change
/// reaches every verification within it". The answer is aged on the
/// coarse monotonic clock, so it is served up to a tick (4 ms here, more
/// on a busy VM) past its ttl: a verification made after the ttl has
/// surely passed still gets the old answer.
#[test]
fn a_policy_answer_is_never_served_after_its_ttl() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let asked = Counting::default();
    let ttl = Duration::from_millis(2);
    let keys = KeyManager::builder(MemoryStore::new())
        .policy(asked.clone())
        .policy_ttl(ttl)
        .build();
    let created = rt
        .block_on(keys.create(&TeamId::new("acme").unwrap(), "k", CreateOptions::default()))
        .unwrap();
    let key = created.key.expose_secret();
    for round in 0..20 {
        let before = asked.0.load(Ordering::SeqCst);
        let started = Instant::now();
        rt.block_on(keys.verify(key)).unwrap();
        // More than the ttl after `started`: an answer served now must
        // have been asked after `started`, so this round asks at least once.
        while started.elapsed() <= ttl {
            std::hint::spin_loop();
        }
        rt.block_on(keys.verify(key)).unwrap();
        let after = asked.0.load(Ordering::SeqCst);
        assert!(
            after > before,
            "round {round}: an answer older than its {ttl:?} ttl still served (asked {before} then {after})"
        );
    }
}

/// A clock whose recent reading lags the precise one by 4 ms (within
/// `RECENT_CLOCK_LAG`), counting precise readings.
#[derive(Debug, Clone)]
struct LaggingClock {
    precise: ManualClock,
    precise_reads: Arc<AtomicUsize>,
}

impl Clock for LaggingClock {
    fn now(&self) -> OffsetDateTime {
        self.precise_reads.fetch_add(1, Ordering::SeqCst);
        self.precise.now()
    }

    fn recent_unix_micros(&self) -> i64 {
        let recent = self.precise.now() - time::Duration::milliseconds(4);
        i64::try_from(recent.unix_timestamp_nanos() / 1_000).unwrap()
    }
}

/// docs/security.md: "a wrong secret costs the same for an active key id
/// as for a revoked or expired one". Expiry is now judged before the
/// secret, and with an extra precise clock reading (~25 ns with the vDSO,
/// a syscall on a VM whose clocksource has no vDSO) only for a key whose
/// expiry is within a second: anyone holding only a key id learns, by
/// timing a wrong secret, that the key expires (or its rotation grace
/// ends) in the next second.
#[test]
fn a_wrong_secret_costs_the_same_whatever_the_keys_expiry() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let t0 = datetime!(2026-06-01 12:00 UTC);
    let clock = LaggingClock {
        precise: ManualClock::new(t0),
        precise_reads: Arc::default(),
    };
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .build();
    let team = TeamId::new("acme").unwrap();
    let mut reads = Vec::new();
    for (name, options) in [
        ("far from expiry", CreateOptions::default()),
        (
            "expiring in 500 ms",
            CreateOptions::new().expires_at(t0 + time::Duration::milliseconds(500)),
        ),
    ] {
        let created = rt.block_on(keys.create(&team, name, options)).unwrap();
        // The same key id with another secret, checksum recomputed: what
        // anyone who saw the key id can send.
        let real = created.key.expose_secret();
        let body = &real[..real.len() - 6];
        let flipped = if body.ends_with('A') { 'B' } else { 'A' };
        let wrong = support::with_checksum(&format!("{}{flipped}", &body[..body.len() - 1]));
        clock.precise_reads.store(0, Ordering::SeqCst);
        let refused = rt.block_on(keys.verify(&wrong));
        assert!(
            matches!(refused, Err(VerifyError::Mismatch { .. })),
            "{name}: {refused:?}"
        );
        reads.push((name, clock.precise_reads.load(Ordering::SeqCst)));
    }
    assert_eq!(
        reads[0].1, reads[1].1,
        "precise clock readings for a wrong secret differ with the key's expiry: {reads:?}"
    );
}
