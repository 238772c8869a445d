//! dudect constant-time check (not part of CI; see docs/security.md).
//!
//! `cargo run --release --manifest-path timing/Cargo.toml`
//!
//! Each bench times two classes of inputs, interleaved at random, and prints
//! Welch's t statistic (`max t`). |t| above ~5 means the two classes are told
//! apart by timing.
//!
//! Only the stored secret must not leak: the presented key is the caller's
//! own, and its handling may take input-dependent time (parsing does, see
//! `public_checksum_5_vs_6_digits`). So in the verify benches both classes
//! present keys drawn the same way, built by the same code into arrays of
//! one `Vec`, each with a checksum of 6 significant digits:
//! - `verify_stored_fixed_vs_random`: dudect's fixed-vs-random on the
//!   secret side: random wrong keys meet the real stored digest (fixed) or a
//!   random one;
//! - `verify_stored_digest_early_vs_late`: the stored digest differs from the
//!   presented key's own digest in its first vs its last byte (what an
//!   early-exit comparison would show);
//! - `verify_secret_early_vs_late`: wrong keys whose secret differs from the
//!   real one in its first vs its last character;
//! - `digest_eq_early_vs_late`: the digest comparison alone, on digests that
//!   differ in byte 0 vs byte 31;
//! - `control_leaky_eq_early_vs_late`: an early-exit byte comparison, which
//!   is not constant-time: the check must flag it, or it proves nothing;
//! - `public_checksum_5_vs_6_digits`: `KeyFormat::parse` of keys whose
//!   checksum has 5 vs 6 significant digits. Flagged, as expected: parsing
//!   time depends on the presented checksum, which the caller computed and
//!   which never meets the stored secret. Without the 6-digit rule each
//!   verify class carries its own share of 5-digit checksums, and t measures
//!   that share (docs/security.md).

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;

use dudect_bencher::rand::{Rng, RngExt};
use dudect_bencher::{BenchRng, Class, CtRunner, ctbench_main};
use sha2::{Digest, Sha256};
use teamkey_core::time::OffsetDateTime;
use teamkey_core::{
    CHECKSUM_LEN, CreateOptions, DEFAULT_SECRET_LEN, HashVersion, KEY_ID_LEN, KeyFormat, KeyId, KeyManager,
    KeyRecord, KeyStore, KeyUse, MemoryStore, RotateOutcome, Rotation, SecretDigest, StoreError, TeamId,
};

const SAMPLES: usize = 1_000_000;
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Where the secret starts and ends in a default-format key (`tk_live_`,
/// key id, secret, checksum).
const SECRET_START: usize = "tk_live_".len() + KEY_ID_LEN;
const SECRET_END: usize = SECRET_START + DEFAULT_SECRET_LEN;
const KEY_LEN: usize = SECRET_END + CHECKSUM_LEN;

/// A presented key. Inputs of both classes are arrays in one `Vec`, in
/// sample order: no class gets its own allocation pattern or layout.
type Input = [u8; KEY_LEN];

/// MemoryStore's futures never wait: one poll completes them.
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("MemoryStore futures complete at once"),
    }
}

/// A manager holding one stored key, and that key.
fn one_key() -> (KeyManager, Input) {
    let keys = KeyManager::new(MemoryStore::new());
    let team = TeamId::new("acme").expect("team");
    let created = ready(keys.create(&team, "timed", CreateOptions::default())).expect("create");
    let key = created
        .key
        .expose_secret()
        .as_bytes()
        .try_into()
        .expect("default format");
    (keys, key)
}

fn random_char(rng: &mut BenchRng) -> u8 {
    ALPHABET[rng.random_range(0..ALPHABET.len())]
}

fn other_char(current: u8, rng: &mut BenchRng) -> u8 {
    loop {
        let c = random_char(rng);
        if c != current {
            return c;
        }
    }
}

/// The one way every input is built: `key`'s prefix and key id, `secret`,
/// and the checksum over them. `None` unless the checksum has `digits`
/// significant base62 digits: 6, or fewer when left-padded with '0' (about
/// 21% of CRC-32 values are below 62^5).
fn build(key: &Input, secret: &[u8], digits: usize) -> Option<Input> {
    let mut input = *key;
    input[SECRET_START..SECRET_END].copy_from_slice(secret);
    let checksum = base62::encode(crc32fast::hash(&input[..SECRET_END]));
    (checksum.len() == digits).then(|| {
        input[SECRET_END..].fill(b'0');
        input[KEY_LEN - checksum.len()..].copy_from_slice(checksum.as_bytes());
        input
    })
}

/// A random wrong secret for `key`, with a 6-digit checksum.
fn random_wrong(key: &Input, rng: &mut BenchRng) -> Input {
    loop {
        let mut secret = [0u8; DEFAULT_SECRET_LEN];
        secret.iter_mut().for_each(|c| *c = random_char(rng));
        if let Some(input) = build(key, &secret, CHECKSUM_LEN)
            && input != *key
        {
            return input;
        }
    }
}

