//! The dispatch: one customer conversation being routed, and the pure state
//! machine that moves it.
//!
//! - `mod.rs` (here): [`Dispatch`], its constructor, [`Dispatch::handle`]
//!   and the getters;
//! - `inputs`: one handler per input kind;
//! - `steps`: where the dispatch goes next (levels, holds, rounds), acks,
//!   closing, replies;
//! - `legs`: the outbox (pending legs, retries, deferrals, merges, skips);
//! - `text`: the texts the relay writes;
//! - `job_sync`: the cursor of what the host's job system has, and what
//!   the dispatch still owes it;
//! - `preview`: what the state machine would do, computed on copies
//!   (the next step, who holds a dispatch, the on-call preview);
//! - `timer`: the timer table (level deadline, outbox retry, job-sync
//!   retry) behind [`Dispatch::next_deadline`];
//! - `history`: what moves out of the record as it grows, into
//!   [`HistoryPage`]s.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::carrier::CarrierHold;
use crate::event::{Effect, EventKind, RelayEvent};
use crate::input::{Actor, InboundText, Input};
use crate::policy::Policy;
use crate::record::{Ack, Direction, Leg, Purpose, State, ThreadEntry};
use crate::types::{DispatchId, JobId, PhoneNumber, ProviderMessageId, Tag, Timestamp};

mod history;
mod inputs;
mod job_sync;
mod legs;
mod preview;
mod steps;
mod text;
mod timer;

pub use history::{HIGH_BYTES, HIGH_ENTRIES, History, HistoryPage, LOW_BYTES, LOW_ENTRIES};
pub(crate) use job_sync::JobItem;
pub use job_sync::{JOB_RETRY_MAX, JOB_RETRY_MIN, JOB_SYNC_GRACE, JobSync};
pub use legs::{MAX_SEND_ATTEMPTS, OUTBOX_GRACE};
pub use preview::{Step, first_step, first_steps};

/// How many events a dispatch's record keeps before the older half moves
/// out into a [`HistoryPage`] (every event also goes to the event sink).
pub const MAX_KEPT_EVENTS: usize = 256;

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
    /// Escalating a dispatch someone already acknowledged (who).
    #[error("dispatch was acknowledged by {0}: there is nothing to escalate")]
    Acknowledged(Actor),
}

