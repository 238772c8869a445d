//! Sign-in's limits. Each attempt runs argon2, slow and memory-hungry on
//! purpose, so a flood of `POST /login` must neither queue hashes without
//! end nor guess passwords at leisure:
//! - at most [`HASHING_PERMITS`] hashes at once; an attempt that finds
//!   none free is refused at once, not queued;
//! - failed attempts are counted per email and per client address; past
//!   the limit, that email or address is refused, without a hash, until
//!   its window ends.

use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::sync::{Cache, EntryAction, EntryResult};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Argon2 takes 19 MiB and a core for a moment: two at once at most.
pub(crate) const HASHING_PERMITS: usize = 2;

/// Failed sign-ins allowed per email in a window.
pub(crate) const EMAIL_FAILURES: u32 = 5;

/// Failed sign-ins allowed per client address (an IPv6 /64) in a window:
/// more than per email, since people share addresses.
pub(crate) const ADDRESS_FAILURES: u32 = 20;

/// How long failures count, from the first one.
pub(crate) const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Emails, and addresses, tracked at most: a flood of new ones evicts the
/// rarely seen first, and memory stays bounded.
const TRACKED: usize = 10_000;

/// When no hash is free: about the time one takes.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// The limits of one router's sign-ins.
#[derive(Clone)]
pub(crate) struct SignInLimits(Arc<Limits>);

struct Limits {
    hashing: Arc<Semaphore>,
    emails: Failures<u64>,
    addresses: Failures<IpAddr>,
    /// Emails are counted by a keyed hash: no email (nor a password typed
    /// into the email field) stays in memory.
    email_hasher: RandomState,
}

impl SignInLimits {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Limits {
            hashing: Arc::new(Semaphore::new(HASHING_PERMITS)),
            emails: Failures::new(EMAIL_FAILURES, TRACKED),
            addresses: Failures::new(ADDRESS_FAILURES, TRACKED),
            email_hasher: RandomState::new(),
        }))
    }

    /// A permit to hash for this attempt, or how long to wait: the email
    /// or the address has failed too often, or every hash is taken.
    pub(crate) fn admit(
        &self,
        email: &str,
        client: Option<IpAddr>,
    ) -> Result<OwnedSemaphorePermit, Duration> {
        let now = Instant::now();
        let limits = &self.0;
        let email = limits.emails.refused_for(&self.email_key(email), now);
        let address = client.and_then(|ip| limits.addresses.refused_for(&address_key(ip), now));
        if let Some(wait) = email.max(address) {
            return Err(wait);
        }
        Arc::clone(&limits.hashing)
            .try_acquire_owned()
            .map_err(|_| BUSY_RETRY)
    }

    /// Counts a wrong email or password.
    pub(crate) fn failed(&self, email: &str, client: Option<IpAddr>) {
        let now = Instant::now();
        self.0.emails.add(&self.email_key(email), now);
        if let Some(ip) = client {
            self.0.addresses.add(&address_key(ip), now);
        }
    }

    /// The person knew the password: their email's failures are forgiven
    /// (not the address's, which others may be guessing from).
    pub(crate) fn succeeded(&self, email: &str) {
        self.0.emails.forget(&self.email_key(email));
    }

    fn email_key(&self, email: &str) -> u64 {
        self.0.email_hasher.hash_one(email)
    }
}

/// The client's address as counted: an IPv6 client by its /64, which one
/// host often holds whole.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// Failures per key, in fixed windows, in a bounded map.
struct Failures<K> {
    limit: u32,
    windows: Cache<K, Window>,
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

impl<K: Eq + Hash + Clone> Failures<K> {
    fn new(limit: u32, capacity: usize) -> Self {
        Self {
            limit,
            windows: Cache::new(capacity),
        }
    }

    /// How long `key` is still refused, if it is.
    fn refused_for(&self, key: &K, now: Instant) -> Option<Duration> {
        let window = self.windows.get(key)?;
        let end = window.start + WINDOW;
        (window.count >= self.limit && now < end).then(|| end - now)
    }

    fn add(&self, key: &K, now: Instant) {
        let first = Window { start: now, count: 1 };
        let entry = self.windows.entry(key, None, |_, window| {
            if now.duration_since(window.start) >= WINDOW {
                *window = first;
            } else {
                window.count = window.count.saturating_add(1);
            }
            EntryAction::Retain(())
        });
        if let EntryResult::Vacant(slot) = entry {
            // Err only if the slot was removed meanwhile: a failure less.
            let _ = slot.insert(first);
        }
    }

    fn forget(&self, key: &K) {
        self.windows.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_refuse_until_their_window_ends() {
        let failures = Failures::new(3, 100);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(failures.refused_for(&"a", start), None);
            failures.add(&"a", start);
        }
        let later = start + Duration::from_secs(60);
        assert_eq!(
            failures.refused_for(&"a", later),
            Some(WINDOW - Duration::from_secs(60))
        );
        assert_eq!(failures.refused_for(&"b", later), None, "another key");
        assert_eq!(failures.refused_for(&"a", start + WINDOW), None);
        // A failure after the window starts a new one.
        failures.add(&"a", start + WINDOW);
        assert_eq!(failures.refused_for(&"a", start + WINDOW), None);
        failures.forget(&"a");
        assert_eq!(failures.windows.len(), 0);
    }

    #[test]
    fn a_flood_of_new_keys_stays_within_the_bound() {
        let failures = Failures::new(1, 1_000);
        let now = Instant::now();
        for key in 0..10_000_u32 {
            failures.add(&key, now);
        }
        assert!(failures.windows.len() <= 1_000, "{}", failures.windows.len());
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            address_key(ip("2001:db8::1")),
            address_key(ip("2001:db8::ffff:2"))
        );
        assert_ne!(address_key(ip("2001:db8::1")), address_key(ip("2001:db8:0:1::1")));
        assert_eq!(address_key(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
        assert_ne!(address_key(ip("203.0.113.7")), address_key(ip("203.0.113.8")));
    }
}
