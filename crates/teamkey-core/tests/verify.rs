//! Verification end to end: round trips, tampering, garbage, store failure.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::Ordering;
use teamkey_core::events::KeyEvent;

use async_trait::async_trait;
use proptest::prelude::*;
use teamkey_core::test_kit::{CountingStore, UnavailableStore};
use teamkey_core::{
    Clock, CreateOptions, KeyFormat, KeyId, KeyManager, KeyRecord, KeyStore, KeyUse, MalformedKey,
    MemoryStore, Pepper, Rejection, RotateOutcome, Rotation, Scopes, StoreError, TeamId, VerifyError,
};
use time::OffsetDateTime;

mod support;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

fn team() -> TeamId {
    TeamId::new("acme").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// generate -> format -> parse -> verify, for any valid configuration.
    #[test]
    fn any_format_round_trips(
        prefix in "[a-z][a-z0-9]{0,7}(_[a-z0-9]{1,8}){0,2}",
        secret_len in teamkey_core::MIN_SECRET_LEN..=teamkey_core::MAX_SECRET_LEN,
        name in "[^\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}]{1,100}",
    ) {
        prop_assume!(!name.trim().is_empty());
        let format = KeyFormat::new(&prefix).unwrap().with_secret_len(secret_len).unwrap();
        let keys = KeyManager::builder(MemoryStore::new()).format(format.clone()).build();
        let created = runtime().block_on(keys.create(&team(), &name, CreateOptions::default())).unwrap();
        let key = created.key.expose_secret();
        prop_assert_eq!(key.len(), format.key_len());
        prop_assert_eq!(format.parse(key).unwrap().key_id(), created.info.id);
        let principal = runtime().block_on(keys.verify(key)).unwrap();
        prop_assert_eq!(principal.key_id(), created.info.id);
        prop_assert_eq!(principal.name().as_str(), name.trim());
    }

    /// Nothing at all parses by accident, and nothing panics.
    #[test]
    fn arbitrary_text_never_parses(input in ".{0,200}") {
        prop_assert!(KeyFormat::default().parse(&input).is_err());
    }
}

#[test]
fn every_single_character_change_is_refused_without_a_store_call() {
    let rt = runtime();
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let keys = KeyManager::new(Arc::clone(&store));
    let created = rt
        .block_on(keys.create(&team(), "tamper", CreateOptions::default()))
        .unwrap();
    let key = created.key.expose_secret().to_owned();
    rt.block_on(keys.verify(&key)).unwrap();
    let gets_before = store.counts().get.load(Ordering::SeqCst);

    let replacements: Vec<char> = ('0'..='9')
        .chain('A'..='Z')
        .chain('a'..='z')
        .chain(['_', '-', ' ', 'é'])
        .collect();
    let mut tried = 0;
    for (pos, original) in key.char_indices() {
        for &c in &replacements {
            if c == original {
                continue;
            }
            let mut tampered = key.clone();
            tampered.replace_range(pos..pos + 1, c.encode_utf8(&mut [0; 4]));
            let err = rt.block_on(keys.verify(&tampered)).unwrap_err();
            assert!(matches!(err, VerifyError::Malformed(_)), "{pos}:{c:?} gave {err}");
            tried += 1;
        }
    }
    assert!(tried > 4000);
    assert_eq!(
        store.counts().get.load(Ordering::SeqCst),
        gets_before,
        "tampered keys reached the store"
    );
}

