//! What is stored about a key, what is shown of it, and who a verified key
//! says the caller is.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::hash::{HashVersion, SecretDigest};
use crate::ident::{KeyId, KeyName, Scopes, TeamId};

/// Everything a store keeps about one key. Never the key itself: only the
/// digest of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub scopes: Scopes,
    /// When the key was made.
    pub created_at: OffsetDateTime,
    /// Last successful verification, as last flushed; `None` if never used.
    pub last_used_at: Option<OffsetDateTime>,
    /// After this instant the key no longer verifies.
    pub expires_at: Option<OffsetDateTime>,
    /// When the key was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// The key that replaced this one in a rotation, if any.
    pub replaced_by: Option<KeyId>,
}

impl KeyRecord {
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
        }
    }
}

/// One row of a key table: what a team may see of its keys. Serializes to
/// `{"id", "name", "preview", "created_at", "last_used_at", "expires_at",
/// "scopes"}` with RFC 3339 times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Public key id.
    pub id: KeyId,
    /// Descriptive name.
    pub name: KeyName,
    /// Masked preview.
    pub preview: String,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last use, if any.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// Expiry, if any.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Permissions.
    pub scopes: Scopes,
}

/// Who a verified key says the caller is. Scope every query by
/// [`Principal::team_id`].
///
/// It shares the store's record rather than copying it: cloning a
/// principal, or making one, costs one atomic increment.
#[derive(Clone)]
pub struct Principal {
    record: Arc<KeyRecord>,
}

impl Principal {
    /// The principal a verified record stands for.
    pub(crate) fn new(record: Arc<KeyRecord>) -> Self {
        Self { record }
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

    /// The key's permissions.
    pub fn scopes(&self) -> &Scopes {
        &self.record.scopes
    }

    /// Whether the key carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.record.scopes.contains(scope)
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
pub struct KeyUse {
    /// The key.
    pub key_id: KeyId,
    /// The latest time it verified.
    pub at: OffsetDateTime,
}

/// One rotation, as handed to [`KeyStore::rotate`](crate::KeyStore::rotate).
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The team that must own the old key.
    pub team_id: TeamId,
    /// The key being replaced.
    pub old: KeyId,
    /// The old key stops verifying at this instant (or earlier, if it
    /// already expires earlier).
    pub retire_at: OffsetDateTime,
    /// The new key, to insert.
    pub successor: KeyRecord,
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
