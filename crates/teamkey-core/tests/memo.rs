//! The digest memo (`hash/memo.rs`) attacked from outside: a remembered
//! key must let nothing through that hashing every time would refuse
//! (every hash version, mislabelled and replaced records, revocation,
//! rotation, two managers, the cache, concurrency, more keys than slots,
//! every secret length).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use teamkey_core::events::{EventKind, KeyEvent, Origin};
use teamkey_core::test_kit::CountingStore;
use teamkey_core::{
    CreateOptions, HashVersion, InvalidationSink, InvalidationSource, KeyFormat, KeyId, KeyManager, KeyName,
    KeyRecord, KeyStore, KeyUse, ManualClock, MemoryStore, Pepper, RotateOutcome, Rotation, Scopes,
    SecretDigest, StoreError, TeamId, VerifyError,
};
use time::Duration;
use time::macros::datetime;

mod support;
use support::with_checksum;

const PEPPER: [u8; 32] = [9u8; 32];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn team() -> TeamId {
    TeamId::new("acme").unwrap()
}

/// `key` with the secret character at `offset` (from the secret's start)
/// changed and the checksum recomputed.
fn tampered(format: &KeyFormat, key: &str, offset: usize) -> String {
    let at = format.prefix().len() + 1 + 12 + offset;
    let mut body = key[..key.len() - 6].to_owned();
    let changed = if &key[at..=at] == "a" { "b" } else { "a" };
    body.replace_range(at..=at, changed);
    with_checksum(&body)
}

/// `key`'s secret under the key id `id`, checksum recomputed.
fn under_id(format: &KeyFormat, key: &str, id: &KeyId) -> String {
    let start = format.prefix().len() + 1;
    let mut body = key[..key.len() - 6].to_owned();
    body.replace_range(start..start + 12, id.as_str());
    with_checksum(&body)
}

fn secret_of<'k>(format: &KeyFormat, key: &'k str) -> &'k str {
    &key[format.prefix().len() + 1 + 12..key.len() - 6]
}

/// The digest of `secret` under `version`, computed here, not by teamkey.
fn digest(version: HashVersion, prefix: &str, secret: &str) -> SecretDigest {
    let input = if version.binds_prefix() {
        format!("{prefix}_{secret}")
    } else {
        secret.to_owned()
    };
    let bytes: [u8; 32] = if version.needs_pepper() {
        let mut mac = Hmac::<Sha256>::new_from_slice(&PEPPER).unwrap();
        mac.update(input.as_bytes());
        mac.finalize().into_bytes().into()
    } else {
        Sha256::digest(input.as_bytes()).into()
    };
    SecretDigest::from_bytes(bytes)
}

/// A record for `key` with `digest`, labelled `version`, as any
/// teamkey version (or a hand-written migration) could have stored it.
fn record(format: &KeyFormat, key: &str, version: HashVersion, digest: SecretDigest) -> KeyRecord {
    let id = format.parse(key).unwrap().key_id();
    let preview = format!("{}_{id}…{}", format.prefix(), &key[key.len() - 4..]);
    KeyRecord::new(
        id,
        team(),
        KeyName::new("hand made").unwrap(),
        preview,
        digest,
        version,
        Scopes::default(),
        datetime!(2026-01-01 0:00 UTC),
    )
}

async fn insert(store: &dyn KeyStore, record: &KeyRecord) {
    let event = KeyEvent::new(EventKind::Created, record.created_at, record, &Origin::system());
    store.insert(record, &event).await.unwrap();
}

const VERSIONS: [HashVersion; 4] = [
    HashVersion::Sha256,
    HashVersion::HmacSha256,
    HashVersion::PrefixedSha256,
    HashVersion::PrefixedHmacSha256,
];

