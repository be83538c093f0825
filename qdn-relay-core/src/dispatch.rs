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
use crate::policy::Policy;
use crate::types::{DispatchId, PhoneNumber, ProviderMessageId, Tag, Timestamp, splitmix};

/// How long a pending send may stay unanswered before a sweep treats its
/// driver as crashed and sends it again. Provider calls must time out well
/// within it.
pub const OUTBOX_GRACE: Duration = Duration::from_secs(60);

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
    job_id: Option<String>,
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
        if text.from == text.to {
            return Err(InputError::Loop);
        }
        let mut d = Dispatch {
            id,
            tag,
            line: text.to,
            customer: text.from,
            job_id: None,
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
            Input::SendOutcome { leg, result } => {
                self.on_send_outcome(now, leg, result, &mut fx)?
            }
            Input::Dashboard(a) => self.on_dashboard(now, a, &mut fx)?,
            Input::Timeout => self.on_timeout(now, &mut fx),
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
        for to in self.current_holders() {
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
        if r.status.rank() <= leg.status.rank() {
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
            self.after_leg_failed(now, i, class == Some(ErrorClass::Unreachable), fx);
        }
        Ok(())
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
                    self.after_leg_failed(now, i, e.kind == SendErrorKind::Unreachable, fx);
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
            if l.attempts >= MAX_SEND_ATTEMPTS {
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
                let l = &mut self.legs[i];
                l.attempts += 1;
                l.retry_at = Some(now.plus(OUTBOX_GRACE));
                l.updated_at = now;
                let msg = self.outbound(i);
                fx.out.push(Effect::Send(msg));
            }
        }
        if self.state == State::Open && self.level_deadline.is_some_and(|t| t <= now) {
            self.escalate(now, EscalationReason::Timeout, fx);
        }
    }

    // ----- transitions ----------------------------------------------------

    /// Moves to `(round, level)`, skipping levels with nobody reachable,
    /// repeating the chain per policy, failing past the last round.
    fn enter_step(&mut self, now: Timestamp, mut round: u32, mut level: u32, fx: &mut Fx<'_>) {
        let policy = Arc::clone(&self.policy);
        let levels = policy.levels();
        loop {
            if level as usize >= levels.len() {
                level = 0;
                round += 1;
                if round >= policy.rounds() {
                    self.state = State::Failed;
                    self.level_deadline = None;
                    self.emit(now, fx, EventKind::Exhausted);
                    return;
                }
                self.emit(now, fx, EventKind::Repeated { round });
            }
            let spec = &levels[level as usize];
            let targets: Vec<PhoneNumber> = spec
                .targets
                .iter()
                .copied()
                .filter(|&t| self.can_text(t))
                .collect();
            if targets.is_empty() {
                self.emit(now, fx, EventKind::LevelSkipped { round, level });
                level += 1;
                continue;
            }
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
            return;
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
        }
        self.emit(now, fx, EventKind::Acked { by, level });
        true
    }

    fn close(&mut self, now: Timestamp, by: Actor, fx: &mut Fx<'_>) {
        self.state = State::Closed;
        self.level_deadline = None;
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
            from: by,
            body,
            sid: None,
            leg: Some(leg),
            media: Vec::new(),
        });
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

    fn new_leg(
        &mut self,
        now: Timestamp,
        to: PhoneNumber,
        purpose: Purpose,
        body: String,
        fx: &mut Fx<'_>,
    ) -> u32 {
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
        });
        let msg = self.outbound(index as usize);
        fx.out.push(Effect::Send(msg));
        index
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
        self.deadline = match (pending, level) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
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

    fn can_text(&self, n: PhoneNumber) -> bool {
        n != self.line && n != self.customer && !self.unreachable.contains(&n)
    }

    /// Who gets a customer's later texts: the acker if a dispatcher acked,
    /// else the current step's targets that did not fail.
    fn current_holders(&self) -> Vec<PhoneNumber> {
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
            if !l.status.is_failure() && self.can_text(l.to) && !out.contains(&l.to) {
                out.push(l.to);
            }
        }
        out
    }

    fn header(&self) -> String {
        format!("[{} #{}] {}", self.policy.label(), self.tag, self.customer)
    }

    fn forward_text(&self, body: &str, media: &[Media]) -> String {
        let body = with_media(body, media);
        let body = if body.trim().is_empty() {
            "(no text)".to_owned()
        } else {
            body
        };
        fit_body(&format!("{}: {}", self.header(), body))
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
                let joined: Vec<String> =
                    many.iter().map(|e| with_media(&e.body, &e.media)).collect();
                fit_body(&format!(
                    "{} ({} texts): {}",
                    self.header(),
                    many.len(),
                    joined.join(" / ")
                ))
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
    pub fn job_id(&self) -> Option<&str> {
        self.job_id.as_deref()
    }
    /// Attaches the host's job id (before the first save).
    pub fn set_job_id(&mut self, job: Option<String>) {
        self.job_id = job.map(|j| fit_chars(&j, 128));
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
    if media.is_empty() {
        return body.to_owned();
    }
    let urls: Vec<&str> = media.iter().map(|m| m.url.as_str()).collect();
    if body.trim().is_empty() {
        format!("[media: {}]", urls.join(" "))
    } else {
        format!("{body} [media: {}]", urls.join(" "))
    }
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
