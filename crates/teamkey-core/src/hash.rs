//! Secret hashing and constant-time comparison.
//!
//! Secrets carry at least 160 bits of entropy, so a fast hash is the right
//! tool (a password hash would only slow every request): SHA-256 of the
//! secret, or HMAC-SHA-256 under a server-side pepper so that a stolen
//! table alone cannot even confirm a guessed key.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// Which function produced a stored digest. Stored beside it, so the
/// scheme can change without breaking existing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashVersion {
    /// SHA-256 of the secret.
    Sha256,
    /// HMAC-SHA-256 of the secret, keyed by the server's pepper.
    HmacSha256,
}

impl HashVersion {
    /// The tag stored in databases: `1` or `2`.
    pub const fn code(self) -> i16 {
        match self {
            Self::Sha256 => 1,
            Self::HmacSha256 => 2,
        }
    }

    /// The version for a stored tag, if known.
    pub const fn from_code(code: i16) -> Option<Self> {
        match code {
            1 => Some(Self::Sha256),
            2 => Some(Self::HmacSha256),
            _ => None,
        }
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
#[derive(Clone)]
pub(crate) struct Hasher {
    /// HMAC state already keyed with the pepper: cloning it skips the two
    /// key-setup compressions on every verification.
    keyed: Option<Hmac<Sha256>>,
}

impl Hasher {
    pub(crate) fn new(pepper: Option<&Pepper>) -> Self {
        let keyed = pepper.and_then(|p| Hmac::<Sha256>::new_from_slice(p.0.expose_secret()).ok());
        Self { keyed }
    }

    /// The version new keys are stored with.
    pub(crate) fn current_version(&self) -> HashVersion {
        if self.keyed.is_some() {
            HashVersion::HmacSha256
        } else {
            HashVersion::Sha256
        }
    }

    /// The digest of a new key's secret, and the version it was made with.
    pub(crate) fn digest_new(&self, secret: &str) -> (HashVersion, SecretDigest) {
        match &self.keyed {
            Some(keyed) => (HashVersion::HmacSha256, hmac(keyed, secret)),
            None => (HashVersion::Sha256, sha256(secret)),
        }
    }

    /// The digest of `secret` under `version`; `None` when `version` needs
    /// a pepper this hasher does not have.
    pub(crate) fn digest(&self, version: HashVersion, secret: &str) -> Option<SecretDigest> {
        match version {
            HashVersion::Sha256 => Some(sha256(secret)),
            HashVersion::HmacSha256 => self.keyed.as_ref().map(|keyed| hmac(keyed, secret)),
        }
    }
}

fn sha256(secret: &str) -> SecretDigest {
    SecretDigest(Sha256::digest(secret.as_bytes()).into())
}

fn hmac(keyed: &Hmac<Sha256>, secret: &str) -> SecretDigest {
    let mut mac = keyed.clone();
    mac.update(secret.as_bytes());
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
        let d = Hasher::new(None).digest(HashVersion::Sha256, "abc").unwrap();
        assert_eq!(
            d.as_bytes()[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(\"abc\") starts ba7816bf"
        );
    }

    #[test]
    fn pepper_changes_the_digest_and_is_needed() {
        let pepper = Pepper::new([7u8; 32]).unwrap();
        let peppered = Hasher::new(Some(&pepper));
        let plain = Hasher::new(None);
        assert_eq!(peppered.current_version(), HashVersion::HmacSha256);
        let a = peppered.digest(HashVersion::HmacSha256, "s").unwrap();
        let b = plain.digest(HashVersion::Sha256, "s").unwrap();
        assert_ne!(a, b);
        assert!(plain.digest(HashVersion::HmacSha256, "s").is_none());
        // A peppered hasher still checks old unpeppered records.
        assert_eq!(peppered.digest(HashVersion::Sha256, "s").unwrap(), b);
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
        for v in [HashVersion::Sha256, HashVersion::HmacSha256] {
            assert_eq!(HashVersion::from_code(v.code()), Some(v));
        }
        assert_eq!(HashVersion::from_code(0), None);
    }
}
