//! teamkey for [actix-web] 4: team-scoped API keys as middleware and
//! extractors.
//!
//! ```
//! use actix_web::{App, HttpResponse, web};
//! use teamkey_actix::{Authenticated, ManagesKeys, RequireApiKey, management_scope};
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
//!         .service(management_scope::<ManagesKeys>()),
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
//! - [`management_scope`]: the key-management endpoints.
//!
//! The header rules, status codes and bodies are the core's, shared with the
//! axum adapter: one byte-identical 401 for every key failure, 503 for a
//! store failure (never a 500), 403 for a missing scope. No `KeyManager`
//! (neither `App::app_data(web::Data::new(manager))` nor
//! [`RequireApiKey::with_manager`]) is a setup bug: 500 and an error log
//! naming the fix, never a 503 "retry later".
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
//! [actix-web]: https://docs.rs/actix-web
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod extract;
mod manage;
mod middleware;

pub use error::AuthError;
pub use extract::{Authenticated, ExtractFuture, MaybeAuthenticated};
pub use manage::{KeyAdmin, ManagesKeys, management_scope};
pub use middleware::{RequireApiKey, RequireApiKeyMiddleware, RequireScope, RequireScopeMiddleware};
pub use teamkey_core::management::MANAGE_SCOPE;
