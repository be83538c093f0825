//! [`SqliteStore`]: the [`Store`] port on SQLite.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use qdn_relay_core::{
    ConflictReason, Dispatch, DispatchId, Due, HistoryPage, InboundLookup, JobId, ListFilter,
    OptOuts, PhoneNumber, ProviderMessageId, SafetyError, Store, StoreError, Tag, Timestamp,
};
use rusqlite::{
    Connection, OptionalExtension, Params, TransactionBehavior, params, params_from_iter,
};
use tokio::sync::oneshot;

use crate::error::{self, OpenError};
use crate::pool::Pool;
use crate::schema;

/// How a file-backed [`SqliteStore`] is opened.
///
/// ```
/// use std::time::Duration;
/// use qdn_relay_sqlite::SqliteOptions;
/// let options = SqliteOptions::default()
///     .readers(2)
///     .busy_timeout(Duration::from_secs(2));
/// assert_eq!(options.readers, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// How many read-only connections to keep besides the writer (default
    /// 4). With 0, reads share the writer connection.
    pub readers: usize,
    /// How long a connection waits for a lock that another connection or
    /// process holds before the operation fails with a retryable
    /// [`StoreError::Backend`] (default 5 s).
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            readers: 4,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl SqliteOptions {
    /// Sets [`SqliteOptions::readers`].
    pub fn readers(mut self, n: usize) -> Self {
        self.readers = n;
        self
    }

    /// Sets [`SqliteOptions::busy_timeout`].
    pub fn busy_timeout(mut self, d: Duration) -> Self {
        self.busy_timeout = d;
        self
    }
}

/// A [`Store`] in an SQLite database: a file in WAL mode, or a private
/// in-memory database for tests. Cheap to clone: clones share the
/// connections.
///
/// Every method hands its SQLite work to the thread of a connection and
/// awaits the answer, so it never blocks the async executor; opening runs
/// on Tokio's blocking pool, so it must be called inside a Tokio runtime.
#[derive(Clone)]
pub struct SqliteStore {
    pool: Arc<Pool>,
    path: Option<Arc<PathBuf>>,
    /// The file, with a shared lock for this store's life (none for the
    /// owner's store, whose mirror holds the exclusive lock): an owner
    /// cannot take a file that shared stores have open, and the other
    /// way round.
    _lock: Option<Arc<File>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field(
                "path",
                &self.path.as_deref().map(|p| p.display().to_string()),
            )
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database file at `path` (creating it if needed) with the
    /// default [`SqliteOptions`]: switches it to WAL, creates or migrates
    /// the schema, and opens the connections.
    ///
    /// Fails with [`OpenError::NewerSchema`] if the file was written by a
    /// newer build.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// [`SqliteStore::open`] with explicit options.
    ///
    /// Fails with [`OpenError::InUse`] while a [`crate::MirroredStore`]
    /// owns the file. If the last process to write the file was such an
    /// owner, the lookup rows and indexes it does not keep are rebuilt
    /// from the records first (one transaction; about as long as loading
    /// every record).
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, OpenError> {
        let path = path.as_ref().to_owned();
        // A file system without `flock` (or a path SQLite will refuse with
        // its own error) leaves the store unlocked, as shared stores were
        // before owners existed; only an owner holding the file refuses.
        let lock = match lock_file(&path, false) {
            Ok(lock) => Some(Arc::new(lock)),
            Err(e @ OpenError::InUse { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "opening the sqlite file without its shared lock");
                None
            }
        };
        let mut store = Self::open_unlocked(path, options).await?;
        store._lock = lock;
        store
            .write(rebuild_lookups)
            .await
            .map_err(OpenError::Lookups)?;
        Ok(store)
    }

    /// The store of the file's owner, which holds the exclusive lock
    /// itself: the secondary indexes are dropped and the lookups marked
    /// stale, so saves through [`SqliteStore::queue_owned`] write the
    /// records alone.
    pub(crate) async fn open_owned(path: &Path, options: SqliteOptions) -> Result<Self, OpenError> {
        let store = Self::open_unlocked(path.to_owned(), options).await?;
        store
            .write(|c| {
                let tx = c
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(error::map)?;
                tx.execute_batch(schema::OWNER_TAKES).map_err(error::map)?;
                tx.commit().map_err(error::map)
            })
            .await
            .map_err(OpenError::Lookups)?;
        Ok(store)
    }

    async fn open_unlocked(path: PathBuf, options: SqliteOptions) -> Result<Self, OpenError> {
        let p = path.clone();
        let pool = tokio::task::spawn_blocking(move || {
            Pool::open_file(&p, options.readers, options.busy_timeout)
        })
        .await
        .map_err(OpenError::Task)??;
        Ok(Self {
            pool: Arc::new(pool),
            path: Some(Arc::new(path)),
            _lock: None,
        })
    }

    /// A private, empty in-memory database on a single connection, with
    /// the same schema and behaviour as a file (except durability and
    /// parallel reads). For tests.
    pub async fn open_in_memory() -> Result<Self, OpenError> {
        let pool = tokio::task::spawn_blocking(Pool::open_in_memory)
            .await
            .map_err(OpenError::Task)??;
        Ok(Self {
            pool: Arc::new(pool),
            path: None,
            _lock: None,
        })
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref().map(PathBuf::as_path)
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.pool.read(Box::new(move |c| {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(|| f(c))));
        }));
        answer(rx.await)
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.pool.write(Box::new(move |c| {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(|| f(c))));
        }));
        answer(rx.await)
    }
}

/// Opens (creating it if need be) the database file at `path` and takes
/// its lock: exclusive for the file's owner, shared otherwise. Held by
/// another process (or store) the other way: [`OpenError::InUse`].
pub(crate) fn lock_file(path: &Path, exclusive: bool) -> Result<File, OpenError> {
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| OpenError::Lock {
            path: path.to_owned(),
            source: e,
        })?;
    let taken = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match taken {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::InUse {
            path: path.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(OpenError::Lock {
            path: path.to_owned(),
            source: e,
        }),
    }
}

