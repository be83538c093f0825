//! Corrupt rows and failed saves.

use qdn_relay_core::testing::contract::fixture;
use qdn_relay_core::{ConflictReason, ListFilter, Store, StoreError};

use crate::common::{FileStore, LATER, raw, save_new, sent, sid};

fn corrupt<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::Corrupt(msg)) => assert!(!msg.is_empty()),
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_record_that_does_not_parse_is_corrupt() {
    let fs = FileStore::fresh().await;
    let d = sent(1, "K7", "+16195550100", "SMin1", "SMleg1");
    save_new(&fs.store, &d).await;
    raw(&fs.path())
        .execute(
            "UPDATE dispatches SET record = '{\"id\": 12' WHERE id = ?1",
            [d.id().to_string()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let s = &fs.store;
    corrupt(s.get(d.id()).await, "get");
    corrupt(s.by_inbound_sid(&sid("SMin1")).await, "by_inbound_sid");
    corrupt(s.by_leg_sid(&sid("SMleg1")).await, "by_leg_sid");
    corrupt(
        s.open_for_customer(d.line(), d.customer()).await,
        "open_for_customer",
    );
    corrupt(s.open_by_tag(d.tag()).await, "open_by_tag");
    corrupt(s.list(ListFilter::All, 5).await, "list");
    // The due query reads only the index columns, so it still answers.
    let due = s.due(LATER, 5).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(due.len(), 1);
}

#[tokio::test]
async fn a_record_of_another_dispatch_or_version_is_corrupt() {
    let fs = FileStore::fresh().await;
    let a = fixture(1, "K7", "+16195550100", "SMin1", 0);
    let b = fixture(2, "B3", "+16195550111", "SMin2", 1);
    fs.store.save(&a, 0).await.unwrap_or_else(|e| panic!("{e}"));
    fs.store.save(&b, 0).await.unwrap_or_else(|e| panic!("{e}"));
    let c = raw(&fs.path());
    c.execute(
        "UPDATE dispatches SET record = (SELECT record FROM dispatches WHERE id = ?2) WHERE id = ?1",
        [a.id().to_string(), b.id().to_string()],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    corrupt(fs.store.get(a.id()).await, "a record holding another id");
    c.execute(
        "UPDATE dispatches SET version = 7 WHERE id = ?1",
        [b.id().to_string()],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    corrupt(
        fs.store.get(b.id()).await,
        "a record at another version than its row",
    );
}

#[tokio::test]
async fn a_record_of_the_wrong_type_is_corrupt() {
    let fs = FileStore::fresh().await;
    let d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    fs.store.save(&d, 0).await.unwrap_or_else(|e| panic!("{e}"));
    raw(&fs.path())
        .execute(
            "UPDATE dispatches SET record = x'00ff' WHERE id = ?1",
            [d.id().to_string()],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    corrupt(fs.store.get(d.id()).await, "a blob record");
}

/// A save refused for a uniqueness rule writes none of its rows: not the
/// dispatch, not its inbound sids, not its leg sids, not its notified
/// dispatchers.
#[tokio::test]
async fn a_refused_save_writes_nothing() {
    let fs = FileStore::fresh().await;
    let s = &fs.store;
    let a = sent(1, "K7", "+16195550100", "SMin1", "SMlegA");
    save_new(s, &a).await;
    // Same customer and line, its own tag and sids.
    let mut b = sent(2, "B3", "+16195550100", "SMin2", "SMlegB");
    b.set_version(1);
    match s.save(&b, 0).await {
        Err(StoreError::Conflict {
            reason: ConflictReason::OpenCustomer,
            ..
        }) => {}
        other => panic!("expected OpenCustomer, got {other:?}"),
    }
    assert_eq!(s.get(b.id()).await.ok().flatten(), None);
    assert_eq!(s.by_inbound_sid(&sid("SMin2")).await.ok().flatten(), None);
    assert_eq!(s.by_leg_sid(&sid("SMlegB")).await.ok().flatten(), None);
    assert_eq!(s.open_by_tag(b.tag()).await.ok().flatten(), None);
    let c = raw(&fs.path());
    for table in ["dispatches", "inbound_sids", "leg_sids", "notified"] {
        let n: i64 = c
            .query_row(
                &format!(
                    "SELECT count(*) FROM {table} WHERE {} = ?1",
                    if table == "dispatches" {
                        "id"
                    } else {
                        "dispatch"
                    }
                ),
                [b.id().to_string()],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 0, "{table} holds rows of a refused save");
    }
    let due = s.due(LATER, 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(due.iter().map(|x| x.id).collect::<Vec<_>>(), vec![a.id()]);
}

/// Closing removes a dispatch's open-only rows; its sids stay findable.
#[tokio::test]
async fn closing_clears_the_open_only_rows() {
    let fs = FileStore::fresh().await;
    let s = &fs.store;
    let mut d = sent(1, "K7", "+16195550100", "SMin1", "SMleg1");
    save_new(s, &d).await;
    d.handle(
        d.opened_at().plus(std::time::Duration::from_secs(5)),
        qdn_relay_core::Input::Dashboard(qdn_relay_core::DashboardAction::Close {
            by: "ann".into(),
        }),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    d.set_version(3);
    s.save(&d, 2).await.unwrap_or_else(|e| panic!("{e}"));
    let n: i64 = raw(&fs.path())
        .query_row("SELECT count(*) FROM notified", [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 0, "notified rows exist only while open");
    assert_eq!(
        s.by_inbound_sid(&sid("SMin1"))
            .await
            .ok()
            .flatten()
            .map(|x| x.id()),
        Some(d.id())
    );
    assert_eq!(
        s.by_leg_sid(&sid("SMleg1"))
            .await
            .ok()
            .flatten()
            .map(|x| x.id()),
        Some(d.id())
    );
    assert!(
        s.list(ListFilter::Open, 5)
            .await
            .map(|v| v.is_empty())
            .unwrap_or(false)
    );
}
