//! `LocalRateLimiter`: GCRA in this process, one `governor` limiter per key.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota};
use quick_cache::sync::Cache;

use super::{RateDecision, RateLimit, RateLimitError, RateLimiter};
use crate::clock::Clock;
use crate::ident::KeyId;

/// Keys whose state is kept unless configured.
pub const DEFAULT_TRACKED_KEYS: usize = 100_000;

/// Time as governor reads it, in nanoseconds.
#[derive(Debug, Clone)]
enum GovernorClock {
    /// Since `start`, on a monotonic clock: a wall clock stepped back (or
    /// forward) must not refuse keys for too long (or give them fresh
    /// quotas). governor's `quanta` clock: the CPU's time-stamp counter
    /// where it is invariant, scaled to nanoseconds (12.5 ns a reading
    /// here, against 33.7 for `Instant::elapsed`), else the OS's monotonic
    /// clock. Never a coarse one: a reading that lags lets requests past
    /// the quota.
    Monotonic {
        clock: governor::clock::QuantaClock,
        start: governor::clock::QuantaInstant,
    },
    /// Since the epoch, on the clock given to
    /// [`LocalRateLimiter::clock`] (a `ManualClock` in tests).
    Given(Arc<dyn Clock>),
}

impl GovernorClock {
    fn monotonic() -> Self {
        use governor::clock::Clock as _;
        let clock = governor::clock::QuantaClock::default();
        let start = clock.now();
        Self::Monotonic { clock, start }
    }
}

impl governor::clock::Clock for GovernorClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        use governor::clock::Reference as _;
        match self {
            Self::Monotonic { clock, start } => clock.now().duration_since(*start),
            Self::Given(clock) => Nanos::from(
                u64::try_from(clock.unix_micros())
                    .unwrap_or(0)
                    .saturating_mul(1_000),
            ),
        }
    }
}

type KeyLimiter = governor::RateLimiter<NotKeyed, InMemoryState, GovernorClock, StateInformationMiddleware>;

/// One key's limiter, and the quota it was made for.
struct Tracked {
    limit: RateLimit,
    limiter: KeyLimiter,
}

/// Counts requests in this process: GCRA per key (`governor`), each key
/// with its own quota.
///
/// Memory is bounded: at most [`DEFAULT_TRACKED_KEYS`] keys (or
/// [`tracked_keys`](Self::tracked_keys)) are tracked, the least recently
/// used dropped first. Dropping a key idle for a whole window loses
/// nothing (its quota is whole again); only with more keys active at once
/// than tracked could a dropped key get a fresh burst.
///
/// With several instances, each counts alone: a key may get the quota on
/// each. Count across instances with `teamkey-redis`.
///
/// ```
/// use teamkey_core::{KeyManager, LocalRateLimiter, MemoryStore, RateLimit};
/// use std::time::Duration;
///
/// let keys = KeyManager::builder(MemoryStore::new())
///     .rate_limiter(LocalRateLimiter::new())
///     .default_rate_limit(RateLimit::new(100, Duration::from_secs(60)).unwrap())
///     .build();
/// ```
pub struct LocalRateLimiter {
    clock: GovernorClock,
    keys: Cache<KeyId, Arc<Tracked>>,
    /// Held to replace a key's limiter after its quota changed: rare, and
    /// requests racing right after the change must share one new limiter.
    changing: std::sync::Mutex<()>,
}

impl std::fmt::Debug for LocalRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRateLimiter")
            .field("tracked", &self.keys.len())
            .field("capacity", &self.keys.capacity())
            .finish()
    }
}

impl Default for LocalRateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalRateLimiter {
    /// On the system clock, tracking up to [`DEFAULT_TRACKED_KEYS`] keys.
    pub fn new() -> Self {
        Self {
            clock: GovernorClock::monotonic(),
            keys: Cache::new(DEFAULT_TRACKED_KEYS),
            changing: std::sync::Mutex::new(()),
        }
    }

    /// On this clock (a [`ManualClock`](crate::ManualClock) in tests)
    /// instead of the monotonic clock, which a wall clock's steps do not move.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = GovernorClock::Given(Arc::new(clock));
        self
    }

    /// Track up to `max` keys (at least 1).
    pub fn tracked_keys(mut self, max: usize) -> Self {
        self.keys = Cache::new(max.max(1));
        self
    }

    /// How many keys are tracked now.
    pub fn tracked(&self) -> usize {
        self.keys.len()
    }

    fn tracked_for(&self, key_id: &KeyId, limit: RateLimit) -> Arc<Tracked> {
        // A plain lookup first: it costs half of `get_or_insert_with`.
        let tracked = match self.keys.get(key_id) {
            Some(tracked) => tracked,
            // The cache lets one of several racing first requests make the
            // key's limiter and the others wait for it: two limiters for
            // one key would each grant the whole burst.
            None => self
                .keys
                .get_or_insert_with(key_id, || Ok::<_, Infallible>(self.track(limit)))
                .unwrap_or_else(|never| match never {}),
        };
        if tracked.limit == limit {
            return tracked;
        }
        // Its quota changed: start whole under the new one, once. Without
        // the lock, requests racing after the change would each make a
        // whole limiter, and each grant the whole burst.
        let _one_at_a_time = self
            .changing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(current) = self.keys.get(key_id)
            && current.limit == limit
        {
            return current;
        }
        let tracked = self.track(limit);
        self.keys.insert(*key_id, Arc::clone(&tracked));
        tracked
    }

    /// A new limiter for `limit`, whole.
    fn track(&self, limit: RateLimit) -> Arc<Tracked> {
        // The interval is at least 86.4 µs (a day over a million), never zero.
        let quota = Quota::with_period(limit.emission_interval())
            .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN))
            .allow_burst(limit.requests);
        Arc::new(Tracked {
            limit,
            limiter: governor::RateLimiter::direct_with_clock(quota, self.clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
        })
    }
}

