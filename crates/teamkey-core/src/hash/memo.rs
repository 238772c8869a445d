//! The digests of presented secrets that verified, so that a key presented
//! again skips its SHA-256.
//!
//! Without the CPU's SHA extensions, SHA-256 is three fifths of what a
//! verification costs (3,400 of 5,700 instructions per HTTP request,
//! `benches/http-callgrind.sh`), and a valid key is presented again and
//! again. The memo maps a tag of the presented bytes, SipHash-2-4-128
//! under a key drawn from the OS for this manager alone, to the digest
//! those bytes had when they last verified. Why this is as safe as hashing
//! every time:
//! - its answer counts, and it is taught, only for a record that would
//!   pass (not revoked, not expired): only bytes whose SHA-256 matched
//!   such a record are remembered, so a flood of wrong secrets neither
//!   fills nor evicts anything, and a refused key's real secret costs its
//!   hash as a wrong one does (timing does not tell a leaked, since
//!   revoked key from a made-up one). It is asked for every record, so a
//!   wrong secret costs the same for an active key id as for a revoked
//!   one;
//! - a hit still compares the remembered digest with the record's (in
//!   constant time), so revocation, expiry and key ids are checked exactly
//!   as before, on the record;
//! - to pass with other bytes than a valid key's, one must find bytes with
//!   the same 128-bit tag as that unknown key under an unknown SipHash key:
//!   a chance of 2^-128 per try, as SipHash is a PRF;
//! - it holds tags and digests, never a secret. Its own copy of the
//!   SipHash key is wiped when the manager drops; the hasher of each tag
//!   (on the stack, not wiped: `siphasher` has no zeroize) holds the key's
//!   words and at most the last 7 bytes of the presented key, which the
//!   request's own buffers hold whole anyway.

use std::hash::Hasher as _;
use std::sync::{Mutex, OnceLock, PoisonError};

use rand::TryRng;
use rand::rngs::SysRng;
use siphasher::sip128::{Hasher128, SipHasher24};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{HashVersion, SecretDigest};

/// How many secrets the memo holds: a direct-mapped table (a newer key
/// takes its slot from an older one), 64 bytes a slot, allocated at the
/// first remembered key. Keys beyond it still verify, through SHA-256.
pub(crate) const MEMO_SLOTS: usize = 4096;

/// SipHash-2-4-128 of a presented secret under the memo's key.
#[derive(Clone, Copy)]
pub(crate) struct Tag([u64; 2]);

impl Tag {
    fn slot(self) -> usize {
        // The tag is a PRF's output: its low bits are as good as any.
        (self.0[0] as usize) % MEMO_SLOTS
    }
}

#[derive(Clone, Copy, Default)]
struct Slot {
    tag: [u64; 2],
    digest: Option<SecretDigest>,
}

