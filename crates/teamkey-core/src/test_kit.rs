//! The store conformance kit: proves a [`KeyStore`] keeps the contract.
//!
//! Call [`check_store`] from a test of your own; it panics, naming the
//! check, on the first broken rule. Every check works under fresh random
//! team ids, so it may run against a database that other tests share. It
//! runs on a current-thread runtime as well as on a multi-thread one; the
//! latter also races rotations in parallel.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! teamkey_core::test_kit::check_store(teamkey_core::MemoryStore::new()).await;
//! # }
//! ```
//!
//! # Cleaning up
//!
//! The kit deletes nothing (a [`KeyStore`] cannot), so each run leaves its
//! rows behind, some hundred keys and their events. They all belong to team ids of the form
//! `kit-<label>-<random>` ([`TEAM_PREFIX`]), and [`check_store`] returns
//! the run's own in a [`KitReport`]. On a database that outlives the test,
//! delete them afterwards, with the schema of `teamkey-sqlx`:
//!
//! ```sql
//! -- This run's rows (PostgreSQL; bind the report's team ids as text[]):
//! DELETE FROM api_keys WHERE team_id = ANY($1);
//! DELETE FROM api_key_events WHERE team_id = ANY($1);
//! -- Every kit run's rows, failed runs' included (a failed run returns
//! -- no report). Not while another kit run is going, and not if real
//! -- team ids may start with 'kit-':
//! DELETE FROM api_keys WHERE team_id LIKE 'kit-%';
//! DELETE FROM api_key_events WHERE team_id LIKE 'kit-%';
//! ```
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use teamkey_core::test_kit::{TEAM_PREFIX, check_store};
//! let report = check_store(teamkey_core::MemoryStore::new()).await;
//! assert!(report.teams.iter().all(|t| t.as_str().starts_with(TEAM_PREFIX)));
//! # }
//! ```

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;

use async_trait::async_trait;
use rand::SeedableRng;
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::{StdRng, SysRng};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::events::{Actor, EventKind, EventQuery, KeyEvent, Origin};
use crate::{
    Clock, CreateOptions, HashVersion, KeyId, KeyManager, KeyName, KeyRecord, KeyStore, KeyUse, ManualClock,
    RotateOutcome, Rotation, Scopes, SecretDigest, StoreError, TeamId, VerifyError,
};
use crate::{Cursor, ExpiringQuery, ListQuery, RateLimit};

/// Runs every check of the [`KeyStore`] contract against `store`, and
/// reports the team ids it wrote under (see [Cleaning up](self#cleaning-up)).
///
/// # Panics
/// On the first rule the store breaks, with a message naming it.
pub async fn check_store(store: impl KeyStore) -> KitReport {
    let kit = Kit {
        store: Arc::new(store),
        teams: Mutex::default(),
    };
    record_round_trip(&kit).await;
    duplicate_id_is_a_conflict(&kit).await;
    list_is_team_scoped(&kit).await;
    active_keys_page_newest_first(&kit).await;
    team_ids_are_compared_exactly(&kit).await;
    revoke_is_team_scoped_and_immediate(&kit).await;
    rotation_follows_the_contract(&kit).await;
    concurrent_rotations_yield_one_successor(&kit).await;
    expiry_and_grace_are_enforced(&kit).await;
    last_used_only_moves_forward(&kit).await;
    last_used_is_batched(&kit).await;
    rotation_keeps_the_rate_limit(&kit).await;
    let events = events_follow_changes(&kit).await;
    let expiring = expiring_lists_the_window(&kit).await;
    KitReport {
        teams: kit.teams.into_inner().unwrap_or_else(PoisonError::into_inner),
        events,
        expiring,
    }
}

/// What a [`check_store`] run leaves behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KitReport {
    /// Every team id the run made, in order, each starting with
    /// [`TEAM_PREFIX`]. The rows the run wrote all belong to these.
    pub teams: Vec<TeamId>,
    /// Whether the events were checked: `false` for a store whose
    /// [`KeyStore::events`] is [`StoreError::Unsupported`] (it keeps none).
    pub events: bool,
    /// Whether [`KeyStore::expiring`] was checked (`false` when unsupported).
    pub expiring: bool,
}

/// How every team id the kit makes starts: `kit-<label>-<random>`.
pub const TEAM_PREFIX: &str = "kit-";

/// One run: the store under test, and the team ids made so far.
struct Kit {
    store: Arc<dyn KeyStore>,
    teams: Mutex<Vec<TeamId>>,
}

impl Kit {
    /// A team id no other run uses.
    fn team(&self, label: &str) -> TeamId {
        self.named(format!("{TEAM_PREFIX}{label}-{}", random_text(12)))
    }

    /// Exactly this team id, remembered for the report.
    fn named(&self, id: String) -> TeamId {
        debug_assert!(
            id.starts_with(TEAM_PREFIX),
            "kit team ids start with {TEAM_PREFIX}"
        );
        let team = TeamId::new(id).expect("valid team id");
        let mut teams = self.teams.lock().unwrap_or_else(PoisonError::into_inner);
        teams.push(team.clone());
        team
    }

    fn manager(&self, clock: &ManualClock) -> KeyManager {
        // Client IPs on: the store must keep what the manager hands it.
        KeyManager::builder(Arc::clone(&self.store))
            .clock(clock.clone())
            .record_client_ips(true)
            .build()
    }
}

/// Counts the calls made to a store, to prove what was (not) asked of it.
#[derive(Debug, Default)]
pub struct CountingStore<S> {
    inner: S,
    counts: Counts,
}

/// Calls counted by a [`CountingStore`].
#[derive(Debug, Default)]
pub struct Counts {
    /// `insert` calls.
    pub insert: AtomicUsize,
    /// `get` calls.
    pub get: AtomicUsize,
    /// `list` calls.
    pub list: AtomicUsize,
    /// `revoke` calls.
    pub revoke: AtomicUsize,
    /// `rotate` calls.
    pub rotate: AtomicUsize,
    /// `record_last_used` calls.
    pub record_last_used: AtomicUsize,
    /// `append_event`, `events` and `expiring` calls.
    pub events: AtomicUsize,
}

