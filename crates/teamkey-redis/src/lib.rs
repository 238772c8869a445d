//! teamkey's shared rate limiter: [`RedisRateLimiter`] counts each API
//! key's requests in Redis, so that every instance of a service takes from
//! one quota per key (teamkey-core's `LocalRateLimiter` counts in one
//! process only).
//!
//! ```no_run
//! use std::time::Duration;
//! use teamkey_core::{Admission, KeyManager, LimiterFailure, MemoryStore, RateLimit};
//! use teamkey_redis::RedisRateLimiter;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Connects on the first check: a service starts even while Redis is down.
//! let limiter = RedisRateLimiter::builder("redis://127.0.0.1:6379")
//!     .timeout(Duration::from_millis(200))
//!     .build()?;
//! let keys = KeyManager::builder(MemoryStore::new())
//!     .rate_limiter(limiter)
//!     .default_rate_limit(RateLimit::new(100, Duration::from_secs(60))?)
//!     // The default: with Redis down, requests go through (logged at warn).
//!     .on_limiter_failure(LimiterFailure::Open)
//!     .build();
//!
//! # let presented = "";
//! // In a request (the axum and actix adapters do this for you):
//! let caller = keys.verify(presented).await?;
//! match keys.admit(&caller).await {
//!     Admission::Refused(answer) => { /* 429 (or 503): send `answer` */ }
//!     Admission::Allowed(headers) => { /* run the handler, add `headers` */ }
//!     _ => { /* unlimited: run the handler */ }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # How it counts
//!
//! The algorithm is GCRA, with the same arithmetic as `LocalRateLimiter`
//! (and so the same decisions while a key's quota holds): a quota of
//! `requests` per `window` allows a burst of `requests`, then gives one
//! allowance back every `window / requests`; a refused request is not
//! counted.
//!
//! Each check is one round trip: `EVALSHA` of one Lua script (loaded on
//! first use, and again after a Redis restart), which reads the key's
//! state, decides and writes it atomically, so racing instances never
//! over-admit. The time is Redis's own (`TIME` inside the script): one
//! clock for all instances, whatever theirs say. (Tests may set a clock
//! instead, to step over windows: [`RedisRateLimiterBuilder::clock`].)
//!
//! A refused key is then refused in this process, without asking Redis,
//! until the retry-after Redis gave (or for one window of the quota, if
//! that is sooner: a wait beyond it comes only from a changed quota or a
//! clock gone back, and Redis is asked again then): in GCRA a refused
//! request is not counted, so the key has no allowance before then
//! however often it is asked again, and the answer is the one Redis gave
//! (`remaining` 0, the time left as `retry_after` and `reset_after`). A
//! flood of requests on a key over its quota thus costs Redis about one
//! check per allowance that comes back, not one per request; and the key
//! stays refused even while Redis is down. Up to 100,000 refused keys are
//! remembered (the least recently used forgotten first, which only means
//! asking Redis again). A check under another quota forgets the key's
//! refusal, and Redis decides. What this instance cannot see ends
//! the refusal only at its retry-after, never earlier than Redis says:
//! another instance checking the key under another quota, or an operator
//! deleting its state ([`RedisRateLimiter::state_key`]).
//!
//! At most [`max_in_flight`](RedisRateLimiterBuilder::max_in_flight)
//! checks (64 unless set) wait for Redis at once; the next ones wait their
//! turn, within their timeout, without sending anything.
//!
//! Per API key, Redis holds one string under `{prefix}{key id}`
//! (`teamkey:rl:3xAmPle0Key1`, see [`RedisRateLimiter::state_key`]): the
//! key's theoretical arrival time, in nanoseconds since the Unix epoch, and
//! the quota it was counted under (`1767225600123456789 100/60s`). It
//! expires when the quota is whole again, so idle keys cost nothing. Only
//! the public key id is sent, never the secret.
//!
//! A key checked under another quota than it was counted under (a plan
//! change, a new default) keeps what it counted: the requests the old
//! quota still counts count under the new one, and come back at the old
//! quota's pace until the new one counts a request. Instances that
//! disagree on a key's quota for a while (a plan change within the policy
//! TTL, a rolling deploy) so give it at most the larger quota, never a
//! fresh one at each switch. (In process, `LocalRateLimiter` starts a
//! changed quota whole, once: one process holds one quota per key.)
//!
//! # When Redis fails
//!
//! A check that Redis has not answered within the
//! [timeout](RedisRateLimiterBuilder::timeout) (200 ms unless set, its
//! turn among the checks in flight included) returns an error, as does an
//! unreachable Redis, so a half-dead server cannot hold requests up. The
//! `KeyManager` then lets the request through or answers `503`, as set
//! with `on_limiter_failure`.
//!
//! Redis is taken as down when it cannot be reached (an I/O error), or
//! when a check sent at once (not after waiting its turn) gets no answer
//! within the timeout while Redis answered nothing else either. For
//! [`RETRY_INTERVAL`](RedisRateLimiter::RETRY_INTERVAL) (250 ms) after
//! that, checks fail at once without asking Redis, so an outage does not
//! add the timeout to every request; then Redis is asked again
//! (reconnecting if need be), and the limiter is back within about that
//! long of Redis.
//!
//! A check that is merely slow is not taken for an outage: one that timed
//! out while other checks were answered (Redis, or this process, is busy),
//! or that waited its turn, fails alone, as does one that found the
//! checks in flight full for its whole timeout
//! ([`RedisCheckError::Busy`]). Every other key's checks keep being sent
//! and counted: load on this limiter never makes every key unlimited (or
//! refused, failing closed) at once.
//!
//! # Requirements
//!
//! Redis 5.0 or newer, or Valkey (scripts replicate their effects, so
//! `TIME` inside one is allowed); a single server or a primary's address,
//! not Redis Cluster. Build the limiter inside a Tokio runtime.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use quick_cache::sync::Cache;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionInfo, IntoConnectionInfo, RedisError, Script, Value};
use teamkey_core::{Clock, KeyId, RateDecision, RateLimit, RateLimitError, RateLimiter};
use tokio::sync::Semaphore;

