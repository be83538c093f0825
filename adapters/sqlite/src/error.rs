//! Errors: [`OpenError`] for opening a store, and the mapping of SQLite's
//! errors onto the port's [`StoreError`].

use std::path::PathBuf;

use qdn_relay_core::StoreError;
use rusqlite::ErrorCode;

/// Why a [`SqliteStore`](crate::SqliteStore) could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process's mirror owns the file
    /// ([`MirroredStore`](crate::MirroredStore)).
    #[error(
        "{} is in use by another qdn-relay process (one server per database file; stop it, or give this one its own RELAY_DB)",
        path.display()
    )]
    InUse {
        /// The file.
        path: PathBuf,
    },
    /// The file's lock could not be taken (a file system without `flock`).
    #[error(
        "cannot lock {} for this server alone: {source} (RELAY_DB_MODE=shared runs without the lock, every read from the file)",
        path.display()
    )]
    Lock {
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The lookups a file's owner does not keep could not be dropped (by
    /// an owner taking the file) or rebuilt (by a shared store opening a
    /// file an owner wrote last).
    #[error("cannot drop or rebuild the sqlite lookups: {0}")]
    Lookups(#[source] qdn_relay_core::StoreError),
    /// A stored dispatch or opt-out could not be loaded into memory.
    #[error("cannot load the database into memory: {0}")]
    Load(#[source] qdn_relay_core::StoreError),
    /// The database file could not be opened or created.
    #[error("cannot open the sqlite database {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// Setting up a connection (pragmas, the migration transaction) failed.
    #[error("cannot set up the sqlite database: {0}")]
    Setup(#[source] rusqlite::Error),
    /// The file could not be switched to write-ahead logging (for example
    /// a file system without shared memory); SQLite kept another mode.
    #[error(
        "the sqlite database stays in journal mode {mode:?}; write-ahead logging (wal) is required"
    )]
    NotWal {
        /// The journal mode SQLite reported.
        mode: String,
    },
    /// A migration failed; the schema is left at the version before it.
    #[error("migrating the sqlite schema to version {to} failed: {source}")]
    Migration {
        /// The version the failed migration leads to.
        to: u32,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer build (its `user_version` is higher
    /// than any this build knows). Nothing was changed.
    #[error(
        "the sqlite database has schema version {found}, newer than the {known} this build knows; \
         use a newer qdn-relay"
    )]
    NewerSchema {
        /// The file's `user_version`.
        found: i64,
        /// The highest version this build knows.
        known: u32,
    },
    /// The background checkpoint thread of a file store could not be
    /// started.
    #[error("cannot start the sqlite checkpoint thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The blocking task that opens the database could not run (the
    /// runtime is shutting down).
    #[error("the task opening the sqlite database did not run: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// Whether SQLite's error means "try again": another connection holds the
/// lock past the busy timeout.
pub(crate) fn is_retryable(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Maps a rusqlite error onto the port's error: busy and locked are
/// retryable backend errors; a column that cannot be read as its type is a
/// corrupt record; everything else is a non-retryable backend error.
pub(crate) fn map(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt(e.to_string()),
        e => StoreError::backend(is_retryable(&e), e),
    }
}

/// [`map`] for an error that several saves share (a transaction that could
/// not begin or commit): each gets a backend error with its message and
/// whether it is retryable.
pub(crate) fn map_ref(e: &rusqlite::Error) -> StoreError {
    StoreError::backend(is_retryable(e), e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn busy_and_locked_are_retryable() {
        for code in [
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_LOCKED,
            rusqlite::ffi::SQLITE_BUSY_SNAPSHOT,
        ] {
            assert!(
                matches!(
                    map(failure(code)),
                    StoreError::Backend {
                        retryable: true,
                        ..
                    }
                ),
                "code {code}"
            );
        }
    }

    #[test]
    fn other_failures_are_not_retryable() {
        for code in [
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_FULL,
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE,
            rusqlite::ffi::SQLITE_READONLY,
        ] {
            assert!(
                matches!(
                    map(failure(code)),
                    StoreError::Backend {
                        retryable: false,
                        ..
                    }
                ),
                "code {code}"
            );
        }
    }

    #[test]
    fn unreadable_columns_are_corrupt() {
        let e = rusqlite::Error::InvalidColumnType(0, "record".into(), rusqlite::types::Type::Null);
        assert!(matches!(map(e), StoreError::Corrupt(_)));
    }
}