/// `key` with the secret character at `pos` changed, with a 6-digit checksum.
fn tampered(key: &Input, pos: usize, rng: &mut BenchRng) -> Input {
    loop {
        let mut secret = *key;
        secret[pos] = other_char(secret[pos], rng);
        if let Some(input) = build(key, &secret[SECRET_START..SECRET_END], CHECKSUM_LEN) {
            return input;
        }
    }
}

fn as_str(input: &Input) -> &str {
    std::str::from_utf8(input).expect("ASCII")
}

fn time_verify(runner: &mut CtRunner, keys: &KeyManager, inputs: &[(Class, Input)]) {
    for (class, input) in inputs {
        let input = as_str(input);
        runner.run_one(*class, || {
            let result = ready(keys.verify(black_box(input)));
            assert!(result.is_err());
        });
    }
}

/// A store whose one record the bench replaces before each sample: the
/// stored digest changes while the presented keys do not.
#[derive(Default)]
struct Swapped {
    inner: MemoryStore,
    current: RwLock<Option<Arc<KeyRecord>>>,
}

impl Swapped {
    fn set(&self, record: KeyRecord) {
        *self.current.write().expect("lock") = Some(Arc::new(record));
    }
}

#[async_trait]
impl KeyStore for Swapped {
    async fn insert(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.set(record.clone());
        self.inner.insert(record).await
    }
    async fn get(&self, _key_id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        Ok(self.current.read().expect("lock").clone())
    }
    async fn list(&self, team_id: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.list(team_id).await
    }
    async fn revoke(&self, team_id: &TeamId, key_id: &KeyId, at: OffsetDateTime) -> Result<bool, StoreError> {
        self.inner.revoke(team_id, key_id, at).await
    }
    async fn rotate(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        self.inner.rotate(rotation).await
    }
    async fn record_last_used(&self, uses: &[KeyUse]) -> Result<(), StoreError> {
        self.inner.record_last_used(uses).await
    }
}

/// A manager over a [`Swapped`] store holding one key: the store, the
/// manager, the key and its record.
fn swapped_key() -> (Arc<Swapped>, KeyManager, Input, KeyRecord) {
    let store = Arc::new(Swapped::default());
    let keys = KeyManager::new(Arc::clone(&store));
    let team = TeamId::new("acme").expect("team");
    let created = ready(keys.create(&team, "timed", CreateOptions::default())).expect("create");
    let key = created
        .key
        .expose_secret()
        .as_bytes()
        .try_into()
        .expect("default format");
    let record = store
        .current
        .read()
        .expect("lock")
        .as_deref()
        .cloned()
        .expect("record");
    (store, keys, key, record)
}

/// Times `verify` of each sample's presented key against a record carrying
/// the sample's stored digest. Every sample's record is a fresh allocation,
/// in both classes.
fn time_stored(
    runner: &mut CtRunner,
    (store, keys, record): (&Swapped, &KeyManager, &KeyRecord),
    samples: &[(Class, SecretDigest, Input)],
) {
    for (class, digest, input) in samples {
        let mut stored = record.clone();
        stored.digest = *digest;
        store.set(stored);
        let input = as_str(input);
        runner.run_one(*class, || {
            let result = ready(keys.verify(black_box(input)));
            assert!(result.is_err());
        });
    }
}

/// dudect's fixed-vs-random, on the secret side: every sample presents a
/// fresh random wrong key; the stored digest it meets is the real key's
/// (fixed) or fresh random bytes. The presented keys, the only input an
/// attacker controls and whose own handling may take input-dependent time
/// (see `public_checksum_5_vs_6_digits`), come from one distribution for
/// both classes, so only the stored secret differs.
fn verify_stored_fixed_vs_random(runner: &mut CtRunner, rng: &mut BenchRng) {
    let (store, keys, key, record) = swapped_key();
    let samples: Vec<(Class, SecretDigest, Input)> = (0..SAMPLES)
        .map(|_| {
            let (class, digest) = if rng.random::<bool>() {
                (Class::Left, record.digest)
            } else {
                let mut digest = [0u8; 32];
                rng.fill_bytes(&mut digest);
                (Class::Right, SecretDigest::from_bytes(digest))
            };
            (class, digest, random_wrong(&key, rng))
        })
        .collect();
    time_stored(runner, (&store, &keys, &record), &samples);
}

