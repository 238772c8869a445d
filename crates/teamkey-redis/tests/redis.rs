//! `RedisRateLimiter` against a real Redis: the quota, racing instances,
//! the local limiter's decisions, outages and recovery, the manager, and a
//! flood of one key over its quota.
//!
//! Redis is `TEAMKEY_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); a
//! Redis that does not answer fails these tests, it does not skip them.
//! The outage tests, and those that count Redis's EVALSHAs, start (and
//! stop, and kill) `redis-server`s of their own.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use teamkey_core::{
    Admission, CreateOptions, KeyId, KeyManager, LimiterFailure, LocalRateLimiter, ManualClock, MemoryStore,
    RateDecision, RateLimit, RateLimiter, TeamId,
};
use teamkey_redis::{RedisCheckError, RedisConnectError, RedisRateLimiter, redis};

const RETRY_INTERVAL: Duration = RedisRateLimiter::RETRY_INTERVAL;
use time::macros::datetime;

fn redis_url() -> String {
    std::env::var("TEAMKEY_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// A prefix no other test or run shares: each test starts from nothing.
fn fresh_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!(
        "teamkey:test:{}-{nanos}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A limiter on the test Redis, with room for a loaded CI machine.
async fn limiter() -> RedisRateLimiter {
    connect(RedisRateLimiter::builder(redis_url().as_str())).await
}

async fn connect(builder: teamkey_redis::RedisRateLimiterBuilder) -> RedisRateLimiter {
    let url = redis_url();
    builder
        .prefix(fresh_prefix())
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "these tests need Redis at {url} (TEAMKEY_TEST_REDIS_URL): {e}. \
                 Start one (`redis-server`) or point the variable at one."
            )
        })
}

fn id(n: u8) -> KeyId {
    KeyId::parse(&format!("abcdefABCD{n:02}")).unwrap()
}

fn limit(requests: u32, seconds: u64) -> RateLimit {
    RateLimit::new(requests, Duration::from_secs(seconds)).unwrap()
}

async fn check(limiter: &RedisRateLimiter, key: u8, quota: RateLimit) -> RateDecision {
    limiter.check(&id(key), quota).await.unwrap()
}

#[tokio::test]
async fn five_per_ten_seconds_on_redis_time() {
    let limiter = limiter().await;
    let quota = limit(5, 10);
    for left in (0..5).rev() {
        let d = check(&limiter, 1, quota).await;
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.remaining, left);
        // Whole again once every used allowance is back: 2 s each.
        assert_eq!(d.reset_after, Duration::from_secs(2) * (5 - left));
    }
    let refused = check(&limiter, 1, quota).await;
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    assert_eq!(refused.reset_after, Duration::from_secs(10));
    // One allowance back 2 s after the first request, a few ms ago.
    assert!(
        refused.retry_after <= Duration::from_secs(2) && refused.retry_after > Duration::from_millis(1_500),
        "{refused:?}"
    );
    let other = check(&limiter, 2, quota).await;
    assert!(other.allowed, "another key has its own quota");
    assert_eq!(other.remaining, 4);
    // One Redis key per API key, expiring when the quota is whole again.
    let mut redis = redis::Client::open(redis_url().as_str()).unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(limiter.state_key(&id(1)))
        .query(&mut redis)
        .unwrap();
    assert!((9_000..=10_000).contains(&ttl), "{ttl}");
    let state: String = redis::cmd("GET")
        .arg(limiter.state_key(&id(1)))
        .query(&mut redis)
        .unwrap();
    assert!(state.ends_with(" 5/10s"), "{state}");
}

#[tokio::test]
async fn allowances_come_back_on_redis_time() {
    let limiter = limiter().await;
    let quota = limit(2, 1);
    assert!(check(&limiter, 1, quota).await.allowed);
    assert!(check(&limiter, 1, quota).await.allowed);
    let refused = check(&limiter, 1, quota).await;
    assert!(!refused.allowed);
    tokio::time::sleep(refused.retry_after + Duration::from_millis(20)).await;
    let again = check(&limiter, 1, quota).await;
    assert!(again.allowed, "one back after retry_after: {again:?}");
    assert_eq!(again.remaining, 0);
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    let whole = check(&limiter, 1, quota).await;
    assert_eq!(whole.remaining, 1, "whole again after the window: {whole:?}");
}