#[test]
fn garbage_never_reaches_the_store() {
    let rt = runtime();
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let keys = KeyManager::new(Arc::clone(&store));
    let created = rt
        .block_on(keys.create(&team(), "good", CreateOptions::default()))
        .unwrap();
    let good = created.key.expose_secret();
    let calls_before = store.counts().total();
    let other_prefix = KeyFormat::new("tk_test").unwrap().generate().unwrap();
    let mut bad_checksum = good.to_owned();
    bad_checksum.pop();
    bad_checksum.push(if good.ends_with('0') { '1' } else { '0' });
    let cases: Vec<(String, MalformedKey)> = vec![
        (String::new(), MalformedKey::Empty),
        ("   ".into(), MalformedKey::WrongLength),
        (format!("  {good}  "), MalformedKey::WrongLength),
        (format!("{good}\t"), MalformedKey::WrongLength),
        ("k".repeat(10 * 1024), MalformedKey::WrongLength),
        (good[..good.len() - 3].to_owned(), MalformedKey::WrongLength),
        (
            format!("{}ü{}", &good[..30], &good[32..]),
            MalformedKey::InvalidCharacter,
        ),
        (other_prefix.expose_secret().to_owned(), MalformedKey::WrongPrefix),
        (bad_checksum, MalformedKey::BadChecksum),
    ];
    for (input, reason) in cases {
        match rt.block_on(keys.verify(&input)) {
            Err(VerifyError::Malformed(r)) => assert_eq!(r, reason, "{input:?}"),
            other => panic!("{input:?}: {other:?}"),
        }
    }
    assert_eq!(
        store.counts().total(),
        calls_before,
        "malformed keys must not reach the store"
    );
}

#[test]
fn well_formed_unknown_key_is_unknown() {
    let rt = runtime();
    let keys = KeyManager::new(MemoryStore::new());
    let stranger = KeyFormat::default().generate().unwrap();
    let err = rt.block_on(keys.verify(stranger.expose_secret())).unwrap_err();
    assert!(matches!(err, VerifyError::Unknown { key_id } if key_id == stranger.id()));
    assert_eq!(err.rejection(), Rejection::Unauthorized);
}

#[test]
fn wrong_secret_with_valid_checksum_is_a_mismatch() {
    let rt = runtime();
    let store = Arc::new(MemoryStore::new());
    let keys = KeyManager::new(Arc::clone(&store));
    let created = rt
        .block_on(keys.create(&team(), "real", CreateOptions::default()))
        .unwrap();
    // Another key, then give its record the real key's id: same id, other secret.
    let forged_source = rt
        .block_on(keys.create(&team(), "other", CreateOptions::default()))
        .unwrap();
    let forged = forged_source.key.expose_secret().replacen(
        forged_source.info.id.as_str(),
        created.info.id.as_str(),
        1,
    );
    let forged = with_fixed_checksum(&forged);
    let err = rt.block_on(keys.verify(&forged)).unwrap_err();
    assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
}

/// A key verified before skips its SHA-256 (the manager remembers it by a
/// keyed tag): that lets nothing else through, and checks the record as
/// ever.
#[test]
fn a_remembered_secret_lets_no_other_through() {
    let rt = runtime();
    let keys = KeyManager::new(MemoryStore::new());
    let real = rt
        .block_on(keys.create(&team(), "real", CreateOptions::default()))
        .unwrap();
    let other = rt
        .block_on(keys.create(&team(), "other", CreateOptions::default()))
        .unwrap();
    let (key, other_key) = (real.key.expose_secret(), other.key.expose_secret());
    for _ in 0..2 {
        rt.block_on(keys.verify(key)).unwrap();
        rt.block_on(keys.verify(other_key)).unwrap();
    }
    // Every one-character change of the secret, checksum recomputed.
    let format = KeyFormat::default();
    let secret_at = format.prefix().len() + 1 + real.info.id.as_str().len();
    for pos in secret_at..secret_at + format.secret_len() {
        let mut tampered = key.to_owned();
        let changed = if &key[pos..=pos] == "a" { "b" } else { "a" };
        tampered.replace_range(pos..=pos, changed);
        let err = rt
            .block_on(keys.verify(&with_fixed_checksum(&tampered)))
            .unwrap_err();
        assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
    }
    // The real secret under the other key's id: the other record's digest.
    let swapped = with_fixed_checksum(&key.replacen(real.info.id.as_str(), other.info.id.as_str(), 1));
    let err = rt.block_on(keys.verify(&swapped)).unwrap_err();
    assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
    // A remembered key that is revoked is refused on its next verify.
    rt.block_on(keys.revoke(&team(), &real.info.id)).unwrap();
    let err = rt.block_on(keys.verify(key)).unwrap_err();
    assert!(matches!(err, VerifyError::Revoked { .. }), "{err}");
    rt.block_on(keys.verify(other_key)).unwrap();
}

