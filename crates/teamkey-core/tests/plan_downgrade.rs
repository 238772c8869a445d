//! A plan's ceilings hold at verification too: a team moved to a smaller
//! plan gets no more throughput and no more scopes from the keys it made
//! under the larger one (nor from their successors, as rotation copies a
//! key's limit and scopes), and gets them back when it moves up again.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration as StdDuration;

use teamkey_core::{
    Admission, CreateOptions, KeyManager, LocalRateLimiter, ManualClock, MemoryStore, PolicyError, RateLimit,
    Scopes, TeamId, TeamPolicy, TeamRules,
};
use time::macros::datetime;

mod support;

/// "pro": 100 requests a minute, any scope. "free": 2 a minute,
/// `scans:read` and `keys:manage` only.
#[derive(Clone, Default)]
struct Plans {
    free: Arc<AtomicBool>,
}

fn per_minute(requests: u32) -> RateLimit {
    RateLimit::new(requests, StdDuration::from_secs(60)).unwrap()
}

#[teamkey_core::async_trait]
impl TeamPolicy for Plans {
    async fn rules(&self, _: &TeamId) -> Result<TeamRules, PolicyError> {
        Ok(if self.free.load(Ordering::SeqCst) {
            TeamRules::allow_all()
                .rate_limit(per_minute(2))
                .grantable_scopes(Scopes::new(["scans:read", "keys:manage"]).unwrap())
        } else {
            TeamRules::allow_all().rate_limit(per_minute(100))
        })
    }
}

struct Team {
    keys: KeyManager,
    plans: Plans,
    acme: TeamId,
}

impl Team {
    fn new() -> Self {
        let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
        let plans = Plans::default();
        let keys = KeyManager::builder(MemoryStore::new())
            .clock(clock.clone())
            .policy(plans.clone())
            .rate_limiter(LocalRateLimiter::new().clock(clock))
            .build();
        Self {
            keys,
            plans,
            acme: TeamId::new("acme").unwrap(),
        }
    }

    /// The team moves to `free` or back, and the app tells the manager.
    fn move_to_free(&self, free: bool) {
        self.plans.free.store(free, Ordering::SeqCst);
        self.keys.invalidate_team(&self.acme);
    }
}

#[tokio::test]
async fn a_smaller_plans_rate_limit_bounds_keys_made_under_a_larger_one() {
    let team = Team::new();
    let key = team
        .keys
        .create(&team.acme, "ci", CreateOptions::new().rate_limit(per_minute(100)))
        .await
        .unwrap();
    let key = key.key.expose_secret();
    team.move_to_free(true);
    let principal = team.keys.verify(key).await.unwrap();
    assert_eq!(principal.rate_limit(), Some(per_minute(2)));
    let mut allowed = 0;
    for _ in 0..10 {
        let principal = team.keys.verify(key).await.unwrap();
        if !matches!(team.keys.admit(&principal).await, Admission::Refused(_)) {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 2, "the free plan's 2 a minute, not the key's 100");

    team.move_to_free(false);
    let principal = team.keys.verify(key).await.unwrap();
    assert_eq!(principal.rate_limit(), Some(per_minute(100)), "back on pro");
}

#[tokio::test]
async fn a_key_tighter_than_its_plan_keeps_its_own_limit() {
    let team = Team::new();
    let own = RateLimit::new(1, StdDuration::from_secs(1)).unwrap();
    let key = team
        .keys
        .create(&team.acme, "bot", CreateOptions::new().rate_limit(own))
        .await
        .unwrap();
    team.move_to_free(true);
    let principal = team.keys.verify(key.key.expose_secret()).await.unwrap();
    // 1 a second is within the burst of 2 but faster than 2 a minute:
    // held to 1 every 30 s, within both.
    let held = principal.rate_limit().unwrap();
    assert_eq!((held.requests(), held.window_seconds()), (1, 30));
    assert!(held.is_within(own) && held.is_within(per_minute(2)));
}

#[tokio::test]
async fn a_smaller_plans_scopes_bound_keys_made_under_a_larger_one() {
    let team = Team::new();
    let key = team
        .keys
        .create(
            &team.acme,
            "ci",
            CreateOptions::new().scopes(Scopes::new(["scans:read", "scans:write"]).unwrap()),
        )
        .await
        .unwrap();
    let key_id = key.info.id;
    let key = key.key.expose_secret();
    team.move_to_free(true);
    // A new key with scans:write is refused...
    let refused = team
        .keys
        .create(
            &team.acme,
            "new",
            CreateOptions::new().scopes(Scopes::new(["scans:write"]).unwrap()),
        )
        .await;
    assert!(refused.is_err());
    // ...and the old one is granted only what the plan grants.
    let principal = team.keys.verify(key).await.unwrap();
    assert!(!principal.has_scope("scans:write"));
    assert!(principal.has_scope("scans:read"));
    assert_eq!(principal.scopes(), &Scopes::new(["scans:read"]).unwrap());
    // Its successor too, though rotation copies the stored scopes.
    let rotated = team
        .keys
        .rotate(&team.acme, &key_id, time::Duration::ZERO)
        .await
        .unwrap();
    let successor = team.keys.verify(rotated.key.expose_secret()).await.unwrap();
    assert!(!successor.has_scope("scans:write"));

    team.move_to_free(false);
    let successor = team.keys.verify(rotated.key.expose_secret()).await.unwrap();
    assert!(successor.has_scope("scans:write"), "back on pro");
}

/// A smaller plan must not stop the rotation of a leaked key: a
/// `keys:manage` key made under the larger one, with its own larger limit,
/// still rotates itself through the management API; its successor keeps
/// the stored limit and is held within the plan when it verifies.
#[tokio::test]
async fn a_key_made_under_a_larger_plan_still_rotates_itself() {
    let team = Team::new();
    let made = team
        .keys
        .create(
            &team.acme,
            "admin",
            CreateOptions::new()
                .scopes(Scopes::new(["keys:manage", "scans:read"]).unwrap())
                .rate_limit(per_minute(100)),
        )
        .await
        .unwrap();
    team.move_to_free(true);
    let caller = team.keys.verify(made.key.expose_secret()).await.unwrap();
    assert_eq!(caller.rate_limit(), Some(per_minute(2)));
    assert!(caller.has_scope("keys:manage"), "the plan grants it");
    let id = caller.key_id();
    let successor = support::rotate_by(&team.keys, caller, &id).await.unwrap();
    let successor = team.keys.verify(&successor).await.unwrap();
    assert_eq!(
        successor.rate_limit(),
        Some(per_minute(2)),
        "held within the plan"
    );
}
