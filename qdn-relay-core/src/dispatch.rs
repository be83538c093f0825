//! The dispatch: one customer conversation being routed, and the pure state
//! machine that moves it.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{Effect, EscalationReason, EventKind, OutboundMessage, RelayEvent};
use crate::input::{
    Actor, Command, DashboardAction, DeliveryError, DeliveryReport, DeliveryStatus, ErrorClass,
    InboundText, Input, Media, RouteReason, SendError, SendErrorKind, fit_body, fit_chars,
};
use crate::jobs::{JobSync, JobWork};
use crate::policy::{OverLimit, Policy, WhenClosed};
use crate::safety::OPT_OUT_ERROR_CODES;
use crate::types::{DispatchId, JobId, PhoneNumber, ProviderMessageId, Tag, Timestamp, splitmix};

/// How long a pending send may stay unanswered before a sweep treats its
/// driver as crashed and sends it again. Provider calls must time out well
/// within it.
pub const OUTBOX_GRACE: Duration = Duration::from_secs(60);

/// How long after a change a dispatch waits for the driver to sync it to
/// the host's job system before a sweep does it (a crash in between).
pub const JOB_SYNC_GRACE: Duration = Duration::from_secs(60);

/// How many times one text is tried before the relay gives up on it.
pub const MAX_SEND_ATTEMPTS: u32 = 5;

/// How many events a dispatch keeps in its own history (older ones are
/// dropped from the dispatch, never from the event sink).
pub const MAX_KEPT_EVENTS: usize = 256;

/// Where a dispatch is in its life. It only moves forward:
/// `open → acked → closed`, or `open → failed`, or `open → closed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Escalating: nobody has acknowledged yet.
    Open,
    /// Someone acknowledged; escalation stopped. Replies still flow.
    Acked,
    /// Closed by a dispatcher (`DONE`) or the dashboard.
    Closed,
    /// Every level of every round was tried without an ack.
    Failed,
}

impl State {
    /// Open for texts: `Open` or `Acked`.
    pub fn is_open(self) -> bool {
        matches!(self, State::Open | State::Acked)
    }

    /// Its name in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Acked => "acked",
            State::Closed => "closed",
            State::Failed => "failed",
        }
    }
}

/// Why an outbound text was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Purpose {
    /// An escalation step: the dispatch reached `level` in `round`.
    Forward {
        /// The round (0-based).
        round: u32,
        /// The level (0-based).
        level: u32,
    },
    /// A later customer text passed on to whoever has the dispatch.
    FollowUp,
    /// A reply to the customer.
    Reply,
    /// A note to a dispatcher (where their text went, why a command was
    /// ignored).
    Notice,
}

/// One outbound text and its delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    /// Its index in the dispatch.
    pub index: u32,
    /// The recipient.
    pub to: PhoneNumber,
    /// Why it was sent.
    pub purpose: Purpose,
    /// The text.
    pub body: String,
    /// When the relay decided to send it.
    pub created_at: Timestamp,
    /// How many times it was handed to a provider.
    pub attempts: u32,
    /// Its delivery status.
    pub status: DeliveryStatus,
    /// While pending: when the outbox (re)sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// The provider's id once accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<ProviderMessageId>,
    /// When the provider accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Timestamp>,
    /// The last status change.
    pub updated_at: Timestamp,
    /// The provider's error code, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    /// The error's class, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// Why the relay did not send it (status [`DeliveryStatus::Skipped`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<SkipReason>,
    /// How many times a rate limit held it back.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferrals: u32,
    /// How many thread entries existed when it was created: its place in
    /// the conversation (absent in records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_thread: Option<u32>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why the relay did not send a text it had queued (behaviours B7, B8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SkipReason {
    /// The recipient opted out (texted `STOP`, or a send failed with an
    /// opt-out error); nothing is sent to them until they text `START`.
    OptedOut,
    /// The recipient cannot receive texts (an earlier failure said so).
    Unreachable,
    /// A forward held back or re-sent after its level went off duty.
    OffDuty,
    /// Over a rate limit with the policy's `over_limit = "drop"`.
    OverLimit,
    /// An identical text went to the same number within the policy's
    /// repeat-suppression window (an auto-reply loop).
    Repeat,
    /// Merged into another delayed text to the same number (digest).
    Merged {
        /// The leg that carried it.
        into: u32,
    },
    /// The recipient is a business or relay line (a loop).
    Loop,
    /// Held back by a rate limit until the dispatch had moved on (acked,
    /// closed, or escalated past the step it was for).
    Stale,
}

impl SkipReason {
    /// A phrase for notices and events: "{number} {phrase}".
    pub fn describe(self) -> &'static str {
        match self {
            SkipReason::OptedOut => {
                "opted out (texted STOP): nothing reaches them until they text START"
            }
            SkipReason::Unreachable => "cannot receive texts",
            SkipReason::OffDuty => "is off duty",
            SkipReason::OverLimit => "is over the rate limit",
            SkipReason::Repeat => "was sent the same text moments ago (repeat suppressed)",
            SkipReason::Merged { .. } => "gets it merged into another text",
            SkipReason::Loop => "is a relay line (a loop)",
            SkipReason::Stale => "no longer needs it",
        }
    }
}

/// Direction of a thread entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Received by the relay.
    Inbound,
    /// Sent by the relay.
    Outbound,
}

/// One message of the conversation: customer texts, dispatcher texts, and
/// replies to the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadEntry {
    /// When.
    pub at: Timestamp,
    /// In or out.
    pub direction: Direction,
    /// Who wrote it.
    pub from: Actor,
    /// The text.
    pub body: String,
    /// The inbound message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<ProviderMessageId>,
    /// The leg that carries it to the customer (replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leg: Option<u32>,
    /// Attached media.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<Media>,
}

/// How an ack came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckVia {
    /// A dispatcher replied to the customer.
    Reply,
    /// A dispatcher texted `ACK` (or `DONE`).
    Command,
    /// The dashboard.
    Dashboard,
}

/// Who acknowledged, when and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Who.
    pub by: Actor,
    /// When.
    pub at: Timestamp,
    /// How.
    pub via: AckVia,
    /// The policy level of the dispatcher who acked (none for the dashboard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
}

/// Why an input was refused. A refused input changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The dispatch is closed or failed.
    #[error("dispatch is {0}, not open")]
    NotOpen(&'static str),
    /// The text was sent to another business line.
    #[error("text to {got} does not belong to line {expected}")]
    WrongLine {
        /// The dispatch's line.
        expected: PhoneNumber,
        /// The text's.
        got: PhoneNumber,
    },
    /// A customer text from someone else.
    #[error("text from {0} is not from this dispatch's customer")]
    WrongCustomer(PhoneNumber),
    /// A dispatcher text from a number that is neither notified nor in the
    /// policy.
    #[error("{0} is not a dispatcher of this dispatch")]
    NotADispatcher(PhoneNumber),
    /// A send outcome for a leg that does not exist.
    #[error("dispatch has no leg {0}")]
    UnknownLeg(u32),
    /// A delivery report for a message this dispatch did not send.
    #[error("dispatch did not send message {0}")]
    UnknownMessage(ProviderMessageId),
    /// A reply with no text and no media.
    #[error("the reply is empty")]
    EmptyBody,
    /// A text from the business line to itself.
    #[error("text from the business line to itself")]
    Loop,
    /// The number cannot be texted (it opted out or is unreachable).
    #[error("{0} cannot receive texts (opted out or unreachable)")]
    Unreachable(PhoneNumber),
}