mod gcra;

use gcra::Gcra;

/// The `redis` crate this limiter is built on, for its connection types
/// ([`redis::ConnectionInfo`]) and errors.
pub use redis;

/// With a test clock, how long (in Redis's real time) a state is kept at
/// least: Redis's expiry cannot follow that clock, and a state dropped
/// while the test clock says it still counts would give a fresh quota.
/// Kept longer, a state says nothing wrong (a past TAT counts as now).
const TEST_CLOCK_STATE_LIFE_MS: u64 = 10 * 60 * 1_000;

/// The GCRA check; its arguments and reply are described in the file.
const GCRA_SCRIPT: &str = include_str!("gcra.lua");

/// A rotated key's state, copied to its successor with its expiry: the
/// successor goes on from what is left. (`COPY` would do, but needs Redis
/// 6.2.)
const CARRY_OVER_SCRIPT: &str = r"
local state = redis.call('GET', KEYS[1])
if not state then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('SET', KEYS[2], state, 'PX', ttl)
else
  redis.call('SET', KEYS[2], state)
end
return 1
";

/// How many refused keys are remembered at most (the least recently used
/// forgotten first): a few megabytes. Forgetting one only means asking
/// Redis again.
const REMEMBERED_REFUSALS: usize = 100_000;

/// Counts each API key's requests in Redis, shared by every instance.
///
/// Made with [`RedisRateLimiter::builder`]; set on a `KeyManager` with
/// `KeyManagerBuilder::rate_limiter`. Clones share one connection. See the
/// [crate docs](crate) for how it counts and fails.
#[derive(Clone)]
pub struct RedisRateLimiter {
    connection: ConnectionManager,
    script: Arc<Script>,
    carry_over: Arc<Script>,
    prefix: Arc<str>,
    timeout: Duration,
    clock: Option<Arc<dyn Clock>>,
    health: Arc<Health>,
    refusals: Arc<Refusals>,
    /// One permit per check sent to Redis and not yet answered.
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
}

