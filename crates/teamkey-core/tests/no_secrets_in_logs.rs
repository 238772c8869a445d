//! At TRACE level, no log line carries a key or a secret: only key ids.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::sync::Arc;

use teamkey_core::test_kit::CountingStore;
use teamkey_core::{CreateOptions, KeyFormat, KeyManager, MemoryStore, TeamId};

use support::logs::capture;

#[test]
fn trace_logs_show_key_ids_but_never_keys() {
    let (captured, _guard) = capture(tracing::Level::TRACE);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();

    let keys = KeyManager::new(Arc::new(CountingStore::new(MemoryStore::new())));
    let team = TeamId::new("acme").unwrap();
    let created = rt
        .block_on(keys.create(&team, "logged", CreateOptions::default()))
        .unwrap();
    let key = created.key.expose_secret().to_owned();
    let secret = key[20..60].to_owned();

    rt.block_on(keys.verify(&key)).unwrap();
    let mut wrong = key.clone();
    wrong.replace_range(30..31, if &key[30..31] == "a" { "b" } else { "a" });
    let _ = rt.block_on(keys.verify(&wrong));
    let _ = rt.block_on(keys.verify(&format!(" {key}")));
    let _ = rt.block_on(keys.verify(KeyFormat::default().generate().unwrap().expose_secret()));
    let rotated = rt
        .block_on(keys.rotate(&team, &created.info.id, time::Duration::ZERO))
        .unwrap();
    let _ = rt.block_on(keys.verify(&key));
    rt.block_on(keys.revoke(&team, &rotated.info.id)).unwrap();
    let _ = rt.block_on(keys.verify(rotated.key.expose_secret()));
    rt.block_on(keys.flush_last_used()).unwrap();
    eprintln!("{:?} {created:?} {rotated:?}", keys);

    let logs = captured.text();
    assert!(
        logs.contains(created.info.id.as_str()),
        "logs should name key ids:\n{logs}"
    );
    assert!(logs.contains("API key rejected"), "{logs}");
    for needle in [
        &key,
        &secret,
        &key[20..28],
        &wrong[20..60],
        rotated.key.expose_secret(),
        &rotated.key.expose_secret()[20..60],
    ] {
        assert!(
            !logs.contains(needle),
            "a key or secret leaked into the logs:\n{logs}"
        );
    }
    let debug = format!("{created:?} {rotated:?} {keys:?}");
    assert!(!debug.contains(&secret) && !debug.contains(&rotated.key.expose_secret()[20..60]));
}
