//! A failing rate limiter is logged at warn at most once a second, and a
//! wall clock stepped back does not silence it until the clock catches
//! up. A binary of its own: tracing caches each log site's interest
//! process-wide (see `support/logs.rs`).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::time::Duration;

use teamkey_core::{
    Admission, CreateOptions, KeyId, KeyManager, ManualClock, MemoryStore, RateDecision, RateLimit,
    RateLimitError, RateLimiter, TeamId,
};
use time::macros::datetime;

use support::logs::capture;

struct Down;

#[teamkey_core::async_trait]
impl RateLimiter for Down {
    async fn check(&self, _: &KeyId, _: RateLimit) -> Result<RateDecision, RateLimitError> {
        Err("connection refused".into())
    }
}

#[test]
fn a_clock_stepped_back_does_not_silence_the_limiter_warning() {
    let (captured, _guard) = capture(tracing::Level::WARN);
    let warnings = || {
        let logs = captured.text();
        logs.lines().filter(|l| l.contains("rate limiter failed")).count()
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let clock = ManualClock::new(datetime!(2031-01-01 12:00 UTC));
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .rate_limiter(Down)
        .build();
    let limit = RateLimit::new(5, Duration::from_secs(10)).unwrap();
    let made = runtime
        .block_on(keys.create(
            &TeamId::new("acme").unwrap(),
            "k",
            CreateOptions::new().rate_limit(limit),
        ))
        .unwrap();
    let admit = || {
        runtime.block_on(async {
            let principal = keys.verify(made.key.expose_secret()).await.unwrap();
            keys.admit(&principal).await
        })
    };

    for _ in 0..3 {
        assert_eq!(admit(), Admission::Unlimited, "open by default");
    }
    assert_eq!(warnings(), 1, "once a second");
    clock.advance(time::Duration::hours(-1));
    assert_eq!(admit(), Admission::Unlimited);
    assert_eq!(admit(), Admission::Unlimited);
    assert_eq!(warnings(), 2, "an hour back: warned again, once");
    clock.advance(time::Duration::seconds(1));
    assert_eq!(admit(), Admission::Unlimited);
    assert_eq!(warnings(), 3, "and a second later, again");
}
