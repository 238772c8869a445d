//! `KeyManager`: the key lifecycle (create, list, revoke, rotate) and
//! verification, over any [`KeyStore`].

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use crate::answer::Answer;
use crate::built_in::as_built_in;
use crate::cache::{CacheConfig, CacheState, InvalidationSink, InvalidationSource, Lookup, Ticket};
use crate::clock::{Clock, Deadline, SystemClock, stored_precision, unix_micros};
use crate::eager::Eager;
use crate::error::{ManageError, StoreError, ValidationError, VerifyError};
use crate::events::{EventKind, EventQuery, EventSink, KeyEvent, Origin};
use crate::format::{ApiKey, KeyFormat, ParsedKey};
use crate::hash::{Hasher, Pepper};
use crate::ident::{KeyId, KeyName, Scopes, TeamId};
use crate::last_used::LastUsed;
use crate::page::{Cursor, ExpiringQuery, ListQuery, Page, PageRequest};
use crate::policy::{DEFAULT_POLICY_TTL, PolicyCache, TeamPolicy, TeamRules};
use crate::presented::HeaderRules;
use crate::rate_limit::{LimiterFailure, LocalRateLimiter, RateLimit, RateLimitHeaders, RateLimiter};
use crate::record::{KeyInfo, KeyRecord, KeyUse, Principal, RotateOutcome, Rotation};
use crate::refusal_log::RefusalLog;
use crate::store::KeyStore;

/// How often last-used times are written by default.
pub const DEFAULT_LAST_USED_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// The furthest expiry a new key may have by default: 10 years (3,650 days).
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::days(3_650);
/// The longest grace period a rotation may give the old key by default: 7 days.
pub const DEFAULT_MAX_GRACE: Duration = Duration::days(7);
/// The most active keys one team may have by default.
pub const DEFAULT_MAX_ACTIVE_KEYS: usize = 100;

/// A fresh key id collides with an existing one with odds of about one in
/// 2^71; a few tries turn "practically never" into "never".
const ID_ATTEMPTS: usize = 3;

/// Options for [`KeyManager::create`]: scopes and an expiry.
///
/// ```
/// use teamkey_core::{CreateOptions, Scopes};
/// use time::Duration;
///
/// let options = CreateOptions::new()
///     .scopes(Scopes::new(["scans:read"]).unwrap())
///     .expires_in(Duration::days(90));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CreateOptions {
    /// The key's permissions.
    pub scopes: Scopes,
    /// When the key stops working; `None` for never. Must be in the future.
    pub expires_at: Option<OffsetDateTime>,
    /// Or: how long from now the key works. Not both.
    pub expires_in: Option<Duration>,
    /// The key's own rate limit; `None`: the team's or manager's default.
    pub rate_limit: Option<RateLimit>,
}

impl CreateOptions {
    /// No scopes, no expiry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key's permissions.
    #[must_use]
    pub fn scopes(mut self, scopes: Scopes) -> Self {
        self.scopes = scopes;
        self
    }

    /// The instant the key stops working (any offset; kept in UTC).
    #[must_use]
    pub fn expires_at(mut self, at: OffsetDateTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// How long from now the key works.
    #[must_use]
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_in = Some(lifetime);
        self
    }

    /// The key's own rate limit.
    #[must_use]
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }
}

/// A key just made: the full key, to show once, and its table row.
#[derive(Debug)]
pub struct NewKey {
    /// The full key. Show it to the user now; it cannot be recovered later.
    pub key: ApiKey,
    /// What the key table shows of it.
    pub info: KeyInfo,
}

/// How far a verification got without waiting.
enum Progress<'a> {
    /// The record was at hand and checked.
    Checked(Checked<'a>),
    /// The store must be asked for the record (the cache's ticket for
    /// keeping its answer).
    Fetch {
        parsed: ParsedKey<'a>,
        ticket: Option<Ticket>,
    },
}

/// A key checked against its record.
enum Checked<'a> {
    Done(Result<Principal, VerifyError>),
    /// Valid at `now`, but the team's rules must be asked of `policy`.
    NeedRules {
        record: Arc<KeyRecord>,
        now: i64,
        policy: &'a PolicyCache,
    },
}

/// Where a verification finds the record.
enum AtHand {
    /// Found without asking the store (`None`: known not to exist).
    Found(Option<Arc<KeyRecord>>),
    /// The store must be asked; the cache's ticket for keeping its answer.
    Fetch(Option<Ticket>),
}

/// Creates, lists, revokes, rotates and verifies keys.
///
/// Cheap to clone (one `Arc`): share it across tasks and handlers.
#[derive(Clone)]
pub struct KeyManager {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn KeyStore>,
    /// The store again, when it is a `MemoryStore`: read without a future.
    #[cfg(feature = "memory")]
    memory: Option<Arc<crate::MemoryStore>>,
    format: KeyFormat,
    hasher: Hasher,
    clock: Arc<dyn Clock>,
    last_used: LastUsed,
    limits: Limits,
    refusals: RefusalLog,
    cache: Option<Cache>,
    policy: Option<PolicyCache>,
    limiting: Limiting,
    sink: Option<Arc<dyn EventSink>>,
    record_client_ips: bool,
    /// Keys whose `key.expired` event this process already recorded (or is
    /// recording): one store write per expired key, not one per request.
    expired_seen: quick_cache::sync::Cache<KeyId, ()>,
    /// Keys (and hours) whose `key.rate_limited` this process recorded.
    limited_seen: quick_cache::sync::Cache<(KeyId, i64), ()>,
    /// Creations (and rotations that keep the old key alive) of one team
    /// take turns here, so that the count of active keys they check is
    /// the count they write against (within this process).
    team_locks: [tokio::sync::Mutex<()>; TEAM_LOCKS],
}

/// Stripes of team locks: teams share a stripe by hash, which only ever
/// makes two creations wait for each other, never lets them race.
const TEAM_LOCKS: usize = 64;

/// The verification cache and the task that keeps it honest.
struct Cache {
    state: Arc<CacheState>,
    source: Arc<dyn InvalidationSource>,
    /// The task running `source`, once started (on the first verification
    /// inside a Tokio runtime); aborted when the manager goes.
    task: std::sync::Mutex<FeedTask>,
    /// The id of the feed task alive now, 0 when none. Its own future
    /// clears it when dropped (its runtime shut down), so that the next
    /// verification inside a runtime starts the feed again.
    running: Arc<std::sync::atomic::AtomicU64>,
}

/// The newest feed task, and how many were started (its id).
#[derive(Default)]
struct FeedTask {
    handle: Option<tokio::task::AbortHandle>,
    started: u64,
}

/// Marks feed task `id` as gone when its future is dropped.
struct FeedRunning {
    running: Arc<std::sync::atomic::AtomicU64>,
    id: u64,
}

