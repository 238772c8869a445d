//! The verification cache's contract (docs/caching.md), over MemoryStore
//! with a scripted invalidation feed: hits cost no store call, local writes
//! are seen at once, other writers' once the feed reports them, a silent or
//! lost feed stops the cache being trusted, and a fill that raced an
//! invalidation never puts the old record back.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use teamkey_core::test_kit::{CountingStore, UnavailableStore};
use teamkey_core::{
    CacheConfig, CreateOptions, InvalidationSink, InvalidationSource, KeyId, KeyManager, KeyRecord, KeyStore,
    ManualClock, MemoryStore, Rejection, StoreError, TeamId, VerifyError,
};
use tokio::sync::{Notify, mpsc};

/// What the test tells the scripted feed to do.
enum Step {
    Invalidate(KeyId),
    /// Stop confirming (a half-open connection).
    GoSilent,
    /// Fail: the channel is lost.
    Fail,
}

/// An invalidation feed the test drives: it connects at once, confirms
/// every 20 ms unless silenced, and reports what it is told.
struct Scripted {
    steps: tokio::sync::Mutex<mpsc::UnboundedReceiver<Step>>,
    /// How many times the feed has connected, watched by the test.
    connections: tokio::sync::watch::Sender<usize>,
}

impl Scripted {
    /// Waits until the feed has connected `n` times in all.
    async fn connected(&self, n: usize) {
        let mut seen = self.connections.subscribe();
        seen.wait_for(|&c| c >= n).await.unwrap();
    }
}

#[async_trait::async_trait]
impl InvalidationSource for Scripted {
    async fn run(&self, sink: InvalidationSink) -> StoreError {
        let mut steps = self.steps.lock().await;
        sink.connected(Instant::now());
        self.connections.send_modify(|c| *c += 1);
        let mut silent = false;
        loop {
            let sent = Instant::now();
            match tokio::time::timeout(Duration::from_millis(20), steps.recv()).await {
                Ok(Some(Step::Invalidate(id))) => sink.invalidate(&id),
                Ok(Some(Step::GoSilent)) => silent = true,
                Ok(Some(Step::Fail)) | Ok(None) => return StoreError::backend("feed lost"),
                Err(_) => {}
            }
            if !silent {
                sink.confirmed(sent);
            }
        }
    }
}

fn scripted() -> (Arc<Scripted>, mpsc::UnboundedSender<Step>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let source = Arc::new(Scripted {
        steps: tokio::sync::Mutex::new(rx),
        connections: tokio::sync::watch::Sender::new(0),
    });
    (source, tx)
}

struct Shared(Arc<Scripted>);

#[async_trait::async_trait]
impl InvalidationSource for Shared {
    async fn run(&self, sink: InvalidationSink) -> StoreError {
        self.0.run(sink).await
    }
}

fn team() -> TeamId {
    TeamId::new("acme").unwrap()
}

/// A cached manager over `store`, its feed running and trusted.
async fn cached<S: KeyStore>(store: Arc<S>, window: Duration) -> (KeyManager, mpsc::UnboundedSender<Step>) {
    let (source, steps) = scripted();
    let keys = KeyManager::builder(store)
        .cache_with(
            Shared(Arc::clone(&source)),
            CacheConfig::default().trust_window(window),
        )
        .build();
    // The first verification starts the feed.
    let _ = keys.verify("tk_live_nothing").await;
    source.connected(1).await;
    (keys, steps)
}

#[tokio::test]
async fn a_hit_costs_no_store_call_and_unknown_ids_are_remembered() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let (keys, _steps) = cached(Arc::clone(&store), Duration::from_secs(5)).await;
    let created = keys.create(&team(), "ci", CreateOptions::new()).await.unwrap();
    let gets = || store.counts().get.load(Ordering::SeqCst);
    let before = gets();
    for _ in 0..10_000 {
        keys.verify(created.key.expose_secret()).await.unwrap();
    }
    assert_eq!(gets() - before, 1, "one fill, then hits");

    let unknown = keys.format().generate().unwrap();
    let before = gets();
    for _ in 0..1_000 {
        assert!(matches!(
            keys.verify(unknown.expose_secret()).await,
            Err(VerifyError::Unknown { .. })
        ));
    }
    assert_eq!(
        gets() - before,
        1,
        "a flood of one unknown id asks the store once"
    );
    assert!(keys.cached_entries().unwrap() >= 2);
}

