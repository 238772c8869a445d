//! `MemoryStore`: a concurrent in-process store, for single-process
//! services and for tests.

use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use foldhash::{HashMap, HashSet};

use crate::error::StoreError;
use crate::events::{EventQuery, KeyEvent};
use crate::ident::{KeyId, TeamId};
use crate::page::ExpiringQuery;
use crate::record::{KeyRecord, KeyUse, RotateOutcome, Rotation};
use crate::store::KeyStore;

/// Keeps records in memory, behind one read-write lock: verification only
/// reads, so concurrent requests do not wait on each other. Nothing
/// survives a restart.
///
/// ```
/// use teamkey_core::{KeyManager, MemoryStore};
/// let manager = KeyManager::new(MemoryStore::new());
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Tables>,
}

// foldhash: a lookup costs a third of SipHash's. Safe against flooding
// here: the keys inserted are random ids this crate generates, and lookups
// alone cannot lengthen a probe sequence.
#[derive(Debug, Default)]
struct Tables {
    keys: HashMap<KeyId, Arc<KeyRecord>>,
    by_team: HashMap<TeamId, HashSet<KeyId>>,
    /// Each team's events, in the order they were recorded.
    events: HashMap<TeamId, Vec<KeyEvent>>,
    /// The [`KeyEvent::once_key`]s recorded.
    once: HashSet<String>,
}

impl Tables {
    fn insert(&mut self, record: &KeyRecord) -> Result<(), StoreError> {
        if self.keys.contains_key(&record.id) {
            return Err(StoreError::Conflict);
        }
        self.keys.insert(record.id, Arc::new(record.clone()));
        self.by_team
            .entry(record.team_id.clone())
            .or_default()
            .insert(record.id);
        Ok(())
    }

    fn record_event(&mut self, event: &KeyEvent) {
        self.events
            .entry(event.team_id.clone())
            .or_default()
            .push(event.clone());
    }

    /// The team's unrevoked record with this id, to change. Copy on write:
    /// principals handed out earlier keep the record they were made from.
    fn owned_mut(&mut self, team_id: &TeamId, key_id: &KeyId) -> Option<&mut KeyRecord> {
        self.keys
            .get_mut(key_id)
            .filter(|r| &r.team_id == team_id && r.revoked_at.is_none())
            .map(Arc::make_mut)
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The record of `key_id`, at once: what verification reads when the
    /// manager's store is a `MemoryStore` (see `crate::built_in`).
    pub(crate) fn get_now(&self, key_id: &KeyId) -> Option<Arc<KeyRecord>> {
        self.read().keys.get(key_id).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        // Every write below completes before it could panic, so a poisoned
        // lock still guards consistent data.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn insert(&self, record: &KeyRecord, event: &KeyEvent) -> Result<(), StoreError> {
        let mut tables = self.write();
        tables.insert(record)?;
        tables.record_event(event);
        Ok(())
    }

    async fn get(&self, key_id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        Ok(self.get_now(key_id))
    }

    async fn list(&self, team_id: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
        let tables = self.read();
        let Some(ids) = tables.by_team.get(team_id) else {
            return Ok(Vec::new());
        };
        Ok(ids
            .iter()
            .filter_map(|id| tables.keys.get(id))
            .filter(|r| r.revoked_at.is_none())
            .map(|r| KeyRecord::clone(r))
            .collect())
    }

    async fn revoke(&self, event: &KeyEvent) -> Result<bool, StoreError> {
        let mut tables = self.write();
        match tables.owned_mut(&event.team_id, &event.key_id) {
            Some(record) => {
                record.revoked_at = Some(event.at);
                tables.record_event(event);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        let mut tables = self.write();
        if tables.keys.contains_key(&rotation.successor.id) {
            return Err(StoreError::Conflict);
        }
        let Some(old) = tables.owned_mut(&rotation.team_id, &rotation.old) else {
            return Ok(RotateOutcome::NotFound);
        };
        if old.replaced_by.is_some() {
            return Ok(RotateOutcome::AlreadyRotated);
        }
        old.replaced_by = Some(rotation.successor.id);
        old.expires_at = Some(
            old.expires_at
                .map_or(rotation.retire_at, |at| at.min(rotation.retire_at)),
        );
        tables.insert(&rotation.successor)?;
        tables.record_event(&rotation.event);
        Ok(RotateOutcome::Rotated)
    }

    async fn append_event(&self, event: &KeyEvent) -> Result<bool, StoreError> {
        let mut tables = self.write();
        if let Some(once) = event.once_key()
            && !tables.once.insert(once)
        {
            return Ok(false);
        }
        tables.record_event(event);
        Ok(true)
    }

    async fn events(&self, team_id: &TeamId, query: &EventQuery) -> Result<Vec<KeyEvent>, StoreError> {
        let tables = self.read();
        let mut events: Vec<KeyEvent> = tables
            .events
            .get(team_id)
            .into_iter()
            .flatten()
            .filter(|e| query.matches(team_id, e))
            .cloned()
            .collect();
        events.sort_by_key(|e| std::cmp::Reverse(e.id));
        events.truncate(query.limit);
        Ok(events)
    }

    async fn expiring(&self, query: &ExpiringQuery) -> Result<Vec<KeyRecord>, StoreError> {
        let tables = self.read();
        let mut soon: Vec<KeyRecord> = tables
            .keys
            .values()
            .filter(|r| query.matches(r))
            .map(|r| KeyRecord::clone(r))
            .collect();
        soon.sort_by_key(|r| (r.expires_at, r.id));
        soon.truncate(query.limit);
        Ok(soon)
    }

    async fn record_last_used(&self, uses: &[KeyUse]) -> Result<(), StoreError> {
        let mut tables = self.write();
        for u in uses {
            if let Some(record) = tables.keys.get_mut(&u.key_id).map(Arc::make_mut)
                && record.last_used_at.is_none_or(|t| t <= u.at)
            {
                record.last_used_at = Some(u.at);
                if u.ip.is_some() {
                    record.last_used_ip = u.ip;
                }
            }
        }
        Ok(())
    }
}
