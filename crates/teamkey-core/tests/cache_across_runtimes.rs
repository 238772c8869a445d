//! The cache's invalidation feed runs on a task of the runtime of the
//! first verification. When that runtime ends (a set-up runtime,
//! `Runtime::new().block_on(setup)`, then serving on another; an actix
//! worker restarted), the next verification inside a runtime starts the
//! feed again. Before (found by an attack review), the cache was never
//! trusted again and every verification read the store, silently.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use teamkey_core::test_kit::CountingStore;
use teamkey_core::{
    CreateOptions, InvalidationSink, InvalidationSource, KeyManager, MemoryStore, StoreError, TeamId,
};

/// A feed that connects and then confirms every 20 ms, for ever.
struct Healthy;

#[async_trait::async_trait]
impl InvalidationSource for Healthy {
    async fn run(&self, sink: InvalidationSink) -> StoreError {
        sink.connected(Instant::now());
        loop {
            let sent = Instant::now();
            tokio::time::sleep(Duration::from_millis(20)).await;
            sink.confirmed(sent);
        }
    }
}

#[test]
fn the_cache_survives_the_runtime_it_was_built_in() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let setup = tokio::runtime::Runtime::new().unwrap();
    let (keys, key) = setup.block_on(async {
        let keys = KeyManager::builder(Arc::clone(&store)).cache(Healthy).build();
        let made = keys
            .create(&TeamId::new("acme").unwrap(), "ci", CreateOptions::new())
            .await
            .unwrap();
        (keys, made.key.expose_secret().to_owned())
    });
    // The app's set-up runtime ends; it serves on another.
    drop(setup);
    let serving = tokio::runtime::Runtime::new().unwrap();
    let gets = || store.counts().get.load(Ordering::SeqCst);
    serving.block_on(async {
        // Give any feed time to connect here, and the old trust time to lapse.
        let _ = keys.verify(&key).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let before = gets();
        for _ in 0..1_000 {
            keys.verify(&key).await.unwrap();
        }
        assert!(
            gets() - before <= 1,
            "{} store reads for 1,000 verifications of one key: the cache is never trusted again",
            gets() - before
        );
    });
}