/// One customer conversation being routed through the escalation chain.
///
/// # Method taxonomy
///
/// - **Constructor**: [`Dispatch::open`] (a customer's first text).
/// - **Input**: [`Dispatch::handle`] with an [`Input`] and the current time.
///   It either refuses the input (an [`InputError`], nothing changed) or
///   applies it and returns the [`Effect`]s to carry out. An empty effect
///   list means nothing changed (a duplicate webhook, an early timeout):
///   there is nothing to save. Every change publishes at least one event.
/// - **Getters**: everything else; [`Dispatch::next_deadline`] is the
///   field stores index for the due query.
///
/// # Call order
///
/// After a transition, save the dispatch with its previous version as the
/// expected one, and only then carry out the effects (sends are already in
/// the outbox as pending legs). Feed what the provider answered back as
/// [`Input::SendOutcome`]. Call `handle(now, Input::Timeout)` at or after
/// [`Dispatch::next_deadline`]; calling it early, late or twice is safe: it
/// acts only on what is due at `now`.
///
/// The state machine never does I/O and never reads a clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatch {
    id: DispatchId,
    tag: Tag,
    line: PhoneNumber,
    customer: PhoneNumber,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job_id: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    job_sync: Option<Box<JobSync>>,
    policy: Arc<Policy>,
    opened_at: Timestamp,
    updated_at: Timestamp,
    state: State,
    round: u32,
    level: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    level_deadline: Option<Timestamp>,
    thread: Vec<ThreadEntry>,
    legs: Vec<Leg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ack: Option<Ack>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unreachable: Vec<PhoneNumber>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    opted_out: Vec<PhoneNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holding_until: Option<Timestamp>,
    events: Vec<RelayEvent>,
    #[serde(default)]
    events_dropped: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deadline: Option<Timestamp>,
    version: u64,
}

/// Collects effects during one transition.
struct Fx<'a> {
    out: &'a mut Vec<Effect>,
}

impl Dispatch {
    /// Opens a dispatch for a customer's first text and forwards it to the
    /// first reachable level.
    ///
    /// `id` and `tag` come from the driver (which makes the tag unique among
    /// open dispatches); `policy` is snapshotted into the dispatch.
    pub fn open(
        id: DispatchId,
        tag: Tag,
        policy: Arc<Policy>,
        text: InboundText,
        now: Timestamp,
    ) -> Result<(Dispatch, Vec<Effect>), InputError> {
        if text.from == text.to || policy.relay_lines().contains(&text.from) {
            return Err(InputError::Loop);
        }
        let mut d = Dispatch {
            id,
            tag,
            line: text.to,
            customer: text.from,
            job_id: None,
            job_sync: None,
            policy,
            opened_at: now,
            updated_at: now,
            state: State::Open,
            round: 0,
            level: 0,
            level_deadline: None,
            thread: Vec::with_capacity(1),
            legs: Vec::with_capacity(2),
            ack: None,
            closed_at: None,
            unreachable: Vec::new(),
            opted_out: Vec::new(),
            holding_until: None,
            events: Vec::with_capacity(4),
            events_dropped: 0,
            deadline: None,
            version: 0,
        };
        let mut out = Vec::with_capacity(3);
        let mut fx = Fx { out: &mut out };
        d.emit(
            now,
            &mut fx,
            EventKind::Opened {
                customer: text.from,
                line: text.to,
                sid: text.sid.clone(),
            },
        );
        d.thread.push(ThreadEntry {
            at: now,
            direction: Direction::Inbound,
            from: Actor::Phone(text.from),
            body: text.body,
            sid: Some(text.sid),
            leg: None,
            media: text.media,
        });
        d.enter_step(now, 0, 0, &mut fx);
        d.finish(now);
        Ok((d, out))
    }

    /// Applies one input at `now`. See the type's docs for the contract.
    pub fn handle(&mut self, now: Timestamp, input: Input) -> Result<Vec<Effect>, InputError> {
        let mut out = Vec::new();
        let mut fx = Fx { out: &mut out };
        match input {
            Input::CustomerText(t) => self.on_customer_text(now, t, &mut fx)?,
            Input::DispatcherText { text, route } => {
                self.on_dispatcher_text(now, text, route, &mut fx)?
            }
            Input::Delivery(r) => self.on_delivery(now, r, &mut fx)?,
            Input::LegDelivery { leg, report } => {
                self.on_leg_delivery(now, leg, report, &mut fx)?
            }
            Input::SendOutcome { leg, result } => {
                self.on_send_outcome(now, leg, result, &mut fx)?
            }
            Input::Dashboard(a) => self.on_dashboard(now, a, &mut fx)?,
            Input::Timeout => self.on_timeout(now, &mut fx),
            Input::SendDeferred { leg, until } => {
                self.on_send_deferred(now, leg, until, &mut fx)?
            }
            Input::SendBlocked { leg, reason } => {
                self.on_send_blocked(now, leg, reason, &mut fx)?
            }
            Input::OptOut(n) => self.on_opt_out(now, n, &mut fx)?,
            Input::OptIn(n) => self.on_opt_in(now, n, &mut fx)?,
        }
        if !out.is_empty() {
            self.finish(now);
        }
        Ok(out)
    }

    // ----- inputs -------------------------------------------------------

    fn on_customer_text(
        &mut self,
        now: Timestamp,
        t: InboundText,
        fx: &mut Fx<'_>,
    ) -> Result<(), InputError> {
        if self.has_inbound(&t.sid) {
            return Ok(());
        }
        if !self.state.is_open() {
            return Err(InputError::NotOpen(self.state.as_str()));
        }
        if t.to != self.line {
            return Err(InputError::WrongLine {
                expected: self.line,
                got: t.to,
            });
        }
        if t.from != self.customer {
            return Err(InputError::WrongCustomer(t.from));
        }
        self.emit(now, fx, EventKind::CustomerText { sid: t.sid.clone() });
        let body = self.forward_text(&t.body, &t.media);
        self.thread.push(ThreadEntry {
            at: now,
            direction: Direction::Inbound,
            from: Actor::Phone(t.from),
            body: t.body,
            sid: Some(t.sid),
            leg: None,
            media: t.media,
        });
        for to in self.current_holders(now) {
            self.new_leg(now, to, Purpose::FollowUp, body.clone(), fx);
        }
        Ok(())
    }

