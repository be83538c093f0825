//! The job-sync cursor: how far a dispatch's texts and milestones have
//! reached the host's job system ([`JobSync`]), what it still owes it, in
//! order ([`JobWork`]), and the inputs that move the cursor
//! ([`crate::Input::EnableJobSync`], [`crate::Input::JobSynced`],
//! [`crate::Input::PauseJobSync`], [`crate::Input::LinkJob`]). The driver makes the
//! calls (see [`crate::Jobs`]) and feeds back what the job system took;
//! the dispatch keeps the cursor.
//!
//! What is owed is derived from the record alone: received texts in thread
//! order and sent legs in leg order once their outcome is known (a pending
//! leg holds back the legs after it, not the received texts), the first
//! sent forward of each step as a milestone, then the ack, failed and
//! closed milestones. The walk is the same for the driver (which turns each
//! owed item into a [`JobMessage`] or [`Milestone`]) and for
//! [`crate::Input::JobSynced`] (which moves the cursor past the items recorded).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Dispatch, Fx};
use crate::event::EventKind;
use crate::input::{Actor, DeliveryStatus, fit_chars};
use crate::jobs::{JobMessage, Milestone, MilestoneKind, Origin};
use crate::record::{Direction, Leg, Purpose, State};
use crate::types::{JobId, Timestamp};

/// How long after a change a dispatch waits for the driver to sync it to
/// the host's job system before a sweep does it (a crash in between).
pub const JOB_SYNC_GRACE: Duration = Duration::from_secs(60);

/// The first retry delay after a failed [`crate::Jobs`] call.
pub const JOB_RETRY_MIN: Duration = Duration::from_secs(5);

/// The longest retry delay after repeated [`crate::Jobs`] failures.
pub const JOB_RETRY_MAX: Duration = Duration::from_secs(10 * 60);

/// How far a dispatch's texts and milestones have reached its job. Saved
/// with the dispatch; moved only by the job-sync inputs (see
/// [`crate::Input::JobSynced`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSync {
    /// Whether [`crate::Jobs::resolve`] has answered (the job, or none).
    #[serde(default)]
    pub resolved: bool,
    /// Thread entries already examined.
    #[serde(default)]
    pub thread: u32,
    /// Legs already examined.
    #[serde(default)]
    pub legs: u32,
    /// Whether the ack milestone was recorded.
    #[serde(default)]
    pub acked: bool,
    /// Whether the failed milestone was recorded.
    #[serde(default)]
    pub failed: bool,
    /// Whether the closed milestone was recorded.
    #[serde(default)]
    pub closed: bool,
    /// Failed attempts in a row.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// When the sweep tries again after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// The last failure's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl JobSync {
    /// The retry delay after `failures` failures in a row.
    pub fn backoff(failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(16);
        JOB_RETRY_MIN
            .saturating_mul(1u32 << shift)
            .min(JOB_RETRY_MAX)
    }
}

/// One call owed to the job system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobItem {
    /// A text for the message log.
    Message(JobMessage),
    /// A milestone for the job record.
    Milestone(Milestone),
}

impl JobItem {
    /// The idempotency key.
    pub(crate) fn key(&self) -> &str {
        match self {
            JobItem::Message(m) => &m.key,
            JobItem::Milestone(m) => &m.key,
        }
    }
}

/// Everything a dispatch owes its job, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct JobWork {
    /// Whether `resolve` must be asked first (then `items` is empty: what
    /// is owed depends on the answer).
    pub(crate) resolve: bool,
    /// The calls, in order.
    pub(crate) items: Vec<JobItem>,
}

impl JobWork {
    /// Whether nothing is owed.
    pub(crate) fn is_empty(&self) -> bool {
        !self.resolve && self.items.is_empty()
    }
}

/// One call owed, by where it is in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    /// A received text: a thread entry.
    Received(usize),
    /// The first sent forward of a step: its milestone.
    StepReached(usize),
    /// A sent leg.
    Sent(usize),
    /// The ack milestone.
    Acked,
    /// The failed milestone.
    Failed,
    /// The closed milestone.
    Closed,
}

/// Whether a leg's text went out (or may have).
fn was_sent(leg: &Leg) -> bool {
    leg.sid.is_some() || leg.status == DeliveryStatus::Unknown
}