#[async_trait]
impl RateLimiter for LocalRateLimiter {
    async fn check(&self, key_id: &KeyId, limit: RateLimit) -> Result<RateDecision, RateLimitError> {
        Ok(self.decide(key_id, limit))
    }

    /// The successor shares the rotated key's limiter: while the old key
    /// lasts (its grace period), both draw from one quota.
    async fn carry_over(&self, rotated: &KeyId, successor: &KeyId) -> Result<(), RateLimitError> {
        if let Some(tracked) = self.keys.get(rotated) {
            self.keys.insert(*successor, tracked);
        }
        Ok(())
    }
}

impl LocalRateLimiter {
    /// The decision, synchronously: no I/O, a map lookup and one atomic
    /// compare-and-swap.
    pub fn decide(&self, key_id: &KeyId, limit: RateLimit) -> RateDecision {
        let tracked = self.tracked_for(key_id, limit);
        let interval = limit.emission_interval();
        match tracked.limiter.check() {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let used = limit.requests().saturating_sub(remaining);
                RateDecision::allowed(remaining, interval.saturating_mul(used))
            }
            Err(not_until) => RateDecision::refused(wait(&not_until, &self.clock), limit.window()),
        }
    }
}

fn wait(not_until: &NotUntil<Nanos>, clock: &GovernorClock) -> Duration {
    use governor::clock::Clock as _;
    let now = clock.now();
    Duration::from(not_until.earliest_possible().saturating_sub(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use time::macros::datetime;

    fn id(n: u8) -> KeyId {
        KeyId::parse(&format!("abcdefABCD{n:02}")).unwrap()
    }

    /// Requests racing right after a key's quota changed share one new
    /// limiter: together they get the new burst once.
    #[test]
    fn racing_requests_after_a_quota_change_get_one_burst() {
        let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
        let (old, new) = (
            RateLimit::new(1, Duration::from_secs(60)).unwrap(),
            RateLimit::new(3, Duration::from_secs(60)).unwrap(),
        );
        for round in 0..200 {
            let limiter = LocalRateLimiter::new().clock(clock.clone());
            assert!(limiter.decide(&id(1), old).allowed);
            let start = std::sync::Barrier::new(4);
            let allowed: u32 = std::thread::scope(|s| {
                let racers: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            (0..3).filter(|_| limiter.decide(&id(1), new).allowed).count() as u32
                        })
                    })
                    .collect();
                racers.into_iter().map(|r| r.join().unwrap()).sum()
            });
            assert_eq!(allowed, 3, "round {round}: the new burst of 3, once");
        }
    }

    #[test]
    fn a_quota_allows_its_burst_then_refuses_then_refills() {
        let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
        let limiter = LocalRateLimiter::new().clock(clock.clone());
        let limit = RateLimit::new(5, Duration::from_secs(10)).unwrap();
        for left in (0..5).rev() {
            let d = limiter.decide(&id(1), limit);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        let refused = limiter.decide(&id(1), limit);
        assert!(!refused.allowed);
        assert_eq!(
            refused.retry_after,
            Duration::from_secs(2),
            "one allowance back per 2 s"
        );
        assert!(limiter.decide(&id(2), limit).allowed, "another key is apart");
        clock.advance(time::Duration::seconds(2));
        assert!(limiter.decide(&id(1), limit).allowed);
        assert!(!limiter.decide(&id(1), limit).allowed);
        clock.advance(time::Duration::seconds(10));
        assert_eq!(
            limiter.decide(&id(1), limit).remaining,
            4,
            "whole again after a window"
        );
    }

    #[test]
    fn a_changed_quota_applies_at_once_and_memory_is_bounded() {
        let limiter = LocalRateLimiter::new().tracked_keys(8);
        let one = RateLimit::new(1, Duration::from_secs(60)).unwrap();
        assert!(limiter.decide(&id(1), one).allowed);
        assert!(!limiter.decide(&id(1), one).allowed);
        let more = RateLimit::new(3, Duration::from_secs(60)).unwrap();
        assert!(limiter.decide(&id(1), more).allowed);
        for n in 0..100 {
            limiter.decide(&id(n), one);
        }
        assert!(limiter.tracked() <= 8, "{}", limiter.tracked());
    }
}
