//! The connections of one store, each owned by its own thread: one writer
//! thread, which commits queued saves in groups (see
//! [`crate::store::save_group`]), a few reader threads sharing one queue of
//! reads, and a checkpoint thread.
//!
//! The async side hands a thread a job and awaits its answer on a oneshot
//! channel: no blocking call runs on the async executor, and a busy thread
//! takes the next job without sleeping in between (no thread hand-off per
//! call, unlike a blocking pool).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use qdn_relay_core::StoreError;
use rusqlite::{Connection, OpenFlags};

use crate::error::OpenError;
use crate::schema;
use crate::store::{Row, save_group};

/// How many prepared statements each connection keeps (more than the store
/// has, so none is ever re-prepared).
const STATEMENT_CACHE: usize = 32;

/// A file store's background checkpoint runs after this many writes...
const CHECKPOINT_AFTER_WRITES: u64 = 64;

/// ...or after this long, whichever comes first (if anything was written).
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// The writer checkpoints by itself only once the WAL holds this many pages
/// (64 MiB of 4 KiB pages): a bound for when the background checkpoints
/// cannot keep up, never reached in normal running.
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 16_384;

/// At most this many saves share one transaction.
const MAX_GROUP: usize = 64;

/// Work for a connection's thread.
pub(crate) type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Where a save's result goes.
pub(crate) type Reply = tokio::sync::oneshot::Sender<Result<(), StoreError>>;

/// Work for the writer thread.
enum WriterJob {
    /// A save: committed in one group with the saves queued next to it.
    Save(Box<Row>, Reply),
    /// Anything else, run alone.
    Run(Job),
}

/// The connections of one store, behind their threads. Dropping the pool
/// lets each thread finish the jobs queued and close its connection.
pub(crate) struct Pool {
    writer: Arc<Lane<WriterJob>>,
    /// `None` for an in-memory database, whose only connection (the
    /// writer's) serves reads too: an in-memory database belongs to its
    /// connection.
    readers: Option<Arc<Lane<Job>>>,
    /// The checkpoint thread of a file store (the writer thread holds its
    /// own handle; this one lets the tests watch it).
    #[cfg_attr(not(test), allow(dead_code))]
    checkpoints: Option<Checkpoints>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.writer.close();
        if let Some(r) = &self.readers {
            r.close();
        }
    }
}

/// A queue of jobs served by one or more threads.
struct Lane<J> {
    state: Mutex<LaneState<J>>,
    ready: Condvar,
}

struct LaneState<J> {
    jobs: VecDeque<J>,
    closed: bool,
    /// Threads waiting for a job: a push wakes one only when some wait (a
    /// busy thread finds the job when it next looks, without a system
    /// call on the pushing side).
    waiting: usize,
}

impl<J> Lane<J> {
    fn new() -> Self {
        Self {
            state: Mutex::new(LaneState {
                jobs: VecDeque::new(),
                closed: false,
                waiting: 0,
            }),
            ready: Condvar::new(),
        }
    }

    fn push(&self, job: J) {
        let mut state = lock(&self.state);
        state.jobs.push_back(job);
        let asleep = state.waiting > 0;
        drop(state);
        if asleep {
            self.ready.notify_one();
        }
    }

    /// Waits for jobs and takes up to `max` of them; `None` once the lane
    /// is closed and empty.
    fn take(&self, max: usize) -> Option<Vec<J>> {
        let mut state = lock(&self.state);
        while state.jobs.is_empty() {
            if state.closed {
                return None;
            }
            state.waiting += 1;
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting -= 1;
        }
        let n = state.jobs.len().min(max);
        Some(state.jobs.drain(..n).collect())
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }
}

/// Starts a thread named `name` running `body`.
fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), OpenError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .map(|_| ())
        .map_err(OpenError::Thread)
}

/// A reader thread: runs reads one after another until the pool is gone.
fn reader_loop(mut conn: Connection, lane: &Lane<Job>) {
    while let Some(jobs) = lane.take(1) {
        for job in jobs {
            job(&mut conn);
        }
    }
}

/// The writer thread: takes everything queued, commits consecutive saves
/// in groups of up to [`MAX_GROUP`] and runs other jobs alone, in order.
fn writer_loop(mut conn: Connection, lane: &Lane<WriterJob>, checkpoints: Option<Checkpoints>) {
    let wrote = || {
        if let Some(c) = &checkpoints {
            c.wrote();
        }
    };
    let mut group: Vec<(Box<Row>, Reply)> = Vec::with_capacity(MAX_GROUP);
    while let Some(jobs) = lane.take(usize::MAX) {
        for job in jobs {
            match job {
                WriterJob::Save(row, reply) => {
                    group.push((row, reply));
                    if group.len() == MAX_GROUP {
                        commit(&mut conn, &mut group);
                        wrote();
                    }
                }
                WriterJob::Run(f) => {
                    if !group.is_empty() {
                        commit(&mut conn, &mut group);
                        wrote();
                    }
                    f(&mut conn);
                    wrote();
                }
            }
        }
        if !group.is_empty() {
            commit(&mut conn, &mut group);
            wrote();
        }
    }
}