impl Counts {
    /// All calls of any kind.
    pub fn total(&self) -> usize {
        [
            &self.insert,
            &self.get,
            &self.list,
            &self.revoke,
            &self.rotate,
            &self.record_last_used,
            &self.events,
        ]
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .sum()
    }
}

impl<S: KeyStore> CountingStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            counts: Counts::default(),
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }
}

fn bump(counter: &AtomicUsize) {
    counter.fetch_add(1, Ordering::SeqCst);
}

#[async_trait]
impl<S: KeyStore> KeyStore for CountingStore<S> {
    async fn insert(&self, record: &KeyRecord, event: &KeyEvent) -> Result<(), StoreError> {
        bump(&self.counts.insert);
        self.inner.insert(record, event).await
    }
    async fn get(&self, key_id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        bump(&self.counts.get);
        self.inner.get(key_id).await
    }
    async fn list(&self, team_id: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
        bump(&self.counts.list);
        self.inner.list(team_id).await
    }
    async fn revoke(&self, event: &KeyEvent) -> Result<bool, StoreError> {
        bump(&self.counts.revoke);
        self.inner.revoke(event).await
    }
    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        bump(&self.counts.rotate);
        self.inner.rotate(rotation).await
    }
    async fn record_last_used(&self, uses: &[KeyUse]) -> Result<(), StoreError> {
        bump(&self.counts.record_last_used);
        self.inner.record_last_used(uses).await
    }
    // Forwarded, so that a store's own (indexed) overrides are what runs;
    // counted as `list`.
    async fn list_active(&self, team_id: &TeamId, query: &ListQuery) -> Result<Vec<KeyRecord>, StoreError> {
        bump(&self.counts.list);
        self.inner.list_active(team_id, query).await
    }
    async fn count_active(&self, team_id: &TeamId, now: OffsetDateTime) -> Result<usize, StoreError> {
        bump(&self.counts.list);
        self.inner.count_active(team_id, now).await
    }
    // Events: forwarded, counted as `events`.
    async fn append_event(&self, event: &KeyEvent) -> Result<bool, StoreError> {
        bump(&self.counts.events);
        self.inner.append_event(event).await
    }
    async fn events(&self, team_id: &TeamId, query: &EventQuery) -> Result<Vec<KeyEvent>, StoreError> {
        bump(&self.counts.events);
        self.inner.events(team_id, query).await
    }
    async fn expiring(&self, query: &ExpiringQuery) -> Result<Vec<KeyRecord>, StoreError> {
        bump(&self.counts.events);
        self.inner.expiring(query).await
    }
}

/// A store whose backend is always down: every call fails with
/// [`StoreError::Backend`]. Use it to test that your service answers 503,
/// never 401 and never a pass, when its key store is unreachable.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnavailableStore;

fn unavailable() -> StoreError {
    StoreError::backend(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "connection refused",
    ))
}

#[async_trait]
impl KeyStore for UnavailableStore {
    async fn insert(&self, _: &KeyRecord, _: &KeyEvent) -> Result<(), StoreError> {
        Err(unavailable())
    }
    async fn get(&self, _: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        Err(unavailable())
    }
    async fn list(&self, _: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
        Err(unavailable())
    }
    async fn revoke(&self, _: &KeyEvent) -> Result<bool, StoreError> {
        Err(unavailable())
    }
    async fn append_event(&self, _: &KeyEvent) -> Result<bool, StoreError> {
        Err(unavailable())
    }
    async fn events(&self, _: &TeamId, _: &EventQuery) -> Result<Vec<KeyEvent>, StoreError> {
        Err(unavailable())
    }
    async fn expiring(&self, _: &ExpiringQuery) -> Result<Vec<KeyRecord>, StoreError> {
        Err(unavailable())
    }
    async fn rotate(&self, _: &Rotation) -> Result<RotateOutcome, StoreError> {
        Err(unavailable())
    }
    async fn record_last_used(&self, _: &[KeyUse]) -> Result<(), StoreError> {
        Err(unavailable())
    }
}

const T0: OffsetDateTime = datetime!(2030-01-01 12:00:00.123456 UTC);

fn random_text(len: usize) -> String {
    let mut rng = StdRng::try_from_rng(&mut SysRng).expect("OS random number generator");
    Alphanumeric.sample_string(&mut rng, len)
}

fn fresh_key_id() -> KeyId {
    KeyId::parse(&random_text(12)).expect("valid key id")
}

fn record(team: &TeamId, name: &str) -> KeyRecord {
    KeyRecord {
        id: fresh_key_id(),
        team_id: team.clone(),
        name: KeyName::new(name).expect("valid name"),
        preview: "tk_live_abc…wxyz".into(),
        digest: SecretDigest::from_bytes([0xA5; 32]),
        hash_version: HashVersion::Sha256,
        scopes: Scopes::default(),
        created_at: T0,
        last_used_at: None,
        expires_at: None,
        revoked_at: None,
        replaced_by: None,
        rotated_from: None,
        last_used_ip: None,
        rate_limit: None,
    }
}

const GET_RETURNS_ALL: &str = "get must return every stored record, revoked and rotated ones included";

/// The stored record. `get` must return every record, revoked and rotated
/// ones included: the manager tells why a key fails from the record.
async fn get(store: &Arc<dyn KeyStore>, id: &KeyId, check: &str) -> KeyRecord {
    let record = store
        .get(id)
        .await
        .unwrap_or_else(|e| panic!("{check}: get({id}) must succeed, got {e}"));
    let record = record.unwrap_or_else(|| panic!("{check}: get({id}) returned None; {GET_RETURNS_ALL}"));
    KeyRecord::clone(&record)
}

/// Panics unless `got` is `want`, naming every field that differs.
fn assert_same_record(check: &str, got: &KeyRecord, want: &KeyRecord) {
    let diffs = record_diffs(got, want);
    assert!(
        diffs.is_empty(),
        "{check}: record {} did not come back as stored: {}",
        want.id,
        diffs.join("; ")
    );
}

