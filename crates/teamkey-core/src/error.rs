//! Error types. None of them ever holds or prints a key or a secret: the
//! most any of them carries is the public [`KeyId`].

use std::error::Error as StdError;

use crate::authority::Refusal;
use crate::ident::KeyId;

/// Input that breaks one of teamkey's rules (names, team ids, scopes,
/// key ids, configuration).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The team id is empty.
    #[error("team id must not be empty")]
    EmptyTeam,
    /// The team id is too long.
    #[error("team id must be at most {max} characters")]
    TeamTooLong {
        /// The limit.
        max: usize,
    },
    /// The team id holds a control character.
    #[error("team id must not contain control or invisible formatting characters")]
    TeamControlCharacter,
    /// The team id starts or ends with whitespace.
    #[error("team id must not start or end with whitespace")]
    TeamWhitespace,
    /// The key name is empty once trimmed.
    #[error("key name must not be empty")]
    EmptyName,
    /// The key name is too long.
    #[error("key name must be at most {max} characters")]
    NameTooLong {
        /// The limit.
        max: usize,
    },
    /// The key name holds a control character.
    #[error("key name must not contain control or invisible formatting characters")]
    NameControlCharacter,
    /// A scope is empty, too long or has a character outside `A-Za-z0-9:._-`.
    #[error("scopes must be 1 to 64 characters of A-Z, a-z, 0-9, ':', '.', '_' or '-'")]
    InvalidScope,
    /// Too many scopes.
    #[error("a key may have at most {max} scopes")]
    TooManyScopes {
        /// The limit.
        max: usize,
    },
    /// The expiry is not in the future.
    #[error("expiry must be in the future")]
    ExpiryNotInFuture,
    /// The expiry is further away than the manager allows (or than any
    /// date can be stored).
    #[error("expiry must be at most {max_days} days from now")]
    ExpiryTooFar {
        /// The limit, in days.
        max_days: i64,
    },
    /// Both an expiry instant and a lifetime were given.
    #[error("give expires_at or expires_in, not both")]
    ExpiryTwice,
    /// A negative grace period.
    #[error("grace period must not be negative")]
    NegativeGrace,
    /// A grace period longer than the manager allows.
    #[error("grace period must be at most {max_seconds} seconds")]
    GraceTooLong {
        /// The limit, in seconds.
        max_seconds: i64,
    },
    /// A page size outside 1 to the maximum.
    #[error("limit must be between 1 and {max}")]
    InvalidPageLimit {
        /// The largest page.
        max: usize,
    },
    /// Not a cursor this API handed out.
    #[error("not a valid page cursor")]
    InvalidCursor,
    /// Not an event id (a UUIDv7 this API handed out).
    #[error("not an event id")]
    InvalidEventId,
    /// The team's plan requires every key to expire, and none was given.
    #[error("this team's plan requires keys to expire: give expires_at or expires_in")]
    ExpiryRequired,
    /// A rate limit outside its bounds.
    #[error(
        "rate limit must be 1 to {max_requests} requests per a window of 1 to {max_window_seconds} whole seconds"
    )]
    InvalidRateLimit {
        /// Most requests per window.
        max_requests: u32,
        /// Longest window, in seconds.
        max_window_seconds: u64,
    },
    /// Not a key id (12 characters of A-Z, a-z, 0-9).
    #[error("not a key id: key ids are 12 characters of A-Z, a-z and 0-9")]
    InvalidKeyId,
    /// A key prefix that does not fit the key format.
    #[error(
        "key prefix must be 1 to 32 characters of a-z and 0-9 in parts joined by single '_', starting with a letter"
    )]
    InvalidPrefix,
    /// The manager must have a pepper, and none was given.
    #[error("a pepper is required (KeyManagerBuilder::require_pepper) but none was configured")]
    PepperRequired,
    /// A secret length outside the allowed range.
    #[error("secret length must be between {min} and {max} characters")]
    InvalidSecretLength {
        /// Shortest allowed.
        min: usize,
        /// Longest allowed.
        max: usize,
    },
}

/// Why a presented key could not even be parsed. Decided without any I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedKey {
    /// Nothing was presented.
    #[error("empty key")]
    Empty,
    /// The length does not match the configured format.
    #[error("wrong key length")]
    WrongLength,
    /// The prefix is not the configured one.
    #[error("wrong key prefix")]
    WrongPrefix,
    /// A character outside `A-Za-z0-9`.
    #[error("invalid character in key")]
    InvalidCharacter,
    /// The checksum does not match: a typo or a made-up key.
    #[error("key checksum mismatch")]
    BadChecksum,
}

/// Why no key could be read from a request's headers. Decided before any
/// parsing or hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderProblem {
    /// No key header at all.
    #[error("no API key header")]
    Missing,
    /// The key header is there, but empty.
    #[error("empty API key header")]
    Empty,
    /// More than one key header (never "first wins").
    #[error("more than one API key header")]
    Duplicate,
    /// A key in both the key header and `Authorization: Bearer`.
    #[error("API key in two different headers")]
    Ambiguous,
    /// Longer than the configured cap.
    #[error("API key header too long")]
    TooLong,
    /// A byte outside visible ASCII (0x21 to 0x7E): spaces, controls, non-ASCII.
    #[error("API key header has characters outside visible ASCII")]
    NotVisibleAscii,
}

/// A [`KeyStore`](crate::KeyStore) failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A record with that key id already exists.
    #[error("a key with this id already exists")]
    Conflict,
    /// The backend failed (connection lost, timeout, bad row...). The source
    /// error is kept for logs.
    #[error("key store backend failed")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
    /// The store does not do this (a custom store that keeps no events).
    #[error("the key store does not support {0}")]
    Unsupported(&'static str),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(error: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Backend(error.into())
    }
}

