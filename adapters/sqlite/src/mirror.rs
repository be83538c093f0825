//! [`MirroredStore`]: the SQLite store with every dispatch and opt-out
//! also held in memory, for the one process that owns the file
//! (`qdn-relay serve`).
//!
//! - **Reads start no transaction.** Every query of the [`Store`] port
//!   (by id, customer, tag, dispatcher, inbound and leg ids, due
//!   deadlines, job, the lists) and the opt-out check are answered from
//!   memory: a [`MemoryStore`] and a set of opted-out numbers, loaded from
//!   the file at open.
//! - **Memory shows only what is on file.** A save is checked in memory
//!   (the version, then the uniqueness rules: [`MemoryStore::check_save`])
//!   and queued for the SQLite writer's group commit; once that commit is
//!   over, the writer thread applies the dispatch to memory
//!   ([`MemoryStore::apply_owned`]) before the save returns. Reads never
//!   see a save in flight, and a save that fails changes nothing in
//!   memory. Opt-outs and opt-ins are written first, then applied.
//! - **Checks are exact with saves in flight.** Each save in flight holds
//!   its keys: its dispatch id, the (line, customer) and tag it holds open
//!   now and after the save, and its inbound message ids. A save that
//!   shares a key with one in flight waits for that one to settle and is
//!   then checked against memory; saves with no key in common commute, so
//!   a check made while the others are in flight gives what it would give
//!   after them, whether they commit or fail. The order of commits is
//!   therefore an order in which every save passed its checks, as in the
//!   reference store.
//! - **The file holds the records.** The writer writes each dispatch's
//!   record (and what moved out of it) alone: the secondary indexes and
//!   lookup rows that only a shared [`SqliteStore`] reads are dropped
//!   while a mirror owns the file and rebuilt from the records when a
//!   shared store next opens it. A save is one row, appended for a new
//!   dispatch.
//! - **One owner.** Memory is right only while nothing else writes the
//!   file, so the mirror holds an exclusive lock on it (`flock`) for its
//!   life: a second mirror, or a shared [`SqliteStore`], on the same file
//!   is refused at open ([`OpenError::InUse`]), and a mirror is refused
//!   while shared stores hold the file; the lock goes with the process,
//!   even on `kill -9`.
//!
//! Memory grows with the file: every dispatch, open or closed, is held
//! (about 1.6 kB of live data each, 2.0 kB resident with a million held;
//! see BENCHMARKS.md), with the message ids of the entries each moved out
//! of its record; the moved entries themselves (history pages) stay in
//! the file alone. Each dispatch is compacted as it loads
//! ([`Dispatch::compact`]), so a loaded one costs what a new one does.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use qdn_relay_core::{
    Dispatch, DispatchId, Due, HistoryPage, InboundLookup, JobId, ListFilter, MemoryOptOuts,
    MemoryStore, OptOuts, PhoneNumber, ProviderMessageId, SafetyError, Store, StoreError, Tag,
    Timestamp,
};

use crate::store::{Row, lock_file};
use crate::{OpenError, SqliteOptions, SqliteStore};

/// Dispatches read from the file at a time when a mirror loads it.
const LOAD_PAGE: usize = 10_000;

/// The SQLite store mirrored in memory (see the module docs).
pub struct MirroredStore {
    sqlite: SqliteStore,
    /// Memory and the saves in flight, shared with the writer thread.
    shared: Arc<Shared>,
    /// The opted-out numbers (keywords taken stay in the file alone).
    opt_outs: MemoryOptOuts,
    /// The open file whose exclusive lock says this process owns it.
    _owner: File,
}

/// What the writer thread touches when a save settles.
struct Shared {
    memory: MemoryStore,
    /// The keys of the saves in flight, each with how many hold it.
    in_flight: Mutex<InFlight>,
    /// Told when a save settles (its keys are free again).
    settled: tokio::sync::Notify,
}

/// The keys of the saves in flight (foldhash: they are looked up on every
/// save).
type InFlight = HashMap<Key, usize, foldhash::fast::RandomState>;

/// What two saves must not both hold in flight (see the module docs).
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Id(DispatchId),
    Customer(PhoneNumber, PhoneNumber),
    Tag(Tag),
    Inbound(ProviderMessageId),
}

impl Shared {
    fn in_flight(&self) -> MutexGuard<'_, InFlight> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The keys a save of `d` holds: see the module docs. Called with the
    /// in-flight keys locked and no save of `d` in flight, so the version
    /// memory holds cannot change meanwhile.
    fn keys(&self, d: &Dispatch) -> Vec<Key> {
        let mut keys = vec![Key::Id(d.id())];
        let mut open_as = |line, customer, tag| {
            keys.push(Key::Customer(line, customer));
            keys.push(Key::Tag(tag));
        };
        if d.state().is_open() {
            open_as(d.line(), d.customer(), d.tag());
        }
        if let Some(Some((line, customer, tag))) = self.memory.peek(d.id(), |held| {
            held.state()
                .is_open()
                .then(|| (held.line(), held.customer(), held.tag()))
        }) {
            open_as(line, customer, tag);
        }
        let moving = d.unsaved_pages().iter().flat_map(|p| p.inbound_sids());
        keys.extend(d.inbound_sids().chain(moving).cloned().map(Key::Inbound));
        keys
    }