/// Appends `field: expected .., got ..` for each listed field that differs.
macro_rules! push_diffs {
    ($diffs:ident, $got:ident, $want:ident: $($field:ident),+) => {$(
        if $got.$field != $want.$field {
            $diffs.push(format!(
                "{}: expected {:?}, got {:?}",
                stringify!($field),
                $want.$field,
                $got.$field
            ));
        }
    )+};
}

fn record_diffs(got: &KeyRecord, want: &KeyRecord) -> Vec<String> {
    let mut diffs = Vec::new();
    push_diffs!(diffs, got, want: id, team_id, name, preview);
    // Never the bytes: test logs are often public, and a digest is a secret's.
    if got.digest != want.digest {
        diffs.push("digest differs".to_owned());
    }
    push_diffs!(
        diffs, got, want: hash_version, scopes, created_at, last_used_at, expires_at, revoked_at, replaced_by,
        rotated_from, last_used_ip, rate_limit
    );
    // A field added to KeyRecord after this list was written.
    if diffs.is_empty() && got != want {
        diffs.push("a field the kit does not name differs".to_owned());
    }
    diffs
}

async fn record_round_trip(kit: &Kit) {
    let store = &kit.store;
    let team = kit.team("o'brien\"; DROP TABLE api_keys;--🦎");
    let mut full = record(&team, "Prod 🦎 \"quoted\" 'single' ; -- % _ \\");
    let mut digest = [0u8; 32];
    for (i, b) in digest.iter_mut().enumerate() {
        *b = u8::try_from(i * 7).unwrap_or(0);
    }
    full.digest = SecretDigest::from_bytes(digest);
    full.hash_version = HashVersion::HmacSha256;
    full.scopes = Scopes::new(["scans:read", "keys:manage", "a.b-c_d"]).expect("valid scopes");
    full.last_used_at = Some(T0 + Duration::microseconds(1));
    full.expires_at = Some(T0 + Duration::days(90));
    full.revoked_at = Some(T0 + Duration::days(1));
    full.replaced_by = Some(fresh_key_id());
    full.rotated_from = Some(fresh_key_id());
    full.rate_limit = Some(RateLimit::new(1_000_000, std::time::Duration::from_secs(86_400)).expect("limit"));
    full.last_used_ip = Some("2001:db8:ffff:ffff:ffff:ffff:ffff:fffe".parse().expect("ip"));
    store
        .insert(&full, &created(&full))
        .await
        .expect("insert must succeed");
    let check = "record_round_trip (every field set)";
    assert_same_record(check, &get(store, &full.id, check).await, &full);

    let bare = record(&team, "bare");
    store
        .insert(&bare, &created(&bare))
        .await
        .expect("insert must succeed");
    let check = "record_round_trip (optionals empty)";
    assert_same_record(check, &get(store, &bare.id, check).await, &bare);

    let unknown = fresh_key_id();
    assert!(
        store.get(&unknown).await.expect("get must succeed").is_none(),
        "record_round_trip: an unknown id must be None"
    );
}

async fn duplicate_id_is_a_conflict(kit: &Kit) {
    let store = &kit.store;
    let team = kit.team("dup");
    let first = record(&team, "first");
    store
        .insert(&first, &created(&first))
        .await
        .expect("insert must succeed");
    let mut second = record(&kit.team("dup2"), "second");
    second.id = first.id;
    assert!(
        matches!(
            store.insert(&second, &created(&second)).await,
            Err(StoreError::Conflict)
        ),
        "duplicate_id_is_a_conflict: inserting an existing id must be StoreError::Conflict"
    );
    let check = "duplicate_id_is_a_conflict: the original must be unchanged";
    assert_same_record(check, &get(store, &first.id, check).await, &first);
}

/// `list_active` pages the team's active keys newest first (ties broken by
/// id, descending) after a cursor; `count_active` counts them. Checked
/// against what the contract says, whatever the store overrides.
async fn active_keys_page_newest_first(kit: &Kit) {
    const CHECK: &str = "active_keys_page_newest_first";
    let store = &kit.store;
    let team = kit.team("pages");
    let other = kit.team("pages-other");
    let mut active = Vec::new();
    for i in 0..7i64 {
        let mut r = record(&team, &format!("k{i}"));
        // Two pairs share a creation time: the id must break the tie.
        r.created_at = T0 + Duration::seconds(i / 2);
        store.insert(&r, &created(&r)).await.expect("insert must succeed");
        active.push(r);
    }
    let mut revoked = record(&team, "revoked");
    revoked.revoked_at = Some(T0);
    let mut expired = record(&team, "expired");
    expired.expires_at = Some(T0 + Duration::seconds(1));
    let foreign = record(&other, "other team");
    for r in [&revoked, &expired, &foreign] {
        store.insert(r, &created(r)).await.expect("insert must succeed");
    }
    active.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let want: Vec<KeyId> = active.iter().map(|r| r.id).collect();

    let now = T0 + Duration::seconds(10);
    let mut got = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_active(&team, &ListQuery::new(now, after, 3))
            .await
            .unwrap_or_else(|e| panic!("{CHECK}: list_active must succeed, got {e}"));
        assert!(
            page.len() <= 3,
            "{CHECK}: list_active returned more than its limit"
        );
        got.extend(page.iter().map(|r| r.id));
        // A store that ignores the cursor would page for ever.
        if got.len() > want.len() {
            break;
        }
        match page.last() {
            Some(last) if page.len() == 3 => after = Some(Cursor::after(last)),
            _ => break,
        }
    }
    assert_eq!(
        got, want,
        "{CHECK}: pages must hold exactly the team's active keys, newest first (then by id, descending), each once"
    );
    let count = store
        .count_active(&team, now)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: count_active must succeed, got {e}"));
    assert_eq!(
        count, 7,
        "{CHECK}: count_active counts the team's active keys only"
    );
}

