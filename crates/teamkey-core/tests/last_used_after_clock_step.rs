//! The wall clock stepped back (NTP, a VM resumed, an RTC that booted in
//! the future) does not stop last-used times from being written. The
//! automatic flush is due at a wall-clock instant, so a use that lands
//! more than an interval before it makes it due at once; before (found by
//! an attack review), no flush ran until the clock caught up, and a key
//! first used meanwhile showed "Never".

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::Ordering;

use teamkey_core::test_kit::CountingStore;
use teamkey_core::{CreateOptions, KeyManager, ManualClock, MemoryStore, TeamId};
use time::Duration;
use time::macros::datetime;

#[tokio::test(flavor = "current_thread")]
async fn a_wall_clock_stepped_back_does_not_stop_the_last_used_flush() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let clock = ManualClock::new(datetime!(2031-01-01 12:00 UTC));
    let keys = KeyManager::builder(Arc::clone(&store))
        .clock(clock.clone())
        .last_used_interval(std::time::Duration::from_secs(60))
        .build();
    let team = TeamId::new("acme").unwrap();
    let early = keys.create(&team, "early", CreateOptions::new()).await.unwrap();
    let late = keys.create(&team, "late", CreateOptions::new()).await.unwrap();

    // Normal running: a use a minute on, and the flush is written.
    keys.verify(early.key.expose_secret()).await.unwrap();
    clock.advance(Duration::seconds(61));
    keys.verify(early.key.expose_secret()).await.unwrap();
    tokio::task::yield_now().await;
    let flushes = store.counts().record_last_used.load(Ordering::SeqCst);
    assert_eq!(flushes, 1, "the automatic flush ran before the step");

    // NTP steps the clock back an hour; the service keeps serving "late"
    // for 10 minutes, one request a second.
    clock.advance(Duration::hours(-1));
    for _ in 0..600 {
        clock.advance(Duration::seconds(1));
        keys.verify(late.key.expose_secret()).await.unwrap();
        tokio::task::yield_now().await;
    }
    let flushes_after = store.counts().record_last_used.load(Ordering::SeqCst) - flushes;
    let listed = keys.list(&team).await.unwrap();
    let late_used = listed.iter().find(|k| k.id == late.info.id).unwrap().last_used_at;
    assert!(
        flushes_after >= 9,
        "10 minutes after the step: {flushes_after} automatic flushes (one a minute expected); \
         \"late\" shows last used {late_used:?}"
    );
}
