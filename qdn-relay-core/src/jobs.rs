//! The host application's job system: the optional [`Jobs`] port.
//!
//! A relay embedded in a job system (the QDN dashboard's `qdn-data-crud`
//! in the original design) tells that system what happens to each
//! customer's texts: which job a conversation belongs to, every text in and
//! out in the job's message log, and the dispatch's milestones (forwarded,
//! escalated, acked, failed, closed) on the job record.
//!
//! # How the relay drives it
//!
//! After every change to a dispatch (and on every sweep while something is
//! still owed), the driver:
//!
//! 1. asks [`Jobs::resolve`] once which job the dispatch belongs to (the
//!    answer, a job or none, is saved on the dispatch);
//! 2. appends, in order, every text received or sent since the last
//!    successful sync with [`Jobs::append_message`], and records the new
//!    milestones with [`Jobs::milestone`];
//! 3. saves how far it got (a per-dispatch cursor, [`JobSync`]).
//!
//! Jobs calls happen after the dispatch is saved and its texts are sent,
//! so a slow or failing job system never delays a forward or an
//! escalation, and never loses a text: a failed call is retried by
//! [`crate::Relay::sweep`] with backoff ([`JOB_RETRY_MIN`] doubling up to
//! [`JOB_RETRY_MAX`]), and the failure shows in the dispatch's status and
//! events until it succeeds.
//!
//! Calls are *at least once*: a crash between a successful call and the
//! cursor's save, or two relay instances syncing the same dispatch at
//! once, repeats a call. Every message and milestone carries a stable
//! idempotency `key`; an implementation makes the effect *exactly once* by
//! ignoring a key it has already recorded for the job (see the contract on
//! [`Jobs`]).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::dispatch::{AckVia, Direction, Dispatch, Leg, Purpose, State};
use crate::input::{Actor, DeliveryStatus, Media};
use crate::types::{DispatchId, JobId, PhoneNumber, ProviderMessageId, Tag, Timestamp};

/// The first retry delay after a failed [`Jobs`] call.
pub const JOB_RETRY_MIN: Duration = Duration::from_secs(5);

/// The longest retry delay after repeated [`Jobs`] failures.
pub const JOB_RETRY_MAX: Duration = Duration::from_secs(10 * 60);

/// Who wrote a text in a job's message log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The customer.
    Customer,
    /// A dispatcher: their texts to the relay, and their replies (or a
    /// dashboard operator's) sent on to the customer.
    Dispatcher,
    /// The relay itself: forwards to dispatchers and notices.
    Relay,
}

/// One text for a job's message log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    /// The idempotency key: the same text always has the same key, and no
    /// two texts share one. `in:<MessageSid>` for a received text,
    /// `out:<dispatch id>:<leg>` for a sent one.
    pub key: String,
    /// The dispatch it belongs to.
    pub dispatch: DispatchId,
    /// The dispatch's tag.
    pub tag: Tag,
    /// Received or sent by the relay.
    pub direction: Direction,
    /// Who wrote it.
    pub origin: Origin,
    /// The author when it is not the sender's phone: a dashboard operator
    /// for a reply written on the dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Actor>,
    /// The sender's number (the business line for sent texts).
    pub from: PhoneNumber,
    /// The recipient's number (the business line for received texts).
    pub to: PhoneNumber,
    /// The text as received, or as sent.
    pub body: String,
    /// Attached media (received texts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<Media>,
    /// The provider's message id. Always set for received texts; for sent
    /// ones, unless the provider's answer was lost
    /// ([`DeliveryStatus::Unknown`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<ProviderMessageId>,
    /// Why the relay sent it (sent texts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
    /// When it was received, or accepted by the provider.
    pub at: Timestamp,
}

/// What a [`Milestone`] marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MilestoneKind {
    /// The customer's text went to the first level (the seed's
    /// `forwarded_to_primary_at`).
    Forwarded,
    /// The dispatch reached a later level or round (the first one is the
    /// seed's `forwarded_to_backup_at`).
    Escalated,
    /// Someone acknowledged (the seed's `primary_ack_at` when `level` is 0).
    Acked,
    /// Every level of every round was tried without an ack.
    Failed,
    /// The dispatch was closed.
    Closed,
}

