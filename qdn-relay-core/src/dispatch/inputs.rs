//! The input handlers: one per [`Input`](crate::Input) kind, called by
//! [`Dispatch::handle`]. Each validates before it changes anything.

use std::time::Duration;

use super::legs::{MAX_SEND_ATTEMPTS, retry_backoff};
use super::text::with_media;
use super::timer::Timer;
use super::{Dispatch, Fx, InputError};
use crate::carrier::CarrierHold;
use crate::event::{EscalationReason, EventKind};
use crate::input::{
    Actor, Command, DashboardAction, DeliveryError, DeliveryReport, DeliveryStatus, ErrorClass,
    InboundText, RouteReason, SendError, SendErrorKind, SkipReason,
};
use crate::policy::OverLimit;
use crate::ports::SendReceipt;
use crate::record::{AckVia, Direction, Purpose, State, ThreadEntry};
use crate::types::{PhoneNumber, Tag, Timestamp};

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
        let Some(i) = self
            .legs
            .iter()
            .position(|l| l.sid.as_ref() == Some(&r.sid))
        else {
            // A store finds a dispatch by the ids of its moved legs too: a
            // late report for one of them changes nothing.
            if self.history().legs > 0 {
                return Ok(());
            }
            return Err(InputError::UnknownMessage(r.sid));
        };
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
            if let Some(c) = class.filter(|c| c.is_carrier_wide()) {
                let kind = if c == ErrorClass::Config {
                    SendErrorKind::Config
                } else {
                    SendErrorKind::CarrierDown
                };
                if self.resend_elsewhere(now, i, kind, code, fx) {
                    return Ok(());
                }
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
            let Some(p) = self.leg_pos(leg)? else {
                return Ok(()); // moved out: settled long ago
            };
            let l = &mut self.legs[p];
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
            let purpose = l.purpose;
            self.emit(
                now,
                fx,
                EventKind::Sent {
                    leg,
                    sid: r.sid.clone(),
                    via: None,
                    purpose: Some(purpose),
                },
            );
        }
        self.on_delivery(now, r, fx)
    }

    pub(super) fn on_send_outcome(
        &mut self,
        now: Timestamp,
        leg: u32,
        result: Result<SendReceipt, SendError>,
        fx: &mut Fx<'_>,
    ) -> Result<(), InputError> {
        let Some(i) = self.leg_pos(leg)? else {
            return Ok(()); // moved out: it was settled
        };
        let l = &self.legs[i];
        let fresh = match &result {
            Ok(_) => l.sid.is_none(),
            Err(_) => l.status == DeliveryStatus::Pending,
        };
        if !fresh {
            return Ok(());
        }
        let skipped = match &result {
            Ok(r) => &r.skipped,
            Err(e) => &e.skipped,
        };
        for skip in skipped.clone() {
            self.emit(now, fx, EventKind::CarrierSkipped { leg, skip });
        }
        match result {
            Ok(receipt) => {
                let l = &mut self.legs[i];
                let purpose = l.purpose;
                l.held = false;
                l.sid = Some(receipt.sid.clone());
                l.sent_at = Some(now);
                l.retry_at = None;
                l.updated_at = now;
                l.via = receipt.via.clone();
                if l.status.rank() < DeliveryStatus::Queued.rank() {
                    l.status = DeliveryStatus::Queued;
                }
                self.emit(
                    now,
                    fx,
                    EventKind::Sent {
                        leg,
                        sid: receipt.sid,
                        via: receipt.via,
                        purpose: Some(purpose),
                    },
                );
            }
            Err(e) if e.kind.is_carrier_wide() => self.carriers_down(now, i, e, fx),
            Err(e) => {
                let l = &mut self.legs[i];
                l.held = false;
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
                        purpose: Some(self.legs[i].purpose),
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

    /// Every carrier that may send leg `i` failed carrier-wide: the leg
    /// stays pending and is tried again with backoff (the try is not
    /// counted: it is never given up for this), the dispatch holds, and a
    /// forward whose step has sent nothing yet stops its level's clock. The
    /// recipient is not at fault: nothing marks them unreachable.
    fn carriers_down(&mut self, now: Timestamp, i: usize, e: SendError, fx: &mut Fx<'_>) {
        let l = &mut self.legs[i];
        let leg = l.index;
        l.attempts = l.attempts.saturating_sub(1);
        l.carrier_waits = l.carrier_waits.saturating_add(1);
        l.error_code = e.code;
        l.updated_at = now;
        let retry_at = now.plus(retry_backoff(
            self.id,
            leg,
            l.carrier_waits,
            e.retry_after_ms,
        ));
        l.retry_at = Some(retry_at);
        l.held = true;
        if self.carrier_hold.is_none() {
            self.carrier_hold = Some(CarrierHold {
                since: now,
                leg,
                kind: e.kind,
                code: e.code,
            });
        }
        self.emit(
            now,
            fx,
            EventKind::CarriersDown {
                leg,
                kind: e.kind,
                code: e.code,
                retry_at,
            },
        );
    }

    /// After every change: a carrier hold ends when no pending leg waits
    /// for a carrier any more (one was sent, or given up for another
    /// reason), and an open dispatch's level clock runs unless its current
    /// step's forward waits for a carrier with nothing of the step sent.
    pub(super) fn settle_carriers(&mut self, now: Timestamp, fx: &mut Fx<'_>) {
        let waiting = |l: &crate::record::Leg| l.held && l.status == DeliveryStatus::Pending;
        if let Some(hold) = &self.carrier_hold
            && !self.legs.iter().any(waiting)
        {
            let leg = hold.leg;
            let via = self.leg(leg).and_then(|l| l.via.clone());
            self.carrier_hold = None;
            self.emit(now, fx, EventKind::CarriersRecovered { leg, via });
        }
        if self.state != State::Open || self.holding_until.is_some() {
            return;
        }
        let current = Purpose::Forward {
            round: self.round,
            level: self.level,
        };
        let mut step = self.legs.iter().filter(|l| l.purpose == current).peekable();
        let step_waits = step.peek().is_some()
            && step.clone().any(waiting)
            && step.all(|l| l.sid.is_none() && l.status != DeliveryStatus::Unknown);
        if step_waits {
            // Nobody was told yet: the level's timeout starts when a
            // carrier takes the forward.
            self.level_deadline = None;
        } else if self.level_deadline.is_none()
            && let Some(spec) = self.policy.levels().get(self.level as usize)
        {
            self.level_deadline = Some(now.plus(spec.timeout));
        }
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
        let Some(i) = self.leg_pos(leg)? else {
            return Ok(()); // moved out: it was settled
        };
        let l = &self.legs[i];
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
        let Some(i) = self.leg_pos(leg)? else {
            return Ok(()); // moved out: it was settled
        };
        let l = &self.legs[i];
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

#[cfg(test)]
mod carrier_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::fixture::{T0, opened};
    use crate::carrier::{CarrierNumber, CarrierSkip, Via};
    use crate::event::{Effect, EventKind};
    use crate::input::{DeliveryStatus, Input, SendError, SendErrorKind};
    use crate::policy::Policy;
    use crate::ports::SendReceipt;
    use crate::record::{Purpose, State};
    use crate::types::{DispatchId, PhoneNumber, Timestamp};
    use crate::{Dispatch, InboundText, MAX_SEND_ATTEMPTS};

    const LEVEL: Duration = Duration::from_secs(900);

    fn n(s: &str) -> PhoneNumber {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn ok(d: &mut Dispatch, now: Timestamp, input: Input) -> Vec<Effect> {
        d.handle(now, input).unwrap_or_else(|e| panic!("{e}"))
    }

    fn down(kind: SendErrorKind, code: u32) -> Input {
        Input::SendOutcome {
            leg: 0,
            result: Err(SendError::new(kind, "carrier says no").with_code(code)),
        }
    }

    fn kinds(fx: &[Effect]) -> Vec<&'static str> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Publish(ev) => Some(ev.kind.name()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_account_error_holds_the_dispatch_and_never_marks_the_recipient_unreachable() {
        let mut d = opened(LEVEL);
        let fx = ok(&mut d, T0, down(SendErrorKind::Config, 20003));
        assert_eq!(kinds(&fx), ["carriers_down"]);
        let l = &d.legs()[0];
        assert_eq!(l.status, DeliveryStatus::Pending);
        assert!(d.unreachable().is_empty());
        let hold = d.carrier_hold().unwrap_or_else(|| panic!("holding"));
        assert_eq!((hold.leg, hold.code), (0, Some(20003)));
        assert_eq!(
            d.level_deadline(),
            None,
            "the level's clock waits for the forward"
        );
        assert_eq!(d.status().carrier_hold.as_ref(), Some(hold));

        // Far more tries than a send is allowed: it never fails, never
        // escalates, and backs off.
        let mut now = T0;
        let mut gaps = Vec::new();
        for _ in 0..(3 * MAX_SEND_ATTEMPTS) {
            let due = d
                .next_deadline()
                .unwrap_or_else(|| panic!("a retry is due"));
            gaps.push(due.since(now));
            now = due;
            let fx = ok(&mut d, now, Input::Timeout);
            assert!(
                fx.iter()
                    .any(|e| matches!(e, Effect::Send(m) if m.leg == 0)),
                "the same leg again"
            );
            ok(&mut d, now, down(SendErrorKind::CarrierDown, 30007));
            assert_eq!(d.state(), State::Open);
            assert_eq!(d.level(), 0);
            assert_eq!(d.legs().len(), 1);
        }
        assert!(d.unreachable().is_empty());
        assert!(gaps[0] >= Duration::from_secs(5), "{gaps:?}");
        assert!(gaps[5] > gaps[0] * 8, "backs off: {gaps:?}");
        assert!(
            gaps.iter().all(|g| *g <= Duration::from_secs(375)),
            "capped: {gaps:?}"
        );

        // A carrier takes it: the hold ends and the level's clock starts.
        let via = Via {
            carrier: "aws-sms".into(),
            from: n("+16195550900"),
        };
        let mut receipt = SendReceipt::new("SMok".parse().unwrap_or_else(|e| panic!("{e}")));
        receipt.via = Some(via.clone());
        let fx = ok(
            &mut d,
            now,
            Input::SendOutcome {
                leg: 0,
                result: Ok(receipt),
            },
        );
        assert_eq!(kinds(&fx), ["sent", "carriers_recovered"]);
        assert_eq!(d.carrier_hold(), None);
        assert_eq!(d.level_deadline(), Some(now.plus(LEVEL)));
        assert_eq!(d.legs()[0].via.as_ref(), Some(&via));
        let json = serde_json::to_value(d.status()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json["legs"][0]["via"]["carrier"], "aws-sms");
        assert_eq!(json["legs"][0]["via"]["from"], "+16195550900");
    }

    #[test]
    fn a_per_recipient_error_still_fails_the_leg_and_escalates() {
        let mut d = opened(LEVEL);
        let fx = ok(&mut d, T0, down(SendErrorKind::Unreachable, 21211));
        assert!(kinds(&fx).contains(&"escalated"));
        assert_eq!(d.unreachable(), [n("+16195550101")]);
        assert_eq!(d.carrier_hold(), None);
    }

    #[test]
    fn skipped_carriers_are_events_on_the_leg() {
        let mut d = opened(LEVEL);
        let mut receipt = SendReceipt::new("SMok".parse().unwrap_or_else(|e| panic!("{e}")));
        receipt.via = Some(Via {
            carrier: "aws-sms".into(),
            from: n("+16195550900"),
        });
        receipt.skipped = vec![CarrierSkip {
            carrier: "twilio".into(),
            kind: SendErrorKind::CarrierDown,
            code: Some(30007),
            degraded_until: Some(T0.plus(Duration::from_secs(300))),
        }];
        let fx = ok(
            &mut d,
            T0,
            Input::SendOutcome {
                leg: 0,
                result: Ok(receipt),
            },
        );
        assert_eq!(kinds(&fx), ["carrier_skipped", "sent"]);
        let skipped = d.events().iter().find_map(|e| match &e.kind {
            EventKind::CarrierSkipped { leg: 0, skip } => Some(skip.clone()),
            _ => None,
        });
        assert_eq!(
            skipped.map(|s| (s.carrier, s.code)),
            Some(("twilio".into(), Some(30007)))
        );
        let json = serde_json::to_value(d.events()).unwrap_or_else(|e| panic!("{e}"));
        let ev = json
            .as_array()
            .and_then(|a| a.iter().find(|e| e["type"] == "carrier_skipped"))
            .unwrap_or_else(|| panic!("in the status events: {json}"));
        assert_eq!(ev["carrier"], "twilio");
        assert_eq!(ev["kind"], "carrier_down");
        assert_eq!(d.level_deadline(), Some(T0.plus(LEVEL)), "not paused");
    }

    #[test]
    fn replies_to_the_customer_go_only_through_the_business_line_carriers() {
        let line = n("+16195550000");
        let policy = Policy::simple(n("+16195550101"), n("+18583354807"), LEVEL)
            .and_then(|p| {
                p.with_carriers(vec![
                    CarrierNumber {
                        carrier: "twilio".into(),
                        number: line,
                    },
                    CarrierNumber {
                        carrier: "aws-sms".into(),
                        number: n("+16195550900"),
                    },
                ])
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let text = InboundText {
            sid: "SMin1".parse().unwrap_or_else(|e| panic!("{e}")),
            from: n("+16195550100"),
            to: line,
            body: "hello".into(),
            media: Vec::new(),
        };
        let id = DispatchId::new(T0, 1);
        let tag = "K7".parse().unwrap_or_else(|e| panic!("{e}"));
        let (mut d, fx) =
            Dispatch::open(id, tag, Arc::new(policy), text, T0).unwrap_or_else(|e| panic!("{e}"));
        let forward = fx
            .iter()
            .find_map(|e| match e {
                Effect::Send(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("a forward"));
        assert_eq!(
            forward.routes.len(),
            2,
            "a dispatcher may get either number"
        );
        let reply = InboundText {
            sid: "SMin2".parse().unwrap_or_else(|e| panic!("{e}")),
            from: n("+16195550101"),
            to: line,
            body: "on my way".into(),
            media: Vec::new(),
        };
        let fx = ok(
            &mut d,
            T0,
            Input::DispatcherText {
                text: reply,
                route: crate::RouteReason::Only,
            },
        );
        let to_customer = fx
            .iter()
            .find_map(|e| match e {
                Effect::Send(m) if m.to == n("+16195550100") => Some(m.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("a reply"));
        assert_eq!(to_customer.routes.len(), 1);
        assert_eq!(to_customer.routes[0].number, line);
        assert_eq!(d.legs()[1].purpose, Purpose::Reply);
    }

    fn two_carrier_dispatch() -> Dispatch {
        let line = n("+16195550000");
        let policy = Policy::simple(n("+16195550101"), n("+18583354807"), LEVEL)
            .and_then(|p| {
                p.with_carriers(vec![
                    CarrierNumber {
                        carrier: "twilio".into(),
                        number: line,
                    },
                    CarrierNumber {
                        carrier: "aws-sms".into(),
                        number: n("+16195550900"),
                    },
                ])
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let text = InboundText {
            sid: "SMin1".parse().unwrap_or_else(|e| panic!("{e}")),
            from: n("+16195550100"),
            to: line,
            body: "hello".into(),
            media: Vec::new(),
        };
        let id = DispatchId::new(T0, 1);
        let tag = "K7".parse().unwrap_or_else(|e| panic!("{e}"));
        let (d, _) =
            Dispatch::open(id, tag, Arc::new(policy), text, T0).unwrap_or_else(|e| panic!("{e}"));
        d
    }

    #[test]
    fn a_carrier_wide_delivery_failure_resends_the_text_through_another_carrier_once() {
        use crate::input::{DeliveryError, DeliveryReport, ErrorClass};
        let mut d = two_carrier_dispatch();
        let mut receipt = SendReceipt::new("SMtw1".parse().unwrap_or_else(|e| panic!("{e}")));
        receipt.via = Some(Via {
            carrier: "twilio".into(),
            from: n("+16195550000"),
        });
        ok(
            &mut d,
            T0,
            Input::SendOutcome {
                leg: 0,
                result: Ok(receipt),
            },
        );
        let filtered = |sid: &str| {
            Input::Delivery(DeliveryReport {
                sid: sid.parse().unwrap_or_else(|e| panic!("{e}")),
                status: DeliveryStatus::Undelivered,
                error: Some(DeliveryError {
                    code: 30007,
                    class: ErrorClass::Carrier,
                }),
            })
        };
        let fx = ok(&mut d, T0, filtered("SMtw1"));
        assert_eq!(kinds(&fx), ["delivery", "carrier_skipped"]);
        let again = fx
            .iter()
            .find_map(|e| match e {
                Effect::Send(m) => Some(m.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("sent again"));
        assert_eq!((again.leg, again.to), (1, n("+16195550101")));
        assert_eq!(again.avoid, ["twilio"]);
        assert_eq!(again.routes.len(), 1);
        assert_eq!(again.routes[0].carrier, "aws-sms");
        assert!(d.unreachable().is_empty());
        assert_eq!(
            d.level(),
            0,
            "no escalation: the same step, another carrier"
        );

        // The AWS copy fails alike: no carrier is left, so the step
        // escalates as for any failed text, still blaming nobody.
        let mut receipt = SendReceipt::new("SMaws1".parse().unwrap_or_else(|e| panic!("{e}")));
        receipt.via = Some(Via {
            carrier: "aws-sms".into(),
            from: n("+16195550900"),
        });
        ok(
            &mut d,
            T0,
            Input::SendOutcome {
                leg: 1,
                result: Ok(receipt),
            },
        );
        let fx = ok(&mut d, T0, filtered("SMaws1"));
        assert!(kinds(&fx).contains(&"escalated"), "{:?}", kinds(&fx));
        assert!(d.unreachable().is_empty());
        assert_eq!(d.level(), 1);
        // A duplicate of the first report changes nothing.
        assert!(ok(&mut d, T0, filtered("SMtw1")).is_empty());
    }

    #[test]
    fn bad_carrier_lists_are_refused_with_their_field() {
        let base = Policy::simple(n("+16195550101"), n("+18583354807"), LEVEL)
            .unwrap_or_else(|e| panic!("{e}"));
        let c = |carrier: &str, number: &str| CarrierNumber {
            carrier: carrier.into(),
            number: n(number),
        };
        for (list, field) in [
            (vec![c("Twilio!", "+16195550000")], "carriers[0]"),
            (
                vec![c("twilio", "+16195550000"), c("twilio", "+16195550900")],
                "carriers[1]",
            ),
            (
                vec![c("twilio", "+16195550000"), c("aws-sms", "+16195550000")],
                "carriers[1]",
            ),
            (vec![c("twilio", "+16195550101")], "carriers[0]"),
        ] {
            let e = base
                .clone()
                .with_carriers(list)
                .expect_err("a bad carrier list");
            assert_eq!(e.field(), field, "{e}");
        }
        let toml = "[[carriers]]\ncarrier = \"twilio\"\nnumber = \"+16195550000\"\n\
                    [[carriers]]\ncarrier = \"aws-sms\"\nnumber = \"+16195550900\"\n\
                    [[levels]]\ntargets = [\"+16195550101\"]\n";
        let p = Policy::from_toml(toml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.carriers().len(), 2);
        assert_eq!(p.carriers()[1].to_string(), "aws-sms +16195550900");
        let e = Policy::from_toml(
            "[[carriers]]\ncarrier = \"twilio\"\n[[levels]]\ntargets = [\"+16195550101\"]\n",
        )
        .expect_err("no number");
        assert_eq!(e.field, "carriers[0].number");
    }
}