/// Walks what `d` owes a job beyond the cursor `start` (when it has a job:
/// `linked`), calling `visit` with each owed call and the cursor once it is
/// recorded; returns the cursor once everything is (it also passes
/// entries that need no call, such as texts that were never sent).
fn walk(
    d: &Dispatch,
    start: &JobSync,
    linked: bool,
    mut visit: impl FnMut(Owed, &JobSync),
) -> JobSync {
    let mut cur = start.clone();
    if !linked {
        return cur;
    }
    let thread = d.thread();
    let legs = d.legs();
    // The cursor counts from the dispatch's first entry; the record keeps
    // entries from `moved` on. Entries move out only once the job has
    // them, or before the dispatch had a job (those are not owed).
    let (thread_moved, legs_moved) = (d.history().thread, d.history().legs);
    cur.thread = cur.thread.max(thread_moved);
    cur.legs = cur.legs.max(legs_moved);
    // Merge received texts and settled legs by time; a pending leg holds
    // back the legs after it (their order matters to the log), not the
    // received texts.
    loop {
        let next_in = thread.get((cur.thread - thread_moved) as usize);
        let next_leg = legs
            .get((cur.legs - legs_moved) as usize)
            .filter(|l| l.status != DeliveryStatus::Pending);
        let take_leg = match (next_in, next_leg) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            // A leg created before the next thread entry existed comes
            // first; records without that order fall back to time.
            (Some(e), Some(l)) => match l.after_thread {
                Some(after) => after <= cur.thread,
                None => l.created_at < e.at,
            },
        };
        if take_leg {
            let i = (cur.legs - legs_moved) as usize;
            let leg = &legs[i];
            if !was_sent(leg) {
                cur.legs += 1;
                continue;
            }
            if matches!(leg.purpose, Purpose::Forward { .. })
                && !legs[..i]
                    .iter()
                    .any(|l| l.purpose == leg.purpose && was_sent(l))
            {
                // Recorded, the milestone leaves the leg itself still owed.
                visit(Owed::StepReached(i), &cur);
            }
            cur.legs += 1;
            visit(Owed::Sent(i), &cur);
        } else {
            let i = (cur.thread - thread_moved) as usize;
            let e = &thread[i];
            cur.thread += 1;
            if let (Direction::Inbound, Some(_), Actor::Phone(_)) = (e.direction, &e.sid, &e.from) {
                visit(Owed::Received(i), &cur);
            }
        }
    }
    if d.ack().is_some() && !cur.acked {
        cur.acked = true;
        visit(Owed::Acked, &cur);
    }
    if d.state() == State::Failed && !cur.failed {
        cur.failed = true;
        visit(Owed::Failed, &cur);
    }
    if d.closed_at().is_some() && !cur.closed {
        cur.closed = true;
        visit(Owed::Closed, &cur);
    }
    cur
}

impl Dispatch {
    /// What it owes its job system, in order.
    pub(crate) fn job_work(&self) -> JobWork {
        self.job_work_after(None)
    }

    /// What it owes its job system once `resolved` (what
    /// [`crate::Jobs::resolve`] answered, if it was asked) is recorded: what
    /// [`Dispatch::job_work`] will say after [`crate::Input::JobSynced`] with it.
    pub(crate) fn job_work_after(&self, resolved: Option<&Option<JobId>>) -> JobWork {
        let start = self.job_sync.as_deref().cloned().unwrap_or_default();
        if !start.resolved && resolved.is_none() {
            return JobWork {
                resolve: true,
                items: Vec::new(),
            };
        }
        let linked = self.job_id.is_some() || resolved.is_some_and(Option::is_some);
        let mut items = Vec::new();
        walk(self, &start, linked, |owed, _| {
            items.push(self.job_item(owed))
        });
        JobWork {
            resolve: false,
            items,
        }
    }

