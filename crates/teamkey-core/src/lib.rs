//! The core of [teamkey]: team-scoped API keys for Rust services.
//!
//! This crate knows no web framework and no database. It makes keys, hashes
//! and verifies them, and runs their lifecycle over any [`KeyStore`]:
//!
//! ```
//! use teamkey_core::{CreateOptions, KeyManager, MemoryStore, Scopes, TeamId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeyManager::new(MemoryStore::new());
//! let team = TeamId::new("acme")?;
//!
//! // Create: the full key is shown once.
//! let options = CreateOptions::new().scopes(Scopes::new(["scans:read"])?);
//! let created = keys.create(&team, "CI/CD Pipeline", options).await?;
//! let presented = created.key.expose_secret().to_owned();
//!
//! // Verify what a client sends in `X-API-Key`.
//! let caller = keys.verify(&presented).await?;
//! assert_eq!(caller.team_id(), &team);
//! assert!(caller.has_scope("scans:read"));
//!
//! // The key table shows only a masked preview.
//! let table = keys.list(&team).await?;
//! assert_eq!(table[0].name.as_str(), "CI/CD Pipeline");
//! assert!(!table[0].preview.contains(&presented[20..60]));
//!
//! // Revoking takes effect on the very next verification.
//! keys.revoke(&team, &created.info.id).await?;
//! assert!(keys.verify(&presented).await.is_err());
//! # Ok(())
//! # }
//! ```
//!
//! Data flow: an adapter reads the header and calls [`KeyManager::verify`];
//! [`KeyFormat::parse`] refuses malformed input without I/O; the record by
//! the public [`KeyId`], from memory (a `MemoryStore`, the verification
//! cache) or else one [`KeyStore::get`]; a SHA-256 (or peppered
//! HMAC-SHA-256) of the secret compared in constant time, skipped for
//! bytes that verified before (remembered by a keyed tag); revoked and
//! expiry checks; the use is recorded in memory and flushed in batches.
//!
//! [teamkey]: https://docs.rs/teamkey
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod answer;
mod authority;
mod built_in;
mod cache;
mod clock;
mod eager;
mod error;
pub mod events;
mod format;
mod hash;
mod ident;
mod last_used;
pub mod management;
mod manager;
#[cfg(feature = "memory")]
mod memory;
mod page;
mod policy;
mod presented;
mod rate_limit;
mod record;
mod refusal_log;
mod store;
#[cfg(feature = "test-kit")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-kit")))]
pub mod test_kit;

pub use answer::Answer;
/// The attribute [`KeyStore`] implementations need, re-exported so that a
/// custom store depends on teamkey alone: `#[teamkey::async_trait]`.
pub use async_trait::async_trait;
pub use authority::{Authority, Refusal};
pub use cache::{
    CacheConfig, DEFAULT_CACHE_ENTRIES, DEFAULT_MAX_AGE, DEFAULT_NEGATIVE_TTL, DEFAULT_TRUST_WINDOW,
    InvalidationSink, InvalidationSource,
};
pub use clock::{Clock, ManualClock, RECENT_CLOCK_LAG, SystemClock};
pub use eager::{Eager, Now};
pub use error::{
    HeaderProblem, MalformedKey, ManageError, Rejection, StoreError, ValidationError, VerifyError,
};
pub use format::{
    ApiKey, CHECKSUM_LEN, DEFAULT_PREFIX, DEFAULT_SECRET_LEN, KeyFormat, MAX_KEY_LEN, MAX_PREFIX_LEN,
    MAX_SECRET_LEN, MIN_SECRET_LEN, ParsedKey,
};
pub use hash::{HashVersion, Pepper, SecretDigest};
pub use ident::{
    KEY_ID_LEN, KeyId, KeyName, MAX_NAME_CHARS, MAX_SCOPE_CHARS, MAX_SCOPES, MAX_TEAM_ID_CHARS, Scope,
    Scopes, TeamId,
};
pub use manager::{
    Admission, CreateOptions, DEFAULT_LAST_USED_INTERVAL, DEFAULT_MAX_ACTIVE_KEYS, DEFAULT_MAX_GRACE,
    DEFAULT_MAX_LIFETIME, KeyManager, KeyManagerBuilder, NewKey, OnBehalfOf,
};
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use memory::MemoryStore;
pub use page::{Cursor, DEFAULT_PAGE_LIMIT, ExpiringQuery, ListQuery, MAX_PAGE_LIMIT, Page, PageRequest};
pub use policy::{DEFAULT_POLICY_TTL, PolicyError, TeamPolicy, TeamRules};
pub use presented::HeaderRules;
pub use rate_limit::{
    DEFAULT_TRACKED_KEYS, LimiterFailure, LocalRateLimiter, MAX_REQUESTS, MAX_WINDOW, RateDecision,
    RateLimit, RateLimitError, RateLimitHeaders, RateLimiter,
};
pub use record::{KeyInfo, KeyRecord, KeyUse, Principal, RecordDecodeError, RotateOutcome, Rotation};
pub use store::KeyStore;
/// The `time` crate, re-exported: expiries and grace periods are its types.
pub use time;
/// The `utoipa` crate, re-exported (feature `openapi`): the type of
/// [`management::openapi`]'s document, and what extends or merges it.
#[cfg(feature = "openapi")]
#[cfg_attr(docsrs, doc(cfg(feature = "openapi")))]
pub use utoipa;
