//! What comes out of the relay: effects for the driver to carry out, and
//! events for dashboards and logs.

use serde::{Deserialize, Serialize};

use crate::carrier::{CarrierNumber, CarrierSkip, Via};
use crate::input::{
    Actor, Command, DeliveryStatus, ErrorClass, RouteReason, SendErrorKind, SkipReason,
};
use crate::record::Purpose;
use crate::types::{DispatchId, JobId, PhoneNumber, ProviderMessageId, Tag, Timestamp};

/// Something the driver must do after it saved a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// Send one text. The leg is already saved as pending (the outbox).
    Send(OutboundMessage),
    /// Publish an event (it is also kept in the dispatch's history, but
    /// for the job sync's routine ones: see [`EventKind::JobSynced`]).
    Publish(RelayEvent),
    /// Record in the relay's [`crate::OptOuts`] that a number opted out
    /// (a send to it failed with [`crate::ErrorClass::OptedOut`]), so no
    /// dispatch texts it until it opts back in.
    OptOut {
        /// The number.
        number: PhoneNumber,
        /// When the failure was learnt.
        at: Timestamp,
    },
}

/// One text to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMessage {
    /// The dispatch it belongs to.
    pub dispatch: DispatchId,
    /// The leg's index in the dispatch.
    pub leg: u32,
    /// The recipient.
    pub to: PhoneNumber,
    /// The business line. A carrier sends from the line's number on it
    /// (see `routes`).
    pub from: PhoneNumber,
    /// The text, within [`crate::MAX_BODY_CHARS`].
    pub body: String,
    /// How long the provider may keep trying before giving up, in seconds
    /// (so a stale escalation text fails instead of arriving late). `None`
    /// for the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity_secs: Option<u32>,
    /// The carriers that may send it, in order, each with the number it
    /// sends from (the policy's [`crate::Policy::carriers`]; for a reply to
    /// the customer only those whose number is the business line). Empty:
    /// any carrier, from `from`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<CarrierNumber>,
    /// Carriers that must not send it: they already failed this text
    /// carrier-wide (a delivery report said so).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub avoid: Vec<String>,
}

/// A relay event: every transition publishes at least one, and keeps it
/// in the dispatch's history (but for the job sync's routine ones: see
/// [`EventKind::JobSynced`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayEvent {
    /// When it happened.
    pub at: Timestamp,
    /// The dispatch.
    pub dispatch: DispatchId,
    /// Its tag.
    pub tag: Tag,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Why the relay moved to another level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationReason {
    /// Nobody acknowledged within the level's timeout.
    Timeout,
    /// Every text of the level failed to deliver.
    DeliveryFailed,
    /// A dispatcher texted `PASS`.
    Pass,
    /// An operator escalated from the dashboard or the console
    /// ([`crate::DashboardAction::Escalate`]).
    Operator,
    /// The level had nobody who could be texted.
    NoReachableTarget,
}

