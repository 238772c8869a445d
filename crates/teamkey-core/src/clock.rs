//! The one source of "now", injectable so that expiry, grace periods and
//! last-used debouncing are tested without sleeping.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use time::{Duration, OffsetDateTime};

/// `at` in UTC, cut to whole microseconds: the precision every supported
/// database keeps, so stored times read back exactly as written.
pub(crate) fn stored_precision(at: OffsetDateTime) -> OffsetDateTime {
    // `to_offset` panics past year 9999 (a -23:59 offset on 9999-12-31 is
    // year 10000 in UTC); callers refuse such instants, so keep them as is.
    let at = at.checked_to_offset(time::UtcOffset::UTC).unwrap_or(at);
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .unwrap_or(at)
}

/// Microseconds since the Unix epoch, the unit of time on the
/// verification path (saturating far outside any real date).
pub(crate) fn unix_micros(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// The instant `micros` after the Unix epoch.
pub(crate) fn from_unix_micros(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Tells the time: what the [`KeyManager`](crate::KeyManager) stamps on
/// keys and events ([`Clock::now`]), and what verification judges expiry
/// and last-used by ([`Clock::recent_unix_micros`], then
/// [`Clock::unix_micros`] near an expiry). Rate limits and the age of a
/// kept policy answer run on the monotonic clock instead (a wall clock
/// stepped back must not refuse keys), unless a clock is given to
/// [`LocalRateLimiter::clock`](crate::LocalRateLimiter::clock).
///
/// # For implementors
///
/// Only [`Clock::now`] is required; the other two default to it and are
/// then always right. Override them only to make them cheaper, and keep
/// their contract: [`Clock::unix_micros`] is `now` in microseconds, and
/// [`Clock::recent_unix_micros`] is never later than `unix_micros` and at
/// most [`RECENT_CLOCK_LAG`] earlier. A reading that lags more lets a key
/// pass for up to the excess after its expiry; one that leads refuses
/// keys early.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> OffsetDateTime;

    /// The current time in microseconds since the Unix epoch. Read on
    /// every verification; override it when that is cheaper than [`Clock::now`].
    fn unix_micros(&self) -> i64 {
        unix_micros(self.now())
    }

    /// A cheaper reading of [`Clock::unix_micros`] that may lag it, and
    /// must never be later than it nor more than [`RECENT_CLOCK_LAG`]
    /// earlier (see [For implementors](Clock#for-implementors)). Read on
    /// every verification for what a little lag does not change (the
    /// time kept as last-used) and as the first look at expiry: a key that
    /// expired at or before this reading is expired; one expiring within
    /// [`RECENT_CLOCK_LAG`] after it is judged against
    /// [`Clock::unix_micros`]; so expiry stays exact.
    ///
    /// By default the same as [`Clock::unix_micros`]. [`SystemClock`]
    /// reads the kernel's coarse clock on Linux: usually a timer tick
    /// behind, a few milliseconds; up to 24 ms was seen on a loaded VM.
    fn recent_unix_micros(&self) -> i64 {
        self.unix_micros()
    }
}

/// How far [`Clock::recent_unix_micros`] may be behind
/// [`Clock::unix_micros`]: one second, a hundred times the coarsest
/// timer tick Linux has, forty times the largest lag seen on a loaded VM.
pub const RECENT_CLOCK_LAG: Duration = Duration::microseconds(RECENT_LAG_MICROS);

/// [`RECENT_CLOCK_LAG`] in microseconds, the unit of the verification path.
pub(crate) const RECENT_LAG_MICROS: i64 = 1_000_000;

/// Where an instant stands against a recent reading of a clock
/// ([`Clock::recent_unix_micros`]), both in Unix microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// At or before the reading: passed.
    Passed,
    /// More than [`RECENT_CLOCK_LAG`] after it: not passed, whatever the
    /// precise time (which is at most the lag after the reading).
    Ahead,
    /// Within the lag after it: the precise clock decides.
    Near(i64),
}

impl Deadline {
    /// Where `at` stands against `recent`.
    pub(crate) fn of(at: i64, recent: i64) -> Self {
        if at <= recent {
            Self::Passed
        } else if at > recent.saturating_add(RECENT_LAG_MICROS) {
            Self::Ahead
        } else {
            Self::Near(at)
        }
    }