async fn list_is_team_scoped(kit: &Kit) {
    let store = &kit.store;
    let acme = kit.team("acme");
    let globex = kit.team("globex");
    let a1 = record(&acme, "a1");
    let a2 = record(&acme, "a2");
    let mut a3 = record(&acme, "a3 revoked");
    a3.revoked_at = Some(T0);
    let g1 = record(&globex, "g1");
    for r in [&a1, &a2, &a3, &g1] {
        store.insert(r, &created(r)).await.expect("insert must succeed");
    }
    let mut ids: Vec<KeyId> = store
        .list(&acme)
        .await
        .expect("list must succeed")
        .iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    let mut want = vec![a1.id, a2.id];
    want.sort();
    assert_eq!(
        ids, want,
        "list_is_team_scoped: exactly the team's unrevoked keys"
    );
    assert!(
        store
            .list(&kit.team("nobody"))
            .await
            .expect("list must succeed")
            .is_empty(),
        "list_is_team_scoped: an unknown team has no keys"
    );
}

/// Pairs of team ids that a case- or accent-insensitive collation (MySQL's
/// `_ci`, ICU nondeterministic ones), a Unicode normalisation or a prefix
/// match would take for one team. Trailing spaces, which PAD SPACE
/// collations ignore, cannot be tried: a `TeamId` has none.
fn look_alike_teams(kit: &Kit) -> [(TeamId, TeamId); 5] {
    let r = random_text(12);
    [
        (format!("kit-case-ABC-{r}"), format!("kit-case-abc-{r}")),
        (format!("kit-accent-\u{e9}-{r}"), format!("kit-accent-e-{r}")),
        // Precomposed é against e + combining acute: canonically equivalent.
        (format!("kit-nfd-\u{e9}-{r}"), format!("kit-nfd-e\u{301}-{r}")),
        // One more trailing character, as `LIKE 'team%'` would match.
        (format!("kit-prefix-{r}"), format!("kit-prefix-{r}0")),
        // ß against ss, which Unicode collations take as one. (Zero-width
        // characters, which they ignore, are refused by `TeamId` itself.)
        (format!("kit-sharp-\u{df}-{r}"), format!("kit-sharp-ss-{r}")),
    ]
    .map(|(a, b)| (kit.named(a), kit.named(b)))
}

async fn team_ids_are_compared_exactly(kit: &Kit) {
    let store = &kit.store;
    for (a, b) in look_alike_teams(kit) {
        teams_stay_apart(store, &a, &b).await;
        teams_stay_apart(store, &b, &a).await;
    }
}

/// A key of `owner` is out of reach of `other`, whose id only looks alike.
async fn teams_stay_apart(store: &Arc<dyn KeyStore>, owner: &TeamId, other: &TeamId) {
    let check = format!(
        "team ids must compare exactly, case, accents and every character included: {owner:?} is not {other:?}"
    );
    let key = record(owner, "look-alike");
    store
        .insert(&key, &created(&key))
        .await
        .expect("insert must succeed");
    let listed = store.list(other).await.expect("list must succeed");
    assert!(
        listed.iter().all(|r| &r.team_id == other),
        "{check}; list of the second returned a key of the first"
    );
    let query = ListQuery::new(T0, None, 100);
    let page = store
        .list_active(other, &query)
        .await
        .expect("list_active must succeed");
    assert!(
        page.iter().all(|r| &r.team_id == other),
        "{check}; list_active of the second returned a key of the first"
    );
    let counted = store
        .count_active(other, T0)
        .await
        .expect("count_active must succeed");
    let own = store.list(other).await.expect("list must succeed").len();
    assert_eq!(
        counted, own,
        "{check}; count_active of the second counted a key of the first"
    );
    assert!(
        !revoke(store, other, key.id, T0).await,
        "{check}; revoke by the second must return false for a key of the first"
    );
    let successor = record(other, "look-alike");
    let rotation = rotation_of(other.clone(), key.id, T0, successor.clone());
    assert_eq!(
        store.rotate(&rotation).await.expect("rotate must succeed"),
        RotateOutcome::NotFound,
        "{check}; rotate by the second must be NotFound for a key of the first"
    );
    assert!(
        store
            .get(&successor.id)
            .await
            .expect("get must succeed")
            .is_none(),
        "{check}; a refused rotation must insert nothing"
    );
    assert_same_record(&check, &get(store, &key.id, &check).await, &key);
}

/// The store's own answer, which the manager turns into `NotFound`.
/// The `key.created` event of `record`.
fn created(record: &KeyRecord) -> KeyEvent {
    KeyEvent::new(
        EventKind::Created,
        record.created_at,
        record,
        &Origin::new(Actor::operator("kit")),
    )
}

/// The `key.revoked` event for key `id` of `team` at `at`.
fn revocation(team: &TeamId, id: KeyId, at: OffsetDateTime) -> KeyEvent {
    let mut key = record(team, "revoked");
    key.id = id;
    KeyEvent::new(EventKind::Revoked, at, &key, &Origin::new(Actor::operator("kit")))
}

/// The rotation of key `old` of `team` to `successor`, with its event.
fn rotation_of(team: TeamId, old: KeyId, retire_at: OffsetDateTime, successor: KeyRecord) -> Rotation {
    let mut key = record(&team, "rotated");
    key.id = old;
    let mut event = KeyEvent::new(
        EventKind::Rotated,
        retire_at,
        &key,
        &Origin::new(Actor::operator("kit")),
    );
    event.successor_id = Some(successor.id);
    Rotation::new(team, old, retire_at, successor, event)
}

async fn revoke(store: &Arc<dyn KeyStore>, team: &TeamId, id: KeyId, at: OffsetDateTime) -> bool {
    store
        .revoke(&revocation(team, id, at))
        .await
        .expect("revoke must succeed")
}