/// Recomputes the checksum of a hand-edited key, as an attacker could.
fn with_fixed_checksum(key: &str) -> String {
    support::with_checksum(&key[..key.len() - 6])
}

#[test]
fn pepper_is_used_and_required() {
    let rt = runtime();
    let store = Arc::new(MemoryStore::new());
    let peppered = KeyManager::builder(Arc::clone(&store))
        .pepper(Pepper::new([9u8; 32]).unwrap())
        .build();
    let created = rt
        .block_on(peppered.create(&team(), "peppered", CreateOptions::default()))
        .unwrap();
    let key = created.key.expose_secret();
    rt.block_on(peppered.verify(key)).unwrap();

    let wrong_pepper = KeyManager::builder(Arc::clone(&store))
        .pepper(Pepper::new([8u8; 32]).unwrap())
        .build();
    assert!(matches!(
        rt.block_on(wrong_pepper.verify(key)),
        Err(VerifyError::Mismatch { .. })
    ));

    let no_pepper = KeyManager::new(Arc::clone(&store));
    let err = rt.block_on(no_pepper.verify(key)).unwrap_err();
    assert!(matches!(err, VerifyError::PepperMissing { .. }));
    assert_eq!(
        err.rejection(),
        Rejection::Unavailable,
        "a missing pepper is a server fault, not a bad key"
    );
}

#[test]
fn a_store_failure_is_unavailable_never_a_pass_or_a_bad_key() {
    let rt = runtime();
    let keys = KeyManager::new(UnavailableStore);
    let key = KeyFormat::default().generate().unwrap();
    let err = rt.block_on(keys.verify(key.expose_secret())).unwrap_err();
    assert!(matches!(err, VerifyError::Store(_)));
    assert_eq!(err.rejection(), Rejection::Unavailable);
    assert!(
        rt.block_on(keys.create(&team(), "x", CreateOptions::default()))
            .is_err()
    );
}

#[test]
fn a_failed_flush_keeps_the_uses_and_never_fails_verification() {
    let rt = runtime();
    let inner = Arc::new(MemoryStore::new());
    let keys = KeyManager::new(Arc::clone(&inner));
    let created = rt
        .block_on(keys.create(&team(), "k", CreateOptions::default()))
        .unwrap();
    rt.block_on(keys.verify(created.key.expose_secret())).unwrap();
    // Same manager state, but flushing into a dead store.
    let flaky = KeyManager::new(FlakyFlush(Arc::clone(&inner)));
    let made = rt
        .block_on(flaky.create(&team(), "k2", CreateOptions::default()))
        .unwrap();
    rt.block_on(flaky.verify(made.key.expose_secret())).unwrap();
    assert!(rt.block_on(flaky.flush_last_used()).is_err());
    rt.block_on(flaky.verify(made.key.expose_secret()))
        .expect("verification must not depend on flushing");
    assert!(
        rt.block_on(flaky.flush_last_used()).is_err(),
        "the use must still be pending"
    );
    assert_eq!(rt.block_on(keys.flush_last_used()).unwrap(), 1);
}

fn down() -> StoreError {
    StoreError::backend("connection refused")
}

/// Everything works except writing last-used times.
struct FlakyFlush(Arc<MemoryStore>);