impl fmt::Debug for RedisRateLimiter {
    // The connection's details (address, user) are left out: the limiter
    // is printed where its password must not be.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// The prefix of the Redis keys unless set: `teamkey:rl:`.
    pub const DEFAULT_PREFIX: &'static str = "teamkey:rl:";

    /// How long a check waits for Redis unless set: 200 ms. A round trip on
    /// a local network takes well under a millisecond; past this, the
    /// manager's failure mode decides (and Redis is taken to be down if it
    /// answered nothing else meanwhile: see the [crate docs](crate)).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

    /// After Redis failed to answer (unreachable, or silent for a whole
    /// timeout), checks fail at once, without asking it, for this long
    /// (but for keys it refused: they stay refused): while Redis
    /// is down, requests are not each held up by the timeout, and it is
    /// tried a few times a second, so the limiter is back within about this
    /// of Redis.
    pub const RETRY_INTERVAL: Duration = Duration::from_millis(250);

    /// How many checks may wait for Redis's answer at once unless set: 64.
    /// A check past that waits its turn (within its timeout) without
    /// sending anything, so a flood of requests cannot pile thousands of
    /// scripts onto Redis. A few dozen in flight already fill a
    /// multiplexed connection: Redis runs them one after another, each in
    /// microseconds.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

    /// Settings for a limiter on the Redis at `server`: a URL such as
    /// `redis://127.0.0.1:6379` or `rediss://user:password@host/0` (TLS
    /// needs the `redis` crate's TLS features), or a [`redis::ConnectionInfo`].
    pub fn builder(server: impl IntoConnectionInfo) -> RedisRateLimiterBuilder {
        RedisRateLimiterBuilder {
            server: server.into_connection_info(),
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            timeout: Self::DEFAULT_TIMEOUT,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            clock: None,
        }
    }

    /// The Redis key that holds `key_id`'s state: `{prefix}{key id}`. For
    /// operators and tests: deleting it gives the key its whole quota back
    /// (an instance that refused the key still refuses it until the
    /// retry-after it was told, at most one `window / requests`).
    pub fn state_key(&self, key_id: &KeyId) -> String {
        format!("{}{}", self.prefix, key_id.as_str())
    }

    /// How long a check waits for Redis.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How many checks may wait for Redis's answer at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Now, on the timeline of the remembered refusals: the test clock's if
    /// set (the time the script is then given), else a monotonic one.
    fn now(&self) -> Nanos {
        match &self.clock {
            Some(clock) => Nanos::from_unix_micros(clock.unix_micros()),
            None => self.refusals.monotonic_now(),
        }
    }

