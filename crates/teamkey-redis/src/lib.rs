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
//! (and so the same decisions): a quota of `requests` per `window` allows
//! a burst of `requests`, then gives one allowance back every
//! `window / requests`; a refused request is not counted.
//!
//! Each check is one round trip: `EVALSHA` of one Lua script (loaded on
//! first use, and again after a Redis restart), which reads the key's
//! state, decides and writes it atomically, so racing instances never
//! over-admit. The time is Redis's own (`TIME` inside the script): one
//! clock for all instances, whatever theirs say. (Tests may set a clock
//! instead, to step over windows: [`RedisRateLimiterBuilder::clock`].)
//!
//! Per API key, Redis holds one string under `{prefix}{key id}`
//! (`teamkey:rl:3xAmPle0Key1`, see [`RedisRateLimiter::state_key`]): the
//! key's theoretical arrival time, in nanoseconds since the Unix epoch, and
//! the quota it was counted under (`1767225600123456789 100/60s`). It
//! expires when the quota is whole again, so idle keys cost nothing. Only
//! the public key id is sent, never the secret. A changed quota starts
//! whole, as it does in the local limiter.
//!
//! # When Redis fails
//!
//! A check that Redis has not answered within the
//! [timeout](RedisRateLimiterBuilder::timeout) (200 ms unless set) returns
//! an error, as does an unreachable Redis, so a half-dead server cannot
//! hold requests up. The `KeyManager` then lets the request through or
//! answers `503`, as set with `on_limiter_failure`. For
//! [`RETRY_INTERVAL`](RedisRateLimiter::RETRY_INTERVAL) (250 ms) after
//! such a failure, checks fail at once without asking Redis, so an outage
//! does not add the timeout to every request; then Redis is asked again
//! (reconnecting if need be), and the limiter is back within about that
//! long of Redis.
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
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionInfo, IntoConnectionInfo, RedisError, Script, Value};
use teamkey_core::{Clock, KeyId, RateDecision, RateLimit, RateLimitError, RateLimiter};

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

/// Counts each API key's requests in Redis, shared by every instance.
///
/// Made with [`RedisRateLimiter::builder`]; set on a `KeyManager` with
/// `KeyManagerBuilder::rate_limiter`. Clones share one connection. See the
/// [crate docs](crate) for how it counts and fails.
#[derive(Clone)]
pub struct RedisRateLimiter {
    connection: ConnectionManager,
    script: Arc<Script>,
    prefix: Arc<str>,
    timeout: Duration,
    clock: Option<Arc<dyn Clock>>,
    health: Arc<Health>,
}

impl fmt::Debug for RedisRateLimiter {
    // The connection's details (address, user) are left out: the limiter
    // is printed where its password must not be.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// The prefix of the Redis keys unless set: `teamkey:rl:`.
    pub const DEFAULT_PREFIX: &'static str = "teamkey:rl:";

    /// How long a check waits for Redis unless set: 200 ms. A round trip on
    /// a local network takes well under a millisecond; past this, Redis is
    /// taken to be down and the manager's failure mode decides.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

    /// After Redis failed to answer (unreachable, or past the timeout),
    /// checks fail at once, without asking it, for this long: while Redis
    /// is down, requests are not each held up by the timeout, and it is
    /// tried a few times a second, so the limiter is back within about this
    /// of Redis.
    pub const RETRY_INTERVAL: Duration = Duration::from_millis(250);

    /// Settings for a limiter on the Redis at `server`: a URL such as
    /// `redis://127.0.0.1:6379` or `rediss://user:password@host/0` (TLS
    /// needs the `redis` crate's TLS features), or a [`redis::ConnectionInfo`].
    pub fn builder(server: impl IntoConnectionInfo) -> RedisRateLimiterBuilder {
        RedisRateLimiterBuilder {
            server: server.into_connection_info(),
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            timeout: Self::DEFAULT_TIMEOUT,
            clock: None,
        }
    }

    /// The Redis key that holds `key_id`'s state: `{prefix}{key id}`. For
    /// operators and tests: deleting it gives the key its whole quota back.
    pub fn state_key(&self, key_id: &KeyId) -> String {
        format!("{}{}", self.prefix, key_id.as_str())
    }

