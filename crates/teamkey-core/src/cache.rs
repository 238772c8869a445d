//! The verification cache: verification at memory speed over any store,
//! while every writer's revocation still takes effect within a second.
//!
//! The cache is trusted only while its invalidation channel vouches for it:
//! the store's [`InvalidationSource`] reports every change any writer makes
//! (another instance, the CLI, raw SQL) and confirms, at least every few
//! hundred milliseconds, that everything committed before a given instant
//! has been delivered. Without a fresh confirmation the cache is bypassed,
//! so a lost or half-open channel costs speed, never correctness.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::StoreError;
use crate::ident::KeyId;
use crate::record::KeyRecord;

/// Most keys the cache holds by default, known and unknown together
/// (about 300 bytes each besides the shared record).
pub const DEFAULT_CACHE_ENTRIES: usize = 100_000;
/// The hard age bound of a cached record by default: the last line of
/// defence should every other mechanism fail.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30);
/// How long an unknown key id is remembered as unknown by default.
pub const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// How long one confirmation of the invalidation channel keeps the cache
/// trusted by default: the bound on how late another writer's revocation
/// can be seen.
pub const DEFAULT_TRUST_WINDOW: Duration = Duration::from_secs(1);

/// How the verification cache behaves. The defaults are the documented
/// contract (docs/caching.md); change them only knowingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Most entries held; the least recently useful go first.
    pub max_entries: usize,
    /// A cached record is re-read after this long, whatever the channel says.
    pub max_age: Duration,
    /// An unknown key id is remembered as unknown this long.
    pub negative_ttl: Duration,
    /// One channel confirmation keeps the cache trusted this long.
    pub trust_window: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_CACHE_ENTRIES,
            max_age: DEFAULT_MAX_AGE,
            negative_ttl: DEFAULT_NEGATIVE_TTL,
            trust_window: DEFAULT_TRUST_WINDOW,
        }
    }
}

impl CacheConfig {
    /// The most entries held (at least 1).
    #[must_use]
    pub fn max_entries(mut self, max: usize) -> Self {
        self.max_entries = max.max(1);
        self
    }

    /// The hard age bound of a cached record.
    #[must_use]
    pub fn max_age(mut self, max: Duration) -> Self {
        self.max_age = max;
        self
    }

    /// How long an unknown key id is remembered as unknown.
    #[must_use]
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// How long one confirmation keeps the cache trusted.
    #[must_use]
    pub fn trust_window(mut self, window: Duration) -> Self {
        self.trust_window = window;
        self
    }
}

/// Tells a verification cache what changed, for a store whose records
/// other writers can change. A store provides it (for example
/// `SqlxStore::invalidations()`); [`KeyManagerBuilder::cache`](crate::KeyManagerBuilder::cache)
/// runs it on a background task.
#[async_trait]
pub trait InvalidationSource: Send + Sync + 'static {
    /// Opens the channel and reports through `sink` until it fails, then
    /// returns why. The manager calls it again after a short pause.
    ///
    /// The contract, in order:
    /// 1. once listening, call [`InvalidationSink::connected`] with an
    ///    instant taken *before* listening began;
    /// 2. for every change of a record by any writer, call
    ///    [`InvalidationSink::invalidate`] with its key id (or
    ///    [`InvalidationSink::invalidate_all`] when the key is unknown);
    /// 3. at least every few hundred milliseconds, prove the channel alive
    ///    (a heartbeat round trip, a successful poll) and call
    ///    [`InvalidationSink::confirmed`] with an instant taken before the
    ///    proof began, once everything committed before it has been
    ///    reported. A half-open connection thus stops confirming, and the
    ///    cache stops being trusted within its trust window.
    async fn run(&self, sink: InvalidationSink) -> StoreError;
}

/// The cache's side of an invalidation channel. Cheap to clone.
#[derive(Clone)]
pub struct InvalidationSink {
    state: Arc<CacheState>,
}

impl fmt::Debug for InvalidationSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidationSink").finish_non_exhaustive()
    }
}

impl InvalidationSink {
    /// The channel listens since `since`: whatever was cached may have
    /// missed changes, so it is dropped, and the cache is trusted until one
    /// trust window after `since`.
    pub fn connected(&self, since: Instant) {
        self.state.reset();
        self.confirmed(since);
    }

    /// A writer changed `key_id`: forget it, and let no read that began
    /// before now put the old record back.
    pub fn invalidate(&self, key_id: &KeyId) {
        self.state.invalidate(key_id);
    }