    async fn decide(&self, key_id: &KeyId, limit: RateLimit) -> Result<RateDecision, RedisCheckError> {
        // A key Redis refused is refused until its retry-after, whatever
        // Redis's state: asked again, it would only say so again.
        if let Some(refused) = self.refusals.refused(key_id, limit, self.now()) {
            return Ok(refused);
        }
        self.health.check()?;
        // One deadline for the whole check: its turn, then Redis.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (_permit, queued) = match self.in_flight.try_acquire() {
            Ok(permit) => (permit, false),
            Err(_) => {
                let permit = tokio::time::timeout_at(deadline, self.in_flight.acquire())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .ok_or(RedisCheckError::Busy {
                        max_in_flight: self.max_in_flight,
                    })?;
                // Most checks that wait are of a flooded key: the checks
                // ahead of them may have learned it is refused meanwhile.
                if let Some(refused) = self.refusals.refused(key_id, limit, self.now()) {
                    return Ok(refused);
                }
                self.health.check()?;
                (permit, true)
            }
        };
        let sent = self.health.now();
        let now = self.now();
        let decided = self.ask(key_id, limit, now, deadline).await;
        match &decided {
            Ok(decision) => {
                self.health.answered();
                if !decision.allowed {
                    self.refusals.remember(key_id, limit, now, decision);
                }
            }
            Err(error) => match error.judges_redis(queued) {
                Verdict::Answered => self.health.answered(),
                Verdict::Down => self.health.failed(error),
                Verdict::DownIfSilent => self.health.timed_out(error, sent),
                Verdict::Nothing => {}
            },
        }
        decided
    }

    /// One check in Redis, by `deadline`; `now` is the test clock's time,
    /// given to the script when that clock is set.
    async fn ask(
        &self,
        key_id: &KeyId,
        limit: RateLimit,
        now: Nanos,
        deadline: tokio::time::Instant,
    ) -> Result<RateDecision, RedisCheckError> {
        let gcra = Gcra::new(limit);
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.state_key(key_id))
            .arg(gcra.t)
            .arg(gcra.tau)
            .arg(limit.to_string());
        if self.clock.is_some() {
            let micros = now.unix_micros();
            invocation
                .arg(micros.div_euclid(1_000_000))
                .arg(micros.rem_euclid(1_000_000))
                .arg(TEST_CLOCK_STATE_LIFE_MS);
        } else {
            invocation.arg("").arg("").arg(0u64);
        }
        // The manager is a cheap handle on one shared connection.
        let mut connection = self.connection.clone();
        // Waiting for a reconnection, the EVALSHA, and the script's reload
        // after a Redis restart, all by the check's deadline.
        let ask = async {
            match invocation.invoke_async(&mut connection).await {
                // A refused connection sent nothing, and the manager has
                // just begun a new one: Redis may be back, so ask on that.
                Err(e) if e.is_connection_refusal() => invocation.invoke_async(&mut connection).await,
                answered => answered,
            }
        };
        let reply: Value = tokio::time::timeout_at(deadline, ask)
            .await
            .map_err(|_| RedisCheckError::Timeout(self.timeout))?
            // The connection's own response timeout, the same as ours.
            .map_err(|e| {
                if e.is_timeout() {
                    RedisCheckError::Timeout(self.timeout)
                } else {
                    RedisCheckError::Redis(e)
                }
            })?;
        gcra.decision(limit, &reply)
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key_id: &KeyId, limit: RateLimit) -> Result<RateDecision, RateLimitError> {
        Ok(self.decide(key_id, limit).await?)
    }

    /// The rotated key's state is copied to its successor, which goes on
    /// from what is left; the old key, in its grace period, keeps its own.
    async fn carry_over(&self, rotated: &KeyId, successor: &KeyId) -> Result<(), RateLimitError> {
        let mut invocation = self.carry_over.prepare_invoke();
        invocation
            .key(self.state_key(rotated))
            .key(self.state_key(successor));
        let mut connection = self.connection.clone();
        let copied: Result<i64, RedisError> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| RedisCheckError::Timeout(self.timeout))?;
        copied.map_err(RedisCheckError::Redis)?;
        Ok(())
    }
}

