//! The GCRA parameters sent to the script, and its reply read back into a
//! [`RateDecision`], exactly as `LocalRateLimiter` (governor) computes them.

use std::time::Duration;

use redis::Value;
use teamkey_core::{RateDecision, RateLimit};

use crate::RedisCheckError;

/// One quota in governor's terms, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// The emission interval: one request's allowance comes back after it.
    pub(crate) t: u64,
    /// The tolerance: how far ahead of now the TAT may be and still allow
    /// one more (`t * (requests - 1)`).
    pub(crate) tau: u64,
}

impl Gcra {
    pub(crate) fn new(limit: RateLimit) -> Self {
        // At most a day (8.64e13 ns), at least 1 µs: no overflow, never zero.
        let t = u64::try_from(limit.emission_interval().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let tau = t.saturating_mul(u64::from(limit.requests() - 1));
        Self { t, tau }
    }

    /// The decision from the script's reply: `[1, TAT - now]` (allowed) or
    /// `[0, wait, whole]` (refused: until one more is allowed, and until
    /// the quota is whole again), in nanoseconds. Anything else is an
    /// error, never a panic.
    pub(crate) fn decision(self, limit: RateLimit, reply: &Value) -> Result<RateDecision, RedisCheckError> {
        let malformed = || RedisCheckError::MalformedReply(format!("{reply:?}"));
        let Value::Array(items) = reply else {
            return Err(malformed());
        };
        let nanos = |n: &i64| u64::try_from(*n).map_err(|_| malformed());
        match items.as_slice() {
            [Value::Int(1), Value::Int(next)] => {
                let next = nanos(next)?;
                // The TAT moved to at most tau + t past now, and at least t.
                if !(self.t..=self.tau.saturating_add(self.t)).contains(&next) {
                    return Err(malformed());
                }
                // governor's `remaining_burst_capacity`, and the local
                // limiter's reset: whole again after the used allowances.
                let remaining = (self.tau + self.t - next) / self.t;
                let remaining = u32::try_from(remaining).map_err(|_| malformed())?;
                let used = limit.requests().saturating_sub(remaining);
                Ok(RateDecision::allowed(
                    remaining,
                    limit.emission_interval().saturating_mul(used),
                ))
            }
            // Longer than the quota's own waits after a change of quota
            // (what the old one counted comes back at its pace), or if
            // Redis's clock went back: still a wait, and it ends. Whole
            // again after a window, as the local limiter says, unless what
            // the old quota counted takes longer.
            [Value::Int(0), Value::Int(wait), Value::Int(whole)] => {
                let (wait, whole) = (nanos(wait)?, nanos(whole)?);
                if wait == 0 || whole < wait {
                    return Err(malformed());
                }
                Ok(RateDecision::refused(
                    Duration::from_nanos(wait),
                    Duration::from_nanos(whole).max(limit.window()),
                ))
            }
            _ => Err(malformed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, seconds: u64) -> RateLimit {
        RateLimit::new(requests, Duration::from_secs(seconds)).unwrap()
    }

    fn reply(allowed: i64, nanos: i64) -> Value {
        Value::Array(vec![Value::Int(allowed), Value::Int(nanos)])
    }

    fn refusal(wait: i64, whole: i64) -> Value {
        Value::Array(vec![Value::Int(0), Value::Int(wait), Value::Int(whole)])
    }

    #[test]
    fn parameters_are_governors() {
        let g = Gcra::new(limit(5, 10));
        assert_eq!((g.t, g.tau), (2_000_000_000, 8_000_000_000));
        let g = Gcra::new(limit(1, 60));
        assert_eq!((g.t, g.tau), (60_000_000_000, 0));
        // A day over a million: 86.4 ms, exact in nanoseconds.
        assert_eq!(Gcra::new(limit(1_000_000, 86_400)).t, 86_400_000);
        // 1 s over a million: 1 µs; 10 s over 3: rounded down like Duration.
        assert_eq!(Gcra::new(limit(1_000_000, 1)).t, 1_000);
        assert_eq!(Gcra::new(limit(3, 10)).t, 3_333_333_333);
    }

    #[test]
    fn replies_read_as_the_local_limiter_decides() {
        let l = limit(5, 10);
        let g = Gcra::new(l);
        let first = g.decision(l, &reply(1, 2_000_000_000)).unwrap();
        assert_eq!(first, RateDecision::allowed(4, Duration::from_secs(2)));
        let last = g.decision(l, &reply(1, 10_000_000_000)).unwrap();
        assert_eq!(last, RateDecision::allowed(0, Duration::from_secs(10)));
        // Part of an allowance back: not a whole request yet.
        let partial = g.decision(l, &reply(1, 9_999_000_000)).unwrap();
        assert_eq!(partial, RateDecision::allowed(0, Duration::from_secs(10)));
        let refused = g.decision(l, &refusal(1_500_000_000, 9_500_000_000)).unwrap();
        assert_eq!(
            refused,
            RateDecision::refused(Duration::from_millis(1_500), Duration::from_secs(10))
        );
        // After a change of quota: whole when what the old one counted is
        // back, if that is beyond a window.
        let refused = g.decision(l, &refusal(54_600_000_000, 60_000_000_000)).unwrap();
        assert_eq!(
            refused,
            RateDecision::refused(Duration::from_millis(54_600), Duration::from_secs(60))
        );
    }

    #[test]
    fn a_malformed_reply_is_an_error() {
        let l = limit(5, 10);
        let g = Gcra::new(l);
        for bad in [
            Value::Nil,
            Value::Okay,
            Value::Int(1),
            Value::BulkString(b"1".to_vec()),
            Value::Array(vec![]),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)]),
            Value::Array(vec![Value::Int(1), Value::Nil]),
            reply(2, 2_000_000_000),
            reply(-1, 2_000_000_000),
            reply(1, -1),
            reply(1, 0),
            // Outside what the script can answer: [t, tau + t].
            reply(1, 1_999_999_999),
            reply(1, 10_000_000_001),
            reply(1, i64::MAX),
            // A refusal says both its wait and when the quota is whole.
            reply(0, 1_500_000_000),
            refusal(0, 1),
            refusal(-1, 1),
            refusal(1, -1),
            refusal(2, 1),
            refusal(i64::MIN, i64::MIN),
            Value::Array(vec![Value::Int(0), Value::Int(1), Value::Int(2), Value::Int(3)]),
        ] {
            assert!(
                matches!(g.decision(l, &bad), Err(RedisCheckError::MalformedReply(_))),
                "{bad:?}"
            );
        }
    }
}
