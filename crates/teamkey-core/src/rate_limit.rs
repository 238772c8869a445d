//! Per-key rate limits: a quota of `requests` per `window` on each key,
//! checked right after verification by a [`RateLimiter`] (GCRA, in process
//! or shared), answered with the IETF draft `RateLimit` headers
//! (draft-ietf-httpapi-ratelimit-headers-11) and, past the quota, `429`.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::ident::KeyId;

mod local;

pub use local::{DEFAULT_TRACKED_KEYS, LocalRateLimiter};

/// Most requests one quota may allow per window.
pub const MAX_REQUESTS: u32 = 1_000_000;
/// Longest window: one day.
pub const MAX_WINDOW: Duration = Duration::from_secs(86_400);

/// A quota: at most `requests` per `window`, spread evenly (GCRA: a full
/// window's worth may come in one burst, then one per `window / requests`).
///
/// Serialized as `{"requests": 100, "window_seconds": 60}`.
///
/// ```
/// use std::time::Duration;
/// use teamkey_core::RateLimit;
///
/// let limit = RateLimit::new(100, Duration::from_secs(60))?;
/// assert_eq!(limit.to_string(), "100/60s");
/// assert!(RateLimit::new(0, Duration::from_secs(60)).is_err());
/// # Ok::<(), teamkey_core::ValidationError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RateLimitFields", into = "RateLimitFields")]
pub struct RateLimit {
    requests: NonZeroU32,
    window_seconds: u32,
}

/// A rate limit: at most `requests` per `window_seconds`, spread evenly
/// (GCRA).
#[derive(Clone, Copy, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = RateLimit))]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitFields {
    /// Requests allowed per window: 1 to 1,000,000.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    requests: u32,
    /// The window, in whole seconds: 1 to 86,400 (a day).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86_400))]
    window_seconds: u32,
}

impl TryFrom<RateLimitFields> for RateLimit {
    type Error = ValidationError;

    fn try_from(fields: RateLimitFields) -> Result<Self, Self::Error> {
        Self::new(
            fields.requests,
            Duration::from_secs(u64::from(fields.window_seconds)),
        )
    }
}

impl From<RateLimit> for RateLimitFields {
    fn from(limit: RateLimit) -> Self {
        Self {
            requests: limit.requests.get(),
            window_seconds: limit.window_seconds,
        }
    }
}

impl RateLimit {
    /// Whether this limit is no looser than `bound`: at most its burst
    /// (`requests`) and at most its rate (`requests / window`).
    pub fn is_within(self, bound: RateLimit) -> bool {
        self.requests() <= bound.requests() && self.rate_is_within(bound)
    }

    /// requests / window <= bound.requests / bound.window, in integers.
    fn rate_is_within(self, bound: RateLimit) -> bool {
        u64::from(self.requests()) * u64::from(bound.window_seconds())
            <= u64::from(bound.requests()) * u64::from(self.window_seconds())
    }

    /// This limit held within `bound`: itself if [within](Self::is_within)
    /// it, else at most the lower burst at the lower rate of the two (the
    /// window rounded up, so never looser than either).
    ///
    /// ```
    /// use std::time::Duration;
    /// use teamkey_core::RateLimit;
    /// let own = RateLimit::new(10, Duration::from_secs(1)).unwrap();
    /// let plan = RateLimit::new(100, Duration::from_secs(60)).unwrap();
    /// let held = own.bounded_by(plan);
    /// assert_eq!((held.requests(), held.window_seconds()), (10, 6));
    /// assert!(held.is_within(own) && held.is_within(plan));
    /// ```
    pub fn bounded_by(self, bound: RateLimit) -> RateLimit {
        if self.is_within(bound) {
            return self;
        }
        let requests = self.requests.min(bound.requests);
        // The slower of the two: fewer requests per second.
        let slower = if self.rate_is_within(bound) { self } else { bound };
        // requests / window <= slower's rate, window in whole seconds:
        // at most slower's window, since requests <= slower's requests.
        let window = (u64::from(requests.get()) * u64::from(slower.window_seconds()))
            .div_ceil(u64::from(slower.requests()));
        RateLimit {
            requests,
            window_seconds: u32::try_from(window).unwrap_or(slower.window_seconds),
        }
    }

