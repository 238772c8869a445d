//! Logging of refused verifications, within a budget: a flood of bad keys
//! must not fill the disk, yet an operator must see that it happens.

use std::error::Error as _;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use crate::error::VerifyError;

/// Lines logged per second at most; the rest are counted and the count is
/// reported on the next line that is logged.
pub(crate) const REFUSALS_LOGGED_PER_SECOND: u32 = 20;

/// A per-second budget of log lines, lock-free.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    second: AtomicI64,
    used: AtomicU32,
    suppressed: AtomicU64,
}

impl RefusalLog {
    /// Logs why a key was refused, with its key id and never the key: a
    /// refused key (unknown, wrong, revoked, expired) at `info`, a
    /// server-side failure (store down, pepper missing) at `warn`, header
    /// and format problems (no key id to name) at `debug`.
    pub(crate) fn refused(&self, error: &VerifyError, unix_micros: i64) {
        let important = !matches!(error, VerifyError::Header(_) | VerifyError::Malformed(_));
        if !important {
            tracing::debug!(reason = %error, "API key rejected");
            return;
        }
        let Some(suppressed) = self.admit(unix_micros.div_euclid(1_000_000)) else {
            return;
        };
        let suppressed = (suppressed > 0).then_some(suppressed);
        match error {
            VerifyError::Store(source) => tracing::warn!(
                error = %source,
                cause = source.source().map(tracing::field::display),
                suppressed,
                "API key not verified: store unavailable"
            ),
            VerifyError::PepperMissing { key_id } => tracing::warn!(
                key_id = %key_id,
                suppressed,
                "API key not verified: its record needs a pepper this server lacks"
            ),
            _ => tracing::info!(
                key_id = error.key_id().map(tracing::field::display),
                reason = %error,
                suppressed,
                "API key refused"
            ),
        }
    }

    /// `Some(lines suppressed since the last logged one)` if this second's
    /// budget has room.
    fn admit(&self, second: i64) -> Option<u64> {
        let current = self.second.load(Ordering::Relaxed);
        if current != second
            && self
                .second
                .compare_exchange(current, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < REFUSALS_LOGGED_PER_SECOND {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_budget_and_counted() {
        let log = RefusalLog::default();
        let admitted = (0..1_000).filter(|_| log.admit(7).is_some()).count();
        assert_eq!(admitted, REFUSALS_LOGGED_PER_SECOND as usize);
        // The next second logs again, and reports what was dropped.
        assert_eq!(log.admit(8), Some(1_000 - u64::from(REFUSALS_LOGGED_PER_SECOND)));
        assert_eq!(log.admit(8), Some(0));
    }
}
