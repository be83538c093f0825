//! The in-memory store against the Store contract suite.

qdn_relay_core::store_contract_tests!(async { qdn_relay_core::MemoryStore::new() });

#[tokio::test]
async fn every_case_runs_in_one_go_too() {
    assert_eq!(qdn_relay_core::testing::contract::CASES.len(), 18);
    qdn_relay_core::testing::contract::run_all(|| async { qdn_relay_core::MemoryStore::new() })
        .await;
}