    fn on_dispatcher_text(
        &mut self,
        now: Timestamp,
        t: InboundText,
        route: RouteReason,
        fx: &mut Fx<'_>,
    ) -> Result<(), InputError> {
        if self.has_inbound(&t.sid) {
            return Ok(());
        }
        if !self.state.is_open() {
            return Err(InputError::NotOpen(self.state.as_str()));
        }
        if t.to != self.line {
            return Err(InputError::WrongLine {
                expected: self.line,
                got: t.to,
            });
        }
        let from = t.from;
        if from == self.line || from == self.customer {
            return Err(InputError::Loop);
        }
        if !self.was_notified(from) && !self.policy.is_target(from) {
            return Err(InputError::NotADispatcher(from));
        }
        let text = match Tag::strip_prefix(&t.body) {
            Some((tag, rest)) if tag == self.tag => rest.to_owned(),
            _ => t.body.clone(),
        };
        let command = Command::parse(&text);
        if command.is_none() && text.trim().is_empty() && t.media.is_empty() {
            return Err(InputError::EmptyBody);
        }
        self.emit(
            now,
            fx,
            EventKind::DispatcherText {
                from,
                route,
                command,
            },
        );
        self.thread.push(ThreadEntry {
            at: now,
            direction: Direction::Inbound,
            from: Actor::Phone(from),
            body: t.body,
            sid: Some(t.sid),
            leg: None,
            media: t.media.clone(),
        });
        let by = Actor::Phone(from);
        match command {
            Some(Command::Ack) => {
                if !self.record_ack(now, by, AckVia::Command, fx) {
                    self.ignored(now, fx, "already acknowledged");
                }
            }
            Some(Command::Pass) => {
                if self.state == State::Open {
                    self.escalate(now, EscalationReason::Pass, fx);
                } else {
                    self.ignored(now, fx, "PASS after acknowledgement");
                    let note = format!(
                        "[{} #{}] Already acknowledged; PASS ignored.",
                        self.policy.label(),
                        self.tag
                    );
                    self.new_leg(now, from, Purpose::Notice, note, fx);
                }
            }
            Some(Command::Done) => {
                self.record_ack(now, by.clone(), AckVia::Command, fx);
                self.close(now, by, fx);
            }
            None => {
                self.record_ack(now, by.clone(), AckVia::Reply, fx);
                let body = with_media(text.trim(), &t.media);
                self.reply(now, by, body, fx);
            }
        }
        if route == RouteReason::MostRecent {
            let note = format!(
                "[{}] Your text went to #{} ({}). Start a text with #TAG to choose another.",
                self.policy.label(),
                self.tag,
                self.customer
            );
            self.new_leg(now, from, Purpose::Notice, note, fx);
        }
        Ok(())
    }

    fn on_dashboard(
        &mut self,
        now: Timestamp,
        a: DashboardAction,
        fx: &mut Fx<'_>,
    ) -> Result<(), InputError> {
        if !self.state.is_open() {
            return Err(InputError::NotOpen(self.state.as_str()));
        }
        match a {
            DashboardAction::Ack { by } => {
                self.record_ack(now, Actor::Operator(by), AckVia::Dashboard, fx);
            }
            DashboardAction::Reply { by, body } => {
                if body.trim().is_empty() {
                    return Err(InputError::EmptyBody);
                }
                if self.why_not(self.customer).is_some() {
                    return Err(InputError::Unreachable(self.customer));
                }
                let by = Actor::Operator(by);
                self.record_ack(now, by.clone(), AckVia::Dashboard, fx);
                self.reply(now, by, body.trim().to_owned(), fx);
            }
            DashboardAction::Close { by } => self.close(now, Actor::Operator(by), fx),
        }
        Ok(())
    }

    fn on_delivery(
        &mut self,
        now: Timestamp,
        r: DeliveryReport,
        fx: &mut Fx<'_>,
    ) -> Result<(), InputError> {
        let i = self
            .legs
            .iter()
            .position(|l| l.sid.as_ref() == Some(&r.sid))
            .ok_or_else(|| InputError::UnknownMessage(r.sid.clone()))?;
        let leg = &mut self.legs[i];
        if leg.status.is_failure() || r.status.rank() <= leg.status.rank() {
            return Ok(()); // duplicate or out-of-order report: status only moves forward
        }
        leg.status = r.status;
        leg.retry_at = None;
        leg.updated_at = now;
        let (code, class) = match r.error {
            Some(DeliveryError { code, class }) if r.status.is_failure() => {
                leg.error_code = Some(code);
                leg.error_class = Some(class);
                (Some(code), Some(class))
            }
            _ => (None, None),
        };
        let index = leg.index;
        self.emit(
            now,
            fx,
            EventKind::Delivery {
                leg: index,
                status: r.status,
                code,
                class,
            },
        );
        if r.status.is_failure() {
            let unreachable = class == Some(ErrorClass::Unreachable);
            if unreachable && code.is_some_and(|c| OPT_OUT_ERROR_CODES.contains(&c)) {
                let to = self.legs[i].to;
                self.mark_opted_out(now, to, code, fx);
            }
            self.after_leg_failed(now, i, unreachable, fx);
        }
        Ok(())
    }

    /// A callback naming its leg: gives a leg still without a message id
    /// the report's (as if the provider's answer had arrived), then applies
    /// the report.
    fn on_leg_delivery(
        &mut self,
        now: Timestamp,
        leg: u32,
        r: DeliveryReport,
        fx: &mut Fx<'_>,
    ) -> Result<(), InputError> {
        if !self.legs.iter().any(|l| l.sid.as_ref() == Some(&r.sid)) {
            let l = self
                .legs
                .get_mut(leg as usize)
                .ok_or(InputError::UnknownLeg(leg))?;
            let early = l.sid.is_none()
                && matches!(l.status, DeliveryStatus::Pending | DeliveryStatus::Unknown);
            if !early {
                return Err(InputError::UnknownMessage(r.sid));
            }
            l.sid = Some(r.sid.clone());
            l.sent_at = Some(now);
            l.retry_at = None;
            l.updated_at = now;
            l.status = DeliveryStatus::Queued;
            self.emit(
                now,
                fx,
                EventKind::Sent {
                    leg,
                    sid: r.sid.clone(),
                },
            );
        }
        self.on_delivery(now, r, fx)
    }

    fn on_send_outcome(
        &mut self,
        now: Timestamp,
        leg: u32,
        result: Result<ProviderMessageId, SendError>,
        fx: &mut Fx<'_>,
    ) -> Result<(), InputError> {
        let i = leg as usize;
        let l = self.legs.get_mut(i).ok_or(InputError::UnknownLeg(leg))?;
        match result {
            Ok(sid) => {
                if l.sid.is_some() {
                    return Ok(());
                }
                l.sid = Some(sid.clone());
                l.sent_at = Some(now);
                l.retry_at = None;
                l.updated_at = now;
                if l.status.rank() < DeliveryStatus::Queued.rank() {
                    l.status = DeliveryStatus::Queued;
                }
                self.emit(now, fx, EventKind::Sent { leg, sid });
            }
            Err(e) => {
                if l.status != DeliveryStatus::Pending {
                    return Ok(());
                }
                l.updated_at = now;
                l.error_code = e.code;
                let will_retry =
                    e.kind == SendErrorKind::Retryable && l.attempts < MAX_SEND_ATTEMPTS;
                if will_retry {
                    let backoff = retry_backoff(self.id, leg, l.attempts, e.retry_after_ms);
                    l.retry_at = Some(now.plus(backoff));
                } else if e.kind == SendErrorKind::MaybeSent {
                    l.status = DeliveryStatus::Unknown;
                    l.retry_at = None;
                } else {
                    l.status = DeliveryStatus::Failed;
                    l.retry_at = None;
                    l.error_class = Some(match e.kind {
                        SendErrorKind::Unreachable => ErrorClass::Unreachable,
                        SendErrorKind::Filtered => ErrorClass::Filtered,
                        SendErrorKind::Config => ErrorClass::Config,
                        SendErrorKind::Retryable => ErrorClass::RetryLater,
                        _ => ErrorClass::Unknown,
                    });
                }
                let failed = l.status == DeliveryStatus::Failed;
                self.emit(
                    now,
                    fx,
                    EventKind::SendFailed {
                        leg,
                        kind: e.kind,
                        code: e.code,
                        will_retry,
                    },
                );
                if failed {
                    let unreachable = e.kind == SendErrorKind::Unreachable;
                    if unreachable && e.code.is_some_and(|c| OPT_OUT_ERROR_CODES.contains(&c)) {
                        let to = self.legs[i].to;
                        self.mark_opted_out(now, to, e.code, fx);
                    }
                    self.after_leg_failed(now, i, unreachable, fx);
                }
            }
        }
        Ok(())
    }