/// A step in a dispatch's life, for the job record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Milestone {
    /// The idempotency key (`<dispatch id>:<kind>[:<round>:<level>]`).
    pub key: String,
    /// The dispatch.
    pub dispatch: DispatchId,
    /// What happened.
    pub kind: MilestoneKind,
    /// When.
    pub at: Timestamp,
    /// The round, for forwards and escalations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// The level: reached (forwards, escalations) or of the acker (acks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
    /// Who was texted, for forwards and escalations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<PhoneNumber>,
    /// Who acknowledged or closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Actor>,
    /// How the ack came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<AckVia>,
}

/// A [`Jobs`] call failed. The relay retries it later; the message is shown
/// in the dispatch's status (keep secrets out of it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JobsError(#[source] Box<dyn std::error::Error + Send + Sync>);

impl JobsError {
    /// Wraps the job system's error.
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(source.into())
    }
}

/// The host application's job system.
///
/// # Contract
///
/// - `resolve(line, customer, at)`: the job a customer's conversation on a
///   business line belongs to at `at` (for example the customer's open
///   dumpster job), or `Ok(None)` for none. Asked once per dispatch, after
///   it opened; a dispatch can be linked later with
///   [`crate::Relay::link_job`].
/// - `append_message(job, message)`: add the text to the job's message
///   log. MUST be idempotent on `message.key` within the job: a key already
///   recorded is a success that changes nothing. Messages of one dispatch
///   arrive in the order the relay saw them.
/// - `milestone(job, milestone)`: record it on the job (an ack time, an
///   escalation). MUST be idempotent on `milestone.key` in the same way.
/// - An `Err` means "not recorded, ask again later": the relay retries
///   with backoff and never drops the entry. Calls should finish (or time
///   out) within a few seconds; they run after the relay's own work.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Jobs: Send + Sync {
    /// Which job a customer's conversation on `line` belongs to.
    async fn resolve(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
        at: Timestamp,
    ) -> Result<Option<JobId>, JobsError>;

    /// Appends one text to the job's message log (idempotent on its key).
    async fn append_message(&self, job: &JobId, message: &JobMessage) -> Result<(), JobsError>;

    /// Records one milestone on the job (idempotent on its key).
    async fn milestone(&self, job: &JobId, milestone: &Milestone) -> Result<(), JobsError>;
}

#[async_trait]
impl<T: Jobs + ?Sized> Jobs for std::sync::Arc<T> {
    async fn resolve(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
        at: Timestamp,
    ) -> Result<Option<JobId>, JobsError> {
        (**self).resolve(line, customer, at).await
    }
    async fn append_message(&self, job: &JobId, message: &JobMessage) -> Result<(), JobsError> {
        (**self).append_message(job, message).await
    }
    async fn milestone(&self, job: &JobId, milestone: &Milestone) -> Result<(), JobsError> {
        (**self).milestone(job, milestone).await
    }
}

// ---------------------------------------------------------------------------
// The per-dispatch cursor

/// How far a dispatch's texts and milestones have reached its job. Saved
/// with the dispatch; only the driver changes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSync {
    /// Whether [`Jobs::resolve`] has answered (the job, or none).
    #[serde(default)]
    pub resolved: bool,
    /// Thread entries already examined.
    #[serde(default)]
    pub thread: u32,
    /// Legs already examined.
    #[serde(default)]
    pub legs: u32,
    /// Whether the ack milestone was recorded.
    #[serde(default)]
    pub acked: bool,
    /// Whether the failed milestone was recorded.
    #[serde(default)]
    pub failed: bool,
    /// Whether the closed milestone was recorded.
    #[serde(default)]
    pub closed: bool,
    /// Failed attempts in a row.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// When the sweep tries again after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// The last failure's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl JobSync {
    /// The retry delay after `failures` failures in a row.
    pub fn backoff(failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(16);
        JOB_RETRY_MIN
            .saturating_mul(1u32 << shift)
            .min(JOB_RETRY_MAX)
    }
}

