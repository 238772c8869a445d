//! teamkey for [actix-web] 4: team-scoped API keys as middleware and
//! extractors.
//!
//! ```
//! use actix_web::{App, HttpResponse, web};
//! use teamkey_actix::{Authenticated, ManagesKeys, RequireApiKey, management_routes};
//! use teamkey_core::{KeyManager, MemoryStore};
//!
//! async fn whoami(caller: Authenticated) -> HttpResponse {
//!     HttpResponse::Ok().body(caller.team_id().to_string())
//! }
//!
//! let keys = web::Data::new(KeyManager::new(MemoryStore::new()));
//! let app = App::new().app_data(keys).service(
//!     web::scope("/api/v1")
//!         .wrap(RequireApiKey::new())
//!         .route("/whoami", web::get().to(whoami))
//!         .service(management_routes::<ManagesKeys>()),
//! );
//! # drop(app);
//! ```
//!
//! - [`RequireApiKey`]: middleware for an `App` or `Scope`; handlers never
//!   run for a bad key; the principal goes into the request extensions.
//! - [`Authenticated`]: the extractor, with or without the middleware;
//!   [`MaybeAuthenticated`] for optional auth.
//! - [`RequireScope`] and [`Authenticated::require_scope`]: 403 without a scope.
//!   The middleware checks the principal of a [`RequireApiKey`] outside it,
//!   or verifies the key itself (app data or [`RequireScope::with_manager`]);
//!   never a 401 for a valid key that has the scope.
//! - [`management_routes`]: the key-management endpoints, and the team's
//!   audit trail (`GET /api-keys/events`).
//! - [`ClientIp`]: the client's address, when the app knows it better than
//!   the connection does (behind a proxy); see there.
//! - [`AuthRejection`]: how every refusal is answered.
//! - [`AddRateLimitHeaders`]: the `RateLimit` headers on the responses of
//!   routes that verify keys in extractors only (see "Rate limits").
//! - `openapi_json` (feature `openapi`): the route serving the management
//!   API's OpenAPI 3.1 document (`teamkey_core::management::openapi`).
//!
//! The header rules, status codes and bodies are the core's, shared with the
//! axum adapter: one byte-identical 401 for every key failure, 503 for a
//! store or team-policy failure (never a 500), 403 for a missing scope, 403
//! `plan_required` for a valid key of a team whose plan has no API access
//! ([`TeamPolicy`](teamkey_core::TeamPolicy)). The guards hand the client's
//! address ([`ClientIp`]) to the core, which keeps it as the key's
//! last-used IP only when the manager
//! [records client IPs](teamkey_core::KeyManagerBuilder::record_client_ips).
//! No `KeyManager`
//! (neither `App::app_data(web::Data::new(manager))` nor
//! [`RequireApiKey::with_manager`]) is a setup bug: 500 and an error log
//! naming the fix, never a 503 "retry later".
//!
//! ## Header rules
//!
//! [`RequireApiKey::rules`] and [`RequireScope::rules`] set the
//! [`HeaderRules`](teamkey_core::HeaderRules) of a guard. The extractors
//! ([`Authenticated`], [`MaybeAuthenticated`], [`ManagesKeys`]) and a
//! [`RequireScope`] without rules of its own read the app's: add the rules
//! themselves, not wrapped in `web::Data`, with `App::app_data(rules)`.
//! Without them the defaults apply (`X-API-Key` only).
//!
//! ```
//! use actix_web::{App, HttpResponse, web};
//! use teamkey_actix::Authenticated;
//! use teamkey_core::{HeaderRules, KeyManager, MemoryStore};
//!
//! async fn whoami(caller: Authenticated) -> HttpResponse {
//!     HttpResponse::Ok().body(caller.team_id().to_string())
//! }
//!
//! let rules = HeaderRules::new().header("X-Team-Key").expect("a valid header name");
//! let app = App::new()
//!     .app_data(web::Data::new(KeyManager::new(MemoryStore::new())))
//!     .app_data(rules) // the rules themselves, not `web::Data::new(rules)`
//!     .route("/whoami", web::get().to(whoami));
//! # drop(app);
//! ```
//!
//! ## The same names as the axum adapter
//!
//! `teamkey-axum` uses these names for the same things: [`Authenticated`],
//! [`MaybeAuthenticated`], [`RequireApiKey`], [`RequireScope`],
//! [`AuthRejection`], [`ManagesKeys`], [`management_routes`], `openapi_json`,
//! [`AddRateLimitHeaders`], and for the services the middleware makes,
//! [`RequireApiKeyMiddleware`], [`RequireScopeMiddleware`] and
//! [`AddRateLimitHeadersMiddleware`]. What differs
//! is what the frameworks make differ: actix-web extracts `Option<T>` for
//! every `T` by turning any error into `None`, which would let a bad key
//! pass as anonymous, so optional auth is [`MaybeAuthenticated`] only
//! (axum also takes `Option<Authenticated>`); and this middleware reads
//! the manager from the app data when it is not given one, where an axum
//! layer, which sees no state, must be given it. The 0.1 names
//! (`AuthError`, `management_scope`) remain as deprecated aliases.
//!
//! ## Guard order
//!
//! actix runs the middleware wrapped last first. From the outside in: CORS,
//! then [`RequireApiKey`], then [`RequireScope`]. The guards exempt no
//! method: a CORS preflight carries no key and gets the 401 like any other
//! request, so the CORS middleware must be outside them to answer it.
//!
//! ```
//! use actix_cors::Cors;
//! use actix_web::{App, HttpResponse, web};
//! use teamkey_actix::{RequireApiKey, RequireScope};
//! use teamkey_core::{KeyManager, MemoryStore};
//!
//! let keys = web::Data::new(KeyManager::new(MemoryStore::new()));
//! let app = App::new().app_data(keys).service(
//!     web::scope("/api/v1")
//!         .wrap(RequireScope::new("scans:write")) // 3. the scope
//!         .wrap(RequireApiKey::new()) // 2. the key
//!         .wrap(Cors::permissive()) // 1. CORS, outermost: answers preflights
//!         .route("/scans", web::post().to(HttpResponse::Ok)),
//! );
//! # drop(app);
//! ```
//!
//! [`RequireScope`] also works alone or in the other order: it then
//! verifies the key itself, with the app's `web::Data<KeyManager>`.
//!
//! ## Rate limits
//!
//! With a rate limiter on the manager
//! ([`KeyManagerBuilder::rate_limiter`](teamkey_core::KeyManagerBuilder::rate_limiter)),
//! whatever verifies the key takes the request from the key's quota right
//! after: [`RequireApiKey`], a [`RequireScope`] that verifies the key
//! itself, or, without a guard, the extractors. Over the limit the client
//! gets `429` ([`AuthRejection::RateLimited`], with `Retry-After` and the
//! `RateLimit` headers) and no handler runs. Each request is counted once,
//! however many guards and extractors it passes: the first extractor to
//! run counts it, and the others take its outcome, a refusal included. A
//! `429` swallowed by one extractor (`Option<..>`, `Result<..>`, a
//! middleware's `.extract().ok()`) is the answer of the next one, and of a
//! guard behind it, as on axum.
//!
//! The guards add `RateLimit-Policy` and `RateLimit` to every response of
//! a limited key. The extractors cannot reach the response: on routes
//! without a guard, wrap [`AddRateLimitHeaders`] around them. A key without
//! a limit costs nothing: no allocation, no header.
//!
//! [actix-web]: https://docs.rs/actix-web
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod context;
mod error;
mod extract;
mod limit;
mod manage;
mod middleware;
#[cfg(feature = "openapi")]
mod openapi;

pub use context::ClientIp;
#[allow(deprecated)]
pub use error::{AuthError, AuthRejection};
pub use extract::{Authenticated, ExtractFuture, MaybeAuthenticated};
pub use limit::{AddRateLimitHeaders, AddRateLimitHeadersMiddleware};
#[allow(deprecated)]
pub use manage::management_scope;
pub use manage::{KeyAdmin, ManagesKeys, management_routes};
pub use middleware::{
    GuardFuture, RequireApiKey, RequireApiKeyMiddleware, RequireScope, RequireScopeMiddleware,
};
#[cfg(feature = "openapi")]
#[cfg_attr(docsrs, doc(cfg(feature = "openapi")))]
pub use openapi::openapi_json;
pub use teamkey_core::management::MANAGE_SCOPE;