    fn on_timeout(&mut self, now: Timestamp, fx: &mut Fx<'_>) {
        for i in 0..self.legs.len() {
            let l = &self.legs[i];
            if l.status != DeliveryStatus::Pending || l.retry_at.is_none_or(|t| t > now) {
                continue;
            }
            if l.attempts >= MAX_SEND_ATTEMPTS || self.unreachable.contains(&l.to) {
                let l = &mut self.legs[i];
                l.status = DeliveryStatus::Failed;
                l.retry_at = None;
                l.updated_at = now;
                let leg = l.index;
                self.emit(
                    now,
                    fx,
                    EventKind::SendFailed {
                        leg,
                        kind: SendErrorKind::Retryable,
                        code: None,
                        will_retry: false,
                    },
                );
                self.after_leg_failed(now, i, false, fx);
            } else {
                if let Some(reason) = self.why_not_resend(now, i) {
                    self.skip_leg(now, i, reason, fx);
                    self.after_leg_failed(now, i, false, fx);
                    continue;
                }
                if self.legs[i].deferrals > 0
                    && self.policy.throttle().over_limit == OverLimit::Digest
                {
                    self.merge_into(now, i, fx);
                }
                let l = &mut self.legs[i];
                l.attempts += 1;
                l.retry_at = Some(now.plus(OUTBOX_GRACE));
                l.updated_at = now;
                let msg = self.outbound(i);
                fx.out.push(Effect::Send(msg));
            }
        }
        if self.state == State::Open && self.level_deadline.is_some_and(|t| t <= now) {
            if self.holding_until.is_some() {
                // The window the dispatch waited for opened: the same step.
                self.holding_until = None;
                self.enter_step(now, self.round, self.level, fx);
            } else {
                self.escalate(now, EscalationReason::Timeout, fx);
            }
        }
    }

    fn on_send_deferred(
        &mut self,
        now: Timestamp,
        leg: u32,
        until: Timestamp,
        fx: &mut Fx<'_>,
    ) -> Result<(), InputError> {
        let i = leg as usize;
        let l = self.legs.get(i).ok_or(InputError::UnknownLeg(leg))?;
        if l.status != DeliveryStatus::Pending {
            return Ok(());
        }
        if self.policy.throttle().over_limit == OverLimit::Drop && l.purpose != Purpose::Reply {
            self.skip_leg(now, i, SkipReason::OverLimit, fx);
            self.after_leg_failed(now, i, false, fx);
            return Ok(());
        }
        let until = until.max(now.plus(Duration::from_millis(1)));
        let l = &mut self.legs[i];
        // It was not handed to a provider: the attempt is given back.
        l.attempts = l.attempts.saturating_sub(1);
        l.deferrals += 1;
        l.retry_at = Some(until);
        l.updated_at = now;
        self.emit(now, fx, EventKind::Deferred { leg, until });
        Ok(())
    }

    fn on_send_blocked(
        &mut self,
        now: Timestamp,
        leg: u32,
        reason: SkipReason,
        fx: &mut Fx<'_>,
    ) -> Result<(), InputError> {
        let i = leg as usize;
        let l = self.legs.get(i).ok_or(InputError::UnknownLeg(leg))?;
        if l.status != DeliveryStatus::Pending {
            return Ok(());
        }
        let (to, purpose) = (l.to, l.purpose);
        if reason == SkipReason::OptedOut {
            self.mark_opted_out(now, to, None, fx);
        }
        self.skip_leg(now, i, reason, fx);
        // A dispatcher whose reply was refused is told so.
        let author = self.thread.iter().find_map(|e| match &e.from {
            Actor::Phone(p) if e.leg == Some(leg) => Some(*p),
            _ => None,
        });
        if let (Purpose::Reply, Some(dispatcher)) = (purpose, author) {
            let note = format!(
                "[{} #{}] Not sent: {} {}.",
                self.policy.label(),
                self.tag,
                to,
                reason.describe()
            );
            self.new_leg(now, dispatcher, Purpose::Notice, note, fx);
        }
        self.after_leg_failed(now, i, false, fx);
        Ok(())
    }

    fn on_opt_out(
        &mut self,
        now: Timestamp,
        n: PhoneNumber,
        fx: &mut Fx<'_>,
    ) -> Result<(), InputError> {
        if !self.state.is_open() {
            return Err(InputError::NotOpen(self.state.as_str()));
        }
        if self.opted_out.contains(&n) {
            return Ok(());
        }
        self.mark_opted_out(now, n, None, fx);
        if n == self.customer {
            let mut note = String::with_capacity(96);
            self.push_header(&mut note);
            note.push_str(": texted STOP. Replies cannot reach them until they text START.");
            for to in self.current_holders(now) {
                self.new_leg(now, to, Purpose::Notice, note.clone(), fx);
            }
        } else if self.state == State::Open && self.current_step_unreachable() {
            self.escalate(now, EscalationReason::NoReachableTarget, fx);
        }
        Ok(())
    }

    fn on_opt_in(
        &mut self,
        now: Timestamp,
        n: PhoneNumber,
        fx: &mut Fx<'_>,
    ) -> Result<(), InputError> {
        if !self.state.is_open() {
            return Err(InputError::NotOpen(self.state.as_str()));
        }
        let Some(pos) = self.opted_out.iter().position(|&o| o == n) else {
            return Ok(());
        };
        self.opted_out.remove(pos);
        self.emit(now, fx, EventKind::OptedIn { number: n });
        Ok(())
    }

    // ----- transitions ----------------------------------------------------