/// What a client may learn about a failed verification: all key failures
/// are one and the same answer, a store failure is another, and a valid key
/// of a team whose plan has no API access a third.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// Missing, malformed, unknown, wrong, revoked or expired key: HTTP 401.
    Unauthorized,
    /// The key could not be checked (store or team policy down): HTTP 503.
    /// Never a pass.
    Unavailable,
    /// The key is valid, but the team's plan does not include API access
    /// ([`TeamPolicy`](crate::TeamPolicy)): HTTP 403.
    NoApiAccess,
}

impl Rejection {
    /// The HTTP status code adapters answer with.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::Unauthorized => 401,
            Self::NoApiAccess => 403,
            Self::Unavailable => 503,
        }
    }
}

/// Why a presented key was refused. Keeps the precise reason for logs;
/// clients get only [`VerifyError::rejection`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The request did not carry exactly one well-formed key header.
    #[error("bad API key header: {0}")]
    Header(#[from] HeaderProblem),
    /// The key does not parse; the store was not asked.
    #[error("malformed API key: {0}")]
    Malformed(#[from] MalformedKey),
    /// Well formed, but no such key id.
    #[error("unknown API key {key_id}")]
    Unknown {
        /// The presented (public) key id.
        key_id: KeyId,
    },
    /// The key id exists but the secret does not match.
    #[error("secret mismatch for API key {key_id}")]
    Mismatch {
        /// The key id.
        key_id: KeyId,
    },
    /// The key was revoked.
    #[error("API key {key_id} is revoked")]
    Revoked {
        /// The key id.
        key_id: KeyId,
    },
    /// The key has expired (or its rotation grace period ended).
    #[error("API key {key_id} has expired")]
    Expired {
        /// The key id.
        key_id: KeyId,
    },
    /// The record was hashed with a pepper this manager does not have.
    #[error("API key {key_id} needs a pepper that is not configured")]
    PepperMissing {
        /// The key id.
        key_id: KeyId,
    },
    /// The key is valid, but its team's plan does not include API access.
    #[error("API key {key_id} is valid, but its team's plan has no API access")]
    NoApiAccess {
        /// The key id.
        key_id: KeyId,
    },
    /// The store failed; nothing is known about the key.
    #[error("key store unavailable")]
    Store(#[source] StoreError),
    /// The team policy could not answer; the key is not let through.
    #[error("team policy unavailable")]
    Policy(#[source] crate::policy::PolicyError),
}

impl VerifyError {
    /// The one classification every adapter answers with.
    pub fn rejection(&self) -> Rejection {
        match self {
            Self::Store(_) | Self::Policy(_) | Self::PepperMissing { .. } => Rejection::Unavailable,
            Self::NoApiAccess { .. } => Rejection::NoApiAccess,
            _ => Rejection::Unauthorized,
        }
    }

    /// The public key id concerned, when the key parsed.
    pub fn key_id(&self) -> Option<&KeyId> {
        match self {
            Self::Unknown { key_id }
            | Self::Mismatch { key_id }
            | Self::Revoked { key_id }
            | Self::Expired { key_id }
            | Self::PepperMissing { key_id }
            | Self::NoApiAccess { key_id } => Some(key_id),
            Self::Header(_) | Self::Malformed(_) | Self::Store(_) | Self::Policy(_) => None,
        }
    }
}

/// A failed management call (create, list, revoke, rotate).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManageError {
    /// The input breaks a rule; nothing was written.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No active key with that id in that team.
    #[error("key not found")]
    NotFound,
    /// The key was already rotated: rotate its successor instead.
    #[error("key was already rotated")]
    AlreadyRotated,
    /// The caller may not do this (least privilege); nothing was written.
    #[error(transparent)]
    Forbidden(#[from] Refusal),
    /// The team already has the most active keys the manager allows.
    #[error("a team may have at most {max} active keys")]
    TooManyKeys {
        /// The limit.
        max: usize,
    },
    /// The team's plan does not include API access: no key may be made.
    #[error("this team's plan does not include API access")]
    NoApiAccess,
    /// The team's plan does not grant these scopes; nothing was written.
    #[error("this team's plan does not grant {}", .scopes.iter().map(crate::ident::Scope::as_str).collect::<Vec<_>>().join(", "))]
    ScopesNotInPlan {
        /// The scopes asked for that the plan does not grant.
        scopes: Vec<crate::ident::Scope>,
    },
    /// The key's own rate limit is looser than the team's plan allows
    /// (the plan's limit is a ceiling for keys' own limits, and the limit
    /// of keys without one); nothing was written.
    #[error("this team's plan allows a key at most {}", .plan_limit)]
    RateLimitNotInPlan {
        /// The plan's limit.
        plan_limit: crate::rate_limit::RateLimit,
    },
    /// The team policy could not answer; nothing was written.
    #[error("team policy unavailable")]
    Policy(#[source] crate::policy::PolicyError),
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Random(#[source] rand::rngs::SysError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_failure_is_the_same_rejection() {
        let id = KeyId::parse("abcdefABCDEF").unwrap();
        for e in [
            VerifyError::Header(HeaderProblem::Missing),
            VerifyError::Malformed(MalformedKey::BadChecksum),
            VerifyError::Unknown { key_id: id },
            VerifyError::Mismatch { key_id: id },
            VerifyError::Revoked { key_id: id },
            VerifyError::Expired { key_id: id },
        ] {
            assert_eq!(e.rejection(), Rejection::Unauthorized, "{e}");
        }
        let down = VerifyError::Store(StoreError::backend("connection refused"));
        assert_eq!(down.rejection(), Rejection::Unavailable);
        assert_eq!(down.rejection().http_status(), 503);
        assert!(StdError::source(&down).is_some());
    }
}