impl Drop for FeedRunning {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        // Only its own mark: an older task dropped after a newer one
        // started must not send the next verification to restart it, and
        // that restart's abort to clear the mark again, and so on.
        let _ = self
            .running
            .compare_exchange(self.id, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// A key marked "key.expired recorded" whose event is not recorded yet:
/// unmarked when dropped so, for the next refusal to try again.
struct Unrecorded {
    manager: KeyManager,
    key_id: KeyId,
    recorded: bool,
}

impl Unrecorded {
    /// Recorded: the mark stays.
    fn keep(&mut self) {
        self.recorded = true;
    }
}

impl Drop for Unrecorded {
    fn drop(&mut self) {
        if !self.recorded {
            self.manager.inner.expired_seen.remove(&self.key_id);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(cache) = &self.cache {
            let task = cache
                .task
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(handle) = &task.handle {
                handle.abort();
            }
        }
    }
}

/// Runs the invalidation source for ever: after each failure the cache is
/// distrusted and flushed, and the source restarted after a short pause.
async fn supervise(source: Arc<dyn InvalidationSource>, sink: InvalidationSink) {
    const MIN_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
    const MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);
    let mut pause = MIN_PAUSE;
    loop {
        let started = std::time::Instant::now();
        let error = source.run(sink.clone()).await;
        sink.lost();
        tracing::warn!(
            error = %error,
            cause = std::error::Error::source(&error).map(tracing::field::display),
            "teamkey cache: invalidation channel lost; verifying against the store until it is back"
        );
        // A channel that held for a while gets retried at once.
        if started.elapsed() > std::time::Duration::from_secs(10) {
            pause = MIN_PAUSE;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// The manager's bounds on what management calls may ask for.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_lifetime: Duration,
    max_grace: Duration,
    max_active_keys: usize,
}

impl fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyManager")
            .field("format", &self.inner.format)
            .field("hasher", &self.inner.hasher)
            .field("clock", &self.inner.clock)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// Configures a [`KeyManager`].
#[must_use]
pub struct KeyManagerBuilder {
    store: Arc<dyn KeyStore>,
    #[cfg(feature = "memory")]
    memory: Option<Arc<crate::MemoryStore>>,
    format: KeyFormat,
    pepper: Option<Pepper>,
    clock: Arc<dyn Clock>,
    last_used_interval: std::time::Duration,
    limits: Limits,
    pepper_required: bool,
    cache: Option<(Arc<dyn InvalidationSource>, CacheConfig)>,
    policy: Option<(Arc<dyn TeamPolicy>, std::time::Duration)>,
    limiting: Limiting,
    sink: Option<Arc<dyn EventSink>>,
    record_client_ips: bool,
}

impl KeyManagerBuilder {
    /// Caches verifications in memory, kept honest by `source`: the store's
    /// feed of every writer's changes (for example
    /// `SqlxStore::invalidations()`). A cache hit costs no store call; a
    /// revocation by this manager is refused at once, one by any other
    /// writer within a second; if the feed is lost, the cache is bypassed
    /// until it is back. See docs/caching.md.
    ///
    /// Needs a Tokio runtime: the feed runs on a task started by the first
    /// verification.
    pub fn cache(self, source: impl InvalidationSource) -> Self {
        self.cache_with(source, CacheConfig::default())
    }

    /// [`cache`](Self::cache) with other bounds than the defaults.
    pub fn cache_with(mut self, source: impl InvalidationSource, config: CacheConfig) -> Self {
        self.cache = Some((Arc::new(source), config));
        self
    }

    /// The key format (prefix, secret length). Default: `tk_live`, 40.
    pub fn format(mut self, format: KeyFormat) -> Self {
        self.format = format;
        self
    }

    /// A server-side pepper: new keys are stored as HMAC-SHA-256 under it.
    /// Keys stored before keep verifying.
    pub fn pepper(mut self, pepper: Pepper) -> Self {
        self.pepper = Some(pepper);
        self
    }

    /// The clock. Default: [`SystemClock`]. A clock of your own must keep
    /// the contract in [`Clock`]'s "For implementors".
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How often last-used times are written. Default: 60 s.
    pub fn last_used_interval(mut self, interval: std::time::Duration) -> Self {
        self.last_used_interval = interval;
        self
    }

    /// The furthest expiry a new key may have, counted from its creation.
    /// Default: [`DEFAULT_MAX_LIFETIME`] (10 years). Keys without expiry
    /// stay allowed; this bounds explicit expiries.
    pub fn max_lifetime(mut self, max: Duration) -> Self {
        self.limits.max_lifetime = max;
        self
    }

    /// The longest grace period a rotation may give the old key. Default:
    /// [`DEFAULT_MAX_GRACE`] (7 days).
    pub fn max_grace(mut self, max: Duration) -> Self {
        self.limits.max_grace = max;
        self
    }

    /// The most active (unrevoked, unexpired) keys a team may have; past
    /// it, creation is refused. Default: [`DEFAULT_MAX_ACTIVE_KEYS`].
    /// Checked and written under one lock per team, so concurrent creations
    /// through one manager cannot pass it; managers in other processes may
    /// pass it by the number of creations racing at that instant. A
    /// rotation with a grace period keeps the old key alive beside the
    /// successor, so it needs room too; one without grace does not.
    pub fn max_active_keys(mut self, max: usize) -> Self {
        self.limits.max_active_keys = max;
        self
    }

    /// Asks `policy` what each team may do: API access (on verification
    /// and creation), grantable scopes, key count and required expiry. See
    /// [`TeamPolicy`]. Default: every team may do everything within the
    /// manager's limits.
    pub fn policy(mut self, policy: impl TeamPolicy) -> Self {
        let ttl = self.policy.as_ref().map_or(DEFAULT_POLICY_TTL, |(_, ttl)| *ttl);
        self.policy = Some((Arc::new(policy), ttl));
        self
    }

    /// How long a team's policy answer is kept for verifications: a plan
    /// change reaches every verification within it (management calls ask
    /// anew every time). Default: [`DEFAULT_POLICY_TTL`] (30 s).
    pub fn policy_ttl(mut self, ttl: std::time::Duration) -> Self {
        if let Some((_, kept)) = &mut self.policy {
            *kept = ttl;
        } else {
            self.policy = Some((Arc::new(AllowAll), ttl));
        }
        self
    }

    /// Counts requests against rate limits with `limiter`
    /// ([`LocalRateLimiter`](crate::LocalRateLimiter) in process, or a
    /// shared one). Limits come from each key, else its team's rules, else
    /// [`default_rate_limit`](Self::default_rate_limit); a key with none is
    /// not limited. Adapters check right after verification
    /// ([`KeyManager::admit`]).
    pub fn rate_limiter(mut self, limiter: impl RateLimiter) -> Self {
        let limiter = Arc::new(limiter);
        self.limiting.local = as_built_in(&limiter);
        self.limiting.limiter = Some(limiter);
        self
    }

    /// The limit of keys that have none of their own and whose team's
    /// rules name none. Default: none.
    pub fn default_rate_limit(mut self, limit: RateLimit) -> Self {
        self.limiting.default = Some(limit);
        self
    }

    /// What a failing limiter means: [`LimiterFailure::Open`] (the default:
    /// let through, logged at `warn`) or [`LimiterFailure::Closed`] (`503`).
    pub fn on_limiter_failure(mut self, mode: LimiterFailure) -> Self {
        self.limiting.on_failure = mode;
        self
    }

    /// Hands every event to `sink` too, after its change (see [`EventSink`]).
    pub fn event_sink(mut self, sink: impl EventSink) -> Self {
        self.sink = Some(Arc::new(sink));
        self
    }

    /// Records the client address of each key's last use beside its time
    /// (when the adapter knows it: [`verify_from`](KeyManager::verify_from)).
    /// Off by default: an IP address is personal data in some
    /// jurisdictions; turn it on only where you may keep it.
    pub fn record_client_ips(mut self, record: bool) -> Self {
        self.record_client_ips = record;
        self
    }

    /// Refuse to build without a [`pepper`](Self::pepper): for services
    /// whose keys must be peppered, so that a missing secret stops the
    /// start-up instead of silently making unpeppered keys.
    pub fn require_pepper(mut self) -> Self {
        self.pepper_required = true;
        self
    }

    /// The manager, or [`ValidationError::PepperRequired`] when
    /// [`require_pepper`](Self::require_pepper) was set without a pepper.
    pub fn try_build(self) -> Result<KeyManager, ValidationError> {
        if self.pepper_required && self.pepper.is_none() {
            return Err(ValidationError::PepperRequired);
        }
        let interval = i64::try_from(self.last_used_interval.as_micros()).unwrap_or(i64::MAX);
        let now = self.clock.unix_micros();
        let manager = KeyManager {
            inner: Arc::new(Inner {
                store: self.store,
                #[cfg(feature = "memory")]
                memory: self.memory,
                format: self.format,
                hasher: Hasher::new(self.pepper.as_ref()),
                clock: self.clock,
                last_used: LastUsed::new(interval, now),
                limits: self.limits,
                refusals: RefusalLog::default(),
                team_locks: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
                policy: self.policy.map(|(policy, ttl)| PolicyCache::new(policy, ttl)),
                limiting: self.limiting,
                sink: self.sink,
                record_client_ips: self.record_client_ips,
                expired_seen: quick_cache::sync::Cache::new(EXPIRED_SEEN),
                limited_seen: quick_cache::sync::Cache::new(EXPIRED_SEEN),
                cache: self.cache.map(|(source, config)| Cache {
                    state: CacheState::new(config),
                    source,
                    task: std::sync::Mutex::default(),
                    running: Arc::default(),
                }),
            }),
        };
        // Start the cache's feed now if there is a runtime; else on the
        // first verification.
        if let Some(cache) = &manager.inner.cache {
            manager.start_cache(cache);
        }
        Ok(manager)
    }

    /// The manager.
    ///
    /// # Panics
    /// If [`require_pepper`](Self::require_pepper) was set and no pepper
    /// given: a service that requires one must not start without it. Use
    /// [`try_build`](Self::try_build) to handle that as an error.
    pub fn build(self) -> KeyManager {
        match self.try_build() {
            Ok(manager) => manager,
            Err(e) => panic!("teamkey: {e}"),
        }
    }
}

impl KeyManager {
    /// A manager with default settings over `store`.
    pub fn new(store: impl KeyStore) -> Self {
        Self::builder(store).build()
    }

    /// A builder over `store`.
    pub fn builder(store: impl KeyStore) -> KeyManagerBuilder {
        let store = Arc::new(store);
        KeyManagerBuilder {
            #[cfg(feature = "memory")]
            memory: as_built_in(&store),
            store,
            format: KeyFormat::default(),
            pepper: None,
            clock: Arc::new(SystemClock),
            last_used_interval: DEFAULT_LAST_USED_INTERVAL,
            limits: Limits {
                max_lifetime: DEFAULT_MAX_LIFETIME,
                max_grace: DEFAULT_MAX_GRACE,
                max_active_keys: DEFAULT_MAX_ACTIVE_KEYS,
            },
            pepper_required: false,
            cache: None,
            policy: None,
            limiting: Limiting::default(),
            sink: None,
            record_client_ips: false,
        }
    }

    /// The key format in use.
    pub fn format(&self) -> &KeyFormat {
        &self.inner.format
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.inner.store
    }

    /// The lock creations of `team_id` take turns under.
    fn team_lock(&self, team_id: &TeamId) -> &tokio::sync::Mutex<()> {
        use std::hash::BuildHasher;
        let hash = foldhash::fast::FixedState::with_seed(0).hash_one(team_id);
        let stripe = usize::try_from(hash % TEAM_LOCKS as u64).unwrap_or(0);
        &self.inner.team_locks[stripe]
    }

    /// Refuses when `team_id` already has the most active keys allowed
    /// (by the manager, and by the team's rules).
    async fn check_room(
        &self,
        team_id: &TeamId,
        rules: &TeamRules,
        now: OffsetDateTime,
    ) -> Result<(), ManageError> {
        let max = rules
            .max_active_keys
            .map_or(self.inner.limits.max_active_keys, |m| {
                m.min(self.inner.limits.max_active_keys)
            });
        if self.inner.store.count_active(team_id, now).await? >= max {
            return Err(ManageError::TooManyKeys { max });
        }
        Ok(())
    }

    /// Now, as stored.
    fn now(&self) -> OffsetDateTime {
        stored_precision(self.inner.clock.now())
    }

    /// The expiry `options` ask for, in UTC, checked against now and the
    /// furthest expiry allowed. Nothing here can overflow or panic.
    fn expiry(
        &self,
        options: &CreateOptions,
        now: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, ValidationError> {
        let max_days = self.inner.limits.max_lifetime.whole_days();
        let too_far = ValidationError::ExpiryTooFar { max_days };
        let at = match (options.expires_at, options.expires_in) {
            (Some(_), Some(_)) => return Err(ValidationError::ExpiryTwice),
            (None, None) => return Ok(None),
            (Some(at), None) => at
                .checked_to_offset(time::UtcOffset::UTC)
                .ok_or(too_far.clone())?,
            (None, Some(lifetime)) => now.checked_add(lifetime).ok_or(too_far.clone())?,
        };
        let at = stored_precision(at);
        if at <= now {
            return Err(ValidationError::ExpiryNotInFuture);
        }
        match now.checked_add(self.inner.limits.max_lifetime) {
            Some(limit) if at > limit => Err(too_far),
            _ => Ok(Some(at)),
        }
    }

    /// Creates a key for `team_id`. The returned [`NewKey::key`] is the only
    /// copy of the full key there will ever be.
    ///
    /// The name is trimmed and must be 1 to 100 characters without control
    /// characters; an expiry must be in the future and within the maximum
    /// lifetime; the team must have fewer than the maximum of active keys
    /// (checked and written under one lock per team, so concurrent
    /// creations in this process cannot pass it; across processes they
    /// may, by their number).
    /// This call acts with the operator's full authority: check a limited
    /// caller first with [`Authority::check_grant`](crate::Authority::check_grant),
    /// as the [`management`](crate::management) API does.
    ///
    /// The `key.created` event names [`Actor::System`](crate::events::Actor::System);
    /// name the actor with [`on_behalf_of`](Self::on_behalf_of).
    pub async fn create(
        &self,
        team_id: &TeamId,
        name: &str,
        options: CreateOptions,
    ) -> Result<NewKey, ManageError> {
        self.create_as(&Origin::system(), team_id, name, options).await
    }

    async fn create_as(
        &self,
        origin: &Origin,
        team_id: &TeamId,
        name: &str,
        options: CreateOptions,
    ) -> Result<NewKey, ManageError> {
        let name = KeyName::new(name)?;
        let now = self.now();
        let expires_at = self.expiry(&options, now)?;
        let rules = self.rules_for_change(team_id).await?;
        check_plan(&rules, &options, expires_at, now)?;
        let _turn = self.team_lock(team_id).lock().await;
        self.check_room(team_id, &rules, now).await?;
        for _ in 0..ID_ATTEMPTS {
            let (key, record) = self.mint(
                team_id,
                &name,
                &options.scopes,
                expires_at,
                options.rate_limit,
                now,
            )?;
            let event = KeyEvent::new(EventKind::Created, now, &record, origin);
            let inserted = self.inner.store.insert(&record, &event).await;
            // An unknown id may be cached as unknown; it is known now.
            self.forget(&record.id);
            match inserted {
                Ok(()) => {
                    tracing::info!(key_id = %record.id, team_id = %team_id, actor = ?origin.actor, "API key created");
                    self.announce(event);
                    return Ok(NewKey {
                        key,
                        info: record.info(),
                    });
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// The team's rules as a change must obey them: asked anew (no TTL),
    /// so that a plan change applies to the very next change.
    async fn rules_for_change(&self, team_id: &TeamId) -> Result<Arc<TeamRules>, ManageError> {
        match &self.inner.policy {
            None => Ok(Arc::new(TeamRules::allow_all())),
            Some(policy) => policy.fresh_rules(team_id).await.map_err(ManageError::Policy),
        }
    }

    /// Hands a recorded event to the app's sink, if any.
    fn announce(&self, event: KeyEvent) {
        if let Some(sink) = &self.inner.sink {
            crate::events::dispatch(sink, event);
        }
    }

    /// The expiry a key made now with `options` would get, checked as
    /// [`create`](Self::create) checks it: for a caller's authority check
    /// before creating.
    pub fn resolve_expiry(&self, options: &CreateOptions) -> Result<Option<OffsetDateTime>, ValidationError> {
        self.expiry(options, self.now())
    }

    /// A new key and its record; nothing stored yet.
    fn mint(
        &self,
        team_id: &TeamId,
        name: &KeyName,
        scopes: &Scopes,
        expires_at: Option<OffsetDateTime>,
        rate_limit: Option<RateLimit>,
        now: OffsetDateTime,
    ) -> Result<(ApiKey, KeyRecord), ManageError> {
        let format = &self.inner.format;
        let key = format.generate()?;
        let (version, digest) = self.inner.hasher.digest_new(format.prefix(), key.secret());
        let mut record = KeyRecord::new(
            key.id(),
            team_id.clone(),
            name.clone(),
            key.preview(),
            digest,
            version,
            scopes.clone(),
            now,
        );
        record.expires_at = expires_at;
        record.rate_limit = rate_limit;
        Ok((key, record))
    }

    /// The team's active keys, newest first. Never another team's. Reads
    /// the whole table: prefer [`list_page`](Self::list_page) where a team
    /// may have many keys.
    pub async fn list(&self, team_id: &TeamId) -> Result<Vec<KeyInfo>, ManageError> {
        let now = self.now();
        let mut records = self.inner.store.list(team_id).await?;
        records.retain(|r| &r.team_id == team_id && r.is_active(now));
        records.sort_by(crate::page::newest_first);
        Ok(records.iter().map(KeyRecord::info).collect())
    }

    /// One page of the team's active keys, newest first. Never another
    /// team's.
    pub async fn list_page(&self, team_id: &TeamId, page: PageRequest) -> Result<Page, ManageError> {
        let query = ListQuery::new(self.now(), page.cursor(), page.limit() + 1);
        let mut records = self.inner.store.list_active(team_id, &query).await?;
        // A store that answers more than asked cannot leak or stretch a page.
        records.retain(|r| query.matches(team_id, r));
        records.sort_by(crate::page::newest_first);
        let more = records.len() > page.limit();
        records.truncate(page.limit());
        let next = if more {
            records.last().map(Cursor::after)
        } else {
            None
        };
        Ok(Page {
            keys: records.iter().map(KeyRecord::info).collect(),
            next,
        })
    }

    /// The team's active key with this id, if any.
    pub async fn find(&self, team_id: &TeamId, key_id: &KeyId) -> Result<Option<KeyInfo>, ManageError> {
        let now = self.now();
        let record = self.inner.store.get(key_id).await?;
        Ok(record
            .filter(|r| &r.id == key_id && &r.team_id == team_id && r.is_active(now))
            .map(|r| r.info()))
    }

    /// Revokes a key of `team_id`: it fails verification from the very next
    /// call. A key of another team, an unknown or an already revoked key is
    /// [`ManageError::NotFound`] and nothing changes.
    ///
    /// The `key.revoked` event names [`Actor::System`](crate::events::Actor::System);
    /// name the actor with [`on_behalf_of`](Self::on_behalf_of).
    pub async fn revoke(&self, team_id: &TeamId, key_id: &KeyId) -> Result<(), ManageError> {
        self.revoke_as(&Origin::system(), team_id, key_id).await
    }

    async fn revoke_as(&self, origin: &Origin, team_id: &TeamId, key_id: &KeyId) -> Result<(), ManageError> {
        let now = self.now();
        // The event names the key as the table showed it; revoked keys
        // (and other teams' keys) are not found, expired ones still are.
        let record = self
            .inner
            .store
            .get(key_id)
            .await?
            .filter(|r| &r.id == key_id && &r.team_id == team_id && r.revoked_at.is_none())
            .ok_or(ManageError::NotFound)?;
        let event = KeyEvent::new(EventKind::Revoked, now, &record, origin);
        let revoked = self.inner.store.revoke(&event).await;
        // Whatever the outcome: the next verification reads the store.
        self.forget(key_id);
        if revoked? {
            tracing::info!(key_id = %key_id, team_id = %team_id, actor = ?origin.actor, "API key revoked");
            self.announce(event);
            Ok(())
        } else {
            Err(ManageError::NotFound)
        }
    }

    /// Rotates a key: makes a successor with the same name, scopes and
    /// expiry (rotation renews the secret, never the lifetime); the old key
    /// keeps working until now + `grace` (at most the manager's maximum
    /// grace), then stops. A zero grace retires it at once. Of concurrent
    /// rotations of one key exactly one succeeds; the others get
    /// [`ManageError::AlreadyRotated`].
    ///
    /// The `key.rotated` event names [`Actor::System`](crate::events::Actor::System);
    /// name the actor with [`on_behalf_of`](Self::on_behalf_of).
    pub async fn rotate(
        &self,
        team_id: &TeamId,
        key_id: &KeyId,
        grace: Duration,
    ) -> Result<NewKey, ManageError> {
        self.rotate_as(&Origin::system(), team_id, key_id, grace).await
    }

    async fn rotate_as(
        &self,
        origin: &Origin,
        team_id: &TeamId,
        key_id: &KeyId,
        grace: Duration,
    ) -> Result<NewKey, ManageError> {
        if grace.is_negative() {
            return Err(ValidationError::NegativeGrace.into());
        }
        let max_grace = self.inner.limits.max_grace;
        if grace > max_grace {
            return Err(ValidationError::GraceTooLong {
                max_seconds: max_grace.whole_seconds(),
            }
            .into());
        }
        let now = self.now();
        let old = self
            .inner
            .store
            .get(key_id)
            .await?
            .filter(|r| &r.id == key_id && &r.team_id == team_id && r.is_active(now))
            .ok_or(ManageError::NotFound)?;
        if old.replaced_by.is_some() {
            return Err(ManageError::AlreadyRotated);
        }
        // The successor keeps the old key's scopes and lifetime, so only
        // the plan's API access and key count are asked again: a plan
        // narrowed since must not stop the rotation of a leaked key.
        let rules = self.rules_for_change(team_id).await?;
        if !rules.api_access {
            return Err(ManageError::NoApiAccess);
        }
        // With a grace period the old key stays active beside its
        // successor: that is one more active key, and counts as a creation.
        let _turn = if grace.is_positive() {
            let turn = self.team_lock(team_id).lock().await;
            self.check_room(team_id, &rules, now).await?;
            Some(turn)
        } else {
            None
        };
        // Bounded by the maximum grace, so this cannot overflow in practice;
        // saturating keeps it panic-free regardless.
        let retire_at = now.saturating_add(grace);
        for _ in 0..ID_ATTEMPTS {
            // The successor keeps the old key's scopes, expiry and limit.
            let (key, mut successor) = self.mint(
                team_id,
                &old.name,
                &old.scopes,
                old.expires_at,
                old.rate_limit,
                now,
            )?;
            successor.rotated_from = Some(old.id);
            let mut event = KeyEvent::new(EventKind::Rotated, now, &old, origin);
            event.successor_id = Some(successor.id);
            let rotation = Rotation::new(team_id.clone(), old.id, retire_at, successor, event);
            let outcome = self.inner.store.rotate(&rotation).await;
            self.forget(&old.id);
            self.forget(&rotation.successor.id);
            match outcome {
                Ok(RotateOutcome::Rotated) => {
                    tracing::info!(key_id = %old.id, successor = %key.id(), team_id = %team_id, actor = ?origin.actor, "API key rotated");
                    self.carry_over_quota(&old.id, &rotation.successor.id).await;
                    self.announce(rotation.event.clone());
                    return Ok(NewKey {
                        key,
                        info: rotation.successor.info(),
                    });
                }
                Ok(RotateOutcome::NotFound) => return Err(ManageError::NotFound),
                Ok(RotateOutcome::AlreadyRotated) => return Err(ManageError::AlreadyRotated),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// Hands what is left of a rotated key's quota to its successor, so
    /// that rotating a key (with no grace, over and over) gives no whole
    /// new quota. A limiter that fails is logged: the rotation stands.
    async fn carry_over_quota(&self, rotated: &KeyId, successor: &KeyId) {
        let Some(limiter) = &self.inner.limiting.limiter else {
            return;
        };
        if let Err(error) = limiter.carry_over(rotated, successor).await {
            tracing::warn!(key_id = %rotated, successor = %successor, error = %error, "teamkey: a rotated key's quota was not carried over; its successor starts whole");
        }
    }

    /// Whether verification keeps the client's IP as the key's last-used
    /// IP ([`KeyManagerBuilder::record_client_ips`]): adapters skip looking
    /// the address up when not.
    pub fn records_client_ips(&self) -> bool {
        self.inner.record_client_ips
    }

    /// Verifies a presented key and says who the caller is.
    ///
    /// Malformed input is refused without touching the store; a well-formed
    /// key costs one SHA-256, compared in constant time (none when the same
    /// bytes verified before: the manager remembers them by a keyed tag),
    /// and one store lookup unless its record is in memory (a `MemoryStore`, or the
    /// [verification cache](KeyManagerBuilder::cache)). The reason of a
    /// failure is logged (with the key id, never the key) and kept in the
    /// error; clients should only see [`VerifyError::rejection`].
    ///
    /// The work starts at the call, and ends there when the record and the
    /// team's rules are in memory: the key is checked and its use recorded
    /// then, and the returned [`Eager`] holds the answer from that moment
    /// (a revocation between the call and the `.await` is not seen; verify
    /// again for a fresh answer). Otherwise the store lookup runs when the
    /// future is awaited, and a dropped future does nothing more.
    pub fn verify<'a>(&'a self, presented: &'a str) -> Eager<'a, Result<Principal, VerifyError>> {
        self.verify_from(presented, None)
    }

    /// [`verify`](Self::verify), from a client at `client_ip`: the address
    /// is kept as the key's last-used IP when the manager
    /// [records client IPs](KeyManagerBuilder::record_client_ips).
    pub fn verify_from<'a>(
        &'a self,
        presented: &'a str,
        client_ip: Option<IpAddr>,
    ) -> Eager<'a, Result<Principal, VerifyError>> {
        self.verify_bytes(presented.as_bytes(), client_ip)
    }

    /// Reads the key from a request's header values by `rules`, then
    /// [`verify`](Self::verify)s it: what adapters call, so that every
    /// adapter treats headers the same way.
    pub fn verify_headers<'a, 'h: 'a>(
        &'a self,
        rules: &HeaderRules,
        key_header: impl IntoIterator<Item = &'h [u8]>,
        authorization: impl IntoIterator<Item = &'h [u8]>,
    ) -> Eager<'a, Result<Principal, VerifyError>> {
        self.verify_headers_from(rules, key_header, authorization, None)
    }

    /// [`verify_headers`](Self::verify_headers), from a client at
    /// `client_ip` (see [`verify_from`](Self::verify_from)).
    pub fn verify_headers_from<'a, 'h: 'a>(
        &'a self,
        rules: &HeaderRules,
        key_header: impl IntoIterator<Item = &'h [u8]>,
        authorization: impl IntoIterator<Item = &'h [u8]>,
        client_ip: Option<IpAddr>,
    ) -> Eager<'a, Result<Principal, VerifyError>> {
        match rules.presented_bytes(key_header, authorization) {
            Ok(presented) => self.verify_bytes(presented, client_ip),
            Err(problem) => Eager::ready(Err(VerifyError::Header(problem)).inspect_err(|e| self.refused(e))),
        }
    }

    /// Verifies `presented` at once when its record (and its team's rules)
    /// are at hand; else returns the rest of the work to await.
    fn verify_bytes<'a>(
        &'a self,
        presented: &'a [u8],
        client_ip: Option<IpAddr>,
    ) -> Eager<'a, Result<Principal, VerifyError>> {
        match self.check_now(presented, client_ip) {
            Progress::Checked(Checked::Done(result)) => Eager::ready(result.inspect_err(|e| self.refused(e))),
            progress => Eager::waiting(async move {
                self.check_later(progress, client_ip)
                    .await
                    .inspect_err(|e| self.refused(e))
            }),
        }
    }

    /// Logs a refusal, and records `key.expired` the first time an
    /// expired key is presented.
    fn refused(&self, error: &VerifyError) {
        self.inner.refusals.refused(error, self.inner.clock.unix_micros());
        if let VerifyError::Expired { key_id } = error {
            self.expired(*key_id);
        }
    }

    /// Records `key.expired` for `key_id`, once: once per process by a
    /// bounded set, once overall by the store's unique `once_key`. Off the
    /// request path.
    fn expired(&self, key_id: KeyId) {
        // Without a runtime (a future made outside `block_on`) nothing is
        // marked: a later refusal inside one records the event.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.expired_seen.get(&key_id).is_some() {
            return;
        }
        self.inner.expired_seen.insert(key_id, ());
        // Unless the event is recorded, the mark goes, and the next
        // refusal tries again: also when the task is dropped unrun, its
        // runtime shut down (the guard is in the future from the start).
        let mut unrecorded = Unrecorded {
            manager: self.clone(),
            key_id,
            recorded: false,
        };
        runtime.spawn(async move {
            match unrecorded.manager.record_expired(key_id).await {
                Ok(()) => unrecorded.keep(),
                Err(e) => {
                    tracing::warn!(key_id = %key_id, error = %e, "teamkey events: key.expired not recorded; will retry");
                }
            }
        });
    }

    async fn record_expired(&self, key_id: KeyId) -> Result<(), StoreError> {
        let Some(record) = self.inner.store.get(&key_id).await? else {
            return Ok(());
        };
        let now = self.now();
        // Revoked keys are `key.revoked`. A key rotated away whose grace
        // has ended counts as expired: its event tells the team that a
        // client still sends the old key.
        let expired_by_time = record.expires_at.is_some_and(|at| at <= now);
        if record.revoked_at.is_some() || !expired_by_time {
            return Ok(());
        }
        let event = KeyEvent::new(EventKind::Expired, now, &record, &Origin::system());
        if self.inner.store.append_event(&event).await? {
            self.announce(event);
        }
        Ok(())
    }

    /// As much of a verification as needs no waiting: all of it when the
    /// record is at hand (in a `MemoryStore` or the cache) and so are the
    /// team's rules.
    fn check_now<'a>(&'a self, presented: &'a [u8], client_ip: Option<IpAddr>) -> Progress<'a> {
        if let Some(cache) = &self.inner.cache {
            self.start_cache(cache);
        }
        let parsed = match self.inner.format.parse_bytes(presented) {
            Ok(parsed) => parsed,
            Err(malformed) => return Progress::Checked(Checked::Done(Err(malformed.into()))),
        };
        match self.record_at_hand(&parsed.key_id()) {
            AtHand::Found(record) => Progress::Checked(self.check_record(&parsed, record, client_ip)),
            AtHand::Fetch(ticket) => Progress::Fetch { parsed, ticket },
        }
    }

    /// The rest of a verification that [`check_now`](Self::check_now)
    /// could not finish: the store's lookup, the team's rules.
    async fn check_later(
        &self,
        progress: Progress<'_>,
        client_ip: Option<IpAddr>,
    ) -> Result<Principal, VerifyError> {
        let checked = match progress {
            Progress::Checked(checked) => checked,
            Progress::Fetch { parsed, ticket } => {
                let record = self.fetch(parsed.key_id(), ticket).await?;
                self.check_record(&parsed, record, client_ip)
            }
        };
        match checked {
            Checked::Done(result) => result,
            Checked::NeedRules { record, now, policy } => {
                let rules = policy.rules(&record.team_id).await.map_err(VerifyError::Policy)?;
                self.accept(record, Some(&rules), now, client_ip)
            }
        }
    }

    /// Checks the presented key against its record (`None`: no such key):
    /// secret, revocation, expiry; then the team's rules, if at hand.
    fn check_record<'a>(
        &'a self,
        parsed: &ParsedKey<'_>,
        record: Option<Arc<KeyRecord>>,
        client_ip: Option<IpAddr>,
    ) -> Checked<'a> {
        let key_id = parsed.key_id();
        let Some(record) = record else {
            return Checked::Done(Err(VerifyError::Unknown { key_id }));
        };
        let format = &self.inner.format;
        // Records from before the prefix was hashed are tied to it by their
        // preview, which begins with the prefix the key was issued under.
        let under_its_prefix =
            record.hash_version.binds_prefix() || issued_under(&record.preview, format.prefix());
        // A cheap reading, a tick late for last-used; exact for expiry,
        // as one near it is read again precisely (`Deadline`).
        let now = self.inner.clock.recent_unix_micros();
        let deadline = record.expires_at.map(|at| Deadline::of(unix_micros(at), now));
        // Only a key that surely passes may skip its hash: a refused key's
        // real secret must cost what a wrong one does, or timing would
        // tell a leaked, since revoked key from a made-up one behind the
        // same 401. A key near its expiry is hashed in full, and the
        // precise clock read only once its secret matched: a wrong secret
        // costs the same whatever the key's expiry.
        let surely_live = deadline.is_none_or(|d| d == Deadline::Ahead);
        let passes = under_its_prefix && record.revoked_at.is_none() && surely_live;
        let Some(matches) = self.inner.hasher.matches(
            record.hash_version,
            format.prefix(),
            parsed.secret(),
            &record.digest,
            passes,
        ) else {
            return Checked::Done(Err(VerifyError::PepperMissing { key_id }));
        };
        // Compared in constant time.
        if !matches || !under_its_prefix {
            return Checked::Done(Err(VerifyError::Mismatch { key_id }));
        }
        if record.revoked_at.is_some() {
            return Checked::Done(Err(VerifyError::Revoked { key_id }));
        }
        if deadline.is_some_and(|d| d.has_passed(&*self.inner.clock)) {
            return Checked::Done(Err(VerifyError::Expired { key_id }));
        }
        let rules = match &self.inner.policy {
            None => None,
            Some(policy) => match policy.cached(&record.team_id) {
                Some(rules) => Some(rules),
                None => return Checked::NeedRules { record, now, policy },
            },
        };
        Checked::Done(self.accept(record, rules.as_deref(), now, client_ip))
    }

    /// The caller of a key found valid at `now`, unless its team's `rules`
    /// deny API access; its use is recorded.
    fn accept(
        &self,
        record: Arc<KeyRecord>,
        rules: Option<&TeamRules>,
        now: i64,
        client_ip: Option<IpAddr>,
    ) -> Result<Principal, VerifyError> {
        let mut rate_limit = record.rate_limit;
        let mut granted = None;
        if let Some(rules) = rules {
            if !rules.api_access {
                return Err(VerifyError::NoApiAccess { key_id: record.id });
            }
            // The plan is asked on create, and again here: a key made
            // under a larger plan gets no more than the team's plan now.
            rate_limit = match (rate_limit, rules.rate_limit) {
                (Some(own), Some(plan)) => Some(own.bounded_by(plan)),
                (own, plan) => own.or(plan),
            };
            granted = rules
                .grantable_scopes
                .as_ref()
                .and_then(|grantable| record.scopes.within(grantable));
        }
        let rate_limit = rate_limit.or(self.inner.limiting.default);
        let client_ip = client_ip.filter(|_| self.inner.record_client_ips);
        // Never before the key was made (`now` may lag the clock that
        // stamped it); converted only when the use reaches the map.
        let made = || unix_micros(record.created_at);
        if self.inner.last_used.record(record.id, now, client_ip, made) {
            self.spawn_flush();
        }
        Ok(Principal::new(record, rate_limit, granted))
    }

    /// The record of `key_id` if it is at hand: in a `MemoryStore`, or in
    /// the cache when the cache may be trusted.
    fn record_at_hand(&self, key_id: &KeyId) -> AtHand {
        #[cfg(feature = "memory")]
        if let Some(memory) = &self.inner.memory {
            return AtHand::Found(memory.get_now(key_id));
        }
        let Some(cache) = &self.inner.cache else {
            return AtHand::Fetch(None);
        };
        match cache.state.lookup(key_id) {
            Lookup::Hit(record) => AtHand::Found(Some(record)),
            Lookup::Unknown => AtHand::Found(None),
            Lookup::Miss(ticket) => AtHand::Fetch(Some(ticket)),
        }
    }

    /// The record of `key_id` from the store, kept in the cache with the
    /// cache's `ticket`.
    async fn fetch(
        &self,
        key_id: KeyId,
        ticket: Option<Ticket>,
    ) -> Result<Option<Arc<KeyRecord>>, VerifyError> {
        let record = self.read(key_id).await?;
        if let (Some(cache), Some(ticket)) = (&self.inner.cache, ticket) {
            cache.state.fill(key_id, record.clone(), ticket);
        }
        Ok(record)
    }

    /// The record of `key_id`, from the store.
    async fn read(&self, key_id: KeyId) -> Result<Option<Arc<KeyRecord>>, VerifyError> {
        // Through `dyn KeyStore`, not the `Arc<S>` forwarding impl: one boxed
        // future per lookup instead of two.
        match (*self.inner.store).get(&key_id).await {
            Ok(record) => Ok(record.filter(|r| r.id == key_id)),
            Err(e) => Err(VerifyError::Store(e)),
        }
    }

    /// Starts the cache's invalidation feed, once, on the current runtime.
    fn start_cache(&self, cache: &Cache) {
        use std::sync::atomic::Ordering;
        if cache.running.load(Ordering::Relaxed) != 0 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut task = cache
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Another verification may have started it meanwhile.
        if cache.running.load(Ordering::Relaxed) != 0 {
            return;
        }
        // None yet, or the last one ended with its runtime (its mark is
        // cleared only once its future is dropped, so there is nothing
        // left to abort): without a new one the cache would never be
        // trusted again, and every verification would read the store.
        task.started += 1;
        let running = FeedRunning {
            running: Arc::clone(&cache.running),
            id: task.started,
        };
        cache.running.store(task.started, Ordering::Relaxed);
        let feed = supervise(Arc::clone(&cache.source), cache.state.sink());
        task.handle = Some(
            runtime
                .spawn(async move {
                    let _running = running;
                    feed.await;
                })
                .abort_handle(),
        );
    }

    /// Drops what the cache knows of `key_id`, after a write through this
    /// manager: its own changes are seen at once, without waiting for the feed.
    fn forget(&self, key_id: &KeyId) {
        if let Some(cache) = &self.inner.cache {
            cache.state.invalidate(key_id);
        }
    }

    /// Takes one request from the caller's rate limit, right after
    /// [`verify`](Self::verify): what adapters call before the handler.
    /// Costs no store call. A refused request is not counted; the first
    /// refusal of a key in each hour records a `key.rate_limited` event.
    ///
    /// Decided at the call when the limiter is in process: the request is
    /// counted then, even if the returned future is dropped, and the
    /// future holds the admission. A limiter that must be asked over the
    /// network (Redis) is asked when the future is awaited.
    pub fn admit<'a>(&'a self, principal: &'a Principal) -> Eager<'a, Admission> {
        let Some(limit) = principal.rate_limit() else {
            return Eager::ready(Admission::Unlimited);
        };
        let Some(limiter) = &self.inner.limiting.limiter else {
            self.unlimited_by_setup();
            return Eager::ready(Admission::Unlimited);
        };
        match &self.inner.limiting.local {
            Some(local) => {
                Eager::ready(self.admission(principal, limit, Ok(local.decide(&principal.key_id(), limit))))
            }
            None => Eager::waiting(async move {
                let decision = limiter.check(&principal.key_id(), limit).await;
                self.admission(principal, limit, decision)
            }),
        }
    }

    /// What the limiter's `decision` means for the caller.
    fn admission(
        &self,
        principal: &Principal,
        limit: RateLimit,
        decision: Result<crate::rate_limit::RateDecision, crate::rate_limit::RateLimitError>,
    ) -> Admission {
        match decision {
            Ok(decision) if decision.allowed => Admission::Allowed(RateLimitHeaders::new(limit, &decision)),
            Ok(decision) => {
                self.rate_limited(principal);
                Admission::Refused(Answer::rate_limited(limit, &decision))
            }
            Err(error) => self.limiter_failed(&error),
        }
    }

    /// A key has a rate limit but the manager no limiter: said once, at
    /// `warn`, for a limit that silently does nothing is a setup bug.
    fn unlimited_by_setup(&self) {
        use std::sync::atomic::Ordering;
        if !self.inner.limiting.told_unset.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "teamkey: keys carry rate limits but the KeyManager has no rate limiter; \
                 they are not enforced (KeyManagerBuilder::rate_limiter(LocalRateLimiter::new()))"
            );
        }
    }

    fn limiter_failed(&self, error: &crate::rate_limit::RateLimitError) -> Admission {
        use std::sync::atomic::Ordering;
        let limiting = &self.inner.limiting;
        let now = self.inner.clock.unix_micros();
        let last = limiting.last_warning.load(Ordering::Relaxed);
        // A gap below zero is a wall clock stepped back: warn, rather than
        // stay silent until the clock catches up.
        let gap = now.saturating_sub(last);
        if !(0..1_000_000).contains(&gap)
            && limiting
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %error, mode = ?limiting.on_failure, "teamkey: rate limiter failed");
        }
        match limiting.on_failure {
            LimiterFailure::Closed => Admission::Refused(Answer::unavailable()),
            _ => Admission::Unlimited,
        }
    }

    /// Records `key.rate_limited` for the caller's key at most once an
    /// hour (per process, and per store through its `once_key`).
    fn rate_limited(&self, principal: &Principal) {
        let hour = self.inner.clock.unix_micros() / 3_600_000_000;
        let seen = (principal.key_id(), hour);
        // As for `key.expired`: nothing marked without a runtime to record it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.limited_seen.get(&seen).is_some() {
            return;
        }
        self.inner.limited_seen.insert(seen, ());
        let this = self.clone();
        let principal = principal.clone();
        runtime.spawn(async move {
            let event = KeyEvent::new(EventKind::RateLimited, this.now(), principal.record(), &Origin::system());
            match this.inner.store.append_event(&event).await {
                Ok(true) => this.announce(event),
                Ok(false) => {}
                Err(e) => tracing::warn!(key_id = %event.key_id, error = %e, "teamkey events: key.rate_limited not recorded"),
            }
        });
    }

    /// Forgets the team's policy answer on this instance: its next
    /// verification asks the [`TeamPolicy`] again. Call it when the app
    /// changes a team's plan, for the change to apply at once here (other
    /// instances apply it within the policy TTL).
    pub fn invalidate_team(&self, team_id: &TeamId) {
        if let Some(policy) = &self.inner.policy {
            policy.forget(team_id);
        }
    }

    /// Changes made by `origin`: its actor and request context go into the
    /// events of the changes.
    ///
    /// ```
    /// use teamkey_core::events::{Actor, Origin, RequestContext};
    /// use teamkey_core::{CreateOptions, KeyManager, MemoryStore, TeamId};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let keys = KeyManager::new(MemoryStore::new());
    /// let team = TeamId::new("acme")?;
    /// let origin = Origin::new(Actor::user("owner@acme.test"))
    ///     .context(RequestContext::new().request_id("req-42"));
    /// keys.on_behalf_of(origin).create(&team, "CI", CreateOptions::new()).await?;
    ///
    /// let events = keys.events(&team, teamkey_core::events::EventQuery::newest(10)).await?;
    /// assert_eq!(events[0].actor, Actor::user("owner@acme.test"));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The context's client IP is kept only when the manager
    /// [records client IPs](KeyManagerBuilder::record_client_ips), the one
    /// switch for keeping addresses.
    pub fn on_behalf_of(&self, mut origin: Origin) -> OnBehalfOf<'_> {
        if !self.inner.record_client_ips {
            origin.context.client_ip = None;
        }
        OnBehalfOf { keys: self, origin }
    }

    /// The rate limit a key of `team_id` made now with `own` would have:
    /// `own`, else the team's plan default, else the manager's default.
    /// What a limited caller's authority is checked against
    /// ([`Authority::check_rate_limit`](crate::Authority::check_rate_limit)).
    pub async fn rate_limit_of_new_key(
        &self,
        team_id: &TeamId,
        own: Option<RateLimit>,
    ) -> Result<Option<RateLimit>, ManageError> {
        if own.is_some() {
            return Ok(own);
        }
        let team_default = match &self.inner.policy {
            Some(_) => self.rules_for_change(team_id).await?.rate_limit,
            None => None,
        };
        Ok(team_default.or(self.inner.limiting.default))
    }

    /// One page of the team's events, newest first. Never another team's.
    /// [`StoreError::Unsupported`] from a store that keeps none.
    pub async fn events(&self, team_id: &TeamId, query: EventQuery) -> Result<Vec<KeyEvent>, ManageError> {
        let mut events = self.inner.store.events(team_id, &query).await?;
        // A store that answers more than asked cannot leak or stretch a page.
        events.retain(|e| query.matches(team_id, e));
        events.sort_by_key(|e| std::cmp::Reverse(e.id));
        events.truncate(query.limit);
        Ok(events)
    }

    /// Records `key.expiring` for active keys that expire within 7 days
    /// (`days_left: 7`) and within 1 day (`days_left: 1`), each notice
    /// once per key however often it runs, on however many instances.
    /// Run it on a schedule (hourly is plenty). Returns how many events
    /// it recorded. Needs a store that keeps events.
    ///
    /// ```no_run
    /// # async fn run(keys: teamkey_core::KeyManager) {
    /// let mut every_hour = tokio::time::interval(std::time::Duration::from_secs(3600));
    /// loop {
    ///     every_hour.tick().await;
    ///     if let Err(e) = keys.sweep_expiring().await {
    ///         eprintln!("expiry sweep failed: {e}");
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn sweep_expiring(&self) -> Result<usize, ManageError> {
        const BATCH: usize = 500;
        let now = self.now();
        let mut recorded = 0;
        for days in EXPIRY_NOTICES {
            let until = now.saturating_add(Duration::days(i64::from(days)));
            let mut query = ExpiringQuery::new(now, until, BATCH);
            loop {
                let full = |n: usize| n >= BATCH;
                let mut soon = self.inner.store.expiring(&query).await?;
                let answered = soon.len();
                // A store that answers more, or other, than asked neither
                // warns a key out of the window nor pages for ever.
                soon.retain(|r| query.matches(r));
                soon.sort_by_key(|r| (r.expires_at, r.id));
                soon.truncate(BATCH);
                for record in &soon {
                    let mut event = KeyEvent::new(EventKind::Expiring, now, record, &Origin::system());
                    event.days_left = Some(days);
                    if self.inner.store.append_event(&event).await? {
                        recorded += 1;
                        self.announce(event);
                    }
                }
                match soon.last() {
                    // Paged by (expiry, id): keys sharing one instant, however
                    // many, are each read once. A page the cursor passes over
                    // entirely (a store ignoring it) ends the sweep.
                    Some(last) if full(answered) && full(soon.len()) => query = query.after_record(last),
                    _ => break,
                }
            }
        }
        Ok(recorded)
    }

    /// Whether verifications are cached, and how many entries are held.
    pub fn cached_entries(&self) -> Option<usize> {
        self.inner.cache.as_ref().map(|c| c.state.len())
    }

    /// Whether the manager makes peppered keys.
    pub fn has_pepper(&self) -> bool {
        self.inner.hasher.has_pepper()
    }

    /// Starts a flush on the current Tokio runtime, off the request path.
    /// Outside a runtime the uses stay pending until the next flush.
    fn spawn_flush(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Outside a runtime: the next use inside one flushes.
            self.inner.last_used.flush_due();
            return;
        };
        let this = self.clone();
        runtime.spawn(async move {
            // A failed flush is logged by flush_last_used and retried later.
            let _ = this.flush_last_used().await;
        });
    }

    /// Writes all pending last-used times now, in one store call. Call it
    /// on shutdown. Returns how many keys were written. On failure the
    /// times stay pending for the next flush.
    pub async fn flush_last_used(&self) -> Result<usize, StoreError> {
        let batch = self.inner.last_used.take();
        if batch.is_empty() {
            return Ok(0);
        }
        // Put back unless written, also when this future is dropped
        // mid-write (a timeout, a shutdown deadline): stores keep the
        // newest time, so writing a batch twice is harmless; losing it is not.
        let mut unwritten = Unwritten {
            last_used: &self.inner.last_used,
            batch,
        };
        match self.inner.store.record_last_used(&unwritten.batch).await {
            Ok(()) => Ok(std::mem::take(&mut unwritten.batch).len()),
            Err(e) => {
                tracing::warn!(error = %e, keys = unwritten.batch.len(), "last-used flush failed; will retry");
                Err(e)
            }
        }
    }
}

