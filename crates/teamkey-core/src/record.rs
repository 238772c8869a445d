//! What is stored about a key, what is shown of it, and who a verified key
//! says the caller is.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::events::KeyEvent;
use crate::hash::{HashVersion, SecretDigest};
use crate::ident::{KeyId, KeyName, Scopes, TeamId};
use crate::rate_limit::RateLimit;

/// Everything a store keeps about one key. Never the key itself: only the
/// digest of its secret.
///
/// The record grows from release to release, so it is `#[non_exhaustive]`:
/// a store makes one with [`KeyRecord::new`] and sets the optional fields,
/// which keeps compiling when fields are added (they start at their
/// defaults). A key-value store can keep the whole record as one blob,
/// [`KeyRecord::to_bytes`] / [`KeyRecord::from_bytes`], beside its indexed
/// id and team columns; serde support is there for other encodings.
///
/// ```
/// use teamkey_core::{HashVersion, KeyId, KeyName, KeyRecord, Scopes, SecretDigest, TeamId};
/// use time::macros::datetime;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // As a store reads it back from its row:
/// let mut record = KeyRecord::new(
///     KeyId::parse("3xAmPle0Key1")?,
///     TeamId::new("acme")?,
///     KeyName::new("CI/CD Pipeline")?,
///     "tk_live_3xAmPle0Key1…x9zK",
///     SecretDigest::from_bytes([7; 32]),
///     HashVersion::PrefixedSha256,
///     Scopes::new(["scans:read"])?,
///     datetime!(2026-11-27 9:00 UTC),
/// );
/// record.last_used_at = Some(datetime!(2026-11-27 10:00 UTC));
///
/// let blob = record.to_bytes();
/// assert_eq!(KeyRecord::from_bytes(&blob)?, record);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyRecord {
    /// Public key id; unique; the lookup key.
    pub id: KeyId,
    /// The team that owns the key.
    pub team_id: TeamId,
    /// Descriptive name.
    pub name: KeyName,
    /// Masked preview, such as `tk_live_3xAmPle0Key1…x9zK`.
    pub preview: String,
    /// Digest of the secret.
    pub digest: SecretDigest,
    /// How `digest` was made.
    pub hash_version: HashVersion,
    /// Permissions.
    #[serde(default)]
    pub scopes: Scopes,
    /// When the key was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last successful verification, as last flushed; `None` if never used.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// After this instant the key no longer verifies.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When the key was revoked, if it was.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The key that replaced this one in a rotation, if any.
    #[serde(default)]
    pub replaced_by: Option<KeyId>,
    /// The key this one replaced in a rotation, if any.
    #[serde(default)]
    pub rotated_from: Option<KeyId>,
    /// The client address of the last use, as last flushed; kept only when
    /// the manager records client IPs (off by default: an IP is personal
    /// data in some jurisdictions).
    #[serde(default)]
    pub last_used_ip: Option<IpAddr>,
    /// The key's own rate limit; `None`: the team's or the manager's
    /// default, if any.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// The version [`KeyRecord::to_bytes`] writes.
const RECORD_ENCODING: u8 = 1;

/// A blob that [`KeyRecord::from_bytes`] cannot read. Never holds the blob.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordDecodeError {
    /// Written by a newer teamkey than this one.
    #[error("key record encoding version {0} is newer than this teamkey reads (up to {RECORD_ENCODING})")]
    UnsupportedVersion(u64),
    /// Not a key record, or one that breaks teamkey's rules.
    #[error("invalid key record: {0}")]
    Invalid(#[source] serde_json::Error),
}

impl KeyRecord {
    /// A record with the required fields; every optional field starts
    /// empty (never used, no expiry, not revoked, not rotated).
    #[allow(clippy::too_many_arguments)] // one per required column, named by type
    pub fn new(
        id: KeyId,
        team_id: TeamId,
        name: KeyName,
        preview: impl Into<String>,
        digest: SecretDigest,
        hash_version: HashVersion,
        scopes: Scopes,
        created_at: OffsetDateTime,
    ) -> Self {
        Self {
            id,
            team_id,
            name,
            preview: preview.into(),
            digest,
            hash_version,
            scopes,
            created_at,
            last_used_at: None,
            expires_at: None,
            revoked_at: None,
            replaced_by: None,
            rotated_from: None,
            last_used_ip: None,
            rate_limit: None,
        }
    }

