//! Refused verifications are logged at info with the key id, within a
//! budget. A binary of its own: tracing caches each log site's interest
//! process-wide, so a test without a subscriber running beside it on
//! another thread could switch these lines off.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use teamkey_core::{CreateOptions, KeyManager, MemoryStore, TeamId};

use support::logs::capture;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

fn team() -> TeamId {
    TeamId::new("acme").unwrap()
}

#[test]
fn refusals_are_logged_at_info_within_a_budget() {
    let (captured, _guard) = capture(tracing::Level::INFO);
    let rt = runtime();
    let keys = KeyManager::new(MemoryStore::new());
    let created = rt
        .block_on(keys.create(&team(), "ok", CreateOptions::new()))
        .unwrap();
    rt.block_on(keys.revoke(&team(), &created.info.id)).unwrap();
    let _ = rt.block_on(keys.verify(created.key.expose_secret()));

    let flood: Vec<String> = (0..2_000)
        .map(|_| keys.format().generate().unwrap().expose_secret().to_owned())
        .collect();
    for key in &flood {
        assert!(rt.block_on(keys.verify(key)).is_err());
    }
    let logs = captured.text();
    let refusals: Vec<&str> = logs.lines().filter(|l| l.contains("API key refused")).collect();
    assert!(refusals[0].contains(" INFO ") && refusals[0].contains(created.info.id.as_str()));
    assert!(refusals[0].contains("revoked"), "{}", refusals[0]);
    // 2,001 refusals within a few seconds at most: a few budgets of 20.
    assert!(refusals.len() <= 20 * 4, "{} lines", refusals.len());
    assert!(!logs.contains(&flood[0][20..60]), "never the secret");
}
