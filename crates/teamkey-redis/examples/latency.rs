//! Latency of `RedisRateLimiter::check`: 10,000 sequential checks (after
//! 1,000 to warm up), each timed alone, then p50, p90, p99, p99.9 and max.
//!
//! ```sh
//! cargo run --release -p teamkey-redis --example latency
//! ```
//!
//! Redis is `TEAMKEY_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`);
//! `CHECKS=N` changes the count.

use std::time::{Duration, Instant};

use teamkey_core::{KeyId, RateLimit, RateLimiter};
use teamkey_redis::RedisRateLimiter;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = std::env::var("TEAMKEY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let checks: usize = std::env::var("CHECKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000)
        .max(1);
    let limiter = RedisRateLimiter::builder(url.as_str())
        .prefix("teamkey:latency:")
        .connect()
        .await?;
    let id = KeyId::parse("latencyKey01")?;
    // Never reached: every check is an allowed one (a read and a write).
    let limit = RateLimit::new(1_000_000, Duration::from_secs(1))?;

    for _ in 0..1_000 {
        limiter.check(&id, limit).await?;
    }
    let mut times = Vec::with_capacity(checks);
    let started = Instant::now();
    for _ in 0..checks {
        let start = Instant::now();
        let decision = limiter.check(&id, limit).await?;
        times.push(start.elapsed());
        if !decision.allowed {
            return Err("a check was refused: the figures would mix in reads only".into());
        }
    }
    let total = started.elapsed();
    times.sort_unstable();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    println!("{checks} sequential checks on {url} in {total:.2?}");
    println!(
        "p50 {:.1?}  p90 {:.1?}  p99 {:.1?}  p99.9 {:.1?}  max {:.1?}",
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
        times[times.len() - 1]
    );
    Ok(())
}
