//! What a coarse clock broke when the local rate limiter and the policy
//! cache ran on one (the attack review's tests; both now read the precise
//! monotonic clock): a request let past a quota, an answer served past its
//! TTL. (A wrong secret's cost whatever the key's expiry: recent_clock.rs.)
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
    CreateOptions, KeyId, KeyManager, LocalRateLimiter, MemoryStore, PolicyError, RateLimit, TeamId,
    TeamPolicy, TeamRules,
};

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
/// then one request per `window / requests`". With a precise monotonic
/// clock the request after a full burst of 21 a second is allowed no
/// sooner than 1/21 s (47.6 ms) after the burst: the limiter reads the
/// burst's time after `before` and the next request's before `after`. On
/// a coarse clock, a burst sent late in a tick was stamped with the tick's
/// start, up to a tick early, and so was the refill: the 22nd request got
/// in up to a tick early, a whole request beyond the quota. The burst is
/// timed late in a tick (seen through a probe key of the same limiter) so
/// that a coarse clock fails the test every time.
///
/// The limiter's clock is the time-stamp counter, scaled by a rate that
/// `quanta` calibrates against the monotonic clock; the two may disagree
/// by some parts in ten thousand (seen: 7 µs in 47.6 ms, on a new VM). So
/// the bound allows 0.2% of the interval (95 µs), far less than the 0.7 ms
/// or more that a coarse clock's 1 ms tick or longer puts the burst early.
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
    let rates_apart = interval / 500;
    assert!(
        gaps.iter().all(|gap| *gap + rates_apart >= interval),
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
/// reaches every verification within it". Aged on the coarse monotonic
/// clock, an answer was served up to a tick (4 ms here, more on a busy VM)
/// past its ttl: a verification made after the ttl had surely passed
/// still got the old answer.
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