/// If the file's owner left the lookups stale, writes them again from the
/// records and makes the indexes again, in one transaction (a second
/// shared store opening at once finds them rebuilt).
fn rebuild_lookups(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(error::map)?;
    let stale: i64 = tx
        .query_row("SELECT stale FROM lookups", [], |r| r.get(0))
        .map_err(error::map)?;
    if stale == 0 {
        return Ok(());
    }
    tx.execute_batch(schema::CLEAR_LOOKUPS)
        .map_err(error::map)?;
    {
        let mut read = tx
            .prepare("SELECT id, version, record FROM dispatches")
            .map_err(error::map)?;
        let mut inbound = tx.prepare_cached(INSERT_INBOUND).map_err(error::map)?;
        let mut legs = tx.prepare_cached(INSERT_LEG).map_err(error::map)?;
        let mut notified = tx.prepare_cached(UPSERT_NOTIFIED).map_err(error::map)?;
        let mut rows = read.query([]).map_err(error::map)?;
        while let Some(r) = rows.next().map_err(error::map)? {
            let id: String = r.get(0).map_err(error::map)?;
            let d = parse(
                &id,
                r.get(1).map_err(error::map)?,
                &r.get::<_, String>(2).map_err(error::map)?,
            )?;
            for sid in d.inbound_sids() {
                inbound.execute([sid.as_str(), &id]).map_err(error::map)?;
            }
            for sid in d.leg_sids() {
                legs.execute([sid.as_str(), &id]).map_err(error::map)?;
            }
            if d.state().is_open() {
                for (n, at) in notified_of(&d) {
                    notified.execute(params![id, n, at]).map_err(error::map)?;
                }
            }
        }
    }
    tx.execute_batch(schema::REBUILT).map_err(error::map)?;
    tx.commit().map_err(error::map)?;
    tracing::info!("rebuilt the sqlite lookups the file's last owner did not keep");
    Ok(())
}

/// A save's result as the writer sends it. The writer drops the replies of
/// a group that panicked (a bug): the save panics too.
pub(crate) async fn outcome(
    reply: oneshot::Receiver<Result<(), StoreError>>,
    id: DispatchId,
) -> Result<(), StoreError> {
    match reply.await {
        Ok(r) => r,
        Err(_) => panic!("the sqlite writer panicked while saving dispatch {id}"),
    }
}

/// A connection thread's answer: a panic in the work is resumed here (it
/// is a bug and must not pass for a backend error).
fn answer<T>(
    r: Result<std::thread::Result<Result<T, StoreError>>, oneshot::error::RecvError>,
) -> Result<T, StoreError> {
    match r {
        Ok(Ok(r)) => r,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => Err(StoreError::backend(
            false,
            "the sqlite connection's thread is gone",
        )),
    }
}

// ---------------------------------------------------------------------------
// SQL. Every query is answered from an index; the crate's `tests` module checks each
// with EXPLAIN QUERY PLAN.

pub(crate) const GET: &str = "SELECT id, version, record FROM dispatches WHERE id = ?1";
pub(crate) const BY_INBOUND_SID: &str = "SELECT d.id, d.version, d.record FROM inbound_sids s \
     JOIN dispatches d ON d.id = s.dispatch WHERE s.sid = ?1";
pub(crate) const BY_LEG_SID: &str = "SELECT d.id, d.version, d.record FROM leg_sids s \
     JOIN dispatches d ON d.id = s.dispatch WHERE s.sid = ?1";
pub(crate) const OPEN_FOR_CUSTOMER: &str = "SELECT id, version, record FROM dispatches \
     WHERE line = ?1 AND customer = ?2 AND is_open = 1";
pub(crate) const OPEN_BY_TAG: &str =
    "SELECT id, version, record FROM dispatches WHERE tag = ?1 AND is_open = 1";
pub(crate) const OPEN_FOR_DISPATCHER: &str = "SELECT d.id, d.version, d.record FROM notified n \
     JOIN dispatches d ON d.id = n.dispatch WHERE n.dispatcher = ?1 \
     ORDER BY n.last_notified_at DESC, n.dispatch DESC LIMIT ?2";
/// `inbound_lookup`: was the sender texted about an open dispatch? (The
/// `notified` rows exist only while their dispatch is open.)
pub(crate) const IS_NOTIFIED: &str = "SELECT 1 FROM notified WHERE dispatcher = ?1 LIMIT 1";
pub(crate) const DUE: &str = "SELECT deadline, id FROM dispatches \
     WHERE deadline IS NOT NULL AND deadline <= ?1 ORDER BY deadline, id LIMIT ?2";
pub(crate) const LIST_ALL: &str =
    "SELECT id, version, record FROM dispatches ORDER BY id DESC LIMIT ?1";
pub(crate) const LIST_OPEN: &str = "SELECT id, version, record FROM dispatches \
     WHERE is_open = 1 ORDER BY id DESC LIMIT ?1";
pub(crate) const BY_JOB: &str = "SELECT id, version, record FROM dispatches \
     WHERE job_id = ?1 ORDER BY id DESC LIMIT ?2";

/// `first_free_tag`: which of `n` tags open dispatches hold, read from the
/// partial tag index alone (no record is loaded).
pub(crate) fn taken_tags_sql(n: usize) -> String {
    let mut sql = String::from("SELECT tag FROM dispatches WHERE is_open = 1 AND tag IN (");
    for i in 0..n {
        sql.push_str(if i == 0 { "?" } else { ", ?" });
    }
    sql.push(')');
    sql
}

/// At most this many tags per `first_free_tag` query (SQLite's parameter
/// limit is far above; the driver asks for 32).
const TAGS_PER_QUERY: usize = 64;

const VERSION_OF: &str = "SELECT version FROM dispatches WHERE id = ?1";
const OTHER_OPEN_CUSTOMER: &str =
    "SELECT id FROM dispatches WHERE line = ?1 AND customer = ?2 AND is_open = 1 AND id <> ?3";
const OTHER_OPEN_TAG: &str =
    "SELECT id FROM dispatches WHERE tag = ?1 AND is_open = 1 AND id <> ?2";
const INBOUND_OWNER: &str = "SELECT dispatch FROM inbound_sids WHERE sid = ?1";
const INSERT: &str = "INSERT INTO dispatches \
     (id, version, state, is_open, line, customer, tag, deadline, opened_at, updated_at, job_id, record) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
/// [`INSERT`] for the file's owner: an id already on file is a version
/// conflict, found before anything is written.
const INSERT_NEW: &str = "INSERT INTO dispatches \
     (id, version, state, is_open, line, customer, tag, deadline, opened_at, updated_at, job_id, record) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (id) DO NOTHING";
