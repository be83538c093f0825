//! The input handlers: one per [`Input`](crate::Input) kind, called by
//! [`Dispatch::handle`]. Each validates before it changes anything.

use std::time::Duration;

use super::legs::{MAX_SEND_ATTEMPTS, retry_backoff};
use super::text::with_media;
use super::timer::Timer;
use super::{Dispatch, Fx, InputError};
use crate::event::{EscalationReason, EventKind};
use crate::input::{
    Actor, Command, DashboardAction, DeliveryError, DeliveryReport, DeliveryStatus, ErrorClass,
    InboundText, RouteReason, SendError, SendErrorKind, SkipReason,
};
use crate::policy::OverLimit;
use crate::record::{AckVia, Direction, Purpose, State, ThreadEntry};
use crate::types::{PhoneNumber, ProviderMessageId, Tag, Timestamp};

impl Dispatch {
    /// What every received text is checked for first: `true` for a text
    /// already in the thread (a retried webhook: nothing to do), an error
    /// when the dispatch is not open or the text went to another line.
    fn is_repeat_or_refused(&self, t: &InboundText) -> Result<bool, InputError> {
        if self.has_inbound(&t.sid) {
            return Ok(true);
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
        Ok(false)
    }

    pub(super) fn on_customer_text(
        &mut self,
        now: Timestamp,
        t: InboundText,
        fx: &mut Fx<'_>,
    ) -> Result<(), InputError> {
        if self.is_repeat_or_refused(&t)? {
            return Ok(());
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

    pub(super) fn on_dispatcher_text(
        &mut self,
        now: Timestamp,
        t: InboundText,
        route: RouteReason,
        fx: &mut Fx<'_>,
    ) -> Result<(), InputError> {
        if self.is_repeat_or_refused(&t)? {
            return Ok(());
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

    pub(super) fn on_dashboard(
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
            DashboardAction::Escalate { by } => {
                if let Some(ack) = &self.ack {
                    return Err(InputError::Acknowledged(ack.by.clone()));
                }
                self.escalate_by(
                    now,
                    EscalationReason::Operator,
                    Some(Actor::Operator(by)),
                    fx,
                );
            }
        }
        Ok(())
    }

    pub(super) fn on_delivery(
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
            let opted_out = class == Some(ErrorClass::OptedOut);
            if opted_out {
                let to = self.legs[i].to;
                self.opted_out_by_failure(now, to, code, fx);
            }
            let unreachable = opted_out || class == Some(ErrorClass::Unreachable);
            self.after_leg_failed(now, i, unreachable, fx);
        }
        Ok(())
    }

    /// A callback naming its leg: gives a leg still without a message id
    /// the report's (as if the provider's answer had arrived), then applies
    /// the report.
    pub(super) fn on_leg_delivery(
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

    pub(super) fn on_send_outcome(
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
                        SendErrorKind::OptedOut => ErrorClass::OptedOut,
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
                    let opted_out = e.kind == SendErrorKind::OptedOut;
                    if opted_out {
                        let to = self.legs[i].to;
                        self.opted_out_by_failure(now, to, e.code, fx);
                    }
                    let unreachable = opted_out || e.kind == SendErrorKind::Unreachable;
                    self.after_leg_failed(now, i, unreachable, fx);
                }
            }
        }
        Ok(())
    }

    /// Acts on the timers expired at `now` (see `timer.rs`): the outbox's
    /// due legs first, then the level's deadline. The job-sync timer is
    /// the driver's.
    pub(super) fn on_timeout(&mut self, now: Timestamp, fx: &mut Fx<'_>) {
        if self.expired(Timer::Outbox, now) {
            self.fire_outbox(now, fx);
        }
        if self.expired(Timer::Level, now) {
            self.fire_level(now, fx);
        }
    }

    pub(super) fn on_send_deferred(
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

    pub(super) fn on_send_blocked(
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

    pub(super) fn on_opt_out(
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

    pub(super) fn on_opt_in(
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
}
