//! Concurrent writers: exactly one save per version wins.

use std::sync::Arc;

use qdn_relay_core::testing::contract::fixture;
use qdn_relay_core::{ConflictReason, DashboardAction, Input, Store, StoreError};
use qdn_relay_sqlite::{SqliteOptions, SqliteStore};

use crate::common::{FileStore, raw};

const WRITERS: usize = 24;

/// Saves `WRITERS` different successors of version 1 at once, each from its
/// own task on a multi-threaded runtime, through `stores` in turn; returns
/// how many won.
async fn race(stores: Vec<Arc<dyn Store>>) -> usize {
    let d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    stores[0]
        .save(&d, 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let store = Arc::clone(&stores[i % stores.len()]);
        let barrier = Arc::clone(&barrier);
        let mut mine = d.clone();
        let action = if i % 2 == 0 {
            DashboardAction::Ack {
                by: format!("writer-{i}"),
            }
        } else {
            DashboardAction::Close {
                by: format!("writer-{i}"),
            }
        };
        mine.handle(mine.opened_at(), Input::Dashboard(action))
            .unwrap_or_else(|e| panic!("{e}"));
        mine.set_version(2);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            (store.save(&mine, 1).await, mine)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (r, mine) = t.await.unwrap_or_else(|e| panic!("{e}"));
        match r {
            Ok(()) => winners.push(mine),
            Err(StoreError::Conflict {
                reason:
                    ConflictReason::Version {
                        expected: 1,
                        found: Some(2),
                    },
                ..
            }) => {}
            Err(e) => panic!("a losing writer must get a version conflict, got {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins");
    for s in &stores {
        let stored = s.get(d.id()).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            stored.as_ref(),
            Some(&winners[0]),
            "the winner's save is what is stored"
        );
    }
    winners.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_a_file_one_wins() {
    let fs = FileStore::fresh().await;
    let store: Arc<dyn Store> = Arc::new(fs.store.clone());
    assert_eq!(race(vec![store]).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_in_memory_one_wins() {
    let s = SqliteStore::open_in_memory()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(race(vec![Arc::new(s)]).await, 1);
}

/// Two stores on one file stand for two processes: their writer
/// connections race for SQLite's lock, not for one mutex.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_across_stores_on_one_file_one_wins() {
    let fs = FileStore::fresh().await;
    let other = SqliteStore::open(fs.path())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        race(vec![Arc::new(fs.store.clone()), Arc::new(other)]).await,
        1
    );
}

/// A write lock held past the busy timeout is a retryable backend error;
/// readers go on reading meanwhile (WAL), and the save succeeds once the
/// lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_is_retryable_and_readers_go_on() {
    let fs = FileStore::fresh_with(
        SqliteOptions::default().busy_timeout(std::time::Duration::from_millis(50)),
    )
    .await;
    let d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    fs.store.save(&d, 0).await.unwrap_or_else(|e| panic!("{e}"));

    let blocker = raw(&fs.path());
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .unwrap_or_else(|e| panic!("{e}"));

    let mut next = d.clone();
    next.set_version(2);
    match fs.store.save(&next, 1).await {
        Err(StoreError::Backend {
            retryable: true, ..
        }) => {}
        other => panic!("a busy database must be a retryable backend error, got {other:?}"),
    }
    let got = fs
        .store
        .get(d.id())
        .await
        .unwrap_or_else(|e| panic!("read while locked: {e}"));
    assert_eq!(got, Some(d.clone()), "the failed save changed nothing");

    blocker
        .execute_batch("ROLLBACK")
        .unwrap_or_else(|e| panic!("{e}"));
    fs.store
        .save(&next, 1)
        .await
        .unwrap_or_else(|e| panic!("after the lock: {e}"));
}

/// Many saves at once (they share transactions): each distinct dispatch is
/// stored, and of two opening with one tag exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_saves_each_get_their_own_result() {
    const N: usize = 96;
    let fs = FileStore::fresh().await;
    let store = Arc::new(fs.store.clone());
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for i in 0..N {
        // Pairs (2k, 2k + 1) share a tag; every dispatch has its own
        // customer and message id.
        let tag = format!("{}{}", ['K', 'B', 'C', 'D'][i / 2 % 4], 1000 + i / 2);
        let d = fixture(
            1 + i as u128,
            &tag,
            &format!("+1619555{:04}", 1000 + i),
            &format!("SMin{i}"),
            i as i64,
        );
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            (store.save(&d, 0).await, d)
        }));
    }
    let mut stored = 0;
    for t in tasks {
        let (r, d) = t.await.unwrap_or_else(|e| panic!("{e}"));
        match r {
            Ok(()) => {
                stored += 1;
                let got = store.get(d.id()).await.unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(got.as_ref(), Some(&d), "a save that returned Ok is stored");
            }
            Err(StoreError::Conflict {
                reason: ConflictReason::Tag(t),
                ..
            }) => {
                assert_eq!(t, d.tag());
                let holder = store
                    .open_by_tag(t)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"))
                    .unwrap_or_else(|| panic!("a tag conflict means another holds {t}"));
                assert_ne!(holder.id(), d.id());
                assert!(
                    store
                        .get(d.id())
                        .await
                        .unwrap_or_else(|e| panic!("{e}"))
                        .is_none(),
                    "a refused save wrote nothing"
                );
            }
            Err(e) => panic!("only tag conflicts are expected, got {e}"),
        }
    }
    assert_eq!(stored, N / 2, "one of each pair");
}