/// A rotated key's successor goes on from what is left of its quota, with
/// the state's expiry; a key never counted hands over nothing.
#[tokio::test]
async fn a_successor_goes_on_from_what_is_left_of_the_rotated_keys_quota() {
    let limiter = limiter().await;
    let quota = limit(3, 60);
    assert!(check(&limiter, 1, quota).await.allowed);
    assert!(check(&limiter, 1, quota).await.allowed);
    limiter.carry_over(&id(1), &id(2)).await.unwrap();
    let next = check(&limiter, 2, quota).await;
    assert!(next.allowed && next.remaining == 0, "one of three left: {next:?}");
    assert!(!check(&limiter, 2, quota).await.allowed);
    let mut connection = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(limiter.state_key(&id(2)))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(ttl > 0, "the copy expires as the state does: {ttl}");
    limiter.carry_over(&id(7), &id(8)).await.unwrap();
    assert_eq!(
        check(&limiter, 8, quota).await.remaining,
        2,
        "whole: nothing to carry"
    );
}

#[tokio::test]
async fn the_test_clock_steps_over_windows() {
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let limiter = connect(RedisRateLimiter::builder(redis_url().as_str()).clock(clock.clone())).await;
    let quota = limit(5, 10);
    for left in (0..5).rev() {
        assert_eq!(check(&limiter, 1, quota).await.remaining, left);
    }
    let refused = check(&limiter, 1, quota).await;
    assert_eq!(
        refused,
        RateDecision::refused(Duration::from_secs(2), Duration::from_secs(10))
    );
    assert!(check(&limiter, 2, quota).await.allowed, "another key is apart");
    clock.advance(time::Duration::seconds(2));
    assert!(check(&limiter, 1, quota).await.allowed);
    assert!(!check(&limiter, 1, quota).await.allowed);
    clock.advance(time::Duration::seconds(10));
    assert_eq!(
        check(&limiter, 1, quota).await.remaining,
        4,
        "whole after a window"
    );
}

#[tokio::test]
async fn with_the_test_clock_a_state_outlives_its_real_expiry() {
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let limiter = connect(RedisRateLimiter::builder(redis_url().as_str()).clock(clock.clone())).await;
    // One allowance back each microsecond: on Redis's time the state
    // would expire after a millisecond, while the test clock stands still.
    let quota = limit(1_000_000, 1);
    assert_eq!(check(&limiter, 1, quota).await.remaining, 999_999);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(check(&limiter, 1, quota).await.remaining, 999_998);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_racing_admit_exactly_the_quota() {
    let prefix = fresh_prefix();
    let instance = || async {
        RedisRateLimiter::builder(redis_url().as_str())
            .prefix(prefix.clone())
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .unwrap()
    };
    let (a, b) = (instance().await, instance().await);
    let quota = limit(50, 60);
    let mut tasks = Vec::new();
    for task in 0..20 {
        let limiter = if task % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut remaining = Vec::new();
            for _ in 0..10 {
                let d = limiter.check(&id(1), quota).await.unwrap();
                if d.allowed {
                    remaining.push(d.remaining);
                }
            }
            remaining
        }));
    }
    let mut remaining = Vec::new();
    for task in tasks {
        remaining.extend(task.await.unwrap());
    }
    remaining.sort_unstable();
    // 200 requests in well under the 1.2 s one allowance takes to come back.
    assert_eq!(remaining.len(), 50, "allowed across both instances");
    assert_eq!(remaining, (0..50).collect::<Vec<_>>(), "each allowance once");
}

