//! A small connection pool: one writer behind a mutex and a few read-only
//! connections handed out from a free list.
//!
//! Everything here blocks; callers run it on Tokio's blocking pool.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::OpenError;
use crate::schema;

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

/// The connections of one store.
pub(crate) struct Pool {
    writer: Mutex<Connection>,
    /// `None` for an in-memory database, whose only connection serves reads
    /// too (an in-memory database belongs to its connection).
    readers: Option<Readers>,
    /// Wakes the checkpoint thread of a file store; dropping it (with the
    /// pool) stops the thread.
    checkpoints: Option<Checkpoints>,
}

struct Readers {
    conns: Vec<Mutex<Connection>>,
    /// Indexes into `conns` of the connections nobody holds.
    idle: Mutex<Vec<usize>>,
    returned: Condvar,
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
        let checkpoints = Checkpoints::start(checkpointer).map_err(OpenError::Thread)?;

        let mut conns = Vec::with_capacity(readers);
        for _ in 0..readers {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(open_err)?;
            configure(&r, busy_timeout).map_err(OpenError::Setup)?;
            conns.push(Mutex::new(r));
        }
        Ok(Self {
            writer: Mutex::new(writer),
            readers: (readers > 0).then(|| Readers {
                conns,
                idle: Mutex::new((0..readers).collect()),
                returned: Condvar::new(),
            }),
            checkpoints: Some(checkpoints),
        })
    }

    /// A private in-memory database on one connection.
    pub(crate) fn open_in_memory() -> Result<Self, OpenError> {
        let mut c = Connection::open_in_memory().map_err(OpenError::Setup)?;
        configure(&c, Duration::ZERO).map_err(OpenError::Setup)?;
        schema::migrate(&mut c)?;
        Ok(Self {
            writer: Mutex::new(c),
            readers: None,
            checkpoints: None,
        })
    }

    /// Runs `f` on the writer connection (the only one that writes).
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        let out = f(&mut lock(&self.writer));
        if let Some(c) = &self.checkpoints {
            c.wrote();
        }
        out
    }

    /// Runs `f` on a reader connection, waiting for one to be free; on the
    /// writer when the store has no readers.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        let Some(readers) = &self.readers else {
            return f(&lock(&self.writer));
        };
        let index = {
            let mut idle = lock(&readers.idle);
            loop {
                if let Some(i) = idle.pop() {
                    break i;
                }
                idle = readers
                    .returned
                    .wait(idle)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let back = Return { readers, index };
        // Uncontended: only the holder of `index` locks this connection.
        f(&lock(&back.readers.conns[back.index]))
    }
}

/// The writer's side of the background checkpoint thread.
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
    fn start(conn: Connection) -> std::io::Result<Self> {
        let (nudge, wake) = mpsc::sync_channel(1);
        let shared = Arc::new(CheckpointState::default());
        let state = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("qdn-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&conn, &wake, &state))?;
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

/// Puts a reader connection back on the free list on drop, even if the
/// work panicked.
struct Return<'a> {
    readers: &'a Readers,
    index: usize,
}

impl Drop for Return<'_> {
    fn drop(&mut self) {
        lock(&self.readers.idle).push(self.index);
        self.readers.returned.notify_one();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Per-connection settings.
fn configure(c: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    c.busy_timeout(busy_timeout)?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    c.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_pool(dir: &tempfile::TempDir) -> Pool {
        Pool::open_file(&dir.path().join("relay.db"), 1, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_writer_leaves_checkpoints_to_the_background_thread() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pool = file_pool(&dir);
        let pages: i64 = pool.write(|c| {
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
            pool.write(|c| {
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
    fn an_in_memory_database_has_no_checkpoint_thread() {
        let pool = Pool::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pool.checkpoint_runs_after(0), None);
    }
}
