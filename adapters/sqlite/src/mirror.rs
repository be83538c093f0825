//! [`MirroredStore`]: the SQLite store with every dispatch and opt-out
//! also held in memory, for the one process that owns the file
//! (`qdn-relay serve`).
//!
//! - **Reads start no transaction.** Every query of the [`Store`] port
//!   (by id, customer, tag, dispatcher, inbound and leg ids, due
//!   deadlines, job, the lists) and the opt-out check are answered from
//!   memory: a [`MemoryStore`] and a set of opted-out numbers, loaded from
//!   the file at open.
//! - **The file stays the truth.** A save goes to the SQLite writer first,
//!   in its group commit, where the version check and the uniqueness rules
//!   hold exactly as without the mirror; only once it is committed is the
//!   dispatch applied to memory ([`MemoryStore::apply`]), before the save
//!   returns. A save the file refuses changes nothing in memory either.
//!   Opt-outs and opt-ins likewise.
//! - **One owner.** Memory is right only while nothing else writes the
//!   file, so the mirror holds an exclusive lock on it (`flock`) for its
//!   life: a second mirror on the same file is refused at open
//!   ([`OpenError::InUse`]); the lock goes with the process, even on
//!   `kill -9`. Plain [`SqliteStore`]s, which several processes may share,
//!   take no such lock: do not write the file with one while a mirror owns
//!   it.
//!
//! Memory grows with the file: every dispatch, open or closed, is held
//! (about 2 KiB each, see BENCHMARKS.md), with the message ids of the
//! entries each moved out of its record; the moved entries themselves
//! (history pages) stay in the file alone.

use std::fs::File;
use std::path::Path;

use async_trait::async_trait;
use qdn_relay_core::{
    Dispatch, DispatchId, Due, HistoryPage, InboundLookup, JobId, ListFilter, MemoryOptOuts,
    MemoryStore, OptOuts, PhoneNumber, ProviderMessageId, SafetyError, Store, StoreError, Tag,
    Timestamp,
};

use crate::{OpenError, SqliteOptions, SqliteStore};

/// The SQLite store mirrored in memory (see the module docs).
pub struct MirroredStore {
    sqlite: SqliteStore,
    memory: MemoryStore,
    /// The opted-out numbers (keywords taken stay in the file alone).
    opt_outs: MemoryOptOuts,
    /// The open file whose exclusive lock says this process owns it.
    _owner: File,
}

impl std::fmt::Debug for MirroredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirroredStore")
            .field("sqlite", &self.sqlite)
            .field("dispatches", &self.memory.len())
            .finish_non_exhaustive()
    }
}

impl MirroredStore {
    /// Opens the file at `path` as [`SqliteStore::open_with`] does, takes
    /// its exclusive lock, and loads every dispatch and opt-out into
    /// memory.
    ///
    /// # Errors
    ///
    /// [`OpenError::InUse`] when another mirror owns the file; what
    /// [`SqliteStore::open_with`] refuses; [`OpenError::Load`] when a
    /// stored dispatch cannot be read back.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, OpenError> {
        let path = path.as_ref().to_owned();
        let sqlite = SqliteStore::open_with(&path, options).await?;
        let owner = File::options()
            .read(true)
            .open(&path)
            .map_err(|e| OpenError::Lock {
                path: path.clone(),
                source: e,
            })?;
        match owner.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(OpenError::InUse { path });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(OpenError::Lock { path, source: e });
            }
        }
        let memory = MemoryStore::lookups_only();
        for d in sqlite.load_all().await.map_err(OpenError::Load)? {
            memory.apply(&d);
        }
        for (id, inbound, legs) in sqlite.load_moved().await.map_err(OpenError::Load)? {
            memory.apply_moved(id, &inbound, &legs);
        }
        let opt_outs = MemoryOptOuts::new();
        for (number, at) in sqlite.load_opt_outs().await.map_err(OpenError::Load)? {
            // In memory, infallible.
            let _ = opt_outs.opt_out(number, at).await;
        }
        Ok(Self {
            sqlite,
            memory,
            opt_outs,
            _owner: owner,
        })
    }

    /// [`MirroredStore::open_with`] with the default options.
    ///
    /// # Errors
    ///
    /// As [`MirroredStore::open_with`].
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// The SQLite store underneath (its file is this mirror's).
    pub fn sqlite(&self) -> &SqliteStore {
        &self.sqlite
    }

    /// How many dispatches memory holds (every one in the file).
    pub fn len(&self) -> usize {
        self.memory.len()
    }

    /// Whether the file holds no dispatch.
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty()
    }
}

