//! Rotating a key gives its holder no whole new quota: the successor goes
//! on from what is left of the rotated key's (in process, the two share
//! it while the old key lasts). Otherwise a `keys:manage` key rotating
//! itself with no grace, which adds no active key, would get a fresh
//! quota each time, beyond its plan's.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration as StdDuration;

use teamkey_core::{
    Admission, CreateOptions, KeyManager, LocalRateLimiter, ManualClock, MemoryStore, PolicyError, Principal,
    RateLimit, Scopes, TeamId, TeamPolicy, TeamRules,
};
use time::macros::datetime;

mod support;

/// One plan: `keys:manage` and `scans:read`, 2 requests a minute, one key.
struct Free;

#[teamkey_core::async_trait]
impl TeamPolicy for Free {
    async fn rules(&self, _: &TeamId) -> Result<TeamRules, PolicyError> {
        Ok(TeamRules::allow_all()
            .rate_limit(RateLimit::new(2, StdDuration::from_secs(60)).unwrap())
            .max_active_keys(1)
            .grantable_scopes(Scopes::new(["keys:manage", "scans:read"]).unwrap()))
    }
}

fn manager() -> KeyManager {
    // The clock stands still: every request falls in one minute.
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .policy(Free)
        .rate_limiter(LocalRateLimiter::new().clock(clock))
        .build()
}

/// What an adapter does with each request: verify, then count it.
async fn request(keys: &KeyManager, key: &str) -> Option<Principal> {
    let principal = keys.verify(key).await.unwrap();
    match keys.admit(&principal).await {
        Admission::Refused(_) => None,
        _ => Some(principal),
    }
}

#[tokio::test]
async fn a_key_rotating_itself_without_grace_gets_no_new_quota() {
    let keys = manager();
    let acme = TeamId::new("acme").unwrap();
    let made = keys
        .create(
            &acme,
            "ci",
            CreateOptions::new().scopes(Scopes::new(["keys:manage", "scans:read"]).unwrap()),
        )
        .await
        .unwrap();
    let mut key = made.key.expose_secret().to_owned();
    let mut allowed = 0;
    for _ in 0..20 {
        // A request of its own, then POST /api-keys/{its id}/rotate.
        if request(&keys, &key).await.is_none() {
            break;
        }
        allowed += 1;
        let Some(caller) = request(&keys, &key).await else {
            break;
        };
        allowed += 1;
        let id = caller.key_id();
        key = support::rotate_by(&keys, caller, &id).await.unwrap();
    }
    assert_eq!(allowed, 2, "the plan's 2 a minute, rotations or not");
}

#[tokio::test]
async fn a_successor_has_only_what_is_left_of_the_rotated_keys_quota() {
    let keys = manager();
    let acme = TeamId::new("acme").unwrap();
    let made = keys.create(&acme, "ci", CreateOptions::new()).await.unwrap();
    assert!(request(&keys, made.key.expose_secret()).await.is_some());
    let rotated = keys
        .rotate(&acme, &made.info.id, time::Duration::ZERO)
        .await
        .unwrap();
    let new = rotated.key.expose_secret();
    assert!(request(&keys, new).await.is_some(), "the one request left");
    assert!(request(&keys, new).await.is_none(), "2 a minute in all");
}
