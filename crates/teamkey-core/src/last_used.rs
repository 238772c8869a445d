//! Last-used times, kept in memory and written to the store in batches.
//!
//! A verification only records "key K was used at T" in a map. At most
//! once per interval the whole map is handed to the store in one call, so
//! a key used 10,000 times in an interval costs at most one write.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use foldhash::{HashMap, HashMapExt};

use crate::clock::{RECENT_LAG_MICROS, from_unix_micros, unix_micros};
use crate::ident::KeyId;
use crate::record::KeyUse;

#[derive(Debug)]
pub(crate) struct LastUsed {
    /// Only verified (so generated, random) key ids get in: see MemoryStore
    /// on why foldhash is safe for such keys.
    /// Unix microseconds of the latest use of each key, and its client
    /// address when the manager records them.
    pending: Mutex<HashMap<KeyId, (i64, Option<IpAddr>)>>,
    interval: i64,
    /// Unix time in microseconds at which the next automatic flush is due.
    next_flush: AtomicI64,
    /// This map's own number, for [`NOTED`]: never reused in a process.
    id: u64,
}

/// The numbers of `LastUsed` maps.
static IDS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The use this thread noted last: (map, key, time). The clock is read
    /// a tick at a time, so a key's requests on a thread mostly repeat it,
    /// and a repeat changes nothing: the map holds that time or a later
    /// one for the key, or a flush took it (and writes it, or puts it
    /// back). Skipping the map and its lock then saves a tenth of a
    /// verification (`verify_valid`, pinned: 188 -> 166 ns).
    static NOTED: Cell<Option<(u64, KeyId, i64)>> = const { Cell::new(None) };
}