#[async_trait]
impl Store for MirroredStore {
    async fn get(&self, id: DispatchId) -> Result<Option<Dispatch>, StoreError> {
        self.memory.get(id).await
    }

    async fn save(&self, d: &Dispatch, expected: u64) -> Result<(), StoreError> {
        // What memory holds at `expected` is what the file holds (memory
        // only ever installs committed saves): the writer need not read
        // it back. Any other version is left to the file's checks.
        let before = self.memory.peek(d.id(), |held| {
            (held.version() == expected).then(|| crate::store::Before::of(held))
        });
        self.sqlite
            .save_after(d, expected, before.flatten())
            .await?;
        self.memory.apply(d);
        Ok(())
    }

    async fn by_inbound_sid(
        &self,
        sid: &ProviderMessageId,
    ) -> Result<Option<Dispatch>, StoreError> {
        self.memory.by_inbound_sid(sid).await
    }

    async fn by_leg_sid(&self, sid: &ProviderMessageId) -> Result<Option<Dispatch>, StoreError> {
        self.memory.by_leg_sid(sid).await
    }

    async fn open_for_customer(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
    ) -> Result<Option<Dispatch>, StoreError> {
        self.memory.open_for_customer(line, customer).await
    }

    async fn open_by_tag(&self, tag: Tag) -> Result<Option<Dispatch>, StoreError> {
        self.memory.open_by_tag(tag).await
    }

    async fn first_free_tag(&self, candidates: &[Tag]) -> Result<Option<Tag>, StoreError> {
        self.memory.first_free_tag(candidates).await
    }

    async fn inbound_lookup(
        &self,
        line: PhoneNumber,
        from: PhoneNumber,
        sid: &ProviderMessageId,
    ) -> Result<InboundLookup, StoreError> {
        self.memory.inbound_lookup(line, from, sid).await
    }

    async fn open_for_dispatcher(
        &self,
        dispatcher: PhoneNumber,
        limit: usize,
    ) -> Result<Vec<Dispatch>, StoreError> {
        self.memory.open_for_dispatcher(dispatcher, limit).await
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Due>, StoreError> {
        self.memory.due(now, limit).await
    }

    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        self.memory.list(filter, limit).await
    }

    async fn by_job(&self, job: &JobId, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        self.memory.by_job(job, limit).await
    }

    async fn history(&self, id: DispatchId) -> Result<Vec<HistoryPage>, StoreError> {
        // Memory keeps only the lookups of moved entries; the pages are in
        // the file.
        self.sqlite.history(id).await
    }
}

#[async_trait]
impl OptOuts for MirroredStore {
    async fn opt_out(&self, number: PhoneNumber, at: Timestamp) -> Result<(), SafetyError> {
        self.sqlite.opt_out(number, at).await?;
        self.opt_outs.opt_out(number, at).await
    }

    async fn opt_in(&self, number: PhoneNumber) -> Result<(), SafetyError> {
        self.sqlite.opt_in(number).await?;
        self.opt_outs.opt_in(number).await
    }

    async fn is_opted_out(&self, number: PhoneNumber) -> Result<bool, SafetyError> {
        self.opt_outs.is_opted_out(number).await
    }

    async fn opted_out_among(
        &self,
        numbers: &[PhoneNumber],
    ) -> Result<Vec<PhoneNumber>, SafetyError> {
        self.opt_outs.opted_out_among(numbers).await
    }

    async fn keyword_taken(&self, sid: &ProviderMessageId) -> Result<bool, SafetyError> {
        self.sqlite.keyword_taken(sid).await
    }

    async fn take_keyword(
        &self,
        sid: &ProviderMessageId,
        at: Timestamp,
    ) -> Result<(), SafetyError> {
        self.sqlite.take_keyword(sid, at).await
    }
}