/// What happened, in an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A customer's text opened the dispatch.
    Opened {
        /// The customer.
        customer: PhoneNumber,
        /// The business line.
        line: PhoneNumber,
        /// The inbound message id.
        sid: ProviderMessageId,
    },
    /// A further customer text joined the dispatch.
    CustomerText {
        /// The inbound message id.
        sid: ProviderMessageId,
    },
    /// The dispatch reached a level and its targets were texted.
    Forwarded {
        /// The round (0-based).
        round: u32,
        /// The level (0-based).
        level: u32,
        /// Who was texted.
        to: Vec<PhoneNumber>,
    },
    /// The dispatch moved past a level.
    Escalated {
        /// The level left.
        from_level: u32,
        /// Why.
        reason: EscalationReason,
        /// Who asked for it ([`EscalationReason::Operator`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<Actor>,
    },
    /// The chain starts over (policy `repeat`).
    Repeated {
        /// The new round (0-based).
        round: u32,
    },
    /// A level was skipped because nobody in it could be texted.
    LevelSkipped {
        /// The round.
        round: u32,
        /// The level.
        level: u32,
    },
    /// Every level of every round was tried without an ack.
    Exhausted,
    /// Someone acknowledged.
    Acked {
        /// Who.
        by: Actor,
        /// The level of the dispatcher who acked, if a dispatcher did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        level: Option<u32>,
    },
    /// A dispatcher's text was routed to this dispatch.
    DispatcherText {
        /// Who.
        from: PhoneNumber,
        /// How it was routed.
        route: RouteReason,
        /// The command in it, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<Command>,
    },
    /// A reply was queued to the customer.
    Replied {
        /// Who wrote it.
        by: Actor,
    },
    /// A text was accepted by the provider.
    Sent {
        /// The leg.
        leg: u32,
        /// The provider's id.
        sid: ProviderMessageId,
        /// The carrier and number it went through, when the provider said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<Via>,
        /// Why the text was sent (the leg's purpose); absent in events
        /// recorded before it was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purpose: Option<Purpose>,
    },
    /// A carrier was passed over for a leg: it failed carrier-wide (or
    /// was cooling off) and the leg went on to the next carrier.
    CarrierSkipped {
        /// The leg.
        leg: u32,
        /// The carrier, why, and until when it is degraded.
        #[serde(flatten)]
        skip: CarrierSkip,
    },
    /// Every carrier that may send the leg failed carrier-wide: it waits
    /// (retried with backoff, never given up) and the dispatch holds; its
    /// level's timeout starts only once the forward is sent.
    CarriersDown {
        /// The leg.
        leg: u32,
        /// The last carrier's error.
        kind: SendErrorKind,
        /// Its code.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u32>,
        /// When the leg is tried again.
        retry_at: Timestamp,
    },
    /// A carrier sent a leg after every carrier was down: the hold ends.
    CarriersRecovered {
        /// The leg.
        leg: u32,
        /// The carrier and number it went through.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<Via>,
    },
    /// A send failed.
    SendFailed {
        /// The leg.
        leg: u32,
        /// The failure's kind.
        kind: SendErrorKind,
        /// The provider's code.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u32>,
        /// Whether it will be retried.
        will_retry: bool,
        /// Why the text was sent (the leg's purpose); absent in events
        /// recorded before it was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purpose: Option<Purpose>,
    },
    /// A delivery report moved a leg forward.
    Delivery {
        /// The leg.
        leg: u32,
        /// Its new status.
        status: DeliveryStatus,
        /// The provider's error code.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u32>,
        /// The error's class.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class: Option<ErrorClass>,
    },
    /// A number is not texted again in this dispatch.
    Unreachable {
        /// The number.
        number: PhoneNumber,
    },
    /// Something was ignored, and why (a command that no longer applies).
    Ignored {
        /// Why.
        reason: String,
    },
    /// The dispatch was closed.
    Closed {
        /// By whom.
        by: Actor,
    },
    /// No level can be texted now: the dispatch waits for a level's next
    /// on-duty window, then texts it (behaviour B7).
    Holding {
        /// The round it will text.
        round: u32,
        /// The level it will text.
        level: u32,
        /// When the window opens.
        until: Timestamp,
    },
    /// A level was passed over because every reachable target in it was
    /// off duty.
    LevelOffDuty {
        /// The round.
        round: u32,
        /// The level.
        level: u32,
        /// When it is next on duty, if ever.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        opens_at: Option<Timestamp>,
    },
    /// A number opted out of texts: it is not texted again until it opts
    /// back in (behaviour B8).
    OptedOut {
        /// The number.
        number: PhoneNumber,
        /// The provider's error code, when a send failed with an opt-out
        /// error ([`crate::ErrorClass::OptedOut`]); none when the number
        /// texted `STOP` (or its code was not given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<u32>,
    },
    /// A number opted back in (`START`).
    OptedIn {
        /// The number.
        number: PhoneNumber,
    },
    /// A text was held back by a rate limit; it goes at `until`.
    Deferred {
        /// The leg.
        leg: u32,
        /// When.
        until: Timestamp,
    },
    /// A text was not sent, and why.
    Skipped {
        /// The leg.
        leg: u32,
        /// Its recipient.
        to: PhoneNumber,
        /// Why.
        reason: SkipReason,
        /// Why the text was sent (the leg's purpose); absent in events
        /// recorded before it was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        purpose: Option<Purpose>,
    },
    /// Delayed texts to one number were merged into one (throttle digest).
    Merged {
        /// The leg that carries them.
        into: u32,
        /// The legs merged into it.
        legs: Vec<u32>,
    },
    /// The dispatch was linked to a job of the host's job system.
    JobLinked {
        /// The job.
        job: JobId,
    },
    /// A call to the host's job system failed; the relay retries it.
    /// Every failure is published; the 1st, 2nd, 4th, 8th... in a row are
    /// also kept in the dispatch's history.
    JobSyncFailed {
        /// What failed.
        error: String,
        /// Failures in a row.
        failures: u32,
        /// When the sweep tries again.
        retry_at: Timestamp,
    },
    /// The job system took what it was owed after failing before.
    JobSyncRecovered {
        /// How many attempts had failed.
        failures: u32,
    },
    /// The dispatch's texts and milestones are kept in sync with the
    /// host's job system from now on.
    JobSyncEnabled,
    /// The job system took what it was owed. Published, not kept in the
    /// dispatch's history (the status's `job_sync` has the cursor).
    JobSynced {
        /// How many texts and milestones it took.
        recorded: u32,
    },
    /// No job system is wired in: the sync owed waits for a relay with
    /// one. Published, not kept in the dispatch's history.
    JobSyncPaused,
}

impl EventKind {
    /// The event's type name, as in its JSON `type` field.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Opened { .. } => "opened",
            EventKind::CustomerText { .. } => "customer_text",
            EventKind::Forwarded { .. } => "forwarded",
            EventKind::Escalated { .. } => "escalated",
            EventKind::Repeated { .. } => "repeated",
            EventKind::LevelSkipped { .. } => "level_skipped",
            EventKind::Exhausted => "exhausted",
            EventKind::Acked { .. } => "acked",
            EventKind::DispatcherText { .. } => "dispatcher_text",
            EventKind::Replied { .. } => "replied",
            EventKind::Sent { .. } => "sent",
            EventKind::SendFailed { .. } => "send_failed",
            EventKind::CarrierSkipped { .. } => "carrier_skipped",
            EventKind::CarriersDown { .. } => "carriers_down",
            EventKind::CarriersRecovered { .. } => "carriers_recovered",
            EventKind::Delivery { .. } => "delivery",
            EventKind::Unreachable { .. } => "unreachable",
            EventKind::Ignored { .. } => "ignored",
            EventKind::Closed { .. } => "closed",
            EventKind::Holding { .. } => "holding",
            EventKind::LevelOffDuty { .. } => "level_off_duty",
            EventKind::OptedOut { .. } => "opted_out",
            EventKind::OptedIn { .. } => "opted_in",
            EventKind::Deferred { .. } => "deferred",
            EventKind::Skipped { .. } => "skipped",
            EventKind::Merged { .. } => "merged",
            EventKind::JobLinked { .. } => "job_linked",
            EventKind::JobSyncFailed { .. } => "job_sync_failed",
            EventKind::JobSyncRecovered { .. } => "job_sync_recovered",
            EventKind::JobSyncEnabled => "job_sync_enabled",
            EventKind::JobSynced { .. } => "job_synced",
            EventKind::JobSyncPaused => "job_sync_paused",
        }
    }
}