/// The lookups of moved entries, as the file's owner writes them (it keeps
/// no other lookup rows, so the row may not exist yet).
const OWNER_MOVED_INBOUND: &str = "INSERT INTO inbound_sids (sid, dispatch, moved) \
     VALUES (?1, ?2, 1) ON CONFLICT (sid) DO UPDATE SET dispatch = excluded.dispatch, moved = 1";
const OWNER_MOVED_LEG: &str = "INSERT INTO leg_sids (sid, dispatch, moved) \
     VALUES (?1, ?2, 1) ON CONFLICT (sid) DO UPDATE SET dispatch = excluded.dispatch, moved = 1";
const UPDATE: &str = "UPDATE dispatches SET version = ?2, state = ?3, is_open = ?4, line = ?5, \
     customer = ?6, tag = ?7, deadline = ?8, opened_at = ?9, updated_at = ?10, job_id = ?11, \
     record = ?12 WHERE id = ?1 AND version = ?13";
// A save changes only the lookup rows that differ from what is stored (an
// update usually changes none of a dispatch's inbound ids and adds one leg
// id): every row rewritten is a page written to the WAL.
pub(crate) const SELECT_INBOUND: &str =
    "SELECT sid FROM inbound_sids WHERE dispatch = ?1 AND moved = 0";
const MOVED_INBOUND: &str = "UPDATE inbound_sids SET moved = 1 WHERE sid = ?1 AND dispatch = ?2";
const DELETE_INBOUND: &str = "DELETE FROM inbound_sids WHERE sid = ?1 AND dispatch = ?2";
// Within one dispatch a sid may repeat; across dispatches the check above
// has already refused the save.
const INSERT_INBOUND: &str =
    "INSERT INTO inbound_sids (sid, dispatch) VALUES (?1, ?2) ON CONFLICT (sid) DO NOTHING";
pub(crate) const SELECT_LEGS: &str = "SELECT sid FROM leg_sids WHERE dispatch = ?1 AND moved = 0";
const MOVED_LEG: &str = "UPDATE leg_sids SET moved = 1 WHERE sid = ?1 AND dispatch = ?2";
// A page never changes: writing it again writes the same thing.
const INSERT_PAGE: &str =
    "INSERT INTO history (dispatch, seq, page) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";
pub(crate) const HISTORY: &str = "SELECT page FROM history WHERE dispatch = ?1 ORDER BY seq";
/// The lookups of moved entries (a mirror's load).
pub(crate) const MOVED_SIDS: &str = "SELECT sid, dispatch, 0 FROM inbound_sids WHERE moved = 1 \
     UNION ALL SELECT sid, dispatch, 1 FROM leg_sids WHERE moved = 1";
const DELETE_LEG: &str = "DELETE FROM leg_sids WHERE sid = ?1 AND dispatch = ?2";
// Provider ids are not a uniqueness rule of the port: the latest save wins,
// as in the reference store.
const INSERT_LEG: &str = "INSERT INTO leg_sids (sid, dispatch) VALUES (?1, ?2) \
     ON CONFLICT (sid) DO UPDATE SET dispatch = excluded.dispatch";
pub(crate) const SELECT_NOTIFIED: &str =
    "SELECT dispatcher, last_notified_at FROM notified WHERE dispatch = ?1";
const DELETE_NOTIFIED: &str = "DELETE FROM notified WHERE dispatch = ?1 AND dispatcher = ?2";
const UPSERT_NOTIFIED: &str = "INSERT INTO notified (dispatch, dispatcher, last_notified_at) \
     VALUES (?1, ?2, ?3) ON CONFLICT (dispatch, dispatcher) \
     DO UPDATE SET last_notified_at = excluded.last_notified_at";

// ---------------------------------------------------------------------------
// Rows

/// Everything `save` writes, taken from the dispatch before the blocking
/// task so it owns its data.
pub(crate) struct Row {
    id: DispatchId,
    key: String,
    expected: i64,
    version: i64,
    state: &'static str,
    is_open: bool,
    line: String,
    customer: String,
    tag: Tag,
    /// The tag as the `tag` column holds it.
    tag_key: String,
    deadline: Option<i64>,
    opened_at: i64,
    updated_at: i64,
    job_id: Option<String>,
    record: Json,
    /// The inbound ids of the record's thread, then of the entries moving
    /// out in this save (the last `moved_inbound`).
    inbound: Vec<ProviderMessageId>,
    moved_inbound: usize,
    /// Likewise for the legs' provider ids.
    legs: Vec<String>,
    moved_legs: usize,
    /// The pages moving out in this save: `(seq, JSON)`.
    pages: Vec<(i64, String)>,
    /// (dispatcher, last notified at); empty unless open.
    notified: Vec<(String, i64)>,
    /// Written by the file's one owner ([`crate::MirroredStore`]), which
    /// checked the save in memory: the record and what moved out alone,
    /// no lookup rows (see [`Row::write_exclusive`]).
    exclusive: bool,
    /// Run by the writer with the save's result once it is known (before
    /// the caller hears it, and even if the caller has gone away).
    done: Option<Done>,
}

/// Room for a typical record (1.2–1.6 kB) in one allocation: written into
/// a growing `String` it would be copied four times on the way.
const RECORD_CAPACITY: usize = 2048;

/// JSON that serde_json wrote, bound as TEXT without checking it is UTF-8
/// again (serde_json writes only UTF-8).
struct Json(Vec<u8>);

impl rusqlite::ToSql for Json {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(
            rusqlite::types::ValueRef::Text(&self.0),
        ))
    }
}

/// A save's hook (see [`Row::done`]).
pub(crate) type Done = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;

/// (dispatcher, last notified at) of each dispatcher `d` notified, as
/// the `notified` table holds them.
fn notified_of(d: &Dispatch) -> Vec<(String, i64)> {
    d.notified_at()
        .into_iter()
        .map(|(n, at)| (n.to_string(), at.as_millis()))
        .collect()
}

impl Row {
    pub(crate) fn new(d: &Dispatch, expected: u64) -> Result<Self, StoreError> {
        Self::build(d, expected, false)
    }

