//! Secret hashing and constant-time comparison.
//!
//! Secrets carry at least 160 bits of entropy, so a fast hash is the right
//! tool (a password hash would only slow every request): SHA-256 of the
//! secret, or HMAC-SHA-256 under a server-side pepper so that a stolen
//! table alone cannot even confirm a guessed key.
//!
//! Since hash version 3 the digest input is the key's prefix, `_` and the
//! secret, so a key cannot be re-prefixed (`tk_test_…` -> `tk_live_…`, with
//! its checksum recomputed) and still verify.
//!
//! A secret that verified is remembered by a keyed tag ([`memo`]), so the
//! same key presented again costs no second SHA-256.

mod memo;

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// Which function produced a stored digest. Stored beside it, so the
/// scheme can change without breaking existing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashVersion {
    /// SHA-256 of the secret (teamkey 0.1). The prefix is bound through
    /// the stored preview instead.
    Sha256,
    /// HMAC-SHA-256 of the secret, keyed by the server's pepper (teamkey 0.1).
    HmacSha256,
    /// SHA-256 of `<prefix>_<secret>`: what new keys get without a pepper.
    PrefixedSha256,
    /// HMAC-SHA-256 of `<prefix>_<secret>` under the pepper: what new keys
    /// get with one.
    PrefixedHmacSha256,
}

impl HashVersion {
    /// The tag stored in databases: `1` to `4`.
    pub const fn code(self) -> i16 {
        match self {
            Self::Sha256 => 1,
            Self::HmacSha256 => 2,
            Self::PrefixedSha256 => 3,
            Self::PrefixedHmacSha256 => 4,
        }
    }

    /// The version for a stored tag, if known.
    pub const fn from_code(code: i16) -> Option<Self> {
        match code {
            1 => Some(Self::Sha256),
            2 => Some(Self::HmacSha256),
            3 => Some(Self::PrefixedSha256),
            4 => Some(Self::PrefixedHmacSha256),
            _ => None,
        }
    }

    /// Whether the digest covers the key's prefix. Older records are tied
    /// to their prefix by their stored preview.
    pub const fn binds_prefix(self) -> bool {
        matches!(self, Self::PrefixedSha256 | Self::PrefixedHmacSha256)
    }

    /// Whether the digest needs the server's pepper.
    pub const fn needs_pepper(self) -> bool {
        matches!(self, Self::HmacSha256 | Self::PrefixedHmacSha256)
    }
}

/// Stored as its integer tag.
impl Serialize for HashVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i16(self.code())
    }
}

impl<'de> Deserialize<'de> for HashVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = i16::deserialize(deserializer)?;
        Self::from_code(code).ok_or_else(|| D::Error::custom(format_args!("unknown hash version {code}")))
    }
}

/// A 32-byte digest of a secret. Compared only in constant time.
#[derive(Clone, Copy, Eq)]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    /// Wraps stored bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The bytes, for storing.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl TryFrom<&[u8]> for SecretDigest {
    type Error = std::array::TryFromSliceError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        Ok(Self(bytes.try_into()?))
    }
}

/// Constant time: the position of the first differing byte is not observable.
impl PartialEq for SecretDigest {
    fn eq(&self, other: &Self) -> bool {
        // Four 64-bit words rather than 32 bytes: same guarantee from
        // `subtle`, an eighth of its optimisation barriers.
        let words = |d: &[u8; 32]| {
            let mut w = [0u64; 4];
            for (word, chunk) in w.iter_mut().zip(d.chunks_exact(8)) {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(chunk);
                *word = u64::from_le_bytes(bytes);
            }
            w
        };
        words(&self.0).ct_eq(&words(&other.0)).into()
    }
}

/// Lowercase hex: the digest is stored, never the secret.
impl Serialize for SecretDigest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for SecretDigest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&*text, &mut bytes)
            .map_err(|_| D::Error::custom("a digest is 64 hex digits"))?;
        Ok(Self(bytes))
    }
}

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

/// A server-side secret mixed into every digest (HMAC key). Keep it out of
/// the database, e.g. in an environment variable or a secret manager.
pub struct Pepper(SecretSlice<u8>);

