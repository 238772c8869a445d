//! A key hammered while refused stays tracked under a flood of other keys,
//! each seen once: dropped, it would come back with a fresh burst.

#![allow(clippy::unwrap_used)]
use std::time::Duration;
use teamkey_core::{KeyId, LocalRateLimiter, ManualClock, RateLimit};
use time::macros::datetime;

fn id(n: u32) -> KeyId {
    KeyId::parse(&format!("abcdef{n:06}")).unwrap()
}

#[test]
fn a_hot_refused_key_survives_a_flood_of_other_keys() {
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let limiter = LocalRateLimiter::new().clock(clock).tracked_keys(64);
    let limit = RateLimit::new(5, Duration::from_secs(3600)).unwrap();
    let hot = id(999_999);
    let mut allowed = 0;
    for n in 0..20_000u32 {
        // One request of the hot key's to 16 of new keys: 17 keys active, 64 tracked.
        if limiter.decide(&hot, limit).allowed {
            allowed += 1;
        }
        for m in 0..16 {
            limiter.decide(&id(n * 16 + m), limit);
        }
    }
    assert_eq!(
        allowed, 5,
        "the hot key got {allowed} in an hour with a quota of 5"
    );
}
