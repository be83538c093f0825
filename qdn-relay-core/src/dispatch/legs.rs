//! Legs: the outbox. Every text is queued as a pending leg (saved before
//! the provider is called), retried with backoff, deferred, merged or
//! skipped; what may be texted at all.

use std::time::Duration;

use super::{Dispatch, Fx};
use crate::carrier::CarrierSkip;
use crate::event::{Effect, EventKind, OutboundMessage};
use crate::input::{DeliveryStatus, SendErrorKind, SkipReason, body_len};
use crate::policy::OverLimit;
use crate::record::{Leg, Purpose, State};
use crate::types::{DispatchId, PhoneNumber, ProviderMessageId, Timestamp, splitmix};

/// How long a pending send may stay unanswered before a sweep treats its
/// driver as crashed and sends it again. Provider calls must time out well
/// within it.
pub const OUTBOX_GRACE: Duration = Duration::from_secs(60);

/// How many times one text is tried before the relay gives up on it.
pub const MAX_SEND_ATTEMPTS: u32 = 5;

impl Dispatch {
    /// The outbox's timer fired: every pending leg due at `now` is sent
    /// again, or given up (too many attempts, or its recipient can no
    /// longer be texted).
    pub(super) fn fire_outbox(&mut self, now: Timestamp, fx: &mut Fx<'_>) {
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
                let (leg, purpose) = (l.index, l.purpose);
                self.emit(
                    now,
                    fx,
                    EventKind::SendFailed {
                        leg,
                        kind: SendErrorKind::Retryable,
                        code: None,
                        will_retry: false,
                        purpose: Some(purpose),
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
    }

    /// Queues a text, unless `to` is unreachable in this dispatch, opted
    /// out or a relay line, or was sent the same text within the policy's
    /// repeat-suppression window (then an event says so and nothing is
    /// queued).
    pub(super) fn new_leg(
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
        let index = self.next_leg_index();
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
            after_thread: Some(self.next_thread_pos()),
            via: None,
            carrier_waits: 0,
            held: false,
            avoid: Vec::new(),
        });
        let msg = self.outbound(self.legs.len() - 1);
        fx.out.push(Effect::Send(msg));
        Some(index)
    }