    /// Forget everything (a change that names no key, or a gap in the
    /// channel's history).
    pub fn invalidate_all(&self) {
        self.state.reset();
    }

    /// Every change committed before `sent` has been reported: trust the
    /// cache until one trust window after `sent`.
    pub fn confirmed(&self, sent: Instant) {
        let until = self.state.nanos(sent).saturating_add(self.state.window_nanos());
        self.state.trusted_until.fetch_max(until, Ordering::SeqCst);
    }

    /// The channel is lost: stop trusting the cache and drop its entries.
    pub fn lost(&self) {
        self.state.trusted_until.store(0, Ordering::SeqCst);
        self.state.reset();
    }

    /// Whether the cache is trusted now. For sources' own checks and tests.
    pub fn is_trusted(&self) -> bool {
        self.state.trusted_at(self.state.now())
    }
}

#[derive(Clone)]
struct Entry {
    /// `None`: the key id is unknown to the store.
    record: Option<Arc<KeyRecord>>,
    /// When the store was read, in nanoseconds since `CacheState::base`.
    read_at: u64,
}

/// What the cache knows of a key id.
pub(crate) enum Lookup {
    /// The record, fresh.
    Hit(Arc<KeyRecord>),
    /// Recently unknown to the store.
    Unknown,
    /// Ask the store, then [`CacheState::fill`] with this ticket.
    Miss(Ticket),
}

/// Proof of when a store read began, for [`CacheState::fill`].
pub(crate) struct Ticket {
    generation: u64,
    started: u64,
    trusted: bool,
}

pub(crate) struct CacheState {
    entries: quick_cache::sync::Cache<KeyId, Entry>,
    /// Bumped by every invalidation: a fill whose read began under an older
    /// generation must not stay in the cache.
    generation: AtomicU64,
    trusted_until: AtomicU64,
    base: Instant,
    config: CacheConfig,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl CacheState {
    pub(crate) fn new(config: CacheConfig) -> Arc<Self> {
        Arc::new(Self {
            entries: quick_cache::sync::Cache::new(config.max_entries.max(1)),
            generation: AtomicU64::new(0),
            trusted_until: AtomicU64::new(0),
            base: Instant::now(),
            config,
        })
    }

    pub(crate) fn sink(self: &Arc<Self>) -> InvalidationSink {
        InvalidationSink {
            state: Arc::clone(self),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.base))
    }

    fn now(&self) -> u64 {
        self.nanos(Instant::now())
    }

    fn window_nanos(&self) -> u64 {
        nanos(self.config.trust_window)
    }

    fn trusted_at(&self, now: u64) -> bool {
        now < self.trusted_until.load(Ordering::SeqCst)
    }

    pub(crate) fn lookup(&self, key_id: &KeyId) -> Lookup {
        let now = self.now();
        let ticket = Ticket {
            generation: self.generation.load(Ordering::SeqCst),
            started: now,
            trusted: self.trusted_at(now),
        };
        if !ticket.trusted {
            return Lookup::Miss(ticket);
        }
        match self.entries.get(key_id) {
            Some(entry) => {
                let ttl = match entry.record {
                    Some(_) => self.config.max_age,
                    None => self.config.negative_ttl,
                };
                if now.saturating_sub(entry.read_at) < nanos(ttl) {
                    match entry.record {
                        Some(record) => Lookup::Hit(record),
                        None => Lookup::Unknown,
                    }
                } else {
                    self.entries.remove_if(key_id, |e| e.read_at == entry.read_at);
                    Lookup::Miss(ticket)
                }
            }
            None => Lookup::Miss(ticket),
        }
    }

    /// Keeps what the store said, unless an invalidation came after the
    /// read began (generation changed) or the cache was not trusted then.
    pub(crate) fn fill(&self, key_id: KeyId, record: Option<Arc<KeyRecord>>, ticket: Ticket) {
        if !ticket.trusted || self.generation.load(Ordering::SeqCst) != ticket.generation {
            return;
        }
        let read_at = ticket.started;
        self.entries.insert(key_id, Entry { record, read_at });
        // An invalidation between the check above and the insert bumped the
        // generation before removing: take the entry back out ourselves.
        if self.generation.load(Ordering::SeqCst) != ticket.generation {
            self.entries.remove_if(&key_id, |e| e.read_at == read_at);
        }
    }