    /// `requests` per `window`: 1 to [`MAX_REQUESTS`] requests, a window of
    /// whole seconds from 1 s to [`MAX_WINDOW`].
    pub fn new(requests: u32, window: Duration) -> Result<Self, ValidationError> {
        let invalid = ValidationError::InvalidRateLimit {
            max_requests: MAX_REQUESTS,
            max_window_seconds: MAX_WINDOW.as_secs(),
        };
        let requests = NonZeroU32::new(requests)
            .filter(|r| r.get() <= MAX_REQUESTS)
            .ok_or(invalid.clone())?;
        if window.subsec_nanos() != 0 || window.is_zero() || window > MAX_WINDOW {
            return Err(invalid);
        }
        let window_seconds = u32::try_from(window.as_secs()).map_err(|_| invalid)?;
        Ok(Self {
            requests,
            window_seconds,
        })
    }

    /// Requests per window.
    pub fn requests(&self) -> u32 {
        self.requests.get()
    }

    /// The window.
    pub fn window(&self) -> Duration {
        Duration::from_secs(u64::from(self.window_seconds))
    }

    /// The window in seconds.
    pub fn window_seconds(&self) -> u32 {
        self.window_seconds
    }

    /// The time one request's allowance takes to come back: `window / requests`.
    pub fn emission_interval(&self) -> Duration {
        self.window() / self.requests.get()
    }

    /// The `RateLimit-Policy` header value: `"default";q=100;w=60`.
    pub fn policy_header(&self) -> String {
        header_value(
            "\"default\";q=",
            u64::from(self.requests.get()),
            ";w=",
            u64::from(self.window_seconds),
        )
    }
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `100/60s`.
impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.requests, self.window_seconds)
    }
}

/// What a [`RateLimiter`] decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateDecision {
    /// Whether the request is within the quota (and was counted).
    pub allowed: bool,
    /// Requests left right now (0 when refused).
    pub remaining: u32,
    /// Until the quota is whole again (every allowance back).
    pub reset_after: Duration,
    /// When refused: until one more request would be allowed.
    pub retry_after: Duration,
}

impl RateDecision {
    /// An allowed request with `remaining` left, whole again after `reset_after`.
    pub fn allowed(remaining: u32, reset_after: Duration) -> Self {
        Self {
            allowed: true,
            remaining,
            reset_after,
            retry_after: Duration::ZERO,
        }
    }

    /// A refused request: one more may come after `retry_after`.
    pub fn refused(retry_after: Duration, reset_after: Duration) -> Self {
        Self {
            allowed: false,
            remaining: 0,
            reset_after,
            retry_after,
        }
    }
}

/// A limiter that failed (its backend is down). Logged, never shown.
pub type RateLimitError = Box<dyn std::error::Error + Send + Sync>;

/// Counts each key's requests against its quota.
///
/// [`LocalRateLimiter`] counts in this process (GCRA, `governor`);
/// `teamkey-redis` counts across instances in Redis. Set one with
/// [`KeyManagerBuilder::rate_limiter`](crate::KeyManagerBuilder::rate_limiter).
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one request from `key_id`'s quota `limit`: allowed (and
    /// counted) or refused (and not counted). An error is handled by the
    /// manager's [`LimiterFailure`] mode.
    async fn check(&self, key_id: &KeyId, limit: RateLimit) -> Result<RateDecision, RateLimitError>;

    /// `successor` replaced `rotated`: from now on it counts against what
    /// is left of `rotated`'s quota, so that rotating a key gives its
    /// holder no whole new quota. The manager calls it after each rotation
    /// it makes; a failure is logged and the rotation stands. The default
    /// does nothing: the successor starts whole.
    async fn carry_over(&self, rotated: &KeyId, successor: &KeyId) -> Result<(), RateLimitError> {
        let _ = (rotated, successor);
        Ok(())
    }
}

/// What to do when the rate limiter fails (Redis unreachable...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimiterFailure {
    /// Let the request through, logged at `warn` (at most once a second):
    /// an outage of the limiter is not an outage of the API. The default.
    #[default]
    Open,
    /// Refuse it with `503`: for quotas that protect something that must
    /// not be overrun.
    Closed,
}

/// `{first}{a}{second}{b}`, the numbers in decimal, in a string of exactly
/// that length. The header values are written on every response of a
/// limited key: `format!` costs several times this (callgrind, in
/// docs/performance.md), and an exact capacity lets the adapters' header
/// value take the buffer as it is, with no second allocation.
fn header_value(first: &str, a: u64, second: &str, b: u64) -> String {
    let (mut a_digits, mut b_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (a, b) = (a_digits.format(a), b_digits.format(b));
    let mut value = String::with_capacity(first.len() + a.len() + second.len() + b.len());
    for part in [first, a, second, b] {
        value.push_str(part);
    }
    value
}

/// Seconds for a header: rounded up, so that a client waiting that long
/// is never early.
pub(crate) fn header_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The headers a limited key's response carries: `RateLimit-Policy` and
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers-11). Plain numbers
/// until the response is written: an allowed request pays for no text it
/// does not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitHeaders {
    limit: RateLimit,
    remaining: u32,
    reset_seconds: u64,
}