    /// Moves to `(round, level)`, skipping levels with nobody reachable,
    /// passing over levels that are off duty for the next one on duty (B7),
    /// repeating the chain per policy, failing past the last round. If
    /// nobody is on duty before the chain runs out, it holds instead: for
    /// the first off-duty level ([`WhenClosed::Hold`]) or for the one that
    /// comes on duty first ([`WhenClosed::Skip`]).
    fn enter_step(&mut self, now: Timestamp, round: u32, level: u32, fx: &mut Fx<'_>) {
        let policy = Arc::clone(&self.policy);
        self.holding_until = None;
        let (plan, mut passed) = self.plan_step(&policy, now, round, level);
        let plan = match plan {
            Plan::Exhausted { hold: Some(h) } => {
                // Nobody is on duty before the chain runs out: hold for a
                // window instead of failing.
                passed.truncate(h.events_before);
                Plan::Hold {
                    round: h.round,
                    level: h.level,
                    until: h.until,
                }
            }
            other => other,
        };
        for kind in passed {
            self.emit(now, fx, kind);
        }
        match plan {
            Plan::Exhausted { .. } => {
                self.state = State::Failed;
                self.level_deadline = None;
                self.emit(now, fx, EventKind::Exhausted);
            }
            Plan::Hold {
                round,
                level,
                until,
            } => {
                self.round = round;
                self.level = level;
                self.level_deadline = Some(until);
                self.holding_until = Some(until);
                self.emit(
                    now,
                    fx,
                    EventKind::Holding {
                        round,
                        level,
                        until,
                    },
                );
            }
            Plan::Forward {
                round,
                level,
                targets,
            } => {
                let spec = &policy.levels()[level as usize];
                self.round = round;
                self.level = level;
                self.level_deadline = Some(now.plus(spec.timeout));
                self.emit(
                    now,
                    fx,
                    EventKind::Forwarded {
                        round,
                        level,
                        to: targets.clone(),
                    },
                );
                let body = self.escalation_body();
                for to in targets {
                    self.new_leg(now, to, Purpose::Forward { round, level }, body.clone(), fx);
                }
            }
        }
    }

    /// Decides where [`Dispatch::enter_step`] lands, changing nothing; also
    /// returns the events of the levels passed over on the way.
    fn plan_step(
        &self,
        policy: &Policy,
        now: Timestamp,
        mut round: u32,
        mut level: u32,
    ) -> (Plan, Vec<EventKind>) {
        let levels = policy.levels();
        let mut events = Vec::new();
        let mut best: Option<HoldAt> = None;
        loop {
            if level as usize >= levels.len() {
                level = 0;
                round += 1;
                if round >= policy.rounds() {
                    return (Plan::Exhausted { hold: best }, events);
                }
                events.push(EventKind::Repeated { round });
            }
            let spec = &levels[level as usize];
            let reachable: Vec<PhoneNumber> = spec
                .targets
                .iter()
                .copied()
                .filter(|&t| self.can_text(t))
                .collect();
            if reachable.is_empty() {
                events.push(EventKind::LevelSkipped { round, level });
                level += 1;
                continue;
            }
            let on_duty: Vec<PhoneNumber> = reachable
                .iter()
                .copied()
                .filter(|&t| policy.on_duty(level as usize, t, now))
                .collect();
            if !on_duty.is_empty() {
                let plan = Plan::Forward {
                    round,
                    level,
                    targets: on_duty,
                };
                return (plan, events);
            }
            let opens_at = reachable
                .iter()
                .filter_map(|&t| policy.next_on_duty(level as usize, t, now))
                .filter(|&t| t > now)
                .min();
            // If no later level is on duty either, the dispatch holds: for
            // this first off-duty level (hold), or for whichever opens
            // first (skip).
            let better = match policy.when_closed() {
                WhenClosed::Hold => best.is_none(),
                WhenClosed::Skip => best
                    .as_ref()
                    .is_none_or(|b| opens_at.is_some_and(|u| u < b.until)),
            };
            if let Some(until) = opens_at
                && better
            {
                best = Some(HoldAt {
                    round,
                    level,
                    until,
                    events_before: events.len(),
                });
            }
            events.push(EventKind::LevelOffDuty {
                round,
                level,
                opens_at,
            });
            level += 1;
        }
    }

    fn escalate(&mut self, now: Timestamp, reason: EscalationReason, fx: &mut Fx<'_>) {
        self.emit(
            now,
            fx,
            EventKind::Escalated {
                from_level: self.level,
                reason,
            },
        );
        self.enter_step(now, self.round, self.level + 1, fx);
    }

    /// Records an ack; false if there already was one.
    fn record_ack(&mut self, now: Timestamp, by: Actor, via: AckVia, fx: &mut Fx<'_>) -> bool {
        if self.ack.is_some() {
            return false;
        }
        let level = match &by {
            Actor::Phone(p) => self
                .legs
                .iter()
                .filter(|l| l.to == *p)
                .find_map(|l| match l.purpose {
                    Purpose::Forward { level, .. } => Some(level),
                    _ => None,
                })
                .or_else(|| self.policy.level_of(*p).map(|l| l as u32)),
            _ => None,
        };
        self.ack = Some(Ack {
            by: by.clone(),
            at: now,
            via,
            level,
        });
        if self.state == State::Open {
            self.state = State::Acked;
            self.level_deadline = None;
            self.holding_until = None;
        }
        self.emit(now, fx, EventKind::Acked { by, level });
        true
    }

    fn close(&mut self, now: Timestamp, by: Actor, fx: &mut Fx<'_>) {
        self.state = State::Closed;
        self.level_deadline = None;
        self.holding_until = None;
        self.closed_at = Some(now);
        self.emit(now, fx, EventKind::Closed { by });
    }

    fn reply(&mut self, now: Timestamp, by: Actor, body: String, fx: &mut Fx<'_>) {
        let body = fit_body(&body);
        self.emit(now, fx, EventKind::Replied { by: by.clone() });
        let leg = self.new_leg(now, self.customer, Purpose::Reply, body.clone(), fx);
        self.thread.push(ThreadEntry {
            at: now,
            direction: Direction::Outbound,
            from: by.clone(),
            body,
            sid: None,
            leg,
            media: Vec::new(),
        });
        // A dispatcher whose reply cannot reach the customer is told so.
        if let (None, Some(reason), Actor::Phone(dispatcher)) =
            (leg, self.why_not(self.customer), by)
        {
            let note = format!(
                "[{} #{}] Not sent: {} {}.",
                self.policy.label(),
                self.tag,
                self.customer,
                reason.describe()
            );
            self.new_leg(now, dispatcher, Purpose::Notice, note, fx);
        }
    }

    fn ignored(&mut self, now: Timestamp, fx: &mut Fx<'_>, reason: &str) {
        self.emit(
            now,
            fx,
            EventKind::Ignored {
                reason: reason.to_owned(),
            },
        );
    }

    fn after_leg_failed(&mut self, now: Timestamp, i: usize, unreachable: bool, fx: &mut Fx<'_>) {
        let to = self.legs[i].to;
        if unreachable && !self.unreachable.contains(&to) {
            self.unreachable.push(to);
            self.emit(now, fx, EventKind::Unreachable { number: to });
        }
        let current = Purpose::Forward {
            round: self.round,
            level: self.level,
        };
        if self.state == State::Open
            && self.legs[i].purpose == current
            && self
                .legs
                .iter()
                .filter(|l| l.purpose == current)
                .all(|l| l.status.is_failure())
        {
            self.escalate(now, EscalationReason::DeliveryFailed, fx);
        }
    }

