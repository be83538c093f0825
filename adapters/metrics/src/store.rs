//! A store that counts its conflicts and backend errors.

use std::sync::Arc;

use async_trait::async_trait;
use qdn_relay_core::{
    ConflictReason, Dispatch, DispatchId, Due, HistoryPage, InboundLookup, JobId, ListFilter,
    PhoneNumber, ProviderMessageId, Store, StoreError, Tag, Timestamp,
};

use crate::{Observation, Recorder, STORE_CONFLICTS, STORE_ERRORS};

/// Wraps a store: every call is passed on unchanged (the store's own
/// overrides included); a conflict on save and a backend error on any
/// call are counted into a [`Recorder`].
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    recorder: Arc<dyn Recorder>,
}

impl std::fmt::Debug for MeteredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredStore").finish_non_exhaustive()
    }
}

impl MeteredStore {
    /// Counts `inner`'s conflicts and errors into `recorder` (a
    /// [`crate::Metrics`], an [`crate::EmfSink`]).
    pub fn new(inner: Arc<dyn Store>, recorder: Arc<dyn Recorder>) -> Self {
        Self { inner, recorder }
    }

    fn seen<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &r {
            let o = match e {
                StoreError::Conflict { reason, .. } => {
                    let reason = match reason {
                        ConflictReason::Version { .. } => "version",
                        ConflictReason::OpenCustomer => "open_customer",
                        ConflictReason::Tag(_) => "tag",
                        ConflictReason::InboundSid(_) => "inbound_sid",
                        _ => "other",
                    };
                    Some(Observation::new(STORE_CONFLICTS, &[reason], 1.0))
                }
                StoreError::Backend { retryable, .. } => Some(Observation::new(
                    STORE_ERRORS,
                    &[if *retryable { "true" } else { "false" }],
                    1.0,
                )),
                _ => None,
            };
            if let Some(o) = o {
                self.recorder.record(&o);
            }
        }
        r
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn get(&self, id: DispatchId) -> Result<Option<Dispatch>, StoreError> {
        self.seen(self.inner.get(id).await)
    }
    async fn save(&self, dispatch: &Dispatch, expected: u64) -> Result<(), StoreError> {
        self.seen(self.inner.save(dispatch, expected).await)
    }
    async fn by_inbound_sid(
        &self,
        sid: &ProviderMessageId,
    ) -> Result<Option<Dispatch>, StoreError> {
        self.seen(self.inner.by_inbound_sid(sid).await)
    }
    async fn by_leg_sid(&self, sid: &ProviderMessageId) -> Result<Option<Dispatch>, StoreError> {
        self.seen(self.inner.by_leg_sid(sid).await)
    }
    async fn open_for_customer(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
    ) -> Result<Option<Dispatch>, StoreError> {
        self.seen(self.inner.open_for_customer(line, customer).await)
    }
    async fn open_by_tag(&self, tag: Tag) -> Result<Option<Dispatch>, StoreError> {
        self.seen(self.inner.open_by_tag(tag).await)
    }
    async fn first_free_tag(&self, candidates: &[Tag]) -> Result<Option<Tag>, StoreError> {
        self.seen(self.inner.first_free_tag(candidates).await)
    }
    async fn inbound_lookup(
        &self,
        line: PhoneNumber,
        from: PhoneNumber,
        sid: &ProviderMessageId,
    ) -> Result<InboundLookup, StoreError> {
        self.seen(self.inner.inbound_lookup(line, from, sid).await)
    }
    async fn open_for_dispatcher(
        &self,
        dispatcher: PhoneNumber,
        limit: usize,
    ) -> Result<Vec<Dispatch>, StoreError> {
        self.seen(self.inner.open_for_dispatcher(dispatcher, limit).await)
    }
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Due>, StoreError> {
        self.seen(self.inner.due(now, limit).await)
    }
    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        self.seen(self.inner.list(filter, limit).await)
    }
    async fn by_job(&self, job: &JobId, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        self.seen(self.inner.by_job(job, limit).await)
    }

    async fn history(&self, id: DispatchId) -> Result<Vec<HistoryPage>, StoreError> {
        self.seen(self.inner.history(id).await)
    }
}