async fn revoke_is_team_scoped_and_immediate(kit: &Kit) {
    let store = &kit.store;
    let clock = ManualClock::new(T0);
    let keys = kit.manager(&clock);
    let acme = kit.team("acme");
    let globex = kit.team("globex");
    let created = keys
        .create(&acme, "to revoke", CreateOptions::default())
        .await
        .expect("create");
    let (key, id) = (created.key.expose_secret(), created.info.id);
    keys.verify(key).await.expect("revoke: a new key must verify");
    let at = T0 + Duration::seconds(1);

    assert!(
        !revoke(store, &globex, id, at).await,
        "revoke must return false for another team's key"
    );
    keys.verify(key)
        .await
        .expect("revoke: another team's revoke must change nothing");
    assert!(
        !revoke(store, &acme, fresh_key_id(), at).await,
        "revoke must return false for an unknown key"
    );

    assert!(
        revoke(store, &acme, id, at).await,
        "revoke must return true for an active key of its team"
    );
    assert!(
        matches!(keys.verify(key).await, Err(VerifyError::Revoked { .. })),
        "revoke: the very next verification must fail as revoked"
    );
    assert!(
        !revoke(store, &acme, id, at + Duration::minutes(1)).await,
        "revoke must return false for a key already revoked"
    );
    assert!(
        store.list(&acme).await.expect("list").is_empty(),
        "revoke: a revoked key leaves the list"
    );
    assert_eq!(
        get(store, &id, "revoke").await.revoked_at,
        Some(at),
        "revoke: revoked_at must be the time of the first revoke"
    );
}

async fn rotation_follows_the_contract(kit: &Kit) {
    let store = &kit.store;
    let team = kit.team("rot");
    let old = record(&team, "old");
    store
        .insert(&old, &created(&old))
        .await
        .expect("insert must succeed");
    let retire_at = T0 + Duration::hours(1);
    let rotation =
        |team: &TeamId, successor: KeyRecord| rotation_of(team.clone(), old.id, retire_at, successor);

    let stray = record(&team, "stray");
    let outcome = store
        .rotate(&rotation(&kit.team("other"), stray.clone()))
        .await
        .expect("rotate");
    assert_eq!(
        outcome,
        RotateOutcome::NotFound,
        "rotate: another team's key must be NotFound"
    );
    assert!(
        store.get(&stray.id).await.expect("get").is_none(),
        "rotate: NotFound must insert nothing"
    );

    let successor = record(&team, "old");
    let outcome = store
        .rotate(&rotation(&team, successor.clone()))
        .await
        .expect("rotate");
    assert_eq!(
        outcome,
        RotateOutcome::Rotated,
        "rotate: must rotate an active key"
    );
    let after = get(store, &old.id, "rotate").await;
    assert_eq!(
        after.replaced_by,
        Some(successor.id),
        "rotate: old.replaced_by must name the successor"
    );
    assert_eq!(
        after.expires_at,
        Some(retire_at),
        "rotate: old.expires_at must become retire_at"
    );
    let check = "rotate: the successor must be inserted as given";
    assert_same_record(check, &get(store, &successor.id, check).await, &successor);

    let again = record(&team, "again");
    let outcome = store
        .rotate(&rotation(&team, again.clone()))
        .await
        .expect("rotate");
    assert_eq!(
        outcome,
        RotateOutcome::AlreadyRotated,
        "rotate: a rotated key must be AlreadyRotated"
    );
    assert!(
        store.get(&again.id).await.expect("get").is_none(),
        "rotate: AlreadyRotated must insert nothing"
    );

    // An earlier expiry is kept.
    let mut soon = record(&team, "soon");
    soon.expires_at = Some(T0 + Duration::minutes(5));
    store
        .insert(&soon, &created(&soon))
        .await
        .expect("insert must succeed");
    let successor = record(&team, "soon");
    let outcome = store
        .rotate(&rotation_of(team.clone(), soon.id, retire_at, successor))
        .await
        .expect("rotate");
    assert_eq!(
        outcome,
        RotateOutcome::Rotated,
        "rotate: must rotate an active key that expires before retire_at"
    );
    assert_eq!(
        get(store, &soon.id, "rotate").await.expires_at,
        soon.expires_at,
        "rotate: an expiry earlier than retire_at must be kept"
    );

    // A revoked key cannot be rotated.
    let revoked = record(&team, "revoked");
    store
        .insert(&revoked, &created(&revoked))
        .await
        .expect("insert must succeed");
    assert!(
        store
            .revoke(&revocation(&team, revoked.id, T0))
            .await
            .expect("revoke"),
        "revoke must return true for an active key of its team"
    );
    let successor = record(&team, "revoked");
    let outcome = store
        .rotate(&rotation_of(team.clone(), revoked.id, retire_at, successor))
        .await
        .expect("rotate");
    assert_eq!(
        outcome,
        RotateOutcome::NotFound,
        "rotate: a revoked key must be NotFound"
    );
}

/// Simultaneous rotations of one key in each round.
const RACERS: usize = 8;
/// Rounds of [`RACERS`] rotations, each of a fresh key, alternating between
/// the two ways of racing them ([`Race`]).
const RACE_ROUNDS: usize = 24;

/// How a round runs its rotations.
#[derive(Debug, Clone, Copy)]
enum Race {
    /// All polled in turn by the kit's own task: every rotation reaches its
    /// first `.await` before any resumes, whatever the runtime. A store
    /// that awaits between its check and its write fails every such round.
    Interleaved,
    /// Each on a task of its own: on a multi-thread runtime they also run
    /// in parallel, which catches races without an `.await`, if only
    /// likely.
    Spawned,
}

async fn concurrent_rotations_yield_one_successor(kit: &Kit) {
    for round in 1..=RACE_ROUNDS {
        let race = if round % 2 == 1 {
            Race::Interleaved
        } else {
            Race::Spawned
        };
        race_round(kit, round, race).await;
    }
}

