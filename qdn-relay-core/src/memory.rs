//! [`MemoryStore`]: a [`Store`] in memory that answers every query from an
//! index (the reference store: one process, nothing survives it).

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use async_trait::async_trait;

use crate::dispatch::{Dispatch, HistoryPage};
use crate::ports::{ConflictReason, Due, InboundLookup, ListFilter, Store, StoreError};
use crate::types::{DispatchId, JobId, PhoneNumber, ProviderMessageId, Tag, Timestamp};

// ---------------------------------------------------------------------------
// MemoryStore

/// One shard of an index: foldhash, seeded per process, several times
/// cheaper than SipHash on the ids and numbers they are keyed by (a save
/// touches a few maps; the keys come from signed webhooks).
type Shard<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// How many shards each index has, as a power of two.
const SHARD_BITS: u32 = 4;

/// How many shards each index has.
const SHARDS: usize = 1 << SHARD_BITS;

/// The indexes' hash maps, each split into [`SHARDS`] by the key's hash. A
/// hash map that outgrows its table moves every entry to a new one while
/// the store's lock is held, and every reader and writer waits: with a
/// few hundred thousand dispatches that is tens of milliseconds at each
/// doubling. Split, a doubling moves a sixteenth of the entries.
struct Map<K, V> {
    pick: foldhash::fast::RandomState,
    shards: Box<[Shard<K, V>]>,
}

impl<K, V> Default for Map<K, V> {
    fn default() -> Self {
        Self {
            pick: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl<K: std::hash::Hash + Eq, V> Map<K, V> {
    /// The shard is read from the top bits of the hash times a 64-bit odd
    /// constant (Fibonacci hashing): foldhash leaves the low bits of small
    /// keys poorly mixed for some seeds (taken modulo 16, one process in
    /// fifteen used half the shards), and the product carries every bit of
    /// the hash into its top bits.
    fn shard_of<Q: std::hash::Hash + ?Sized>(&self, k: &Q) -> usize {
        let h = std::hash::BuildHasher::hash_one(&self.pick, k);
        (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHARD_BITS)) as usize
    }

    fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.shards[self.shard_of(k)].get(k)
    }

    fn get_mut<Q>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let i = self.shard_of(k);
        self.shards[i].get_mut(k)
    }

    fn contains_key<Q>(&self, k: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.get(k).is_some()
    }

    fn insert(&mut self, k: K, v: V) -> Option<V> {
        let i = self.shard_of(&k);
        self.shards[i].insert(k, v)
    }

    fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let i = self.shard_of(k);
        self.shards[i].remove(k)
    }

    fn entry(&mut self, k: K) -> std::collections::hash_map::Entry<'_, K, V> {
        let i = self.shard_of(&k);
        self.shards[i].entry(k)
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    #[cfg(any(test, feature = "testing"))]
    fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values())
    }

    fn len(&self) -> usize {
        self.shards.iter().map(Shard::len).sum()
    }
}

/// The same entries, however they are sharded.
impl<K: std::hash::Hash + Eq, V: PartialEq> PartialEq for Map<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

/// A [`Store`] in memory. Every lookup goes through an index; the due query
/// reads an ordered set of `(deadline, id)` and never looks at dispatches
/// that are not due.
#[derive(Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

/// Most recently notified first, then newest id first.
type NotifiedKey = (Reverse<Timestamp>, Reverse<DispatchId>);

#[derive(Default)]
struct Inner {
    /// Boxed so the table holds a pointer, not a 350-byte dispatch (a hash
    /// table right after it doubles is half empty).
    by_id: Map<DispatchId, Box<Dispatch>>,
    inbound: Map<ProviderMessageId, DispatchId>,
    legs: Map<ProviderMessageId, DispatchId>,
    open_customer: Map<(PhoneNumber, PhoneNumber), DispatchId>,
    open_tag: Map<Tag, DispatchId>,
    open_dispatcher: Map<PhoneNumber, BTreeSet<NotifiedKey>>,
    due: BTreeSet<(Timestamp, DispatchId)>,
    all: BTreeSet<DispatchId>,
    open: BTreeSet<DispatchId>,
    jobs: Map<JobId, BTreeSet<DispatchId>>,
    /// What each dispatch moved out of its record, by `seq`.
    pages: Map<DispatchId, Vec<HistoryPage>>,
    /// Whether `pages` are kept, or only the lookups of what they hold
    /// (a mirror of a durable store, which keeps the pages).
    lookups_only: bool,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store for mirroring a durable one: the history pages that
    /// saves carry are not kept (only their message ids, for the lookups),
    /// and [`Store::history`] answers nothing: ask the durable store.
    pub fn lookups_only() -> Self {
        let s = Self::default();
        s.write().lookups_only = true;
        s
    }