    /// The row of the file's owner's save of `d` over `expected` (see
    /// [`Row::write_exclusive`]), for [`SqliteStore::queue_owned`].
    pub(crate) fn owned(d: &Dispatch, expected: u64) -> Result<Self, StoreError> {
        Self::build(d, expected, true)
    }

    /// The row of a save; an owner's (`exclusive`) keeps only what
    /// [`Row::write_exclusive`] writes: no lookup keys of the record, no
    /// notified rows.
    fn build(d: &Dispatch, expected: u64, exclusive: bool) -> Result<Self, StoreError> {
        let id = d.id();
        let invalid = |message: String| StoreError::Invalid { id, message };
        if expected.checked_add(1) != Some(d.version()) {
            return Err(invalid(format!(
                "dispatch version {} is not expected version {expected} + 1",
                d.version()
            )));
        }
        let version = i64::try_from(d.version())
            .map_err(|_| invalid(format!("version {} is too large to store", d.version())))?;
        let mut record = Vec::with_capacity(RECORD_CAPACITY);
        serde_json::to_writer(&mut record, d)
            .map_err(|e| invalid(format!("cannot serialize the dispatch: {e}")))?;
        let record = Json(record);
        let is_open = d.state().is_open();
        let notified = if is_open && !exclusive {
            notified_of(d)
        } else {
            Vec::new()
        };
        let pages = d.unsaved_pages();
        let mut inbound: Vec<ProviderMessageId> = if exclusive {
            Vec::new()
        } else {
            d.inbound_sids().cloned().collect()
        };
        let moved_inbound: Vec<ProviderMessageId> = pages
            .iter()
            .flat_map(|p| p.inbound_sids())
            .cloned()
            .collect();
        let mut legs: Vec<String> = if exclusive {
            Vec::new()
        } else {
            d.leg_sids().map(ToString::to_string).collect()
        };
        let moved_legs: Vec<String> = pages
            .iter()
            .flat_map(|p| p.leg_sids())
            .map(ToString::to_string)
            .collect();
        let (n_in, n_legs) = (moved_inbound.len(), moved_legs.len());
        inbound.extend(moved_inbound);
        legs.extend(moved_legs);
        let pages = pages
            .iter()
            .map(|p| {
                serde_json::to_string(p)
                    .map(|json| (i64::from(p.seq), json))
                    .map_err(|e| invalid(format!("cannot serialize a history page: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            id,
            key: id.to_string(),
            expected: version - 1,
            version,
            state: d.state().as_str(),
            is_open,
            line: d.line().to_string(),
            customer: d.customer().to_string(),
            tag: d.tag(),
            tag_key: d.tag().to_string(),
            deadline: d.next_deadline().map(Timestamp::as_millis),
            opened_at: d.opened_at().as_millis(),
            updated_at: d.updated_at().as_millis(),
            job_id: d.job_id().map(|j| j.as_str().to_owned()),
            record,
            inbound,
            moved_inbound: n_in,
            legs,
            moved_legs: n_legs,
            pages,
            notified,
            exclusive,
            done: None,
        })
    }

    /// Runs the `done` hook (once) with the save's result.
    pub(crate) fn done(&mut self, result: &Result<(), StoreError>) {
        if let Some(done) = self.done.take() {
            done(result);
        }
    }

    /// The save of the file's one owner, which checked the version and
    /// the uniqueness rules in memory, against every save committed and
    /// none in flight that shares a key with it: the record (its version
    /// still checked by the `UPDATE`), the pages that moved out and their
    /// lookups. The secondary indexes and the lookup rows of the shared
    /// mode are not kept while an owner holds the file; they are rebuilt
    /// from the records when a [`SqliteStore`] next opens it. A refusal
    /// comes before anything is written.
    fn write_exclusive(&self, tx: &Connection) -> Result<(), StoreError> {
        if !self.write_record(tx, INSERT_NEW)? {
            return Err(self.version_conflict(self.version_on_file(tx)?));
        }
        self.write_moved(tx, OWNER_MOVED_INBOUND, OWNER_MOVED_LEG)
    }

    /// The record's version on file, if it is there.
    fn version_on_file(&self, tx: &Connection) -> Result<Option<i64>, StoreError> {
        tx.prepare_cached(VERSION_OF)
            .and_then(|mut s| s.query_row([&self.key], |r| r.get(0)).optional())
            .map_err(error::map)
    }

    /// The save's refusal when the file holds version `found`.
    fn version_conflict(&self, found: Option<i64>) -> StoreError {
        StoreError::Conflict {
            id: self.id,
            reason: ConflictReason::Version {
                expected: u64::try_from(self.expected).unwrap_or_default(),
                found: found.and_then(|v| u64::try_from(v).ok()),
            },
        }
    }

    /// Writes the record: a new one by `insert_sql`, a later version by
    /// [`UPDATE`]; whether a row was written (none when the file holds
    /// another version, or already holds the new dispatch).
    fn write_record(&self, tx: &Connection, insert_sql: &str) -> Result<bool, StoreError> {
        let changed = if self.expected == 0 {
            self.insert_record(tx, insert_sql)
        } else {
            self.update_record(tx)
        }
        .map_err(error::map)?;
        Ok(changed == 1)
    }

    /// What moved out of the record in this save: its pages, and the
    /// lookups of its entries marked moved (by `inbound_sql` and `leg_sql`).
    fn write_moved(
        &self,
        tx: &Connection,
        inbound_sql: &str,
        leg_sql: &str,
    ) -> Result<(), StoreError> {
        if self.pages.is_empty() {
            return Ok(());
        }
        let mut ins = tx.prepare_cached(INSERT_PAGE).map_err(error::map)?;
        for (seq, page) in &self.pages {
            ins.execute(params![self.key, seq, page])
                .map_err(error::map)?;
        }
        let mut moved = tx.prepare_cached(inbound_sql).map_err(error::map)?;
        for sid in &self.inbound[self.inbound.len() - self.moved_inbound..] {
            moved
                .execute([sid.as_str(), &self.key])
                .map_err(error::map)?;
        }
        let mut moved = tx.prepare_cached(leg_sql).map_err(error::map)?;
        for sid in &self.legs[self.legs.len() - self.moved_legs..] {
            moved.execute([sid, &self.key]).map_err(error::map)?;
        }
        Ok(())
    }

    /// The record's columns, in the order of [`INSERT`]'s parameters.
    fn columns(&self) -> [&dyn rusqlite::ToSql; 12] {
        [
            &self.key,
            &self.version,
            &self.state,
            &self.is_open,
            &self.line,
            &self.customer,
            &self.tag_key,
            &self.deadline,
            &self.opened_at,
            &self.updated_at,
            &self.job_id,
            &self.record,
        ]
    }

    /// Runs [`INSERT`] or [`INSERT_NEW`] for the record.
    fn insert_record(&self, tx: &Connection, sql: &str) -> rusqlite::Result<usize> {
        tx.prepare_cached(sql)?.execute(&self.columns()[..])
    }

    /// Runs [`UPDATE`] for the record (no row changes at another version).
    fn update_record(&self, tx: &Connection) -> rusqlite::Result<usize> {
        let expected: &dyn rusqlite::ToSql = &self.expected;
        tx.prepare_cached(UPDATE)?.execute(params_from_iter(
            self.columns().into_iter().chain([expected]),
        ))
    }

    /// The whole save, inside a transaction (or savepoint) `tx` that holds
    /// the write lock: the checks first, so a refused save returns before
    /// anything is written.
    fn write(&self, tx: &Connection) -> Result<(), StoreError> {
        let conflict = |reason| StoreError::Conflict {
            id: self.id,
            reason,
        };

        // The version.
        let found = self.version_on_file(tx)?;
        let version_ok = match found {
            None => self.expected == 0,
            Some(v) => self.expected != 0 && v == self.expected,
        };
        if !version_ok {
            return Err(self.version_conflict(found));
        }

        // Uniqueness, in the reference store's order. The transaction holds
        // the write lock, so nothing can change between check and write.
        if self.is_open {
            let other: Option<String> = tx
                .prepare_cached(OTHER_OPEN_CUSTOMER)
                .and_then(|mut s| {
                    s.query_row(params![self.line, self.customer, self.key], |r| r.get(0))
                        .optional()
                })
                .map_err(error::map)?;
            if other.is_some() {
                return Err(conflict(ConflictReason::OpenCustomer));
            }
            let other: Option<String> = tx
                .prepare_cached(OTHER_OPEN_TAG)
                .and_then(|mut s| {
                    s.query_row(params![self.tag_key, self.key], |r| r.get(0))
                        .optional()
                })
                .map_err(error::map)?;
            if other.is_some() {
                return Err(conflict(ConflictReason::Tag(self.tag)));
            }
        }
        {
            let mut owner = tx.prepare_cached(INBOUND_OWNER).map_err(error::map)?;
            for sid in &self.inbound {
                let other: Option<String> = owner
                    .query_row([sid.as_str()], |r| r.get(0))
                    .optional()
                    .map_err(error::map)?;
                if other.is_some_and(|o| o != self.key) {
                    return Err(conflict(ConflictReason::InboundSid(sid.clone())));
                }
            }
        }

        // The record.
        if !self.write_record(tx, INSERT)? {
            // Unreachable while the check above holds the lock; kept so a
            // lost update can never pass silently.
            return Err(self.version_conflict(found));
        }

        // The lookup tables: bring this dispatch's rows up to date.
        self.sync_sids(
            tx,
            SELECT_INBOUND,
            DELETE_INBOUND,
            INSERT_INBOUND,
            self.inbound.iter().map(ProviderMessageId::as_str),
        )?;
        self.sync_sids(
            tx,
            SELECT_LEGS,
            DELETE_LEG,
            INSERT_LEG,
            self.legs.iter().map(String::as_str),
        )?;
        self.sync_notified(tx)?;

        // What moved out of the record: its pages, and its lookups marked
        // so later saves, which no longer hold them, leave them.
        self.write_moved(tx, MOVED_INBOUND, MOVED_LEG)
    }

    /// This dispatch's rows in a side table, `(sid → dispatch)`: a new
    /// dispatch has none yet (its id was just created).
    fn stored<T: rusqlite::types::FromSql>(
        &self,
        tx: &Connection,
        select: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        if self.expected == 0 {
            return Ok(Vec::new());
        }
        let mut stmt = tx.prepare_cached(select).map_err(error::map)?;
        let rows = stmt
            .query_map([&self.key], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, T>(1)?))
            })
            .map_err(error::map)?;
        rows.collect::<Result<_, _>>().map_err(error::map)
    }

