//! Cost of verification, next to the cost of one SHA-256 of a key.
//!
//! `cargo bench -p teamkey-core --bench verify`; docs/performance.md has
//! figures and ratios. All benches run in one process, one after another,
//! so their ratios hold even on a noisy machine.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use sha2::{Digest, Sha256};
use teamkey_core::{CreateOptions, KeyManager, MemoryStore, TeamId};

fn main() {
    divan::main();
}

/// Runs a future that never waits (MemoryStore's never do) to completion
/// with a single poll, so no executor cost hides in the figures.
fn ready<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("MemoryStore futures complete at once"),
    }
}

struct Fixture {
    keys: KeyManager,
    key: String,
    malformed: String,
    /// Every key of the store, the bench key last.
    all: Vec<String>,
}

fn fixture() -> Fixture {
    // Far past the default per-team cap: the fixture holds 10,000 keys
    // and `create` is benched over and over.
    let keys = KeyManager::builder(MemoryStore::new())
        .max_active_keys(usize::MAX)
        .build();
    let team = TeamId::new("acme").expect("team");
    // A realistic table: the looked-up key is one of 10,000.
    let mut all: Vec<String> = (0..10_000)
        .map(|i| {
            let created = ready(keys.create(&team, &format!("key {i}"), CreateOptions::default()));
            created.expect("create").key.expose_secret().to_owned()
        })
        .collect();
    let key = ready(keys.create(&team, "bench", CreateOptions::default()))
        .expect("create")
        .key
        .expose_secret()
        .to_owned();
    all.push(key.clone());
    let mut malformed = key.clone();
    let last = if key.ends_with('0') { "1" } else { "0" };
    malformed.replace_range(key.len() - 1.., last);
    Fixture {
        keys,
        key,
        malformed,
        all,
    }
}

/// The yardstick: one SHA-256 of a whole key.
#[divan::bench]
fn sha256_of_key(bencher: divan::Bencher<'_, '_>) {
    let f = fixture();
    bencher.bench_local(|| Sha256::digest(black_box(f.key.as_bytes())));
}

/// A valid key against MemoryStore, presented again and again: parse,
/// lookup, the remembered digest (its keyed tag instead of SHA-256),
/// compare, checks, last-used recording, principal.
#[divan::bench]
fn verify_valid(bencher: divan::Bencher<'_, '_>) {
    let f = fixture();
    bencher.bench_local(|| ready(f.keys.verify(black_box(&f.key))).expect("valid"));
}

/// The 10,001 keys in turn: mostly keys the manager does not remember
/// (it holds 4,096 that verified, by slot; about 9% of the keys are still
/// in theirs when their turn comes back), so mostly with their SHA-256.
#[divan::bench]
fn verify_in_turn(bencher: divan::Bencher<'_, '_>) {
    let f = fixture();
    let mut turn = f.all.iter().cycle();
    bencher.bench_local(|| {
        let key = turn.next().expect("a cycle never ends");
        ready(f.keys.verify(black_box(key))).expect("valid")
    });
}

/// A key with a bad checksum: refused before the store.
#[divan::bench]
fn reject_malformed(bencher: divan::Bencher<'_, '_>) {
    let f = fixture();
    bencher.bench_local(|| ready(f.keys.verify(black_box(&f.malformed))).expect_err("malformed"));
}

/// Creating a key: OS randomness, hashing, insert.
#[divan::bench]
fn create(bencher: divan::Bencher<'_, '_>) {
    let f = fixture();
    let team = TeamId::new("bench").expect("team");
    bencher.bench_local(|| ready(f.keys.create(&team, "created", CreateOptions::default())).expect("create"));
}

/// Verification under a server-side pepper (HMAC-SHA-256).
#[divan::bench]
fn verify_peppered(bencher: divan::Bencher<'_, '_>) {
    let keys = KeyManager::builder(MemoryStore::new())
        .pepper(teamkey_core::Pepper::new([7u8; 32]).expect("pepper"))
        .build();
    let team = TeamId::new("acme").expect("team");
    let created = ready(keys.create(&team, "bench", CreateOptions::default())).expect("create");
    let key = created.key.expose_secret();
    bencher.bench_local(|| ready(keys.verify(black_box(key))).expect("valid"));
}