/// Commits a group of saves and answers each, after running each save's
/// `done` hook with its result. If the group panics (a bug) the hooks see
/// an error and the replies are dropped, which the waiting saves turn into
/// a panic.
fn commit(conn: &mut Connection, group: &mut Vec<(Box<Row>, Reply)>) {
    let mut batch = std::mem::take(group);
    let rows: Vec<&Row> = batch.iter().map(|(r, _)| &**r).collect();
    let results =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| save_group(conn, &rows)));
    drop(rows);
    match results {
        Ok(results) => {
            for ((mut row, reply), r) in batch.into_iter().zip(results) {
                row.done(&r);
                // The caller may have gone away (a cancelled request): the
                // save stands either way.
                let _ = reply.send(r);
            }
        }
        Err(_) => {
            let failed = Err(StoreError::backend(false, "the sqlite writer panicked"));
            for (row, _) in &mut batch {
                row.done(&failed);
            }
        }
    }
}

impl Pool {
    /// Opens (creating if needed) the file at `path`, switches it to WAL,
    /// migrates it, and opens `readers` read-only connections.
    pub(crate) fn open_file(
        path: &Path,
        readers: usize,
        busy_timeout: Duration,
    ) -> Result<Self, OpenError> {
        let open_err = |source| OpenError::Open {
            path: path.to_owned(),
            source,
        };
        let mut writer = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        configure(&writer, busy_timeout).map_err(OpenError::Setup)?;
        let mode: String = writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(OpenError::Setup)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::NotWal { mode });
        }
        writer
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(OpenError::Setup)?;
        // Checkpoints run on their own connection and thread (below), not
        // inside a save while the writer lock is held.
        writer
            .pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
            .map_err(OpenError::Setup)?;
        schema::migrate(&mut writer)?;
        let checkpointer = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        configure(&checkpointer, busy_timeout).map_err(OpenError::Setup)?;
        checkpointer
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(OpenError::Setup)?;
        let checkpoints = Checkpoints::start(checkpointer)?;

        let mut conns = Vec::with_capacity(readers);
        for _ in 0..readers {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(open_err)?;
            configure(&r, busy_timeout).map_err(OpenError::Setup)?;
            conns.push(r);
        }
        let reader_lane = (readers > 0).then(|| Arc::new(Lane::new()));
        if let Some(lane) = &reader_lane {
            for (i, conn) in conns.into_iter().enumerate() {
                let lane = Arc::clone(lane);
                spawn(&format!("qdn-sqlite-read-{i}"), move || {
                    reader_loop(conn, &lane);
                })?;
            }
        }
        let writer_lane = Arc::new(Lane::new());
        let lane = Arc::clone(&writer_lane);
        let c = checkpoints.clone();
        spawn("qdn-sqlite-write", move || {
            writer_loop(writer, &lane, Some(c))
        })?;
        Ok(Self {
            writer: writer_lane,
            readers: reader_lane,
            checkpoints: Some(checkpoints),
        })
    }

    /// A private in-memory database on one connection.
    pub(crate) fn open_in_memory() -> Result<Self, OpenError> {
        let mut c = Connection::open_in_memory().map_err(OpenError::Setup)?;
        configure(&c, Duration::ZERO).map_err(OpenError::Setup)?;
        schema::migrate(&mut c)?;
        let writer = Arc::new(Lane::new());
        let lane = Arc::clone(&writer);
        spawn("qdn-sqlite-memory", move || writer_loop(c, &lane, None))?;
        Ok(Self {
            writer,
            readers: None,
            checkpoints: None,
        })
    }

    /// Queues a save on the writer thread; the result goes to `reply`.
    pub(crate) fn save(&self, row: Row, reply: Reply) {
        self.writer.push(WriterJob::Save(Box::new(row), reply));
    }

    /// Queues `job` on the writer thread (the only one that writes).
    pub(crate) fn write(&self, job: Job) {
        self.writer.push(WriterJob::Run(job));
    }

    /// Queues `job` for the next free reader thread; on the writer when
    /// the store has no readers.
    pub(crate) fn read(&self, job: Job) {
        match &self.readers {
            Some(lane) => lane.push(job),
            None => self.write(job),
        }
    }
}

/// The writer's side of the background checkpoint thread.
#[derive(Clone)]
struct Checkpoints {
    nudge: SyncSender<()>,
    shared: Arc<CheckpointState>,
}

/// What the writer and the checkpoint thread share.
#[derive(Default)]
struct CheckpointState {
    /// Writes so far.
    writes: AtomicU64,
    /// The checkpoints run so far and the last one's result.
    runs: Mutex<CheckpointRuns>,
    ran: Condvar,
}

/// The checkpoints a thread has run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckpointRuns {
    /// How many ran (successfully or not).
    pub(crate) count: u64,
    /// The last successful one: WAL frames in the log, and how many of
    /// them are now copied into the database file.
    pub(crate) last: Option<(i64, i64)>,
}

