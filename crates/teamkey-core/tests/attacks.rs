//! Attacks on team policy, audit events and rate limits that once found
//! defects, kept so that they stay fixed. Each test asserts what a caller
//! would expect.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use serde_json::Value;
use teamkey_core::events::{Actor, RequestContext};
use teamkey_core::management::{self, KeyAdmin};
use teamkey_core::{
    Admission, Authority, CreateOptions, KeyManager, LocalRateLimiter, ManualClock, MemoryStore, PolicyError,
    RateLimit, Scopes, TeamId, TeamPolicy, TeamRules, VerifyError,
};
use time::macros::datetime;
use tokio::sync::Notify;

mod support;
use support::KeyCaller;

const JSON: Option<&[u8]> = Some(b"application/json");

fn team(id: &str) -> TeamId {
    TeamId::new(id).unwrap()
}

fn body(reply: &management::Reply) -> Value {
    serde_json::from_str(reply.body.as_deref().unwrap_or("null")).unwrap()
}

/// A signed-in team owner, named by email, calling from an address.
struct Owner(TeamId);

impl KeyAdmin for Owner {
    fn team_id(&self) -> &TeamId {
        &self.0
    }
    fn authority(&self) -> Authority {
        Authority::whole_team()
    }
    fn actor(&self) -> Actor {
        Actor::user("alice@acme.test")
    }
    fn context(&self) -> RequestContext {
        RequestContext::new()
            .client_ip("198.51.100.23".parse().unwrap())
            .user_agent("Mozilla/5.0 (Alice's laptop)")
    }
}

// ---------------------------------------------------------------------
// 1. The expiry sweep skips keys that share an expiry instant with the
//    last key of a full batch (BATCH = 500): `after = last` and the store
//    selects `expires_at > after`, so the rest of that instant is never
//    asked again, on this run or any later one.
// ---------------------------------------------------------------------

#[tokio::test]
async fn the_sweep_warns_every_key_even_when_many_share_one_expiry() {
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .max_active_keys(10_000)
        .build();
    let acme = team("acme");
    // 600 keys made by one script with one explicit expiry: "all our CI
    // keys expire at the end of the quarter".
    let at = datetime!(2030-01-01 12:00 UTC);
    for i in 0..600 {
        keys.create(&acme, &format!("ci-{i}"), CreateOptions::new().expires_at(at))
            .await
            .unwrap();
    }
    let first = keys.sweep_expiring().await.unwrap();
    let second = keys.sweep_expiring().await.unwrap();
    // Each key is within 7 days and within 1 day: two notices each, all
    // from the first sweep (keys past the 500th of one instant were never
    // warned); the second finds them recorded.
    assert_eq!((first, second), (1_200, 0));
}

// ---------------------------------------------------------------------
// 2. A keys:manage key escapes its own rate limit (and its plan's) by
//    creating a key with any `rate_limit` it likes: the authority check
//    looks at scopes and expiry only, and a key's own limit beats its
//    team's plan.
// ---------------------------------------------------------------------

/// Every team's plan: 2 requests a minute.
struct TwoPerMinute;

#[teamkey_core::async_trait]
impl TeamPolicy for TwoPerMinute {
    async fn rules(&self, _: &TeamId) -> Result<TeamRules, PolicyError> {
        Ok(TeamRules::allow_all().rate_limit(RateLimit::new(2, StdDuration::from_secs(60)).unwrap()))
    }
}

