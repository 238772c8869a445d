//! Refused verifications are logged at info with the key id, within a
//! budget. A binary of its own: tracing caches each log site's interest
//! process-wide, so a test without a subscriber running beside it on
//! another thread could switch these lines off.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::Write;
use std::sync::{Arc, Mutex};

use teamkey_core::{CreateOptions, KeyManager, MemoryStore, TeamId};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

fn team() -> TeamId {
    TeamId::new("acme").unwrap()
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn refusals_are_logged_at_info_within_a_budget() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
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
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let refusals: Vec<&str> = logs.lines().filter(|l| l.contains("API key refused")).collect();
    assert!(refusals[0].contains(" INFO ") && refusals[0].contains(created.info.id.as_str()));
    assert!(refusals[0].contains("revoked"), "{}", refusals[0]);
    // 2,001 refusals within a few seconds at most: a few budgets of 20.
    assert!(refusals.len() <= 20 * 4, "{} lines", refusals.len());
    assert!(!logs.contains(&flood[0][20..60]), "never the secret");
}