    /// Whether the key verifies at `now`: not revoked and not expired.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }

    /// The part of the record a key table shows.
    pub fn info(&self) -> KeyInfo {
        KeyInfo {
            id: self.id,
            name: self.name.clone(),
            preview: self.preview.clone(),
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            expires_at: self.expires_at,
            scopes: self.scopes.clone(),
            rotated_from: self.rotated_from,
            replaced_by: self.replaced_by,
            last_used_ip: self.last_used_ip,
            rate_limit: self.rate_limit,
        }
    }

    /// The record as one versioned blob (JSON with a `"v"` field), for
    /// key-value stores. [`KeyRecord::from_bytes`] reads every version
    /// written so far; fields added later decode to their defaults.
    pub fn to_bytes(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            v: u8,
            #[serde(flatten)]
            record: &'a KeyRecord,
        }
        let envelope = Envelope {
            v: RECORD_ENCODING,
            record: self,
        };
        // Every field serializes infallibly: validated text, integers, and
        // times that the manager keeps within years 1..=9999.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// Reads a blob written by [`KeyRecord::to_bytes`], checking every
    /// field as the constructors of its types do.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordDecodeError> {
        #[derive(Deserialize)]
        struct Version {
            v: u64,
        }
        let Version { v } = serde_json::from_slice(bytes).map_err(RecordDecodeError::Invalid)?;
        if v > u64::from(RECORD_ENCODING) {
            return Err(RecordDecodeError::UnsupportedVersion(v));
        }
        serde_json::from_slice(bytes).map_err(RecordDecodeError::Invalid)
    }
}

/// One row of a key table: what a team may see of its keys. Serializes to
/// `{"id", "name", "preview", "created_at", "last_used_at", "expires_at",
/// "scopes", "rotated_from", "replaced_by", "last_used_ip"}` with RFC 3339
/// times; `last_used_ip` only when the manager records client IPs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyInfo {
    /// Public key id.
    pub id: KeyId,
    /// Descriptive name.
    pub name: KeyName,
    /// Masked preview: `<prefix>_<key id>…<last 4 characters>`, the last
    /// four being checksum characters, never secret ones.
    pub preview: String,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: OffsetDateTime,
    /// Last use, if any (recorded in batches: up to a minute late by default).
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_used_at: Option<OffsetDateTime>,
    /// Expiry, if any.
    #[serde(with = "time::serde::rfc3339::option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub expires_at: Option<OffsetDateTime>,
    /// Permissions.
    pub scopes: Scopes,
    /// The key this one replaced in a rotation: tells apart two keys of
    /// the same name.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub rotated_from: Option<KeyId>,
    /// The key that replaced this one (which then lives out its grace).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub replaced_by: Option<KeyId>,
    /// The client address of the last use, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub last_used_ip: Option<IpAddr>,
    /// The key's own rate limit (`null`: the team's default applies).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::rate_limit::RateLimitFields>))]
    pub rate_limit: Option<RateLimit>,
}

/// Who a verified key says the caller is. Scope every query by
/// [`Principal::team_id`].
///
/// It shares the store's record rather than copying it: cloning a
/// principal, or making one, costs one atomic increment.
///
/// Its scopes and rate limit are the key's within its team's plan (see
/// [`TeamRules`](crate::TeamRules)): a key made under a larger plan keeps
/// what it was given in the store, but is granted no more than the
/// team's plan of the day.
#[derive(Clone)]
pub struct Principal {
    record: Arc<KeyRecord>,
    /// The quota that applies: the key's own within the plan's, else the
    /// plan's or the manager's default.
    rate_limit: Option<RateLimit>,
    /// The key's scopes that its team's plan grants, when that is fewer
    /// than the key carries; `None`: all of the key's.
    granted: Option<Scopes>,
}