/// Settings of a [`RedisRateLimiter`]: from [`RedisRateLimiter::builder`].
pub struct RedisRateLimiterBuilder {
    server: Result<ConnectionInfo, RedisError>,
    prefix: String,
    timeout: Duration,
    max_in_flight: usize,
    clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for RedisRateLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiterBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiterBuilder {
    /// The prefix of every Redis key the limiter writes;
    /// [`DEFAULT_PREFIX`](RedisRateLimiter::DEFAULT_PREFIX) unless set.
    /// Give each environment sharing one Redis its own.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a check waits for Redis (connecting, and its turn among the
    /// checks in flight, included) before it fails;
    /// [`DEFAULT_TIMEOUT`](RedisRateLimiter::DEFAULT_TIMEOUT) unless set. A
    /// zero timeout fails every check (but for keys refused already).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many checks may wait for Redis's answer at once (at least 1);
    /// [`DEFAULT_MAX_IN_FLIGHT`](RedisRateLimiter::DEFAULT_MAX_IN_FLIGHT)
    /// unless set. Clones of the limiter share them. A check past that
    /// waits its turn within its timeout, then fails with
    /// [`RedisCheckError::Busy`]; raise it only if Redis is far away
    /// (checks per second are at most about this over the round trip).
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// For tests only: read the time from `clock` (a `ManualClock`) instead
    /// of Redis's `TIME`, to step over windows without sleeping. The
    /// limiter's memory of refused keys then runs on it too.
    ///
    /// Never in production: each instance would then count on its own
    /// clock. Redis still expires the states on its real time, so with a
    /// clock set each is kept at least 10 minutes of that time: a test
    /// that waits for a state to expire must use Redis's time.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The limiter, connecting on its first check (and in the background):
    /// a service starts even while Redis is down, its checks failing until
    /// Redis answers.
    ///
    /// Fails on settings the `redis` crate refuses, or outside a Tokio
    /// runtime.
    pub fn build(self) -> Result<RedisRateLimiter, RedisConnectError> {
        // The connection manager spawns its tasks on the current runtime,
        // and would panic without one.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisConnectError::NoRuntime);
        }
        let client = redis::Client::open(self.server.map_err(RedisConnectError::Settings)?)
            .map_err(RedisConnectError::Settings)?;
        // One connection attempt per reconnection, no retries: while Redis
        // is down, `Health` paces the attempts and fails checks at once,
        // where retries would hold each check up to its timeout.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(0);
        let connection =
            ConnectionManager::new_lazy_with_config(client, config).map_err(RedisConnectError::Settings)?;
        Ok(RedisRateLimiter {
            connection,
            script: Arc::new(Script::new(GCRA_SCRIPT)),
            carry_over: Arc::new(Script::new(CARRY_OVER_SCRIPT)),
            prefix: self.prefix.into(),
            timeout: self.timeout,
            clock: self.clock,
            health: Arc::new(Health::new()),
            refusals: Arc::new(Refusals::new(REMEMBERED_REFUSALS)),
            in_flight: Arc::new(Semaphore::new(self.max_in_flight)),
            max_in_flight: self.max_in_flight,
        })
    }

    /// The limiter, once Redis has answered and loaded the script within
    /// the timeout: for a service that should not start without its
    /// limiter, or to report a wrong address at startup.
    pub async fn connect(self) -> Result<RedisRateLimiter, RedisConnectError> {
        let limiter = self.build()?;
        let mut connection = limiter.connection.clone();
        tokio::time::timeout(limiter.timeout, limiter.script.load_async(&mut connection))
            .await
            .map_err(|_| RedisConnectError::Unavailable(RedisCheckError::Timeout(limiter.timeout)))?
            .map_err(|e| RedisConnectError::Unavailable(RedisCheckError::Redis(e)))?;
        Ok(limiter)
    }
}

/// Why a [`RedisRateLimiter`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisConnectError {
    /// The `redis` crate refused the URL or settings.
    #[error("Redis settings refused: {0}")]
    Settings(RedisError),
    /// Built outside a Tokio runtime, which the connection needs.
    #[error("a RedisRateLimiter is built inside a Tokio runtime")]
    NoRuntime,
    /// ([`connect`](RedisRateLimiterBuilder::connect) only) Redis did not
    /// load the script: unreachable, refusing, or too slow.
    #[error("Redis unavailable: {0}")]
    Unavailable(RedisCheckError),
}