impl Pepper {
    /// Shortest pepper accepted, in bytes.
    pub const MIN_LEN: usize = 32;

    /// Wraps at least 32 bytes of secret material; `None` if shorter.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<Self> {
        let bytes = bytes.into();
        (bytes.len() >= Self::MIN_LEN).then(|| Self(bytes.into()))
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper([REDACTED])")
    }
}

/// Hashes secrets for storage and verification.
pub(crate) struct Hasher {
    /// HMAC state already keyed with the pepper: cloning it skips the two
    /// key-setup compressions on every verification.
    keyed: Option<Hmac<Sha256>>,
    /// The digests of secrets that verified.
    memo: Option<memo::DigestMemo>,
}

impl Hasher {
    pub(crate) fn new(pepper: Option<&Pepper>) -> Self {
        let keyed = pepper.and_then(|p| Hmac::<Sha256>::new_from_slice(p.0.expose_secret()).ok());
        Self {
            keyed,
            memo: memo::DigestMemo::new(),
        }
    }

    /// The version new keys are stored with.
    pub(crate) fn current_version(&self) -> HashVersion {
        if self.keyed.is_some() {
            HashVersion::PrefixedHmacSha256
        } else {
            HashVersion::PrefixedSha256
        }
    }

    /// Whether a pepper is configured.
    pub(crate) fn has_pepper(&self) -> bool {
        self.keyed.is_some()
    }

    /// The digest of a new key's secret, and the version it was made with.
    pub(crate) fn digest_new(&self, prefix: &str, secret: &str) -> (HashVersion, SecretDigest) {
        let version = self.current_version();
        // The current version never needs a pepper this hasher lacks.
        let digest = self
            .digest(version, prefix, secret.as_bytes())
            .unwrap_or_else(|| sha256(&[prefix.as_bytes(), b"_", secret.as_bytes()]));
        (version, digest)
    }

    /// The digest of `secret` (of a key with `prefix`) under `version`;
    /// `None` when `version` needs a pepper this hasher does not have.
    pub(crate) fn digest(&self, version: HashVersion, prefix: &str, secret: &[u8]) -> Option<SecretDigest> {
        #[cfg(test)]
        DIGESTS_COMPUTED.with(|n| n.set(n.get() + 1));
        let bound: [&[u8]; 3] = [prefix.as_bytes(), b"_", secret];
        let input: &[&[u8]] = if version.binds_prefix() {
            &bound
        } else {
            &bound[2..]
        };
        if version.needs_pepper() {
            self.keyed.as_ref().map(|keyed| hmac(keyed, input))
        } else {
            Some(sha256(input))
        }
    }

    /// Whether `secret` (of a key with `prefix`) has the digest `expected`
    /// under `version`, compared in constant time; `None` when `version`
    /// needs a pepper this hasher does not have. With `remembered`, bytes
    /// that matched before are affirmed by the memo, without SHA-256, and a
    /// match is remembered: pass it only for a record that otherwise
    /// passes, so that a refusal costs the same whatever the secret. The
    /// memo is asked either way (its answer then ignored), so that a wrong
    /// secret costs the same whatever the record's state.
    pub(crate) fn matches(
        &self,
        version: HashVersion,
        prefix: &str,
        secret: &[u8],
        expected: &SecretDigest,
        remembered: bool,
    ) -> Option<bool> {
        if version.needs_pepper() && self.keyed.is_none() {
            return None;
        }
        let tag = self
            .memo
            .as_ref()
            .map(|memo| (memo, memo.tag(version, prefix, secret)));
        if let Some((memo, tag)) = tag
            && memo.affirms(tag, expected)
            && remembered
        {
            return Some(true);
        }
        let digest = self.digest(version, prefix, secret)?;
        let matched = digest == *expected;
        if let (true, true, Some((memo, tag))) = (matched, remembered, tag) {
            memo.remember(tag, digest);
        }
        Some(matched)
    }
}

#[cfg(test)]
thread_local! {
    /// Test-only: how many digests (SHA-256 or HMAC) this thread computed,
    /// so that tests can see whether the memo skipped one.
    pub(crate) static DIGESTS_COMPUTED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn sha256(parts: &[&[u8]]) -> SecretDigest {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part);
    }
    SecretDigest(hash.finalize().into())
}