impl Principal {
    /// The principal a verified record stands for, with the scopes the
    /// plan `granted` it if fewer than its own.
    pub(crate) fn new(
        record: Arc<KeyRecord>,
        rate_limit: Option<RateLimit>,
        granted: Option<Scopes>,
    ) -> Self {
        Self {
            record,
            rate_limit,
            granted,
        }
    }

    /// The rate limit that applies to this caller, if any: the key's own,
    /// else its team's default, else the manager's.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    /// The team the key belongs to.
    pub fn team_id(&self) -> &TeamId {
        &self.record.team_id
    }

    /// The key that was presented (its public id).
    pub fn key_id(&self) -> KeyId {
        self.record.id
    }

    /// The key's name.
    pub fn name(&self) -> &KeyName {
        &self.record.name
    }

    /// The key's permissions: its scopes that its team's plan grants.
    pub fn scopes(&self) -> &Scopes {
        self.granted.as_ref().unwrap_or(&self.record.scopes)
    }

    /// The record the key was verified against.
    pub(crate) fn record(&self) -> &KeyRecord {
        &self.record
    }

    /// Whether the key carries `scope`, and its team's plan grants it.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().contains(scope)
    }

    /// When the key stops verifying, if it does.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        self.record.expires_at
    }

    /// The key that replaced this one, if it was rotated (it then verifies
    /// only until its grace period ends).
    pub fn replaced_by(&self) -> Option<KeyId> {
        self.record.replaced_by
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("team_id", self.team_id())
            .field("key_id", &self.key_id())
            .field("name", self.name())
            .field("scopes", self.scopes())
            .finish()
    }
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        self.team_id() == other.team_id()
            && self.key_id() == other.key_id()
            && self.name() == other.name()
            && self.scopes() == other.scopes()
    }
}

impl Eq for Principal {}

/// `{"team_id", "key_id", "name", "scopes"}`.
impl Serialize for Principal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Principal", 4)?;
        s.serialize_field("team_id", self.team_id())?;
        s.serialize_field("key_id", &self.key_id())?;
        s.serialize_field("name", self.name())?;
        s.serialize_field("scopes", self.scopes())?;
        s.end()
    }
}

/// One observed use of a key, as handed to
/// [`KeyStore::record_last_used`](crate::KeyStore::record_last_used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyUse {
    /// The key.
    pub key_id: KeyId,
    /// The latest time it verified.
    pub at: OffsetDateTime,
    /// The client address of that use, when the manager records client
    /// IPs; a store keeps it beside `at` (or ignores it).
    pub ip: Option<IpAddr>,
}

impl KeyUse {
    /// A use of `key_id` at `at`, address unknown.
    pub fn new(key_id: KeyId, at: OffsetDateTime) -> Self {
        Self { key_id, at, ip: None }
    }

    /// With the client's address.
    pub fn ip(mut self, ip: Option<IpAddr>) -> Self {
        self.ip = ip;
        self
    }
}

/// One rotation, as handed to [`KeyStore::rotate`](crate::KeyStore::rotate).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Rotation {
    /// The team that must own the old key.
    pub team_id: TeamId,
    /// The key being replaced.
    pub old: KeyId,
    /// The old key stops verifying at this instant (or earlier, if it
    /// already expires earlier).
    pub retire_at: OffsetDateTime,
    /// The new key, to insert (its `rotated_from` is `old`).
    pub successor: KeyRecord,
    /// The `key.rotated` event, to record with the change.
    pub event: KeyEvent,
}

impl Rotation {
    /// A rotation of `old` (of `team_id`) to `successor`, the old key
    /// retiring at `retire_at`, recorded as `event`.
    pub fn new(
        team_id: TeamId,
        old: KeyId,
        retire_at: OffsetDateTime,
        successor: KeyRecord,
        event: KeyEvent,
    ) -> Self {
        Self {
            team_id,
            old,
            retire_at,
            successor,
            event,
        }
    }
}

/// What [`KeyStore::rotate`](crate::KeyStore::rotate) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateOutcome {
    /// The old key was retired and the successor inserted.
    Rotated,
    /// No unrevoked key with that id in that team; nothing changed.
    NotFound,
    /// The old key already has a successor; nothing changed.
    AlreadyRotated,
}
