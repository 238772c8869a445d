//! MemoryStore keeps the KeyStore contract, and the kit rejects stores that
//! break it, with a message that says how.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use teamkey_core::events::KeyEvent;
use teamkey_core::test_kit::{TEAM_PREFIX, check_store};
use teamkey_core::{
    HashVersion, KeyId, KeyName, KeyRecord, KeyStore, KeyUse, MemoryStore, RotateOutcome, Rotation, Scopes,
    SecretDigest, StoreError, TeamId,
};
use time::{Duration, OffsetDateTime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_conformance_kit() {
    check_store(MemoryStore::new()).await;
}

#[tokio::test(flavor = "current_thread")]
async fn memory_store_passes_on_a_single_thread_too() {
    check_store(MemoryStore::new()).await;
}

/// Changes one field of a record.
type Mangle = fn(&mut KeyRecord);

/// Whether the stored team id and the one asked for are taken as one.
type SameTeam = fn(stored: &str, asked: &str) -> bool;

/// How a [`TestStore`] breaks the contract.
#[derive(Clone, Copy)]
enum Flaw {
    /// None: the control, which must pass.
    Sound,
    /// `get` hands back the record changed by this.
    Mangle(Mangle),
    /// `get` hides revoked records.
    GetHidesRevoked,
    /// `revoke` of a revoked key revokes it again and says it did.
    RevokesTwice,
    /// `list`, `revoke` and `rotate` match team ids with this, as a
    /// collation would.
    LooseTeams(SameTeam),
    /// `rotate` reads and checks, yields, then writes: two rotations of one
    /// key can both pass the check.
    RacyRotate,
    /// `list_active` ignores its cursor and order: every page is the first.
    PagesIgnoreTheCursor,
}

/// A plain map behind a lock, broken in one chosen way.
struct TestStore {
    rows: Mutex<HashMap<KeyId, KeyRecord>>,
    flaw: Flaw,
}

type Rows = HashMap<KeyId, KeyRecord>;

impl TestStore {
    fn new(flaw: Flaw) -> Self {
        Self {
            rows: Mutex::default(),
            flaw,
        }
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn same_team(&self, stored: &TeamId, asked: &TeamId) -> bool {
        match self.flaw {
            Flaw::LooseTeams(same) => same(stored.as_str(), asked.as_str()),
            _ => stored == asked,
        }
    }

    /// What `rotate` decides from the old record, or `None` to go ahead.
    fn refuse_rotation(&self, rows: &Rows, rotation: &Rotation) -> Option<RotateOutcome> {
        match rows.get(&rotation.old) {
            Some(old) if self.same_team(&old.team_id, &rotation.team_id) && old.revoked_at.is_none() => {
                old.replaced_by.is_some().then_some(RotateOutcome::AlreadyRotated)
            }
            _ => Some(RotateOutcome::NotFound),
        }
    }

    /// A read-check-write with a gap, as a store without a transaction or a
    /// conditional update has: another rotation may run in the gap.
    async fn rotate_racily(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        let refused = self.refuse_rotation(&self.rows(), rotation);
        if let Some(refused) = refused {
            return Ok(refused);
        }
        tokio::task::yield_now().await;
        write_rotation(&mut self.rows(), rotation);
        Ok(RotateOutcome::Rotated)
    }
}

fn write_rotation(rows: &mut Rows, rotation: &Rotation) {
    if let Some(old) = rows.get_mut(&rotation.old) {
        old.replaced_by = Some(rotation.successor.id);
        old.expires_at = Some(
            old.expires_at
                .map_or(rotation.retire_at, |t| t.min(rotation.retire_at)),
        );
    }
    rows.insert(rotation.successor.id, rotation.successor.clone());
}

#[async_trait]
impl KeyStore for TestStore {
    async fn insert(&self, record: &KeyRecord, _: &KeyEvent) -> Result<(), StoreError> {
        let mut rows = self.rows();
        if rows.contains_key(&record.id) {
            return Err(StoreError::Conflict);
        }
        rows.insert(record.id, record.clone());
        Ok(())
    }

    async fn get(&self, key_id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let mut found = self.rows().get(key_id).cloned();
        match self.flaw {
            Flaw::Mangle(mangle) => found.iter_mut().for_each(mangle),
            Flaw::GetHidesRevoked => found = found.filter(|r| r.revoked_at.is_none()),
            _ => {}
        }
        Ok(found.map(Arc::new))
    }

    async fn list(&self, team_id: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = self.rows();
        let listed = rows
            .values()
            .filter(|r| self.same_team(&r.team_id, team_id) && r.revoked_at.is_none());
        Ok(listed.cloned().collect())
    }

    async fn list_active(
        &self,
        team_id: &TeamId,
        query: &teamkey_core::ListQuery,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let mut page = self.list(team_id).await?;
        page.retain(|r| r.is_active(query.now));
        if !matches!(self.flaw, Flaw::PagesIgnoreTheCursor) {
            page.retain(|r| query.after.is_none_or(|c| c.precedes(r)));
            page.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        }
        page.truncate(query.limit);
        Ok(page)
    }

    async fn revoke(&self, event: &KeyEvent) -> Result<bool, StoreError> {
        let again = matches!(self.flaw, Flaw::RevokesTwice);
        let mut rows = self.rows();
        match rows.get_mut(&event.key_id) {
            Some(r) if self.same_team(&r.team_id, &event.team_id) && (again || r.revoked_at.is_none()) => {
                r.revoked_at = Some(event.at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        if matches!(self.flaw, Flaw::RacyRotate) {
            return self.rotate_racily(rotation).await;
        }
        let mut rows = self.rows();
        if let Some(refused) = self.refuse_rotation(&rows, rotation) {
            return Ok(refused);
        }
        write_rotation(&mut rows, rotation);
        Ok(RotateOutcome::Rotated)
    }

    async fn record_last_used(&self, uses: &[KeyUse]) -> Result<(), StoreError> {
        let mut rows = self.rows();
        for u in uses {
            if let Some(r) = rows.get_mut(&u.key_id) {
                r.last_used_at = Some(r.last_used_at.map_or(u.at, |t| t.max(u.at)));
            }
        }
        Ok(())
    }
}

/// Runs the kit on a task of its own: `None` if it passed, else its panic
/// message.
async fn kit_failure(flaw: Flaw) -> Option<String> {
    let joined = tokio::spawn(check_store(TestStore::new(flaw))).await;
    joined.err().map(|e| panic_message(e.into_panic()))
}

fn panic_message(panic: Box<dyn Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(message) => *message,
        Err(panic) => panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .unwrap_or_default(),
    }
}

/// The kit's verdict on a store with `flaw`, which must be a failure whose
/// message contains every one of `needles`.
async fn assert_kit_rejects(flaw: Flaw, needles: &[&str]) {
    let message = kit_failure(flaw)
        .await
        .expect("the kit must reject a flawed store");
    for needle in needles {
        assert!(
            message.contains(needle),
            "kit message must contain {needle:?}, was: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sound_test_store_passes() {
    // The control: each flaw below is the only reason its store fails.
    assert_eq!(kit_failure(Flaw::Sound).await, None);
}

#[tokio::test(flavor = "current_thread")]
async fn a_sound_test_store_passes_on_a_single_thread_too() {
    assert_eq!(kit_failure(Flaw::Sound).await, None);
}

/// Each field, changed the way a careless backend would change it.
const MANGLED_FIELDS: [(&str, Mangle); 11] = [
    ("id", |r| r.id = KeyId::parse("AAAAAAAAAAAA").unwrap()),
    ("team_id", |r| {
        r.team_id = TeamId::new(r.team_id.as_str().to_lowercase()).unwrap()
    }),
    ("name", |r| {
        r.name = KeyName::new(r.name.as_str().replace('🦎', "?")).unwrap()
    }),
    ("preview", |r| r.preview = r.preview.replace('…', "...")),
    ("hash_version", |r| r.hash_version = HashVersion::Sha256),
    ("scopes", |r| r.scopes = Scopes::default()),
    ("created_at", |r| r.created_at = truncated_to_millis(r.created_at)),
    ("last_used_at", |r| r.last_used_at = None),
    ("expires_at", |r| r.expires_at = None),
    ("revoked_at", |r| {
        r.revoked_at = r.revoked_at.map(|t| t + Duration::hours(1))
    }),
    ("replaced_by", |r| r.replaced_by = None),
];

fn truncated_to_millis(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_millisecond(t.millisecond()).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_field_that_does_not_round_trip_is_named_with_both_values() {
    for (field, mangle) in MANGLED_FIELDS {
        let message = kit_failure(Flaw::Mangle(mangle))
            .await
            .unwrap_or_else(|| panic!("the kit must notice a changed {field}"));
        assert!(
            message.contains("record_round_trip") && message.contains(&format!("{field}: expected ")),
            "the message must name {field}, was: {message}"
        );
        assert!(message.contains(", got "), "and say what came back: {message}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_changed_digest_is_named_without_its_bytes() {
    let message = kit_failure(Flaw::Mangle(|r| r.digest = SecretDigest::from_bytes([0x5A; 32])))
        .await
        .expect("the kit must notice a changed digest");
    assert!(message.contains("digest differs"), "was: {message}");
    // The kit's round-trip digest is 0, 7, 14, ...; the mangled one 0x5A.
    for bytes in ["[0, 7, 14", "90, 90", "5a5a", "5A5A"] {
        assert!(!message.contains(bytes), "digest bytes leaked: {message}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_get_that_hides_revoked_records_is_told_get_returns_them() {
    assert_kit_rejects(
        Flaw::GetHidesRevoked,
        &["returned None", "revoked and rotated ones included"],
    )
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_second_revoke_that_says_true_is_told_revoke_must_return_false() {
    assert_kit_rejects(
        Flaw::RevokesTwice,
        &["revoke must return false for a key already revoked"],
    )
    .await;
}

/// Team matches a database might make, each with a pair of look-alike ids
/// the kit must catch it on.
const LOOSE_TEAM_MATCHES: [(&str, SameTeam); 5] = [
    ("kit-case-", |stored, asked| {
        stored.to_lowercase() == asked.to_lowercase()
    }),
    ("kit-accent-", |stored, asked| {
        without_accents(stored) == without_accents(asked)
    }),
    ("kit-nfd-", |stored, asked| composed(stored) == composed(asked)),
    ("kit-prefix-", |stored, asked| stored.starts_with(asked)),
    ("kit-sharp-", |stored, asked| {
        stored.replace('\u{df}', "ss") == asked.replace('\u{df}', "ss")
    }),
];

fn without_accents(team: &str) -> String {
    team.replace('\u{e9}', "e").replace('\u{301}', "")
}

fn composed(team: &str) -> String {
    team.replace("e\u{301}", "\u{e9}")
}

#[tokio::test(flavor = "current_thread")]
async fn team_ids_a_collation_would_conflate_are_kept_apart() {
    for (pair, same_team) in LOOSE_TEAM_MATCHES {
        let message = kit_failure(Flaw::LooseTeams(same_team))
            .await
            .unwrap_or_else(|| panic!("the kit must notice {pair}* ids taken as one team"));
        assert!(
            message.contains("team ids must compare exactly") && message.contains(pair),
            "the message must name the {pair}* pair, was: {message}"
        );
    }
}

/// The kit must catch a racy rotate on every run, not most.
async fn assert_racy_rotation_is_always_caught() {
    for run in 0..20 {
        let message = kit_failure(Flaw::RacyRotate)
            .await
            .unwrap_or_else(|| panic!("run {run}: the kit missed a racy rotate"));
        assert!(
            message.contains("concurrent rotation"),
            "run {run}: failed for another reason: {message}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_racy_rotate_fails_the_kit_every_time_on_one_thread() {
    assert_racy_rotation_is_always_caught().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_racy_rotate_fails_the_kit_every_time_on_two_threads() {
    assert_racy_rotation_is_always_caught().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_names_the_team_of_every_row_the_kit_left() {
    let store = Arc::new(TestStore::new(Flaw::Sound));
    let report = check_store(Arc::clone(&store)).await;
    let rows = store.rows();
    assert!(!rows.is_empty());
    for row in rows.values() {
        assert!(
            report.teams.contains(&row.team_id),
            "{:?} is not in the report",
            row.team_id
        );
    }
    for team in &report.teams {
        assert!(team.as_str().starts_with(TEAM_PREFIX), "{team:?}");
    }
}

#[tokio::test]
async fn a_store_whose_pages_ignore_the_cursor_fails_the_kit() {
    assert_kit_rejects(Flaw::PagesIgnoreTheCursor, &["active_keys_page_newest_first"]).await;
}