    /// Makes this dispatch's rows of a sid table exactly `wanted`, deleting
    /// and inserting only the differences.
    fn sync_sids<'a>(
        &self,
        tx: &Connection,
        select: &str,
        delete: &str,
        insert: &str,
        wanted: impl Iterator<Item = &'a str>,
    ) -> Result<(), StoreError> {
        let wanted: Vec<&str> = wanted.collect();
        let stored: HashSet<String> = if self.expected == 0 {
            HashSet::new()
        } else {
            let mut stmt = tx.prepare_cached(select).map_err(error::map)?;
            let rows = stmt
                .query_map([&self.key], |r| r.get::<_, String>(0))
                .map_err(error::map)?;
            rows.collect::<Result<_, _>>().map_err(error::map)?
        };
        let mut del = tx.prepare_cached(delete).map_err(error::map)?;
        for sid in &stored {
            if !wanted.contains(&sid.as_str()) {
                del.execute([sid.as_str(), &self.key]).map_err(error::map)?;
            }
        }
        let mut ins = tx.prepare_cached(insert).map_err(error::map)?;
        for sid in wanted {
            if !stored.contains(sid) {
                ins.execute([sid, &self.key]).map_err(error::map)?;
            }
        }
        Ok(())
    }

    /// Makes this dispatch's `notified` rows exactly `self.notified`.
    fn sync_notified(&self, tx: &Connection) -> Result<(), StoreError> {
        let stored: Vec<(String, i64)> = self.stored(tx, SELECT_NOTIFIED)?;
        let mut del = tx.prepare_cached(DELETE_NOTIFIED).map_err(error::map)?;
        for (n, _) in &stored {
            if !self.notified.iter().any(|(w, _)| w == n) {
                del.execute([&self.key, n]).map_err(error::map)?;
            }
        }
        let mut upsert = tx.prepare_cached(UPSERT_NOTIFIED).map_err(error::map)?;
        for (n, at) in &self.notified {
            if !stored.iter().any(|(s, t)| s == n && t == at) {
                upsert
                    .execute(params![self.key, n, at])
                    .map_err(error::map)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Group commit: the writer thread commits the saves queued together in one
// transaction (see `crate::pool`).

/// Runs `rows` as one `BEGIN IMMEDIATE` transaction, each in a savepoint,
/// and returns each one's result. A save refused by its checks (a conflict)
/// is rolled back to its savepoint and the others go on, seeing exactly
/// what they would have seen had it run alone. A save that fails in SQLite
/// itself gets that error; the transaction is then rolled back and the
/// others are run again without it, so no save is ever reported committed
/// unless the commit that holds it succeeded, and none is committed by
/// accident after SQLite rolled a transaction back on its own.
pub(crate) fn save_group(conn: &mut Connection, rows: &[&Row]) -> Vec<Result<(), StoreError>> {
    let mut results: Vec<Option<Result<(), StoreError>>> = rows.iter().map(|_| None).collect();
    'group: loop {
        let todo: Vec<usize> = (0..rows.len()).filter(|&i| results[i].is_none()).collect();
        if todo.is_empty() {
            break;
        }
        let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                for i in todo {
                    results[i] = Some(Err(error::map_ref(&e)));
                }
                break;
            }
        };
        let mut done = Vec::with_capacity(todo.len());
        for &i in &todo {
            let outcome = if rows[i].exclusive {
                // An owner's save refuses before it writes: no savepoint.
                match rows[i].write_exclusive(&tx) {
                    Ok(()) => Ok(None),
                    Err(e @ StoreError::Conflict { .. }) => Ok(Some(e)),
                    Err(e) => Err(e),
                }
            } else {
                (|| -> Result<Option<StoreError>, StoreError> {
                    let mut sp = tx.savepoint().map_err(error::map)?;
                    match rows[i].write(&sp) {
                        Ok(()) => {
                            sp.commit().map_err(error::map)?;
                            Ok(None)
                        }
                        // A refusal: its checks run before it writes anything.
                        Err(e @ (StoreError::Conflict { .. } | StoreError::Invalid { .. })) => {
                            sp.rollback().map_err(error::map)?;
                            sp.commit().map_err(error::map)?;
                            Ok(Some(e))
                        }
                        Err(e) => Err(e),
                    }
                })()
            };
            match outcome {
                Ok(refusal) => done.push((i, refusal)),
                Err(e) => {
                    // SQLite failed: this save gets the error, the rest run
                    // again in a new transaction (this one rolls back on drop).
                    results[i] = Some(Err(e));
                    drop(tx);
                    continue 'group;
                }
            }
        }
        let committed = tx.commit();
        for (i, refusal) in done {
            results[i] = Some(match (&committed, refusal) {
                (_, Some(e)) => Err(e),
                (Ok(()), None) => Ok(()),
                (Err(e), None) => Err(error::map_ref(e)),
            });
        }
        break;
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StoreError::backend(false, "save not run"))))
        .collect()
}