/// Why a check failed; the manager logs it and applies its failure mode.
/// Each message says what went wrong, as the manager's log shows only it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisCheckError {
    /// Redis did not answer in time (down, overloaded, or unreachable).
    /// Redis is taken as down only if the check was sent at once and Redis
    /// answered nothing else meanwhile.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis, or the connection to it, failed (an I/O error takes Redis as
    /// down).
    #[error("Redis failed: {0}")]
    Redis(RedisError),
    /// Redis answered the script with something it cannot answer (another
    /// script under its hash, a proxy...): never trusted.
    #[error("Redis answered the rate-limit script with {0}")]
    MalformedReply(String),
    /// Not asked: Redis failed less than
    /// [`RETRY_INTERVAL`](RedisRateLimiter::RETRY_INTERVAL) ago.
    #[error("Redis is taken as down for up to {pause:?} after: {last}", pause = RedisRateLimiter::RETRY_INTERVAL)]
    Down {
        /// What the last failure was.
        last: String,
    },
    /// Not asked: the check waited its whole timeout for one of the
    /// [`max_in_flight`](RedisRateLimiterBuilder::max_in_flight) places.
    /// This instance is overloaded, not Redis: the limiter is not taken as
    /// down, and the next checks are sent as usual.
    #[error("{max_in_flight} rate-limit checks already waiting for Redis: not asked")]
    Busy {
        /// The bound that was reached.
        max_in_flight: usize,
    },
}

/// What a failed check says of Redis.
enum Verdict {
    /// It answered (with an error): it is up.
    Answered,
    /// It is unreachable.
    Down,
    /// It did not answer in time: down, unless it answered something else
    /// meanwhile.
    DownIfSilent,
    /// Nothing: the check was not sent whole.
    Nothing,
}

impl RedisCheckError {
    /// What this failure says of Redis; `queued`: the check waited for its
    /// turn, and so gave Redis less than the whole timeout.
    fn judges_redis(&self, queued: bool) -> Verdict {
        match self {
            Self::Timeout(_) if queued => Verdict::Nothing,
            Self::Timeout(_) => Verdict::DownIfSilent,
            Self::Redis(e) if e.is_io_error() => Verdict::Down,
            Self::Redis(_) | Self::MalformedReply(_) => Verdict::Answered,
            Self::Down { .. } | Self::Busy { .. } => Verdict::Nothing,
        }
    }
}

/// A time in nanoseconds: on the test clock, since the Unix epoch; on the
/// monotonic clock, since the limiter was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Nanos(i128);

impl Nanos {
    fn from_unix_micros(micros: i64) -> Self {
        Self(i128::from(micros) * 1_000)
    }

    /// Whole microseconds (the test clock's, exactly).
    fn unix_micros(self) -> i64 {
        i64::try_from(self.0.div_euclid(1_000)).unwrap_or(i64::MAX)
    }

    fn after(self, wait: Duration) -> Self {
        Self(
            self.0
                .saturating_add(i128::try_from(wait.as_nanos()).unwrap_or(i128::MAX)),
        )
    }