impl Checkpoints {
    /// Starts the checkpoint thread on its own connection.
    fn start(conn: Connection) -> Result<Self, OpenError> {
        let (nudge, wake) = mpsc::sync_channel(1);
        let shared = Arc::new(CheckpointState::default());
        let state = Arc::clone(&shared);
        spawn("qdn-sqlite-checkpoint", move || {
            checkpoint_loop(&conn, &wake, &state);
        })?;
        Ok(Self { nudge, shared })
    }

    /// Counts a write; every [`CHECKPOINT_AFTER_WRITES`] wakes the thread
    /// (never blocks: a wake-up already pending is enough).
    fn wrote(&self) {
        let n = self.shared.writes.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(CHECKPOINT_AFTER_WRITES) {
            // Full: a wake-up is already pending. Disconnected: the thread
            // is gone (it only ends with the pool); the writer's own
            // autocheckpoint still bounds the WAL.
            let _ = self.nudge.try_send(());
        }
    }
}

/// Copies the WAL back into the database file, off the write path: a
/// passive checkpoint never waits for (or blocks) readers or the writer;
/// it copies what it can and the next one goes on. It also `fsync`s the
/// WAL and the database, here instead of inside a save. It runs when the
/// writer nudges it, or on a timer if anything was written since the last
/// run; the loop ends when the pool is dropped.
fn checkpoint_loop(conn: &Connection, wake: &mpsc::Receiver<()>, state: &CheckpointState) {
    let mut seen = 0;
    loop {
        match wake.recv_timeout(CHECKPOINT_INTERVAL) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let writes = state.writes.load(Ordering::Relaxed);
        if writes == seen {
            continue;
        }
        seen = writes;
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        let mut runs = lock(&state.runs);
        runs.count += 1;
        match done {
            Ok((log, copied)) => {
                tracing::trace!(log, copied, "sqlite checkpoint");
                runs.last = Some((log, copied));
            }
            Err(e) => tracing::warn!(error = %e, "sqlite checkpoint failed; the next one retries"),
        }
        drop(runs);
        state.ran.notify_all();
    }
}

impl Pool {
    /// Waits until the checkpoint thread has run more than `after`
    /// checkpoints; `None` for an in-memory database (no thread).
    #[cfg(test)]
    pub(crate) fn checkpoint_runs_after(&self, after: u64) -> Option<CheckpointRuns> {
        let state = &self.checkpoints.as_ref()?.shared;
        let mut runs = lock(&state.runs);
        while runs.count <= after {
            runs = state.ran.wait(runs).unwrap_or_else(PoisonError::into_inner);
        }
        Some(*runs)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Per-connection settings. Temporary data (the statement journal that
/// lets a save's savepoint roll back alone) stays in memory instead of a
/// temporary file created and deleted per transaction.
fn configure(c: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    c.busy_timeout(busy_timeout)?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    c.pragma_update(None, "temp_store", "MEMORY")?;
    c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on the writer thread and waits for its answer.
    fn write_now<T: Send + 'static>(
        pool: &Pool,
        f: impl FnOnce(&mut Connection) -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = mpsc::channel();
        pool.write(Box::new(move |c| {
            let _ = tx.send(f(c));
        }));
        rx.recv().unwrap_or_else(|e| panic!("{e}"))
    }

    fn file_pool(dir: &tempfile::TempDir) -> Pool {
        Pool::open_file(&dir.path().join("relay.db"), 1, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_writer_leaves_checkpoints_to_the_background_thread() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pool = file_pool(&dir);
        let pages: i64 = write_now(&pool, move |c| {
            c.pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
                .unwrap_or_else(|e| panic!("{e}"))
        });
        assert_eq!(
            pages, WRITER_AUTOCHECKPOINT_PAGES,
            "a save must not run a checkpoint at SQLite's default 1,000 pages"
        );
    }

    #[test]
    fn the_background_thread_copies_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pool = file_pool(&dir);
        for i in 0..CHECKPOINT_AFTER_WRITES {
            write_now(&pool, move |c| {
                c.execute(
                    "INSERT INTO opt_outs (number, at) VALUES (?1, 0)",
                    [i64::try_from(i).unwrap_or_default()],
                )
                .unwrap_or_else(|e| panic!("{e}"))
            });
        }
        // No deadline: the writes above nudge the thread, and its timer
        // would run it anyway.
        let runs = pool
            .checkpoint_runs_after(0)
            .unwrap_or_else(|| panic!("a file store has a checkpoint thread"));
        let (log, copied) = runs
            .last
            .unwrap_or_else(|| panic!("the checkpoint failed: {runs:?}"));
        assert!(log > 0, "the writes went to the WAL: {runs:?}");
        assert_eq!(
            copied, log,
            "nobody else was reading, so every frame was copied: {runs:?}"
        );
    }

    #[test]
    fn temporary_data_stays_in_memory() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pool = file_pool(&dir);
        let store: i64 = write_now(&pool, |c| {
            c.pragma_query_value(None, "temp_store", |r| r.get(0))
                .unwrap_or_else(|e| panic!("{e}"))
        });
        assert_eq!(store, 2, "temp_store = MEMORY");
    }

    #[test]
    fn an_in_memory_database_has_no_checkpoint_thread() {
        let pool = Pool::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pool.checkpoint_runs_after(0), None);
    }
}
