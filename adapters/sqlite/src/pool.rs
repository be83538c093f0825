//! A small connection pool: one writer behind a mutex and a few read-only
//! connections handed out from a free list.
//!
//! Everything here blocks; callers run it on Tokio's blocking pool.

use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::OpenError;
use crate::schema;

/// How many prepared statements each connection keeps (more than the store
/// has, so none is ever re-prepared).
const STATEMENT_CACHE: usize = 32;

/// The connections of one store.
pub(crate) struct Pool {
    writer: Mutex<Connection>,
    /// `None` for an in-memory database, whose only connection serves reads
    /// too (an in-memory database belongs to its connection).
    readers: Option<Readers>,
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
        schema::migrate(&mut writer)?;

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
        })
    }

    /// Runs `f` on the writer connection (the only one that writes).
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        f(&mut lock(&self.writer))
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
