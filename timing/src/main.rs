//! dudect constant-time check (not part of CI; see docs/security.md).
//!
//! `cargo run --release --manifest-path timing/Cargo.toml`
//!
//! Each bench times two classes of inputs and prints Welch's t statistic
//! (`max_t`). |t| above ~5 means the two classes are told apart by timing.
//! - `verify_secret_early_vs_late`: full `KeyManager::verify` of wrong keys
//!   whose secret differs from the real one in its first vs its last character;
//! - `digest_eq_early_vs_late`: the digest comparison alone, on digests that
//!   differ in byte 0 vs byte 31;
//! - `control_leaky_eq_early_vs_late`: an early-exit byte comparison, which
//!   is not constant-time: the check must flag it, or it proves nothing.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use dudect_bencher::rand::{Rng, RngExt};
use dudect_bencher::{BenchRng, Class, CtRunner, ctbench_main};
use teamkey_core::{CreateOptions, KeyManager, MemoryStore, SecretDigest, TeamId};

const SAMPLES: usize = 1_000_000;
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// MemoryStore's futures never wait: one poll completes them.
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("MemoryStore futures complete at once"),
    }
}

fn other_char(current: u8, rng: &mut BenchRng) -> u8 {
    loop {
        let c = ALPHABET[rng.random_range(0..ALPHABET.len())];
        if c != current {
            return c;
        }
    }
}

/// `key` with the character at `pos` changed and the checksum fixed up, so
/// that it parses and reaches the digest comparison.
fn tampered(key: &str, pos: usize, rng: &mut BenchRng) -> String {
    let mut bytes = key.as_bytes()[..key.len() - 6].to_vec();
    bytes[pos] = other_char(bytes[pos], rng);
    let crc = crc32fast::hash(&bytes);
    let body = String::from_utf8(bytes).expect("ASCII");
    format!("{body}{:0>6}", base62::encode(crc))
}

fn verify_secret_early_vs_late(runner: &mut CtRunner, rng: &mut BenchRng) {
    let keys = KeyManager::new(MemoryStore::new());
    let team = TeamId::new("acme").expect("team");
    let created = ready(keys.create(&team, "timed", CreateOptions::default())).expect("create");
    let key = created.key.expose_secret();
    let first = "tk_live_".len() + teamkey_core::KEY_ID_LEN; // the first secret character
    let last = key.len() - teamkey_core::CHECKSUM_LEN - 1; // the last one
    let inputs: Vec<(Class, String)> = (0..SAMPLES)
        .map(|_| {
            if rng.random::<bool>() {
                (Class::Left, tampered(key, first, rng))
            } else {
                (Class::Right, tampered(key, last, rng))
            }
        })
        .collect();
    for (class, input) in inputs {
        runner.run_one(class, || {
            let result = ready(keys.verify(black_box(&input)));
            assert!(result.is_err());
        });
    }
}

fn digest_eq_early_vs_late(runner: &mut CtRunner, rng: &mut BenchRng) {
    let mut base = [0u8; 32];
    rng.fill_bytes(&mut base);
    let reference = SecretDigest::from_bytes(base);
    let inputs: Vec<(Class, SecretDigest)> = (0..SAMPLES)
        .map(|_| {
            let mut other = base;
            let (class, at) = if rng.random::<bool>() { (Class::Left, 0) } else { (Class::Right, 31) };
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
            let (class, at) = if rng.random::<bool>() { (Class::Left, 0) } else { (Class::Right, 63) };
            other[at] ^= 1;
            (class, other)
        })
        .collect();
    for (class, input) in inputs {
        runner.run_one(class, || black_box(leaky_eq(black_box(&base), black_box(&input))));
    }
}

ctbench_main!(verify_secret_early_vs_late, digest_eq_early_vs_late, control_leaky_eq_early_vs_late);