/// For records of every hash version: once the real key passed
/// (and is remembered), every one-character change of its secret, and its
/// secret under every other record's key id, are still mismatches; a
/// manager without the pepper answers PepperMissing for versions 2 and 4
/// whatever the peppered one remembers.
#[test]
fn every_version_refuses_wrong_secrets_after_the_real_one_passed() {
    let rt = runtime();
    let store = Arc::new(MemoryStore::new());
    let peppered = KeyManager::builder(Arc::clone(&store))
        .pepper(Pepper::new(PEPPER).unwrap())
        .build();
    let plain = KeyManager::new(Arc::clone(&store));
    let format = KeyFormat::default();
    let mut keys = Vec::new();
    for version in VERSIONS {
        let key = format.generate().unwrap();
        let key = key.expose_secret().to_owned();
        let d = digest(version, format.prefix(), secret_of(&format, &key));
        rt.block_on(insert(&*store, &record(&format, &key, version, d)));
        keys.push((version, key));
    }
    for _ in 0..2 {
        for (version, key) in &keys {
            rt.block_on(peppered.verify(key)).unwrap();
            let plain_result = rt.block_on(plain.verify(key));
            if version.needs_pepper() {
                assert!(
                    matches!(plain_result, Err(VerifyError::PepperMissing { .. })),
                    "{plain_result:?}"
                );
            } else {
                plain_result.unwrap();
            }
        }
    }
    for (version, key) in &keys {
        for offset in 0..format.secret_len() {
            for manager in [&peppered, &plain] {
                let err = rt
                    .block_on(manager.verify(&tampered(&format, key, offset)))
                    .unwrap_err();
                let expected = matches!(err, VerifyError::Mismatch { .. })
                    || (version.needs_pepper() && matches!(err, VerifyError::PepperMissing { .. }));
                assert!(expected, "{version:?} offset {offset}: {err}");
            }
        }
        for (_, other) in &keys {
            let other_id = format.parse(other).unwrap().key_id();
            if other == key {
                continue;
            }
            let swapped = under_id(&format, key, &other_id);
            let err = rt.block_on(peppered.verify(&swapped)).unwrap_err();
            assert!(matches!(err, VerifyError::Mismatch { .. }), "{version:?}: {err}");
        }
    }
}

/// The hash version is in the tag. A record labelled with one
/// version but holding the digest the same secret has under another
/// (a botched migration) must not pass because that secret was
/// remembered under the other version.
#[test]
fn a_mislabelled_record_does_not_pass_on_a_remembered_secret() {
    let rt = runtime();
    let store = Arc::new(MemoryStore::new());
    let keys = KeyManager::builder(Arc::clone(&store))
        .pepper(Pepper::new(PEPPER).unwrap())
        .build();
    let format = KeyFormat::default();
    for (right, wrong) in [
        (HashVersion::Sha256, HashVersion::PrefixedSha256),
        (HashVersion::PrefixedSha256, HashVersion::Sha256),
        (HashVersion::HmacSha256, HashVersion::PrefixedHmacSha256),
        (HashVersion::PrefixedHmacSha256, HashVersion::HmacSha256),
        (HashVersion::Sha256, HashVersion::HmacSha256),
        (HashVersion::PrefixedHmacSha256, HashVersion::PrefixedSha256),
    ] {
        let real = format.generate().unwrap();
        let real = real.expose_secret();
        let d = digest(right, format.prefix(), secret_of(&format, real));
        rt.block_on(insert(&*store, &record(&format, real, right, d)));
        // The same secret under another key id, its record labelled wrong.
        let twin_id = format.generate().unwrap().id();
        let twin = under_id(&format, real, &twin_id);
        rt.block_on(insert(&*store, &record(&format, &twin, wrong, d)));
        rt.block_on(keys.verify(real)).unwrap();
        rt.block_on(keys.verify(real)).unwrap();
        let err = rt.block_on(keys.verify(&twin)).unwrap_err();
        assert!(
            matches!(err, VerifyError::Mismatch { .. }),
            "{right:?} as {wrong:?}: {err}"
        );
    }
}

/// A store whose records can be swapped underneath the manager, as a
/// restore or a hand-edited row would.
struct SwapStore {
    inner: MemoryStore,
    swapped: Mutex<HashMap<KeyId, Arc<KeyRecord>>>,
}

#[async_trait]
impl KeyStore for SwapStore {
    async fn insert(&self, r: &KeyRecord, e: &KeyEvent) -> Result<(), StoreError> {
        self.inner.insert(r, e).await
    }
    async fn get(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        if let Some(r) = self.swapped.lock().unwrap().get(id) {
            return Ok(Some(Arc::clone(r)));
        }
        self.inner.get(id).await
    }
    async fn list(&self, t: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.list(t).await
    }
    async fn revoke(&self, e: &KeyEvent) -> Result<bool, StoreError> {
        self.inner.revoke(e).await
    }
    async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        self.inner.rotate(r).await
    }
    async fn record_last_used(&self, u: &[KeyUse]) -> Result<(), StoreError> {
        self.inner.record_last_used(u).await
    }
}

