//! Team policy (plan gating, quotas, required expiry) and audit events,
//! through the manager and the management API, over MemoryStore.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration as StdDuration;

use serde_json::Value;
use teamkey_core::events::{
    Actor, EventKind, EventQuery, EventSink, KeyEvent, Origin, RequestContext, SinkError,
};
use teamkey_core::management::{self, KeyAdmin};
use teamkey_core::{
    Authority, CreateOptions, KeyManager, ManageError, ManualClock, MemoryStore, PolicyError, Rejection,
    Scopes, TeamId, TeamPolicy, TeamRules, ValidationError, VerifyError,
};
use time::Duration;
use time::macros::datetime;

const JSON: Option<&[u8]> = Some(b"application/json");

/// Plans by team id; `broken` fails; counts the calls.
#[derive(Clone, Default)]
struct Plans {
    calls: Arc<AtomicUsize>,
}

#[teamkey_core::async_trait]
impl TeamPolicy for Plans {
    async fn rules(&self, team: &TeamId) -> Result<TeamRules, PolicyError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match team.as_str() {
            "initech" => Ok(TeamRules::no_api_access()),
            "small" => Ok(TeamRules::allow_all()
                .max_active_keys(2)
                .grantable_scopes(Scopes::new(["scans:read"]).unwrap())),
            "enterprise" => Ok(TeamRules::allow_all().require_expiry_within(Duration::days(90))),
            "broken" => Err("plan database down".into()),
            _ => Ok(TeamRules::allow_all()),
        }
    }
}

fn team(id: &str) -> TeamId {
    TeamId::new(id).unwrap()
}

fn manager(plans: &Plans) -> KeyManager {
    KeyManager::builder(MemoryStore::new())
        .policy(plans.clone())
        .build()
}

struct Owner(TeamId);

impl KeyAdmin for Owner {
    fn team_id(&self) -> &TeamId {
        &self.0
    }
    fn authority(&self) -> Authority {
        Authority::whole_team()
    }
    fn actor(&self) -> Actor {
        Actor::user("owner@example.test")
    }
    fn context(&self) -> RequestContext {
        RequestContext::new().request_id("req-1").user_agent("tests/1")
    }
}

fn body(reply: &management::Reply) -> Value {
    serde_json::from_str(reply.body.as_deref().unwrap_or("null")).unwrap()
}