/// One customer conversation being routed through the escalation chain.
///
/// # Method taxonomy
///
/// - **Constructor**: [`Dispatch::open`] (a customer's first text; saved at
///   version 0, under the store's uniqueness rules).
/// - **Input**: [`Dispatch::handle`] with an [`Input`] and the current time,
///   the one way a dispatch changes. It either refuses the input (an
///   [`InputError`], nothing changed) or applies it and returns the
///   [`Effect`]s to carry out. Every change publishes at least one event;
///   an empty effect list means nothing changed (a duplicate webhook, an
///   early timeout, a link to the job it already has): there is nothing to
///   save. That includes the host job system's bookkeeping
///   ([`Input::LinkJob`], [`Input::EnableJobSync`], [`Input::JobSynced`],
///   [`Input::PauseJobSync`]).
/// - **Getters**: everything else; [`Dispatch::next_deadline`] is the
///   field stores index for the due query.
/// - **For stores**: [`Dispatch::set_version`], the version a save writes
///   (not a state-machine input: it changes no state and publishes
///   nothing; the driver sets it around its save).
///
/// # Call order
///
/// After a transition, set the version to the previous one plus one, save
/// the dispatch with the previous version as the expected one, and only
/// then carry out the effects (sends are already in the outbox as pending
/// legs). Feed what the provider answered back as [`Input::SendOutcome`].
/// Call `handle(now, Input::Timeout)` at or after
/// [`Dispatch::next_deadline`]; calling it early, late or twice is safe: it
/// acts only on the timers expired at `now`.
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
    #[serde(serialize_with = "crate::policy::serialize_shared")]
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
    /// Boxed: most open dispatches have none, and every byte here is a
    /// byte per dispatch in a store's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ack: Option<Box<Ack>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unreachable: Vec<PhoneNumber>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    opted_out: Vec<PhoneNumber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holding_until: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    carrier_hold: Option<CarrierHold>,
    events: Vec<RelayEvent>,
    /// Events dropped by records written before events moved out.
    #[serde(default, skip_serializing_if = "is_zero")]
    events_dropped: u32,
    /// What moved out of the record (see `history.rs`); boxed, since most
    /// dispatches never move anything and every byte here is a byte per
    /// dispatch in a store's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    history: Option<Box<History>>,
    #[serde(skip)]
    unsaved: history::Unsaved,
    /// The outbox's timer: the earliest retry of a pending leg. Records
    /// written before it was kept carry the earliest of all the deadlines
    /// as `deadline`: read here, it is an early bound (a timeout at it
    /// finds nothing due in the outbox), corrected by the next change.
    #[serde(default, alias = "deadline", skip_serializing_if = "Option::is_none")]
    outbox_at: Option<Timestamp>,
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
            carrier_hold: None,
            events: Vec::with_capacity(4),
            events_dropped: 0,
            history: None,
            unsaved: history::Unsaved::default(),
            outbox_at: None,
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
            // The job system's bookkeeping: no change to the conversation,
            // nothing owed to the job system for it.
            Input::LinkJob { job, sync } => {
                self.on_link_job(now, job, sync, &mut fx);
                return Ok(out);
            }
            Input::EnableJobSync => {
                self.on_enable_job_sync(now, &mut fx);
                return Ok(out);
            }
            Input::JobSynced {
                resolved,
                recorded,
                result,
            } => {
                self.on_job_synced(now, resolved, recorded, result, &mut fx);
                return Ok(out);
            }
            Input::PauseJobSync => {
                self.on_pause_job_sync(now, &mut fx);
                return Ok(out);
            }
        }
        if !fx.out.is_empty() {
            self.settle_carriers(now, &mut fx);
            self.finish(now);
        }
        Ok(out)
    }

    fn emit(&mut self, now: Timestamp, fx: &mut Fx<'_>, kind: EventKind) {
        let ev = RelayEvent {
            at: now,
            dispatch: self.id,
            tag: self.tag,
            kind,
        };
        self.events.push(ev.clone());
        fx.out.push(Effect::Publish(ev));
    }

    /// Publishes an event without keeping it in the history (the job
    /// sync's routine bookkeeping).
    fn publish_only(&mut self, now: Timestamp, fx: &mut Fx<'_>, kind: EventKind) {
        fx.out.push(Effect::Publish(RelayEvent {
            at: now,
            dispatch: self.id,
            tag: self.tag,
            kind,
        }));
    }

    /// After a change to the conversation: when it changed, what it owes
    /// the job system, the outbox's timer.
    fn finish(&mut self, now: Timestamp) {
        self.updated_at = now;
        // Owed to the job system until the driver syncs; a crash before
        // that is finished by a sweep after the grace.
        self.owe_job_sync(now);
        self.reset_outbox_timer();
        self.move_out();
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
    /// How far its texts and milestones have reached the host's job system
    /// (`None` when the relay has no [`crate::Jobs`] port).
    pub fn job_sync(&self) -> Option<&JobSync> {
        self.job_sync.as_deref()
    }
    /// The policy snapshotted when the dispatch opened.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }
    /// Holds `policy` in place of its own copy when the two are equal (a
    /// store that loads many dispatches keeps one copy of each policy);
    /// whether it did.
    pub fn share_policy(&mut self, policy: &Arc<Policy>) -> bool {
        if Arc::ptr_eq(&self.policy, policy) {
            return true;
        }
        let same = *self.policy == **policy;
        if same {
            self.policy = Arc::clone(policy);
        }
        same
    }
    /// Drops the spare capacity of its lists and lets its events share the
    /// message ids its thread and legs hold. A dispatch read from a record
    /// holds up to three spare entries in each list (about 1 kB in all for
    /// a typical one) and a copy of each id per event; a store that keeps
    /// many dispatches it loaded calls this on each. Changes nothing it
    /// says or saves.
    pub fn compact(&mut self) {
        fn shared<'a>(
            sid: &mut ProviderMessageId,
            mut held: impl Iterator<Item = &'a ProviderMessageId>,
        ) {
            if let Some(same) = held.find(|h| *h == sid) {
                *sid = same.clone();
            }
        }
        self.thread.shrink_to_fit();
        self.legs.shrink_to_fit();
        self.events.shrink_to_fit();
        let (thread, legs) = (&self.thread, &self.legs);
        for e in &mut self.events {
            match &mut e.kind {
                EventKind::Opened { sid, .. } | EventKind::CustomerText { sid } => {
                    shared(sid, thread.iter().filter_map(|t| t.sid.as_ref()));
                }
                EventKind::Sent { sid, .. } => {
                    shared(sid, legs.iter().filter_map(|l| l.sid.as_ref()));
                }
                EventKind::Forwarded { to, .. } => to.shrink_to_fit(),
                _ => {}
            }
        }
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
    /// The conversation, as far as the record keeps it: the entries from
    /// position [`History::thread`] on (older ones moved out into
    /// [`HistoryPage`]s).
    pub fn thread(&self) -> &[ThreadEntry] {
        &self.thread
    }
    /// The outbound texts the record keeps: from index [`History::legs`]
    /// on (older settled ones moved out into [`HistoryPage`]s).
    pub fn legs(&self) -> &[Leg] {
        &self.legs
    }
    /// Leg `index`, if the record keeps it.
    pub fn leg(&self, index: u32) -> Option<&Leg> {
        self.leg_pos(index).ok().flatten().map(|p| &self.legs[p])
    }
    /// The ack, if any.
    pub fn ack(&self) -> Option<&Ack> {
        self.ack.as_deref()
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
    /// While every carrier that may send one of its texts is down: since
    /// when and why (the text waits with backoff; a forward's level
    /// timeout starts once it is sent).
    pub fn carrier_hold(&self) -> Option<&CarrierHold> {
        self.carrier_hold.as_ref()
    }
    /// Its recent events (at most [`MAX_KEPT_EVENTS`]; older ones moved
    /// out into [`HistoryPage`]s).
    pub fn events(&self) -> &[RelayEvent] {
        &self.events
    }
    /// How many older events records written by earlier versions dropped
    /// (since events move out instead, it no longer grows).
    pub fn events_dropped(&self) -> u32 {
        self.events_dropped
    }
    /// How many events the dispatch ever kept: moved out, dropped by
    /// earlier versions, and in the record.
    pub fn events_total(&self) -> usize {
        self.history().events as usize + self.events_dropped as usize + self.events.len()
    }
    /// The earliest time something is due: the level's timeout while open,
    /// a pending send's retry, or a job-sync retry (see the timer table in
    /// `dispatch/timer.rs`). `None` when nothing will ever be due.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.next_timeout()
    }
    /// The version it was loaded at (0 before the first save).
    pub fn version(&self) -> u64 {
        self.version
    }
    /// Sets the version a save writes: the driver sets it to the expected
    /// version plus one before [`crate::Store::save`]; stores and test
    /// fixtures that write a dispatch themselves do the same. It is not an
    /// input: it changes nothing else and publishes nothing.
    pub fn set_version(&mut self, v: u64) {
        self.version = v;
    }
    /// Inbound message ids of the texts in the record's thread (a store
    /// keeps those of moved entries too: see
    /// [`HistoryPage::inbound_sids`]).
    pub fn inbound_sids(&self) -> impl Iterator<Item = &ProviderMessageId> {
        self.thread.iter().filter_map(|e| e.sid.as_ref())
    }
    /// Provider ids of the outbound texts in the record (a store keeps
    /// those of moved legs too: see [`HistoryPage::leg_sids`]).
    pub fn leg_sids(&self) -> impl Iterator<Item = &ProviderMessageId> {
        self.legs.iter().filter_map(|l| l.sid.as_ref())
    }
    /// Dispatchers who were texted about this dispatch (forwards and
    /// follow-ups), each once, in order.
    pub fn notified(&self) -> Vec<PhoneNumber> {
        self.notified_at().into_iter().map(|(n, _)| n).collect()
    }
    /// Each dispatcher of [`Dispatch::notified`], in the same order, with
    /// the last time they were texted about this dispatch (what the
    /// stores index "by dispatcher").
    pub fn notified_at(&self) -> Vec<(PhoneNumber, Timestamp)> {
        let mut out: Vec<(PhoneNumber, Timestamp)> = self.history().notified.clone();
        for l in &self.legs {
            note_notified(&mut out, l);
        }
        out
    }
    /// The last time `n` was texted about this dispatch.
    pub fn last_notified_at(&self, n: PhoneNumber) -> Option<Timestamp> {
        let moved = self.history().notified.iter().find(|(m, _)| *m == n);
        self.legs
            .iter()
            .filter(|l| {
                l.to == n && matches!(l.purpose, Purpose::Forward { .. } | Purpose::FollowUp)
            })
            .map(|l| l.created_at)
            .chain(moved.map(|(_, at)| *at))
            .max()
    }

    /// Whether a thread entry is a text the customer sent.
    fn is_customer_text(&self, e: &ThreadEntry) -> bool {
        e.direction == Direction::Inbound && e.from == Actor::Phone(self.customer)
    }
}