/// A small deterministic generator: the same sequence on every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[tokio::test]
async fn decides_exactly_as_the_local_limiter() {
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let redis = connect(RedisRateLimiter::builder(redis_url().as_str()).clock(clock.clone())).await;
    let local = LocalRateLimiter::new().clock(clock.clone());
    // Intervals of whole seconds, of a third (not a whole nanosecond), and
    // of a microsecond. Each key keeps its quota: a changed quota starts
    // whole in process, and keeps what it counted in Redis (where
    // instances may disagree on it for a while; tested below).
    let quotas = [
        limit(5, 10),
        limit(3, 10),
        limit(1, 1),
        limit(100, 60),
        limit(1_000_000, 1),
    ];
    let mut random = Lcg(12_345);
    let (mut allowed, mut refused) = (0, 0);
    for step in 0..2_000 {
        let key = random.below(5) as u8;
        let quota = quotas[usize::from(key)];
        let interval = time::Duration::try_from(quota.emission_interval()).unwrap();
        match random.below(6) {
            0 => clock.advance(time::Duration::microseconds(random.below(1_000_000) as i64)),
            1 => clock.advance(time::Duration::microseconds(random.below(1_000) as i64)),
            // Onto the boundaries: exactly one allowance back, or just short.
            2 => clock.advance(interval),
            3 => clock.advance(interval - time::Duration::microseconds(1)),
            _ => {}
        }
        let expected = local.decide(&id(key), quota);
        let got = redis.check(&id(key), quota).await.unwrap();
        assert_eq!(got, expected, "step {step}: key {key}, {quota}");
        if got.allowed {
            allowed += 1;
        } else {
            refused += 1;
        }
    }
    assert!(
        allowed > 300 && refused > 200,
        "both paths: {allowed} allowed, {refused} refused"
    );
}

/// A key checked under another quota (a plan change, a new default) keeps
/// what it counted: the requests still counted under the old quota count
/// under the new one, and they come back at the old quota's pace until
/// the new one counts a request.
#[tokio::test]
async fn a_changed_quota_keeps_what_it_counted_and_an_unreadable_state_counts_as_none() {
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let limiter = connect(RedisRateLimiter::builder(redis_url().as_str()).clock(clock.clone())).await;
    let (one, three) = (limit(1, 60), limit(3, 60));
    assert!(check(&limiter, 1, one).await.allowed);
    assert!(!check(&limiter, 1, one).await.allowed);
    // One request counted: one of three used, and this one the second.
    assert_eq!(
        check(&limiter, 1, three).await,
        RateDecision::allowed(1, Duration::from_secs(40))
    );
    // Two counted (one every 20 s under three): under one, 40 s to wait.
    assert_eq!(
        check(&limiter, 1, one).await,
        RateDecision::refused(Duration::from_secs(40), Duration::from_secs(60))
    );
    clock.advance(time::Duration::seconds(40));
    assert_eq!(
        check(&limiter, 1, one).await,
        RateDecision::allowed(0, Duration::from_secs(60))
    );

    // Unreadable, or counted under a quota that is no quota (no state this
    // limiter writes): as none, the quota whole.
    let mut redis = redis::Client::open(redis_url().as_str()).unwrap();
    for junk in [
        "",
        "garbage",
        "12 1/60s",
        "-17000000000000000000 1/60s",
        "99999999999999999999999999",
        "20300101000000000000000 0/60s",
        "20300101000000000000000 1/0s",
        "20300101000000000000000 x/60s",
        "20300101000000000000000 1000001/60s",
        "20300101000000000000000 1/86401s",
        "20300101000000000000000 99999999999999999999/1s",
    ] {
        let _: () = redis::cmd("SET")
            .arg(limiter.state_key(&id(2)))
            .arg(junk)
            .query(&mut redis)
            .unwrap();
        assert_eq!(check(&limiter, 2, three).await.remaining, 2, "{junk:?}");
    }
    // Another type under the key: an error, not a panic nor a pass.
    let _: () = redis::cmd("DEL")
        .arg(limiter.state_key(&id(3)))
        .query(&mut redis)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(limiter.state_key(&id(3)))
        .arg("a")
        .arg("b")
        .query(&mut redis)
        .unwrap();
    let err = limiter.check(&id(3), one).await.unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    let _: () = redis::cmd("DEL")
        .arg(limiter.state_key(&id(3)))
        .query(&mut redis)
        .unwrap();
}

