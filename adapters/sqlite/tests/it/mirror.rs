//! The mirrored store: what memory answers is what the file holds, across
//! reopening, refused saves and racing writers; one owner per file.

use std::sync::Arc;

use qdn_relay_core::testing::contract::fixture;
use qdn_relay_core::{OptOuts, PhoneNumber, Store, StoreError, Timestamp};
use qdn_relay_sqlite::{MirroredStore, OpenError, SqliteStore};

use crate::common::{FileStore, LATER, save_new, sent};

fn n(s: &str) -> PhoneNumber {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[tokio::test]
async fn a_second_owner_is_refused_until_the_first_is_gone() {
    let first = FileStore::mirrored().await;
    let e = MirroredStore::open(first.file())
        .await
        .expect_err("one owner per file");
    assert!(matches!(e, OpenError::InUse { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("in use by another qdn-relay process"),
        "{e}"
    );
    let path = first.file();
    let FileStore { store, dir } = first;
    drop(store);
    let again = MirroredStore::open(&path).await.expect("free again");
    drop(again);
    drop(dir);
}

#[tokio::test]
async fn what_a_file_holds_is_loaded_and_what_a_mirror_saves_survives_it() {
    // A file written without a mirror (the shared mode, or an older build).
    let plain = FileStore::fresh().await;
    let a = sent(1, "K7", "+16195550100", "SMin1", "SMleg1");
    save_new(&plain.store, &a).await;
    plain
        .store
        .opt_out(n("+16195550199"), Timestamp::from_millis(1))
        .await
        .expect("opt out");
    let path = plain.path();
    let FileStore { store, dir } = plain;
    drop(store);

    let m = MirroredStore::open(&path).await.expect("mirror");
    assert_eq!(m.len(), 1);
    let got = m.get(a.id()).await.expect("get").expect("loaded");
    assert_eq!(got.version(), a.version());
    assert!(
        m.by_leg_sid(&"SMleg1".parse().expect("sid"))
            .await
            .expect("leg")
            .is_some()
    );
    assert_eq!(m.due(LATER, 10).await.expect("due").len(), 1);
    assert!(m.is_opted_out(n("+16195550199")).await.expect("opted out"));

    // Through the mirror: a new dispatch, an update, an opt-in.
    let b = fixture(2, "K8", "+16195550101", "SMin2", 0);
    m.save(&b, 0).await.expect("create");
    m.opt_in(n("+16195550199")).await.expect("opt in");
    assert!(!m.is_opted_out(n("+16195550199")).await.expect("read"));
    drop(m);

    // The file has all of it: read without a mirror.
    let plain = SqliteStore::open(&path).await.expect("reopen");
    assert!(plain.get(b.id()).await.expect("get").is_some());
    assert!(!plain.is_opted_out(n("+16195550199")).await.expect("read"));
    drop(plain);
    drop(dir);
}

#[tokio::test]
async fn a_save_the_file_refuses_changes_nothing_in_memory() {
    let m = FileStore::mirrored().await;
    let a = fixture(1, "K7", "+16195550100", "SMin1", 0);
    m.save(&a, 0).await.expect("create");
    // A second dispatch for the same customer while the first is open: the
    // file's unique index refuses it, and memory does not show it.
    let b = fixture(2, "K8", "+16195550100", "SMin2", 0);
    let e = m.save(&b, 0).await.expect_err("one open per customer");
    assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    assert!(m.get(b.id()).await.expect("get").is_none());
    assert!(
        m.by_inbound_sid(&"SMin2".parse().expect("sid"))
            .await
            .expect("sid")
            .is_none()
    );
    // A stale version: refused, memory keeps the committed one.
    let mut stale = a.clone();
    stale.set_version(2);
    m.save(&stale, 1).await.expect("update");
    let mut again = a.clone();
    again.set_version(2);
    assert!(m.save(&again, 1).await.is_err(), "stale");
    assert_eq!(
        m.get(a.id()).await.expect("get").expect("held").version(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_leave_memory_equal_to_the_file() {
    let m = Arc::new(FileStore::mirrored().await);
    let shared = fixture(1, "K7", "+16195550100", "SMshared", 0);
    m.save(&shared, 0).await.expect("create");
    let shared_id = shared.id();
    let mut tasks = Vec::new();
    for i in 0..8u128 {
        let m = Arc::clone(&m);
        tasks.push(tokio::spawn(async move {
            // A dispatch of the task's own, then updates racing the other
            // tasks' on the shared one: one save wins each version.
            let own = fixture(
                100 + i,
                &format!("K{}", 10 + i),
                &format!("+1619555{:04}", 200 + i),
                &format!("SMrace{i}"),
                0,
            );
            m.save(&own, 0).await.expect("own");
            let mut won = 0u64;
            for _ in 0..25 {
                let mut d = m.get(shared_id).await.expect("get").expect("held");
                let expected = d.version();
                d.set_version(expected + 1);
                match m.save(&d, expected).await {
                    Ok(()) => won += 1,
                    Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
                tokio::task::yield_now().await;
            }
            won
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += t.await.expect("task");
    }
    let m = Arc::try_unwrap(m).unwrap_or_else(|_| panic!("tasks done"));
    let path = m.file();
    let FileStore { store, dir } = m;
    let in_memory = store
        .list(qdn_relay_core::ListFilter::All, 100)
        .await
        .expect("list");
    drop(store);
    let file = SqliteStore::open(&path).await.expect("reopen");
    let on_file = file
        .list(qdn_relay_core::ListFilter::All, 100)
        .await
        .expect("list");
    let versions = |ds: &[qdn_relay_core::Dispatch]| -> Vec<(String, u64)> {
        ds.iter()
            .map(|d| (d.id().to_string(), d.version()))
            .collect()
    };
    assert_eq!(in_memory.len(), 9);
    assert_eq!(versions(&in_memory), versions(&on_file));
    let shared_now = on_file
        .iter()
        .find(|d| d.id() == shared_id)
        .expect("shared");
    assert_eq!(shared_now.version(), 1 + won, "every won save, none lost");
    assert!(won > 0);
    drop(file);
    drop(dir);
}
