//! [`MemoryJobs`]: an in-memory job system, the reference [`Jobs`]
//! implementation, for tests and simulations.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;

use crate::jobs::{JobMessage, Jobs, JobsError, Milestone, MilestoneKind};
use crate::types::{JobId, PhoneNumber, Timestamp};

/// One job in a [`MemoryJobs`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryJob {
    /// Its message log, in the order appended.
    pub messages: Vec<JobMessage>,
    /// Its milestones, in the order recorded.
    pub milestones: Vec<Milestone>,
}

impl MemoryJob {
    /// The first milestone of a kind.
    pub fn milestone(&self, kind: MilestoneKind) -> Option<&Milestone> {
        self.milestones.iter().find(|m| m.kind == kind)
    }
}

#[derive(Default)]
struct MemoryJobsInner {
    jobs: HashMap<JobId, (MemoryJob, HashSet<String>)>,
    open: HashMap<(PhoneNumber, PhoneNumber), JobId>,
}

/// An in-memory job system: the reference [`Jobs`] implementation, for
/// tests and simulations. Jobs are registered per (line, customer) with
/// [`MemoryJobs::open_job`]; [`MemoryJobs::set_down`] simulates an outage.
#[derive(Default)]
pub struct MemoryJobs {
    inner: Mutex<MemoryJobsInner>,
    down: AtomicBool,
    calls: AtomicUsize,
    failed_calls: AtomicUsize,
    repeated_keys: AtomicUsize,
}

impl MemoryJobs {
    /// An empty job system.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `job` as the open job of `customer` on `line`.
    pub fn open_job(&self, line: PhoneNumber, customer: PhoneNumber, job: JobId) {
        let mut g = self.lock();
        g.jobs.entry(job.clone()).or_default();
        g.open.insert((line, customer), job);
    }

    /// While `down`, every call fails (an outage).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// A copy of a job.
    pub fn job(&self, job: &JobId) -> Option<MemoryJob> {
        self.lock().jobs.get(job).map(|(j, _)| j.clone())
    }

    /// Calls made so far, and how many of them failed.
    pub fn calls(&self) -> (usize, usize) {
        (
            self.calls.load(Ordering::SeqCst),
            self.failed_calls.load(Ordering::SeqCst),
        )
    }

    /// Successful calls that carried a key the job already had (repeats the
    /// idempotency key absorbed). The relay makes them only after a crash,
    /// a conflict with another instance, or a failure mid-sync.
    pub fn repeated_keys(&self) -> usize {
        self.repeated_keys.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryJobsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enter(&self) -> Result<(), JobsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            self.failed_calls.fetch_add(1, Ordering::SeqCst);
            return Err(JobsError::new("job system unavailable"));
        }
        Ok(())
    }
}

#[async_trait]
impl Jobs for MemoryJobs {
    async fn resolve(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
        _at: Timestamp,
    ) -> Result<Option<JobId>, JobsError> {
        self.enter()?;
        Ok(self.lock().open.get(&(line, customer)).cloned())
    }

    async fn append_message(&self, job: &JobId, message: &JobMessage) -> Result<(), JobsError> {
        self.enter()?;
        let mut g = self.lock();
        let (j, keys) = g
            .jobs
            .get_mut(job)
            .ok_or_else(|| JobsError::new(format!("no job {job}")))?;
        if keys.insert(message.key.clone()) {
            j.messages.push(message.clone());
        } else {
            self.repeated_keys.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn milestone(&self, job: &JobId, milestone: &Milestone) -> Result<(), JobsError> {
        self.enter()?;
        let mut g = self.lock();
        let (j, keys) = g
            .jobs
            .get_mut(job)
            .ok_or_else(|| JobsError::new(format!("no job {job}")))?;
        if keys.insert(milestone.key.clone()) {
            j.milestones.push(milestone.clone());
        } else {
            self.repeated_keys.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}