impl RateLimitHeaders {
    pub(crate) fn new(limit: RateLimit, decision: &RateDecision) -> Self {
        Self {
            limit,
            remaining: decision.remaining,
            reset_seconds: header_seconds(decision.reset_after),
        }
    }

    /// `RateLimit-Policy`: `"default";q=100;w=60`.
    pub fn policy(&self) -> String {
        self.limit.policy_header()
    }

    /// `RateLimit`: `"default";r=42;t=17`.
    pub fn state(&self) -> String {
        header_value(
            "\"default\";r=",
            u64::from(self.remaining),
            ";t=",
            self.reset_seconds,
        )
    }

    /// The quota these headers are for: what `RateLimit-Policy` says. (An
    /// adapter may keep that value, formatted, per quota.)
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// `(name, value)` pairs, names in lower case.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, String)> {
        [("ratelimit-policy", self.policy()), ("ratelimit", self.state())].into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_limit() -> impl proptest::strategy::Strategy<Value = RateLimit> {
        use proptest::prelude::*;
        (1..=MAX_REQUESTS, 1..=MAX_WINDOW.as_secs())
            .prop_map(|(requests, window)| RateLimit::new(requests, Duration::from_secs(window)).unwrap())
    }

    proptest::proptest! {
        /// A key's limit held within its plan's is never looser than
        /// either, and is the key's own when that is within the plan's.
        #[test]
        fn a_bounded_limit_is_within_both(own in any_limit(), plan in any_limit()) {
            let held = own.bounded_by(plan);
            proptest::prop_assert!(held.is_within(own), "{held:?} looser than own {own:?}");
            proptest::prop_assert!(held.is_within(plan), "{held:?} looser than plan {plan:?}");
            proptest::prop_assert!(RateLimit::new(held.requests(), held.window()).is_ok());
            if own.is_within(plan) {
                proptest::prop_assert_eq!(held, own);
            } else {
                // Not needlessly tight: the lower burst of the two.
                proptest::prop_assert_eq!(held.requests(), own.requests().min(plan.requests()));
            }
        }
    }

    #[test]
    fn limits_are_bounded_and_round_trip() {
        let limit = RateLimit::new(100, Duration::from_secs(60)).unwrap();
        assert_eq!(limit.policy_header(), "\"default\";q=100;w=60");
        let json = serde_json::to_string(&limit).unwrap();
        assert_eq!(json, r#"{"requests":100,"window_seconds":60}"#);
        assert_eq!(serde_json::from_str::<RateLimit>(&json).unwrap(), limit);
        for (requests, window) in [
            (0, 60),
            (MAX_REQUESTS + 1, 60),
            (1, 0),
            (1, 86_401),
            (u32::MAX, u64::MAX),
        ] {
            assert!(RateLimit::new(requests, Duration::from_secs(window)).is_err());
        }
        assert!(RateLimit::new(1, Duration::from_millis(1500)).is_err());
        for bad in [
            r#"{"requests":0,"window_seconds":60}"#,
            r#"{"requests":1,"window_seconds":0}"#,
            r#"{"requests":1,"window_seconds":60,"burst":9}"#,
            r#"{"requests":-1,"window_seconds":60}"#,
        ] {
            assert!(serde_json::from_str::<RateLimit>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_values_are_written_exactly() {
        let limit = RateLimit::new(MAX_REQUESTS, MAX_WINDOW).unwrap();
        assert_eq!(limit.policy_header(), "\"default\";q=1000000;w=86400");
        let headers = RateLimitHeaders {
            limit,
            remaining: 0,
            reset_seconds: u64::MAX,
        };
        assert_eq!(headers.state(), "\"default\";r=0;t=18446744073709551615");
        assert_eq!(headers.limit(), limit);
        for n in [0, 7, 10, 99, 100, 4_294_967_295] {
            let value = header_value("q=", n, ";w=", 0);
            assert_eq!(value, format!("q={n};w=0"));
            assert_eq!(
                value.capacity(),
                value.len(),
                "exact, for the header value to take it as is"
            );
        }
    }

    #[test]
    fn header_seconds_round_up() {
        assert_eq!(header_seconds(Duration::ZERO), 0);
        assert_eq!(header_seconds(Duration::from_millis(1)), 1);
        assert_eq!(header_seconds(Duration::from_secs(17)), 17);
    }
}
