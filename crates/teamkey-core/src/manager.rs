//! `KeyManager`: the key lifecycle (create, list, revoke, rotate) and
//! verification, over any [`KeyStore`].

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use crate::clock::{Clock, SystemClock, stored_precision, unix_micros};
use crate::error::{ManageError, StoreError, ValidationError, VerifyError};
use crate::format::{ApiKey, KeyFormat};
use crate::hash::{Hasher, Pepper};
use crate::ident::{KeyId, KeyName, Scopes, TeamId};
use crate::last_used::LastUsed;
use crate::presented::HeaderRules;
use crate::record::{KeyInfo, KeyRecord, Principal, RotateOutcome, Rotation};
use crate::store::KeyStore;

/// How often last-used times are written by default.
pub const DEFAULT_LAST_USED_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// A fresh key id collides with an existing one with odds of about one in
/// 2^71; a few tries turn "practically never" into "never".
const ID_ATTEMPTS: usize = 3;

/// Logs why a key was refused, with its key id, never the key: a bad key
/// at `debug`, a server-side failure (store down, pepper missing) at `warn`.
fn log_failure(error: &VerifyError) {
    match error {
        VerifyError::Store(source) => tracing::warn!(
            error = %source,
            cause = source.source().map(tracing::field::display),
            "API key not verified: store unavailable"
        ),
        VerifyError::PepperMissing { key_id } => tracing::warn!(
            key_id = %key_id,
            "API key not verified: its record needs a pepper this server lacks"
        ),
        _ => tracing::debug!(
            key_id = error.key_id().map(tracing::field::display),
            reason = %error,
            "API key rejected"
        ),
    }
}

/// Options for [`KeyManager::create`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The key's permissions.
    pub scopes: Scopes,
    /// When the key stops working; `None` for never. Must be in the future.
    pub expires_at: Option<OffsetDateTime>,
}

/// A key just made: the full key, to show once, and its table row.
#[derive(Debug)]
pub struct NewKey {
    /// The full key. Show it to the user now; it cannot be recovered later.
    pub key: ApiKey,
    /// What the key table shows of it.
    pub info: KeyInfo,
}

/// Creates, lists, revokes, rotates and verifies keys.
///
/// Cheap to clone (one `Arc`): share it across tasks and handlers.
#[derive(Clone)]
pub struct KeyManager {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn KeyStore>,
    format: KeyFormat,
    hasher: Hasher,
    clock: Arc<dyn Clock>,
    last_used: LastUsed,
}

impl fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyManager")
            .field("format", &self.inner.format)
            .field("hasher", &self.inner.hasher)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

/// Configures a [`KeyManager`].
#[must_use]
pub struct KeyManagerBuilder {
    store: Arc<dyn KeyStore>,
    format: KeyFormat,
    pepper: Option<Pepper>,
    clock: Arc<dyn Clock>,
    last_used_interval: std::time::Duration,
}

impl KeyManagerBuilder {
    /// The key format (prefix, secret length). Default: `tk_live`, 40.
    pub fn format(mut self, format: KeyFormat) -> Self {
        self.format = format;
        self
    }

    /// A server-side pepper: new keys are stored as HMAC-SHA-256 under it.
    /// Keys stored before keep verifying.
    pub fn pepper(mut self, pepper: Pepper) -> Self {
        self.pepper = Some(pepper);
        self
    }

    /// The clock. Default: [`SystemClock`].
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How often last-used times are written. Default: 60 s.
    pub fn last_used_interval(mut self, interval: std::time::Duration) -> Self {
        self.last_used_interval = interval;
        self
    }

    /// The manager.
    pub fn build(self) -> KeyManager {
        let interval = i64::try_from(self.last_used_interval.as_micros()).unwrap_or(i64::MAX);
        let now = self.clock.unix_micros();
        KeyManager {
            inner: Arc::new(Inner {
                store: self.store,
                format: self.format,
                hasher: Hasher::new(self.pepper.as_ref()),
                clock: self.clock,
                last_used: LastUsed::new(interval, now),
            }),
        }
    }
}

