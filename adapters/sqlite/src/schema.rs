//! The schema and its migrations.
//!
//! The database's `user_version` is the number of migrations applied. Each
//! migration runs once, in order, inside the same `BEGIN IMMEDIATE`
//! transaction that reads and bumps `user_version`, so two processes
//! opening a fresh file at once cannot both run it.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::OpenError;

/// The schema version this build writes: the number of migrations it knows.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Migration `i` takes the schema from version `i` to `i + 1`. Append only:
/// a migration that shipped is never edited.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6];

/// Version 1: the dispatches and their lookup tables.
const V1: &str = "
CREATE TABLE dispatches (
    id          TEXT    PRIMARY KEY NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    state       TEXT    NOT NULL,
    is_open     INTEGER NOT NULL CHECK (is_open IN (0, 1)),
    line        TEXT    NOT NULL,
    customer    TEXT    NOT NULL,
    tag         TEXT    NOT NULL,
    deadline    INTEGER,
    opened_at   INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    job_id      TEXT,
    record      TEXT    NOT NULL
);

-- One open dispatch per (line, customer) and per tag; closed ones do not count.
CREATE UNIQUE INDEX dispatches_open_customer ON dispatches (line, customer) WHERE is_open = 1;
CREATE UNIQUE INDEX dispatches_open_tag ON dispatches (tag) WHERE is_open = 1;
-- The due query: a range scan over dispatches that have a deadline, in order.
CREATE INDEX dispatches_due ON dispatches (deadline, id) WHERE deadline IS NOT NULL;
-- Listing open dispatches newest first (the primary key serves `All`).
CREATE INDEX dispatches_open_id ON dispatches (id) WHERE is_open = 1;

CREATE TABLE inbound_sids (
    sid      TEXT PRIMARY KEY NOT NULL,
    dispatch TEXT NOT NULL REFERENCES dispatches (id)
) WITHOUT ROWID;
CREATE INDEX inbound_sids_dispatch ON inbound_sids (dispatch);

CREATE TABLE leg_sids (
    sid      TEXT PRIMARY KEY NOT NULL,
    dispatch TEXT NOT NULL REFERENCES dispatches (id)
) WITHOUT ROWID;
CREATE INDEX leg_sids_dispatch ON leg_sids (dispatch);

-- Rows exist only while the dispatch is open.
CREATE TABLE notified (
    dispatch         TEXT    NOT NULL REFERENCES dispatches (id),
    dispatcher       TEXT    NOT NULL,
    last_notified_at INTEGER NOT NULL,
    PRIMARY KEY (dispatch, dispatcher)
) WITHOUT ROWID;
CREATE INDEX notified_by_dispatcher ON notified (dispatcher, last_notified_at DESC, dispatch DESC);
";

/// Version 2: numbers that opted out (STOP), kept across restarts.
const V2: &str = "
CREATE TABLE opt_outs (
    number INTEGER PRIMARY KEY NOT NULL,
    at     INTEGER NOT NULL
);
";

/// Version 3: dispatches by host job (`Store::by_job`), newest first.
const V3: &str = "
CREATE INDEX dispatches_job ON dispatches (job_id, id DESC) WHERE job_id IS NOT NULL;
";