    /// Queues a text, unless `to` is unreachable in this dispatch, opted
    /// out or a relay line, or was sent the same text within the policy's
    /// repeat-suppression window (then an event says so and nothing is
    /// queued).
    fn new_leg(
        &mut self,
        now: Timestamp,
        to: PhoneNumber,
        purpose: Purpose,
        body: String,
        fx: &mut Fx<'_>,
    ) -> Option<u32> {
        if self.unreachable.contains(&to) {
            self.ignored(now, fx, &format!("not texted: {to} is unreachable"));
            return None;
        }
        if let Some(reason) = self.why_not(to) {
            self.ignored(now, fx, &format!("not texted: {to} {}", reason.describe()));
            return None;
        }
        if self.is_repeat(now, to, purpose, &body) {
            let reason = SkipReason::Repeat.describe();
            self.ignored(now, fx, &format!("not texted: {to} {reason}"));
            return None;
        }
        let index = self.legs.len() as u32;
        self.legs.push(Leg {
            index,
            to,
            purpose,
            body,
            created_at: now,
            attempts: 1,
            status: DeliveryStatus::Pending,
            retry_at: Some(now.plus(OUTBOX_GRACE)),
            sid: None,
            sent_at: None,
            updated_at: now,
            error_code: None,
            error_class: None,
            skipped: None,
            deferrals: 0,
            after_thread: Some(self.thread.len() as u32),
        });
        let msg = self.outbound(index as usize);
        fx.out.push(Effect::Send(msg));
        Some(index)
    }

    /// Marks a pending leg skipped: it is never sent.
    fn skip_leg(&mut self, now: Timestamp, i: usize, reason: SkipReason, fx: &mut Fx<'_>) {
        let l = &mut self.legs[i];
        l.status = DeliveryStatus::Skipped;
        l.skipped = Some(reason);
        l.retry_at = None;
        l.updated_at = now;
        let (leg, to) = (l.index, l.to);
        self.emit(now, fx, EventKind::Skipped { leg, to, reason });
    }

    /// Whether an identical text went to `to` within the policy's
    /// repeat-suppression window. Forwards are never repeats: each is an
    /// escalation step.
    fn is_repeat(&self, now: Timestamp, to: PhoneNumber, purpose: Purpose, body: &str) -> bool {
        let Some(window) = self.policy.suppress_repeats() else {
            return false;
        };
        !matches!(purpose, Purpose::Forward { .. })
            && self.legs.iter().any(|l| {
                l.to == to
                    && l.skipped.is_none()
                    && !matches!(l.purpose, Purpose::Forward { .. })
                    && l.body == body
                    && now.since(l.created_at) < window
            })
    }

    /// Records that `n` opted out (once).
    fn mark_opted_out(
        &mut self,
        now: Timestamp,
        n: PhoneNumber,
        code: Option<u32>,
        fx: &mut Fx<'_>,
    ) {
        if !self.opted_out.contains(&n) {
            self.opted_out.push(n);
            self.emit(now, fx, EventKind::OptedOut { number: n, code });
        }
    }

    /// Why a pending leg that falls due must not be (re)sent now.
    fn why_not_resend(&self, now: Timestamp, i: usize) -> Option<SkipReason> {
        let l = &self.legs[i];
        if let Some(reason) = self.why_not(l.to) {
            return Some(reason);
        }
        if let Purpose::Forward { level, .. } = l.purpose
            && !self.policy.on_duty(level as usize, l.to, now)
        {
            return Some(SkipReason::OffDuty);
        }
        if l.deferrals > 0 {
            let current = Purpose::Forward {
                round: self.round,
                level: self.level,
            };
            let stale = match l.purpose {
                Purpose::Forward { .. } => self.state != State::Open || l.purpose != current,
                Purpose::FollowUp => !self.current_holders(now).contains(&l.to),
                Purpose::Reply | Purpose::Notice => false,
            };
            if stale {
                return Some(SkipReason::Stale);
            }
        }
        None
    }

    /// Merges the dispatch's other delayed follow-ups and notices to the
    /// same number into leg `i` (throttle digest). Forwards and replies are
    /// never merged away; a forward may carry the others.
    fn merge_into(&mut self, now: Timestamp, i: usize, fx: &mut Fx<'_>) {
        let to = self.legs[i].to;
        if self.legs[i].purpose == Purpose::Reply {
            return;
        }
        let others: Vec<usize> = (0..self.legs.len())
            .filter(|&j| {
                let l = &self.legs[j];
                j != i
                    && l.to == to
                    && l.status == DeliveryStatus::Pending
                    && l.deferrals > 0
                    && matches!(l.purpose, Purpose::FollowUp | Purpose::Notice)
            })
            .collect();
        if others.is_empty() {
            return;
        }
        let mut body = self.legs[i].body.clone();
        for &j in &others {
            body.push('\n');
            body.push_str(&self.legs[j].body);
        }
        self.legs[i].body = fit_body(&body);
        let into = self.legs[i].index;
        for &j in &others {
            self.skip_leg(now, j, SkipReason::Merged { into }, fx);
        }
        let legs = others.iter().map(|&j| self.legs[j].index).collect();
        self.emit(now, fx, EventKind::Merged { into, legs });
    }

    fn outbound(&self, i: usize) -> OutboundMessage {
        let l = &self.legs[i];
        let validity_secs = match l.purpose {
            Purpose::Forward { level, .. } => self
                .policy
                .levels()
                .get(level as usize)
                .map(|s| s.timeout.as_secs().clamp(1, 36_000) as u32),
            _ => None,
        };
        OutboundMessage {
            dispatch: self.id,
            leg: l.index,
            to: l.to,
            from: self.line,
            body: l.body.clone(),
            validity_secs,
        }
    }

    fn emit(&mut self, now: Timestamp, fx: &mut Fx<'_>, kind: EventKind) {
        let ev = RelayEvent {
            at: now,
            dispatch: self.id,
            tag: self.tag,
            kind,
        };
        if self.events.len() >= MAX_KEPT_EVENTS {
            self.events.remove(0);
            self.events_dropped += 1;
        }
        self.events.push(ev.clone());
        fx.out.push(Effect::Publish(ev));
    }

    fn finish(&mut self, now: Timestamp) {
        self.updated_at = now;
        // Owed to the job system until the driver syncs; a crash before
        // that is finished by a sweep after the grace.
        self.finish_job_sync(now);
    }

    fn recompute_deadline(&mut self) {
        let pending = self
            .legs
            .iter()
            .filter(|l| l.status == DeliveryStatus::Pending)
            .filter_map(|l| l.retry_at)
            .min();
        let level = if self.state == State::Open {
            self.level_deadline
        } else {
            None
        };
        let jobs = self.job_sync.as_deref().and_then(|j| j.retry_at);
        self.deadline = [pending, level, jobs].into_iter().flatten().min();
    }

    // ----- helpers --------------------------------------------------------

    fn has_inbound(&self, sid: &ProviderMessageId) -> bool {
        self.thread.iter().any(|e| e.sid.as_ref() == Some(sid))
    }

    fn was_notified(&self, n: PhoneNumber) -> bool {
        self.legs
            .iter()
            .any(|l| l.to == n && matches!(l.purpose, Purpose::Forward { .. } | Purpose::FollowUp))
    }

    /// Whether a dispatcher may be texted: not the customer, and nothing
    /// says not to.
    fn can_text(&self, n: PhoneNumber) -> bool {
        n != self.customer && self.why_not(n).is_none()
    }

    /// Why nothing may be sent to `n`, if so.
    fn why_not(&self, n: PhoneNumber) -> Option<SkipReason> {
        if n == self.line || self.policy.relay_lines().contains(&n) {
            Some(SkipReason::Loop)
        } else if self.opted_out.contains(&n) {
            Some(SkipReason::OptedOut)
        } else if self.unreachable.contains(&n) {
            Some(SkipReason::Unreachable)
        } else {
            None
        }
    }