/// A batch of last-used times taken for a flush, put back on drop unless
/// taken out once written.
struct Unwritten<'a> {
    last_used: &'a LastUsed,
    batch: Vec<KeyUse>,
}

impl Drop for Unwritten<'_> {
    fn drop(&mut self) {
        if !self.batch.is_empty() {
            self.last_used.restore(std::mem::take(&mut self.batch));
        }
    }
}

/// Rate limiting: the limiter, the default quota, the failure mode.
#[derive(Clone, Default)]
struct Limiting {
    limiter: Option<Arc<dyn RateLimiter>>,
    /// The limiter again, when it is a `LocalRateLimiter`: asked without a
    /// future.
    local: Option<Arc<LocalRateLimiter>>,
    default: Option<RateLimit>,
    on_failure: LimiterFailure,
    /// When the last "limiter failed" warning was logged (unix micros).
    last_warning: Arc<std::sync::atomic::AtomicI64>,
    /// Whether "limits without a limiter" was logged.
    told_unset: Arc<std::sync::atomic::AtomicBool>,
}

/// What [`KeyManager::admit`] decided for a verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Admission {
    /// No rate limit applies (or no limiter is set, or it failed open).
    Unlimited,
    /// Within its limit: send these headers with the response.
    Allowed(RateLimitHeaders),
    /// Over its limit (`429`), or the limiter failed closed (`503`):
    /// answer this and do not run the handler.
    Refused(Answer),
}