    /// The call an owed item is.
    fn job_item(&self, owed: Owed) -> JobItem {
        match owed {
            Owed::Received(i) => {
                let e = &self.thread[i];
                let from = match e.from {
                    Actor::Phone(p) => p,
                    _ => self.customer,
                };
                JobItem::Message(JobMessage {
                    key: format!("in:{}", e.sid.as_ref().map_or("", |s| s.as_str())),
                    dispatch: self.id,
                    tag: self.tag,
                    direction: Direction::Inbound,
                    origin: if from == self.customer {
                        Origin::Customer
                    } else {
                        Origin::Dispatcher
                    },
                    author: None,
                    from,
                    to: self.line,
                    body: e.body.clone(),
                    media: e.media.clone(),
                    sid: e.sid.clone(),
                    purpose: None,
                    at: e.at,
                })
            }
            Owed::StepReached(i) => {
                let leg = &self.legs[i];
                let (round, level) = match leg.purpose {
                    Purpose::Forward { round, level } => (round, level),
                    _ => (self.round, self.level),
                };
                let kind = if (round, level) == (0, 0) {
                    MilestoneKind::Forwarded
                } else {
                    MilestoneKind::Escalated
                };
                JobItem::Milestone(Milestone {
                    key: format!("{}:{}:{round}:{level}", self.id, kind_name(kind)),
                    dispatch: self.id,
                    kind,
                    at: leg.sent_at.unwrap_or(leg.updated_at),
                    round: Some(round),
                    level: Some(level),
                    to: Some(leg.to),
                    by: None,
                    via: None,
                })
            }
            Owed::Sent(i) => JobItem::Message(self.outbound_message(&self.legs[i])),
            Owed::Acked => {
                let ack = self.ack.as_deref();
                JobItem::Milestone(Milestone {
                    key: format!("{}:acked", self.id),
                    dispatch: self.id,
                    kind: MilestoneKind::Acked,
                    at: ack.map_or(self.updated_at, |a| a.at),
                    round: None,
                    level: ack.and_then(|a| a.level),
                    to: None,
                    by: ack.map(|a| a.by.clone()),
                    via: ack.map(|a| a.via),
                })
            }
            Owed::Failed => {
                let at = self
                    .events
                    .iter()
                    .rev()
                    .find(|e| matches!(e.kind, EventKind::Exhausted))
                    .map_or(self.updated_at, |e| e.at);
                JobItem::Milestone(self.terminal(MilestoneKind::Failed, at, None))
            }
            Owed::Closed => {
                let by = self.events.iter().rev().find_map(|e| match &e.kind {
                    EventKind::Closed { by } => Some(by.clone()),
                    _ => None,
                });
                let at = self.closed_at.unwrap_or(self.updated_at);
                JobItem::Milestone(self.terminal(MilestoneKind::Closed, at, by))
            }
        }
    }

    fn terminal(&self, kind: MilestoneKind, at: Timestamp, by: Option<Actor>) -> Milestone {
        Milestone {
            key: format!("{}:{}", self.id, kind_name(kind)),
            dispatch: self.id,
            kind,
            at,
            round: None,
            level: None,
            to: None,
            by,
            via: None,
        }
    }

    fn outbound_message(&self, leg: &Leg) -> JobMessage {
        let (origin, author) = match leg.purpose {
            Purpose::Reply => {
                let by = self
                    .thread
                    .iter()
                    .find(|e| e.direction == Direction::Outbound && e.leg == Some(leg.index))
                    .map(|e| e.from.clone());
                match by {
                    Some(Actor::Operator(name)) => {
                        (Origin::Dispatcher, Some(Actor::Operator(name)))
                    }
                    _ => (Origin::Dispatcher, None),
                }
            }
            Purpose::Forward { .. } | Purpose::FollowUp | Purpose::Notice => (Origin::Relay, None),
        };
        JobMessage {
            key: format!("out:{}:{}", self.id, leg.index),
            dispatch: self.id,
            tag: self.tag,
            direction: Direction::Outbound,
            origin,
            author,
            from: self.line,
            to: leg.to,
            body: leg.body.clone(),
            media: Vec::new(),
            sid: leg.sid.clone(),
            purpose: Some(leg.purpose),
            at: leg.sent_at.unwrap_or(leg.created_at),
        }
    }

    // ----- the inputs -----------------------------------------------------