/// One key, [`RACERS`] rotations at once: exactly one may win, and the
/// store must hold the old key and that one successor, no other.
async fn race_round(kit: &Kit, round: usize, race: Race) {
    let store = &kit.store;
    let check = format!("concurrent rotation (round {round} of {RACE_ROUNDS}, {race:?})");
    let team = kit.team("race");
    let old = record(&team, "raced");
    store
        .insert(&old, &created(&old))
        .await
        .expect("insert must succeed");
    let outcomes = race_rotations(store, &team, old.id, race).await;
    let won = outcomes.iter().filter(|o| **o == RotateOutcome::Rotated).count();
    let lost = outcomes
        .iter()
        .filter(|o| **o == RotateOutcome::AlreadyRotated)
        .count();
    assert_eq!(
        (won, lost),
        (1, RACERS - 1),
        "{check}: of {RACERS} simultaneous rotations of one key exactly one must be Rotated, \
         the others AlreadyRotated; got {outcomes:?}"
    );
    let winner = get(store, &old.id, &check)
        .await
        .replaced_by
        .unwrap_or_else(|| panic!("{check}: the old key must name its successor in replaced_by"));
    let listed = store.list(&team).await.expect("list must succeed");
    let mut held: Vec<KeyId> = listed.iter().map(|r| r.id).collect();
    held.sort();
    let mut want = vec![old.id, winner];
    want.sort();
    assert_eq!(
        held, want,
        "{check}: the team must hold the old key and the one successor it names, no other"
    );
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Rotates `old` [`RACERS`] times at once, each with its own successor. A
/// barrier releases them together, so that no rotation is done before the
/// last one starts.
async fn race_rotations(
    store: &Arc<dyn KeyStore>,
    team: &TeamId,
    old: KeyId,
    race: Race,
) -> Vec<RotateOutcome> {
    let barrier = Arc::new(Barrier::new(RACERS));
    let racers = (0..RACERS).map(|_| {
        let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
        let rotation = rotation_of(
            team.clone(),
            old,
            T0 + Duration::minutes(10),
            record(team, "raced"),
        );
        Box::pin(async move {
            barrier.wait().await;
            store.rotate(&rotation).await
        }) as BoxFuture<Result<RotateOutcome, StoreError>>
    });
    let results = match race {
        Race::Interleaved => poll_in_turn(racers.collect()).await,
        Race::Spawned => join_spawned(racers).await,
    };
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("concurrent rotation: rotate must succeed, got {e}")))
        .collect()
}

/// Polls every unfinished future, in order, each time this task wakes, until
/// all are done. Deterministic: no scheduler decides who runs first.
async fn poll_in_turn<T>(futures: Vec<BoxFuture<T>>) -> Vec<T> {
    let mut pending: Vec<_> = futures.into_iter().map(Some).collect();
    let mut done: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (slot, out) in pending.iter_mut().zip(&mut done) {
            if let Some(Poll::Ready(value)) = slot.as_mut().map(|f| f.as_mut().poll(cx)) {
                *out = Some(value);
                *slot = None;
            }
        }
        if pending.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

async fn join_spawned<T: Send + 'static>(futures: impl Iterator<Item = BoxFuture<T>>) -> Vec<T> {
    let mut tasks = JoinSet::new();
    for future in futures {
        tasks.spawn(future);
    }
    let mut done = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        done.push(joined.expect("concurrent rotation: a rotate task must not panic"));
    }
    done
}

async fn expiry_and_grace_are_enforced(kit: &Kit) {
    let clock = ManualClock::new(T0);
    let keys = kit.manager(&clock);
    let team = kit.team("expiry");

    let options = CreateOptions {
        expires_at: Some(T0 + Duration::hours(1)),
        ..Default::default()
    };
    let expiring = keys.create(&team, "expiring", options).await.expect("create");
    keys.verify(expiring.key.expose_secret())
        .await
        .expect("expiry: valid before expiry");

    clock.set(T0 + Duration::minutes(1));
    let old = keys
        .create(&team, "rotated", CreateOptions::default())
        .await
        .expect("create");
    let new = keys
        .rotate(&team, &old.info.id, Duration::minutes(30))
        .await
        .expect("rotate");
    assert_eq!(new.info.name, old.info.name, "rotate: successor keeps the name");
    keys.verify(old.key.expose_secret())
        .await
        .expect("grace: the old key works inside the grace period");
    keys.verify(new.key.expose_secret())
        .await
        .expect("grace: the new key works");

    clock.set(T0 + Duration::minutes(2));
    let instant = keys
        .create(&team, "instant", CreateOptions::default())
        .await
        .expect("create");
    keys.rotate(&team, &instant.info.id, Duration::ZERO)
        .await
        .expect("rotate");
    assert!(
        matches!(
            keys.verify(instant.key.expose_secret()).await,
            Err(VerifyError::Expired { .. })
        ),
        "grace: zero grace retires the old key at once"
    );

    clock.set(T0 + Duration::minutes(31));
    assert!(
        matches!(
            keys.verify(old.key.expose_secret()).await,
            Err(VerifyError::Expired { .. })
        ),
        "grace: the old key stops when the grace period ends"
    );
    keys.verify(new.key.expose_secret())
        .await
        .expect("grace: the new key keeps working");

    clock.set(T0 + Duration::hours(1));
    assert!(
        matches!(
            keys.verify(expiring.key.expose_secret()).await,
            Err(VerifyError::Expired { .. })
        ),
        "expiry: a key stops at its expiry"
    );
    let names: Vec<String> = keys
        .list(&team)
        .await
        .expect("list")
        .iter()
        .map(|k| k.name.to_string())
        .collect();
    assert_eq!(
        names,
        ["instant", "rotated"],
        "expiry: only active keys are listed, newest first"
    );
}