/// Instances that disagree on a key's quota for a while (a plan change
/// inside the policy TTL, a rolling deploy of a new default) do not give
/// it a fresh quota at each switch: a client sent to each in turn gets the
/// larger quota once, not every request (found by the attack review).
#[tokio::test]
async fn instances_that_disagree_on_a_quota_never_reset_it_for_each_other() {
    let prefix = fresh_prefix();
    let instance = || {
        RedisRateLimiter::builder(redis_url().as_str())
            .prefix(prefix.clone())
            .timeout(Duration::from_secs(2))
            .connect()
    };
    let (a, b) = (instance().await.unwrap(), instance().await.unwrap());
    let (ten, two) = (limit(10, 3600), limit(2, 3600));
    let mut allowed = 0;
    for turn in 0..200 {
        let (instance, quota) = if turn % 2 == 0 { (&a, ten) } else { (&b, two) };
        if instance.check(&id(1), quota).await.unwrap().allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10, "at most the larger quota, counted once across both");
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    let built = RedisRateLimiter::builder("redis://127.0.0.1:6379").build();
    assert!(matches!(built, Err(RedisConnectError::NoRuntime)), "{built:?}");
}

#[tokio::test]
async fn a_bad_url_is_an_error() {
    let built = RedisRateLimiter::builder("http://127.0.0.1:6379").build();
    assert!(matches!(built, Err(RedisConnectError::Settings(_))), "{built:?}");
}

// ---- outages -----------------------------------------------------------

