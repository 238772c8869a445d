//! Attacks on rate limits over HTTP (axum) that once found a defect (no
//! guard or extractor counted requests), kept so that it stays fixed: a
//! key limited to one request a minute gets its second refused, through
//! the guard and through the extractor alike.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::routing;
use teamkey_axum::{Authenticated, RequireApiKey};
use teamkey_core::{CreateOptions, KeyManager, LocalRateLimiter, MemoryStore, RateLimit, TeamId};
use tower::ServiceExt;

#[tokio::test]
async fn a_key_limited_to_one_a_minute_gets_429_on_its_second_request() {
    let keys = KeyManager::builder(MemoryStore::new())
        .rate_limiter(LocalRateLimiter::new())
        .build();
    let who = async |caller: Authenticated| caller.team_id().to_string();
    let guarded = Router::new()
        .route("/scans", routing::get(who))
        .layer(RequireApiKey::new(keys.clone()));
    let app = Router::new()
        .merge(guarded)
        .route("/whoami", routing::get(who))
        .with_state(keys.clone());

    let acme = TeamId::new("acme").unwrap();
    // The guard sends the RateLimit headers with every answer; the
    // extractor alone only with its 429s (no `AddRateLimitHeaders` here).
    for (path, with_headers) in [
        ("/scans", [true; 5]),
        ("/whoami", [false, true, true, true, true]),
    ] {
        // One quota per key: a fresh key for each path.
        let made = keys
            .create(
                &acme,
                "limited",
                CreateOptions::new().rate_limit(RateLimit::new(1, Duration::from_secs(60)).unwrap()),
            )
            .await
            .unwrap();
        let mut statuses = Vec::new();
        let mut headers = Vec::new();
        for _ in 0..5 {
            let request = Request::get(path)
                .header("x-api-key", made.key.expose_secret())
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            statuses.push(response.status().as_u16());
            headers.push(response.headers().contains_key("ratelimit"));
        }
        assert_eq!(
            statuses,
            [200, 429, 429, 429, 429],
            "{path}: 5 requests of a 1/min key"
        );
        assert_eq!(headers, with_headers, "{path}: RateLimit header sent");
    }
}