async fn last_used_only_moves_forward(kit: &Kit) {
    let store = &kit.store;
    let team = kit.team("lu");
    let a = record(&team, "a");
    let b = record(&team, "b");
    store.insert(&a, &created(&a)).await.expect("insert");
    store.insert(&b, &created(&b)).await.expect("insert");
    let late = T0 + Duration::minutes(10);
    let early = T0 + Duration::minutes(5);
    let (ip_late, ip_early) = (
        "2001:db8::7".parse().expect("ip"),
        "192.0.2.9".parse().expect("ip"),
    );
    let batch = [
        KeyUse::new(a.id, late).ip(Some(ip_late)),
        KeyUse::new(b.id, early),
        KeyUse::new(fresh_key_id(), late),
    ];
    store
        .record_last_used(&batch)
        .await
        .expect("last used: a batch with an unknown id must succeed");
    let got = get(store, &a.id, "last used").await;
    assert_eq!(
        got.last_used_at,
        Some(late),
        "last used: every key of a batch is written"
    );
    // A store may keep client IPs or not; one that keeps them keeps the
    // latest use's.
    assert!(
        got.last_used_ip.is_none_or(|ip| ip == ip_late),
        "last used: a kept IP must be the latest use's, got {:?}",
        got.last_used_ip
    );
    assert_eq!(
        get(store, &b.id, "last used").await.last_used_at,
        Some(early),
        "last used: every key of a batch is written"
    );
    store
        .record_last_used(&[KeyUse::new(a.id, early).ip(Some(ip_early))])
        .await
        .expect("record_last_used");
    let got = get(store, &a.id, "last used").await;
    assert_eq!(
        got.last_used_at,
        Some(late),
        "last used: an older time must not overwrite"
    );
    assert_ne!(
        got.last_used_ip,
        Some(ip_early),
        "last used: an older use must not overwrite the IP"
    );
    assert_eq!(
        got.last_used_at,
        Some(late),
        "last used: an older time must not overwrite"
    );
}

async fn last_used_is_batched(kit: &Kit) {
    const USES: usize = 10_000;
    let store = &kit.store;
    let counting = Arc::new(CountingStore::new(Arc::clone(store)));
    let clock = ManualClock::new(T0);
    let keys = KeyManager::builder(Arc::clone(&counting))
        .clock(clock.clone())
        .build();
    let team = kit.team("batch");
    let one = keys
        .create(&team, "one", CreateOptions::default())
        .await
        .expect("create");
    let two = keys
        .create(&team, "two", CreateOptions::default())
        .await
        .expect("create");
    for i in 0..USES {
        let key = if i % 2 == 0 { &one.key } else { &two.key };
        keys.verify(key.expose_secret()).await.expect("verify");
    }
    assert_eq!(
        counting.counts().record_last_used.load(Ordering::SeqCst),
        0,
        "last used: no write inside the interval"
    );
    clock.advance(Duration::seconds(30));
    keys.verify(one.key.expose_secret()).await.expect("verify");
    assert_eq!(
        keys.flush_last_used().await.expect("flush"),
        2,
        "last used: one flush covers both keys"
    );
    assert_eq!(
        counting.counts().record_last_used.load(Ordering::SeqCst),
        1,
        "last used: one store call for {USES} uses of two keys"
    );
    let listed = keys.list(&team).await.expect("list");
    let last_used = |id: KeyId| listed.iter().find(|k| k.id == id).and_then(|k| k.last_used_at);
    assert_eq!(
        last_used(one.info.id),
        Some(clock.now()),
        "last used: the latest use is written"
    );
    assert_eq!(
        last_used(two.info.id),
        Some(T0),
        "last used: each key keeps its own time"
    );
    assert_eq!(
        keys.flush_last_used().await.expect("flush"),
        0,
        "last used: nothing pending after a flush"
    );
}

/// A key's own rate limit is stored, and its successor inherits it.
async fn rotation_keeps_the_rate_limit(kit: &Kit) {
    const CHECK: &str = "rate limit";
    let clock = ManualClock::new(T0);
    let keys = kit.manager(&clock);
    let team = kit.team("rl");
    let limit = RateLimit::new(5, std::time::Duration::from_secs(10)).expect("limit");
    let made = keys
        .create(&team, "limited", CreateOptions::new().rate_limit(limit))
        .await
        .expect("create");
    assert_eq!(
        get(&kit.store, &made.info.id, CHECK).await.rate_limit,
        Some(limit),
        "{CHECK}: a key's rate limit is stored"
    );
    let next = keys
        .rotate(&team, &made.info.id, Duration::hours(1))
        .await
        .expect("rotate");
    let successor = get(&kit.store, &next.info.id, CHECK).await;
    assert_eq!(
        successor.rate_limit,
        Some(limit),
        "{CHECK}: a successor keeps the limit"
    );
    assert_eq!(
        successor.rotated_from,
        Some(made.info.id),
        "{CHECK}: and its lineage"
    );
}

/// The team's events, newest first, as the store answers them; `None`
/// when the store keeps no events.
async fn team_events(store: &Arc<dyn KeyStore>, team: &TeamId, query: EventQuery) -> Option<Vec<KeyEvent>> {
    match store.events(team, &query).await {
        Ok(events) => Some(events),
        Err(StoreError::Unsupported(_)) => None,
        Err(e) => panic!("events: events({team}) must succeed, got {e}"),
    }
}