/// Adds leg `l` to `out` (dispatcher, last time texted) if it texted a
/// dispatcher about the dispatch (a forward or a follow-up): what
/// [`Dispatch::notified_at`] lists, and what moved legs leave in
/// [`History::notified`].
fn note_notified(out: &mut Vec<(PhoneNumber, Timestamp)>, l: &Leg) {
    if matches!(l.purpose, Purpose::Forward { .. } | Purpose::FollowUp) {
        match out.iter_mut().find(|(n, _)| *n == l.to) {
            Some((_, at)) => *at = (*at).max(l.created_at),
            None => out.push((l.to, l.created_at)),
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What the unit tests of the state machine start from.
#[cfg(test)]
mod fixture {
    use std::sync::Arc;
    use std::time::Duration;

    use super::Dispatch;
    use crate::input::InboundText;
    use crate::policy::Policy;
    use crate::types::{DispatchId, Timestamp};

    /// 2026-01-05T09:00:00Z.
    pub(super) const T0: Timestamp = Timestamp::from_millis(1_767_603_600_000);

    /// A customer's first text at [`T0`] to a primary and a backup, each
    /// given `level`: opened, its forward to the primary pending.
    pub(super) fn opened(level: Duration) -> Dispatch {
        let n = |s: &str| s.parse().unwrap_or_else(|e| panic!("{e}"));
        let policy = Policy::simple(n("+16195550101"), n("+18583354807"), level)
            .unwrap_or_else(|e| panic!("{e}"));
        let text = InboundText {
            sid: "SMin1".parse().unwrap_or_else(|e| panic!("{e}")),
            from: n("+16195550100"),
            to: n("+16195550000"),
            body: "hello".into(),
            media: Vec::new(),
        };
        let id = DispatchId::new(T0, 1);
        let tag = "K7".parse().unwrap_or_else(|e| panic!("{e}"));
        let (d, _) =
            Dispatch::open(id, tag, Arc::new(policy), text, T0).unwrap_or_else(|e| panic!("{e}"));
        d
    }
}

#[cfg(test)]
mod policy_json {
    use std::time::Duration;

    use super::fixture::opened;

    #[test]
    fn a_policy_written_again_from_the_last_json_is_written_the_same() {
        // Two dispatches with policies of their own, written in turns: the
        // JSON kept of the last policy is used for its own dispatch only,
        // and equals the policy written afresh (to_value takes no shortcut).
        let a = opened(Duration::from_secs(60));
        let b = opened(Duration::from_secs(900));
        for d in [&a, &a, &b, &a, &b, &b] {
            let text = serde_json::to_string(d).unwrap_or_else(|e| panic!("{e}"));
            let parsed: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
            let fresh = serde_json::to_value(d).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed, fresh);
            let back: super::Dispatch =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&back, d);
        }
        assert_ne!(
            serde_json::to_value(a.policy()).unwrap_or_else(|e| panic!("{e}")),
            serde_json::to_value(b.policy()).unwrap_or_else(|e| panic!("{e}"))
        );
    }
}

#[cfg(test)]
mod compact {
    use std::time::Duration;

    use super::fixture::{T0, opened};
    use crate::{EventKind, Input, ProviderMessageId};

    /// The text of an id, by address: ids that share one copy point at
    /// the same bytes.
    fn at(sid: &ProviderMessageId) -> *const u8 {
        sid.as_str().as_ptr()
    }

    #[test]
    fn a_compacted_record_says_and_saves_the_same_with_its_ids_shared() {
        let mut d = opened(Duration::from_secs(60));
        let sid: ProviderMessageId = "SMout1".parse().unwrap_or_else(|e| panic!("{e}"));
        let sent = Input::SendOutcome {
            leg: 0,
            result: Ok(sid.into()),
        };
        d.handle(T0, sent).unwrap_or_else(|e| panic!("{e}"));
        let text = serde_json::to_string(&d).unwrap_or_else(|e| panic!("{e}"));
        let mut back: super::Dispatch =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        back.compact();
        assert_eq!(back, d);
        assert_eq!(
            serde_json::to_string(&back).unwrap_or_else(|e| panic!("{e}")),
            text
        );
        assert_eq!(
            (back.thread.capacity(), back.legs.capacity()),
            (back.thread.len(), back.legs.len())
        );
        assert_eq!(back.events.capacity(), back.events.len());
        let inbound = back.thread[0].sid.as_ref().map(at);
        let outbound = back.legs[0].sid.as_ref().map(at);
        let mut seen = 0;
        for e in &back.events {
            match &e.kind {
                EventKind::Opened { sid, .. } => assert_eq!(Some(at(sid)), inbound),
                EventKind::Sent { sid, .. } => assert_eq!(Some(at(sid)), outbound),
                _ => continue,
            }
            seen += 1;
        }
        assert_eq!(seen, 2, "the opened and sent events hold the ids");
    }
}
