//! The status JSON of a dispatch (behaviour B9), compatible with the QDN
//! dashboard's fields.

use serde::{Deserialize, Serialize};

use crate::carrier::CarrierHold;
use crate::dispatch::{Dispatch, HistoryPage};
use crate::event::RelayEvent;
use crate::input::Actor;
use crate::record::{Ack, Leg, Purpose, State, ThreadEntry};
use crate::types::{DispatchId, JobId, PhoneNumber, ProviderMessageId, Tag, Timestamp};

/// The dashboard's status values, under the seed's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalStatus {
    /// With level 0 (the primary), not acknowledged.
    Delivered,
    /// Escalated past level 0, not acknowledged.
    BackupTriggered,
    /// Someone acknowledged (a closed dispatch keeps this).
    Acked,
    /// Every level of every round was tried without an ack.
    Failed,
}

/// A dispatch as JSON: the seed's fields under their seed names, then the
/// richer view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchStatus {
    /// The first inbound message id.
    pub message_id: Option<ProviderMessageId>,
    /// The customer.
    pub customer_phone: PhoneNumber,
    /// The first customer text.
    pub body: String,
    /// When the first forward to level 0 was made.
    pub forwarded_to_primary_at: Option<Timestamp>,
    /// When a level-0 dispatcher acknowledged (only then).
    pub primary_ack_at: Option<Timestamp>,
    /// When the first forward past level 0 was made.
    pub forwarded_to_backup_at: Option<Timestamp>,
    /// The dashboard's status.
    pub final_status: FinalStatus,

    /// The dispatch id.
    pub dispatch_id: DispatchId,
    /// Its tag.
    pub tag: Tag,
    /// The host's job id, if any.
    pub job_id: Option<JobId>,
    /// How far the host's job system is up to date (absent without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_sync: Option<JobSyncStatus>,
    /// When found by job id: the job's other dispatches, newest first
    /// (filled by the caller that looked it up, see
    /// [`DispatchStatus::with_job_dispatches`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job_dispatches: Vec<JobDispatchLink>,
    /// The business line.
    pub line: PhoneNumber,
    /// The richer state: `open`, `acked`, `closed`, `failed`.
    pub state: State,
    /// The current round.
    pub round: u32,
    /// The current level.
    pub level: u32,
    /// When the current level times out, while open.
    pub level_deadline: Option<Timestamp>,
    /// While open and waiting for a level's on-duty window: when it opens
    /// and the level is texted (behaviour B7).
    #[serde(default)]
    pub holding_until: Option<Timestamp>,
    /// While every carrier that may send one of its texts is down: since
    /// when and the last error (the text waits and is retried; a forward's
    /// level timeout starts once it is sent). Each leg's `via` names the
    /// carrier and number it went through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier_hold: Option<CarrierHold>,
    /// When anything is next due.
    pub next_deadline: Option<Timestamp>,
    /// When it opened.
    pub opened_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// Who acknowledged, when and how.
    pub ack: Option<Ack>,
    /// When it was closed.
    pub closed_at: Option<Timestamp>,
    /// Numbers not texted again in this dispatch.
    pub unreachable: Vec<PhoneNumber>,
    /// Numbers that opted out (texted STOP): not texted until they opt
    /// back in (behaviour B8). Skipped texts say why in `legs[].skipped`.
    #[serde(default)]
    pub opted_out: Vec<PhoneNumber>,
    /// Every outbound text and its delivery (from index `legs_from` on,
    /// when the status was made without the dispatch's history).
    pub legs: Vec<Leg>,
    /// The conversation (from position `thread_from` on, likewise).
    pub thread: Vec<ThreadEntry>,
    /// Its events (the most recent, likewise).
    pub events: Vec<RelayEvent>,
    /// The position of the first entry of `thread`: 0 when it is whole.
    #[serde(default)]
    pub thread_from: u32,
    /// The index of the first leg of `legs`: 0 when they are all there.
    #[serde(default)]
    pub legs_from: u32,
    /// The stored version.
    pub version: u64,
}

/// The state of a dispatch's sync with the host's job system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSyncStatus {
    /// Whether the job system was asked which job the dispatch belongs to.
    pub resolved: bool,
    /// Texts and milestones not yet recorded on the job.
    pub owed: usize,
    /// Failed attempts in a row.
    pub failures: u32,
    /// The last failure, while failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next attempt is due, if one is owed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
}

/// Another dispatch of the same job, for a status looked up by job id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDispatchLink {
    /// The dispatch id (`GET /sms/dispatch-status/{dispatch_id}` reads it).
    pub dispatch_id: DispatchId,
    /// Its tag.
    pub tag: Tag,
    /// Its state.
    pub state: State,
    /// When it opened.
    pub opened_at: Timestamp,
}

