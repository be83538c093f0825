//! [`MemoryStore`]: a [`Store`] in memory that answers every query from an
//! index (the reference store: one process, nothing survives it).

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use async_trait::async_trait;

use crate::dispatch::Dispatch;
use crate::ports::{ConflictReason, Due, InboundLookup, ListFilter, Store, StoreError};
use crate::types::{DispatchId, JobId, PhoneNumber, ProviderMessageId, Tag, Timestamp};

// ---------------------------------------------------------------------------
// MemoryStore

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
    by_id: HashMap<DispatchId, Box<Dispatch>>,
    inbound: HashMap<ProviderMessageId, DispatchId>,
    legs: HashMap<ProviderMessageId, DispatchId>,
    open_customer: HashMap<(PhoneNumber, PhoneNumber), DispatchId>,
    open_tag: HashMap<Tag, DispatchId>,
    open_dispatcher: HashMap<PhoneNumber, BTreeSet<NotifiedKey>>,
    due: BTreeSet<(Timestamp, DispatchId)>,
    all: BTreeSet<DispatchId>,
    open: BTreeSet<DispatchId>,
    jobs: HashMap<JobId, BTreeSet<DispatchId>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
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
        let id = d.id();
        let mut g = self.write();
        if g.by_id
            .get(&id)
            .is_some_and(|held| held.version() >= d.version())
        {
            return;
        }
        if let Some(old) = g.by_id.remove(&id) {
            g.unindex(&old);
        }
        g.index(d);
        g.by_id.insert(id, Box::new(d.clone()));
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
            for n in d.notified() {
                if let Some(set) = self.open_dispatcher.get_mut(&n) {
                    if let Some(at) = d.last_notified_at(n) {
                        set.remove(&(Reverse(at), Reverse(id)));
                    }
                    if set.is_empty() {
                        self.open_dispatcher.remove(&n);
                    }
                }
            }
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
            for n in d.notified() {
                if let Some(at) = d.last_notified_at(n) {
                    self.open_dispatcher
                        .entry(n)
                        .or_default()
                        .insert((Reverse(at), Reverse(id)));
                }
            }
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
        for s in d.inbound_sids() {
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
        let mut g = self.write();
        let found = g.by_id.get(&id).map(|d| d.version());
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
        g.check_unique(d)
            .map_err(|reason| StoreError::Conflict { id, reason })?;
        if let Some(old) = g.by_id.remove(&id) {
            g.unindex(&old);
        }
        g.index(d);
        g.by_id.insert(id, Box::new(d.clone()));
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
}