    /// [`crate::Input::EnableJobSync`]: a cursor from the start; a sync is owed.
    pub(super) fn on_enable_job_sync(&mut self, now: Timestamp, fx: &mut Fx<'_>) {
        if self.job_sync.is_none() {
            self.job_sync = Some(Box::default());
            self.owe_job_sync(now);
            self.emit(now, fx, EventKind::JobSyncEnabled);
        }
    }

    /// [`crate::Input::LinkJob`].
    pub(super) fn on_link_job(&mut self, now: Timestamp, job: JobId, sync: bool, fx: &mut Fx<'_>) {
        if self.job_id.as_ref() == Some(&job) {
            return;
        }
        self.job_id = Some(job.clone());
        if sync {
            self.job_sync = Some(Box::new(JobSync {
                resolved: true,
                ..JobSync::default()
            }));
        }
        self.emit(now, fx, EventKind::JobLinked { job });
        self.owe_job_sync(now);
    }

    /// [`crate::Input::JobSynced`].
    pub(super) fn on_job_synced(
        &mut self,
        now: Timestamp,
        resolved: Option<Option<JobId>>,
        recorded: u32,
        result: Result<(), String>,
        fx: &mut Fx<'_>,
    ) {
        let before = (self.job_id.clone(), self.job_sync.clone());
        let js = self.job_sync.get_or_insert_with(Box::default);
        if let Some(job) = resolved
            && !js.resolved
        {
            js.resolved = true;
            if self.job_id.is_none()
                && let Some(job) = job
            {
                self.job_id = Some(job.clone());
                self.emit(now, fx, EventKind::JobLinked { job });
            }
        }
        // Past the first `recorded` calls owed, or past everything owed.
        let start = self.job_sync.as_deref().cloned().unwrap_or_default();
        let reached = if start.resolved {
            let (mut n, mut after) = (0, None);
            let end = walk(self, &start, self.job_id.is_some(), |_, cur| {
                n += 1;
                if n == recorded {
                    after = Some(cur.clone());
                }
            });
            if result.is_ok() { Some(end) } else { after }
        } else {
            None
        };
        let js = self.job_sync.get_or_insert_with(Box::default);
        if let Some(c) = reached {
            js.thread = js.thread.max(c.thread);
            js.legs = js.legs.max(c.legs);
            js.acked |= c.acked;
            js.failed |= c.failed;
            js.closed |= c.closed;
        }
        let event = match result {
            Ok(()) => {
                let failures = std::mem::take(&mut js.failures);
                js.retry_at = None;
                js.last_error = None;
                (failures > 0).then_some(EventKind::JobSyncRecovered { failures })
            }
            Err(error) => {
                js.failures = js.failures.saturating_add(1);
                let failures = js.failures;
                let retry_at = now.plus(JobSync::backoff(failures));
                js.retry_at = Some(retry_at);
                let error = fit_chars(&error, 500);
                js.last_error = Some(error.clone());
                let failed = EventKind::JobSyncFailed {
                    error,
                    failures,
                    retry_at,
                };
                // The 1st, 2nd, 4th, 8th... failure in a row is kept: a
                // long outage must not push the dispatch's own history out
                // of its kept events (the status always has the count and
                // the last error). Every one is published.
                if failures.is_power_of_two() {
                    Some(failed)
                } else {
                    self.publish_only(now, fx, failed);
                    None
                }
            }
        };
        if let Some(kind) = event {
            self.emit(now, fx, kind);
        }
        if fx.out.is_empty() && (&self.job_id, &self.job_sync) != (&before.0, &before.1) {
            self.publish_only(now, fx, EventKind::JobSynced { recorded });
        }
    }

    /// [`crate::Input::PauseJobSync`].
    pub(super) fn on_pause_job_sync(&mut self, now: Timestamp, fx: &mut Fx<'_>) {
        if let Some(js) = self.job_sync.as_deref_mut()
            && js.retry_at.take().is_some()
        {
            self.publish_only(now, fx, EventKind::JobSyncPaused);
        }
    }

    /// A sync is owed (from now on, if it was not already): the driver
    /// syncs after the transition is saved; if it crashes first, a sweep
    /// does after [`JOB_SYNC_GRACE`].
    pub(super) fn owe_job_sync(&mut self, now: Timestamp) {
        if let Some(js) = self.job_sync.as_deref_mut()
            && js.retry_at.is_none()
        {
            js.retry_at = Some(now.plus(JOB_SYNC_GRACE));
        }
    }
}