/// The stored digest differs from the presented key's own digest in its
/// first vs its last byte, presented keys being drawn alike for both
/// classes: a digest comparison that stops at the first difference is
/// flagged here, through the whole of `verify`.
fn verify_stored_digest_early_vs_late(runner: &mut CtRunner, rng: &mut BenchRng) {
    let (store, keys, key, record) = swapped_key();
    // New keys' digests (version 3) are SHA-256 of `<prefix>_<secret>`,
    // computed here.
    assert_eq!(record.hash_version, HashVersion::PrefixedSha256, "the digest computed here assumes version 3");
    let digest_of = |input: &Input| -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(b"tk_live_");
        hash.update(&input[SECRET_START..SECRET_END]);
        hash.finalize().into()
    };
    // Self-check: unaltered, the digest computed here verifies, or the
    // classes would not be what they claim.
    let probe = random_wrong(&key, rng);
    let mut stored = record.clone();
    stored.digest = SecretDigest::from_bytes(digest_of(&probe));
    store.set(stored);
    ready(keys.verify(as_str(&probe))).expect("the digest computed here must match verify's");
    let samples: Vec<(Class, SecretDigest, Input)> = (0..SAMPLES)
        .map(|_| {
            let input = random_wrong(&key, rng);
            let mut digest = digest_of(&input);
            let (class, at) = if rng.random::<bool>() {
                (Class::Left, 0)
            } else {
                (Class::Right, 31)
            };
            digest[at] ^= 1 + rng.random_range(0..255u8);
            (class, SecretDigest::from_bytes(digest), input)
        })
        .collect();
    time_stored(runner, (&store, &keys, &record), &samples);
}

fn verify_secret_early_vs_late(runner: &mut CtRunner, rng: &mut BenchRng) {
    let (keys, key) = one_key();
    let inputs: Vec<(Class, Input)> = (0..SAMPLES)
        .map(|_| {
            if rng.random::<bool>() {
                (Class::Left, tampered(&key, SECRET_START, rng))
            } else {
                (Class::Right, tampered(&key, SECRET_END - 1, rng))
            }
        })
        .collect();
    time_verify(runner, &keys, &inputs);
}

/// Shows the property the verify benches hold fixed: parsing time depends
/// on the presented checksum. Public: no stored secret is involved.
fn public_checksum_5_vs_6_digits(runner: &mut CtRunner, rng: &mut BenchRng) {
    let (_keys, key) = one_key();
    let format = KeyFormat::default();
    let with_digits = |digits: usize, rng: &mut BenchRng| loop {
        let mut secret = [0u8; DEFAULT_SECRET_LEN];
        secret.iter_mut().for_each(|c| *c = random_char(rng));
        if let Some(input) = build(&key, &secret, digits) {
            return input;
        }
    };
    let inputs: Vec<(Class, Input)> = (0..SAMPLES)
        .map(|_| {
            if rng.random::<bool>() {
                (Class::Left, with_digits(5, rng))
            } else {
                (Class::Right, with_digits(6, rng))
            }
        })
        .collect();
    for (class, input) in &inputs {
        let input = as_str(input);
        runner.run_one(*class, || black_box(format.parse(black_box(input)).is_ok()));
    }
}

fn digest_eq_early_vs_late(runner: &mut CtRunner, rng: &mut BenchRng) {
    let mut base = [0u8; 32];
    rng.fill_bytes(&mut base);
    let reference = SecretDigest::from_bytes(base);
    let inputs: Vec<(Class, SecretDigest)> = (0..SAMPLES)
        .map(|_| {
            let mut other = base;
            let (class, at) = if rng.random::<bool>() {
                (Class::Left, 0)
            } else {
                (Class::Right, 31)
            };
            other[at] ^= 1 + rng.random_range(0..255u8);
            (class, SecretDigest::from_bytes(other))
        })
        .collect();
    for (class, input) in inputs {
        runner.run_one(class, || black_box(black_box(&reference) == black_box(&input)));
    }
}

/// Deliberately leaky: returns at the first differing byte.
fn leaky_eq(a: &[u8], b: &[u8]) -> bool {
    for (x, y) in a.iter().zip(b) {
        if black_box(*x) != black_box(*y) {
            return false;
        }
    }
    a.len() == b.len()
}

fn control_leaky_eq_early_vs_late(runner: &mut CtRunner, rng: &mut BenchRng) {
    let mut base = [0u8; 64];
    rng.fill_bytes(&mut base);
    let inputs: Vec<(Class, [u8; 64])> = (0..SAMPLES)
        .map(|_| {
            let mut other = base;
            let (class, at) = if rng.random::<bool>() {
                (Class::Left, 0)
            } else {
                (Class::Right, 63)
            };
            other[at] ^= 1;
            (class, other)
        })
        .collect();
    for (class, input) in inputs {
        runner.run_one(class, || black_box(leaky_eq(black_box(&base), black_box(&input))));
    }
}

ctbench_main!(
    verify_stored_fixed_vs_random,
    verify_stored_digest_early_vs_late,
    verify_secret_early_vs_late,
    digest_eq_early_vs_late,
    control_leaky_eq_early_vs_late,
    public_checksum_5_vs_6_digits
);
