//! The storage contract every backend implements.

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::StoreError;
use crate::events::{EventQuery, KeyEvent};
use crate::ident::{KeyId, TeamId};
use crate::page::{ExpiringQuery, ListQuery, newest_first};
use crate::record::{KeyRecord, KeyUse, RotateOutcome, Rotation};

/// Where key records live. Implement it for your own database; the
// The module exists only with its feature: link it only then, so that the
// docs of every feature set build without broken links.
#[cfg_attr(feature = "test-kit", doc = "[`test_kit`](crate::test_kit)")]
#[cfg_attr(not(feature = "test-kit"), doc = "`test_kit`")]
/// (feature `test-kit`) checks that an implementation keeps this contract.
///
/// Stores keep no clock and make no decisions: times come from the
/// [`KeyManager`](crate::KeyManager), which also checks expiry.
/// Object-safe: `Arc<dyn KeyStore>` works.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Inserts a new record and its `key.created` event, both or neither
    /// (one transaction, where the backend has them). A record with the
    /// same id already present is [`StoreError::Conflict`], and nothing is
    /// written. A store that keeps no events ignores `event`.
    async fn insert(&self, record: &KeyRecord, event: &KeyEvent) -> Result<(), StoreError>;

    /// The record with this id, revoked or not, or `None`. On the request
    /// path: one point lookup, no write. Shared (`Arc`) so that an
    /// in-memory store hands it out without copying.
    async fn get(&self, key_id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError>;

    /// The team's unrevoked records, in any order. Expired ones may be
    /// included; the manager filters them out.
    async fn list(&self, team_id: &TeamId) -> Result<Vec<KeyRecord>, StoreError>;

    /// One page of the team's active records (not revoked, not expired at
    /// `query.now`), newest first (`created_at`, then id, descending), after
    /// `query.after`, at most `query.limit`.
    ///
    /// The default filters [`list`](Self::list); a database should override
    /// it with one indexed query, so that a team with many retired keys
    /// still pages in bounded time and memory.
    async fn list_active(&self, team_id: &TeamId, query: &ListQuery) -> Result<Vec<KeyRecord>, StoreError> {
        let mut records = self.list(team_id).await?;
        records.retain(|r| query.matches(team_id, r));
        records.sort_by(newest_first);
        records.truncate(query.limit);
        Ok(records)
    }

    /// How many active records (not revoked, not expired at `now`) the team
    /// has. The default counts [`list`](Self::list); a database should
    /// override it with a `COUNT`.
    async fn count_active(&self, team_id: &TeamId, now: OffsetDateTime) -> Result<usize, StoreError> {
        let records = self.list(team_id).await?;
        Ok(records
            .iter()
            .filter(|r| &r.team_id == team_id && r.is_active(now))
            .count())
    }

    /// Sets `revoked_at` (to `event.at`) on the record `event.key_id` if it
    /// belongs to `event.team_id` and is not yet revoked, and records the
    /// `key.revoked` event with it. `true` if it did; `false` (and no
    /// change, no event) otherwise.
    async fn revoke(&self, event: &KeyEvent) -> Result<bool, StoreError>;

    /// Atomically: if `rotation.old` belongs to `rotation.team_id`, is not
    /// revoked and has no successor, set its `replaced_by` to the
    /// successor's id, lower its `expires_at` to `retire_at` (keep it if
    /// already earlier), insert the successor and record `rotation.event`.
    /// Otherwise change nothing. Of concurrent rotations of one key, exactly
    /// one may succeed.
    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError>;

    /// Records an event that is not part of a change (`key.expired`,
    /// `key.expiring`). An event whose [`KeyEvent::once_key`] is already
    /// recorded is skipped: `Ok(false)`, so that instances racing to
    /// record it record it once. `Ok(true)` if it was written.
    ///
    /// The default keeps nothing and answers `Ok(false)`.
    async fn append_event(&self, event: &KeyEvent) -> Result<bool, StoreError> {
        let _ = event;
        Ok(false)
    }

    /// One page of the team's events, newest first (by id, descending),
    /// older than `query.before`, at most `query.limit`. Never another
    /// team's.
    ///
    /// The default is [`StoreError::Unsupported`]: a store that keeps no
    /// events says so rather than answering an empty history.
    async fn events(&self, team_id: &TeamId, query: &EventQuery) -> Result<Vec<KeyEvent>, StoreError> {
        let _ = (team_id, query);
        Err(StoreError::Unsupported("key events"))
    }

    /// One page of the active keys of every team (not revoked, no
    /// successor) that `query` selects ([`ExpiringQuery::matches`]), soonest
    /// first (`expires_at`, then id), at most `query.limit`: what
    /// [`KeyManager::sweep_expiring`](crate::KeyManager::sweep_expiring)
    /// warns about.
    ///
    /// The default is [`StoreError::Unsupported`].
    async fn expiring(&self, query: &ExpiringQuery) -> Result<Vec<KeyRecord>, StoreError> {
        let _ = query;
        Err(StoreError::Unsupported("expiry sweeps"))
    }

    /// Raises `last_used_at` of each listed key to the given time (never
    /// lowers it). Unknown ids are ignored. Called with batches, off the
    /// request path; one statement per batch where the backend allows.
    async fn record_last_used(&self, uses: &[KeyUse]) -> Result<(), StoreError>;
}

macro_rules! forward_store {
    ($($ptr:ty),*) => {$(
        #[async_trait]
        impl<S: KeyStore + ?Sized> KeyStore for $ptr {
            async fn insert(&self, record: &KeyRecord, event: &KeyEvent) -> Result<(), StoreError> {
                (**self).insert(record, event).await
            }
            async fn get(&self, key_id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
                (**self).get(key_id).await
            }
            async fn list(&self, team_id: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
                (**self).list(team_id).await
            }
            async fn list_active(
                &self,
                team_id: &TeamId,
                query: &ListQuery,
            ) -> Result<Vec<KeyRecord>, StoreError> {
                (**self).list_active(team_id, query).await
            }
            async fn count_active(&self, team_id: &TeamId, now: OffsetDateTime) -> Result<usize, StoreError> {
                (**self).count_active(team_id, now).await
            }
            async fn revoke(&self, event: &KeyEvent) -> Result<bool, StoreError> {
                (**self).revoke(event).await
            }
            async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
                (**self).rotate(rotation).await
            }
            async fn append_event(&self, event: &KeyEvent) -> Result<bool, StoreError> {
                (**self).append_event(event).await
            }
            async fn events(&self, team_id: &TeamId, query: &EventQuery) -> Result<Vec<KeyEvent>, StoreError> {
                (**self).events(team_id, query).await
            }
            async fn expiring(&self, query: &ExpiringQuery) -> Result<Vec<KeyRecord>, StoreError> {
                (**self).expiring(query).await
            }
            async fn record_last_used(&self, uses: &[KeyUse]) -> Result<(), StoreError> {
                (**self).record_last_used(uses).await
            }
        }
    )*};
}

forward_store!(Arc<S>, Box<S>);