/// A record replaced under the same key id with another digest is
/// checked against the new digest: the remembered old secret is refused,
/// the new one passes, and the old passes again once its record is back.
#[test]
fn a_record_replaced_under_its_key_id_checks_the_new_digest() {
    let rt = runtime();
    let store = Arc::new(SwapStore {
        inner: MemoryStore::new(),
        swapped: Mutex::new(HashMap::new()),
    });
    let keys = KeyManager::new(Arc::clone(&store));
    let format = keys.format().clone();
    let created = rt
        .block_on(keys.create(&team(), "k", CreateOptions::new()))
        .unwrap();
    let old = created.key.expose_secret();
    rt.block_on(keys.verify(old)).unwrap();
    rt.block_on(keys.verify(old)).unwrap();
    // Another secret under the same id, and a record holding its digest.
    let other = format.generate().unwrap();
    let new = under_id(&format, other.expose_secret(), &created.info.id);
    let d = digest(
        HashVersion::PrefixedSha256,
        format.prefix(),
        secret_of(&format, &new),
    );
    let replacement = record(&format, &new, HashVersion::PrefixedSha256, d);
    store
        .swapped
        .lock()
        .unwrap()
        .insert(created.info.id, Arc::new(replacement));
    for _ in 0..2 {
        let err = rt.block_on(keys.verify(old)).unwrap_err();
        assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
        rt.block_on(keys.verify(&new)).unwrap();
    }
    store.swapped.lock().unwrap().clear();
    rt.block_on(keys.verify(old)).unwrap();
    let err = rt.block_on(keys.verify(&new)).unwrap_err();
    assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
}

/// Two managers over one store (each with its own memo) see a
/// revocation by either; a revoked, remembered key is refused by both.
#[test]
fn two_managers_over_one_store_refuse_a_revoked_remembered_key() {
    let rt = runtime();
    let store = Arc::new(MemoryStore::new());
    let (one, two) = (
        KeyManager::new(Arc::clone(&store)),
        KeyManager::new(Arc::clone(&store)),
    );
    let created = rt
        .block_on(one.create(&team(), "k", CreateOptions::new()))
        .unwrap();
    let key = created.key.expose_secret();
    for _ in 0..2 {
        rt.block_on(one.verify(key)).unwrap();
        rt.block_on(two.verify(key)).unwrap();
    }
    rt.block_on(two.revoke(&team(), &created.info.id)).unwrap();
    for manager in [&one, &two, &one, &two] {
        let err = rt.block_on(manager.verify(key)).unwrap_err();
        assert!(matches!(err, VerifyError::Revoked { .. }), "{err}");
    }
}

/// Rotation with a grace, then without: the old key passes during
/// its grace (remembered) and is refused after it; a key rotated with no
/// grace is refused at once, remembered or not; an expiring key is refused
/// at its expiry.
#[test]
fn rotated_and_expired_remembered_keys_are_refused_on_time() {
    let rt = runtime();
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .build();
    let first = rt
        .block_on(keys.create(&team(), "k", CreateOptions::new()))
        .unwrap();
    let old = first.key.expose_secret();
    rt.block_on(keys.verify(old)).unwrap();
    let second = rt
        .block_on(keys.rotate(&team(), &first.info.id, Duration::minutes(1)))
        .unwrap();
    let mid = second.key.expose_secret();
    rt.block_on(keys.verify(old)).unwrap();
    rt.block_on(keys.verify(mid)).unwrap();
    rt.block_on(keys.verify(mid)).unwrap();
    clock.advance(Duration::seconds(59));
    rt.block_on(keys.verify(old)).unwrap();
    clock.advance(Duration::seconds(1));
    let err = rt.block_on(keys.verify(old)).unwrap_err();
    assert!(matches!(err, VerifyError::Expired { .. }), "{err}");
    let third = rt
        .block_on(keys.rotate(&team(), &second.info.id, Duration::ZERO))
        .unwrap();
    let err = rt.block_on(keys.verify(mid)).unwrap_err();
    assert!(
        matches!(err, VerifyError::Expired { .. } | VerifyError::Revoked { .. }),
        "{err}"
    );
    rt.block_on(keys.verify(third.key.expose_secret())).unwrap();

    let expiring = rt
        .block_on(keys.create(&team(), "e", CreateOptions::new().expires_in(Duration::hours(1))))
        .unwrap();
    let key = expiring.key.expose_secret();
    rt.block_on(keys.verify(key)).unwrap();
    rt.block_on(keys.verify(key)).unwrap();
    clock.advance(Duration::hours(1));
    let err = rt.block_on(keys.verify(key)).unwrap_err();
    assert!(matches!(err, VerifyError::Expired { .. }), "{err}");
}