/// One call owed to the job system, with the cursor it leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobItem {
    /// A text for the message log.
    Message(JobMessage),
    /// A milestone for the job record.
    Milestone(Milestone),
}

impl JobItem {
    /// The idempotency key.
    pub fn key(&self) -> &str {
        match self {
            JobItem::Message(m) => &m.key,
            JobItem::Milestone(m) => &m.key,
        }
    }
}

/// Everything a dispatch owes its job, in order, each item with the cursor
/// reached once it (and everything before it) is recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobWork {
    /// Whether `resolve` must be asked first.
    pub resolve: bool,
    /// The items and the cursor after each.
    pub items: Vec<(JobItem, JobSync)>,
    /// The cursor once every item is recorded (it also passes entries that
    /// need no call, such as texts that were never sent).
    pub end: JobSync,
}

impl JobWork {
    /// Whether nothing is owed.
    pub fn is_empty(&self) -> bool {
        !self.resolve && self.items.is_empty()
    }
}

/// Whether a leg's text went out (or may have).
fn was_sent(leg: &Leg) -> bool {
    leg.sid.is_some() || leg.status == DeliveryStatus::Unknown
}

/// Works out what `d` owes its job beyond `d.job_sync()`.
pub(crate) fn pending_work(d: &Dispatch) -> JobWork {
    let start = d.job_sync().cloned().unwrap_or_default();
    if !start.resolved {
        return JobWork {
            resolve: true,
            items: Vec::new(),
            end: start,
        };
    }
    let mut work = JobWork {
        resolve: false,
        items: Vec::new(),
        end: start.clone(),
    };
    if d.job_id().is_none() {
        return work;
    }
    let mut cur = start;
    let thread = d.thread();
    let legs = d.legs();
    // Merge received texts and settled legs by time; a pending leg holds
    // back the legs after it (their order matters to the log), not the
    // received texts.
    loop {
        let next_in = thread.get(cur.thread as usize);
        let next_leg = legs
            .get(cur.legs as usize)
            .filter(|l| l.status != DeliveryStatus::Pending);
        let take_leg = match (next_in, next_leg) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            // A leg created before the next thread entry existed comes
            // first; records without that order fall back to time.
            (Some(e), Some(l)) => match l.after_thread {
                Some(after) => after <= cur.thread,
                None => l.created_at < e.at,
            },
        };
        if take_leg {
            let leg = legs[cur.legs as usize].clone();
            cur.legs += 1;
            if !was_sent(&leg) {
                continue;
            }
            if let Purpose::Forward { round, level } = leg.purpose {
                let first_of_step = !legs[..leg.index as usize]
                    .iter()
                    .any(|l| l.purpose == leg.purpose && was_sent(l));
                if first_of_step {
                    let kind = if round == 0 && level == 0 {
                        MilestoneKind::Forwarded
                    } else {
                        MilestoneKind::Escalated
                    };
                    let m = Milestone {
                        key: format!("{}:{}:{round}:{level}", d.id(), kind_name(kind)),
                        dispatch: d.id(),
                        kind,
                        at: leg.sent_at.unwrap_or(leg.updated_at),
                        round: Some(round),
                        level: Some(level),
                        to: Some(leg.to),
                        by: None,
                        via: None,
                    };
                    work.items.push((JobItem::Milestone(m), cur.clone()));
                }
            }
            let message = outbound_message(d, &leg);
            work.items.push((JobItem::Message(message), cur.clone()));
        } else {
            let idx = cur.thread as usize;
            let e = &thread[idx];
            cur.thread += 1;
            let (Direction::Inbound, Some(sid), Actor::Phone(from)) =
                (e.direction, e.sid.as_ref(), &e.from)
            else {
                continue;
            };
            let origin = if *from == d.customer() {
                Origin::Customer
            } else {
                Origin::Dispatcher
            };
            let message = JobMessage {
                key: format!("in:{sid}"),
                dispatch: d.id(),
                tag: d.tag(),
                direction: Direction::Inbound,
                origin,
                author: None,
                from: *from,
                to: d.line(),
                body: e.body.clone(),
                media: e.media.clone(),
                sid: Some(sid.clone()),
                purpose: None,
                at: e.at,
            };
            work.items.push((JobItem::Message(message), cur.clone()));
        }
    }
    if let Some(ack) = d.ack()
        && !cur.acked
    {
        cur.acked = true;
        let m = Milestone {
            key: format!("{}:acked", d.id()),
            dispatch: d.id(),
            kind: MilestoneKind::Acked,
            at: ack.at,
            round: None,
            level: ack.level,
            to: None,
            by: Some(ack.by.clone()),
            via: Some(ack.via),
        };
        work.items.push((JobItem::Milestone(m), cur.clone()));
    }
    if d.state() == State::Failed && !cur.failed {
        cur.failed = true;
        let at = d
            .events()
            .iter()
            .rev()
            .find(|e| matches!(e.kind, crate::EventKind::Exhausted))
            .map_or(d.updated_at(), |e| e.at);
        let m = terminal(d, MilestoneKind::Failed, at, None);
        work.items.push((JobItem::Milestone(m), cur.clone()));
    }
    if let Some(at) = d.closed_at()
        && !cur.closed
    {
        cur.closed = true;
        let by = d.events().iter().rev().find_map(|e| match &e.kind {
            crate::EventKind::Closed { by } => Some(by.clone()),
            _ => None,
        });
        let m = terminal(d, MilestoneKind::Closed, at, by);
        work.items.push((JobItem::Milestone(m), cur.clone()));
    }
    work.end = cur;
    work
}