    /// How long a check waits for Redis.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn decide(&self, key_id: &KeyId, limit: RateLimit) -> Result<RateDecision, RedisCheckError> {
        self.health.check()?;
        let decided = self.ask(key_id, limit).await;
        match &decided {
            Err(error) if error.means_down() => self.health.failed(error),
            _ => {}
        }
        decided
    }

    /// One check in Redis, within the timeout.
    async fn ask(&self, key_id: &KeyId, limit: RateLimit) -> Result<RateDecision, RedisCheckError> {
        let gcra = Gcra::new(limit);
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.state_key(key_id))
            .arg(gcra.t)
            .arg(gcra.tau)
            .arg(limit.to_string());
        match &self.clock {
            Some(clock) => {
                let micros = clock.unix_micros();
                invocation
                    .arg(micros.div_euclid(1_000_000))
                    .arg(micros.rem_euclid(1_000_000))
                    .arg(TEST_CLOCK_STATE_LIFE_MS)
            }
            None => invocation.arg("").arg("").arg(0u64),
        };
        // The manager is a cheap handle on one shared connection.
        let mut connection = self.connection.clone();
        // One deadline for the whole check: waiting for a reconnection, the
        // EVALSHA, and the script's reload after a Redis restart.
        let ask = async {
            match invocation.invoke_async(&mut connection).await {
                // A refused connection sent nothing, and the manager has
                // just begun a new one: Redis may be back, so ask on that.
                Err(e) if e.is_connection_refusal() => invocation.invoke_async(&mut connection).await,
                answered => answered,
            }
        };
        let reply: Value = tokio::time::timeout(self.timeout, ask)
            .await
            .map_err(|_| RedisCheckError::Timeout(self.timeout))?
            .map_err(RedisCheckError::Redis)?;
        gcra.decision(limit, &reply)
    }
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn check(&self, key_id: &KeyId, limit: RateLimit) -> Result<RateDecision, RateLimitError> {
        Ok(self.decide(key_id, limit).await?)
    }
}

/// Settings of a [`RedisRateLimiter`]: from [`RedisRateLimiter::builder`].
pub struct RedisRateLimiterBuilder {
    server: Result<ConnectionInfo, RedisError>,
    prefix: String,
    timeout: Duration,
    clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for RedisRateLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiterBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
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

    /// How long a check waits for Redis (connecting included) before it
    /// fails; [`DEFAULT_TIMEOUT`](RedisRateLimiter::DEFAULT_TIMEOUT) unless
    /// set. A zero timeout fails every check.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// For tests only: read the time from `clock` (a `ManualClock`) instead
    /// of Redis's `TIME`, to step over windows without sleeping.
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
            prefix: self.prefix.into(),
            timeout: self.timeout,
            clock: self.clock,
            health: Arc::new(Health::new()),
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
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis, or the connection to it, failed.
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
}

impl RedisCheckError {
    /// Whether Redis itself is unreachable or too slow (rather than
    /// answering with an error).
    fn means_down(&self) -> bool {
        match self {
            Self::Timeout(_) => true,
            Self::Redis(e) => e.is_io_error(),
            _ => false,
        }
    }
}

/// Whether Redis failed lately: then checks fail at once, until
/// [`RETRY_INTERVAL`](RedisRateLimiter::RETRY_INTERVAL) has passed.
struct Health {
    start: Instant,
    /// Until when Redis is not asked, in nanoseconds since `start`; 0: ask.
    down_until: AtomicU64,
    /// The failure that set it, for the error of the checks it fails.
    last: Mutex<String>,
}

impl Health {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            down_until: AtomicU64::new(0),
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

    fn failed(&self, error: &RedisCheckError) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = error.to_string();
        let pause = u64::try_from(RedisRateLimiter::RETRY_INTERVAL.as_nanos()).unwrap_or(u64::MAX);
        self.down_until
            .store(self.now().saturating_add(pause), Ordering::Relaxed);
    }
}