impl LastUsed {
    /// Flushes at most every `interval` microseconds, the first one
    /// interval after `now`.
    pub(crate) fn new(interval: i64, now: i64) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            interval,
            next_flush: AtomicI64::new(now.saturating_add(interval)),
            id: IDS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Notes a use at `at`, or at `not_before()` if later. `true` when an
    /// automatic flush is due and this caller won the right to start it.
    pub(crate) fn record(
        &self,
        key_id: KeyId,
        at: i64,
        ip: Option<IpAddr>,
        not_before: impl FnOnce() -> i64,
    ) -> bool {
        // A use with an address always goes to the map: the address may differ.
        let noted = Some((self.id, key_id, at));
        let repeat = ip.is_none()
            && NOTED
                .try_with(|last| last.replace(noted) == noted)
                .unwrap_or(false);
        if !repeat {
            let at = at.max(not_before());
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            match pending.get_mut(&key_id) {
                Some(latest) => {
                    if at >= latest.0 {
                        *latest = (at, ip);
                    }
                }
                None => {
                    pending.insert(key_id, (at, ip));
                }
            }
        }
        let due = self.next_flush.load(Ordering::Relaxed);
        // A wall clock stepped back (NTP, a resumed VM) by more than an
        // interval would leave `due` ahead of every use until the clock
        // catches up (hours, or years after a wrong RTC): no flush at all
        // meanwhile. Such a use is taken as due too; not one that only
        // lags as the coarse reading does behind the precise one that set
        // the first `due`.
        let scheduled_at = due.saturating_sub(self.interval);
        let stepped_back = at < scheduled_at.saturating_sub(RECENT_LAG_MICROS);
        (at >= due || stepped_back)
            && self
                .next_flush
                .compare_exchange(
                    due,
                    at.saturating_add(self.interval),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Makes the next use claim the automatic flush: the caller that won
    /// it could not start it.
    pub(crate) fn flush_due(&self) {
        self.next_flush.store(i64::MIN, Ordering::Relaxed);
    }

    /// Empties the map, for a flush.
    pub(crate) fn take(&self) -> Vec<KeyUse> {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        taken
            .into_iter()
            .map(|(key_id, (at, ip))| KeyUse::new(key_id, from_unix_micros(at)).ip(ip))
            .collect()
    }

    /// Puts back a batch whose flush failed, so the next flush retries it.
    pub(crate) fn restore(&self, batch: Vec<KeyUse>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for u in batch {
            let at = unix_micros(u.at);
            let latest = pending.entry(u.key_id).or_insert((at, u.ip));
            if at > latest.0 {
                *latest = (at, u.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No lower bound on a use's time.
    const NEVER: fn() -> i64 = || i64::MIN;

    const MINUTE: i64 = 60_000_000;
    const SECOND: i64 = 1_000_000;

    #[test]
    fn one_flush_per_interval_and_latest_time_wins() {
        let t0 = 1_800_000_000 * SECOND;
        let lu = LastUsed::new(MINUTE, t0);
        let id = KeyId::parse("abcdefABCDEF").unwrap();
        for s in 0..59 {
            assert!(!lu.record(id, t0 + s * SECOND, None, NEVER));
        }
        assert!(lu.record(id, t0 + MINUTE, None, NEVER));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(!lu.record(id, t0 + MINUTE + SECOND, Some(ip), NEVER));
        assert!(
            !lu.record(id, t0 + MINUTE, None, NEVER),
            "an older use changes nothing"
        );
        let batch = lu.take();
        assert_eq!(
            batch,
            [KeyUse::new(id, from_unix_micros(t0 + MINUTE + SECOND)).ip(Some(ip))]
        );
        assert!(lu.take().is_empty());
        assert!(lu.record(id, t0 + 2 * MINUTE + SECOND, None, NEVER));
        lu.flush_due();
        assert!(
            lu.record(id, t0 + 2 * MINUTE + 2 * SECOND, None, NEVER),
            "an unstarted flush is claimed again"
        );
        assert!(!lu.record(id, t0 + 2 * MINUTE + 3 * SECOND, None, NEVER));
    }

    #[test]
    fn a_use_read_coarsely_before_the_schedule_is_not_a_step_back() {
        let t0 = 1_800_000_000 * SECOND;
        let lu = LastUsed::new(MINUTE, t0);
        let id = KeyId::parse("abcdefABCDEF").unwrap();
        // The coarse clock lags the precise one that set the schedule.
        assert!(!lu.record(id, t0 - 20_000, None, NEVER), "a lag of 20 ms");
        assert!(
            !lu.record(id, t0 - RECENT_LAG_MICROS, None, NEVER),
            "at the bound"
        );
        assert!(
            lu.record(id, t0 - RECENT_LAG_MICROS - 1, None, NEVER),
            "beyond it, the clock stepped back: due at once"
        );
        assert!(
            !lu.record(id, t0 - RECENT_LAG_MICROS, None, NEVER),
            "and scheduled anew"
        );
    }

    #[test]
    fn a_repeated_use_is_noted_once_and_never_lost() {
        let t0 = 1_800_000_000 * SECOND;
        let id = KeyId::parse("abcdefABCDEF").unwrap();
        let lu = LastUsed::new(MINUTE, t0);
        lu.record(id, t0, None, NEVER);
        lu.record(id, t0, None, NEVER);
        assert_eq!(lu.take(), [KeyUse::new(id, from_unix_micros(t0))]);
        // The flush took it: a repeat after it has nothing new to say.
        lu.record(id, t0, None, NEVER);
        assert!(lu.take().is_empty());
        lu.record(id, t0 + 1, None, NEVER);
        assert_eq!(lu.take(), [KeyUse::new(id, from_unix_micros(t0 + 1))]);
        // An address always counts, even at a time already noted.
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        lu.record(id, t0 + 1, None, NEVER);
        lu.record(id, t0 + 1, Some(ip), NEVER);
        assert_eq!(
            lu.take(),
            [KeyUse::new(id, from_unix_micros(t0 + 1)).ip(Some(ip))]
        );
    }

    #[test]
    fn a_use_is_never_noted_before_its_lower_bound() {
        let t0 = 1_800_000_000 * SECOND;
        let id = KeyId::parse("abcdefABCDEF").unwrap();
        let lu = LastUsed::new(MINUTE, t0);
        lu.record(id, t0, None, || t0 + 3);
        assert_eq!(lu.take(), [KeyUse::new(id, from_unix_micros(t0 + 3))]);
    }

    #[test]
    fn each_map_notes_its_own_uses() {
        let t0 = 1_800_000_000 * SECOND;
        let id = KeyId::parse("abcdefABCDEF").unwrap();
        let (first, second) = (LastUsed::new(MINUTE, t0), LastUsed::new(MINUTE, t0));
        first.record(id, t0, None, NEVER);
        second.record(id, t0, None, NEVER);
        assert_eq!(second.take(), [KeyUse::new(id, from_unix_micros(t0))]);
        assert_eq!(first.take(), [KeyUse::new(id, from_unix_micros(t0))]);
    }

    #[test]
    fn a_restored_batch_keeps_the_newest_time() {
        let t0 = 1_800_000_000 * SECOND;
        let lu = LastUsed::new(MINUTE, t0);
        let id = KeyId::parse("abcdefABCDEF").unwrap();
        lu.record(id, t0 + 5 * SECOND, None, NEVER);
        let batch = lu.take();
        lu.record(id, t0 + 9 * SECOND, None, NEVER);
        lu.restore(batch);
        assert_eq!(lu.take()[0].at, from_unix_micros(t0 + 9 * SECOND));
    }
}
