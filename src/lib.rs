//! teamkey: team-scoped API-key authentication for Rust web services.
//!
//! A team creates named keys; the full key is shown once, then only a
//! masked preview; clients send it in `X-API-Key`; every request is scoped
//! to the key's team; revoking takes effect at once; rotation keeps the old
//! key alive for an optional grace period.
//!
//! ```
//! use teamkey::{CreateOptions, KeyManager, MemoryStore, TeamId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeyManager::new(MemoryStore::new());
//! let acme = TeamId::new("acme")?;
//! let created = keys.create(&acme, "Production", CreateOptions::default()).await?;
//! println!("shown once: {}", created.key.expose_secret());
//!
//! let caller = keys.verify(created.key.expose_secret()).await?;
//! assert_eq!(caller.team_id(), &acme);
//!
//! // Rotate: new key now, the old one works for 24 more hours.
//! let next = keys.rotate(&acme, &created.info.id, teamkey::time::Duration::hours(24)).await?;
//! assert!(keys.verify(created.key.expose_secret()).await.is_ok());
//! assert!(keys.verify(next.key.expose_secret()).await.is_ok());
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//! - `memory` (default): [`MemoryStore`], for single-process services and tests.
//! - `test-kit`: [`test_kit`], the conformance suite for your own [`KeyStore`].
//! - `axum`: [`axum`][mod-axum], the extractor, layer and management routes for axum 0.8.
//! - `actix`: [`actix`][mod-actix], the middleware, extractor and management routes for actix-web 4.
//! - `openapi`: `management::openapi`, the OpenAPI 3.1 document of the
//!   management API, and with `axum` or `actix` their `openapi_json` route.
//! - `sqlx-postgres`, `sqlx-sqlite`, `sqlx-mysql`: [`SqlxStore`] over an sqlx
//!   pool (PostgreSQL, SQLite, MySQL/MariaDB), with embedded migrations.
//! - `redis`: [`RedisRateLimiter`], per-key rate limits counted in Redis
//!   (one atomic script per check), so that every instance of a service
//!   takes from one quota; [`LocalRateLimiter`] counts in one process.
//!
//! Everything here is re-exported from `teamkey-core`, which knows no web
//! framework and no database. The examples on re-exported items are the
//! member crates' own and name them (`teamkey_core::…`, `teamkey_axum::…`);
//! in an app write `teamkey::…`, `teamkey::axum::…`, `teamkey::time::…`.
//!
//! Two duration types meet here: `std::time::Duration` for how long teamkey
//! keeps or waits for something (`policy_ttl`, `last_used_interval`, a
//! [`RateLimit`]'s window), and [`time::Duration`] (signed) for what is
//! computed against dates (`expires_in`, `max_lifetime`, `max_grace`, a
//! rotation's grace).
//!
// An item whose feature is off is linked to its page on docs.rs (built with
// all features), so that the docs of every feature set build without broken
// links (CI builds each one with -D warnings).
#![cfg_attr(
    not(any(feature = "memory", feature = "test-kit")),
    doc = "[`MemoryStore`]: https://docs.rs/teamkey/latest/teamkey/struct.MemoryStore.html"
)]
#![cfg_attr(
    not(feature = "test-kit"),
    doc = "[`test_kit`]: https://docs.rs/teamkey/latest/teamkey/test_kit/index.html"
)]
#![cfg_attr(feature = "axum", doc = "[mod-axum]: mod@axum")]
#![cfg_attr(
    not(feature = "axum"),
    doc = "[mod-axum]: https://docs.rs/teamkey/latest/teamkey/axum/index.html"
)]
#![cfg_attr(feature = "actix", doc = "[mod-actix]: mod@actix")]
#![cfg_attr(
    not(feature = "actix"),
    doc = "[mod-actix]: https://docs.rs/teamkey/latest/teamkey/actix/index.html"
)]
#![cfg_attr(
    not(any(feature = "sqlx-postgres", feature = "sqlx-sqlite", feature = "sqlx-mysql")),
    doc = "[`SqlxStore`]: https://docs.rs/teamkey/latest/teamkey/struct.SqlxStore.html"
)]
#![cfg_attr(
    not(feature = "redis"),
    doc = "[`RedisRateLimiter`]: https://docs.rs/teamkey/latest/teamkey/struct.RedisRateLimiter.html"
)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(inline)]
pub use teamkey_core::*;

#[cfg(any(feature = "sqlx-postgres", feature = "sqlx-sqlite", feature = "sqlx-mysql"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "sqlx-postgres", feature = "sqlx-sqlite", feature = "sqlx-mysql")))
)]
#[doc(inline)]
pub use teamkey_sqlx::{MIGRATIONS_TABLE, MigrateError, SqlxInvalidations, SqlxStore, sqlx};

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[doc(inline)]
pub use teamkey_redis::{
    RedisCheckError, RedisConnectError, RedisRateLimiter, RedisRateLimiterBuilder, redis,
};

// The README's and the guides' Rust blocks are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/custom-store.md")]
struct CustomStoreDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/policy-and-events.md")]
struct PolicyAndEventsDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/rate-limits.md")]
struct RateLimitsDoctests;

/// teamkey for axum 0.8 (feature `axum`): `Authenticated`, `RequireApiKey`,
/// scopes, `management_routes`.
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum {
    #[doc(inline)]
    pub use teamkey_axum::*;
}

/// teamkey for actix-web 4 (feature `actix`): `Authenticated`, `RequireApiKey`,
/// scopes, `management_routes`: the same names as for axum.
#[cfg(feature = "actix")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix")))]
pub mod actix {
    #[doc(inline)]
    pub use teamkey_actix::*;
}