    /// A save settled: memory has it if it committed; its keys are free.
    fn settle(&self, d: Dispatch, keys: &[Key], committed: bool) {
        if committed {
            self.memory.apply_owned(d);
        }
        let mut held = self.in_flight();
        for k in keys {
            if let Some(n) = held.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    held.remove(k);
                }
            }
        }
        drop(held);
        self.settled.notify_waiters();
    }
}

impl std::fmt::Debug for MirroredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirroredStore")
            .field("sqlite", &self.sqlite)
            .field("dispatches", &self.shared.memory.len())
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
        let owner = lock_file(&path, true)?;
        let sqlite = SqliteStore::open_owned(&path, options).await?;
        let memory = MemoryStore::lookups_only();
        // Every dispatch of a line holds the same policy: keep one copy of
        // each (the last few seen are enough, policies change rarely).
        let mut policies: Vec<Arc<qdn_relay_core::Policy>> = Vec::new();
        let mut after = None;
        loop {
            let page = sqlite
                .load_after(after, LOAD_PAGE)
                .await
                .map_err(OpenError::Load)?;
            let Some(last) = page.last() else { break };
            after = Some(last.id());
            for mut d in page {
                d.compact();
                if !policies.iter().rev().any(|p| d.share_policy(p)) {
                    if policies.len() == 16 {
                        policies.remove(0);
                    }
                    policies.push(Arc::clone(d.policy()));
                }
                memory.apply_owned(d);
            }
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
            shared: Arc::new(Shared {
                memory,
                in_flight: Mutex::new(InFlight::default()),
                settled: tokio::sync::Notify::new(),
            }),
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
        self.shared.memory.len()
    }

    /// Whether the file holds no dispatch.
    pub fn is_empty(&self) -> bool {
        self.shared.memory.is_empty()
    }
}

#[async_trait]
impl Store for MirroredStore {
    async fn get(&self, id: DispatchId) -> Result<Option<Dispatch>, StoreError> {
        self.shared.memory.get(id).await
    }

    async fn save(&self, d: &Dispatch, expected: u64) -> Result<(), StoreError> {
        let row = Row::owned(d, expected)?;
        let keys = loop {
            let wait = {
                let mut held = self.shared.in_flight();
                let keys = self.shared.keys(d);
                if !keys.iter().any(|k| held.contains_key(k)) {
                    self.shared.memory.check_save(d, expected)?;
                    for k in &keys {
                        *held.entry(k.clone()).or_insert(0) += 1;
                    }
                    break keys;
                }
                // Wait for the saves in flight that share a key to settle,
                // then check again.
                let mut wait = Box::pin(self.shared.settled.notified());
                wait.as_mut().enable();
                wait
            };
            wait.await;
        };
        // Queued at once (no await since the keys were taken): a save that
        // shares a key waits for this one to settle, whatever the order of
        // the queue.
        let shared = Arc::clone(&self.shared);
        let copy = d.clone();
        let settled = self
            .sqlite
            .queue_owned(row, move |r| shared.settle(copy, &keys, r.is_ok()));
        crate::store::outcome(settled, d.id()).await
    }

    async fn by_inbound_sid(
        &self,
        sid: &ProviderMessageId,
    ) -> Result<Option<Dispatch>, StoreError> {
        self.shared.memory.by_inbound_sid(sid).await
    }

    async fn by_leg_sid(&self, sid: &ProviderMessageId) -> Result<Option<Dispatch>, StoreError> {
        self.shared.memory.by_leg_sid(sid).await
    }

    async fn open_for_customer(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
    ) -> Result<Option<Dispatch>, StoreError> {
        self.shared.memory.open_for_customer(line, customer).await
    }

    async fn open_by_tag(&self, tag: Tag) -> Result<Option<Dispatch>, StoreError> {
        self.shared.memory.open_by_tag(tag).await
    }

    async fn first_free_tag(&self, candidates: &[Tag]) -> Result<Option<Tag>, StoreError> {
        self.shared.memory.first_free_tag(candidates).await
    }

    async fn inbound_lookup(
        &self,
        line: PhoneNumber,
        from: PhoneNumber,
        sid: &ProviderMessageId,
    ) -> Result<InboundLookup, StoreError> {
        self.shared.memory.inbound_lookup(line, from, sid).await
    }

    async fn open_for_dispatcher(
        &self,
        dispatcher: PhoneNumber,
        limit: usize,
    ) -> Result<Vec<Dispatch>, StoreError> {
        self.shared
            .memory
            .open_for_dispatcher(dispatcher, limit)
            .await
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Due>, StoreError> {
        self.shared.memory.due(now, limit).await
    }

    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        self.shared.memory.list(filter, limit).await
    }

    async fn by_job(&self, job: &JobId, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        self.shared.memory.by_job(job, limit).await
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
