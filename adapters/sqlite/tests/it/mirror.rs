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
    // check in memory refuses it, and the file and memory do not show it.
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
    let (in_memory, on_file) = memory_and_file(m).await;
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
}

/// Applies `input` to `d` (at `secs` after it opened) and bumps its version.
fn step(d: &mut qdn_relay_core::Dispatch, secs: u64, input: qdn_relay_core::Input) -> u64 {
    let expected = d.version();
    d.handle(
        d.opened_at().plus(std::time::Duration::from_secs(secs)),
        input,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    d.set_version(expected + 1);
    expected
}

#[tokio::test]
async fn a_shared_store_rebuilds_the_lookups_a_mirror_did_not_keep() {
    use qdn_relay_core::{DashboardAction, Input, JobId, ListFilter, MemoryStore};

    // The mirror writes the records alone: three dispatches, one of them
    // closed, one linked to a job.
    let owned = FileStore::mirrored().await;
    let reference = MemoryStore::new();
    let a = sent(1, "K7", "+16195550100", "SMinA", "SMlegA");
    let mut b = sent(2, "K8", "+16195550101", "SMinB", "SMlegB");
    let mut c = sent(3, "K9", "+16195550102", "SMinC", "SMlegC");
    for d in [&a, &b, &c] {
        save_new(&owned.store, d).await;
        save_new(&reference, d).await;
    }
    let close = Input::Dashboard(DashboardAction::Close { by: "ann".into() });
    let expected = step(&mut b, 5, close);
    owned.store.save(&b, expected).await.expect("close b");
    reference.save(&b, expected).await.expect("close b");
    let job: JobId = "job-7".parse().expect("job id");
    let link = Input::LinkJob {
        job: job.clone(),
        sync: false,
    };
    let expected = step(&mut c, 6, link);
    owned.store.save(&c, expected).await.expect("link c");
    reference.save(&c, expected).await.expect("link c");
    let path = owned.file();
    let FileStore { store, dir } = owned;
    drop(store);

    // What the file holds says the lookups are stale and the indexes gone.
    let stale: i64 = crate::common::raw(&path)
        .query_row("SELECT stale FROM lookups", [], |r| r.get(0))
        .expect("stale");
    assert_eq!(stale, 1);
    let rows: i64 = crate::common::raw(&path)
        .query_row("SELECT count(*) FROM inbound_sids", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rows, 0, "the owner keeps no lookup rows of its records");

    // A shared store rebuilds them: every query answers as the reference.
    let shared = SqliteStore::open(&path).await.expect("shared open");
    let ids = |ds: Vec<qdn_relay_core::Dispatch>| -> Vec<String> {
        ds.iter()
            .map(|d| format!("{}@{}", d.id(), d.version()))
            .collect()
    };
    for d in [&a, &b, &c] {
        assert_eq!(
            shared.get(d.id()).await.expect("get"),
            reference.get(d.id()).await.expect("get")
        );
        for s in d.inbound_sids() {
            assert_eq!(
                shared.by_inbound_sid(s).await.expect("sid").map(|d| d.id()),
                Some(d.id())
            );
        }
        for s in d.leg_sids() {
            assert_eq!(
                shared.by_leg_sid(s).await.expect("leg").map(|d| d.id()),
                Some(d.id())
            );
        }
        assert_eq!(
            shared
                .open_for_customer(d.line(), d.customer())
                .await
                .expect("customer")
                .map(|d| d.id()),
            reference
                .open_for_customer(d.line(), d.customer())
                .await
                .expect("customer")
                .map(|d| d.id())
        );
        assert_eq!(
            shared
                .open_by_tag(d.tag())
                .await
                .expect("tag")
                .map(|d| d.id()),
            reference
                .open_by_tag(d.tag())
                .await
                .expect("tag")
                .map(|d| d.id())
        );
    }
    let due = |v: Vec<qdn_relay_core::Due>| -> Vec<String> {
        v.iter().map(|d| format!("{d:?}")).collect()
    };
    assert_eq!(
        due(shared.due(LATER, 10).await.expect("due")),
        due(reference.due(LATER, 10).await.expect("due"))
    );
    for filter in [ListFilter::All, ListFilter::Open] {
        assert_eq!(
            ids(shared.list(filter, 10).await.expect("list")),
            ids(reference.list(filter, 10).await.expect("list"))
        );
    }
    let dispatcher = n("+16195550101");
    assert_eq!(
        ids(shared
            .open_for_dispatcher(dispatcher, 10)
            .await
            .expect("dispatcher")),
        ids(reference
            .open_for_dispatcher(dispatcher, 10)
            .await
            .expect("dispatcher"))
    );
    assert_eq!(
        ids(shared.by_job(&job, 10).await.expect("job")),
        vec![format!("{}@{}", c.id(), c.version())]
    );

    // And the rules hold again through the file's indexes and rows.
    let same_customer = fixture(4, "K10", "+16195550100", "SMinD", 0);
    assert!(matches!(
        shared.save(&same_customer, 0).await,
        Err(StoreError::Conflict {
            reason: qdn_relay_core::ConflictReason::OpenCustomer,
            ..
        })
    ));
    let same_sid = fixture(5, "K11", "+16195550109", "SMinB", 0);
    assert!(matches!(
        shared.save(&same_sid, 0).await,
        Err(StoreError::Conflict {
            reason: qdn_relay_core::ConflictReason::InboundSid(_),
            ..
        })
    ));
    let freed = fixture(6, "K12", "+16195550101", "SMinE", 0);
    shared.save(&freed, 0).await.expect("b's customer is free");
    drop(shared);
    let fresh: i64 = crate::common::raw(&path)
        .query_row("SELECT stale FROM lookups", [], |r| r.get(0))
        .expect("stale");
    assert_eq!(fresh, 0);

    // A mirror takes the file again: it loads what the shared store wrote.
    let again = MirroredStore::open(&path).await.expect("mirror again");
    assert_eq!(again.len(), 4);
    assert!(
        again
            .by_inbound_sid(&"SMinE".parse().expect("sid"))
            .await
            .expect("sid")
            .is_some()
    );
    drop(again);
    drop(dir);
}

#[tokio::test]
async fn a_mirror_and_shared_stores_exclude_each_other() {
    let owned = FileStore::mirrored().await;
    let e = SqliteStore::open(owned.file())
        .await
        .expect_err("the mirror owns the file");
    assert!(matches!(e, OpenError::InUse { .. }), "{e}");
    let path = owned.file();
    let FileStore { store, dir } = owned;
    drop(store);

    let shared = SqliteStore::open(&path).await.expect("shared");
    let second = SqliteStore::open(&path).await.expect("shared stores share");
    let e = MirroredStore::open(&path)
        .await
        .expect_err("shared stores hold the file");
    assert!(matches!(e, OpenError::InUse { .. }), "{e}");
    drop(shared);
    drop(second);
    drop(MirroredStore::open(&path).await.expect("free again"));
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_saves_of_one_key_commit_one_and_memory_equals_the_file() {
    // 16 new dispatches at once for the same customer, and 16 more with the
    // same inbound message id: one of each wins, the others are refused,
    // whichever order the writer commits them in.
    let m = Arc::new(FileStore::mirrored().await);
    let mut tasks = Vec::new();
    for i in 0..32u128 {
        let m = Arc::clone(&m);
        tasks.push(tokio::spawn(async move {
            let d = if i < 16 {
                fixture(
                    100 + i,
                    &format!("K{}", 100 + i),
                    "+16195550100",
                    &format!("SMc{i}"),
                    0,
                )
            } else {
                fixture(
                    100 + i,
                    &format!("K{}", 100 + i),
                    &format!("+1619555{:04}", 1000 + i),
                    "SMsame",
                    0,
                )
            };
            match m.save(&d, 0).await {
                Ok(()) => Some(i),
                Err(StoreError::Conflict { .. }) => None,
                Err(e) => panic!("{e}"),
            }
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        won.extend(t.await.expect("task"));
    }
    assert_eq!(won.iter().filter(|&&i| i < 16).count(), 1, "{won:?}");
    assert_eq!(won.iter().filter(|&&i| i >= 16).count(), 1, "{won:?}");
    let (in_memory, on_file) = memory_and_file(m).await;
    assert_eq!(in_memory.len(), 2);
    assert_eq!(in_memory, on_file);
}

/// Every dispatch the mirror holds in memory, then (the mirror closed)
/// every one the file holds, read by a shared store.
async fn memory_and_file(
    m: Arc<FileStore<MirroredStore>>,
) -> (Vec<qdn_relay_core::Dispatch>, Vec<qdn_relay_core::Dispatch>) {
    let m = Arc::try_unwrap(m).unwrap_or_else(|_| panic!("tasks done"));
    let path = m.file();
    let FileStore { store, dir } = m;
    let all = qdn_relay_core::ListFilter::All;
    let in_memory = store.list(all, 100).await.expect("list");
    drop(store);
    let file = SqliteStore::open(&path).await.expect("reopen");
    let on_file = file.list(all, 100).await.expect("list");
    drop(file);
    drop(dir);
    (in_memory, on_file)
}

#[tokio::test]
async fn a_save_whose_caller_went_away_still_reaches_memory() {
    use std::future::Future as _;
    use std::task::{Context, Poll, Waker};

    let m = FileStore::mirrored().await;
    // Each save is polled once (checked and queued) and dropped before the
    // commit is heard of, as a cancelled request's. The writer may commit
    // one before the poll returns; the others are the case under test.
    let mut cancelled = Vec::new();
    for i in 0..20u128 {
        let d = fixture(
            1 + i,
            &format!("K{}", 10 + i),
            &format!("+1619555{:04}", 100 + i),
            &format!("SMin{i}"),
            0,
        );
        let mut save = Box::pin(m.store.save(&d, 0));
        let mut cx = Context::from_waker(Waker::noop());
        if matches!(save.as_mut().poll(&mut cx), Poll::Pending) {
            cancelled.push(d.clone());
        }
    }
    assert!(
        !cancelled.is_empty(),
        "no save was still in flight when dropped"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for d in &cancelled {
        while m.store.get(d.id()).await.expect("get").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "a committed save never reached memory"
            );
            tokio::task::yield_now().await;
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // Memory and the file agree, so the next save is taken.
        let mut next = d.clone();
        next.set_version(2);
        m.store.save(&next, 1).await.expect("next save");
    }
}
