//! Cost of a rate-limit check, next to the cost of verifying a key.
//!
//! `cargo bench -p teamkey-redis --bench check` (Redis at
//! `TEAMKEY_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`); the sample
//! counts and sizes are set on each bench (the in-process ones as
//! docs/performance.md runs teamkey-core's), so pass none. All benches run
//! in one process, one after another, so their ratios hold even on a noisy
//! machine:
//! - `redis_check`: one `RedisRateLimiter::check` on loopback (divan shows
//!   the median; `cargo run --release -p teamkey-redis --example latency`
//!   prints p50/p99/max over 10,000 checks);
//! - `local_decide`: the in-process `LocalRateLimiter::decide`;
//! - `local_admit`: `KeyManager::admit` with that limiter (the decision and
//!   the headers it answers with), for a verified caller;
//! - `verify_valid`: `KeyManager::verify` of a valid key in a `MemoryStore`
//!   of 10,000 keys, as in teamkey-core's `verify` bench: the yardstick.

#![allow(clippy::unwrap_used)] // a bench: a panic is the failure report

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use teamkey_core::{
    CreateOptions, KeyId, KeyManager, LocalRateLimiter, MemoryStore, RateLimit, RateLimiter, TeamId,
};
use teamkey_redis::RedisRateLimiter;

fn main() {
    divan::main();
}

/// Runs a future that never waits (MemoryStore's and the local limiter's
/// never do) with a single poll, so no executor cost hides in the figures.
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("these futures complete at once"),
    }
}

/// A quota never reached here: every check is an allowed one, which reads
/// and writes (a refused one only reads).
fn roomy() -> RateLimit {
    RateLimit::new(1_000_000, Duration::from_secs(1)).unwrap()
}

fn key_id() -> KeyId {
    KeyId::parse("benchKey0001").unwrap()
}

// One check per sample: the median is a check's, not an average's.
#[divan::bench(sample_count = 5_000, sample_size = 1)]
fn redis_check(bencher: divan::Bencher<'_, '_>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = std::env::var("TEAMKEY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let limiter = runtime
        .block_on(
            RedisRateLimiter::builder(url.as_str())
                .prefix("teamkey:bench:")
                .connect(),
        )
        .unwrap_or_else(|e| panic!("this bench needs Redis at {url} (TEAMKEY_TEST_REDIS_URL): {e}"));
    let (id, limit) = (key_id(), roomy());
    bencher.bench_local(|| {
        let decision = runtime.block_on(limiter.check(black_box(&id), limit)).unwrap();
        assert!(decision.allowed);
    });
}

#[divan::bench(sample_count = 300, sample_size = 2_000)]
fn local_decide(bencher: divan::Bencher<'_, '_>) {
    let limiter = LocalRateLimiter::new();
    let (id, limit) = (key_id(), roomy());
    bencher.bench_local(|| limiter.decide(black_box(&id), limit));
}

struct Fixture {
    keys: KeyManager,
    key: String,
}

fn fixture() -> Fixture {
    let keys = KeyManager::builder(MemoryStore::new())
        .max_active_keys(usize::MAX)
        .rate_limiter(LocalRateLimiter::new())
        .default_rate_limit(roomy())
        .build();
    let team = TeamId::new("acme").unwrap();
    // A realistic table: the looked-up key is one of 10,000.
    for i in 0..10_000 {
        ready(keys.create(&team, &format!("key {i}"), CreateOptions::default())).unwrap();
    }
    let key = ready(keys.create(&team, "bench", CreateOptions::default()))
        .unwrap()
        .key
        .expose_secret()
        .to_owned();
    Fixture { keys, key }
}

#[divan::bench(sample_count = 300, sample_size = 2_000)]
fn local_admit(bencher: divan::Bencher<'_, '_>) {
    let f = fixture();
    let caller = ready(f.keys.verify(&f.key)).unwrap();
    bencher.bench_local(|| ready(f.keys.admit(black_box(&caller))));
}

#[divan::bench(sample_count = 300, sample_size = 2_000)]
fn verify_valid(bencher: divan::Bencher<'_, '_>) {
    let f = fixture();
    bencher.bench_local(|| ready(f.keys.verify(black_box(&f.key))).unwrap());
}