    /// Whether it has passed: read on `clock` when it is near.
    pub(crate) fn has_passed(self, clock: &dyn Clock) -> bool {
        match self {
            Self::Passed => true,
            Self::Ahead => false,
            Self::Near(at) => at <= clock.unix_micros(),
        }
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    /// Skips the calendar arithmetic of `now`: half the cost.
    fn unix_micros(&self) -> i64 {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        since_epoch.map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
    }

    /// `CLOCK_REALTIME_COARSE`: the wall time at the kernel's last timer
    /// tick, read without the TSC (a fifth of the precise clock's cost).
    /// The precise clock adds the time since that tick, so this one is
    /// never ahead of it. A kernel without it (a sandbox) gets the precise
    /// clock: never a panic.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn recent_unix_micros(&self) -> i64 {
        use rustix::time::{ClockId, DynamicClockId, clock_gettime_dynamic};
        match clock_gettime_dynamic(DynamicClockId::Known(ClockId::RealtimeCoarse)) {
            Ok(at) => at
                .tv_sec
                .saturating_mul(1_000_000)
                .saturating_add(at.tv_nsec / 1_000),
            Err(_) => self.unix_micros(),
        }
    }
}

/// A clock that moves only when told to. Clones share one time.
///
/// ```
/// use teamkey_core::{Clock, ManualClock};
/// use time::{Duration, macros::datetime};
///
/// let clock = ManualClock::new(datetime!(2026-01-01 0:00 UTC));
/// clock.advance(Duration::hours(1));
/// assert_eq!(clock.now(), datetime!(2026-01-01 1:00 UTC));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<OffsetDateTime>>);

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: OffsetDateTime) -> Self {
        Self(Arc::new(Mutex::new(at)))
    }

    /// Sets the time.
    pub fn set(&self, at: OffsetDateTime) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }

    /// Moves the time by `by` (which may be negative).
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock whose precise reading must not be taken.
    #[derive(Debug)]
    struct NotToBeRead;

    impl Clock for NotToBeRead {
        fn now(&self) -> OffsetDateTime {
            panic!("the precise clock was read")
        }
    }

    #[test]
    fn the_recent_reading_decides_alone_outside_the_lag() {
        let recent = 1_800_000_000_000_000;
        assert_eq!(Deadline::of(recent, recent), Deadline::Passed);
        assert_eq!(Deadline::of(recent - 1, recent), Deadline::Passed);
        assert_eq!(
            Deadline::of(recent + RECENT_LAG_MICROS + 1, recent),
            Deadline::Ahead
        );
        assert_eq!(Deadline::of(i64::MAX, i64::MAX - 1), Deadline::Near(i64::MAX));
        assert!(Deadline::Passed.has_passed(&NotToBeRead));
        assert!(!Deadline::Ahead.has_passed(&NotToBeRead));
    }

    #[test]
    fn within_the_lag_the_precise_clock_decides() {
        let precise = ManualClock::new(from_unix_micros(1_800_000_000_500_000));
        let recent = 1_800_000_000_000_000;
        for (at, passed) in [
            (1_800_000_000_500_000, true),
            (1_800_000_000_500_001, false),
            (recent + RECENT_LAG_MICROS, false),
        ] {
            assert_eq!(Deadline::of(at, recent), Deadline::Near(at));
            assert_eq!(Deadline::of(at, recent).has_passed(&precise), passed, "{at}");
        }
    }

    #[test]
    fn the_system_clocks_recent_reading_is_never_ahead_nor_too_far_behind() {
        assert_eq!(
            RECENT_CLOCK_LAG.whole_microseconds(),
            i128::from(RECENT_LAG_MICROS)
        );
        for _ in 0..10_000 {
            let recent = SystemClock.recent_unix_micros();
            let precise = SystemClock.unix_micros();
            assert!(recent <= precise, "{recent} > {precise}");
            assert!(precise - recent <= RECENT_LAG_MICROS, "{precise} - {recent}");
        }
    }
}
