//! [`CountingStore`]: any [`Store`] with every call counted (feature
//! `testing`), for tests and benchmarks that check what the driver asks of
//! its store: how many calls of each method, how many found something,
//! how many saves lost a race, and the time spent in each.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::{
    ConflictReason, Dispatch, DispatchId, Due, HistoryPage, InboundLookup, JobId, ListFilter,
    PhoneNumber, ProviderMessageId, Store, StoreError, Tag, Timestamp,
};

/// What one [`Store`] method was asked, counted by [`CountingStore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that found something: a dispatch, a non-empty list, a free
    /// tag, a lookup with anything in it; for `save`, a save that
    /// succeeded.
    pub found: u64,
    /// Saves refused for a version conflict (ones that lost a race).
    pub version_conflicts: u64,
    /// Wall time spent in the calls, waiting for the store included.
    pub time: Duration,
}

/// `S` with every call counted by method name (`"get"`, `"save"`,
/// `"inbound_lookup"`, … as in [`Store`]). Every method is forwarded,
/// those with a default body included, so the inner store's own
/// implementation is the one counted. [`fail_next`](Self::fail_next)
/// makes a method fail as a busy store would, for tests of what retries.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), qdn_relay_core::StoreError> {
/// use qdn_relay_core::testing::CountingStore;
/// use qdn_relay_core::{ListFilter, MemoryStore, Store};
/// let store = CountingStore::new(MemoryStore::new());
/// assert!(store.list(ListFilter::Open, 10).await?.is_empty());
/// assert_eq!(store.calls("list"), 1);
/// assert_eq!(store.stats()["list"].found, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct CountingStore<S> {
    inner: S,
    stats: Mutex<BTreeMap<&'static str, CallStats>>,
    faults: Mutex<BTreeMap<&'static str, u64>>,
}

impl<S> CountingStore<S> {
    /// Counts the calls made to `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            stats: Mutex::default(),
            faults: Mutex::default(),
        }
    }

    /// Makes the next `n` calls of `method` fail with a retryable
    /// [`StoreError::Backend`] (a busy or unreachable store) without
    /// reaching the inner store; they are counted as calls. `u64::MAX`
    /// keeps it down until [`heal`](Self::heal).
    pub fn fail_next(&self, method: &'static str, n: u64) {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(method, n);
    }

    /// Ends every failure [`fail_next`](Self::fail_next) set up.
    pub fn heal(&self) {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The injected failure for this call of `method`, if one is due.
    fn fault(&self, method: &'static str) -> Option<StoreError> {
        let mut faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        let left = faults.get_mut(method).filter(|n| **n > 0)?;
        if *left != u64::MAX {
            *left -= 1;
        }
        Some(StoreError::backend(
            true,
            format!("injected failure of {method}"),
        ))
    }

    /// The store counted (calls made to it directly are not counted).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The calls of `method` since the start or the last [`reset`](Self::reset).
    pub fn calls(&self, method: &str) -> u64 {
        self.lock().get(method).map_or(0, |s| s.calls)
    }

    /// Saves refused for a version conflict.
    pub fn version_conflicts(&self) -> u64 {
        self.lock().get("save").map_or(0, |s| s.version_conflicts)
    }

    /// Every method called, with its counts.
    pub fn stats(&self) -> BTreeMap<&'static str, CallStats> {
        self.lock().clone()
    }

    /// Forgets every count.
    pub fn reset(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<&'static str, CallStats>> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record<T>(
        &self,
        method: &'static str,
        since: Instant,
        r: &Result<T, StoreError>,
        found: impl FnOnce(&T) -> bool,
    ) {
        let time = since.elapsed();
        let mut stats = self.lock();
        let s = stats.entry(method).or_default();
        s.calls += 1;
        s.time += time;
        match r {
            Ok(v) => s.found += u64::from(found(v)),
            Err(StoreError::Conflict {
                reason: ConflictReason::Version { .. },
                ..
            }) => s.version_conflicts += 1,
            Err(_) => {}
        }
    }
}

fn some<T>(v: &Option<T>) -> bool {
    v.is_some()
}

#[async_trait]
impl<S: Store> Store for CountingStore<S> {
    async fn get(&self, id: DispatchId) -> Result<Option<Dispatch>, StoreError> {
        let t = Instant::now();
        let r = match self.fault("get") {
            Some(e) => Err(e),
            None => self.inner.get(id).await,
        };
        self.record("get", t, &r, some);
        r
    }

    async fn save(&self, dispatch: &Dispatch, expected: u64) -> Result<(), StoreError> {
        let t = Instant::now();
        let r = match self.fault("save") {
            Some(e) => Err(e),
            None => self.inner.save(dispatch, expected).await,
        };
        self.record("save", t, &r, |()| true);
        r
    }

    async fn by_inbound_sid(
        &self,
        sid: &ProviderMessageId,
    ) -> Result<Option<Dispatch>, StoreError> {
        let t = Instant::now();
        let r = match self.fault("by_inbound_sid") {
            Some(e) => Err(e),
            None => self.inner.by_inbound_sid(sid).await,
        };
        self.record("by_inbound_sid", t, &r, some);
        r
    }