    /// From `earlier` to this; zero if not later.
    fn since(self, earlier: Self) -> Duration {
        let nanos = self.0.saturating_sub(earlier.0).max(0);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// The keys Redis refused lately, and until when.
///
/// Sound for GCRA: a refused request is not counted, so a key refused with
/// a retry-after has no allowance before it, however often it is asked
/// again. Only an allowed request (none before then) or a check under
/// another quota (which forgets the refusal here: Redis decides it by
/// what the key counted) moves its state.
struct Refusals {
    start: Instant,
    by_key: Cache<KeyId, Refusal>,
}

/// One remembered refusal: under which quota, until when, and until when
/// this instance answers it without asking Redis again.
#[derive(Clone, Copy)]
struct Refusal {
    limit: RateLimit,
    /// Redis's retry-after, from when it was asked.
    until: Nanos,
    /// When the quota is whole again, as Redis said.
    whole: Nanos,
    /// Until when the memory answers: `until`, or one window of the quota
    /// if that is sooner.
    answers_until: Nanos,
}

impl Refusals {
    fn new(capacity: usize) -> Self {
        Self {
            start: Instant::now(),
            by_key: Cache::new(capacity),
        }
    }

    fn monotonic_now(&self) -> Nanos {
        Nanos(i128::try_from(self.start.elapsed().as_nanos()).unwrap_or(i128::MAX))
    }

    /// The refusal of `key_id` under `limit` at `now`, as Redis would
    /// answer it, if one is remembered and not over.
    fn refused(&self, key_id: &KeyId, limit: RateLimit, now: Nanos) -> Option<RateDecision> {
        let refusal = self.by_key.get(key_id)?;
        if refusal.limit != limit {
            // Another quota may allow what this one refused: Redis says.
            self.by_key.remove(key_id);
            return None;
        }
        (now < refusal.answers_until).then(|| {
            let whole = refusal.whole.since(now).max(limit.window());
            RateDecision::refused(refusal.until.since(now), whole)
        })
    }

    /// Redis `refused` `key_id` under `limit`, asked at `asked` (before it
    /// decided: the memory ends no later than Redis's wait).
    fn remember(&self, key_id: &KeyId, limit: RateLimit, asked: Nanos, refused: &RateDecision) {
        // A wait is at most one emission interval, unless the quota changed
        // (what the old one counted comes back at its pace, up to its
        // window) or Redis's clock went back. Redis is asked again after a
        // window at most: it may know better by then (its clock set right,
        // an operator's reset), and one check a window is no load.
        let answered_for = refused.retry_after.min(limit.window());
        self.by_key.insert(
            *key_id,
            Refusal {
                limit,
                until: asked.after(refused.retry_after),
                whole: asked.after(refused.reset_after),
                answers_until: asked.after(answered_for),
            },
        );
    }
}

/// Whether Redis failed lately: then checks fail at once, until
/// [`RETRY_INTERVAL`](RedisRateLimiter::RETRY_INTERVAL) has passed.
struct Health {
    start: Instant,
    /// Until when Redis is not asked, in nanoseconds since `start`; 0: ask.
    down_until: AtomicU64,
    /// When Redis last answered a check, in nanoseconds since `start`.
    answered: AtomicU64,
    /// The failure that set it, for the error of the checks it fails.
    last: Mutex<String>,
}

impl Health {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            down_until: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            last: Mutex::new(String::new()),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn check(&self) -> Result<(), RedisCheckError> {
        if self.now() < self.down_until.load(Ordering::Relaxed) {
            let last = self.last.lock().unwrap_or_else(PoisonError::into_inner).clone();
            return Err(RedisCheckError::Down { last });
        }
        Ok(())
    }

    fn answered(&self) {
        self.answered.fetch_max(self.now(), Ordering::Relaxed);
    }

    /// A check sent at `sent` got no answer in time: Redis is down if it
    /// answered nothing else since then either. Else it is alive, only
    /// slow for this one (its queue, or this process's, is long): taking it
    /// as down would fail every key's checks for a while.
    fn timed_out(&self, error: &RedisCheckError, sent: u64) {
        if self.answered.load(Ordering::Relaxed) <= sent {
            self.failed(error);
        }
    }

    fn failed(&self, error: &RedisCheckError) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = error.to_string();
        let pause = u64::try_from(RedisRateLimiter::RETRY_INTERVAL.as_nanos()).unwrap_or(u64::MAX);
        self.down_until
            .store(self.now().saturating_add(pause), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    fn key(n: u8) -> KeyId {
        KeyId::parse(&format!("abcdefABCD{n:02}")).unwrap()
    }

    fn limit(requests: u32, seconds: u64) -> RateLimit {
        RateLimit::new(requests, Duration::from_secs(seconds)).unwrap()
    }

    fn seconds(s: u64) -> Nanos {
        Nanos::from_unix_micros(i64::try_from(s).unwrap() * 1_000_000)
    }

    fn refused(wait: u64, whole: u64) -> RateDecision {
        RateDecision::refused(Duration::from_secs(wait), Duration::from_secs(whole))
    }

    #[test]
    fn a_refusal_is_remembered_until_its_retry_after_under_its_quota() {
        let refusals = Refusals::new(10);
        let hourly = limit(10, 3_600);
        assert_eq!(refusals.refused(&key(1), hourly, seconds(100)), None);
        refusals.remember(&key(1), hourly, seconds(100), &refused(200, 3_600));
        assert_eq!(
            refusals.refused(&key(1), hourly, seconds(100)),
            Some(refused(200, 3_600))
        );
        assert_eq!(
            refusals.refused(&key(1), hourly, seconds(299)),
            Some(refused(1, 3_600))
        );
        assert_eq!(refusals.refused(&key(1), hourly, seconds(300)), None, "over");
        assert_eq!(
            refusals.refused(&key(2), hourly, seconds(100)),
            None,
            "another key"
        );

        // Another quota may allow the key: the refusal is forgotten (Redis
        // decides), for the old quota too.
        refusals.remember(&key(1), hourly, seconds(100), &refused(200, 3_600));
        assert_eq!(refusals.refused(&key(1), limit(20, 3_600), seconds(100)), None);
        assert_eq!(refusals.refused(&key(1), hourly, seconds(100)), None);

        // A wait beyond a window (what another quota counted, or Redis's
        // clock gone back) is answered as Redis gave it, whole again when
        // Redis said, for a window; then Redis is asked again.
        let minutely = limit(10, 60);
        refusals.remember(&key(1), minutely, seconds(100), &refused(3_000, 3_540));
        assert_eq!(
            refusals.refused(&key(1), minutely, seconds(130)),
            Some(refused(2_970, 3_510))
        );
        assert_eq!(
            refusals.refused(&key(1), minutely, seconds(160)),
            None,
            "asked again"
        );
    }

    #[test]
    fn a_timeout_takes_redis_down_only_if_it_answered_nothing_since() {
        let timeout = RedisCheckError::Timeout(Duration::from_millis(200));
        let health = Health::new();
        let sent = health.now();
        // Another check was answered while this one waited: Redis is up.
        health.answered();
        health.timed_out(&timeout, sent);
        assert!(health.check().is_ok());
        // Nothing answered since it was sent: down.
        let sent = health.now();
        health.timed_out(&timeout, sent);
        assert!(matches!(health.check(), Err(RedisCheckError::Down { .. })));

        // A check that waited for its turn gave Redis less than the
        // timeout: its timeout says nothing.
        assert!(matches!(timeout.judges_redis(true), Verdict::Nothing));
        assert!(matches!(timeout.judges_redis(false), Verdict::DownIfSilent));
        let busy = RedisCheckError::Busy { max_in_flight: 1 };
        assert!(matches!(busy.judges_redis(false), Verdict::Nothing));
    }

    #[tokio::test]
    async fn a_check_with_no_room_in_flight_is_busy_and_takes_nothing_down() {
        // Nothing listens there: a check that is sent fails at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let timeout = Duration::from_millis(100);
        let limiter = RedisRateLimiter::builder(format!("redis://127.0.0.1:{port}").as_str())
            .timeout(timeout)
            .max_in_flight(2)
            .build()
            .unwrap();
        assert_eq!(limiter.max_in_flight(), 2);
        let held = limiter.in_flight.acquire_many(2).await.unwrap();
        let started = Instant::now();
        let busy = limiter.decide(&key(1), limit(5, 10)).await;
        let waited = started.elapsed();
        assert!(
            matches!(busy, Err(RedisCheckError::Busy { max_in_flight: 2 })),
            "{busy:?}"
        );
        assert!(waited >= timeout && waited < timeout * 3, "{waited:?}");
        assert!(limiter.health.check().is_ok(), "not taken as down");

        drop(held);
        // Sent: the real failure, which does take Redis as down.
        let refused = limiter.decide(&key(1), limit(5, 10)).await;
        assert!(
            matches!(&refused, Err(RedisCheckError::Redis(e)) if e.is_connection_refusal()),
            "{refused:?}"
        );
        let down = limiter.decide(&key(1), limit(5, 10)).await;
        assert!(matches!(down, Err(RedisCheckError::Down { .. })), "{down:?}");
    }
}