/// Reads `(id, version, record)` rows into dispatches; a record that does
/// not parse, or disagrees with its row, is [`StoreError::Corrupt`].
fn dispatches(conn: &Connection, sql: &str, p: impl Params) -> Result<Vec<Dispatch>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(error::map)?;
    let rows = stmt
        .query_map(p, |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .map_err(error::map)?;
    let mut out = Vec::new();
    for row in rows {
        let (id, version, record) = row.map_err(error::map)?;
        out.push(parse(&id, version, &record)?);
    }
    Ok(out)
}

fn dispatch(conn: &Connection, sql: &str, p: impl Params) -> Result<Option<Dispatch>, StoreError> {
    Ok(dispatches(conn, sql, p)?.into_iter().next())
}

fn parse(id: &str, version: i64, record: &str) -> Result<Dispatch, StoreError> {
    let corrupt = |what: String| {
        tracing::warn!(dispatch = id, "corrupt sqlite record: {what}");
        StoreError::Corrupt(format!("dispatch {id}: {what}"))
    };
    let d: Dispatch =
        serde_json::from_str(record).map_err(|e| corrupt(format!("record does not parse: {e}")))?;
    if d.id().to_string() != id {
        return Err(corrupt(format!("record holds dispatch {}", d.id())));
    }
    if i64::try_from(d.version()).ok() != Some(version) {
        return Err(corrupt(format!(
            "record has version {}, row has {version}",
            d.version()
        )));
    }
    Ok(d)
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, id: DispatchId) -> Result<Option<Dispatch>, StoreError> {
        let key = id.to_string();
        self.read(move |c| dispatch(c, GET, [key])).await
    }

    async fn save(&self, d: &Dispatch, expected: u64) -> Result<(), StoreError> {
        let row = Row::new(d, expected)?;
        let (tx, rx) = oneshot::channel();
        self.pool.save(row, tx);
        outcome(rx, d.id()).await
    }

    async fn by_inbound_sid(
        &self,
        sid: &ProviderMessageId,
    ) -> Result<Option<Dispatch>, StoreError> {
        let sid = sid.as_str().to_owned();
        self.read(move |c| dispatch(c, BY_INBOUND_SID, [sid])).await
    }

    async fn by_leg_sid(&self, sid: &ProviderMessageId) -> Result<Option<Dispatch>, StoreError> {
        let sid = sid.as_str().to_owned();
        self.read(move |c| dispatch(c, BY_LEG_SID, [sid])).await
    }

    async fn inbound_lookup(
        &self,
        line: PhoneNumber,
        from: PhoneNumber,
        sid: &ProviderMessageId,
    ) -> Result<InboundLookup, StoreError> {
        let (line, from, sid) = (line.to_string(), from.to_string(), sid.as_str().to_owned());
        // One blocking task and one read transaction for the three.
        self.read(move |c| {
            let tx = c.unchecked_transaction().map_err(error::map)?;
            let notified = tx
                .prepare_cached(IS_NOTIFIED)
                .and_then(|mut s| s.exists([&from]))
                .map_err(error::map)?;
            let repeated = dispatch(&tx, BY_INBOUND_SID, [&sid])?;
            let open = dispatch(&tx, OPEN_FOR_CUSTOMER, [&line, &from])?;
            Ok(InboundLookup {
                notified,
                repeated,
                open,
            })
        })
        .await
    }

    async fn open_for_customer(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
    ) -> Result<Option<Dispatch>, StoreError> {
        let (line, customer) = (line.to_string(), customer.to_string());
        self.read(move |c| dispatch(c, OPEN_FOR_CUSTOMER, [line, customer]))
            .await
    }

    async fn open_by_tag(&self, tag: Tag) -> Result<Option<Dispatch>, StoreError> {
        let tag = tag.to_string();
        self.read(move |c| dispatch(c, OPEN_BY_TAG, [tag])).await
    }

    async fn first_free_tag(&self, candidates: &[Tag]) -> Result<Option<Tag>, StoreError> {
        if candidates.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = candidates.iter().map(ToString::to_string).collect();
        let taken = self
            .read(move |c| {
                let mut taken = HashSet::new();
                for chunk in names.chunks(TAGS_PER_QUERY) {
                    let mut stmt = c
                        .prepare_cached(&taken_tags_sql(chunk.len()))
                        .map_err(error::map)?;
                    let rows = stmt
                        .query_map(params_from_iter(chunk), |r| r.get::<_, String>(0))
                        .map_err(error::map)?;
                    for tag in rows {
                        taken.insert(tag.map_err(error::map)?);
                    }
                }
                Ok(taken)
            })
            .await?;
        Ok(candidates
            .iter()
            .copied()
            .find(|t| !taken.contains(&t.to_string())))
    }

    async fn open_for_dispatcher(
        &self,
        dispatcher: PhoneNumber,
        n: usize,
    ) -> Result<Vec<Dispatch>, StoreError> {
        let dispatcher = dispatcher.to_string();
        self.read(move |c| dispatches(c, OPEN_FOR_DISPATCHER, params![dispatcher, limit(n)]))
            .await
    }

    async fn due(&self, now: Timestamp, n: usize) -> Result<Vec<Due>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(DUE).map_err(error::map)?;
            let rows = stmt
                .query_map(params![now.as_millis(), limit(n)], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(error::map)?;
            let mut out = Vec::new();
            for row in rows {
                let (deadline, id) = row.map_err(error::map)?;
                let id = id
                    .parse::<DispatchId>()
                    .map_err(|e| StoreError::Corrupt(format!("due row: {e}")))?;
                out.push(Due {
                    deadline: Timestamp::from_millis(deadline),
                    id,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn list(&self, filter: ListFilter, n: usize) -> Result<Vec<Dispatch>, StoreError> {
        let sql = match filter {
            ListFilter::Open => LIST_OPEN,
            ListFilter::All => LIST_ALL,
        };
        self.read(move |c| dispatches(c, sql, [limit(n)])).await
    }

    async fn by_job(&self, job: &JobId, n: usize) -> Result<Vec<Dispatch>, StoreError> {
        let job = job.as_str().to_owned();
        self.read(move |c| dispatches(c, BY_JOB, rusqlite::params![job, limit(n)]))
            .await
    }

    async fn history(&self, id: DispatchId) -> Result<Vec<HistoryPage>, StoreError> {
        let key = id.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(HISTORY).map_err(error::map)?;
            let rows = stmt
                .query_map([&key], |r| r.get::<_, String>(0))
                .map_err(error::map)?;
            let mut out = Vec::new();
            for row in rows {
                let page = row.map_err(error::map)?;
                out.push(serde_json::from_str(&page).map_err(|e| {
                    StoreError::Corrupt(format!("a history page of {key} does not parse: {e}"))
                })?);
            }
            Ok(out)
        })
        .await
    }
}

impl SqliteStore {
    /// Queues an owner's save: `done` runs on the writer thread with its
    /// result once the commit that holds it is over, then the returned
    /// channel carries the result.
    pub(crate) fn queue_owned(
        &self,
        mut row: Row,
        done: impl FnOnce(&Result<(), StoreError>) + Send + 'static,
    ) -> oneshot::Receiver<Result<(), StoreError>> {
        row.done = Some(Box::new(done));
        let (tx, rx) = oneshot::channel();
        self.pool.save(row, tx);
        rx
    }

    /// Up to `limit` dispatches after `after` (by id), oldest first: a
    /// mirror's load, a page at a time so it never holds the whole file
    /// twice.
    pub(crate) async fn load_after(
        &self,
        after: Option<DispatchId>,
        limit: usize,
    ) -> Result<Vec<Dispatch>, StoreError> {
        let after = after.map_or_else(String::new, |id| id.to_string());
        let limit = self::limit(limit);
        self.read(move |c| {
            dispatches(
                c,
                "SELECT id, version, record FROM dispatches WHERE id > ?1 ORDER BY id LIMIT ?2",
                params![after, limit],
            )
        })
        .await
    }

    /// The message ids of every moved entry, inbound then legs, with their
    /// dispatch (a mirror's load).
    pub(crate) async fn load_moved(
        &self,
    ) -> Result<Vec<(DispatchId, Vec<ProviderMessageId>, Vec<ProviderMessageId>)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(MOVED_SIDS).map_err(error::map)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(error::map)?;
            let mut by: std::collections::BTreeMap<
                String,
                (Vec<ProviderMessageId>, Vec<ProviderMessageId>),
            > = std::collections::BTreeMap::new();
            for row in rows {
                let (sid, dispatch, leg) = row.map_err(error::map)?;
                let sid: ProviderMessageId = sid.parse().map_err(|e| {
                    StoreError::Corrupt(format!("a moved lookup of {dispatch}: {e}"))
                })?;
                let e = by.entry(dispatch).or_default();
                if leg == 1 {
                    e.1.push(sid)
                } else {
                    e.0.push(sid)
                }
            }
            by.into_iter()
                .map(|(id, (inbound, legs))| {
                    let id: DispatchId = id.parse().map_err(|e| {
                        StoreError::Corrupt(format!("a moved lookup's dispatch {id}: {e}"))
                    })?;
                    Ok((id, inbound, legs))
                })
                .collect()
        })
        .await
    }

    /// Every opted-out number, with when (a mirror's load).
    pub(crate) async fn load_opt_outs(&self) -> Result<Vec<(PhoneNumber, Timestamp)>, StoreError> {
        self.read(|c| {
            let mut stmt = c
                .prepare("SELECT number, at FROM opt_outs")
                .map_err(error::map)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                .map_err(error::map)?;
            let mut out = Vec::new();
            for row in rows {
                let (n, at) = row.map_err(error::map)?;
                let number = u64::try_from(n)
                    .ok()
                    .and_then(PhoneNumber::from_u64)
                    .ok_or_else(|| StoreError::Corrupt(format!("opt_outs: {n} is not a number")))?;
                out.push((number, Timestamp::from_millis(at)));
            }
            Ok(out)
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// Opt-outs: the numbers that texted STOP, durable across restarts and shared
// by every process on the file.

#[async_trait]
impl OptOuts for SqliteStore {
    async fn opt_out(&self, number: PhoneNumber, at: Timestamp) -> Result<(), SafetyError> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO opt_outs (number, at) VALUES (?1, ?2) ON CONFLICT (number) DO NOTHING",
                rusqlite::params![number.as_u64() as i64, at.as_millis()],
            )
            .map(|_| ())
            .map_err(error::map)
        })
        .await
        .map_err(|e| SafetyError(Box::new(e)))
    }

    async fn opt_in(&self, number: PhoneNumber) -> Result<(), SafetyError> {
        self.write(move |c| {
            c.execute(
                "DELETE FROM opt_outs WHERE number = ?1",
                [number.as_u64() as i64],
            )
            .map(|_| ())
            .map_err(error::map)
        })
        .await
        .map_err(|e| SafetyError(Box::new(e)))
    }

    async fn is_opted_out(&self, number: PhoneNumber) -> Result<bool, SafetyError> {
        Ok(!self.opted_out_among(&[number]).await?.is_empty())
    }

    async fn opted_out_among(
        &self,
        numbers: &[PhoneNumber],
    ) -> Result<Vec<PhoneNumber>, SafetyError> {
        if numbers.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<PhoneNumber> = numbers.to_vec();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT 1 FROM opt_outs WHERE number = ?1")
                .map_err(error::map)?;
            let mut out = Vec::new();
            for n in wanted {
                if stmt.exists([n.as_u64() as i64]).map_err(error::map)? {
                    out.push(n);
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| SafetyError(Box::new(e)))
    }

    async fn keyword_taken(&self, sid: &ProviderMessageId) -> Result<bool, SafetyError> {
        let sid = sid.as_str().to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT 1 FROM keyword_sids WHERE sid = ?1")
                .and_then(|mut stmt| stmt.exists([sid]))
                .map_err(error::map)
        })
        .await
        .map_err(|e| SafetyError(Box::new(e)))
    }

    async fn take_keyword(
        &self,
        sid: &ProviderMessageId,
        at: Timestamp,
    ) -> Result<(), SafetyError> {
        let sid = sid.as_str().to_owned();
        self.write(move |c| {
            c.execute(
                "INSERT INTO keyword_sids (sid, at) VALUES (?1, ?2) ON CONFLICT (sid) DO NOTHING",
                rusqlite::params![sid, at.as_millis()],
            )
            .map(|_| ())
            .map_err(error::map)
        })
        .await
        .map_err(|e| SafetyError(Box::new(e)))
    }
}