#[tokio::test]
async fn a_limited_manage_key_cannot_mint_a_key_with_a_higher_limit() {
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .policy(TwoPerMinute)
        .rate_limiter(LocalRateLimiter::new().clock(clock.clone()))
        .build();
    let acme = team("acme");
    let admin = keys
        .create(
            &acme,
            "ci admin",
            CreateOptions::new().scopes(Scopes::new(["keys:manage", "scans:read"]).unwrap()),
        )
        .await
        .unwrap();
    let caller = keys.verify(admin.key.expose_secret()).await.unwrap();
    assert!(matches!(keys.admit(&caller).await, Admission::Allowed(_)));
    assert!(matches!(keys.admit(&caller).await, Admission::Allowed(_)));
    assert!(
        matches!(keys.admit(&caller).await, Admission::Refused(_)),
        "the plan's 2/min applies to the admin key"
    );

    let reply = management::create(
        &keys,
        &KeyCaller(caller),
        JSON,
        br#"{"name":"unlimited","scopes":["scans:read"],"rate_limit":{"requests":1000000,"window_seconds":1}}"#,
    )
    .await;
    if reply.status == 201 {
        let key = body(&reply)["key"].as_str().unwrap().to_owned();
        let minted = keys.verify(&key).await.unwrap();
        let mut allowed = 0;
        for _ in 0..1_000 {
            if matches!(keys.admit(&minted).await, Admission::Allowed(_)) {
                allowed += 1;
            }
        }
        panic!(
            "a key limited to 2/min minted one allowed {allowed} of 1000 requests in the same minute \
             (plan: 2/min)"
        );
    }
    assert_eq!(reply.status, 403, "a key grants no more quota than it holds");
    // Refused by the caller's authority (its limit is the plan's), before
    // the plan's own ceiling is asked.
    assert_eq!(body(&reply)["refused"], "rate_limit", "{:?}", reply.body);
}

// ---------------------------------------------------------------------
// 3. invalidate_team loses to a policy answer in flight: an answer asked
//    before the plan change, returned after invalidate_team, is cached
//    for a whole TTL. "At once with invalidate_team" does not hold.
// ---------------------------------------------------------------------

/// Plans from a table the app changes; a call can be held after reading it.
#[derive(Clone, Default)]
struct SlowPlans {
    free: Arc<Mutex<HashMap<String, bool>>>,
    hold: Arc<Mutex<bool>>,
    read: Arc<Notify>,
    release: Arc<Notify>,
}