impl KeyManager {
    /// A manager with default settings over `store`.
    pub fn new(store: impl KeyStore) -> Self {
        Self::builder(store).build()
    }

    /// A builder over `store`.
    pub fn builder(store: impl KeyStore) -> KeyManagerBuilder {
        KeyManagerBuilder {
            store: Arc::new(store),
            format: KeyFormat::default(),
            pepper: None,
            clock: Arc::new(SystemClock),
            last_used_interval: DEFAULT_LAST_USED_INTERVAL,
        }
    }

    /// The key format in use.
    pub fn format(&self) -> &KeyFormat {
        &self.inner.format
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.inner.store
    }

    /// Now, as stored.
    fn now(&self) -> OffsetDateTime {
        stored_precision(self.inner.clock.now())
    }

    /// Creates a key for `team_id`. The returned [`NewKey::key`] is the only
    /// copy of the full key there will ever be.
    ///
    /// The name is trimmed and must be 1 to 100 characters without control
    /// characters; an expiry must be in the future.
    pub async fn create(
        &self,
        team_id: &TeamId,
        name: &str,
        options: CreateOptions,
    ) -> Result<NewKey, ManageError> {
        let name = KeyName::new(name)?;
        let now = self.now();
        if options.expires_at.is_some_and(|at| at <= now) {
            return Err(ValidationError::ExpiryNotInFuture.into());
        }
        for _ in 0..ID_ATTEMPTS {
            let (key, record) = self.mint(team_id, &name, &options.scopes, options.expires_at, now)?;
            match self.inner.store.insert(&record).await {
                Ok(()) => {
                    tracing::info!(key_id = %record.id, team_id = %team_id, "API key created");
                    return Ok(NewKey {
                        key,
                        info: record.info(),
                    });
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// A new key and its record; nothing stored yet.
    fn mint(
        &self,
        team_id: &TeamId,
        name: &KeyName,
        scopes: &Scopes,
        expires_at: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<(ApiKey, KeyRecord), ManageError> {
        let key = self.inner.format.generate()?;
        let (version, digest) = self.inner.hasher.digest_new(key.secret());
        let record = KeyRecord {
            id: key.id(),
            team_id: team_id.clone(),
            name: name.clone(),
            preview: key.preview(),
            digest,
            hash_version: version,
            scopes: scopes.clone(),
            created_at: now,
            last_used_at: None,
            expires_at,
            revoked_at: None,
            replaced_by: None,
        };
        Ok((key, record))
    }

    /// The team's active keys, newest first. Never another team's.
    pub async fn list(&self, team_id: &TeamId) -> Result<Vec<KeyInfo>, ManageError> {
        let now = self.now();
        let mut records = self.inner.store.list(team_id).await?;
        records.retain(|r| &r.team_id == team_id && r.is_active(now));
        records.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(records.iter().map(KeyRecord::info).collect())
    }

    /// Revokes a key of `team_id`: it fails verification from the very next
    /// call. A key of another team, an unknown or an already revoked key is
    /// [`ManageError::NotFound`] and nothing changes.
    pub async fn revoke(&self, team_id: &TeamId, key_id: &KeyId) -> Result<(), ManageError> {
        if self.inner.store.revoke(team_id, key_id, self.now()).await? {
            tracing::info!(key_id = %key_id, team_id = %team_id, "API key revoked");
            Ok(())
        } else {
            Err(ManageError::NotFound)
        }
    }

    /// Rotates a key: makes a successor with the same name and scopes (and,
    /// if the old key had a lifetime, the same lifetime from now); the old
    /// key keeps working until now + `grace`, then stops. A zero grace
    /// retires it at once. Of concurrent rotations of one key exactly one
    /// succeeds; the others get [`ManageError::AlreadyRotated`].
    pub async fn rotate(
        &self,
        team_id: &TeamId,
        key_id: &KeyId,
        grace: Duration,
    ) -> Result<NewKey, ManageError> {
        if grace.is_negative() {
            return Err(ValidationError::NegativeGrace.into());
        }
        let now = self.now();
        let old = self
            .inner
            .store
            .get(key_id)
            .await?
            .filter(|r| &r.team_id == team_id && r.is_active(now))
            .ok_or(ManageError::NotFound)?;
        if old.replaced_by.is_some() {
            return Err(ManageError::AlreadyRotated);
        }
        let expires_at = old.expires_at.map(|at| now + (at - old.created_at));
        for _ in 0..ID_ATTEMPTS {
            let (key, successor) = self.mint(team_id, &old.name, &old.scopes, expires_at, now)?;
            let rotation = Rotation {
                team_id: team_id.clone(),
                old: old.id,
                retire_at: now.saturating_add(grace),
                successor,
            };
            match self.inner.store.rotate(&rotation).await {
                Ok(RotateOutcome::Rotated) => {
                    tracing::info!(key_id = %old.id, successor = %key.id(), team_id = %team_id, "API key rotated");
                    return Ok(NewKey {
                        key,
                        info: rotation.successor.info(),
                    });
                }
                Ok(RotateOutcome::NotFound) => return Err(ManageError::NotFound),
                Ok(RotateOutcome::AlreadyRotated) => return Err(ManageError::AlreadyRotated),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// Verifies a presented key and says who the caller is.
    ///
    /// Malformed input is refused without touching the store; a well-formed
    /// key costs one store lookup and one SHA-256, compared in constant
    /// time. The reason of a failure is logged (with the key id, never the
    /// key) and kept in the error; clients should only see
    /// [`VerifyError::rejection`].
    pub async fn verify(&self, presented: &str) -> Result<Principal, VerifyError> {
        self.check(presented).await.inspect_err(log_failure)
    }

    /// Reads the key from a request's header values by `rules`, then
    /// [`verify`](Self::verify)s it: what adapters call, so that every
    /// adapter treats headers the same way.
    pub async fn verify_headers<'a>(
        &self,
        rules: &HeaderRules,
        key_header: impl IntoIterator<Item = &'a [u8]>,
        authorization: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Principal, VerifyError> {
        match rules.presented(key_header, authorization) {
            Ok(presented) => self.verify(presented).await,
            Err(problem) => Err(VerifyError::Header(problem)).inspect_err(log_failure),
        }
    }

    async fn check(&self, presented: &str) -> Result<Principal, VerifyError> {
        let parsed = self.inner.format.parse(presented)?;
        let key_id = parsed.key_id();
        let record = match self.inner.store.get(&key_id).await {
            Ok(Some(record)) if record.id == key_id => record,
            Ok(_) => return Err(VerifyError::Unknown { key_id }),
            Err(e) => return Err(VerifyError::Store(e)),
        };
        let digest = self
            .inner
            .hasher
            .digest(record.hash_version, parsed.secret())
            .ok_or(VerifyError::PepperMissing { key_id })?;
        // `SecretDigest`'s equality is constant-time (subtle).
        if digest != record.digest {
            return Err(VerifyError::Mismatch { key_id });
        }
        if record.revoked_at.is_some() {
            return Err(VerifyError::Revoked { key_id });
        }
        let now = self.inner.clock.unix_micros();
        if record.expires_at.is_some_and(|at| unix_micros(at) <= now) {
            return Err(VerifyError::Expired { key_id });
        }
        if self.inner.last_used.record(key_id, now) {
            self.spawn_flush();
        }
        Ok(Principal::new(record))
    }

    /// Starts a flush on the current Tokio runtime, off the request path.
    /// Outside a runtime the uses stay pending until the next flush.
    fn spawn_flush(&self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let this = self.clone();
            runtime.spawn(async move {
                // A failed flush is logged by flush_last_used and retried later.
                let _ = this.flush_last_used().await;
            });
        }
    }

    /// Writes all pending last-used times now, in one store call. Call it
    /// on shutdown. Returns how many keys were written. On failure the
    /// times stay pending for the next flush.
    pub async fn flush_last_used(&self) -> Result<usize, StoreError> {
        let batch = self.inner.last_used.take();
        if batch.is_empty() {
            return Ok(0);
        }
        match self.inner.store.record_last_used(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                tracing::warn!(error = %e, keys = batch.len(), "last-used flush failed; will retry");
                self.inner.last_used.restore(batch);
                Err(e)
            }
        }
    }
}
