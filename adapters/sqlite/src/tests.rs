//! Query plans: every query of the port is answered from an index.

use rusqlite::Connection;

use crate::schema;
use crate::store::{
    BY_INBOUND_SID, BY_JOB, BY_LEG_SID, DUE, GET, HISTORY, IS_NOTIFIED, LIST_ALL, LIST_OPEN,
    MOVED_SIDS, OPEN_BY_TAG, OPEN_FOR_CUSTOMER, OPEN_FOR_DISPATCHER, SELECT_INBOUND, SELECT_LEGS,
    SELECT_NOTIFIED, taken_tags_sql,
};

pub(crate) fn db() -> Connection {
    let mut c = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
    schema::migrate(&mut c).unwrap_or_else(|e| panic!("{e}"));
    c
}

/// The `detail` lines of `EXPLAIN QUERY PLAN sql`, with every parameter
/// bound to NULL.
fn plan(c: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = c
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    for i in 1..=stmt.parameter_count() {
        stmt.raw_bind_parameter(i, rusqlite::types::Null)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next().unwrap_or_else(|e| panic!("{e}")) {
        out.push(r.get::<_, String>(3).unwrap_or_else(|e| panic!("{e}")));
    }
    out
}

/// A full scan of a table reads as `SCAN <table>` with no `USING` clause.
fn full_scans(plan: &[String]) -> Vec<&String> {
    plan.iter()
        .filter(|l| l.starts_with("SCAN ") && !l.contains(" USING "))
        .collect()
}

#[test]
fn due_query_is_a_range_search_on_the_deadline_index() {
    let p = plan(&db(), DUE);
    assert!(
        full_scans(&p).is_empty(),
        "due must not scan dispatches: {p:?}"
    );
    assert!(
        p.iter().any(
            |l| l.starts_with("SEARCH dispatches USING COVERING INDEX dispatches_due (")
                && l.contains("deadline<?")
        ),
        "due must search the deadline index: {p:?}"
    );
    assert!(
        !p.iter().any(|l| l.contains("TEMP B-TREE")),
        "the index already gives the order: {p:?}"
    );
}

#[test]
fn every_lookup_uses_an_index() {
    let c = db();
    for (name, sql, index) in [
        ("get", GET, "sqlite_autoindex_dispatches_1"),
        (
            "by_inbound_sid",
            BY_INBOUND_SID,
            "SEARCH s USING PRIMARY KEY (sid=?)",
        ),
        (
            "by_leg_sid",
            BY_LEG_SID,
            "SEARCH s USING PRIMARY KEY (sid=?)",
        ),
        (
            "open_for_customer",
            OPEN_FOR_CUSTOMER,
            "dispatches_open_customer",
        ),
        ("open_by_tag", OPEN_BY_TAG, "dispatches_open_tag"),
        (
            "inbound_lookup (notified)",
            IS_NOTIFIED,
            "notified_by_dispatcher",
        ),
        (
            "open_for_dispatcher",
            OPEN_FOR_DISPATCHER,
            "notified_by_dispatcher",
        ),
        ("list(All)", LIST_ALL, "sqlite_autoindex_dispatches_1"),
        ("list(Open)", LIST_OPEN, "dispatches_open_id"),
        ("by_job", BY_JOB, "dispatches_job"),
        (
            "a save's inbound ids",
            SELECT_INBOUND,
            "inbound_sids_dispatch",
        ),
        ("a save's leg ids", SELECT_LEGS, "leg_sids_dispatch"),
        ("a save's notified", SELECT_NOTIFIED, "PRIMARY KEY"),
        ("history", HISTORY, "PRIMARY KEY (dispatch=?)"),
        (
            "a mirror's moved inbound ids",
            MOVED_SIDS,
            "inbound_sids_moved",
        ),
        ("a mirror's moved leg ids", MOVED_SIDS, "leg_sids_moved"),
    ] {
        let p = plan(&c, sql);
        assert!(full_scans(&p).is_empty(), "{name} scans a table: {p:?}");
        assert!(
            p.iter().any(|l| l.contains(index)),
            "{name} should use {index}: {p:?}"
        );
        assert!(
            !p.iter().any(|l| l.contains("TEMP B-TREE")),
            "{name} sorts instead of reading an index in order: {p:?}"
        );
    }
}

#[test]
fn taken_tags_reads_only_the_open_tag_index() {
    let p = plan(&db(), &taken_tags_sql(32));
    assert!(full_scans(&p).is_empty(), "taken tags scans a table: {p:?}");
    assert!(
        p.iter()
            .any(|l| l.contains("USING COVERING INDEX dispatches_open_tag")),
        "taken tags should read the open tag index alone: {p:?}"
    );
}

mod group_commit {
    //! Saves that share one transaction get exactly the results they would
    //! have had one by one, and a failure never commits a save by accident.

    use qdn_relay_core::testing::contract::fixture;
    use qdn_relay_core::{ConflictReason, Dispatch, DispatchId, StoreError};
    use rusqlite::Connection;

    use crate::store::{Row, save_group};

    use super::db;

    fn row(d: &Dispatch, expected: u64) -> Row {
        Row::new(d, expected).unwrap_or_else(|e| panic!("{e}"))
    }

    fn stored(c: &Connection) -> Vec<String> {
        let mut stmt = c
            .prepare("SELECT id FROM dispatches ORDER BY id")
            .unwrap_or_else(|e| panic!("{e}"));
        stmt.query_map([], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    fn key(id: DispatchId) -> String {
        id.to_string()
    }

    #[test]
    fn a_refused_save_is_rolled_back_alone() {
        let mut c = db();
        let a = fixture(1, "K7", "+16195550100", "SMin1", 0);
        let same_tag = fixture(2, "K7", "+16195550111", "SMin2", 1);
        let b = fixture(3, "B8", "+16195550122", "SMin3", 2);
        let mut a2 = a.clone();
        a2.set_version(2);
        let stale = a2.clone(); // also expects version 1
        let rows = [
            row(&a, 0),
            row(&same_tag, 0),
            row(&b, 0),
            row(&a2, 1),
            row(&stale, 1),
        ];
        let refs: Vec<&Row> = rows.iter().collect();
        let results = save_group(&mut c, &refs);
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(
            matches!(
                &results[1],
                Err(StoreError::Conflict {
                    reason: ConflictReason::Tag(_),
                    ..
                })
            ),
            "the tag is held by a save earlier in the group: {:?}",
            results[1]
        );
        assert!(results[2].is_ok(), "{:?}", results[2]);
        assert!(
            results[3].is_ok(),
            "an update sees the create before it: {:?}",
            results[3]
        );
        assert!(
            matches!(
                &results[4],
                Err(StoreError::Conflict {
                    reason: ConflictReason::Version {
                        expected: 1,
                        found: Some(2)
                    },
                    ..
                })
            ),
            "the second writer of version 2 loses: {:?}",
            results[4]
        );
        let mut want = vec![key(a.id()), key(b.id())];
        want.sort();
        assert_eq!(stored(&c), want);
        let version: i64 = c
            .query_row(
                "SELECT version FROM dispatches WHERE id = ?1",
                [key(a.id())],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(version, 2);
    }

    /// A save that fails in SQLite (here a trigger aborts its insert, or
    /// rolls back the whole transaction) gets the error; the others are
    /// committed, and nothing of the failed one is.
    #[test]
    fn a_failing_save_does_not_take_the_group_down_or_slip_through() {
        for raise in ["ABORT", "ROLLBACK"] {
            let mut c = db();
            c.execute_batch(&format!(
                "CREATE TRIGGER boom BEFORE INSERT ON dispatches \
                 WHEN NEW.customer = '+16195550999' BEGIN SELECT RAISE({raise}, 'boom'); END;"
            ))
            .unwrap_or_else(|e| panic!("{e}"));
            let a = fixture(1, "K7", "+16195550100", "SMin1", 0);
            let bad = fixture(2, "B8", "+16195550999", "SMin2", 1);
            let b = fixture(3, "C9", "+16195550122", "SMin3", 2);
            let rows = [row(&a, 0), row(&bad, 0), row(&b, 0)];
            let refs: Vec<&Row> = rows.iter().collect();
            let results = save_group(&mut c, &refs);
            assert!(results[0].is_ok(), "{raise}: {:?}", results[0]);
            assert!(
                matches!(&results[1], Err(StoreError::Backend { .. })),
                "{raise}: {:?}",
                results[1]
            );
            assert!(results[2].is_ok(), "{raise}: {:?}", results[2]);
            let mut want = vec![key(a.id()), key(b.id())];
            want.sort();
            assert_eq!(stored(&c), want, "{raise}");
            let sids: i64 = c
                .query_row("SELECT count(*) FROM inbound_sids", [], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(sids, 2, "{raise}: nothing of the failed save is kept");
            assert!(c.is_autocommit(), "{raise}: no transaction left open");
        }
    }

    /// An update rewrites only what changed: a save that changes no lookup
    /// row writes the dispatch's row alone, and the lookup rows stay.
    #[test]
    fn an_update_rewrites_only_the_rows_that_changed() {
        let mut c = db();
        let d = fixture(1, "K7", "+16195550100", "SMin1", 0);
        assert!(save_group(&mut c, &[&row(&d, 0)])[0].is_ok());
        let counts = |c: &Connection| -> Vec<i64> {
            ["inbound_sids", "leg_sids", "notified"]
                .iter()
                .map(|t| {
                    c.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
                        .unwrap_or_else(|e| panic!("{e}"))
                })
                .collect()
        };
        let rows_before = counts(&c);
        assert!(rows_before[0] == 1 && rows_before[2] > 0, "{rows_before:?}");
        let changes = |c: &Connection| -> i64 {
            c.query_row("SELECT total_changes()", [], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let before = changes(&c);
        let mut next = d.clone();
        next.set_version(2);
        assert!(save_group(&mut c, &[&row(&next, 1)])[0].is_ok());
        assert_eq!(changes(&c) - before, 1, "only the dispatch's own row");
        assert_eq!(counts(&c), rows_before);
    }

    /// A transaction that cannot begin fails every save in the group with
    /// the same (retryable) error, and writes nothing.
    #[test]
    fn a_busy_database_fails_every_save_in_the_group() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("relay.db");
        let mut c = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        c.execute_batch("PRAGMA journal_mode = WAL")
            .unwrap_or_else(|e| panic!("{e}"));
        crate::schema::migrate(&mut c).unwrap_or_else(|e| panic!("{e}"));
        let blocker = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        blocker
            .execute_batch("BEGIN IMMEDIATE")
            .unwrap_or_else(|e| panic!("{e}"));
        let a = fixture(1, "K7", "+16195550100", "SMin1", 0);
        let b = fixture(3, "C9", "+16195550122", "SMin3", 2);
        let rows = [row(&a, 0), row(&b, 0)];
        let refs: Vec<&Row> = rows.iter().collect();
        for r in save_group(&mut c, &refs) {
            assert!(
                matches!(
                    r,
                    Err(StoreError::Backend {
                        retryable: true,
                        ..
                    })
                ),
                "{r:?}"
            );
        }
        blocker
            .execute_batch("ROLLBACK")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(stored(&c).is_empty());
    }
}