    /// Adds the lookups of entries dispatch `id` moved out of its record
    /// (as a durable store holds them), for a mirror loading its store.
    pub fn apply_moved<'a>(
        &self,
        id: DispatchId,
        inbound: impl IntoIterator<Item = &'a ProviderMessageId>,
        legs: impl IntoIterator<Item = &'a ProviderMessageId>,
    ) {
        let mut g = self.write();
        for s in inbound {
            g.inbound.insert(s.clone(), id);
        }
        for s in legs {
            g.legs.insert(s.clone(), id);
        }
    }

    /// How many dispatches it holds.
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The earliest deadline of any dispatch (for simulations that jump to
    /// the next one).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.read().due.first().map(|(t, _)| *t)
    }

    /// Installs `d` as another store already committed it, for a store
    /// that mirrors a durable one in memory: the record and its index
    /// entries replace the ones held, with no version or uniqueness check
    /// (the durable store made them). A version older than the one held is
    /// ignored, so mirrors applied out of order keep the newest; index
    /// entries another dispatch owns meanwhile are left to it.
    pub fn apply(&self, d: &Dispatch) {
        let mut g = self.write();
        if !g.holds_as_new(d) {
            g.install(d);
        }
    }

    /// [`MemoryStore::apply`] of a dispatch the store may keep as it is
    /// (no copy is made).
    pub fn apply_owned(&self, d: Dispatch) {
        let mut g = self.write();
        if !g.holds_as_new(&d) {
            g.install_owned(d);
        }
    }

    /// Whether [`Store::save`] of `d` over version `expected` would be
    /// taken now, by the same checks (the version, then the uniqueness
    /// rules), without installing anything: for a store that mirrors a
    /// durable one and checks a save in memory before committing it.
    ///
    /// # Errors
    ///
    /// What [`Store::save`] would return.
    pub fn check_save(&self, d: &Dispatch, expected: u64) -> Result<(), StoreError> {
        self.read().check_save(d, expected)
    }

    /// Calls `f` with dispatch `id` as held, without copying it; `None`
    /// when it is not held.
    pub fn peek<R>(&self, id: DispatchId, f: impl FnOnce(&Dispatch) -> R) -> Option<R> {
        self.read().by_id.get(&id).map(|d| f(d))
    }

    /// Checks that every index holds exactly the entries the dispatches
    /// held give (as if each were indexed afresh): the incremental
    /// re-indexing of saves must never drift. For tests.
    ///
    /// # Errors
    ///
    /// Names the first index that differs.
    #[cfg(any(test, feature = "testing"))]
    pub fn check_indexes(&self) -> Result<(), String> {
        let g = self.read();
        let mut fresh = Inner::default();
        for d in g.by_id.values() {
            fresh.index(d);
        }
        for (&id, pages) in g.pages.iter() {
            for p in pages {
                fresh.index_moved(id, p);
            }
        }
        let differs = |name: &str| Err(format!("the {name} index differs from a fresh one"));
        // Without the pages, the lookups of moved entries cannot be
        // rebuilt: every fresh one must still be there.
        let holds = |held: &Map<ProviderMessageId, DispatchId>,
                     fresh: &Map<ProviderMessageId, DispatchId>| {
            if g.lookups_only {
                fresh.iter().all(|(k, v)| held.get(k) == Some(v))
            } else {
                held == fresh
            }
        };
        if !holds(&g.inbound, &fresh.inbound) {
            return differs("inbound id");
        }
        if !holds(&g.legs, &fresh.legs) {
            return differs("leg id");
        }
        if g.open_customer != fresh.open_customer {
            return differs("open customer");
        }
        if g.open_tag != fresh.open_tag {
            return differs("open tag");
        }
        if g.open_dispatcher != fresh.open_dispatcher {
            return differs("dispatcher");
        }
        if g.due != fresh.due {
            return differs("due");
        }
        if g.all != fresh.all || g.open != fresh.open {
            return differs("all or open");
        }
        if g.jobs != fresh.jobs {
            return differs("job");
        }
        Ok(())
    }

    /// Every dispatch, newest first (a snapshot for tests).
    pub fn all(&self) -> Vec<Dispatch> {
        let g = self.read();
        g.all
            .iter()
            .rev()
            .filter_map(|id| g.by_id.get(id).map(|d| (**d).clone()))
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn unindex(&mut self, d: &Dispatch) {
        let id = d.id();
        for s in d.inbound_sids() {
            self.inbound.remove(s);
        }
        for s in d.leg_sids() {
            self.legs.remove(s);
        }
        if d.state().is_open() {
            if self.open_customer.get(&(d.line(), d.customer())) == Some(&id) {
                self.open_customer.remove(&(d.line(), d.customer()));
            }
            if self.open_tag.get(&d.tag()) == Some(&id) {
                self.open_tag.remove(&d.tag());
            }
            self.unindex_notified(id, &d.notified_at());
            self.open.remove(&id);
        }
        if let Some(t) = d.next_deadline() {
            self.due.remove(&(t, id));
        }
        if let Some(job) = d.job_id()
            && let Some(set) = self.jobs.get_mut(job)
        {
            set.remove(&id);
            if set.is_empty() {
                self.jobs.remove(job);
            }
        }
    }

    /// Puts `d` in place of the version held (if any), its index entries
    /// moved with it, and keeps the pages it moved out.
    fn install(&mut self, d: &Dispatch) {
        let id = d.id();
        let mut copy = d.clone();
        copy.pages_saved();
        match self.by_id.get_mut(&id) {
            Some(held) => {
                let old = std::mem::replace(&mut **held, copy);
                self.reindex(&old, d);
            }
            None => {
                self.index(d);
                self.by_id.insert(id, Box::new(copy));
            }
        }
        self.keep_pages(id, d.unsaved_pages().iter().cloned());
    }

    /// Whether the version held of `d` is as new as `d` or newer (a
    /// mirror applies nothing older than it holds).
    fn holds_as_new(&self, d: &Dispatch) -> bool {
        self.by_id
            .get(&d.id())
            .is_some_and(|held| held.version() >= d.version())
    }

    /// [`Inner::install`] of a dispatch the store may keep as it is (no
    /// copy; the record is moved out of its table slot and back while it
    /// is re-indexed). The reference store keeps the in-place install:
    /// through this one its sweep measured 5.10 ms against 4.86.
    fn install_owned(&mut self, mut d: Dispatch) {
        let id = d.id();
        // Pages move out rarely: an empty list costs nothing.
        let pages = d.unsaved_pages().to_vec();
        d.pages_saved();
        match self.by_id.remove(&id) {
            Some(mut held) => {
                let old = std::mem::replace(&mut *held, d);
                self.reindex(&old, &held);
                self.by_id.insert(id, held);
            }
            None => {
                self.index(&d);
                self.by_id.insert(id, Box::new(d));
            }
        }
        self.keep_pages(id, pages);
    }

    /// The lookups of the pages `id` moved out, and the pages themselves
    /// unless only lookups are kept.
    fn keep_pages(&mut self, id: DispatchId, pages: impl IntoIterator<Item = HistoryPage>) {
        for p in pages {
            self.index_moved(id, &p);
            if self.lookups_only {
                continue;
            }
            let held = self.pages.entry(id).or_default();
            if p.seq as usize == held.len() {
                held.push(p);
            }
        }
    }

    /// The lookups of entries that moved out of dispatch `id`'s record:
    /// they stay (a moved text is still a repeat; a late report for a
    /// moved leg still finds its dispatch).
    fn index_moved(&mut self, id: DispatchId, p: &HistoryPage) {
        for s in p.inbound_sids() {
            self.inbound.insert(s.clone(), id);
        }
        for s in p.leg_sids() {
            self.legs.insert(s.clone(), id);
        }
    }

    fn index(&mut self, d: &Dispatch) {
        let id = d.id();
        for s in d.inbound_sids() {
            self.inbound.insert(s.clone(), id);
        }
        for s in d.leg_sids() {
            self.legs.insert(s.clone(), id);
        }
        if d.state().is_open() {
            self.open_customer.insert((d.line(), d.customer()), id);
            self.open_tag.insert(d.tag(), id);
            self.index_notified(id, &d.notified_at());
            self.open.insert(id);
        }
        if let Some(t) = d.next_deadline() {
            self.due.insert((t, id));
        }
        if let Some(job) = d.job_id() {
            self.jobs.entry(job.clone()).or_default().insert(id);
        }
        self.all.insert(id);
    }

    /// Moves the index entries of `old` to those of `new` (the same
    /// dispatch, a later version), touching only what differs: after a send
    /// outcome that is one leg id and the due entry. Falls back to a full
    /// unindex and index unless the thread is `old`'s with entries appended
    /// and the legs are `old`'s with ids only added (as the state machine
    /// always leaves them), older entries possibly moved out (the caller
    /// indexes those from the pages).
    fn reindex(&mut self, old: &Dispatch, new: &Dispatch) {
        let id = new.id();
        let (old_thread, new_thread) = (old.thread(), new.thread());
        let (old_from, new_from) = (old.history().thread as usize, new.history().thread as usize);
        let old_end = old_from + old_thread.len();
        let appended = old_from <= new_from
            && old_end <= new_from + new_thread.len()
            && old_thread
                .iter()
                .skip(new_from - old_from)
                .zip(new_thread)
                .all(|(a, b)| a.sid == b.sid);
        let (old_legs, new_legs) = (old.legs(), new.legs());
        let (old_first, new_first) = (old.history().legs as usize, new.history().legs as usize);
        let legs_kept = old_first <= new_first
            && old_first + old_legs.len() <= new_first + new_legs.len()
            && old_legs
                .iter()
                .skip(new_first - old_first)
                .zip(new_legs)
                .all(|(a, b)| a.sid.is_none() || a.sid == b.sid);
        if !appended || !legs_kept || old.line() != new.line() || old.customer() != new.customer() {
            self.unindex(old);
            self.index(new);
            return;
        }
        for e in &new_thread[old_end.saturating_sub(new_from)..] {
            if let Some(s) = &e.sid {
                self.inbound.insert(s.clone(), id);
            }
        }
        for (i, l) in new_legs.iter().enumerate() {
            let old_leg = (new_first + i)
                .checked_sub(old_first)
                .and_then(|p| old_legs.get(p));
            if let Some(s) = &l.sid
                && old_leg.is_none_or(|o| o.sid.is_none())
            {
                self.legs.insert(s.clone(), id);
            }
        }
        let (was_open, is_open) = (old.state().is_open(), new.state().is_open());
        if was_open
            && (!is_open || old.tag() != new.tag())
            && self.open_tag.get(&old.tag()) == Some(&id)
        {
            self.open_tag.remove(&old.tag());
        }
        if was_open && !is_open {
            if self.open_customer.get(&(old.line(), old.customer())) == Some(&id) {
                self.open_customer.remove(&(old.line(), old.customer()));
            }
            self.open.remove(&id);
        }
        if is_open {
            if !was_open {
                self.open_customer.insert((new.line(), new.customer()), id);
                self.open.insert(id);
            }
            if !was_open || old.tag() != new.tag() {
                self.open_tag.insert(new.tag(), id);
            }
        }
        // Who was notified, and when last: only while open. A leg's
        // recipient, purpose and creation never change, so with no new leg
        // and the same openness the entries are the same.
        let notified_may_differ =
            was_open != is_open || old_first + old_legs.len() != new_first + new_legs.len();
        if notified_may_differ {
            let gone = if was_open {
                old.notified_at()
            } else {
                Vec::new()
            };
            let now = if is_open {
                new.notified_at()
            } else {
                Vec::new()
            };
            let only = |a: &[(PhoneNumber, Timestamp)], b: &[(PhoneNumber, Timestamp)]| {
                a.iter()
                    .copied()
                    .filter(|e| !b.contains(e))
                    .collect::<Vec<_>>()
            };
            self.unindex_notified(id, &only(&gone, &now));
            self.index_notified(id, &only(&now, &gone));
        }
        let (old_due, new_due) = (old.next_deadline(), new.next_deadline());
        if old_due != new_due {
            if let Some(t) = old_due {
                self.due.remove(&(t, id));
            }
            if let Some(t) = new_due {
                self.due.insert((t, id));
            }
        }
        if old.job_id() != new.job_id() {
            if let Some(job) = old.job_id()
                && let Some(set) = self.jobs.get_mut(job)
            {
                set.remove(&id);
                if set.is_empty() {
                    self.jobs.remove(job);
                }
            }
            if let Some(job) = new.job_id() {
                self.jobs.entry(job.clone()).or_default().insert(id);
            }
        }
    }

    /// Adds dispatch `id` to each dispatcher's set, at when they were last
    /// notified.
    fn index_notified(&mut self, id: DispatchId, entries: &[(PhoneNumber, Timestamp)]) {
        for &(n, at) in entries {
            self.open_dispatcher
                .entry(n)
                .or_default()
                .insert((Reverse(at), Reverse(id)));
        }
    }

    /// Takes these entries of dispatch `id` out of the dispatchers' sets.
    fn unindex_notified(&mut self, id: DispatchId, entries: &[(PhoneNumber, Timestamp)]) {
        for &(n, at) in entries {
            if let Some(set) = self.open_dispatcher.get_mut(&n) {
                set.remove(&(Reverse(at), Reverse(id)));
                if set.is_empty() {
                    self.open_dispatcher.remove(&n);
                }
            }
        }
    }

    /// The checks of [`Store::save`]: the version, then uniqueness.
    fn check_save(&self, d: &Dispatch, expected: u64) -> Result<(), StoreError> {
        let id = d.id();
        if d.version() != expected.wrapping_add(1) {
            return Err(StoreError::Invalid {
                id,
                message: format!(
                    "dispatch version {} is not expected version {expected} + 1",
                    d.version()
                ),
            });
        }
        let found = self.by_id.get(&id).map(|d| d.version());
        let version_ok = match found {
            None => expected == 0,
            Some(v) => expected != 0 && v == expected,
        };
        if !version_ok {
            return Err(StoreError::Conflict {
                id,
                reason: ConflictReason::Version { expected, found },
            });
        }
        self.check_unique(d)
            .map_err(|reason| StoreError::Conflict { id, reason })
    }

    fn check_unique(&self, d: &Dispatch) -> Result<(), ConflictReason> {
        let id = d.id();
        if d.state().is_open() {
            if let Some(other) = self.open_customer.get(&(d.line(), d.customer()))
                && *other != id
            {
                return Err(ConflictReason::OpenCustomer);
            }
            if let Some(other) = self.open_tag.get(&d.tag())
                && *other != id
            {
                return Err(ConflictReason::Tag(d.tag()));
            }
        }
        // The record's texts, and those moving out in this save (a batch of
        // changes saved at once may move texts never saved before).
        let moving = d.unsaved_pages().iter().flat_map(|p| p.inbound_sids());
        for s in d.inbound_sids().chain(moving) {
            if let Some(other) = self.inbound.get(s)
                && *other != id
            {
                return Err(ConflictReason::InboundSid(s.clone()));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, id: DispatchId) -> Result<Option<Dispatch>, StoreError> {
        Ok(self.read().by_id.get(&id).map(|d| (**d).clone()))
    }

    async fn save(&self, d: &Dispatch, expected: u64) -> Result<(), StoreError> {
        let mut g = self.write();
        g.check_save(d, expected)?;
        g.install(d);
        Ok(())
    }

    async fn by_inbound_sid(
        &self,
        sid: &ProviderMessageId,
    ) -> Result<Option<Dispatch>, StoreError> {
        let g = self.read();
        Ok(g.inbound
            .get(sid)
            .and_then(|id| g.by_id.get(id))
            .map(|d| (**d).clone()))
    }

    async fn by_leg_sid(&self, sid: &ProviderMessageId) -> Result<Option<Dispatch>, StoreError> {
        let g = self.read();
        Ok(g.legs
            .get(sid)
            .and_then(|id| g.by_id.get(id))
            .map(|d| (**d).clone()))
    }

    async fn inbound_lookup(
        &self,
        line: PhoneNumber,
        from: PhoneNumber,
        sid: &ProviderMessageId,
    ) -> Result<InboundLookup, StoreError> {
        let g = self.read();
        let load = |id: &DispatchId| g.by_id.get(id).map(|d| (**d).clone());
        Ok(InboundLookup {
            notified: g.open_dispatcher.get(&from).is_some_and(|s| !s.is_empty()),
            repeated: g.inbound.get(sid).and_then(load),
            open: g.open_customer.get(&(line, from)).and_then(load),
        })
    }

    async fn open_for_customer(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
    ) -> Result<Option<Dispatch>, StoreError> {
        let g = self.read();
        Ok(g.open_customer
            .get(&(line, customer))
            .and_then(|id| g.by_id.get(id))
            .map(|d| (**d).clone()))
    }

    async fn open_by_tag(&self, tag: Tag) -> Result<Option<Dispatch>, StoreError> {
        let g = self.read();
        Ok(g.open_tag
            .get(&tag)
            .and_then(|id| g.by_id.get(id))
            .map(|d| (**d).clone()))
    }

    async fn first_free_tag(&self, candidates: &[Tag]) -> Result<Option<Tag>, StoreError> {
        let g = self.read();
        Ok(candidates
            .iter()
            .copied()
            .find(|t| !g.open_tag.contains_key(t)))
    }

    async fn open_for_dispatcher(
        &self,
        dispatcher: PhoneNumber,
        limit: usize,
    ) -> Result<Vec<Dispatch>, StoreError> {
        let g = self.read();
        Ok(g.open_dispatcher
            .get(&dispatcher)
            .map(|set| {
                set.iter()
                    .take(limit)
                    .filter_map(|(_, Reverse(id))| g.by_id.get(id).map(|d| (**d).clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Due>, StoreError> {
        let g = self.read();
        Ok(g.due
            .iter()
            .take_while(|(t, _)| *t <= now)
            .take(limit)
            .map(|&(deadline, id)| Due { deadline, id })
            .collect())
    }

    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        let g = self.read();
        let ids: Box<dyn Iterator<Item = &DispatchId>> = match filter {
            ListFilter::Open => Box::new(g.open.iter().rev()),
            ListFilter::All => Box::new(g.all.iter().rev()),
        };
        Ok(ids
            .take(limit)
            .filter_map(|id| g.by_id.get(id).map(|d| (**d).clone()))
            .collect())
    }

    async fn by_job(&self, job: &JobId, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        let g = self.read();
        Ok(g.jobs
            .get(job)
            .map(|set| {
                set.iter()
                    .rev()
                    .take(limit)
                    .filter_map(|id| g.by_id.get(id).map(|d| (**d).clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn history(&self, id: DispatchId) -> Result<Vec<HistoryPage>, StoreError> {
        Ok(self.read().pages.get(&id).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod map_tests {
    use super::{Map, SHARDS};

    #[test]
    fn a_sharded_map_is_a_map() {
        let mut a: Map<u32, u32> = Map::default();
        for i in 0..1000 {
            assert_eq!(a.insert(i, i * 2), None);
        }
        assert_eq!(a.insert(7, 70), Some(14));
        assert_eq!(a.len(), 1000);
        assert_eq!(a.get(&7), Some(&70));
        assert!(a.contains_key(&999) && !a.contains_key(&1000));
        *a.get_mut(&8).unwrap_or_else(|| unreachable!()) = 80;
        *a.entry(9).or_default() += 1;
        *a.entry(5000).or_default() += 1;
        assert_eq!((a.get(&9), a.get(&5000)), (Some(&19), Some(&1)));
        assert_eq!(a.remove(&5000), Some(1));
        assert_eq!(a.remove(&5000), None);
        assert_eq!(a.values().count(), 1000);
        // 1,000 keys over 16 shards: 62.5 each on average, and fewer than
        // 20 in any shard is over five standard deviations out.
        let fewest = a.shards.iter().map(|s| s.len()).min();
        assert_eq!(a.shards.len(), SHARDS);
        assert!(
            fewest >= Some(20),
            "the entries spread over every shard: {fewest:?}"
        );
        // Equal by content, whatever the shards' seeds.
        let mut b: Map<u32, u32> = Map::default();
        for (k, v) in a.iter() {
            b.insert(*k, *v);
        }
        assert!(a == b);
        b.insert(1, 0);
        assert!(a != b);
    }
}
