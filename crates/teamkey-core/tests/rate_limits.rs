//! Per-key rate limits through the manager: quotas, defaults, the 429
//! answer, limiter failures and the sampled `key.rate_limited` event.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use teamkey_core::events::{EventKind, EventQuery};
use teamkey_core::{
    Admission, CreateOptions, KeyId, KeyManager, LimiterFailure, LocalRateLimiter, ManualClock, MemoryStore,
    PolicyError, RateDecision, RateLimit, RateLimitError, RateLimiter, TeamId, TeamPolicy, TeamRules,
};
use time::macros::datetime;

fn five_per_ten() -> RateLimit {
    RateLimit::new(5, Duration::from_secs(10)).unwrap()
}

fn acme() -> TeamId {
    TeamId::new("acme").unwrap()
}

struct Fixture {
    keys: KeyManager,
    clock: ManualClock,
}

fn fixture() -> Fixture {
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .rate_limiter(LocalRateLimiter::new().clock(clock.clone()))
        .build();
    Fixture { keys, clock }
}

async fn admit(keys: &KeyManager, key: &str) -> Admission {
    let principal = keys.verify(key).await.unwrap();
    keys.admit(&principal).await
}

fn header<'a>(answer: &'a teamkey_core::Answer, name: &str) -> &'a str {
    answer
        .varying_headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name}"))
}

