//! Previews computed by the state machine itself, on copies: what a
//! dispatch does when its level timer fires ([`Dispatch::next_step`]), who
//! holds it now ([`Dispatch::holders`]), and what a customer's text
//! arriving at an instant would do first ([`first_step`], the on-call
//! preview of `qdn-relay policy check` and the console). No rule is
//! written twice: each answer is what `open` or `handle` did on a copy.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Dispatch;
use crate::event::{Effect, EventKind};
use crate::input::{InboundText, Input};
use crate::policy::Policy;
use crate::types::{DispatchId, PhoneNumber, Tag, Timestamp};

/// One step of an escalation as the state machine plans it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// A level is texted.
    Forward {
        /// The round (0-based).
        round: u32,
        /// The level (0-based).
        level: u32,
        /// Who is texted.
        to: Vec<PhoneNumber>,
    },
    /// Nobody is on duty: the dispatch holds until a level's window opens.
    Hold {
        /// The round it will text.
        round: u32,
        /// The level it will text.
        level: u32,
        /// When the window opens.
        until: Timestamp,
    },
    /// Every level of every round was tried: the dispatch fails.
    Fail,
}

impl Step {
    /// The first step among a transition's events.
    fn among<'a>(events: impl IntoIterator<Item = &'a EventKind>) -> Option<Step> {
        events.into_iter().find_map(|e| match e {
            EventKind::Forwarded { round, level, to } => Some(Step::Forward {
                round: *round,
                level: *level,
                to: to.clone(),
            }),
            EventKind::Holding {
                round,
                level,
                until,
            } => Some(Step::Hold {
                round: *round,
                level: *level,
                until: *until,
            }),
            EventKind::Exhausted => Some(Step::Fail),
            _ => None,
        })
    }
}

impl Dispatch {
    /// Who holds the dispatch at `now`: the dispatcher who acknowledged
    /// by text, else the current level's targets that did not fail and
    /// are on duty (who a customer's next text reaches).
    pub fn holders(&self, now: Timestamp) -> Vec<PhoneNumber> {
        self.current_holders(now)
    }

    /// What the dispatch does when its level timer fires, and when: the
    /// next level (or the same one, when a hold ends), a hold, or
    /// failing. `None` when nothing is waiting (acknowledged, closed,
    /// failed). Computed by handling the timeout on a copy.
    pub fn next_step(&self) -> Option<(Timestamp, Step)> {
        let at = self.level_deadline()?;
        let mut probe = self.clone();
        let effects = probe.handle(at, Input::Timeout).ok()?;
        let step = Step::among(effects.iter().filter_map(|e| match e {
            Effect::Publish(ev) => Some(&ev.kind),
            _ => None,
        }))?;
        Some((at, step))
    }
}

/// What a customer's text arriving at `at` would do first under `policy`
/// (a level texted, a hold, or failing at once), as [`Dispatch::open`]
/// decides it for a made-up customer and line that no level targets.
/// `None` if the policy leaves no such numbers.
pub fn first_step(policy: &Arc<Policy>, at: Timestamp) -> Option<Step> {
    let pick = |base: u64| {
        (0..100)
            .filter_map(|k| PhoneNumber::from_u64(base + k))
            .find(|n| !policy.is_target(*n) && !policy.relay_lines().contains(n))
    };
    let (line, customer) = (pick(15_555_550_000)?, pick(15_555_550_200)?);
    let text = InboundText {
        sid: "SMpreview".parse().ok()?,
        from: customer,
        to: line,
        body: "preview".to_owned(),
        media: Vec::new(),
    };
    let tag: Tag = "P1".parse().ok()?;
    let (d, _) = Dispatch::open(DispatchId::new(at, 1), tag, Arc::clone(policy), text, at).ok()?;
    Step::among(d.events().iter().map(|e| &e.kind))
}

/// [`first_step`] over `[from, to)`, cut where any level's on-duty
/// periods begin or end: each stretch with the step a text arriving in it
/// would take first (neighbouring stretches with the same step merged).
pub fn first_steps(
    policy: &Arc<Policy>,
    from: Timestamp,
    to: Timestamp,
) -> Vec<(Timestamp, Timestamp, Option<Step>)> {
    let mut cuts = vec![from, to];
    for (i, l) in policy.levels().iter().enumerate() {
        if policy.hours(i).is_none() {
            continue;
        }
        for &n in &l.targets {
            for (a, b) in policy.on_duty_periods(i, n, from, to) {
                cuts.push(a);
                cuts.push(b);
            }
        }
    }
    cuts.sort();
    cuts.dedup();
    let mut out: Vec<(Timestamp, Timestamp, Option<Step>)> = Vec::new();
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let step = first_step(policy, a);
        match out.last_mut() {
            Some(last) if last.2 == step && last.1 == a => last.1 = b,
            _ => out.push((a, b, step)),
        }
    }
    out
}