#[cfg(test)]
thread_local! {
    /// Test-only: how many times this thread asked a memo.
    pub(crate) static MEMO_ASKED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// See the module documentation.
pub(crate) struct DigestMemo {
    key: Zeroizing<[u8; 16]>,
    slots: OnceLock<Box<[Mutex<Slot>]>>,
}

impl DigestMemo {
    /// A memo under a fresh key from the OS; `None` without one (every
    /// verification then hashes, as it would without a memo).
    pub(crate) fn new() -> Option<Self> {
        let mut key = Zeroizing::new([0u8; 16]);
        SysRng.try_fill_bytes(key.as_mut()).ok()?;
        Some(Self {
            key,
            slots: OnceLock::new(),
        })
    }

    /// The tag of `secret` presented with `prefix`, for a digest of
    /// `version`: all three are in it, as all three make the digest.
    pub(crate) fn tag(&self, version: HashVersion, prefix: &str, secret: &[u8]) -> Tag {
        // Hashed where they lie, not copied into a buffer to wipe.
        let mut sip = SipHasher24::new_with_key(&self.key);
        // The version and the prefix's length in one word: the length
        // keeps "ab" + "c" apart from "a" + "bc".
        let header = (u64::from(version.code() as u16) << 32) | prefix.len() as u64;
        sip.write(&header.to_le_bytes());
        sip.write(prefix.as_bytes());
        sip.write(secret);
        let hash = sip.finish128();
        Tag([hash.h1, hash.h2])
    }

    /// Whether the bytes of `tag` verified before with digest `expected`.
    pub(crate) fn affirms(&self, tag: Tag, expected: &SecretDigest) -> bool {
        #[cfg(test)]
        MEMO_ASKED.with(|n| n.set(n.get() + 1));
        // An empty slot (or no table yet) is compared as a full one is,
        // and both comparisons always run, in constant time: how long an
        // answer takes tells nothing of what the slot holds.
        let slot = self.slots.get().map_or_else(Slot::default, |slots| {
            *slots[tag.slot()].lock().unwrap_or_else(PoisonError::into_inner)
        });
        let filled = slot.digest.is_some();
        let digest = slot.digest.unwrap_or(SecretDigest::from_bytes([0; 32]));
        let same_tag = bool::from(slot.tag.ct_eq(&tag.0));
        let same_digest = digest == *expected;
        filled & same_tag & same_digest
    }

    /// Remembers that the bytes of `tag` hash to `digest`, which a record
    /// holds: call it only after that comparison succeeded.
    pub(crate) fn remember(&self, tag: Tag, digest: SecretDigest) {
        let slots = self
            .slots
            .get_or_init(|| (0..MEMO_SLOTS).map(|_| Mutex::default()).collect());
        *slots[tag.slot()].lock().unwrap_or_else(PoisonError::into_inner) = Slot {
            tag: tag.0,
            digest: Some(digest),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(byte: u8) -> SecretDigest {
        SecretDigest::from_bytes([byte; 32])
    }

    #[test]
    fn only_the_same_bytes_with_the_same_digest_are_affirmed() {
        let memo = DigestMemo::new().unwrap();
        let v = HashVersion::PrefixedSha256;
        let tag = memo.tag(v, "tk_live", b"secret");
        assert!(!memo.affirms(tag, &digest(1)), "nothing remembered yet");
        memo.remember(tag, digest(1));
        assert!(memo.affirms(memo.tag(v, "tk_live", b"secret"), &digest(1)));
        assert!(!memo.affirms(tag, &digest(2)), "another record's digest");
        for other in [
            memo.tag(v, "tk_live", b"secreT"),
            memo.tag(v, "tk_live", b"secret "),
            memo.tag(v, "tk_test", b"secret"),
            memo.tag(v, "tk_livesecret", b""),
            memo.tag(HashVersion::PrefixedHmacSha256, "tk_live", b"secret"),
        ] {
            assert!(!memo.affirms(other, &digest(1)));
        }
    }

    #[test]
    fn a_slot_is_64_bytes_as_documented() {
        assert_eq!(std::mem::size_of::<Mutex<Slot>>(), 64);
    }

    #[test]
    fn each_memo_has_its_own_key() {
        let (a, b) = (DigestMemo::new().unwrap(), DigestMemo::new().unwrap());
        let v = HashVersion::PrefixedSha256;
        assert_ne!(a.tag(v, "tk", b"s").0, b.tag(v, "tk", b"s").0);
        a.remember(a.tag(v, "tk", b"s"), digest(1));
        assert!(!b.affirms(a.tag(v, "tk", b"s"), &digest(1)), "b never saw it");
    }

    #[test]
    fn a_newer_key_takes_the_slot_of_an_older_one() {
        let memo = DigestMemo::new().unwrap();
        let v = HashVersion::PrefixedSha256;
        let first = memo.tag(v, "tk", b"first");
        // Some other secret lands in the same slot within a few thousand tries.
        let other = (0u32..)
            .map(|n| memo.tag(v, "tk", n.to_string().as_bytes()))
            .find(|t| t.slot() == first.slot())
            .unwrap();
        memo.remember(first, digest(1));
        memo.remember(other, digest(2));
        assert!(memo.affirms(other, &digest(2)));
        assert!(!memo.affirms(first, &digest(1)), "evicted: it hashes again");
    }
}
