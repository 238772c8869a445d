//! teamkey for [axum] 0.8: team-scoped API keys in two lines.
//!
//! ```
//! use axum::{Json, Router, extract::FromRef, routing::get};
//! use teamkey_axum::{Authenticated, ManagesKeys, management_router};
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
//!     .nest("/api/v1", management_router::<_, ManagesKeys>())
//!     .with_state(state);
//! ```
//!
//! - [`Authenticated`]: the extractor; `Option<Authenticated>` for optional auth.
//! - [`RequireApiKeyLayer`]: guards a whole router; handlers never run for a bad key.
//! - [`RequireScopeLayer`] and [`Authenticated::require_scope`]: 403 without a scope.
//!   The layer checks the principal of a [`RequireApiKeyLayer`] outside it,
//!   or verifies the key itself when given the manager
//!   ([`RequireScopeLayer::with_manager`]); with neither it answers 500 and
//!   logs the fix, never a 401.
//! - [`management_router`]: `GET/POST /api-keys`, `DELETE /api-keys/{id}`,
//!   `POST /api-keys/{id}/rotate`, for the team of a [`KeyAdmin`].
//!
//! Header rules ([`HeaderRules`](teamkey_core::HeaderRules)): `X-API-Key` by
//! default, configurable, optionally `Authorization: Bearer`; exactly one
//! key header; visible ASCII; a length cap checked before any hashing; a key
//! in the query string is never read. Every key failure is the same 401, a
//! store failure is 503, a missing scope 403, guards that cannot check keys
//! (a setup bug) 500.
//!
//! ## Guard order
//!
//! axum runs the layer added last first. From the outside in: CORS, then
//! [`RequireApiKeyLayer`], then [`RequireScopeLayer`] next to the routes.
//! The guards exempt no method: a CORS preflight carries no key and gets
//! the 401 like any other request, so the CORS layer must be outside them
//! to answer it.
//!
//! ```
//! use axum::{Router, routing::post};
//! use teamkey_axum::{RequireApiKeyLayer, RequireScopeLayer};
//! use teamkey_core::{KeyManager, MemoryStore};
//! use tower_http::cors::CorsLayer;
//!
//! let keys = KeyManager::new(MemoryStore::new());
//! let app: Router = Router::new()
//!     .route("/scans", post(|| async { "written" }))
//!     .route_layer(RequireScopeLayer::new("scans:write")) // 3. the scope
//!     .layer(RequireApiKeyLayer::new(keys)) // 2. the key
//!     .layer(CorsLayer::permissive()); // 1. CORS, outermost: answers preflights
//! ```
//!
//! A [`RequireScopeLayer`] with no key layer outside it needs the manager,
//! `RequireScopeLayer::new("scans:write").with_manager(keys)`; without one it
//! answers 500 and logs the fix.
//!
//! [axum]: https://docs.rs/axum
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod extract;
mod layer;
mod manage;
mod rejection;

pub use extract::Authenticated;
pub use layer::{RequireApiKey, RequireApiKeyLayer, RequireScope, RequireScopeLayer};
pub use manage::{KeyAdmin, ManagesKeys, management_router};
pub use rejection::AuthRejection;
pub use teamkey_core::management::MANAGE_SCOPE;