#[cfg(test)]
mod opt_out_tests {
    use super::*;

    #[tokio::test]
    async fn opt_outs_survive_reopening_and_opt_in_clears_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.db");
        let a: PhoneNumber = "+16195550101".parse().expect("n");
        let b: PhoneNumber = "+16195550102".parse().expect("n");
        {
            let s = SqliteStore::open(&path).await.expect("open");
            s.opt_out(a, Timestamp::from_millis(1))
                .await
                .expect("opt out");
            s.opt_out(a, Timestamp::from_millis(2))
                .await
                .expect("idempotent");
            assert!(s.is_opted_out(a).await.expect("q"));
            assert!(!s.is_opted_out(b).await.expect("q"));
        }
        let s = SqliteStore::open(&path).await.expect("reopen");
        assert_eq!(s.opted_out_among(&[a, b]).await.expect("q"), vec![a]);
        s.opt_in(a).await.expect("opt in");
        s.opt_in(a).await.expect("idempotent");
        assert!(s.opted_out_among(&[a, b]).await.expect("q").is_empty());
    }

    #[tokio::test]
    async fn keyword_texts_taken_are_remembered_across_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.db");
        let stop = "SM0000000000000000000000000000stop"
            .parse::<ProviderMessageId>()
            .expect("sid");
        let other = "SM000000000000000000000000000start"
            .parse::<ProviderMessageId>()
            .expect("sid");
        {
            let s = SqliteStore::open(&path).await.expect("open");
            assert!(!s.keyword_taken(&stop).await.expect("q"));
            s.take_keyword(&stop, Timestamp::from_millis(1))
                .await
                .expect("take");
            s.take_keyword(&stop, Timestamp::from_millis(2))
                .await
                .expect("idempotent");
            assert!(s.keyword_taken(&stop).await.expect("q"));
        }
        let s = SqliteStore::open(&path).await.expect("reopen");
        assert!(s.keyword_taken(&stop).await.expect("q"));
        assert!(!s.keyword_taken(&other).await.expect("q"));
    }
}