#[tokio::test]
async fn local_writes_are_refused_on_the_very_next_verify() {
    let store = Arc::new(MemoryStore::new());
    let (keys, _steps) = cached(Arc::clone(&store), Duration::from_secs(60)).await;
    let a = keys.create(&team(), "a", CreateOptions::new()).await.unwrap();
    let b = keys.create(&team(), "b", CreateOptions::new()).await.unwrap();
    keys.verify(a.key.expose_secret()).await.unwrap();
    keys.verify(b.key.expose_secret()).await.unwrap();

    keys.revoke(&team(), &a.info.id).await.unwrap();
    assert!(matches!(
        keys.verify(a.key.expose_secret()).await,
        Err(VerifyError::Revoked { .. })
    ));
    keys.rotate(&team(), &b.info.id, time::Duration::ZERO)
        .await
        .unwrap();
    assert!(
        keys.verify(b.key.expose_secret()).await.is_err(),
        "rotated with no grace"
    );
}

#[tokio::test]
async fn another_writers_change_is_seen_when_the_feed_reports_it() {
    let store = Arc::new(MemoryStore::new());
    let (keys, steps) = cached(Arc::clone(&store), Duration::from_secs(60)).await;
    let other = KeyManager::new(Arc::clone(&store)); // another instance, uncached
    let created = keys.create(&team(), "ci", CreateOptions::new()).await.unwrap();
    keys.verify(created.key.expose_secret()).await.unwrap();

    other.revoke(&team(), &created.info.id).await.unwrap();
    // Until the feed says so this instance cannot know: that window is what
    // the feed's latency bounds (under 1 s, measured in the SQL stores' tests).
    steps.send(Step::Invalidate(created.info.id)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    while keys.verify(created.key.expose_secret()).await.is_ok() {
        assert!(Instant::now() < deadline, "the revoke never reached the cache");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_silent_feed_stops_the_cache_being_trusted_within_its_window() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let (keys, steps) = cached(Arc::clone(&store), Duration::from_millis(200)).await;
    let other = KeyManager::new(Arc::clone(&store));
    let created = keys.create(&team(), "ci", CreateOptions::new()).await.unwrap();
    keys.verify(created.key.expose_secret()).await.unwrap();

    // Half-open: the connection stays up, nothing more arrives.
    steps.send(Step::GoSilent).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    other.revoke(&team(), &created.info.id).await.unwrap();
    let revoked_at = Instant::now();
    while keys.verify(created.key.expose_secret()).await.is_ok() {
        assert!(
            revoked_at.elapsed() < Duration::from_millis(400),
            "served past the trust window"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_lost_feed_flushes_and_the_cache_works_again_after_reconnecting() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let (source, steps) = scripted();
    let keys = KeyManager::builder(Arc::clone(&store))
        .cache_with(Shared(Arc::clone(&source)), CacheConfig::default())
        .build();
    let _ = keys.verify("x").await;
    source.connected(1).await;
    let created = keys.create(&team(), "ci", CreateOptions::new()).await.unwrap();
    keys.verify(created.key.expose_secret()).await.unwrap();
    assert_eq!(keys.cached_entries(), Some(1));

    steps.send(Step::Fail).unwrap();
    source.connected(2).await;
    // Reconnected: the cache starts empty and fills again.
    let gets = store.counts().get.load(Ordering::SeqCst);
    for _ in 0..100 {
        keys.verify(created.key.expose_secret()).await.unwrap();
    }
    assert_eq!(store.counts().get.load(Ordering::SeqCst) - gets, 1);
}

#[tokio::test]
async fn a_store_outage_without_a_feed_is_a_503_never_a_pass() {
    let (source, steps) = scripted();
    let keys = KeyManager::builder(UnavailableStore)
        .cache_with(Shared(Arc::clone(&source)), CacheConfig::default())
        .build();
    drop(steps); // the feed fails at once, again and again
    let key = keys.format().generate().unwrap();
    for _ in 0..3 {
        let err = keys.verify(key.expose_secret()).await.unwrap_err();
        assert_eq!(err.rejection(), Rejection::Unavailable);
    }
}

#[tokio::test]
async fn an_expired_key_never_passes_from_the_cache() {
    let clock = ManualClock::new(time::macros::datetime!(2030-01-01 0:00 UTC));
    let (source, _steps) = scripted();
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .cache_with(
            Shared(Arc::clone(&source)),
            CacheConfig::default().trust_window(Duration::from_secs(60)),
        )
        .build();
    let _ = keys.verify("x").await;
    source.connected(1).await;
    let created = keys
        .create(
            &team(),
            "ci",
            CreateOptions::new().expires_in(time::Duration::hours(1)),
        )
        .await
        .unwrap();
    keys.verify(created.key.expose_secret()).await.unwrap();
    clock.advance(time::Duration::hours(1));
    assert!(matches!(
        keys.verify(created.key.expose_secret()).await,
        Err(VerifyError::Expired { .. })
    ));
}

/// A store whose `get` can be held after it has read the record.
struct Held {
    inner: MemoryStore,
    hold: std::sync::atomic::AtomicBool,
    read_done: Notify,
    release: Notify,
}

#[async_trait::async_trait]
impl KeyStore for Held {
    async fn insert(
        &self,
        record: &KeyRecord,
        event: &teamkey_core::events::KeyEvent,
    ) -> Result<(), StoreError> {
        self.inner.insert(record, event).await
    }
    async fn get(&self, key_id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        let record = self.inner.get(key_id).await;
        if self.hold.swap(false, Ordering::SeqCst) {
            let release = self.release.notified();
            self.read_done.notify_one();
            release.await;
        }
        record
    }
    async fn list(&self, team_id: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.list(team_id).await
    }
    async fn revoke(&self, event: &teamkey_core::events::KeyEvent) -> Result<bool, StoreError> {
        self.inner.revoke(event).await
    }
    async fn rotate(
        &self,
        rotation: &teamkey_core::Rotation,
    ) -> Result<teamkey_core::RotateOutcome, StoreError> {
        self.inner.rotate(rotation).await
    }
    async fn record_last_used(&self, uses: &[teamkey_core::KeyUse]) -> Result<(), StoreError> {
        self.inner.record_last_used(uses).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_held_across_an_invalidation_never_serves_the_old_record() {
    let store = Arc::new(Held {
        inner: MemoryStore::new(),
        hold: false.into(),
        read_done: Notify::new(),
        release: Notify::new(),
    });
    let (keys, steps) = cached(Arc::clone(&store), Duration::from_secs(60)).await;
    let other = KeyManager::new(Arc::clone(&store));
    let created = other.create(&team(), "ci", CreateOptions::new()).await.unwrap();
    let key = created.key.expose_secret().to_owned();

    // 1. A fill reads the (still valid) record, and is held there.
    store.hold.store(true, Ordering::SeqCst);
    let read_done = store.read_done.notified();
    let fill = tokio::spawn({
        let keys = keys.clone();
        let key = key.clone();
        async move { keys.verify(&key).await.is_ok() }
    });
    read_done.await;
    // 2. Another writer revokes; the feed reports it.
    other.revoke(&team(), &created.info.id).await.unwrap();
    steps.send(Step::Invalidate(created.info.id)).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // 3. The fill completes with the old record (it read before the revoke).
    store.release.notify_one();
    assert!(
        fill.await.unwrap(),
        "the held request saw the key valid, as it was"
    );
    // The cache must not serve that old record afterwards.
    assert!(matches!(
        keys.verify(&key).await,
        Err(VerifyError::Revoked { .. })
    ));
}