fn kind_name(kind: MilestoneKind) -> &'static str {
    match kind {
        MilestoneKind::Forwarded => "forwarded",
        MilestoneKind::Escalated => "escalated",
        MilestoneKind::Acked => "acked",
        MilestoneKind::Failed => "failed",
        MilestoneKind::Closed => "closed",
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::T0;
    use super::*;
    use crate::event::Effect;
    use crate::input::Input;

    fn opened() -> Dispatch {
        super::super::fixture::opened(JOB_RETRY_MAX)
    }

    fn handle(d: &mut Dispatch, input: Input) -> Vec<Effect> {
        d.handle(T0, input).unwrap_or_else(|e| panic!("{e}"))
    }

    fn synced(recorded: u32) -> Input {
        Input::JobSynced {
            resolved: None,
            recorded,
            result: Ok(()),
        }
    }

    #[test]
    fn job_inputs_that_change_nothing_have_no_effects() {
        let mut d = opened();
        assert!(handle(&mut d, Input::PauseJobSync).is_empty(), "no cursor");
        assert_eq!(handle(&mut d, Input::EnableJobSync).len(), 1);
        assert!(
            handle(&mut d, Input::EnableJobSync).is_empty(),
            "already on"
        );
        let job: JobId = "J-1".parse().unwrap_or_else(|e| panic!("{e}"));
        let link = Input::LinkJob { job, sync: true };
        assert_eq!(handle(&mut d, link.clone()).len(), 1);
        assert!(handle(&mut d, link).is_empty(), "the same job");
        // The text is owed; recording it moves the cursor (one event,
        // published only), and a second report of the same changes nothing.
        assert_eq!(d.job_work().items.len(), 1, "the received text");
        let fx = handle(&mut d, synced(1));
        assert!(matches!(
            fx.as_slice(),
            [Effect::Publish(e)] if e.kind == EventKind::JobSynced { recorded: 1 }
        ));
        assert!(d.events().iter().all(|e| e.kind.name() != "job_synced"));
        assert!(d.job_work().is_empty());
        assert!(handle(&mut d, synced(0)).is_empty(), "nothing new");
        assert!(
            handle(&mut d, Input::PauseJobSync).is_empty(),
            "no retry owed"
        );
    }

    #[test]
    fn a_failed_sync_moves_the_cursor_past_what_was_recorded() {
        let mut d = opened();
        let job: JobId = "J-1".parse().unwrap_or_else(|e| panic!("{e}"));
        handle(&mut d, Input::LinkJob { job, sync: true });
        let leg = 0;
        let sid: crate::types::ProviderMessageId =
            "SMout1".parse().unwrap_or_else(|e| panic!("{e}"));
        d.handle(
            T0,
            Input::SendOutcome {
                leg,
                result: Ok(sid.into()),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        // The text, the forward's milestone, the forward.
        assert_eq!(d.job_work().items.len(), 3);
        let failed = Input::JobSynced {
            resolved: None,
            recorded: 2,
            result: Err("job system down".into()),
        };
        assert!(!handle(&mut d, failed).is_empty());
        // The text is recorded; the forward is still owed (its milestone,
        // recorded, comes again: the job system absorbs a repeated key).
        let work = d.job_work();
        let left: Vec<&str> = work.items.iter().map(JobItem::key).collect();
        let id = d.id();
        assert_eq!(
            left,
            vec![format!("{id}:forwarded:0:0"), format!("out:{id}:0")]
        );
        let sync = d.job_sync().unwrap_or_else(|| panic!("a cursor"));
        assert_eq!(sync.failures, 1);
        assert_eq!(sync.retry_at, Some(T0.plus(JOB_RETRY_MIN)));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(JobSync::backoff(1), JOB_RETRY_MIN);
        assert_eq!(JobSync::backoff(2), JOB_RETRY_MIN * 2);
        assert_eq!(JobSync::backoff(3), JOB_RETRY_MIN * 4);
        assert_eq!(JobSync::backoff(40), JOB_RETRY_MAX);
        assert_eq!(JobSync::backoff(u32::MAX), JOB_RETRY_MAX);
    }
}
