//! Last-used times from the second attack review: never before the key was
//! made (verification reads a clock that may lag the one that stamped it),
//! and never lost to a flush dropped mid-write.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use teamkey_core::events::KeyEvent;
use teamkey_core::{
    CreateOptions, KeyId, KeyManager, KeyRecord, KeyStore, KeyUse, ManualClock, MemoryStore, RotateOutcome,
    Rotation, StoreError, TeamId,
};
use time::macros::datetime;
use tokio::sync::Notify;

/// Last-used is the coarse clock's reading (CLOCK_REALTIME_COARSE, up to
/// a tick, and by the `Clock` contract up to 1 s, behind), while
/// `created_at` is the precise clock's: a key used right after it was made
/// was listed as last used *before* it was created.
#[test]
fn a_key_is_never_last_used_before_it_was_created() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let keys = KeyManager::builder(MemoryStore::new()).build();
    let team = TeamId::new("acme").unwrap();
    let mut before_creation = Vec::new();
    for n in 0..20 {
        let created = rt
            .block_on(keys.create(&team, &format!("k{n}"), CreateOptions::default()))
            .unwrap();
        rt.block_on(keys.verify(created.key.expose_secret())).unwrap();
        rt.block_on(keys.flush_last_used()).unwrap();
        let listed = rt.block_on(keys.list(&team)).unwrap();
        let info = listed.iter().find(|i| i.id == created.info.id).unwrap();
        let used = info.last_used_at.unwrap();
        if used < info.created_at {
            before_creation.push((info.created_at, used));
        }
    }
    assert!(
        before_creation.is_empty(),
        "(created_at, last_used_at) of keys used right after creation: {before_creation:?}"
    );
}

/// A MemoryStore whose first `record_last_used` hangs until released.
#[derive(Clone)]
struct HangingFlush {
    inner: Arc<MemoryStore>,
    hang: Arc<std::sync::atomic::AtomicBool>,
    release: Arc<Notify>,
}

#[teamkey_core::async_trait]
impl KeyStore for HangingFlush {
    async fn insert(&self, record: &KeyRecord, event: &KeyEvent) -> Result<(), StoreError> {
        self.inner.insert(record, event).await
    }
    async fn get(&self, key_id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        self.inner.get(key_id).await
    }
    async fn list(&self, team_id: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.list(team_id).await
    }
    async fn revoke(&self, event: &KeyEvent) -> Result<bool, StoreError> {
        self.inner.revoke(event).await
    }
    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        self.inner.rotate(rotation).await
    }
    async fn record_last_used(&self, uses: &[KeyUse]) -> Result<(), StoreError> {
        if self.hang.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.release.notified().await;
        }
        self.inner.record_last_used(uses).await
    }
}

/// A flush given up on (`timeout(.., flush_last_used())`, a shutdown
/// deadline) lost the batch it took; with the thread's repeat skip, a new
/// use after it at the same clock reading on the same thread was lost too
/// (the thread still held that use as noted, so `record` skipped the map,
/// and the next flush wrote nothing). The batch is now put back.
#[test]
fn a_use_after_an_abandoned_flush_is_still_recorded() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let store = HangingFlush {
        inner: Arc::new(MemoryStore::new()),
        hang: Arc::default(),
        release: Arc::default(),
    };
    let keys = KeyManager::builder(store.clone()).clock(clock).build();
    let team = TeamId::new("acme").unwrap();
    let created = rt
        .block_on(keys.create(&team, "k", CreateOptions::default()))
        .unwrap();
    let key = created.key.expose_secret();
    rt.block_on(keys.verify(key)).unwrap();
    store.hang.store(true, std::sync::atomic::Ordering::SeqCst);
    let abandoned =
        rt.block_on(async { tokio::time::timeout(Duration::from_millis(10), keys.flush_last_used()).await });
    assert!(abandoned.is_err(), "the flush was given up on");
    // The key is used again, then flushed.
    rt.block_on(keys.verify(key)).unwrap();
    let written = rt.block_on(keys.flush_last_used()).unwrap();
    let listed = rt.block_on(keys.list(&team)).unwrap();
    assert_eq!(
        (written, listed[0].last_used_at.is_some()),
        (1, true),
        "a use made after the abandoned flush was never written"
    );
}
