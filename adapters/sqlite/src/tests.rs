//! Query plans: every query of the port is answered from an index.

use rusqlite::Connection;

use crate::schema;
use crate::store::{
    BY_INBOUND_SID, BY_JOB, BY_LEG_SID, DUE, GET, LIST_ALL, LIST_OPEN, OPEN_BY_TAG,
    OPEN_FOR_CUSTOMER, OPEN_FOR_DISPATCHER, taken_tags_sql,
};

fn db() -> Connection {
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
            "open_for_dispatcher",
            OPEN_FOR_DISPATCHER,
            "notified_by_dispatcher",
        ),
        ("list(All)", LIST_ALL, "sqlite_autoindex_dispatches_1"),
        ("list(Open)", LIST_OPEN, "dispatches_open_id"),
        ("by_job", BY_JOB, "dispatches_job"),
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