    pub(crate) fn invalidate(&self, key_id: &KeyId) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.remove(key_id);
    }

    fn reset(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HashVersion, KeyName, Scopes, SecretDigest, TeamId};

    fn record(id: KeyId) -> Arc<KeyRecord> {
        Arc::new(KeyRecord::new(
            id,
            TeamId::new("acme").unwrap(),
            KeyName::new("k").unwrap(),
            "p",
            SecretDigest::from_bytes([0; 32]),
            HashVersion::PrefixedSha256,
            Scopes::default(),
            time::OffsetDateTime::UNIX_EPOCH,
        ))
    }

    fn id(s: &str) -> KeyId {
        KeyId::parse(s).unwrap()
    }

    fn trusted() -> (Arc<CacheState>, InvalidationSink) {
        let state = CacheState::new(CacheConfig::default().trust_window(Duration::from_secs(60)));
        let sink = state.sink();
        sink.connected(Instant::now());
        (state, sink)
    }

    fn fill(state: &CacheState, key: KeyId) {
        let Lookup::Miss(ticket) = state.lookup(&key) else {
            panic!("expected a miss");
        };
        state.fill(key, Some(record(key)), ticket);
    }

    #[test]
    fn nothing_is_served_before_the_channel_vouches_for_it() {
        let state = CacheState::new(CacheConfig::default());
        let key = id("abcdefABCDEF");
        fill(&state, key);
        assert!(
            matches!(state.lookup(&key), Lookup::Miss(_)),
            "untrusted fills are dropped"
        );
        state.sink().connected(Instant::now());
        fill(&state, key);
        assert!(matches!(state.lookup(&key), Lookup::Hit(_)));
        state.sink().lost();
        assert!(matches!(state.lookup(&key), Lookup::Miss(_)));
        assert_eq!(state.len(), 0, "a lost channel flushes");
    }

    #[test]
    fn a_fill_that_began_before_an_invalidation_never_lands() {
        let (state, sink) = trusted();
        let key = id("abcdefABCDEF");
        let Lookup::Miss(ticket) = state.lookup(&key) else {
            panic!("expected a miss");
        };
        // The store read is done (old record in hand); now a revoke arrives.
        sink.invalidate(&key);
        state.fill(key, Some(record(key)), ticket);
        assert!(
            matches!(state.lookup(&key), Lookup::Miss(_)),
            "the stale record was put back"
        );
    }

    #[test]
    fn trust_lapses_without_confirmations() {
        let state = CacheState::new(CacheConfig::default().trust_window(Duration::from_millis(30)));
        let sink = state.sink();
        sink.connected(Instant::now());
        let key = id("abcdefABCDEF");
        fill(&state, key);
        assert!(matches!(state.lookup(&key), Lookup::Hit(_)));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!sink.is_trusted());
        assert!(matches!(state.lookup(&key), Lookup::Miss(_)));
        sink.confirmed(Instant::now());
        assert!(
            matches!(state.lookup(&key), Lookup::Hit(_)),
            "a confirmation restores trust"
        );
    }

    #[test]
    fn entries_age_out_and_unknown_ids_are_remembered_briefly() {
        let state = CacheState::new(
            CacheConfig::default()
                .trust_window(Duration::from_secs(60))
                .max_age(Duration::from_millis(20))
                .negative_ttl(Duration::from_millis(20)),
        );
        state.sink().connected(Instant::now());
        let (known, unknown) = (id("abcdefABCDEF"), id("ZZZZZZZZZZZZ"));
        fill(&state, known);
        let Lookup::Miss(ticket) = state.lookup(&unknown) else {
            panic!("expected a miss");
        };
        state.fill(unknown, None, ticket);
        assert!(matches!(state.lookup(&known), Lookup::Hit(_)));
        assert!(matches!(state.lookup(&unknown), Lookup::Unknown));
        std::thread::sleep(Duration::from_millis(30));
        assert!(matches!(state.lookup(&known), Lookup::Miss(_)));
        assert!(matches!(state.lookup(&unknown), Lookup::Miss(_)));
    }

    #[test]
    fn memory_is_bounded() {
        let state = CacheState::new(
            CacheConfig::default()
                .max_entries(100)
                .trust_window(Duration::from_secs(60)),
        );
        state.sink().connected(Instant::now());
        for i in 0..10_000u32 {
            let key = id(&format!("k{i:011}"));
            fill(&state, key);
        }
        assert!(state.len() <= 110, "{} entries", state.len());
    }
}