    /// Whether every text of the current step failed or went to someone
    /// who can no longer be texted (false while holding: no texts yet).
    fn current_step_unreachable(&self) -> bool {
        let current = Purpose::Forward {
            round: self.round,
            level: self.level,
        };
        let mut legs = self.legs.iter().filter(|l| l.purpose == current).peekable();
        legs.peek().is_some() && legs.all(|l| l.status.is_failure() || !self.can_text(l.to))
    }

    /// Who gets a customer's later texts: the acker if a dispatcher acked,
    /// else the current step's targets that did not fail and are on duty.
    fn current_holders(&self, now: Timestamp) -> Vec<PhoneNumber> {
        if let Some(Ack {
            by: Actor::Phone(p),
            ..
        }) = &self.ack
            && self.can_text(*p)
        {
            return vec![*p];
        }
        let current = Purpose::Forward {
            round: self.round,
            level: self.level,
        };
        let mut out: Vec<PhoneNumber> = Vec::new();
        for l in self.legs.iter().filter(|l| l.purpose == current) {
            if !l.status.is_failure()
                && self.can_text(l.to)
                && !out.contains(&l.to)
                && self.policy.on_duty(self.level as usize, l.to, now)
            {
                out.push(l.to);
            }
        }
        out
    }

    /// Writes `[QDN #K7] +16195550100` into `out` (no `format!`: this is on
    /// every forward's path).
    fn push_header(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.push('[');
        out.push_str(self.policy.label());
        out.push_str(" #");
        let _ = write!(out, "{}", self.tag);
        out.push_str("] +");
        out.push_str(itoa_u64(self.customer.as_u64()).as_str());
    }

    fn forward_text(&self, body: &str, media: &[Media]) -> String {
        let media_len: usize = media.iter().map(|m| m.url.len() + 1).sum();
        let mut out =
            String::with_capacity(40 + self.policy.label().len() + body.len() + media_len + 10);
        self.push_header(&mut out);
        out.push_str(": ");
        if body.trim().is_empty() && media.is_empty() {
            out.push_str("(no text)");
        } else {
            push_with_media(&mut out, body, media);
        }
        fit_owned(out)
    }

    /// What an escalation step sends: every customer text so far.
    fn escalation_body(&self) -> String {
        let texts: Vec<&ThreadEntry> = self
            .thread
            .iter()
            .filter(|e| e.direction == Direction::Inbound && e.from == Actor::Phone(self.customer))
            .collect();
        match texts.as_slice() {
            [one] => self.forward_text(&one.body, &one.media),
            many => {
                let mut out = String::with_capacity(
                    64 + many.iter().map(|e| e.body.len() + 3).sum::<usize>(),
                );
                self.push_header(&mut out);
                out.push_str(&format!(" ({} texts): ", many.len()));
                for (i, e) in many.iter().enumerate() {
                    if i > 0 {
                        out.push_str(" / ");
                    }
                    push_with_media(&mut out, &e.body, &e.media);
                }
                fit_owned(out)
            }
        }
    }

    // ----- getters --------------------------------------------------------

    /// The dispatch's id.
    pub fn id(&self) -> DispatchId {
        self.id
    }
    /// Its short tag, unique among open dispatches.
    pub fn tag(&self) -> Tag {
        self.tag
    }
    /// The business line the customer texted.
    pub fn line(&self) -> PhoneNumber {
        self.line
    }
    /// The customer.
    pub fn customer(&self) -> PhoneNumber {
        self.customer
    }
    /// The host's job this dispatch belongs to, if any.
    pub fn job_id(&self) -> Option<&JobId> {
        self.job_id.as_ref()
    }
    /// Attaches the host's job id before the first save (a host that knows
    /// the job up front). Later, use [`Dispatch::link_job`].
    pub fn set_job_id(&mut self, job: Option<JobId>) {
        self.job_id = job;
    }
    /// How far its texts and milestones have reached the host's job system
    /// (`None` when the relay has no [`crate::Jobs`] port).
    pub fn job_sync(&self) -> Option<&JobSync> {
        self.job_sync.as_deref()
    }

    // ----- the host's job system (driven by the driver, see crate::jobs) --

    /// Starts keeping its job system in sync (the driver does this when it
    /// has a [`crate::Jobs`] port); a sync is owed from now on.
    pub fn enable_job_sync(&mut self, now: Timestamp) {
        if self.job_sync.is_none() {
            self.job_sync = Some(Box::default());
            self.finish_job_sync(now);
        }
    }

    /// What it owes its job system, in order.
    pub fn job_work(&self) -> JobWork {
        crate::jobs::pending_work(self)
    }

    /// Records a sync with the job system: what `resolve` answered (if it
    /// was asked), the cursor reached, and whether everything owed was
    /// recorded (`Ok`) or a call failed (`Err` with its message). Returns
    /// the events to publish, or `None` when nothing changed (nothing to
    /// save).
    pub fn record_job_sync(
        &mut self,
        now: Timestamp,
        resolved: Option<Option<JobId>>,
        reached: Option<&JobSync>,
        result: Result<(), String>,
    ) -> Option<Vec<Effect>> {
        let before = (self.job_id.clone(), self.job_sync.clone());
        let mut out = Vec::new();
        let mut fx = Fx { out: &mut out };
        let js = self.job_sync.get_or_insert_with(Box::default);
        if let Some(job) = resolved
            && !js.resolved
        {
            js.resolved = true;
            if self.job_id.is_none()
                && let Some(job) = job
            {
                self.job_id = Some(job.clone());
                self.emit(now, &mut fx, EventKind::JobLinked { job });
            }
        }
        let js = self.job_sync.get_or_insert_with(Box::default);
        if let Some(c) = reached {
            js.thread = js.thread.max(c.thread);
            js.legs = js.legs.max(c.legs);
            js.acked |= c.acked;
            js.failed |= c.failed;
            js.closed |= c.closed;
        }
        match result {
            Ok(()) => {
                let failures = std::mem::take(&mut js.failures);
                js.retry_at = None;
                js.last_error = None;
                if failures > 0 {
                    self.emit(now, &mut fx, EventKind::JobSyncRecovered { failures });
                }
            }
            Err(error) => {
                js.failures = js.failures.saturating_add(1);
                let failures = js.failures;
                let retry_at = now.plus(JobSync::backoff(failures));
                js.retry_at = Some(retry_at);
                let error = fit_chars(&error, 500);
                js.last_error = Some(error.clone());
                // The 1st, 2nd, 4th, 8th... failure in a row is an event: a
                // long outage must not push the dispatch's own history out
                // of its kept events (the status always has the count and
                // the last error).
                if failures.is_power_of_two() {
                    self.emit(
                        now,
                        &mut fx,
                        EventKind::JobSyncFailed {
                            error,
                            failures,
                            retry_at,
                        },
                    );
                }
            }
        }
        self.recompute_deadline();
        if (&self.job_id, &self.job_sync) == (&before.0, &before.1) {
            return None;
        }
        Some(out)
    }