#[tokio::test]
async fn the_sixth_request_in_the_window_is_429_with_the_headers() {
    let f = fixture();
    let options = CreateOptions::new().rate_limit(five_per_ten());
    let limited = f.keys.create(&acme(), "limited", options.clone()).await.unwrap();
    let other = f.keys.create(&acme(), "other", options).await.unwrap();
    let key = limited.key.expose_secret();

    for left in (0..5).rev() {
        let Admission::Allowed(headers) = admit(&f.keys, key).await else {
            panic!("within the quota");
        };
        let headers: Vec<(&str, String)> = headers.iter().collect();
        assert_eq!(
            headers[0],
            ("ratelimit-policy", "\"default\";q=5;w=10".to_owned())
        );
        assert!(
            headers[1].1.starts_with(&format!("\"default\";r={left};t=")),
            "{headers:?}"
        );
    }
    let Admission::Refused(answer) = admit(&f.keys, key).await else {
        panic!("the sixth is refused");
    };
    assert_eq!(answer.status, 429);
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(header(&answer, "retry-after"), "2");
    assert_eq!(header(&answer, "ratelimit-policy"), "\"default\";q=5;w=10");
    assert_eq!(header(&answer, "ratelimit"), "\"default\";r=0;t=10");
    assert!(answer.headers.contains(&("cache-control", "no-store")));
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        body["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    assert_eq!(body["status"], 429);

    assert!(
        matches!(
            admit(&f.keys, other.key.expose_secret()).await,
            Admission::Allowed(_)
        ),
        "another key of the team is unaffected"
    );
    f.clock.advance(time::Duration::seconds(10));
    assert!(
        matches!(admit(&f.keys, key).await, Admission::Allowed(_)),
        "allowed again after the window"
    );
}

/// Plans with a team-wide default.
struct Plans;

#[teamkey_core::async_trait]
impl TeamPolicy for Plans {
    async fn rules(&self, team: &TeamId) -> Result<TeamRules, PolicyError> {
        Ok(match team.as_str() {
            "acme" => TeamRules::allow_all().rate_limit(RateLimit::new(2, Duration::from_secs(60)).unwrap()),
            _ => TeamRules::allow_all(),
        })
    }
}

#[tokio::test]
async fn a_key_limit_beats_the_team_default_which_beats_the_manager_default() {
    let keys = KeyManager::builder(MemoryStore::new())
        .policy(Plans)
        .rate_limiter(LocalRateLimiter::new())
        .default_rate_limit(RateLimit::new(3, Duration::from_secs(60)).unwrap())
        .build();
    let globex = TeamId::new("globex").unwrap();
    // Within the plan's 2/60s, which is a ceiling as well as a default.
    let one_per_two_minutes = RateLimit::new(1, Duration::from_secs(120)).unwrap();
    let own = keys
        .create(
            &acme(),
            "own",
            CreateOptions::new().rate_limit(one_per_two_minutes),
        )
        .await
        .unwrap();
    let team_default = keys.create(&acme(), "team", CreateOptions::new()).await.unwrap();
    let manager_default = keys
        .create(&globex, "manager", CreateOptions::new())
        .await
        .unwrap();
    for (key, limit) in [
        (&own, "1/120s"),
        (&team_default, "2/60s"),
        (&manager_default, "3/60s"),
    ] {
        let principal = keys.verify(key.key.expose_secret()).await.unwrap();
        assert_eq!(principal.rate_limit().unwrap().to_string(), limit);
    }
    for _ in 0..2 {
        assert!(matches!(
            admit(&keys, team_default.key.expose_secret()).await,
            Admission::Allowed(_)
        ));
    }
    assert!(matches!(
        admit(&keys, team_default.key.expose_secret()).await,
        Admission::Refused(_)
    ));
}

#[tokio::test]
async fn without_a_limit_or_a_limiter_nothing_is_counted() {
    let keys = KeyManager::builder(MemoryStore::new())
        .rate_limiter(LocalRateLimiter::new())
        .build();
    let key = keys.create(&acme(), "free", CreateOptions::new()).await.unwrap();
    for _ in 0..100 {
        assert_eq!(admit(&keys, key.key.expose_secret()).await, Admission::Unlimited);
    }
    let keys = KeyManager::new(MemoryStore::new());
    let key = keys
        .create(
            &acme(),
            "no limiter",
            CreateOptions::new().rate_limit(five_per_ten()),
        )
        .await
        .unwrap();
    assert_eq!(admit(&keys, key.key.expose_secret()).await, Admission::Unlimited);
}

struct Down;

#[teamkey_core::async_trait]
impl RateLimiter for Down {
    async fn check(&self, _: &KeyId, _: RateLimit) -> Result<RateDecision, RateLimitError> {
        Err("connection refused".into())
    }
}

#[tokio::test]
async fn a_failing_limiter_fails_open_by_default_or_closed_with_503() {
    for (mode, open) in [(None, true), (Some(LimiterFailure::Closed), false)] {
        let mut builder = KeyManager::builder(MemoryStore::new()).rate_limiter(Down);
        if let Some(mode) = mode {
            builder = builder.on_limiter_failure(mode);
        }
        let keys = builder.build();
        let key = keys
            .create(&acme(), "k", CreateOptions::new().rate_limit(five_per_ten()))
            .await
            .unwrap();
        match admit(&keys, key.key.expose_secret()).await {
            Admission::Unlimited => assert!(open),
            Admission::Refused(answer) => {
                assert!(!open);
                assert_eq!(answer.status, 503);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn refusals_are_sampled_into_one_event_an_hour() {
    let f = fixture();
    let key = f
        .keys
        .create(
            &acme(),
            "limited",
            CreateOptions::new().rate_limit(RateLimit::new(1, Duration::from_secs(60)).unwrap()),
        )
        .await
        .unwrap();
    let key = key.key.expose_secret();
    let _ = admit(&f.keys, key).await;
    for _ in 0..20 {
        assert!(matches!(admit(&f.keys, key).await, Admission::Refused(_)));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let limited = |events: Vec<teamkey_core::events::KeyEvent>| {
        events.iter().filter(|e| e.kind == EventKind::RateLimited).count()
    };
    assert_eq!(
        limited(f.keys.events(&acme(), EventQuery::newest(50)).await.unwrap()),
        1
    );
    f.clock.advance(time::Duration::hours(1));
    let _ = admit(&f.keys, key).await;
    let _ = admit(&f.keys, key).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        limited(f.keys.events(&acme(), EventQuery::newest(50)).await.unwrap()),
        2
    );
}