/// The tk_test / tk_live pair over one store, with and without a
/// pepper: a remembered test key re-prefixed as a live one is a mismatch,
/// every time.
#[test]
fn a_remembered_test_key_re_prefixed_is_refused_by_live() {
    let rt = runtime();
    let store = Arc::new(MemoryStore::new());
    for pepper in [false, true] {
        let build = |format: KeyFormat| {
            let builder = KeyManager::builder(Arc::clone(&store)).format(format);
            if pepper {
                builder.pepper(Pepper::new(PEPPER).unwrap()).build()
            } else {
                builder.build()
            }
        };
        let test = build(KeyFormat::new("tk_test").unwrap());
        let live = build(KeyFormat::default());
        let created = rt
            .block_on(test.create(&team(), "ci", CreateOptions::new()))
            .unwrap();
        let key = created.key.expose_secret();
        let forged = with_checksum(&key.replacen("tk_test_", "tk_live_", 1)[..key.len() - 6]);
        for _ in 0..2 {
            rt.block_on(test.verify(key)).unwrap();
            let err = rt.block_on(live.verify(&forged)).unwrap_err();
            assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
        }
    }
    // A 0.1 record (version 1, the secret alone), bound by its preview.
    let test_format = KeyFormat::new("tk_test").unwrap();
    let test = KeyManager::builder(Arc::clone(&store))
        .format(test_format.clone())
        .build();
    let live = KeyManager::new(Arc::clone(&store));
    let key = test_format.generate().unwrap();
    let key = key.expose_secret();
    let d = digest(HashVersion::Sha256, "tk_test", secret_of(&test_format, key));
    rt.block_on(insert(
        &*store,
        &record(&test_format, key, HashVersion::Sha256, d),
    ));
    let forged = with_checksum(&key.replacen("tk_test_", "tk_live_", 1)[..key.len() - 6]);
    for _ in 0..3 {
        rt.block_on(test.verify(key)).unwrap();
        let err = rt.block_on(live.verify(&forged)).unwrap_err();
        assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
    }
}

/// Every secret length (27..=64) with the longest prefix (32) and
/// the shortest (1): the real key passes twice, a changed last secret
/// character is refused after it, and odd input never panics.
#[test]
fn every_secret_length_and_prefix_length() {
    let rt = runtime();
    let long_prefix = "a234567_b234567_c234567_d2345678";
    assert_eq!(long_prefix.len(), 32);
    for prefix in ["a", long_prefix] {
        for secret_len in teamkey_core::MIN_SECRET_LEN..=teamkey_core::MAX_SECRET_LEN {
            let format = KeyFormat::new(prefix)
                .unwrap()
                .with_secret_len(secret_len)
                .unwrap();
            let keys = KeyManager::builder(MemoryStore::new())
                .format(format.clone())
                .build();
            let created = rt
                .block_on(keys.create(&team(), "k", CreateOptions::new()))
                .unwrap();
            let key = created.key.expose_secret();
            rt.block_on(keys.verify(key)).unwrap();
            rt.block_on(keys.verify(key)).unwrap();
            for offset in [0, secret_len - 1] {
                let err = rt
                    .block_on(keys.verify(&tampered(&format, key, offset)))
                    .unwrap_err();
                assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
            }
            // Non-ASCII of the same byte length: malformed, no panic.
            let mut odd = key[..key.len() - 8].to_owned();
            odd.push('é');
            odd.push_str(&key[key.len() - 6..]);
            assert_eq!(odd.len(), key.len());
            assert!(matches!(
                rt.block_on(keys.verify(&odd)),
                Err(VerifyError::Malformed(_))
            ));
        }
    }
}