    /// Links the dispatch to a job (replacing any earlier link). With
    /// `sync` (the relay has a [`crate::Jobs`] port) the whole conversation
    /// so far is owed to that job; without, only the link is recorded (for
    /// lookups by job). Returns the events; empty when it was already
    /// linked to `job`.
    pub fn link_job(&mut self, now: Timestamp, job: JobId, sync: bool) -> Vec<Effect> {
        if self.job_id.as_ref() == Some(&job) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut fx = Fx { out: &mut out };
        self.job_id = Some(job.clone());
        if sync {
            self.job_sync = Some(Box::new(JobSync {
                resolved: true,
                ..JobSync::default()
            }));
        }
        self.emit(now, &mut fx, EventKind::JobLinked { job });
        self.finish_job_sync(now);
        out
    }

    fn finish_job_sync(&mut self, now: Timestamp) {
        if let Some(js) = self.job_sync.as_deref_mut()
            && js.retry_at.is_none()
        {
            js.retry_at = Some(now.plus(JOB_SYNC_GRACE));
        }
        self.recompute_deadline();
    }
    /// The policy snapshotted when the dispatch opened.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }
    /// When it opened.
    pub fn opened_at(&self) -> Timestamp {
        self.opened_at
    }
    /// When it last changed.
    pub fn updated_at(&self) -> Timestamp {
        self.updated_at
    }
    /// Its state.
    pub fn state(&self) -> State {
        self.state
    }
    /// The current round (0-based).
    pub fn round(&self) -> u32 {
        self.round
    }
    /// The current level (0-based).
    pub fn level(&self) -> u32 {
        self.level
    }
    /// When the current level times out, while open.
    pub fn level_deadline(&self) -> Option<Timestamp> {
        if self.state == State::Open {
            self.level_deadline
        } else {
            None
        }
    }
    /// The conversation.
    pub fn thread(&self) -> &[ThreadEntry] {
        &self.thread
    }
    /// Every outbound text.
    pub fn legs(&self) -> &[Leg] {
        &self.legs
    }
    /// The ack, if any.
    pub fn ack(&self) -> Option<&Ack> {
        self.ack.as_ref()
    }
    /// When it was closed.
    pub fn closed_at(&self) -> Option<Timestamp> {
        self.closed_at
    }
    /// Numbers not texted again in this dispatch.
    pub fn unreachable(&self) -> &[PhoneNumber] {
        &self.unreachable
    }
    /// Numbers that opted out (texted `STOP` or failed with an opt-out
    /// error): not texted by this dispatch until they opt back in.
    pub fn opted_out(&self) -> &[PhoneNumber] {
        &self.opted_out
    }
    /// While open and waiting for a level's on-duty window: when it opens
    /// (also the level deadline).
    pub fn holding_until(&self) -> Option<Timestamp> {
        if self.state == State::Open {
            self.holding_until
        } else {
            None
        }
    }
    /// Its recent events (at most [`MAX_KEPT_EVENTS`]).
    pub fn events(&self) -> &[RelayEvent] {
        &self.events
    }
    /// How many older events were dropped from [`Dispatch::events`].
    pub fn events_dropped(&self) -> u32 {
        self.events_dropped
    }
    /// The earliest time something is due: the level's timeout while open,
    /// or a pending send's retry. `None` when nothing will ever be due.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.deadline
    }
    /// The version it was loaded at (0 before the first save).
    pub fn version(&self) -> u64 {
        self.version
    }
    /// Sets the version; drivers and stores call this around a save.
    pub fn set_version(&mut self, v: u64) {
        self.version = v;
    }
    /// Inbound message ids of every text in the thread.
    pub fn inbound_sids(&self) -> impl Iterator<Item = &ProviderMessageId> {
        self.thread.iter().filter_map(|e| e.sid.as_ref())
    }
    /// Provider ids of every outbound text.
    pub fn leg_sids(&self) -> impl Iterator<Item = &ProviderMessageId> {
        self.legs.iter().filter_map(|l| l.sid.as_ref())
    }
    /// Dispatchers who were texted about this dispatch (forwards and
    /// follow-ups), each once, in order.
    pub fn notified(&self) -> Vec<PhoneNumber> {
        let mut out = Vec::new();
        for l in &self.legs {
            if matches!(l.purpose, Purpose::Forward { .. } | Purpose::FollowUp)
                && !out.contains(&l.to)
            {
                out.push(l.to);
            }
        }
        out
    }
    /// The last time `n` was texted about this dispatch.
    pub fn last_notified_at(&self, n: PhoneNumber) -> Option<Timestamp> {
        self.legs
            .iter()
            .filter(|l| {
                l.to == n && matches!(l.purpose, Purpose::Forward { .. } | Purpose::FollowUp)
            })
            .map(|l| l.created_at)
            .max()
    }
    /// The message to send for a leg (used by the outbox).
    pub fn outbound_for(&self, leg: u32) -> Option<OutboundMessage> {
        ((leg as usize) < self.legs.len()).then(|| self.outbound(leg as usize))
    }
}

fn with_media(body: &str, media: &[Media]) -> String {
    let mut out = String::with_capacity(
        body.len() + media.iter().map(|m| m.url.len() + 1).sum::<usize>() + 10,
    );
    push_with_media(&mut out, body, media);
    out
}

/// Appends `body`, then `[media: url url]` if there is media.
fn push_with_media(out: &mut String, body: &str, media: &[Media]) {
    let has_body = !body.trim().is_empty();
    if has_body || media.is_empty() {
        out.push_str(body);
    }
    if media.is_empty() {
        return;
    }
    out.push_str(if has_body { " [media:" } else { "[media:" });
    for m in media {
        out.push(' ');
        out.push_str(&m.url);
    }
    out.push(']');
}

/// Fits an owned body within [`crate::MAX_BODY_CHARS`] without copying it
/// when it already fits (bytes ≥ characters).
fn fit_owned(s: String) -> String {
    if s.len() <= crate::MAX_BODY_CHARS {
        s
    } else {
        fit_body(&s)
    }
}

/// A `u64` in decimal, on the stack.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or("")
    }
}

fn itoa_u64(mut n: u64) -> Digits {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Digits { buf, start: i }
}

/// Exponential backoff with deterministic jitter: 5 s, 10 s, 20 s, … capped
/// at 5 minutes, plus up to a quarter more; at least what the provider asked.
fn retry_backoff(id: DispatchId, leg: u32, attempts: u32, retry_after_ms: Option<u64>) -> Duration {
    let base = 5_000u64
        .saturating_mul(1 << attempts.saturating_sub(1).min(10))
        .min(300_000);
    let jitter = splitmix(id.as_u128() as u64 ^ (u64::from(leg) << 32) ^ u64::from(attempts))
        % (base / 4 + 1);
    Duration::from_millis((base + jitter).max(retry_after_ms.unwrap_or(0)))
}

/// Where [`Dispatch::enter_step`] lands.
enum Plan {
    Forward {
        round: u32,
        level: u32,
        targets: Vec<PhoneNumber>,
    },
    Hold {
        round: u32,
        level: u32,
        until: Timestamp,
    },
    Exhausted {
        hold: Option<HoldAt>,
    },
}

/// The off-duty step that opens first, seen while planning (skip mode).
struct HoldAt {
    round: u32,
    level: u32,
    until: Timestamp,
    events_before: usize,
}