#[async_trait]
impl KeyStore for FlakyFlush {
    async fn insert(&self, r: &KeyRecord, e: &KeyEvent) -> Result<(), StoreError> {
        self.0.insert(r, e).await
    }
    async fn get(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>, StoreError> {
        self.0.get(id).await
    }
    async fn list(&self, t: &TeamId) -> Result<Vec<KeyRecord>, StoreError> {
        self.0.list(t).await
    }
    async fn revoke(&self, e: &KeyEvent) -> Result<bool, StoreError> {
        self.0.revoke(e).await
    }
    async fn rotate(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        self.0.rotate(r).await
    }
    async fn record_last_used(&self, _: &[KeyUse]) -> Result<(), StoreError> {
        Err(down())
    }
}

#[test]
fn invalid_management_input_writes_nothing() {
    let rt = runtime();
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let keys = KeyManager::new(Arc::clone(&store));
    for name in [
        "",
        "   ",
        "a\u{0}b",
        "line\nbreak",
        &"n".repeat(101),
        &"x".repeat(10 * 1024),
    ] {
        assert!(
            rt.block_on(keys.create(&team(), name, CreateOptions::default()))
                .is_err(),
            "{name:?}"
        );
    }
    let past = CreateOptions::new().expires_at(OffsetDateTime::now_utc());
    assert!(rt.block_on(keys.create(&team(), "late", past)).is_err());
    assert!(Scopes::new(["ok", "not ok"]).is_err());
    assert!(TeamId::new("").is_err());
    let id = KeyFormat::default().generate().unwrap().id();
    assert!(
        rt.block_on(keys.rotate(&team(), &id, time::Duration::seconds(-1)))
            .is_err()
    );
    assert_eq!(
        store.counts().total(),
        0,
        "invalid input must not reach the store"
    );
}

#[test]
fn list_is_newest_first_and_team_scoped() {
    let rt = runtime();
    let clock = teamkey_core::ManualClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
    let keys = KeyManager::builder(MemoryStore::new())
        .clock(clock.clone())
        .build();
    for name in ["first", "second", "third"] {
        rt.block_on(keys.create(&team(), name, CreateOptions::default()))
            .unwrap();
        clock.advance(time::Duration::seconds(1));
    }
    let globex = TeamId::new("globex").unwrap();
    rt.block_on(keys.create(&globex, "theirs", CreateOptions::default()))
        .unwrap();
    let names: Vec<String> = rt
        .block_on(keys.list(&team()))
        .unwrap()
        .into_iter()
        .map(|k| k.name.to_string())
        .collect();
    assert_eq!(names, ["third", "second", "first"]);
    let json = serde_json::to_value(&rt.block_on(keys.list(&globex)).unwrap()[0]).unwrap();
    let fields: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    // Ten: `last_used_ip` only when client IPs are recorded.
    assert_eq!(fields.len(), 10);
    for f in [
        "id",
        "name",
        "preview",
        "created_at",
        "last_used_at",
        "expires_at",
        "scopes",
        "rotated_from",
        "replaced_by",
        "rate_limit",
    ] {
        assert!(fields.contains(&f), "{f}");
    }
    assert_eq!(json["created_at"], "2026-01-01T00:00:03Z");
    assert!(json["last_used_at"].is_null());
}

#[test]
fn last_used_is_flushed_automatically_once_per_interval() {
    let rt = runtime();
    let t0 = time::macros::datetime!(2026-01-01 0:00 UTC);
    let clock = teamkey_core::ManualClock::new(t0);
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let keys = KeyManager::builder(Arc::clone(&store))
        .clock(clock.clone())
        .build();
    let created = rt
        .block_on(keys.create(&team(), "auto", CreateOptions::default()))
        .unwrap();
    let key = created.key.expose_secret();
    let flushes = || store.counts().record_last_used.load(Ordering::SeqCst);
    // Lets the spawned flush task run on the current-thread runtime.
    let settle = || rt.block_on(tokio::task::yield_now());

    for _ in 0..1_000 {
        rt.block_on(keys.verify(key)).unwrap();
    }
    settle();
    assert_eq!(flushes(), 0, "no write inside the first interval");

    clock.advance(time::Duration::seconds(60));
    for _ in 0..1_000 {
        rt.block_on(keys.verify(key)).unwrap();
    }
    settle();
    assert_eq!(flushes(), 1, "exactly one write once the interval has passed");
    let listed = rt.block_on(keys.list(&team())).unwrap();
    assert_eq!(listed[0].last_used_at, Some(clock.now()));

    clock.advance(time::Duration::seconds(59));
    rt.block_on(keys.verify(key)).unwrap();
    settle();
    assert_eq!(flushes(), 1, "still one write inside the next interval");
}
