//! The host application's job system: the optional [`Jobs`] port and
//! what it is given ([`JobMessage`], [`Milestone`]). How the relay drives it
//! is on the trait.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::input::{Actor, Media};
use crate::record::{AckVia, Direction, Purpose};
use crate::types::{DispatchId, JobId, PhoneNumber, ProviderMessageId, Tag, Timestamp};

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
    /// ([`crate::DeliveryStatus::Unknown`]).
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

/// The host application's job system (optional: [`crate::RelayBuilder::jobs`]).
///
/// A relay embedded in a job system (the QDN dashboard's `qdn-data-crud`
/// in the original design) tells that system what happens to each
/// customer's texts: which job a conversation belongs to, every text in and
/// out in the job's message log, and the dispatch's milestones (forwarded,
/// escalated, acked, failed, closed) on the job record.
///
/// # How the relay drives it
///
/// After every change to a dispatch (and on every sweep while something is
/// still owed), the driver:
///
/// 1. asks [`Jobs::resolve`] once which job the dispatch belongs to (the
///    answer, a job or none, is saved on the dispatch);
/// 2. appends, in order, every text received or sent since the last
///    successful sync with [`Jobs::append_message`], and records the new
///    milestones with [`Jobs::milestone`];
/// 3. saves how far it got (a per-dispatch cursor, [`crate::JobSync`]).
///
/// Jobs calls happen after the dispatch is saved and its texts are sent,
/// so a slow or failing job system never delays a forward or an
/// escalation, and never loses a text: a failed call is retried by
/// [`crate::Relay::sweep`] with backoff ([`crate::JOB_RETRY_MIN`] doubling up to
/// [`crate::JOB_RETRY_MAX`]), and the failure shows in the dispatch's status and
/// events until it succeeds.
///
/// Calls are *at least once*: a crash between a successful call and the
/// cursor's save, or two relay instances syncing the same dispatch at
/// once, repeats a call. Every message and milestone carries a stable
/// idempotency `key`; an implementation makes the effect *exactly once* by
/// ignoring a key it has already recorded for the job (see the contract on
/// [`Jobs`]).
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