/// Days before expiry at which `key.expiring` is recorded.
const EXPIRY_NOTICES: [u8; 2] = [7, 1];

/// Keys whose `key.expired` one process remembers recording.
const EXPIRED_SEEN: usize = 10_000;

/// A policy that allows everything: what `policy_ttl` without `policy` keeps.
struct AllowAll;

#[async_trait::async_trait]
impl TeamPolicy for AllowAll {
    async fn rules(&self, _: &TeamId) -> Result<TeamRules, crate::policy::PolicyError> {
        Ok(TeamRules::allow_all())
    }
}

/// Refuses a new key the team's plan does not allow.
fn check_plan(
    rules: &TeamRules,
    options: &CreateOptions,
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<(), ManageError> {
    if !rules.api_access {
        return Err(ManageError::NoApiAccess);
    }
    let ungrantable = rules.ungrantable(&options.scopes);
    if !ungrantable.is_empty() {
        return Err(ManageError::ScopesNotInPlan { scopes: ungrantable });
    }
    if let (Some(plan_limit), Some(own)) = (rules.rate_limit, options.rate_limit)
        && !own.is_within(plan_limit)
    {
        return Err(ManageError::RateLimitNotInPlan { plan_limit });
    }
    match (expires_at, rules.max_lifetime) {
        (None, _) if rules.require_expiry => Err(ValidationError::ExpiryRequired.into()),
        (Some(at), Some(max)) if now.checked_add(max).is_none_or(|limit| at > limit) => {
            Err(ValidationError::ExpiryTooFar {
                max_days: max.whole_days(),
            }
            .into())
        }
        _ => Ok(()),
    }
}

/// Changes made on behalf of an [`Origin`]: from
/// [`KeyManager::on_behalf_of`]. The same calls as the manager's own, with
/// the actor and request context in their events.
#[derive(Debug)]
pub struct OnBehalfOf<'a> {
    keys: &'a KeyManager,
    origin: Origin,
}