#[teamkey_core::async_trait]
impl TeamPolicy for SlowPlans {
    async fn rules(&self, team: &TeamId) -> Result<TeamRules, PolicyError> {
        let free = self
            .free
            .lock()
            .unwrap()
            .get(team.as_str())
            .copied()
            .unwrap_or(false);
        let hold = std::mem::take(&mut *self.hold.lock().unwrap());
        if hold {
            // The plan is read; the answer is on its way back (a slow
            // database round trip, a busy runtime).
            self.read.notify_one();
            self.release.notified().await;
        }
        Ok(if free {
            TeamRules::no_api_access()
        } else {
            TeamRules::allow_all()
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_team_applies_a_plan_change_at_once() {
    let plans = SlowPlans::default();
    let keys = KeyManager::builder(MemoryStore::new())
        .policy(plans.clone())
        .build();
    let acme = team("acme");
    let made = keys.create(&acme, "ci", CreateOptions::new()).await.unwrap();
    keys.invalidate_team(&acme);

    // A request verifies while the team is still on Pro...
    *plans.hold.lock().unwrap() = true;
    let in_flight = {
        let (keys, key) = (keys.clone(), made.key.expose_secret().to_owned());
        tokio::spawn(async move { keys.verify(&key).await.map(|_| ()) })
    };
    plans.read.notified().await;
    // ...the app moves the team to Free and tells the manager, as documented...
    plans.free.lock().unwrap().insert("acme".into(), true);
    keys.invalidate_team(&acme);
    // ...then the request's answer (Pro) comes back and is cached.
    plans.release.notify_one();
    in_flight.await.unwrap().unwrap();

    let after = keys.verify(made.key.expose_secret()).await;
    assert!(
        matches!(after, Err(VerifyError::NoApiAccess { .. })),
        "after invalidate_team, a Free team's key must get 403 plan_required; got {:?} (stale Pro answer cached for the TTL)",
        after.map(|p| p.key_id())
    );
}

// ---------------------------------------------------------------------
// 4. What a keys:manage key read from the audit trail (the owner's
//    email, IP address and user agent) while it was retired (rotated
//    away, in its grace period) and "managed nothing".
// ---------------------------------------------------------------------

#[tokio::test]
async fn a_retired_manage_key_reads_no_audit_trail() {
    // Addresses kept: what a retired key must not read is there to read.
    let keys = KeyManager::builder(MemoryStore::new())
        .record_client_ips(true)
        .build();
    let acme = team("acme");
    let owner = Owner(acme.clone());
    // The owner makes a keys:manage-only key for a CI job, and rotates it
    // with a grace period: the old key "manages nothing" now.
    let made =
        body(&management::create(&keys, &owner, JSON, br#"{"name":"ci","scopes":["keys:manage"]}"#).await);
    let old_secret = made["key"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    let rotated = management::rotate(&keys, &owner, &id, JSON, br#"{"grace_seconds":600}"#).await;
    assert_eq!(rotated.status, 201);
    let retired = KeyCaller(keys.verify(&old_secret).await.unwrap());
    assert_eq!(
        management::create(&keys, &retired, JSON, br#"{"name":"x","expires_in":60}"#)
            .await
            .status,
        403,
        "the retired key manages nothing"
    );

    let personal = ["alice@acme.test", "198.51.100.23", "Alice's laptop"];
    let owners = management::events(&keys, &owner, "").await;
    assert_eq!(owners.status, 200);
    let owners = owners.body.unwrap_or_default();
    assert!(personal.iter().all(|s| owners.contains(s)), "{owners}");

    let trail = management::events(&keys, &retired, "").await;
    assert_eq!(trail.status, 403, "{:?}", trail.body);
    assert_eq!(body(&trail)["refused"], "caller_retired");
    let text = trail.body.unwrap_or_default();
    assert!(!personal.iter().any(|s| text.contains(s)), "{text}");
}

// ---------------------------------------------------------------------
// 5. Invisible characters the cleaning lets through: Unicode tag
//    characters (U+E0000 block, used to smuggle hidden text), soft hyphen,
//    Mongolian vowel separator, interlinear annotation marks. They reach
//    events (request id, user agent, user actor) and key names, and so
//    the JSON, the CLI table and any log that prints them.
// ---------------------------------------------------------------------

#[test]
fn request_context_drops_invisible_format_characters() {
    // "curl/8" then "IGNORE" in tag characters: invisible in a terminal.
    let hidden: String = "IGNORE"
        .chars()
        .map(|c| char::from_u32(0xE0000 + c as u32).unwrap())
        .collect();
    let agent = format!("curl/8{hidden}\u{00AD}\u{180E}\u{FFF9}x\u{FFFB}");
    let ctx = RequestContext::new().user_agent(&agent).request_id(&agent);
    let actor = Actor::user(&agent);
    let name = teamkey_core::KeyName::new(format!("CI{hidden}"));
    let survivors = |s: &str| {
        s.chars()
            .filter(|c| !c.is_ascii_graphic())
            .map(|c| format!("U+{:04X}", c as u32))
            .collect::<Vec<_>>()
    };
    assert!(
        survivors(ctx.user_agent.as_deref().unwrap()).is_empty()
            && survivors(ctx.request_id.as_deref().unwrap()).is_empty()
            && survivors(&actor.id().unwrap()).is_empty()
            && name.is_err(),
        "invisible characters kept: user agent {:?}, request id {:?}, actor {:?}, key name accepted: {}",
        survivors(ctx.user_agent.as_deref().unwrap()),
        survivors(ctx.request_id.as_deref().unwrap()),
        survivors(&actor.id().unwrap()),
        name.is_ok()
    );
}

// ---------------------------------------------------------------------
// 6. A sink that never answers (a webhook call without a timeout) keeps
//    one task per event alive for ever: delivery has no deadline, so the
//    "three tries, then logged" rule never applies, and event churn by
//    any keys:manage key grows the server's memory without bound.
// ---------------------------------------------------------------------

/// Never answers; counts the deliveries it was handed.
#[derive(Clone, Default)]
struct HungSink(Arc<std::sync::atomic::AtomicUsize>);

#[teamkey_core::async_trait]
impl teamkey_core::events::EventSink for HungSink {
    async fn deliver(
        &self,
        _: &teamkey_core::events::KeyEvent,
    ) -> Result<(), teamkey_core::events::SinkError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_sink_does_not_hold_a_task_per_event_for_ever() {
    let sink = HungSink::default();
    let keys = KeyManager::builder(MemoryStore::new())
        .event_sink(sink.clone())
        .build();
    let acme = team("acme");
    for i in 0..2_000 {
        let made = keys
            .create(&acme, &format!("k{i}"), CreateOptions::new())
            .await
            .unwrap();
        keys.revoke(&acme, &made.info.id).await.unwrap();
    }
    tokio::time::sleep(StdDuration::from_secs(3)).await;
    let alive = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    // Deliveries wait on the sink at most 1,024 at once (then 5 s an
    // attempt, three attempts); the rest are logged, not queued.
    assert!(
        alive <= 1_024 + 8,
        "{alive} delivery tasks still alive for 4000 events, 3 s later"
    );
    // The bound, not a sink never called: every slot was handed an event.
    let handed = sink.0.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(handed, 1_024, "deliveries handed to the sink");
}

// ---------------------------------------------------------------------
// A store that ignores the sweep's cursor (answers the first page every
// time) must not keep the sweep paging for ever.
// ---------------------------------------------------------------------

struct CursorBlind(MemoryStore);

#[teamkey_core::async_trait]
impl teamkey_core::KeyStore for CursorBlind {
    async fn insert(
        &self,
        r: &teamkey_core::KeyRecord,
        e: &teamkey_core::events::KeyEvent,
    ) -> Result<(), teamkey_core::StoreError> {
        self.0.insert(r, e).await
    }
    async fn get(
        &self,
        id: &teamkey_core::KeyId,
    ) -> Result<Option<Arc<teamkey_core::KeyRecord>>, teamkey_core::StoreError> {
        self.0.get(id).await
    }
    async fn list(&self, t: &TeamId) -> Result<Vec<teamkey_core::KeyRecord>, teamkey_core::StoreError> {
        self.0.list(t).await
    }
    async fn revoke(&self, e: &teamkey_core::events::KeyEvent) -> Result<bool, teamkey_core::StoreError> {
        self.0.revoke(e).await
    }
    async fn rotate(
        &self,
        r: &teamkey_core::Rotation,
    ) -> Result<teamkey_core::RotateOutcome, teamkey_core::StoreError> {
        self.0.rotate(r).await
    }
    async fn record_last_used(&self, u: &[teamkey_core::KeyUse]) -> Result<(), teamkey_core::StoreError> {
        self.0.record_last_used(u).await
    }
    async fn append_event(
        &self,
        e: &teamkey_core::events::KeyEvent,
    ) -> Result<bool, teamkey_core::StoreError> {
        self.0.append_event(e).await
    }
    async fn expiring(
        &self,
        q: &teamkey_core::ExpiringQuery,
    ) -> Result<Vec<teamkey_core::KeyRecord>, teamkey_core::StoreError> {
        // The first page, whatever the cursor says.
        let first = teamkey_core::ExpiringQuery::new(
            q.after.min(q.until) - time::Duration::days(365),
            q.until,
            q.limit,
        );
        self.0.expiring(&first).await
    }
}

#[tokio::test]
async fn a_store_ignoring_the_sweep_cursor_ends_the_sweep() {
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let keys = KeyManager::builder(CursorBlind(MemoryStore::new()))
        .clock(clock.clone())
        .max_active_keys(1_000)
        .build();
    let acme = team("acme");
    for i in 0..600 {
        keys.create(
            &acme,
            &format!("k{i}"),
            CreateOptions::new().expires_in(time::Duration::days(3)),
        )
        .await
        .unwrap();
    }
    let swept = tokio::time::timeout(StdDuration::from_secs(20), keys.sweep_expiring()).await;
    assert!(swept.is_ok(), "the sweep must end");
    swept.unwrap().unwrap();
}

// ---------------------------------------------------------------------
// 7. Rotation skipped the rate-limit check: a limited `keys:manage` key
//    refused a looser key at creation rotated the team's unlimited key
//    and got its unlimited successor.
// ---------------------------------------------------------------------

#[tokio::test]
async fn a_limited_manage_key_cannot_rotate_a_looser_key_into_its_hands() {
    let keys = KeyManager::builder(MemoryStore::new())
        .rate_limiter(LocalRateLimiter::new())
        .build();
    let acme = team("acme");
    let two_a_minute = RateLimit::new(2, StdDuration::from_secs(60)).unwrap();
    let admin = keys
        .create(
            &acme,
            "ci admin",
            CreateOptions::new()
                .scopes(Scopes::new(["keys:manage", "scans:read"]).unwrap())
                .rate_limit(two_a_minute),
        )
        .await
        .unwrap();
    let unlimited = keys
        .create(
            &acme,
            "reader",
            CreateOptions::new().scopes(Scopes::new(["scans:read"]).unwrap()),
        )
        .await
        .unwrap();
    let caller = KeyCaller(keys.verify(admin.key.expose_secret()).await.unwrap());
    let rotate = async |key: &teamkey_core::NewKey| {
        management::rotate(
            &keys,
            &caller,
            key.info.id.as_str(),
            JSON,
            br#"{"grace_seconds":0}"#,
        )
        .await
    };

    let reply = rotate(&unlimited).await;
    assert_eq!(reply.status, 403, "{:?}", reply.body);
    assert_eq!(body(&reply)["refused"], "rate_limit");
    assert!(
        keys.verify(unlimited.key.expose_secret()).await.is_ok(),
        "a refused rotation writes nothing"
    );
    // A key within the caller's limit still rotates.
    let own_kind = keys
        .create(
            &acme,
            "limited reader",
            CreateOptions::new()
                .scopes(Scopes::new(["scans:read"]).unwrap())
                .rate_limit(two_a_minute),
        )
        .await
        .unwrap();
    let reply = rotate(&own_kind).await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
}

// ---------------------------------------------------------------------
// 8. A plan's limit was only a default: the team's own admin gave a key
//    1,000,000 requests a second on a plan of 2 a minute.
// ---------------------------------------------------------------------

#[tokio::test]
async fn a_plans_limit_is_the_ceiling_of_a_keys_own_limit() {
    let keys = KeyManager::builder(MemoryStore::new())
        .policy(TwoPerMinute)
        .rate_limiter(LocalRateLimiter::new())
        .build();
    let owner = Owner(team("acme"));
    for looser in [
        r#"{"requests":1000000,"window_seconds":1}"#,
        r#"{"requests":3,"window_seconds":60}"#,
        r#"{"requests":2,"window_seconds":59}"#,
    ] {
        let request = format!(r#"{{"name":"fast","rate_limit":{looser}}}"#);
        let reply = management::create(&keys, &owner, JSON, request.as_bytes()).await;
        assert_eq!(reply.status, 403, "{looser}: {:?}", reply.body);
        assert_eq!(body(&reply)["error"], "rate_limit_not_in_plan", "{looser}");
    }
    assert_eq!(keys.list(&owner.0).await.unwrap().len(), 0, "nothing written");
    for within in [
        r#","rate_limit":{"requests":2,"window_seconds":60}"#,
        r#","rate_limit":{"requests":1,"window_seconds":3600}"#,
        "",
    ] {
        let request = format!(r#"{{"name":"ok"{within}}}"#);
        let reply = management::create(&keys, &owner, JSON, request.as_bytes()).await;
        assert_eq!(reply.status, 201, "{within}: {:?}", reply.body);
    }
}

// ---------------------------------------------------------------------
// 9. The local limiter's first requests raced: each made its own limiter
//    for the key, and each granted the whole burst.
// ---------------------------------------------------------------------

#[test]
fn racing_first_requests_of_a_key_share_one_quota() {
    let limiter = Arc::new(LocalRateLimiter::new());
    let one_an_hour = RateLimit::new(1, StdDuration::from_secs(3600)).unwrap();
    let keys = KeyManager::new(MemoryStore::new());
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for round in 0..50 {
        let key_id = runtime
            .block_on(keys.create(&team("acme"), &format!("k{round}"), CreateOptions::new()))
            .unwrap()
            .info
            .id;
        let start = Arc::new(std::sync::Barrier::new(8));
        let allowed: usize = std::thread::scope(|threads| {
            let racers: Vec<_> = (0..8)
                .map(|_| {
                    let (limiter, start) = (Arc::clone(&limiter), Arc::clone(&start));
                    threads.spawn(move || {
                        start.wait();
                        usize::from(limiter.decide(&key_id, one_an_hour).allowed)
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).sum()
        });
        assert_eq!(allowed, 1, "round {round}: a quota of 1 granted {allowed} times");
    }
}