    /// Leg `i` failed carrier-wide after it was accepted (a delivery report
    /// of class [`crate::ErrorClass::is_carrier_wide`]): the same text goes
    /// to the same number as a new leg that avoids that carrier, if another
    /// of the line's carriers may send it and the leg still matters (a
    /// forward of the current step, or any other text while the dispatch
    /// is open). Returns whether it did.
    pub(super) fn resend_elsewhere(
        &mut self,
        now: Timestamp,
        i: usize,
        kind: SendErrorKind,
        code: Option<u32>,
        fx: &mut Fx<'_>,
    ) -> bool {
        let l = &self.legs[i];
        let Some(via) = &l.via else {
            return false;
        };
        let mut avoid = l.avoid.clone();
        avoid.push(via.carrier.clone());
        let another = self.policy.carriers().iter().any(|c| {
            !avoid.contains(&c.carrier) && (l.purpose != Purpose::Reply || c.number == self.line)
        });
        let current = Purpose::Forward {
            round: self.round,
            level: self.level,
        };
        let matters = match l.purpose {
            Purpose::Forward { .. } => self.state == State::Open && l.purpose == current,
            _ => self.state.is_open(),
        };
        if !another || !matters || self.why_not(l.to).is_some() {
            return false;
        }
        let (old, to, purpose, body, carrier) = (
            l.index,
            l.to,
            l.purpose,
            l.body.clone(),
            via.carrier.clone(),
        );
        let index = self.next_leg_index();
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
            after_thread: self.legs[i].after_thread,
            via: None,
            carrier_waits: 0,
            held: false,
            avoid,
        });
        for e in &mut self.thread {
            if e.leg == Some(old) {
                e.leg = Some(index);
            }
        }
        let skip = CarrierSkip {
            carrier,
            kind,
            code,
            degraded_until: None,
        };
        self.emit(now, fx, EventKind::CarrierSkipped { leg: old, skip });
        let msg = self.outbound(self.legs.len() - 1);
        fx.out.push(Effect::Send(msg));
        true
    }

    /// Marks a pending leg skipped: it is never sent.
    pub(super) fn skip_leg(
        &mut self,
        now: Timestamp,
        i: usize,
        reason: SkipReason,
        fx: &mut Fx<'_>,
    ) {
        let l = &mut self.legs[i];
        l.status = DeliveryStatus::Skipped;
        l.skipped = Some(reason);
        l.retry_at = None;
        l.updated_at = now;
        let (leg, to, purpose) = (l.index, l.to, Some(l.purpose));
        self.emit(
            now,
            fx,
            EventKind::Skipped {
                leg,
                to,
                reason,
                purpose,
            },
        );
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
    pub(super) fn mark_opted_out(
        &mut self,
        now: Timestamp,
        n: PhoneNumber,
        code: Option<u32>,
        fx: &mut Fx<'_>,
    ) -> bool {
        if self.opted_out.contains(&n) {
            return false;
        }
        self.opted_out.push(n);
        self.emit(now, fx, EventKind::OptedOut { number: n, code });
        true
    }

    /// A send to `n` failed with an opted-out error (class
    /// [`crate::ErrorClass::OptedOut`], `code` the provider's): recorded
    /// here, and in the relay's opt-outs for every dispatch
    /// ([`Effect::OptOut`]).
    pub(super) fn opted_out_by_failure(
        &mut self,
        now: Timestamp,
        n: PhoneNumber,
        code: Option<u32>,
        fx: &mut Fx<'_>,
    ) {
        if self.mark_opted_out(now, n, code, fx) {
            fx.out.push(Effect::OptOut { number: n, at: now });
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
        let candidates: Vec<usize> = (0..self.legs.len())
            .filter(|&j| {
                let l = &self.legs[j];
                // Waiting, not in flight: a deferral gives its attempt
                // back, so a leg handed to the provider (in this pass or
                // one that crashed) has attempts left over and is never
                // merged away.
                j != i
                    && l.to == to
                    && l.status == DeliveryStatus::Pending
                    && l.deferrals > 0
                    && l.attempts == 0
                    && matches!(l.purpose, Purpose::FollowUp | Purpose::Notice)
            })
            .collect();
        // As many as fit in one text, oldest first: the rest wait for the
        // next digest instead of being cut off the end of this one.
        let mut body = self.legs[i].body.clone();
        let mut others = Vec::with_capacity(candidates.len());
        for j in candidates {
            let before = body.len();
            body.push('\n');
            body.push_str(&self.legs[j].body);
            if body_len(&body) > crate::MAX_BODY_CHARS {
                body.truncate(before);
                break;
            }
            others.push(j);
        }
        if others.is_empty() {
            return;
        }
        self.legs[i].body = body;
        let into = self.legs[i].index;
        for &j in &others {
            self.skip_leg(now, j, SkipReason::Merged { into }, fx);
        }
        let legs = others.iter().map(|&j| self.legs[j].index).collect();
        self.emit(now, fx, EventKind::Merged { into, legs });
    }

    pub(super) fn outbound(&self, i: usize) -> OutboundMessage {
        let l = &self.legs[i];
        let validity_secs = match l.purpose {
            Purpose::Forward { level, .. } => self
                .policy
                .levels()
                .get(level as usize)
                .map(|s| s.timeout.as_secs().clamp(1, 36_000) as u32),
            _ => None,
        };
        // The customer sees the business line only: replies go through the
        // carriers that send from it.
        let routes = self
            .policy
            .carriers()
            .iter()
            .filter(|c| l.purpose != Purpose::Reply || c.number == self.line)
            .filter(|c| !l.avoid.contains(&c.carrier))
            .cloned()
            .collect();
        OutboundMessage {
            dispatch: self.id,
            leg: l.index,
            to: l.to,
            from: self.line,
            body: l.body.clone(),
            validity_secs,
            routes,
            avoid: l.avoid.clone(),
        }
    }

    // ----- who may be texted ----------------------------------------------

    pub(super) fn has_inbound(&self, sid: &ProviderMessageId) -> bool {
        self.thread.iter().any(|e| e.sid.as_ref() == Some(sid))
    }

    pub(super) fn was_notified(&self, n: PhoneNumber) -> bool {
        self.history().notified.iter().any(|(m, _)| *m == n)
            || self.legs.iter().any(|l| {
                l.to == n && matches!(l.purpose, Purpose::Forward { .. } | Purpose::FollowUp)
            })
    }

    /// Whether a dispatcher may be texted: not the customer, and nothing
    /// says not to.
    pub(super) fn can_text(&self, n: PhoneNumber) -> bool {
        n != self.customer && self.why_not(n).is_none()
    }

    /// Why nothing may be sent to `n`, if so.
    pub(super) fn why_not(&self, n: PhoneNumber) -> Option<SkipReason> {
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

    /// The message to send for a leg (used by the outbox), while the
    /// record keeps the leg.
    pub fn outbound_for(&self, leg: u32) -> Option<OutboundMessage> {
        self.leg_pos(leg).ok().flatten().map(|p| self.outbound(p))
    }
}

/// Exponential backoff with deterministic jitter: 5 s, 10 s, 20 s, … capped
/// at 5 minutes, plus up to a quarter more; at least what the provider asked.
pub(super) fn retry_backoff(
    id: DispatchId,
    leg: u32,
    attempts: u32,
    retry_after_ms: Option<u64>,
) -> Duration {
    let base = 5_000u64
        .saturating_mul(1 << attempts.saturating_sub(1).min(10))
        .min(300_000);
    let jitter = splitmix(id.as_u128() as u64 ^ (u64::from(leg) << 32) ^ u64::from(attempts))
        % (base / 4 + 1);
    Duration::from_millis((base + jitter).max(retry_after_ms.unwrap_or(0)))
}