#[tokio::test]
async fn a_plan_without_api_access_refuses_valid_keys_with_403_and_creation() {
    let plans = Plans::default();
    let open = KeyManager::new(MemoryStore::new());
    // A key made before the plan gate: the store is shared.
    let store = open.store().clone();
    let existing = open
        .create(&team("initech"), "old", CreateOptions::new())
        .await
        .unwrap();
    let gated = KeyManager::builder(store).policy(plans.clone()).build();

    let err = gated.verify(existing.key.expose_secret()).await.unwrap_err();
    assert!(matches!(err, VerifyError::NoApiAccess { .. }), "{err}");
    assert_eq!(err.rejection(), Rejection::NoApiAccess);
    assert_eq!(err.rejection().http_status(), 403);
    let answer = teamkey_core::Answer::for_error(&err);
    assert_eq!(answer.status, 403);
    assert!(answer.body.contains(r#""error":"plan_required""#));

    // A bad key of that team is still the uniform 401: the plan is told
    // only to holders of a valid key.
    let mut forged = existing.key.expose_secret().to_owned();
    forged.replace_range(20..21, if &forged[20..21] == "a" { "b" } else { "a" });
    let err = gated.verify(&forged).await.unwrap_err();
    assert_eq!(err.rejection(), Rejection::Unauthorized);

    let refused = gated.create(&team("initech"), "new", CreateOptions::new()).await;
    assert!(matches!(refused, Err(ManageError::NoApiAccess)));
    let reply = management::create(&gated, &Owner(team("initech")), JSON, br#"{"name":"x"}"#).await;
    assert_eq!(reply.status, 403);
    assert_eq!(body(&reply)["error"], "plan_required");
    assert_eq!(
        gated.list(&team("initech")).await.unwrap().len(),
        1,
        "nothing written"
    );

    // Other teams are unaffected.
    let acme = gated
        .create(&team("acme"), "ci", CreateOptions::new())
        .await
        .unwrap();
    gated.verify(acme.key.expose_secret()).await.unwrap();
}

#[tokio::test]
async fn policy_answers_are_cached_for_verification_and_invalidated_on_demand() {
    let plans = Plans::default();
    let keys = manager(&plans);
    let key = keys
        .create(&team("acme"), "ci", CreateOptions::new())
        .await
        .unwrap();
    keys.invalidate_team(&team("acme"));
    let calls = plans.calls.load(Ordering::SeqCst);
    for _ in 0..100 {
        keys.verify(key.key.expose_secret()).await.unwrap();
    }
    assert_eq!(
        plans.calls.load(Ordering::SeqCst),
        calls + 1,
        "one policy call for a hundred verifications"
    );
    keys.invalidate_team(&team("acme"));
    keys.verify(key.key.expose_secret()).await.unwrap();
    assert_eq!(plans.calls.load(Ordering::SeqCst), calls + 2);
}

#[tokio::test]
async fn a_policy_ttl_bounds_how_long_a_plan_change_takes() {
    let plans = Plans::default();
    let keys = KeyManager::builder(MemoryStore::new())
        .policy(plans.clone())
        .policy_ttl(StdDuration::from_millis(50))
        .build();
    let key = keys
        .create(&team("acme"), "ci", CreateOptions::new())
        .await
        .unwrap();
    keys.verify(key.key.expose_secret()).await.unwrap();
    let calls = plans.calls.load(Ordering::SeqCst);
    tokio::time::sleep(StdDuration::from_millis(80)).await;
    keys.verify(key.key.expose_secret()).await.unwrap();
    assert_eq!(
        plans.calls.load(Ordering::SeqCst),
        calls + 1,
        "asked again after the TTL"
    );
}

#[tokio::test]
async fn a_failing_policy_is_unavailable_never_a_pass() {
    let plans = Plans::default();
    let open = KeyManager::new(MemoryStore::new());
    let key = open
        .create(&team("broken"), "k", CreateOptions::new())
        .await
        .unwrap();
    let keys = KeyManager::builder(open.store().clone())
        .policy(plans.clone())
        .build();
    let err = keys.verify(key.key.expose_secret()).await.unwrap_err();
    assert!(matches!(err, VerifyError::Policy(_)), "{err}");
    assert_eq!(err.rejection(), Rejection::Unavailable);
    assert!(!format!("{err:?}{err}").contains(key.key.expose_secret()));
    let reply = management::create(&keys, &Owner(team("broken")), JSON, br#"{"name":"x"}"#).await;
    assert_eq!(reply.status, 503);
}

#[tokio::test]
async fn quotas_scopes_and_required_expiry_are_the_plans() {
    let plans = Plans::default();
    let keys = manager(&plans);
    let small = Owner(team("small"));
    let reply = management::create(&keys, &small, JSON, br#"{"name":"w","scopes":["scans:write"]}"#).await;
    assert_eq!(reply.status, 403);
    assert_eq!(body(&reply)["error"], "scopes_not_in_plan");
    assert_eq!(body(&reply)["refused_scopes"], serde_json::json!(["scans:write"]));
    for name in ["a", "b"] {
        let body = format!(r#"{{"name":"{name}","scopes":["scans:read"]}}"#);
        assert_eq!(
            management::create(&keys, &small, JSON, body.as_bytes())
                .await
                .status,
            201
        );
    }
    let third = management::create(&keys, &small, JSON, br#"{"name":"c"}"#).await;
    assert_eq!(third.status, 422);
    assert_eq!(body(&third)["max_active_keys"], 2);
    assert_eq!(keys.list(&team("small")).await.unwrap().len(), 2);

    let enterprise = Owner(team("enterprise"));
    let forever = management::create(&keys, &enterprise, JSON, br#"{"name":"x"}"#).await;
    assert_eq!(forever.status, 422);
    assert!(body(&forever)["message"].as_str().unwrap().contains("expire"));
    let too_long =
        management::create(&keys, &enterprise, JSON, br#"{"name":"x","expires_in":8640000}"#).await;
    assert_eq!(too_long.status, 422, "100 days > 90");
    let fine = management::create(&keys, &enterprise, JSON, br#"{"name":"x","expires_in":7776000}"#).await;
    assert_eq!(fine.status, 201, "90 days");
    assert!(matches!(
        keys.create(&team("enterprise"), "y", CreateOptions::new()).await,
        Err(ManageError::Invalid(ValidationError::ExpiryRequired))
    ));
}

#[tokio::test]
async fn management_records_who_did_what_and_serves_the_trail() {
    let keys = KeyManager::new(MemoryStore::new());
    let owner = Owner(team("acme"));
    let made = body(&management::create(&keys, &owner, JSON, br#"{"name":"CI"}"#).await);
    let id = made["id"].as_str().unwrap().to_owned();
    let rotated = body(&management::rotate(&keys, &owner, &id, JSON, b"{}").await);
    let successor = rotated["id"].as_str().unwrap().to_owned();
    assert_eq!(rotated["rotated_from"], id.as_str(), "lineage in the key's row");
    assert_eq!(management::revoke(&keys, &owner, &successor).await.status, 204);

    let page = management::events(&keys, &owner, "limit=2").await;
    assert_eq!(page.status, 200);
    let page = body(&page);
    let types: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["key.revoked", "key.rotated"]);
    let rotated = &page["data"][1];
    assert_eq!(rotated["key_id"], id.as_str());
    assert_eq!(rotated["successor_id"], successor.as_str());
    assert_eq!(
        rotated["actor"],
        serde_json::json!({"type": "user", "id": "owner@example.test"})
    );
    assert_eq!(rotated["context"]["request_id"], "req-1");
    assert_eq!(rotated["context"]["user_agent"], "tests/1");
    let text = serde_json::to_string(&page).unwrap();
    assert!(!text.contains(made["key"].as_str().unwrap()), "never the key");
    assert!(!text.contains("digest"), "never the digest");

    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = body(&management::events(&keys, &owner, &format!("cursor={cursor}")).await);
    assert_eq!(rest["data"][0]["type"], "key.created");
    assert_eq!(rest["next_cursor"], Value::Null);

    assert_eq!(management::events(&keys, &owner, "cursor=nope").await.status, 422);
    assert_eq!(management::events(&keys, &owner, "limit=0").await.status, 422);
    assert_eq!(management::events(&keys, &owner, "limit=x").await.status, 400);
    let other = body(&management::events(&keys, &Owner(team("globex")), "").await);
    assert_eq!(other["data"], serde_json::json!([]), "another team sees nothing");
}

#[tokio::test]
async fn the_first_refusal_of_an_expired_key_is_recorded_once() {
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .build();
    let acme = team("acme");
    let key = keys
        .create(
            &acme,
            "short",
            CreateOptions::new().expires_in(Duration::hours(1)),
        )
        .await
        .unwrap();
    clock.advance(Duration::hours(2));
    for _ in 0..5 {
        assert!(matches!(
            keys.verify(key.key.expose_secret()).await,
            Err(VerifyError::Expired { .. })
        ));
        // The event is written off the request path.
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    let events = keys.events(&acme, EventQuery::newest(10)).await.unwrap();
    let expired: Vec<&KeyEvent> = events.iter().filter(|e| e.kind == EventKind::Expired).collect();
    assert_eq!(expired.len(), 1, "{events:?}");
    assert_eq!(expired[0].actor, Actor::System);

    // Another instance over the same store records it no second time.
    let other = KeyManager::builder(keys.store().clone())
        .clock(clock.clone())
        .build();
    let _ = other.verify(key.key.expose_secret()).await;
    tokio::time::sleep(StdDuration::from_millis(10)).await;
    let events = keys.events(&acme, EventQuery::newest(10)).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == EventKind::Expired).count(), 1);
}

#[tokio::test]
async fn the_sweep_warns_seven_days_and_one_day_ahead_once() {
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .build();
    let acme = team("acme");
    let expiring = |days| CreateOptions::new().expires_in(Duration::days(days));
    keys.create(&acme, "in 30 days", expiring(30)).await.unwrap();
    keys.create(&acme, "in 5 days", expiring(5)).await.unwrap();
    keys.create(&acme, "never", CreateOptions::new()).await.unwrap();

    assert_eq!(
        keys.sweep_expiring().await.unwrap(),
        1,
        "the 5-day key's 7-day notice"
    );
    assert_eq!(keys.sweep_expiring().await.unwrap(), 0, "once");
    clock.advance(Duration::days(4) + Duration::hours(1));
    assert_eq!(keys.sweep_expiring().await.unwrap(), 1, "its 1-day notice");
    clock.advance(Duration::days(19));
    assert_eq!(
        keys.sweep_expiring().await.unwrap(),
        1,
        "the 30-day key's 7-day notice"
    );
    let notices: Vec<(String, Option<u8>)> = keys
        .events(&acme, EventQuery::newest(50))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == EventKind::Expiring)
        .map(|e| (e.key_name.as_str().to_owned(), e.days_left))
        .collect();
    assert_eq!(
        notices,
        [
            ("in 30 days".to_owned(), Some(7)),
            ("in 5 days".to_owned(), Some(1)),
            ("in 5 days".to_owned(), Some(7)),
        ]
    );
}

/// Fails its first `failures` deliveries, then records.
#[derive(Default)]
struct Flaky {
    failures: AtomicUsize,
    got: std::sync::Mutex<Vec<EventKind>>,
}

#[derive(Clone)]
struct FlakySink(Arc<Flaky>);

#[teamkey_core::async_trait]
impl EventSink for FlakySink {
    async fn deliver(&self, event: &KeyEvent) -> Result<(), SinkError> {
        let this = &self.0;
        if this
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("webhook down".into());
        }
        this.got.lock().unwrap().push(event.kind);
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_sink_never_fails_the_change_and_is_retried() {
    let sink = Arc::new(Flaky::default());
    sink.failures.store(2, Ordering::SeqCst);
    let keys = KeyManager::builder(MemoryStore::new())
        .event_sink(FlakySink(Arc::clone(&sink)))
        .build();
    let acme = team("acme");
    keys.on_behalf_of(Origin::new(Actor::operator("ops")))
        .create(&acme, "ci", CreateOptions::new())
        .await
        .expect("a sink never fails the change");
    tokio::time::sleep(StdDuration::from_millis(1_500)).await;
    assert_eq!(
        *sink.got.lock().unwrap(),
        [EventKind::Created],
        "third try delivers"
    );

    // Three failures: dropped from the sink, still in the store.
    sink.failures.store(3, Ordering::SeqCst);
    let key = keys.create(&acme, "ci2", CreateOptions::new()).await.unwrap();
    keys.revoke(&acme, &key.info.id).await.unwrap();
    tokio::time::sleep(StdDuration::from_millis(1_500)).await;
    let stored = keys.events(&acme, EventQuery::newest(10)).await.unwrap();
    assert_eq!(stored.len(), 3);
}

#[tokio::test]
async fn client_ips_are_recorded_only_when_enabled() {
    let ip = "203.0.113.5".parse().unwrap();
    for enabled in [false, true] {
        let keys = KeyManager::builder(MemoryStore::new())
            .record_client_ips(enabled)
            .build();
        let acme = team("acme");
        let key = keys.create(&acme, "ci", CreateOptions::new()).await.unwrap();
        keys.verify_from(key.key.expose_secret(), Some(ip)).await.unwrap();
        keys.flush_last_used().await.unwrap();
        let row = keys.find(&acme, &key.info.id).await.unwrap().unwrap();
        assert_eq!(row.last_used_ip, enabled.then_some(ip));
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(
            json.get("last_used_ip").is_some(),
            enabled,
            "shown only when kept"
        );
    }
}
