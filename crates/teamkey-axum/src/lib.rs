//! teamkey for [axum] 0.8: team-scoped API keys in two lines.
//!
//! ```
//! use axum::{Json, Router, extract::FromRef, routing::get};
//! use teamkey_axum::{Authenticated, ManagesKeys, management_routes};
//! use teamkey_core::{KeyManager, MemoryStore};
//!
//! #[derive(Clone, FromRef)]
//! struct AppState {
//!     keys: KeyManager,
//! }
//!
//! async fn whoami(caller: Authenticated) -> Json<serde_json::Value> {
//!     Json(serde_json::json!({ "team": caller.team_id().as_str() }))
//! }
//!
//! let state = AppState { keys: KeyManager::new(MemoryStore::new()) };
//! let app: Router = Router::new()
//!     .route("/whoami", get(whoami))
//!     .nest("/api/v1", management_routes::<_, ManagesKeys>())
//!     .with_state(state);
//! ```
//!
//! - [`Authenticated`]: the extractor; [`MaybeAuthenticated`] (or
//!   `Option<Authenticated>`) for optional auth.
//! - [`RequireApiKey`]: the layer that guards a whole router; handlers
//!   never run for a bad key. [`RequireApiKey::from_state`] takes the
//!   manager from the state you already have.
//! - [`RequireScope`] and [`Authenticated::require_scope`]: 403 without a scope.
//!   The layer checks the principal of a [`RequireApiKey`] outside it,
//!   or verifies the key itself when given the manager
//!   ([`RequireScope::with_manager`]); with neither it answers 500 and
//!   logs the fix, never a 401.
//! - [`management_routes`]: `GET/POST /api-keys`, `GET /api-keys/events`
//!   (the team's audit trail), `DELETE /api-keys/{id}`,
//!   `POST /api-keys/{id}/rotate`, for the team of a [`KeyAdmin`].
//! - [`ClientIp`]: the client's address, when the app knows it better than
//!   the socket does (behind a proxy); see there.
//! - [`AuthRejection`]: how every refusal is answered.
//! - [`AddRateLimitHeaders`]: the `RateLimit` headers on the responses of
//!   routes that verify keys in extractors only (see "Rate limits").
//! - `openapi_json` (feature `openapi`): the route serving the management
//!   API's OpenAPI 3.1 document (`teamkey_core::management::openapi`).
//!
//! Header rules ([`HeaderRules`](teamkey_core::HeaderRules)): `X-API-Key` by
//! default, configurable, optionally `Authorization: Bearer`; exactly one
//! key header; visible ASCII; a length cap checked before any hashing; a key
//! in the query string is never read. Every key failure is the same 401, a
//! store or team-policy failure is 503, a missing scope 403, a valid key of
//! a team whose plan has no API access ([`TeamPolicy`](teamkey_core::TeamPolicy))
//! 403 `plan_required`, guards that cannot check keys (a setup bug) 500.
//! The guards hand the client's address ([`ClientIp`]) to the core, which
//! keeps it as the key's last-used IP only when the manager
//! [records client IPs](teamkey_core::KeyManagerBuilder::record_client_ips).
//! Set the header rules on the guard
//! ([`RequireApiKey::rules`]), or, in an app that verifies keys in
//! extractors only, with the [`with_rules`] layer.
//!
//! ## The same names as the actix adapter
//!
//! `teamkey-actix` uses these names for the same things: [`Authenticated`],
//! [`MaybeAuthenticated`], [`RequireApiKey`], [`RequireScope`],
//! [`AuthRejection`], [`ManagesKeys`], [`management_routes`], `openapi_json`,
//! [`AddRateLimitHeaders`], and for the services the layers make,
//! [`RequireApiKeyMiddleware`], [`RequireScopeMiddleware`] and
//! [`AddRateLimitHeadersMiddleware`]. What differs
//! is what the frameworks make differ: an axum layer sees no state, so
//! [`RequireApiKey`] is given the manager (`new`, `with_manager` or
//! `from_state`), where actix's reads its app data; and header rules for
//! extractors come from [`with_rules`] here, from `App::app_data` there.
//! The 0.1 names (`RequireApiKeyLayer`, `RequireScopeLayer`,
//! `management_router`) remain as deprecated aliases.
//!
//! ## Guard order
//!
//! axum runs the layer added last first. From the outside in: CORS, then
//! [`RequireApiKey`], then [`RequireScope`] next to the routes.
//! The guards exempt no method: a CORS preflight carries no key and gets
//! the 401 like any other request, so the CORS layer must be outside them
//! to answer it.
//!
//! ```
//! use axum::{Router, routing::post};
//! use teamkey_axum::{RequireApiKey, RequireScope};
//! use teamkey_core::{KeyManager, MemoryStore};
//! use tower_http::cors::CorsLayer;
//!
//! let keys = KeyManager::new(MemoryStore::new());
//! let app: Router = Router::new()
//!     .route("/scans", post(|| async { "written" }))
//!     .route_layer(RequireScope::new("scans:write")) // 3. the scope
//!     .layer(RequireApiKey::new(keys)) // 2. the key
//!     .layer(CorsLayer::permissive()); // 1. CORS, outermost: answers preflights
//! ```
//!
//! A [`RequireScope`] with no key layer outside it needs the manager,
//! `RequireScope::new("scans:write").with_manager(keys)`; without one it
//! answers 500 and logs the fix.
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
//! however many guards and extractors it passes.
//!
//! The guards add `RateLimit-Policy` and `RateLimit` to every response of
//! a limited key. The extractors cannot reach the response: on routes
//! without a guard, [`AddRateLimitHeaders`] adds them. A key without a
//! limit costs nothing: no allocation, no header.
//!
//! [axum]: https://docs.rs/axum
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod context;
mod extract;
mod layer;
mod limit;
mod manage;
#[cfg(feature = "openapi")]
mod openapi;
mod rejection;
mod rules;

pub use context::ClientIp;
pub use extract::{Authenticated, MaybeAuthenticated};
pub use layer::{GuardFuture, RequireApiKey, RequireApiKeyMiddleware, RequireScope, RequireScopeMiddleware};
pub use limit::{AddRateLimitHeaders, AddRateLimitHeadersMiddleware};
#[allow(deprecated)]
pub use manage::management_router;
pub use manage::{KeyAdmin, ManagesKeys, management_routes};
#[cfg(feature = "openapi")]
#[cfg_attr(docsrs, doc(cfg(feature = "openapi")))]
pub use openapi::openapi_json;
pub use rejection::AuthRejection;
pub use rules::with_rules;
pub use teamkey_core::management::MANAGE_SCOPE;

/// The 0.1 name of [`RequireApiKey`], the layer.
#[deprecated(
    since = "0.2.0",
    note = "renamed to `RequireApiKey`, the name both adapters use"
)]
pub type RequireApiKeyLayer = RequireApiKey;

/// The 0.1 name of [`RequireScope`], the layer.
#[deprecated(
    since = "0.2.0",
    note = "renamed to `RequireScope`, the name both adapters use"
)]
pub type RequireScopeLayer = RequireScope;