fn kinds(events: &[KeyEvent]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

/// Every change records one event, with it; a refused change records
/// none; events stay with their team. Skipped, with `false`, for a store
/// that keeps no events.
async fn events_follow_changes(kit: &Kit) -> bool {
    const CHECK: &str = "events";
    let store = &kit.store;
    let team = kit.team("ev");
    if team_events(store, &team, EventQuery::newest(10)).await.is_none() {
        return false;
    }
    let clock = ManualClock::new(T0);
    let keys = kit.manager(&clock);
    let origin = Origin::new(Actor::user("owner@kit.test")).context(
        crate::events::RequestContext::new()
            .request_id("kit-request-1")
            .user_agent("kit/1.0")
            .client_ip("192.0.2.1".parse().expect("ip")),
    );
    let admin = keys.on_behalf_of(origin.clone());
    let first = admin
        .create(&team, "first", CreateOptions::new())
        .await
        .expect("create");
    clock.advance(Duration::seconds(1));
    let second = admin
        .rotate(&team, &first.info.id, Duration::ZERO)
        .await
        .expect("rotate");
    clock.advance(Duration::seconds(1));
    admin.revoke(&team, &second.info.id).await.expect("revoke");

    let events = team_events(store, &team, EventQuery::newest(10))
        .await
        .unwrap_or_default();
    assert_eq!(
        kinds(&events),
        [EventKind::Revoked, EventKind::Rotated, EventKind::Created],
        "{CHECK}: one event per change, newest first"
    );
    let (revoked, rotated, made) = (&events[0], &events[1], &events[2]);
    assert_eq!(
        made.key_id, first.info.id,
        "{CHECK}: key.created names the new key"
    );
    assert_eq!(
        rotated.key_id, first.info.id,
        "{CHECK}: key.rotated names the old key"
    );
    assert_eq!(
        rotated.successor_id,
        Some(second.info.id),
        "{CHECK}: key.rotated names the successor"
    );
    assert_eq!(
        revoked.key_id, second.info.id,
        "{CHECK}: key.revoked names the key"
    );
    for event in &events {
        assert_eq!(event.team_id, team, "{CHECK}: an event keeps its team");
        assert_eq!(event.actor, origin.actor, "{CHECK}: an event keeps its actor");
        assert_eq!(
            event.context, origin.context,
            "{CHECK}: an event keeps its request context"
        );
        assert_eq!(
            event.key_name.as_str(),
            "first",
            "{CHECK}: an event keeps the key's name"
        );
    }
    assert_eq!(
        made.preview, first.info.preview,
        "{CHECK}: an event keeps the key's preview"
    );
    assert_eq!(made.at, first.info.created_at, "{CHECK}: an event keeps its time");
    let got = get(store, &second.info.id, CHECK).await;
    assert_eq!(
        got.rotated_from,
        Some(first.info.id),
        "{CHECK}: a successor keeps rotated_from"
    );

    // Paging: before the newest, the two older ones.
    let older = team_events(store, &team, EventQuery::newest(10).before(revoked.id))
        .await
        .unwrap_or_default();
    assert_eq!(
        kinds(&older),
        [EventKind::Rotated, EventKind::Created],
        "{CHECK}: `before` pages to older events"
    );
    let one = team_events(store, &team, EventQuery::newest(1))
        .await
        .unwrap_or_default();
    assert_eq!(
        kinds(&one),
        [EventKind::Revoked],
        "{CHECK}: `limit` bounds a page"
    );

    // Refused changes record nothing.
    let other = kit.team("ev-other");
    let dup = {
        let mut r = record(&team, "dup");
        r.id = first.info.id;
        r
    };
    assert!(
        matches!(
            store.insert(&dup, &created(&dup)).await,
            Err(StoreError::Conflict)
        ),
        "{CHECK}: a duplicate insert is a conflict"
    );
    assert!(
        !store
            .revoke(&revocation(&team, second.info.id, T0))
            .await
            .expect("revoke"),
        "{CHECK}: revoking a revoked key does nothing"
    );
    assert!(
        !store
            .revoke(&revocation(&other, first.info.id, T0))
            .await
            .expect("revoke"),
        "{CHECK}: revoking another team's key does nothing"
    );
    let outcome = store
        .rotate(&rotation_of(
            team.clone(),
            first.info.id,
            T0,
            record(&team, "again"),
        ))
        .await
        .expect("rotate");
    assert_ne!(
        outcome,
        RotateOutcome::Rotated,
        "{CHECK}: a rotated key rotates once"
    );
    let after = team_events(store, &team, EventQuery::newest(10))
        .await
        .unwrap_or_default();
    assert_eq!(
        after.len(),
        3,
        "{CHECK}: a refused change records no event, got {:?}",
        kinds(&after)
    );
    let leaked = team_events(store, &other, EventQuery::newest(10))
        .await
        .unwrap_or_default();
    assert!(
        leaked.is_empty(),
        "{CHECK}: another team sees none of these events"
    );

    // Once-events: recorded once, however often appended.
    let expired = KeyEvent::new(
        EventKind::Expired,
        T0 + Duration::minutes(1),
        &dup,
        &Origin::system(),
    );
    assert!(
        store.append_event(&expired).await.expect("append_event"),
        "{CHECK}: a first key.expired is recorded"
    );
    let again = KeyEvent::new(
        EventKind::Expired,
        T0 + Duration::minutes(1),
        &dup,
        &Origin::system(),
    );
    assert!(
        !store.append_event(&again).await.expect("append_event"),
        "{CHECK}: a second key.expired of one key is skipped"
    );
    let all = team_events(store, &team, EventQuery::newest(10))
        .await
        .unwrap_or_default();
    assert_eq!(
        kinds(&all)[..1],
        [EventKind::Expired],
        "{CHECK}: appended events are listed"
    );
    assert_eq!(all.len(), 4, "{CHECK}: a once-event is recorded once");

    // Look-alike teams see each other's events no more than their keys.
    for (a, b) in look_alike_teams(kit) {
        let key = record(&a, "look-alike");
        store.insert(&key, &created(&key)).await.expect("insert");
        let seen = team_events(store, &b, EventQuery::newest(10))
            .await
            .unwrap_or_default();
        assert!(seen.is_empty(), "{CHECK}: team {b:?} sees events of {a:?}");
    }
    true
}

/// `expiring` lists the active keys expiring in a window, soonest first,
/// of every team.
async fn expiring_lists_the_window(kit: &Kit) -> bool {
    const CHECK: &str = "expiring";
    let store = &kit.store;
    let team = kit.team("exp");
    let mut keys = Vec::new();
    for (name, hours) in [("soon", 2), ("later", 30), ("outside", 24 * 9), ("revoked", 3)] {
        let mut key = record(&team, name);
        key.expires_at = Some(T0 + Duration::hours(hours));
        store.insert(&key, &created(&key)).await.expect("insert");
        keys.push(key);
    }
    store
        .revoke(&revocation(&team, keys[3].id, T0))
        .await
        .expect("revoke");
    let listed = match store
        .expiring(&ExpiringQuery::new(T0, T0 + Duration::days(7), 10_000))
        .await
    {
        Ok(listed) => listed,
        Err(StoreError::Unsupported(_)) => return false,
        Err(e) => panic!("{CHECK}: expiring must succeed, got {e}"),
    };
    // Other runs' keys may share the window; look at this team's only.
    let ours: Vec<&str> = listed
        .iter()
        .filter(|r| r.team_id == team)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        ours,
        ["soon", "later"],
        "{CHECK}: active keys in the window, soonest first"
    );
    assert!(
        listed.windows(2).all(|w| w[0].expires_at <= w[1].expires_at),
        "{CHECK}: soonest first"
    );
    true
}
