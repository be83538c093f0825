//! A file keeps everything across reopening; the schema migrates once.

use qdn_relay_core::{ListFilter, Store};
use qdn_relay_sqlite::{OpenError, SCHEMA_VERSION, SqliteStore};

use crate::common::{FileStore, LATER, raw, save_new, sent, sid, user_version};

#[tokio::test]
async fn reopening_a_file_keeps_everything() {
    let fs = FileStore::fresh().await;
    let d = sent(1, "K7", "+16195550100", "SMin1", "SMleg1");
    save_new(&fs.store, &d).await;
    let path = fs.path();
    let FileStore { store, dir } = fs;
    drop(store);

    let s = SqliteStore::open(&path)
        .await
        .unwrap_or_else(|e| panic!("reopen: {e}"));
    let got = s.get(d.id()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.as_ref(), Some(&d), "the dispatch reads back equal");

    let due = s.due(LATER, 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        due.iter().map(|x| x.id).collect::<Vec<_>>(),
        vec![d.id()],
        "still due"
    );
    assert_eq!(Some(due[0].deadline), d.next_deadline());

    let id = |r: Result<Option<qdn_relay_core::Dispatch>, _>| {
        r.unwrap_or_else(|e| panic!("{e}")).map(|x| x.id())
    };
    assert_eq!(id(s.by_inbound_sid(&sid("SMin1")).await), Some(d.id()));
    assert_eq!(id(s.by_leg_sid(&sid("SMleg1")).await), Some(d.id()));
    assert_eq!(
        id(s.open_for_customer(d.line(), d.customer()).await),
        Some(d.id())
    );
    assert_eq!(id(s.open_by_tag(d.tag()).await), Some(d.id()));
    let notified = d.notified();
    assert!(!notified.is_empty(), "the fixture texted a dispatcher");
    for n in notified {
        let open = s
            .open_for_dispatcher(n, 5)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            open.iter().map(|x| x.id()).collect::<Vec<_>>(),
            vec![d.id()]
        );
    }
    for filter in [ListFilter::All, ListFilter::Open] {
        let l = s.list(filter, 5).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l, vec![d.clone()], "{filter:?}");
    }

    // And it goes on at the stored version.
    let mut next = d.clone();
    next.set_version(3);
    s.save(&next, 2)
        .await
        .unwrap_or_else(|e| panic!("save after reopen: {e}"));
    drop(s);
    drop(dir);
}

#[tokio::test]
async fn opening_sets_wal_and_migrates_once() {
    let fs = FileStore::fresh().await;
    let path = fs.path();
    assert_eq!(user_version(&path), i64::from(SCHEMA_VERSION));
    assert_eq!(SCHEMA_VERSION, 6);
    let mode: String = raw(&path)
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mode, "wal");
    let objects = |p: &std::path::Path| -> i64 {
        raw(p)
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let before = objects(&path);
    let d = sent(1, "K7", "+16195550100", "SMin1", "SMleg1");
    save_new(&fs.store, &d).await;

    // Open the same file again, twice, while the first store is still open:
    // the migrations (plain CREATEs, which would fail if run twice) do not
    // run again, and nothing is lost.
    for _ in 0..2 {
        let again = SqliteStore::open(&path)
            .await
            .unwrap_or_else(|e| panic!("reopen: {e}"));
        assert_eq!(user_version(&path), i64::from(SCHEMA_VERSION));
        assert_eq!(objects(&path), before);
        let got = again.get(d.id()).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, Some(d.clone()));
    }
}

#[tokio::test]
async fn a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("relay.db");
    drop(
        SqliteStore::open(&path)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let newer = i64::from(SCHEMA_VERSION) + 1;
    raw(&path)
        .pragma_update(None, "user_version", newer)
        .unwrap_or_else(|e| panic!("{e}"));
    match SqliteStore::open(&path).await {
        Err(e @ OpenError::NewerSchema { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&newer.to_string()), "{msg}");
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    assert_eq!(user_version(&path), newer, "the file is untouched");
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("relay.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap_or_else(|e| panic!("{e}"));
    let r = SqliteStore::open(&path).await;
    assert!(r.is_err(), "garbage must not open: {r:?}");
}
