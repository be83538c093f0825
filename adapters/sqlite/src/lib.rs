//! # qdn-relay-sqlite
//!
//! The embedded default [`Store`](qdn_relay_core::Store) of qdn-relay: one
//! SQLite file (SQLite is compiled in; no system library is needed).
//!
//! ```no_run
//! # async fn demo() -> Result<(), qdn_relay_sqlite::OpenError> {
//! use qdn_relay_sqlite::SqliteStore;
//! let store = SqliteStore::open("relay.db").await?;
//! # let _ = store; Ok(()) }
//! ```
//!
//! [`SqliteStore::open`] switches the file to write-ahead logging
//! (`journal_mode=WAL`, `synchronous=NORMAL`), sets a busy timeout and
//! `foreign_keys=ON` on every connection, and creates or migrates the
//! schema. [`SqliteStore::open_in_memory`] gives a private in-memory
//! database with the same schema and behaviour, for tests.
//!
//! ## Schema
//!
//! The database's `user_version` is the schema version
//! ([`SCHEMA_VERSION`], 6 now). Migrations are an append-only list, run in
//! order inside one `BEGIN IMMEDIATE` transaction on open; a file whose
//! version is newer than this build knows is refused with
//! [`OpenError::NewerSchema`] and left untouched.
//!
//! - `dispatches`: one row per dispatch. `id` (the ULID as text, so text
//!   order is creation order) is the primary key; `version`, `state`,
//!   `is_open`, `line`, `customer`, `tag`, `deadline` (milliseconds, `NULL`
//!   when nothing is due), `opened_at`, `updated_at`, `job_id` are copied
//!   out of the dispatch for the indexes; `record` is the whole dispatch as
//!   JSON, the one source read back.
//! - `inbound_sids (sid PRIMARY KEY → dispatch, moved)`: every inbound
//!   message id of every dispatch; the primary key is the "one dispatch per
//!   inbound message id" rule. `moved = 1` marks the ids of texts that
//!   moved out of the record: later saves, which no longer hold them, leave
//!   them.
//! - `leg_sids (sid PRIMARY KEY → dispatch, moved)`: the provider ids of
//!   outbound texts, for status callbacks; `moved` likewise.
//! - `history (dispatch, seq) → page`: what a dispatch moved out of its
//!   record as it grew ([`HistoryPage`](qdn_relay_core::HistoryPage)s as
//!   JSON), written in the save that moved them and never changed;
//!   `Store::history` reads them by primary key.
//! - `notified (dispatch, dispatcher, last_notified_at)`: who was texted
//!   about a dispatch and when last; rows exist only while the dispatch is
//!   open.
//! - `lookups (stale)`: one row; `1` while (or since) a
//!   [`MirroredStore`] owned the file, which keeps neither the secondary
//!   indexes of `dispatches` nor the lookup rows but for moved entries.
//!   The next [`SqliteStore::open`] rebuilds them from the records, in one
//!   transaction, and sets it back to `0`.
//!
//! ## Indexes, one per query of the port
//!
//! | query | index |
//! |---|---|
//! | `get` | the primary key of `dispatches` |
//! | `by_inbound_sid`, `by_leg_sid` | the side tables' primary keys, then `dispatches`' |
//! | `open_for_customer` | `UNIQUE (line, customer) WHERE is_open = 1`: also the "one open dispatch per customer and line" rule |
//! | `open_by_tag` | `UNIQUE (tag) WHERE is_open = 1`: also the "one open dispatch per tag" rule |
//! | `due` | `(deadline, id) WHERE deadline IS NOT NULL`: a range scan that reads only due rows, already in order, covering (the table is not touched) |
//! | `open_for_dispatcher` | `notified (dispatcher, last_notified_at DESC, dispatch DESC)`: in the order asked for |
//! | `list(All)` | the primary key, backwards |
//! | `list(Open)` | `(id) WHERE is_open = 1`, backwards |
//! | `history` | the primary key of `history` |
//!
//! The side tables also have an index on `dispatch`, used when a save
//! replaces a dispatch's rows, and a partial one of their moved rows,
//! which a mirror reads at open. The partial indexes keep closed dispatches
//! (most of the file, over time) out of every open-only lookup, and
//! dispatches with nothing pending out of the due index.
//!
//! ## One owner: [`MirroredStore`]
//!
//! A process that is the file's only user (`qdn-relay serve`) opens it as
//! a [`MirroredStore`]: every dispatch and opt-out is also held in memory,
//! so no read starts a transaction. Memory is the index and the file the
//! log: a save is checked in memory, then written by the writer below as
//! its record row alone (appended for a new dispatch), and applied to
//! memory by the writer thread once committed, before the save returns.
//! An exclusive lock on the file refuses a second owner and shared
//! stores; each [`SqliteStore`] holds a shared lock, which refuses an
//! owner. See the [`MirroredStore`] docs for why the checks stay exact.
//!
//! ## Concurrency
//!
//! SQLite calls block, and the [`Store`](qdn_relay_core::Store) port is
//! async: each connection belongs to a thread of its own, and a call hands
//! its work to a thread and awaits the answer on a oneshot channel, so
//! nothing blocks the async executor. A file store has one writer thread and
//! a few reader threads ([`SqliteOptions::readers`], 4 by default) that take
//! reads from one queue; WAL lets the readers run alongside the writer, each
//! read seeing the last committed save. A busy thread goes from one job to
//! the next without sleeping, which costs far less than a trip through
//! Tokio's blocking pool per call. An in-memory store has one thread and
//! one connection for both, since an in-memory database belongs to its
//! connection.
//!
//! A file store also runs one background thread, with its own connection,
//! that checkpoints the WAL (copies it back into the database file, with
//! its `fsync`s) every 64 writes or half a second, as a `PASSIVE`
//! checkpoint that never waits for or blocks the other connections. The
//! writer's own automatic checkpoint is raised to 16,384 pages (64 MiB), a
//! bound it reaches only if the thread cannot keep up, so a save does not
//! pay for a checkpoint while every other save waits behind it.
//!
//! ## Durability
//!
//! A `save` that returned is committed to the WAL. With
//! `synchronous=NORMAL` the commit is not `fsync`ed: it survives the
//! process crashing or being killed (the WAL is in the operating system's
//! cache and is replayed on the next open), but a power loss or an
//! operating-system crash may lose the saves since the last `fsync` of the
//! WAL — in practice those since the last background checkpoint, about
//! half a second — while the database stays consistent (never a torn or
//! half-applied save).
//!
//! `save` runs inside a `BEGIN IMMEDIATE` transaction: it takes the write
//! lock first, then checks the version and the uniqueness rules, writes the
//! row, replaces the side-table rows and commits. A failed check returns
//! before anything is written and is rolled back, so a failed save changes
//! nothing. Because the checks run under the write lock, they hold against
//! other processes sharing the file too (they wait up to the busy timeout
//! for the lock).
//!
//! Saves queued together share a transaction (group commit): the writer
//! thread takes every save queued by then (up to 64 at a time) and commits
//! them in one transaction, each in its own `SAVEPOINT`, so each is checked
//! against the ones before it exactly as if they had run one after another,
//! and a refused save is rolled back to its savepoint alone. An owner's
//! saves need no savepoint: checked in memory already, the only refusal
//! left (a version the `UPDATE` does not find) comes before they write. A save that
//! fails in SQLite itself gets that error and the others are run again in a
//! new transaction without it; a transaction that cannot begin or commit
//! fails every save in it. A save returns only after the commit that holds
//! it, so what it returns is what is on file. Other writes (opt-outs) run
//! alone, in the order queued.
//!
//! ## Error mapping
//!
//! | SQLite | [`StoreError`](qdn_relay_core::StoreError) |
//! |---|---|
//! | stored version differs, or the id exists on create | `Conflict { reason: Version { expected, found } }` |
//! | another open dispatch for (line, customer) | `Conflict { reason: OpenCustomer }` |
//! | another open dispatch holds the tag | `Conflict { reason: Tag(tag) }` |
//! | another dispatch holds an inbound message id | `Conflict { reason: InboundSid(sid) }` |
//! | `d.version() != expected + 1` | `Invalid` (nothing touches the database) |
//! | `SQLITE_BUSY`, `SQLITE_LOCKED` (a lock held past the busy timeout) | `Backend { retryable: true }` |
//! | any other SQLite error | `Backend { retryable: false }` |
//! | a `record` that is not a dispatch's JSON, or disagrees with its row; a column of the wrong type | `Corrupt` |
//!
//! The conflicts are found by queries inside the save's transaction, not by
//! reading constraint names out of error messages; the unique indexes stay
//! as a second line of defence. Errors are told apart by SQLite's result
//! codes, never by their text.

mod error;
mod mirror;
mod pool;
mod schema;
mod store;

pub use error::OpenError;
pub use mirror::MirroredStore;
pub use schema::SCHEMA_VERSION;
pub use store::{SqliteOptions, SqliteStore};

#[cfg(test)]
mod tests;