/// A port nothing listens on (as good as it gets: free a moment ago).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of this test's own, killed when dropped.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("these tests start redis-server (apt-get install redis-server): {e}"));
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server on {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn kill(mut self) -> u16 {
        self.stop();
        self.port
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

const SHORT: Duration = Duration::from_millis(200);
/// Room for the scheduler on a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(150);
/// A check that does not ask Redis: microseconds, with room for the same.
const FAST: Duration = Duration::from_millis(50);

/// Checks until one succeeds; how long it took.
async fn until_recovered(limiter: &RedisRateLimiter) -> Duration {
    let started = Instant::now();
    loop {
        if limiter.check(&id(1), limit(5, 10)).await.is_ok() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not recovered in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn nothing_listening_fails_within_the_timeout() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let limiter = RedisRateLimiter::builder(url.as_str())
        .timeout(SHORT)
        .build()
        .unwrap();
    let started = Instant::now();
    let err = limiter.check(&id(1), limit(5, 10)).await.unwrap_err();
    assert!(started.elapsed() < SHORT + SLACK, "{:?}", started.elapsed());
    assert!(err.to_string().contains("refused"), "{err}");
    // Right after, checks fail at once without asking.
    let started = Instant::now();
    let err = limiter.check(&id(1), limit(5, 10)).await.unwrap_err();
    assert!(started.elapsed() < FAST, "{:?}", started.elapsed());
    let down = err.downcast_ref::<RedisCheckError>().unwrap();
    assert!(matches!(down, RedisCheckError::Down { .. }), "{down:?}");
    let connected = RedisRateLimiter::builder(url.as_str())
        .timeout(SHORT)
        .connect()
        .await;
    assert!(
        matches!(connected, Err(RedisConnectError::Unavailable(_))),
        "{connected:?}"
    );
}

#[tokio::test]
async fn a_killed_redis_fails_checks_fast_and_a_restarted_one_serves_again() {
    let server = OwnRedis::start(free_port());
    let url = server.url();
    let limiter = RedisRateLimiter::builder(url.as_str())
        .timeout(SHORT)
        .connect()
        .await
        .unwrap();
    let quota = limit(5, 10);
    assert_eq!(check(&limiter, 1, quota).await.remaining, 4);

    let port = server.kill();
    for _ in 0..20 {
        let started = Instant::now();
        assert!(limiter.check(&id(1), quota).await.is_err());
        assert!(started.elapsed() < SHORT + SLACK, "{:?}", started.elapsed());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A new server, on the same address: the state and the script are gone.
    let _server = OwnRedis::start(port);
    let took = until_recovered(&limiter).await;
    assert!(took < RETRY_INTERVAL * 2 + SHORT + SLACK, "back after {took:?}");
    let d = check(&limiter, 1, quota).await;
    assert!(d.allowed && d.remaining < 4, "{d:?}");
}

#[tokio::test]
async fn a_hung_redis_fails_checks_within_the_timeout() {
    let server = OwnRedis::start(free_port());
    let limiter = RedisRateLimiter::builder(server.url().as_str())
        .timeout(SHORT)
        .connect()
        .await
        .unwrap();
    let quota = limit(1_000, 10);
    assert!(check(&limiter, 1, quota).await.allowed);

    // Stopped: its socket accepts, but nothing answers.
    server.signal("-STOP");
    let started = Instant::now();
    let err = limiter.check(&id(1), quota).await.unwrap_err();
    assert!(started.elapsed() < SHORT + SLACK, "{:?}", started.elapsed());
    assert!(
        matches!(
            err.downcast_ref::<RedisCheckError>(),
            Some(RedisCheckError::Timeout(_) | RedisCheckError::Redis(_))
        ),
        "{err}"
    );
    // While it is down, checks do not wait for it.
    let started = Instant::now();
    assert!(limiter.check(&id(1), quota).await.is_err());
    assert!(started.elapsed() < FAST, "{:?}", started.elapsed());
    // The next probe waits the timeout again, no longer.
    tokio::time::sleep(RETRY_INTERVAL).await;
    let started = Instant::now();
    assert!(limiter.check(&id(1), quota).await.is_err());
    assert!(started.elapsed() < SHORT + SLACK, "{:?}", started.elapsed());

    server.signal("-CONT");
    let took = until_recovered(&limiter).await;
    assert!(took < RETRY_INTERVAL * 2 + SHORT + SLACK, "back after {took:?}");
}

// ---- through the manager -------------------------------------------------

async fn manager(limiter: RedisRateLimiter, on_failure: LimiterFailure) -> (KeyManager, String) {
    let keys = KeyManager::builder(MemoryStore::new())
        .rate_limiter(limiter)
        .on_limiter_failure(on_failure)
        .build();
    let team = TeamId::new("acme").unwrap();
    let created = keys
        .create(&team, "limited", CreateOptions::new().rate_limit(limit(5, 10)))
        .await
        .unwrap();
    (keys, created.key.expose_secret().to_owned())
}

async fn admit(keys: &KeyManager, key: &str) -> Admission {
    let caller = keys.verify(key).await.unwrap();
    keys.admit(&caller).await
}

#[tokio::test]
async fn the_manager_answers_429_on_the_sixth() {
    let (keys, key) = manager(limiter().await, LimiterFailure::Open).await;
    for left in (0..5).rev() {
        let Admission::Allowed(headers) = admit(&keys, &key).await else {
            panic!("within the quota");
        };
        let state = headers.iter().find(|(name, _)| *name == "ratelimit").unwrap().1;
        assert!(state.starts_with(&format!("\"default\";r={left};")), "{state}");
    }
    let Admission::Refused(answer) = admit(&keys, &key).await else {
        panic!("the sixth is refused");
    };
    assert_eq!(answer.status, 429);
    let retry = answer
        .varying_headers
        .iter()
        .find(|(n, _)| *n == "retry-after")
        .unwrap();
    assert_eq!(retry.1, "2");
}

#[tokio::test]
async fn with_redis_unreachable_the_manager_fails_open_or_closed() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let unreachable = || {
        RedisRateLimiter::builder(url.as_str())
            .timeout(SHORT)
            .build()
            .unwrap()
    };

    let (open, key) = manager(unreachable(), LimiterFailure::Open).await;
    let started = Instant::now();
    assert_eq!(admit(&open, &key).await, Admission::Unlimited);
    assert!(started.elapsed() < SHORT + SLACK);
    assert_eq!(admit(&open, &key).await, Admission::Unlimited);

    let (closed, key) = manager(unreachable(), LimiterFailure::Closed).await;
    for _ in 0..2 {
        let started = Instant::now();
        let Admission::Refused(answer) = admit(&closed, &key).await else {
            panic!("closed: refused");
        };
        assert_eq!(answer.status, 503);
        assert!(started.elapsed() < SHORT + SLACK);
    }
}

// ---- a flood of one key ------------------------------------------------

/// How many EVALSHAs the Redis at `url` has run since it started.
fn evalsha_calls(url: &str) -> u64 {
    let mut redis = redis::Client::open(url).unwrap();
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut redis).unwrap();
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// What a flood's admissions came to.
#[derive(Debug, Default)]
struct Outcomes {
    allowed: u32,
    refused: u32,
    unlimited: u32,
    /// Refusals whose `Retry-After` is not 1 to 360 s (one allowance of
    /// 10/hour comes back every 6 minutes).
    bad_retry_after: u32,
}

/// `n` admissions of `caller`, all at once, with `others` (see
/// [`counted_exactly`]) started halfway through; the flood's outcomes, and
/// the others' slowest check.
async fn flood(
    keys: &KeyManager,
    caller: &teamkey_core::Principal,
    n: u32,
    others: &[teamkey_core::Principal],
) -> (Outcomes, Duration) {
    let admit = |_| {
        let (keys, caller) = (keys.clone(), caller.clone());
        tokio::spawn(async move { keys.admit(&caller).await })
    };
    let mut tasks: Vec<_> = (0..n / 2).map(admit).collect();
    let others: Vec<_> = others
        .iter()
        .map(|other| tokio::spawn(counted_exactly(keys.clone(), other.clone())))
        .collect();
    tasks.extend((n / 2..n).map(admit));
    let mut outcomes = Outcomes::default();
    for task in tasks {
        match task.await.unwrap() {
            Admission::Allowed(_) => outcomes.allowed += 1,
            Admission::Refused(answer) => {
                outcomes.refused += 1;
                let retry = answer
                    .varying_headers
                    .iter()
                    .find(|(name, _)| *name == "retry-after")
                    .and_then(|(_, value)| value.parse::<u64>().ok());
                if answer.status != 429 || !retry.is_some_and(|s| (1..=360).contains(&s)) {
                    outcomes.bad_retry_after += 1;
                }
            }
            _ => outcomes.unlimited += 1,
        }
    }
    let mut slowest = Duration::ZERO;
    for other in others {
        slowest = slowest.max(other.await.unwrap());
    }
    (outcomes, slowest)
}

/// Admits `caller`, with a quota of 3 per hour, 5 times in a row: it must
/// be counted exactly (r=2, r=1, r=0, then refused twice), never failing
/// (open: unlimited). Its slowest check.
async fn counted_exactly(keys: KeyManager, caller: teamkey_core::Principal) -> Duration {
    let mut slowest = Duration::ZERO;
    for left in [Some(2), Some(1), Some(0), None, None] {
        let started = Instant::now();
        let admission = keys.admit(&caller).await;
        slowest = slowest.max(started.elapsed());
        match (left, admission) {
            (Some(left), Admission::Allowed(headers)) => {
                let state = headers.state();
                assert!(state.starts_with(&format!("\"default\";r={left};")), "{state}");
            }
            (None, Admission::Refused(answer)) => assert_eq!(answer.status, 429),
            (left, admission) => panic!("expected {left:?} left, got {admission:?}"),
        }
    }
    slowest
}

/// The security review's attack: thousands of concurrent requests of one
/// key over its quota. Each used to cost one EVALSHA, enough to push a
/// check past the timeout, after which every key of every team went
/// unlimited (failing open) for 250 ms. Now a refused key is refused from
/// memory, at most `max_in_flight` checks are sent at once, and the other
/// keys keep being counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_one_over_limit_key_costs_redis_nothing_and_leaves_the_others_counted() {
    const FLOOD: u32 = 20_000;
    const OTHERS: usize = 8;
    // Its own server, so that its EVALSHAs are this test's alone; the
    // production settings (200 ms timeout, failing open).
    let server = OwnRedis::start(free_port());
    let url = server.url();
    let limiter = RedisRateLimiter::builder(url.as_str()).connect().await.unwrap();
    let keys = KeyManager::builder(MemoryStore::new())
        .rate_limiter(limiter)
        .on_limiter_failure(LimiterFailure::Open)
        .build();
    let team = TeamId::new("acme").unwrap();
    let caller = |name: String, quota: RateLimit| {
        let keys = keys.clone();
        let team = team.clone();
        async move {
            let created = keys
                .create(&team, &name, CreateOptions::new().rate_limit(quota))
                .await
                .unwrap();
            keys.verify(created.key.expose_secret()).await.unwrap()
        }
    };
    let attacker = caller("attacker".into(), limit(10, 3_600)).await;
    let mut others = Vec::new();
    for n in 0..2 * OTHERS {
        others.push(caller(format!("other {n}"), limit(3, 3_600)).await);
    }

    // 1. Fresh: nothing known of the key yet.
    let before = evalsha_calls(&url);
    let (outcomes, slowest) = flood(&keys, &attacker, FLOOD, &others[..OTHERS]).await;
    let first_wave = evalsha_calls(&url) - before;
    println!("fresh key: {outcomes:?}, {first_wave} EVALSHAs, other keys' slowest check {slowest:?}");
    assert_eq!(outcomes.allowed, 10, "{outcomes:?}");
    assert_eq!(outcomes.refused, FLOOD - 10, "{outcomes:?}");
    assert_eq!(
        (outcomes.unlimited, outcomes.bad_retry_after),
        (0, 0),
        "{outcomes:?}"
    );
    // The others' 4 each (their fifth is refused from memory), and the
    // flood's checks sent before the first refusal came back: those in
    // flight, and one more for each of the 10 allowed answers, whose turns
    // go to waiting checks before any refusal is known (74 was seen).
    let flood_cost = first_wave - 4 * OTHERS as u64;
    assert!(
        flood_cost <= (RedisRateLimiter::DEFAULT_MAX_IN_FLIGHT + 10 + OTHERS) as u64,
        "{flood_cost} EVALSHAs for {FLOOD} checks"
    );

    // 2. Refused: the flood is answered here, costing Redis nothing.
    let before = evalsha_calls(&url);
    let (outcomes, slowest) = flood(&keys, &attacker, FLOOD, &others[OTHERS..]).await;
    let second_wave = evalsha_calls(&url) - before;
    println!("refused key: {outcomes:?}, {second_wave} EVALSHAs, other keys' slowest check {slowest:?}");
    assert_eq!(outcomes.refused, FLOOD, "{outcomes:?}");
    assert_eq!(
        (outcomes.unlimited, outcomes.bad_retry_after),
        (0, 0),
        "{outcomes:?}"
    );
    assert_eq!(
        second_wave,
        4 * OTHERS as u64,
        "only the other keys' checks reach Redis"
    );
}

/// A Redis of the test's own (its EVALSHAs are the test's alone), and a
/// limiter on it on a test clock.
async fn own_redis_on_a_test_clock() -> (OwnRedis, ManualClock, RedisRateLimiter) {
    let server = OwnRedis::start(free_port());
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let limiter = RedisRateLimiter::builder(server.url().as_str())
        .clock(clock.clone())
        .timeout(SHORT)
        .connect()
        .await
        .unwrap();
    (server, clock, limiter)
}

#[tokio::test]
async fn a_refused_key_is_answered_from_memory_until_its_retry_after() {
    let (server, clock, limiter) = own_redis_on_a_test_clock().await;
    let url = server.url();
    let hourly = limit(10, 3_600);
    for left in (0..10).rev() {
        assert_eq!(check(&limiter, 1, hourly).await.remaining, left);
    }
    let refused = check(&limiter, 1, hourly).await;
    // One allowance back every 6 minutes.
    let refused_for =
        |seconds: u64| RateDecision::refused(Duration::from_secs(seconds), Duration::from_secs(3_600));
    assert_eq!(refused, refused_for(360));
    let asked = evalsha_calls(&url);

    // As Redis would answer, without asking it.
    clock.advance(time::Duration::seconds(100));
    for _ in 0..1_000 {
        assert_eq!(check(&limiter, 1, hourly).await, refused_for(260));
    }
    assert_eq!(evalsha_calls(&url), asked, "answered from memory");
    // Another key is asked.
    assert_eq!(check(&limiter, 2, hourly).await.remaining, 9);
    assert_eq!(evalsha_calls(&url), asked + 1);

    // Even while Redis hangs, the refused key stays refused, at once.
    server.signal("-STOP");
    let started = Instant::now();
    assert_eq!(check(&limiter, 1, hourly).await, refused_for(260));
    assert!(started.elapsed() < FAST, "{:?}", started.elapsed());
    server.signal("-CONT");

    // Up to the last microsecond...
    clock.advance(time::Duration::seconds(260) - time::Duration::microseconds(1));
    let last = check(&limiter, 1, hourly).await;
    assert_eq!(
        last,
        RateDecision::refused(Duration::from_micros(1), Duration::from_secs(3_600))
    );
    assert_eq!(evalsha_calls(&url), asked + 1);
    // ... and no longer: Redis is asked again, and allows one.
    clock.advance(time::Duration::microseconds(1));
    let again = check(&limiter, 1, hourly).await;
    assert!(again.allowed && again.remaining == 0, "{again:?}");
    assert_eq!(check(&limiter, 1, hourly).await, refused_for(360));
    assert_eq!(evalsha_calls(&url), asked + 3);

    // Checked under another quota, the refusal is forgotten here and Redis
    // decides: the ten requests counted count under twenty an hour too.
    assert_eq!(check(&limiter, 1, limit(20, 3_600)).await.remaining, 9);
    // Eleven counted, at three minutes each: 6 minutes until ten.
    assert_eq!(check(&limiter, 1, hourly).await, refused_for(360));
    assert_eq!(evalsha_calls(&url), asked + 5);
}

/// After a change of quota, what the old one counted comes back at its
/// pace: the wait may be longer than an interval of the new quota, and a
/// refusal says so. The memory of refusals answers as Redis did, and asks
/// Redis again once a window of the new quota at most (attack review).
#[tokio::test]
async fn after_a_quota_change_the_memory_answers_as_redis_did() {
    let (server, clock, limiter) = own_redis_on_a_test_clock().await;
    let url = server.url();
    let (old, new) = (limit(100, 60), limit(10, 1));
    for _ in 0..100 {
        assert!(check(&limiter, 1, old).await.allowed);
    }
    // 100 counted at 0.6 s each, 9 may stay under ten a second: 91 to come
    // back, all 100 in 60 s.
    let first = check(&limiter, 1, new).await;
    assert_eq!(
        first,
        RateDecision::refused(Duration::from_millis(54_600), Duration::from_secs(60))
    );
    let asked = evalsha_calls(&url);
    assert_eq!(check(&limiter, 1, new).await, first, "from memory, as Redis said");
    assert_eq!(evalsha_calls(&url), asked);
    for _ in 0..545 {
        clock.advance(time::Duration::milliseconds(100));
        assert!(!check(&limiter, 1, new).await.allowed);
    }
    let flood_checks = evalsha_calls(&url) - asked;
    assert!(flood_checks <= 55, "{flood_checks} checks of Redis in 54.5 s");
    clock.advance(time::Duration::milliseconds(100));
    let allowed = check(&limiter, 1, new).await;
    assert!(allowed.allowed && allowed.remaining == 0, "{allowed:?}");
}

/// A state counted under any extreme quota, as far ahead as that quota can
/// leave it, checked under any other: never a malformed reply (which fails
/// open by default), never a wait beyond the old quota's window, never
/// whole before the next is allowed (attack review; held).
#[tokio::test]
async fn extreme_quota_changes_give_well_formed_answers() {
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let limiter = connect(RedisRateLimiter::builder(redis_url().as_str()).clock(clock.clone())).await;
    let mut redis = redis::Client::open(redis_url().as_str()).unwrap();
    let quotas = [
        limit(1_000_000, 1),
        limit(1_000_000, 86_400),
        limit(1, 86_400),
        limit(1, 1),
        limit(3, 10),
        limit(999_999, 1),
        limit(7, 86_399),
        limit(2, 3_600),
    ];
    let now_ns: u128 = 1_893_456_000 * 1_000_000_000;
    for old in quotas {
        let t = old.emission_interval().as_nanos();
        let full = t * u128::from(old.requests());
        // As far ahead as the old quota leaves a state: at most full.
        let aheads = [1, t - 1, t, t + 1, full / 2 + 7, full - 1, full];
        for ahead in aheads.into_iter().filter(|&ahead| ahead <= full) {
            for new in quotas {
                let _: () = redis::cmd("SET")
                    .arg(limiter.state_key(&id(1)))
                    .arg(format!("{} {old}", now_ns + ahead))
                    .query(&mut redis)
                    .unwrap();
                let what = format!("{old} ahead {ahead} ns, under {new}");
                let d = limiter
                    .check(&id(1), new)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(
                    d.allowed
                        || (d.retry_after > Duration::ZERO
                            && d.retry_after <= old.window()
                            && d.reset_after >= d.retry_after),
                    "{what}: {d:?}"
                );
            }
        }
    }
}
