//! Security hardening: prefix binding (also for 0.1-era records), a
//! required pepper, the record's blob.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use teamkey_core::events::{EventKind, KeyEvent, Origin};

use sha2::{Digest, Sha256};
use teamkey_core::{
    CreateOptions, HashVersion, KeyFormat, KeyId, KeyManager, KeyName, KeyRecord, KeyStore, MemoryStore,
    Pepper, RecordDecodeError, Scopes, SecretDigest, TeamId, ValidationError, VerifyError,
};
use time::macros::datetime;

mod support;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

fn team() -> TeamId {
    TeamId::new("acme").unwrap()
}

/// `key` under another prefix, with its checksum recomputed: what an
/// attacker holding a test key can make.
fn re_prefixed(key: &str, from: &str, to: &str) -> String {
    let body = key.replacen(from, to, 1);
    support::with_checksum(&body[..body.len() - 6])
}

fn managers(store: &Arc<MemoryStore>) -> (KeyManager, KeyManager) {
    let test = KeyManager::builder(Arc::clone(store))
        .format(KeyFormat::new("tk_test").unwrap())
        .build();
    let live = KeyManager::new(Arc::clone(store));
    (test, live)
}

#[test]
fn a_re_prefixed_key_is_refused() {
    let rt = runtime();
    let store = Arc::new(MemoryStore::new());
    let (test, live) = managers(&store);
    for pepper in [None, Some(Pepper::new([3u8; 32]).unwrap())] {
        let (test, live) = match pepper {
            None => (test.clone(), live.clone()),
            Some(p) => (
                KeyManager::builder(Arc::clone(&store))
                    .format(KeyFormat::new("tk_test").unwrap())
                    .pepper(p)
                    .build(),
                KeyManager::builder(Arc::clone(&store))
                    .pepper(Pepper::new([3u8; 32]).unwrap())
                    .build(),
            ),
        };
        let created = rt
            .block_on(test.create(&team(), "ci", CreateOptions::new()))
            .unwrap();
        let key = created.key.expose_secret();
        rt.block_on(test.verify(key)).unwrap();
        let forged = re_prefixed(key, "tk_test_", "tk_live_");
        assert!(live.format().parse(&forged).is_ok(), "the forgery is well formed");
        let err = rt.block_on(live.verify(&forged)).unwrap_err();
        assert!(matches!(err, VerifyError::Mismatch { .. }), "{err}");
    }
}

/// A row as teamkey 0.1 wrote it: SHA-256 of the secret alone (version 1).
fn legacy_record(key: &str, prefix: &str) -> KeyRecord {
    let format = KeyFormat::new(prefix).unwrap();
    let id_start = prefix.len() + 1;
    let id = KeyId::parse(&key[id_start..id_start + 12]).unwrap();
    let secret = &key[id_start + 12..key.len() - 6];
    assert_eq!(secret.len(), format.secret_len());
    let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let preview = format!("{prefix}_{id}…{}", &key[key.len() - 4..]);
    KeyRecord::new(
        id,
        team(),
        KeyName::new("made by 0.1").unwrap(),
        preview,
        SecretDigest::from_bytes(digest),
        HashVersion::Sha256,
        Scopes::default(),
        datetime!(2026-01-01 0:00 UTC),
    )
}

#[test]
fn records_from_before_the_change_keep_working_and_stay_bound() {
    let rt = runtime();
    let store = Arc::new(MemoryStore::new());
    let (test, live) = managers(&store);
    // Any well-formed tk_test key, stored the 0.1 way.
    let key = test.format().generate().unwrap();
    let key = key.expose_secret();
    let legacy = legacy_record(key, "tk_test");
    let event = KeyEvent::new(EventKind::Created, legacy.created_at, &legacy, &Origin::system());
    rt.block_on(store.insert(&legacy, &event)).unwrap();

    let caller = rt.block_on(test.verify(key)).unwrap();
    assert_eq!(caller.name().as_str(), "made by 0.1");
    let forged = re_prefixed(key, "tk_test_", "tk_live_");
    assert!(matches!(
        rt.block_on(live.verify(&forged)),
        Err(VerifyError::Mismatch { .. })
    ));
}

#[test]
fn a_required_pepper_stops_the_start() {
    let missing = KeyManager::builder(MemoryStore::new())
        .require_pepper()
        .try_build();
    assert_eq!(missing.err(), Some(ValidationError::PepperRequired));
    let given = KeyManager::builder(MemoryStore::new())
        .require_pepper()
        .pepper(Pepper::new([1u8; 32]).unwrap())
        .try_build()
        .unwrap();
    assert!(given.has_pepper());
}

#[test]
fn the_record_blob_reads_back_and_grows() {
    let key = KeyFormat::default().generate().unwrap();
    let mut record = legacy_record(key.expose_secret(), "tk_live");
    record.expires_at = Some(datetime!(2031-05-06 7:08:09.123456 UTC));
    record.replaced_by = Some(KeyId::parse("abcdefABCDEF").unwrap());
    let blob = record.to_bytes();
    assert_eq!(KeyRecord::from_bytes(&blob).unwrap(), record);

    // A blob from a later version with a field this one does not know, and
    // an old blob without the optional fields, both read.
    let mut value: serde_json::Value = serde_json::from_slice(&blob).unwrap();
    value["some_later_field"] = serde_json::json!({"x": 1});
    for optional in [
        "last_used_at",
        "expires_at",
        "revoked_at",
        "replaced_by",
        "scopes",
    ] {
        value.as_object_mut().unwrap().remove(optional);
    }
    let old = KeyRecord::from_bytes(&serde_json::to_vec(&value).unwrap()).unwrap();
    assert_eq!(old.expires_at, None);
    assert_eq!(old.digest, record.digest);

    value["v"] = 2.into();
    assert!(matches!(
        KeyRecord::from_bytes(&serde_json::to_vec(&value).unwrap()),
        Err(RecordDecodeError::UnsupportedVersion(2))
    ));
    value["v"] = 1.into();
    value["team_id"] = " acme".into();
    assert!(matches!(
        KeyRecord::from_bytes(&serde_json::to_vec(&value).unwrap()),
        Err(RecordDecodeError::Invalid(_))
    ));
    assert!(KeyRecord::from_bytes(b"\xff garbage").is_err());
    assert!(!String::from_utf8_lossy(&blob).contains(&key.expose_secret()[20..60]));
}
