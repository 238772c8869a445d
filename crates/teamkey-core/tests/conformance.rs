//! MemoryStore keeps the KeyStore contract.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_conformance_kit() {
    teamkey_core::test_kit::check_store(teamkey_core::MemoryStore::new()).await;
}

#[tokio::test(flavor = "current_thread")]
async fn memory_store_passes_on_a_single_thread_too() {
    teamkey_core::test_kit::check_store(teamkey_core::MemoryStore::new()).await;
}