impl OnBehalfOf<'_> {
    /// [`KeyManager::create`], by this origin.
    pub async fn create(
        &self,
        team_id: &TeamId,
        name: &str,
        options: CreateOptions,
    ) -> Result<NewKey, ManageError> {
        self.keys.create_as(&self.origin, team_id, name, options).await
    }

    /// [`KeyManager::revoke`], by this origin.
    pub async fn revoke(&self, team_id: &TeamId, key_id: &KeyId) -> Result<(), ManageError> {
        self.keys.revoke_as(&self.origin, team_id, key_id).await
    }

    /// [`KeyManager::rotate`], by this origin.
    pub async fn rotate(
        &self,
        team_id: &TeamId,
        key_id: &KeyId,
        grace: Duration,
    ) -> Result<NewKey, ManageError> {
        self.keys.rotate_as(&self.origin, team_id, key_id, grace).await
    }
}

/// Whether a preview (`<prefix>_<key id>…<tail>`) was made under `prefix`.
fn issued_under(preview: &str, prefix: &str) -> bool {
    preview
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|rest| {
            rest.split_once('…')
                .is_some_and(|(id, _)| id.len() == crate::ident::KEY_ID_LEN)
        })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn a_feed_task_dropped_late_leaves_a_newer_ones_mark() {
        let running = Arc::new(AtomicU64::new(1));
        let first = FeedRunning {
            running: Arc::clone(&running),
            id: 1,
        };
        // A second task started (after the first was aborted), and the
        // first's future is dropped only now.
        running.store(2, Ordering::Relaxed);
        drop(first);
        assert_eq!(running.load(Ordering::Relaxed), 2, "the live task stays marked");
        drop(FeedRunning {
            running: Arc::clone(&running),
            id: 2,
        });
        assert_eq!(running.load(Ordering::Relaxed), 0, "its own drop clears it");
    }
}
