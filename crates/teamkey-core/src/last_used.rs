//! Last-used times, kept in memory and written to the store in batches.
//!
//! A verification only records "key K was used at T" in a map. At most
//! once per interval the whole map is handed to the store in one call, so
//! a key used 10,000 times in an interval costs at most one write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};

use time::{Duration, OffsetDateTime};

use crate::ident::KeyId;
use crate::record::KeyUse;

#[derive(Debug)]
pub(crate) struct LastUsed {
    pending: Mutex<HashMap<KeyId, OffsetDateTime>>,
    interval: Duration,
    /// Unix time in microseconds at which the next automatic flush is due.
    next_flush: AtomicI64,
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

impl LastUsed {
    pub(crate) fn new(interval: Duration, now: OffsetDateTime) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            interval,
            next_flush: AtomicI64::new(micros(now + interval)),
        }
    }

    /// Notes a use. `true` when an automatic flush is due and this caller
    /// won the right to start it.
    pub(crate) fn record(&self, key_id: KeyId, at: OffsetDateTime) -> bool {
        {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            match pending.get_mut(&key_id) {
                Some(t) => *t = (*t).max(at),
                None => {
                    pending.insert(key_id, at);
                }
            }
        }
        let now = micros(at);
        let due = self.next_flush.load(Ordering::Relaxed);
        now >= due
            && self
                .next_flush
                .compare_exchange(
                    due,
                    micros(at + self.interval),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Empties the map, for a flush.
    pub(crate) fn take(&self) -> Vec<KeyUse> {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        taken
            .into_iter()
            .map(|(key_id, at)| KeyUse { key_id, at })
            .collect()
    }

    /// Puts back a batch whose flush failed, so the next flush retries it.
    pub(crate) fn restore(&self, batch: Vec<KeyUse>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        for u in batch {
            let t = pending.entry(u.key_id).or_insert(u.at);
            *t = (*t).max(u.at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn one_flush_per_interval_and_latest_time_wins() {
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let lu = LastUsed::new(Duration::seconds(60), t0);
        let id = KeyId::parse("abcdefABCDEF").unwrap();
        for s in 0..59 {
            assert!(!lu.record(id, t0 + Duration::seconds(s)));
        }
        assert!(lu.record(id, t0 + Duration::seconds(60)));
        assert!(!lu.record(id, t0 + Duration::seconds(61)));
        let batch = lu.take();
        assert_eq!(
            batch,
            [KeyUse {
                key_id: id,
                at: t0 + Duration::seconds(61)
            }]
        );
        assert!(lu.take().is_empty());
        assert!(lu.record(id, t0 + Duration::seconds(120)));
    }

    #[test]
    fn a_restored_batch_keeps_the_newest_time() {
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let lu = LastUsed::new(Duration::seconds(60), t0);
        let id = KeyId::parse("abcdefABCDEF").unwrap();
        lu.record(id, t0 + Duration::seconds(5));
        let batch = lu.take();
        lu.record(id, t0 + Duration::seconds(9));
        lu.restore(batch);
        assert_eq!(lu.take()[0].at, t0 + Duration::seconds(9));
    }
}