#[cfg(test)]
mod thread_tests {
    use super::*;

    /// A panic in the work a connection's thread runs is resumed in the
    /// caller (a bug is never a backend error), and the thread goes on
    /// serving.
    #[tokio::test]
    async fn a_panic_reaches_the_caller_and_the_threads_go_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStore::open(dir.path().join("relay.db"))
            .await
            .expect("open");
        let memory = SqliteStore::open_in_memory().await.expect("open");
        for store in [s, memory] {
            let r = store.clone();
            let read = tokio::spawn(async move {
                r.read(|_| -> Result<(), StoreError> { panic!("boom in a read") })
                    .await
            })
            .await;
            assert!(read.is_err_and(|e| e.is_panic()), "{store:?}");
            let w = store.clone();
            let write = tokio::spawn(async move {
                w.write(|_| -> Result<(), StoreError> { panic!("boom in a write") })
                    .await
            })
            .await;
            assert!(write.is_err_and(|e| e.is_panic()), "{store:?}");

            let d = qdn_relay_core::testing::contract::fixture(1, "K7", "+16195550100", "SMin1", 0);
            store.save(&d, 0).await.expect("the writer still saves");
            assert_eq!(
                store.get(d.id()).await.expect("the readers still read"),
                Some(d)
            );
        }
    }
}