/// More keys than the memo has slots (4,096), verified from four
/// threads at once in different orders, with a wrong variant of each beside
/// it and a quarter revoked midway: every valid key passes, every wrong one
/// is a mismatch, and a key whose revocation had returned before a
/// verification began is refused.
#[test]
fn concurrent_verification_with_evictions_and_revocations() {
    const KEYS: usize = 5_000;
    let rt = runtime();
    let keys = KeyManager::new(MemoryStore::new());
    let format = keys.format().clone();
    // Fifty teams of a hundred keys (the default most a team may hold).
    let team_of = |i: usize| TeamId::new(format!("team{}", i % 50)).unwrap();
    let created: Vec<(KeyId, String)> = (0..KEYS)
        .map(|i| {
            let c = rt
                .block_on(keys.create(&team_of(i), &format!("k{i}"), CreateOptions::new()))
                .unwrap();
            (c.info.id, c.key.expose_secret().to_owned())
        })
        .collect();
    let created = Arc::new(created);
    let revoked: Arc<Vec<AtomicBool>> = Arc::new((0..KEYS).map(|_| AtomicBool::new(false)).collect());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (keys, created, revoked, format) = (
                keys.clone(),
                Arc::clone(&created),
                Arc::clone(&revoked),
                format.clone(),
            );
            std::thread::spawn(move || {
                let rt = runtime();
                for round in 0..3 {
                    for n in 0..KEYS {
                        // Each thread its own order: strides coprime to KEYS.
                        let i = (n * [1, 7, 13, 17][t] + round * 31) % KEYS;
                        let (_, key) = &created[i];
                        let was_revoked = revoked[i].load(Ordering::SeqCst);
                        match rt.block_on(keys.verify(key)) {
                            Ok(_) => assert!(!was_revoked, "key {i} passed after its revocation"),
                            Err(VerifyError::Revoked { .. }) => {}
                            Err(e) => panic!("key {i}: {e}"),
                        }
                        if n % 5 == 0 {
                            let err = rt
                                .block_on(keys.verify(&tampered(&format, key, n % format.secret_len())))
                                .unwrap_err();
                            assert!(
                                matches!(err, VerifyError::Mismatch { .. }),
                                "a wrong secret of key {i} reached the revocation check: {err}"
                            );
                        }
                    }
                }
            })
        })
        .collect();
    for (i, (id, _)) in created.iter().enumerate().filter(|(i, _)| i % 4 == 0) {
        rt.block_on(keys.revoke(&team_of(i), id)).unwrap();
        revoked[i].store(true, Ordering::SeqCst);
    }
    for thread in threads {
        thread.join().unwrap();
    }
    for (i, (_, key)) in created.iter().enumerate() {
        let result = rt.block_on(keys.verify(key));
        assert_eq!(result.is_ok(), i % 4 != 0, "key {i}");
    }
}

/// An invalidation feed that is always connected and confirms every 10 ms.
struct AlwaysConfirming(tokio::sync::mpsc::UnboundedReceiver<KeyId>);

struct Feed(tokio::sync::Mutex<AlwaysConfirming>);

#[async_trait]
impl InvalidationSource for Feed {
    async fn run(&self, sink: InvalidationSink) -> StoreError {
        let mut feed = self.0.lock().await;
        sink.connected(Instant::now());
        loop {
            let sent = Instant::now();
            if let Ok(Some(id)) =
                tokio::time::timeout(std::time::Duration::from_millis(10), feed.0.recv()).await
            {
                sink.invalidate(&id);
            }
            sink.confirmed(sent);
        }
    }
}

/// With the verification cache over a store, a remembered key
/// served from the cache is refused at once after a local revocation, and a
/// record replaced by another writer (reported by the feed) is checked
/// against its new digest.
#[test]
fn the_cache_and_the_memo_together() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let swap = Arc::new(SwapStore {
        inner: MemoryStore::new(),
        swapped: Mutex::new(HashMap::new()),
    });
    let store = Arc::new(CountingStore::new(Arc::clone(&swap)));
    let _guard = rt.enter();
    let keys = KeyManager::builder(Arc::clone(&store))
        .cache(Feed(tokio::sync::Mutex::new(AlwaysConfirming(rx))))
        .build();
    let format = keys.format().clone();
    let a = rt
        .block_on(keys.create(&team(), "a", CreateOptions::new()))
        .unwrap();
    let b = rt
        .block_on(keys.create(&team(), "b", CreateOptions::new()))
        .unwrap();
    let (a_key, b_key) = (a.key.expose_secret(), b.key.expose_secret());
    rt.block_on(tokio::time::sleep(std::time::Duration::from_millis(50)));
    for _ in 0..3 {
        rt.block_on(keys.verify(a_key)).unwrap();
        rt.block_on(keys.verify(b_key)).unwrap();
    }
    rt.block_on(keys.revoke(&team(), &a.info.id)).unwrap();
    let err = rt.block_on(keys.verify(a_key)).unwrap_err();
    assert!(matches!(err, VerifyError::Revoked { .. }), "{err}");

    let other = format.generate().unwrap();
    let new = under_id(&format, other.expose_secret(), &b.info.id);
    let d = digest(
        HashVersion::PrefixedSha256,
        format.prefix(),
        secret_of(&format, &new),
    );
    swap.swapped.lock().unwrap().insert(
        b.info.id,
        Arc::new(record(&format, &new, HashVersion::PrefixedSha256, d)),
    );
    tx.send(b.info.id).unwrap();
    rt.block_on(tokio::time::sleep(std::time::Duration::from_millis(100)));
    let err = rt.block_on(keys.verify(b_key)).unwrap_err();
    assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
    rt.block_on(keys.verify(&new)).unwrap();
}
