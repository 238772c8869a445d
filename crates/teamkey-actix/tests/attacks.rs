//! Attacks on rate limits over HTTP (actix) that once found a defect (no
//! guard or extractor counted requests), kept so that it stays fixed: a
//! key limited to one request a minute gets its second refused, through
//! the guard and through the extractor alike.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use actix_web::{App, HttpResponse, test, web};
use teamkey_actix::{Authenticated, RequireApiKey};
use teamkey_core::{CreateOptions, KeyManager, LocalRateLimiter, MemoryStore, RateLimit, TeamId};

#[actix_web::test]
async fn a_key_limited_to_one_a_minute_gets_429_on_its_second_request() {
    let keys = KeyManager::builder(MemoryStore::new())
        .rate_limiter(LocalRateLimiter::new())
        .build();
    let who = async |caller: Authenticated| HttpResponse::Ok().body(caller.team_id().to_string());
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(keys.clone()))
            .route("/whoami", web::get().to(who))
            .service(
                web::scope("/api")
                    .wrap(RequireApiKey::new())
                    .route("/scans", web::get().to(who)),
            ),
    )
    .await;
    let acme = TeamId::new("acme").unwrap();
    for path in ["/api/scans", "/whoami"] {
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
        for _ in 0..5 {
            let request = test::TestRequest::get()
                .uri(path)
                .append_header(("x-api-key", made.key.expose_secret()))
                .to_request();
            statuses.push(test::call_service(&app, request).await.status().as_u16());
        }
        assert_eq!(
            statuses,
            [200, 429, 429, 429, 429],
            "{path}: 5 requests of a 1/min key"
        );
    }
}