fn hmac(keyed: &Hmac<Sha256>, parts: &[&[u8]]) -> SecretDigest {
    let mut mac = keyed.clone();
    for part in parts {
        mac.update(part);
    }
    SecretDigest(mac.finalize().into_bytes().into())
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("version", &self.current_version())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_a_known_vector() {
        let d = Hasher::new(None)
            .digest(HashVersion::Sha256, "tk", b"abc")
            .unwrap();
        assert_eq!(
            d.as_bytes()[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(\"abc\") starts ba7816bf"
        );
        // Version 3 hashes the joined text "tk_abc".
        let bound = Hasher::new(None).digest(HashVersion::PrefixedSha256, "tk", b"abc");
        assert_eq!(bound, Some(sha256(&[b"tk_abc"])));
    }

    #[test]
    fn pepper_changes_the_digest_and_is_needed() {
        let pepper = Pepper::new([7u8; 32]).unwrap();
        let peppered = Hasher::new(Some(&pepper));
        let plain = Hasher::new(None);
        assert_eq!(peppered.current_version(), HashVersion::PrefixedHmacSha256);
        assert_eq!(plain.current_version(), HashVersion::PrefixedSha256);
        let a = peppered
            .digest(HashVersion::PrefixedHmacSha256, "tk", b"s")
            .unwrap();
        let b = plain.digest(HashVersion::PrefixedSha256, "tk", b"s").unwrap();
        assert_ne!(a, b);
        assert!(plain.digest(HashVersion::HmacSha256, "tk", b"s").is_none());
        assert!(
            plain
                .digest(HashVersion::PrefixedHmacSha256, "tk", b"s")
                .is_none()
        );
        // A peppered hasher still checks old unpeppered records.
        assert_eq!(
            peppered.digest(HashVersion::PrefixedSha256, "tk", b"s").unwrap(),
            b
        );
    }

    #[test]
    fn the_prefix_is_part_of_new_digests_only() {
        let pepper = Pepper::new([7u8; 32]).unwrap();
        for hasher in [Hasher::new(None), Hasher::new(Some(&pepper))] {
            let (version, live) = hasher.digest_new("tk_live", "secret");
            assert!(version.binds_prefix());
            assert_ne!(hasher.digest(version, "tk_test", b"secret"), Some(live));
            assert_eq!(hasher.digest(version, "tk_live", b"secret"), Some(live));
        }
        let plain = Hasher::new(None);
        assert_eq!(
            plain.digest(HashVersion::Sha256, "tk_live", b"s"),
            plain.digest(HashVersion::Sha256, "tk_test", b"s")
        );
    }

    #[test]
    fn digests_and_versions_serialize_as_stored() {
        let d = SecretDigest::from_bytes([0xab; 32]);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<SecretDigest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<SecretDigest>("\"abcd\"").is_err());
        assert_eq!(serde_json::to_string(&HashVersion::PrefixedSha256).unwrap(), "3");
        assert!(serde_json::from_str::<HashVersion>("9").is_err());
    }

    #[test]
    fn short_peppers_are_refused_and_never_printed() {
        assert!(Pepper::new([1u8; 31]).is_none());
        let p = Pepper::new(*b"super-secret-pepper-material-xyz").unwrap();
        assert!(!format!("{p:?}").contains("super"));
    }

    #[test]
    fn keyed_states_are_wiped_on_drop() {
        // Compile-time: fails to build without the `zeroize` features of
        // sha2 and hmac. `Hmac` carries no marker itself, but all it holds,
        // two SHA-256 cores and a block buffer, wipe themselves on drop.
        use hmac::block_api::HmacCore;
        use hmac::digest::block_api::{Buffer, EagerHash};
        fn assert_zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        assert_zeroize_on_drop::<<Sha256 as EagerHash>::Core>();
        assert_zeroize_on_drop::<Buffer<HmacCore<Sha256>>>();
        assert_zeroize_on_drop::<Sha256>();
    }

    #[test]
    fn version_codes_round_trip() {
        for v in [
            HashVersion::Sha256,
            HashVersion::HmacSha256,
            HashVersion::PrefixedSha256,
            HashVersion::PrefixedHmacSha256,
        ] {
            assert_eq!(HashVersion::from_code(v.code()), Some(v));
        }
        assert_eq!(HashVersion::from_code(0), None);
    }

    /// A key of the default format with one secret character changed and
    /// its checksum recomputed, as anyone can make.
    #[cfg(feature = "memory")]
    fn wrong_secret(key: &str) -> String {
        let mut tampered = key.to_owned();
        let at = key.len() - 7;
        let changed = if &key[at..=at] == "a" { "b" } else { "a" };
        tampered.replace_range(at..=at, changed);
        tampered.truncate(tampered.len() - 6);
        let checksum = crc32fast::hash(tampered.as_bytes());
        crate::format::push_checksum(&mut tampered, checksum);
        tampered
    }

    /// Every refusal is the one 401, so a key refused as revoked or
    /// expired must cost the same whether the presented secret is its real
    /// one or a made-up one, and a made-up secret must cost the same
    /// whatever the state of the key id it names: one digest and one ask
    /// of the memo each time, or timing would tell a leaked, since revoked
    /// key from a made-up one, or an active key id from a revoked one.
    #[cfg(feature = "memory")]
    #[test]
    fn a_refusal_costs_the_same_whatever_the_secret_and_the_state() {
        use crate::{CreateOptions, KeyManager, ManualClock, MemoryStore, TeamId, VerifyError};
        use memo::MEMO_ASKED;
        use std::cell::Cell;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let clock = ManualClock::new(time::macros::datetime!(2030-01-01 0:00 UTC));
        let keys = KeyManager::builder(MemoryStore::new())
            .clock(clock.clone())
            .build();
        let team = TeamId::new("acme").unwrap();
        // Digests computed and memo asks.
        let verify = |key: &str| {
            let tally = || (DIGESTS_COMPUTED.with(Cell::get), MEMO_ASKED.with(Cell::get));
            let before = tally();
            let result = rt.block_on(keys.verify(key));
            let after = tally();
            (result, (after.0 - before.0, after.1 - before.1))
        };
        let refused = (1, 1);
        let mut leaks = Vec::new();
        let mut check = |what: &str, (result, cost): (Result<_, VerifyError>, (usize, usize))| {
            assert!(result.is_err(), "{what}: passed");
            if cost != refused {
                leaks.push(format!("{what}: {cost:?} (digests, memo asks), not {refused:?}"));
            }
        };

        // Revoked after it was used.
        let a = rt
            .block_on(keys.create(&team, "a", CreateOptions::new()))
            .unwrap();
        let a = a.key.expose_secret();
        assert!(matches!(verify(a), (Ok(_), (1, 1))));
        assert!(
            matches!(verify(a), (Ok(_), (0, 1))),
            "a remembered key skips its digest"
        );
        check("active key id, wrong secret", verify(&wrong_secret(a)));
        rt.block_on(keys.revoke(&team, &keys.format().parse(a).unwrap().key_id()))
            .unwrap();
        check("revoked, wrong secret", verify(&wrong_secret(a)));
        let real = verify(a);
        assert!(matches!(real.0, Err(VerifyError::Revoked { .. })), "{:?}", real.0);
        check("revoked, real secret", real);

        // Rotated away: fine during the grace, expired after it.
        let b = rt
            .block_on(keys.create(&team, "b", CreateOptions::new()))
            .unwrap();
        let b_id = b.info.id;
        let b = b.key.expose_secret();
        assert!(verify(b).0.is_ok());
        rt.block_on(keys.rotate(&team, &b_id, time::Duration::minutes(1)))
            .unwrap();
        assert!(matches!(verify(b), (Ok(_), (0, 1))), "in its grace");
        clock.advance(time::Duration::minutes(2));
        check("expired, wrong secret", verify(&wrong_secret(b)));
        let real = verify(b);
        assert!(matches!(real.0, Err(VerifyError::Expired { .. })), "{:?}", real.0);
        check("expired, real secret", real);
        assert!(leaks.is_empty(), "{leaks:?}");
    }
}
