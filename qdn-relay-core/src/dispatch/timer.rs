//! The timer table: everything a dispatch waits for, one slot per kind
//! (as quinn-proto keeps a connection's timers). [`Dispatch::next_deadline`]
//! is the earliest slot, the one field stores index for the due query;
//! `handle(now, Input::Timeout)` acts on the slots expired at `now` and
//! nothing else, so calling it early, late or twice is safe.
//!
//! | timer | slot | set by | fires |
//! |---|---|---|---|
//! | [`Timer::Level`] | `level_deadline` (while open) | entering a step or a hold | the hold ends, or the level times out and escalates |
//! | [`Timer::Outbox`] | `outbox_at` | every change (the earliest retry of a pending leg) | due pending legs are (re)sent, or given up |
//! | [`Timer::JobSync`] | the job-sync cursor's `retry_at` | a change owed to the job system, a failed sync | nothing in the state machine: the driver syncs after the sweep's timeout |

use super::Dispatch;
use crate::input::DeliveryStatus;
use crate::types::Timestamp;

/// One of a dispatch's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The current level's ack timeout, or the end of a hold, while open.
    Level,
    /// The earliest retry of a pending leg (the outbox).
    Outbox,
    /// The next attempt to sync the host's job system.
    JobSync,
}

impl Dispatch {
    /// When `timer` fires, if it is set.
    pub(crate) fn timer(&self, timer: Timer) -> Option<Timestamp> {
        match timer {
            Timer::Level => self.level_deadline(),
            Timer::Outbox => self.outbox_at,
            Timer::JobSync => self.job_sync.as_deref().and_then(|j| j.retry_at),
        }
    }

    /// Whether `timer` is set and due at `now`.
    pub(super) fn expired(&self, timer: Timer, now: Timestamp) -> bool {
        self.timer(timer).is_some_and(|t| t <= now)
    }

    /// The earliest timer (written out: stores ask on every save).
    pub(super) fn next_timeout(&self) -> Option<Timestamp> {
        fn earlier(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, None) => a,
                (None, b) => b,
            }
        }
        let level = self.timer(Timer::Level);
        let jobs = self.timer(Timer::JobSync);
        earlier(earlier(level, self.outbox_at), jobs)
    }

    /// Sets the outbox's timer to the earliest retry of a pending leg.
    pub(super) fn reset_outbox_timer(&mut self) {
        self.outbox_at = self
            .legs
            .iter()
            .filter(|l| l.status == DeliveryStatus::Pending)
            .filter_map(|l| l.retry_at)
            .min();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixture::{T0, opened};
    use crate::event::Effect;
    use crate::input::Input;
    use crate::{Dispatch, OUTBOX_GRACE};

    const LEVEL: Duration = Duration::from_secs(900);

    /// An open dispatch whose forward to the primary was accepted: only
    /// the level's timer is set.
    fn waiting() -> Dispatch {
        let mut d = opened(LEVEL);
        assert_eq!(d.next_deadline(), Some(T0.plus(OUTBOX_GRACE)), "the outbox");
        let sid: crate::types::ProviderMessageId =
            "SMout1".parse().unwrap_or_else(|e| panic!("{e}"));
        let fx = d.handle(
            T0,
            Input::SendOutcome {
                leg: 0,
                result: Ok(sid.into()),
            },
        );
        assert!(!fx.unwrap_or_else(|e| panic!("{e}")).is_empty());
        d
    }

    #[test]
    fn the_next_deadline_is_the_earliest_timer() {
        let d = waiting();
        assert_eq!(d.timer(super::Timer::Outbox), None);
        assert_eq!(d.timer(super::Timer::Level), Some(T0.plus(LEVEL)));
        assert_eq!(d.next_deadline(), Some(T0.plus(LEVEL)));
    }

    #[test]
    fn a_record_written_before_the_timer_table_loads_and_fires_on_time() {
        // Such records kept one folded `deadline` (the earliest of all) and
        // no outbox timer.
        let d = waiting();
        let mut json = serde_json::to_value(&d).unwrap_or_else(|e| panic!("{e}"));
        let record = json.as_object_mut().unwrap_or_else(|| panic!("an object"));
        assert!(record.remove("outbox_at").is_none(), "no pending leg");
        record.insert(
            "deadline".into(),
            serde_json::to_value(T0.plus(LEVEL)).unwrap_or_else(|e| panic!("{e}")),
        );
        let mut old: Dispatch = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old.next_deadline(), d.next_deadline());

        let early = T0.plus(LEVEL - Duration::from_millis(1));
        let fx = old
            .handle(early, Input::Timeout)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(fx.is_empty(), "nothing is due before the deadline");

        let fx = old
            .handle(T0.plus(LEVEL), Input::Timeout)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(fx.iter().any(|e| matches!(e, Effect::Send(_))), "escalated");
        assert_eq!(
            old.next_deadline(),
            Some(T0.plus(LEVEL).plus(OUTBOX_GRACE)),
            "the new forward's outbox retry, before the next level's timeout"
        );
    }
}
