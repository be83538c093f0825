//! Steps and escalation: where a dispatch goes next (the next level, a
//! hold for an on-duty window, the next round, failed), acks, closing,
//! replies, and who holds the dispatch now.

use std::sync::Arc;

use super::{Dispatch, Fx};
use crate::event::{EscalationReason, EventKind};
use crate::input::{Actor, fit_body};
use crate::policy::{Policy, WhenClosed};
use crate::record::{Ack, AckVia, Direction, Purpose, State, ThreadEntry};
use crate::types::{PhoneNumber, Timestamp};

impl Dispatch {
    /// The level's timer fired: a hold ends (the same step, now on duty),
    /// or the level timed out and the dispatch escalates.
    pub(super) fn fire_level(&mut self, now: Timestamp, fx: &mut Fx<'_>) {
        if self.holding_until.is_some() {
            // The window the dispatch waited for opened: the same step.
            self.holding_until = None;
            self.enter_step(now, self.round, self.level, fx);
        } else {
            self.escalate(now, EscalationReason::Timeout, fx);
        }
    }

    /// Moves to `(round, level)`, skipping levels with nobody reachable,
    /// passing over levels that are off duty for the next one on duty (B7),
    /// repeating the chain per policy, failing past the last round. If
    /// nobody is on duty before the chain runs out, it holds instead: for
    /// the first off-duty level ([`WhenClosed::Hold`]) or for the one that
    /// comes on duty first ([`WhenClosed::Skip`]).
    pub(super) fn enter_step(&mut self, now: Timestamp, round: u32, level: u32, fx: &mut Fx<'_>) {
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

    pub(super) fn escalate(&mut self, now: Timestamp, reason: EscalationReason, fx: &mut Fx<'_>) {
        self.escalate_by(now, reason, None, fx);
    }

    /// [`Dispatch::escalate`], naming who asked for it.
    pub(super) fn escalate_by(
        &mut self,
        now: Timestamp,
        reason: EscalationReason,
        by: Option<Actor>,
        fx: &mut Fx<'_>,
    ) {
        self.emit(
            now,
            fx,
            EventKind::Escalated {
                from_level: self.level,
                reason,
                by,
            },
        );
        self.enter_step(now, self.round, self.level + 1, fx);
    }

    /// Records an ack; false if there already was one.
    pub(super) fn record_ack(
        &mut self,
        now: Timestamp,
        by: Actor,
        via: AckVia,
        fx: &mut Fx<'_>,
    ) -> bool {
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
        self.ack = Some(Box::new(Ack {
            by: by.clone(),
            at: now,
            via,
            level,
        }));
        if self.state == State::Open {
            self.state = State::Acked;
            self.level_deadline = None;
            self.holding_until = None;
        }
        self.emit(now, fx, EventKind::Acked { by, level });
        true
    }

    pub(super) fn close(&mut self, now: Timestamp, by: Actor, fx: &mut Fx<'_>) {
        self.state = State::Closed;
        self.level_deadline = None;
        self.holding_until = None;
        self.closed_at = Some(now);
        self.emit(now, fx, EventKind::Closed { by });
    }

    pub(super) fn reply(&mut self, now: Timestamp, by: Actor, body: String, fx: &mut Fx<'_>) {
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

    pub(super) fn ignored(&mut self, now: Timestamp, fx: &mut Fx<'_>, reason: &str) {
        self.emit(
            now,
            fx,
            EventKind::Ignored {
                reason: reason.to_owned(),
            },
        );
    }

    pub(super) fn after_leg_failed(
        &mut self,
        now: Timestamp,
        i: usize,
        unreachable: bool,
        fx: &mut Fx<'_>,
    ) {
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

    /// Whether every text of the current step failed or went to someone
    /// who can no longer be texted (false while holding: no texts yet).
    pub(super) fn current_step_unreachable(&self) -> bool {
        let current = Purpose::Forward {
            round: self.round,
            level: self.level,
        };
        let mut legs = self.legs.iter().filter(|l| l.purpose == current).peekable();
        legs.peek().is_some() && legs.all(|l| l.status.is_failure() || !self.can_text(l.to))
    }

    /// Who gets a customer's later texts: the acker if a dispatcher acked,
    /// else the current step's targets that did not fail and are on duty.
    pub(super) fn current_holders(&self, now: Timestamp) -> Vec<PhoneNumber> {
        if let Some(Ack {
            by: Actor::Phone(p),
            ..
        }) = self.ack.as_deref()
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
