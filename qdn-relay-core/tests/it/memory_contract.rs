//! The in-memory store against the Store contract suite.

qdn_relay_core::store_contract_tests!(async { qdn_relay_core::MemoryStore::new() });

#[tokio::test]
async fn every_case_runs_in_one_go_too() {
    assert_eq!(qdn_relay_core::testing::contract::CASES.len(), 19);
    qdn_relay_core::testing::contract::run_all(|| async { qdn_relay_core::MemoryStore::new() })
        .await;
}

/// A dispatch with 10,000 texts keeps a small record and loses nothing.
#[tokio::test]
async fn ten_thousand_texts() {
    let store = qdn_relay_core::MemoryStore::new();
    qdn_relay_core::testing::contract::many_texts(&store, 10_000, 1).await;
    store.check_indexes().unwrap_or_else(|e| panic!("{e}"));
}