impl DispatchStatus {
    /// Adds links to the other dispatches of the same job (`others` may
    /// include this one; it is left out).
    pub fn with_job_dispatches(mut self, others: &[Dispatch]) -> Self {
        self.job_dispatches = others
            .iter()
            .filter(|d| d.id() != self.dispatch_id)
            .map(|d| JobDispatchLink {
                dispatch_id: d.id(),
                tag: d.tag(),
                state: d.state(),
                opened_at: d.opened_at(),
            })
            .collect();
        self
    }
}

impl Dispatch {
    /// The dashboard's status value (see [`FinalStatus`]).
    pub fn final_status(&self) -> FinalStatus {
        if self.ack().is_some() {
            FinalStatus::Acked
        } else if self.state() == State::Failed {
            FinalStatus::Failed
        } else if self.forwarded_past_primary_at().is_some()
            || (self.round(), self.level()) != (0, 0)
        {
            FinalStatus::BackupTriggered
        } else {
            FinalStatus::Delivered
        }
    }

    fn first_forward_at(&self, primary: bool) -> Option<Timestamp> {
        let h = self.history();
        let moved = if primary {
            h.primary_forward_at
        } else {
            h.backup_forward_at
        };
        self.legs()
            .iter()
            .filter(|l| match l.purpose {
                Purpose::Forward { round, level } => ((round, level) == (0, 0)) == primary,
                _ => false,
            })
            .map(|l| l.created_at)
            .chain(moved)
            .min()
    }

    fn forwarded_past_primary_at(&self) -> Option<Timestamp> {
        self.first_forward_at(false)
    }

    /// The status JSON from the record alone: the thread, legs and events
    /// it keeps (see [`DispatchStatus::thread_from`]).
    pub fn status(&self) -> DispatchStatus {
        self.status_with(&[])
    }

    /// The status JSON with the entries that moved out of the record
    /// (what [`crate::Store::history`] returns for it, in order): whole
    /// when `pages` hold at least this version's [`crate::History::pages`],
    /// else as [`Dispatch::status`].
    pub fn status_with(&self, pages: &[HistoryPage]) -> DispatchStatus {
        let h = self.history();
        // Pages written after this version are left out: they hold entries
        // this version still has.
        let whole = pages.len() >= h.pages as usize;
        let (thread_from, legs_from) = if whole { (0, 0) } else { (h.thread, h.legs) };
        let pages = if whole {
            &pages[..h.pages as usize]
        } else {
            &[]
        };
        let mut thread = Vec::with_capacity(
            pages.iter().map(|p| p.thread.len()).sum::<usize>() + self.thread().len(),
        );
        let mut legs = Vec::with_capacity(
            pages.iter().map(|p| p.legs.len()).sum::<usize>() + self.legs().len(),
        );
        let mut events = Vec::with_capacity(
            pages.iter().map(|p| p.events.len()).sum::<usize>() + self.events().len(),
        );
        for p in pages {
            thread.extend_from_slice(&p.thread);
            legs.extend_from_slice(&p.legs);
            events.extend_from_slice(&p.events);
        }
        thread.extend_from_slice(self.thread());
        legs.extend_from_slice(self.legs());
        events.extend_from_slice(self.events());
        let customer = Actor::Phone(self.customer());
        let (message_id, body) = match &h.first_text {
            Some((sid, body)) => (Some(sid.clone()), body.clone()),
            None => thread
                .iter()
                .find(|e| e.from == customer && e.sid.is_some())
                .map(|e| (e.sid.clone(), e.body.clone()))
                .unwrap_or_default(),
        };
        DispatchStatus {
            message_id,
            customer_phone: self.customer(),
            body,
            forwarded_to_primary_at: self.first_forward_at(true),
            primary_ack_at: self.ack().filter(|a| a.level == Some(0)).map(|a| a.at),
            forwarded_to_backup_at: self.forwarded_past_primary_at(),
            final_status: self.final_status(),
            dispatch_id: self.id(),
            tag: self.tag(),
            job_id: self.job_id().cloned(),
            job_sync: self.job_sync().map(|j| JobSyncStatus {
                resolved: j.resolved,
                owed: self.job_work().items.len() + usize::from(!j.resolved),
                failures: j.failures,
                last_error: j.last_error.clone(),
                retry_at: j.retry_at,
            }),
            job_dispatches: Vec::new(),
            line: self.line(),
            state: self.state(),
            round: self.round(),
            level: self.level(),
            level_deadline: self.level_deadline(),
            holding_until: self.holding_until(),
            carrier_hold: self.carrier_hold().cloned(),
            next_deadline: self.next_deadline(),
            opened_at: self.opened_at(),
            updated_at: self.updated_at(),
            ack: self.ack().cloned(),
            closed_at: self.closed_at(),
            unreachable: self.unreachable().to_vec(),
            opted_out: self.opted_out().to_vec(),
            legs,
            thread,
            events,
            thread_from,
            legs_from,
            version: self.version(),
        }
    }
}