fn terminal(d: &Dispatch, kind: MilestoneKind, at: Timestamp, by: Option<Actor>) -> Milestone {
    Milestone {
        key: format!("{}:{}", d.id(), kind_name(kind)),
        dispatch: d.id(),
        kind,
        at,
        round: None,
        level: None,
        to: None,
        by,
        via: None,
    }
}

fn kind_name(kind: MilestoneKind) -> &'static str {
    match kind {
        MilestoneKind::Forwarded => "forwarded",
        MilestoneKind::Escalated => "escalated",
        MilestoneKind::Acked => "acked",
        MilestoneKind::Failed => "failed",
        MilestoneKind::Closed => "closed",
    }
}

fn outbound_message(d: &Dispatch, leg: &Leg) -> JobMessage {
    let (origin, author) = match leg.purpose {
        Purpose::Reply => {
            let by = d
                .thread()
                .iter()
                .find(|e| e.direction == Direction::Outbound && e.leg == Some(leg.index))
                .map(|e| e.from.clone());
            match by {
                Some(Actor::Operator(name)) => (Origin::Dispatcher, Some(Actor::Operator(name))),
                _ => (Origin::Dispatcher, None),
            }
        }
        Purpose::Forward { .. } | Purpose::FollowUp | Purpose::Notice => (Origin::Relay, None),
    };
    JobMessage {
        key: format!("out:{}:{}", d.id(), leg.index),
        dispatch: d.id(),
        tag: d.tag(),
        direction: Direction::Outbound,
        origin,
        author,
        from: d.line(),
        to: leg.to,
        body: leg.body.clone(),
        media: Vec::new(),
        sid: leg.sid.clone(),
        purpose: Some(leg.purpose),
        at: leg.sent_at.unwrap_or(leg.created_at),
    }
}

// ---------------------------------------------------------------------------
// MemoryJobs

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(JobSync::backoff(1), JOB_RETRY_MIN);
        assert_eq!(JobSync::backoff(2), JOB_RETRY_MIN * 2);
        assert_eq!(JobSync::backoff(3), JOB_RETRY_MIN * 4);
        assert_eq!(JobSync::backoff(40), JOB_RETRY_MAX);
        assert_eq!(JobSync::backoff(u32::MAX), JOB_RETRY_MAX);
    }
}