/// Version 4: keyword texts (STOP, START) already taken, by message id, so a
/// replayed or retried one is not applied twice.
const V4: &str = "
CREATE TABLE keyword_sids (
    sid TEXT PRIMARY KEY NOT NULL,
    at  INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 5: what dispatches moved out of their records (history pages,
/// JSON, by dispatch and `seq`), and which lookup rows belong to moved
/// entries (`moved = 1`: they stay when later saves no longer hold them).
const V5: &str = "
CREATE TABLE history (
    dispatch TEXT    NOT NULL REFERENCES dispatches (id),
    seq      INTEGER NOT NULL,
    page     TEXT    NOT NULL,
    PRIMARY KEY (dispatch, seq)
) WITHOUT ROWID;
ALTER TABLE inbound_sids ADD COLUMN moved INTEGER NOT NULL DEFAULT 0;
ALTER TABLE leg_sids ADD COLUMN moved INTEGER NOT NULL DEFAULT 0;
-- A mirror's load at open reads the moved rows alone.
CREATE INDEX inbound_sids_moved ON inbound_sids (dispatch) WHERE moved = 1;
CREATE INDEX leg_sids_moved ON leg_sids (dispatch) WHERE moved = 1;
";

/// Version 6: whether the lookups are stale. The file's one owner (a
/// mirror, `qdn-relay serve`) writes the records alone: it drops the
/// secondary indexes of `dispatches` and stops keeping the lookup rows
/// (`inbound_sids`, `leg_sids` but for moved entries, `notified`), and
/// says so here; the next shared open rebuilds them from the records.
const V6: &str = "
CREATE TABLE lookups (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    stale INTEGER NOT NULL CHECK (stale IN (0, 1))
);
INSERT INTO lookups (id, stale) VALUES (1, 0);
";

/// What the file's owner drops when it takes the file (see [`V6`]): the
/// secondary indexes of `dispatches`, which only the shared mode reads.
pub(crate) const OWNER_TAKES: &str = "
UPDATE lookups SET stale = 1;
DROP INDEX IF EXISTS dispatches_open_customer;
DROP INDEX IF EXISTS dispatches_open_tag;
DROP INDEX IF EXISTS dispatches_due;
DROP INDEX IF EXISTS dispatches_open_id;
DROP INDEX IF EXISTS dispatches_job;
";

/// The lookup rows the shared mode keeps and the owner does not, cleared
/// before a rebuild writes them again from the records.
pub(crate) const CLEAR_LOOKUPS: &str = "
DELETE FROM inbound_sids WHERE moved = 0;
DELETE FROM leg_sids WHERE moved = 0;
DELETE FROM notified;
";

/// The secondary indexes of `dispatches` as versions 1 and 3 made them,
/// made again once the lookup rows are rebuilt.
pub(crate) const REBUILT: &str = "
CREATE UNIQUE INDEX IF NOT EXISTS dispatches_open_customer ON dispatches (line, customer) WHERE is_open = 1;
CREATE UNIQUE INDEX IF NOT EXISTS dispatches_open_tag ON dispatches (tag) WHERE is_open = 1;
CREATE INDEX IF NOT EXISTS dispatches_due ON dispatches (deadline, id) WHERE deadline IS NOT NULL;
CREATE INDEX IF NOT EXISTS dispatches_open_id ON dispatches (id) WHERE is_open = 1;
CREATE INDEX IF NOT EXISTS dispatches_job ON dispatches (job_id, id DESC) WHERE job_id IS NOT NULL;
UPDATE lookups SET stale = 0;
";

/// Brings the schema up to [`SCHEMA_VERSION`]; refuses a newer one.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), OpenError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(OpenError::Setup)?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(OpenError::Setup)?;
    let known = i64::from(SCHEMA_VERSION);
    if found > known || found < 0 {
        return Err(OpenError::NewerSchema {
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found == known {
        return Ok(());
    }
    // `found` is in 0..known here, so the conversions cannot fail.
    let from = usize::try_from(found).unwrap_or(MIGRATIONS.len());
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(from) {
        let to = u32::try_from(i + 1).unwrap_or(SCHEMA_VERSION);
        tx.execute_batch(sql)
            .map_err(|source| OpenError::Migration { to, source })?;
        tx.pragma_update(None, "user_version", i64::from(to))
            .map_err(|source| OpenError::Migration { to, source })?;
    }
    tx.commit().map_err(OpenError::Setup)?;
    tracing::info!(
        from = found,
        to = SCHEMA_VERSION,
        "migrated the sqlite schema"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_version(c: &Connection) -> i64 {
        c.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap_or(-1)
    }

    #[test]
    fn migrates_once_and_is_idempotent() {
        let mut c = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user_version(&c), 0);
        migrate(&mut c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user_version(&c), i64::from(SCHEMA_VERSION));
        // A second run finds the current version and does nothing (the
        // migration has no IF NOT EXISTS: re-running it would fail).
        migrate(&mut c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(user_version(&c), i64::from(SCHEMA_VERSION));
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut c = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        c.pragma_update(None, "user_version", i64::from(SCHEMA_VERSION) + 1)
            .unwrap_or_else(|e| panic!("{e}"));
        match migrate(&mut c) {
            Err(OpenError::NewerSchema { found, known }) => {
                assert_eq!(found, i64::from(SCHEMA_VERSION) + 1);
                assert_eq!(known, SCHEMA_VERSION);
            }
            other => panic!("expected NewerSchema, got {other:?}"),
        }
    }
}