    async fn by_leg_sid(&self, sid: &ProviderMessageId) -> Result<Option<Dispatch>, StoreError> {
        let t = Instant::now();
        let r = match self.fault("by_leg_sid") {
            Some(e) => Err(e),
            None => self.inner.by_leg_sid(sid).await,
        };
        self.record("by_leg_sid", t, &r, some);
        r
    }

    async fn open_for_customer(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
    ) -> Result<Option<Dispatch>, StoreError> {
        let t = Instant::now();
        let r = match self.fault("open_for_customer") {
            Some(e) => Err(e),
            None => self.inner.open_for_customer(line, customer).await,
        };
        self.record("open_for_customer", t, &r, some);
        r
    }

    async fn open_by_tag(&self, tag: Tag) -> Result<Option<Dispatch>, StoreError> {
        let t = Instant::now();
        let r = match self.fault("open_by_tag") {
            Some(e) => Err(e),
            None => self.inner.open_by_tag(tag).await,
        };
        self.record("open_by_tag", t, &r, some);
        r
    }

    async fn first_free_tag(&self, candidates: &[Tag]) -> Result<Option<Tag>, StoreError> {
        let t = Instant::now();
        let r = match self.fault("first_free_tag") {
            Some(e) => Err(e),
            None => self.inner.first_free_tag(candidates).await,
        };
        self.record("first_free_tag", t, &r, some);
        r
    }

    async fn inbound_lookup(
        &self,
        line: PhoneNumber,
        from: PhoneNumber,
        sid: &ProviderMessageId,
    ) -> Result<InboundLookup, StoreError> {
        let t = Instant::now();
        let r = match self.fault("inbound_lookup") {
            Some(e) => Err(e),
            None => self.inner.inbound_lookup(line, from, sid).await,
        };
        self.record("inbound_lookup", t, &r, |l| {
            l.notified || l.repeated.is_some() || l.open.is_some()
        });
        r
    }

    async fn open_for_dispatcher(
        &self,
        dispatcher: PhoneNumber,
        limit: usize,
    ) -> Result<Vec<Dispatch>, StoreError> {
        let t = Instant::now();
        let r = match self.fault("open_for_dispatcher") {
            Some(e) => Err(e),
            None => self.inner.open_for_dispatcher(dispatcher, limit).await,
        };
        self.record("open_for_dispatcher", t, &r, |v| !v.is_empty());
        r
    }

    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Due>, StoreError> {
        let t = Instant::now();
        let r = match self.fault("due") {
            Some(e) => Err(e),
            None => self.inner.due(now, limit).await,
        };
        self.record("due", t, &r, |v| !v.is_empty());
        r
    }

    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        let t = Instant::now();
        let r = match self.fault("list") {
            Some(e) => Err(e),
            None => self.inner.list(filter, limit).await,
        };
        self.record("list", t, &r, |v| !v.is_empty());
        r
    }

    async fn by_job(&self, job: &JobId, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        let t = Instant::now();
        let r = match self.fault("by_job") {
            Some(e) => Err(e),
            None => self.inner.by_job(job, limit).await,
        };
        self.record("by_job", t, &r, |v| !v.is_empty());
        r
    }

    async fn history(&self, id: DispatchId) -> Result<Vec<HistoryPage>, StoreError> {
        let t = Instant::now();
        let r = match self.fault("history") {
            Some(e) => Err(e),
            None => self.inner.history(id).await,
        };
        self.record("history", t, &r, |v| !v.is_empty());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use crate::testing::contract::fixture;

    #[tokio::test]
    async fn calls_finds_and_lost_races_are_counted_by_method() {
        let store = CountingStore::new(MemoryStore::new());
        let d = fixture(1, "K7", "+16195550100", "SMin1", 0);
        store.save(&d, 0).await.expect("created");
        store
            .save(&d, 0)
            .await
            .expect_err("exists: version 1, not 0");
        let mut stale = d.clone();
        stale.set_version(3);
        store.save(&stale, 2).await.expect_err("a stale version");
        assert!(store.get(d.id()).await.expect("get").is_some());
        assert!(
            store
                .get(DispatchId::from_u128(9))
                .await
                .expect("get")
                .is_none()
        );
        assert!(
            store
                .open_for_dispatcher("+16195550177".parse().expect("a number"), 1)
                .await
                .expect("query")
                .is_empty()
        );

        assert_eq!(store.calls("save"), 3);
        assert_eq!(store.version_conflicts(), 2);
        let stats = store.stats();
        assert_eq!(stats["save"].found, 1);
        assert_eq!((stats["get"].calls, stats["get"].found), (2, 1));
        assert_eq!(stats["open_for_dispatcher"].found, 0);
        assert_eq!(store.calls("due"), 0);
        // Calls made straight to the inner store are not counted.
        store.inner().get(d.id()).await.expect("get");
        assert_eq!(store.calls("get"), 2);
        store.reset();
        assert!(store.stats().is_empty());
    }
}
