//! Property tests of the core, with `proptest-state-machine`.
//!
//! A reference model (`Model`) says in a few plain rules what must happen:
//! which dispatches exist per customer, their state, where each one is in
//! its escalation, which texts the relay decided to send and how every
//! hand-over to the provider ended. The system under test (`Sut`) is the
//! real `Relay` driver over `MemoryStore`, `RecordingProvider` and a
//! `ManualClock` (a `Simulation`). The model knows nothing of persistence,
//! versions, events, bodies, indexes or backoff arithmetic.
//!
//! After every step the core's properties are checked on the real state
//! alone, then the real state is compared with the model:
//!
//! 1. at most one send per escalation step: one forward leg per
//!    (round, level, target), at most one accepted text per leg (a crash
//!    between save and send loses the attempt, it never doubles it);
//! 2. every accepted inbound message belongs to exactly one dispatch;
//! 3. status never moves backwards (state, (round, level), each leg's
//!    delivery rank), and no dispatch is lost;
//! 4. every open, un-acked dispatch has a deadline, and the due query finds
//!    it once the clock passes it;
//! 5. `failed` only after every level of every round was tried (a forward
//!    leg or a skipped level);
//! 6. nothing is sent to the business line, and nothing but replies to the
//!    customer;
//!
//! and also: an acked dispatch never escalates again; after a dispatcher's
//! ack, later customer texts go to the acker only; a sweep leaves nothing
//! due; a duplicate webhook changes nothing; of two writers on one version
//! exactly one save wins.
//!
//! Opt-outs (B8): a send refused as opted out (the model's "opted out"
//! provider fault, Twilio's 21610) marks the number unreachable and opted
//! out in its dispatch and puts it on the relay's opt-out list (a send
//! refused as unreachable, 21614, marks it unreachable in its dispatch
//! only); from then on the
//! driver refuses every send to it, in any dispatch, before the provider
//! sees it (the leg is `skipped`, the dispatch records the opt-out, a
//! dispatcher whose reply it was is told by a notice, and a step none of
//! whose texts can go out escalates). A dispatcher's reply that cannot
//! reach the customer is answered with such a notice too. The test policy
//! has no on-duty windows, rate limits or relay lines.
//!
//! `relay_follows_the_model_strict` adds two checks on the real state
//! alone, which three core bugs (now fixed; see the regression tests at the
//! end) broke: a number found unreachable (or opted out) is never texted
//! again in its dispatch (no new leg to it, no outbox re-send of an older
//! one), and a failed text's status is final.
//!
//! Every input except a tick first moves the virtual clock 1 ms forward
//! (sweeping whatever falls due), so no two dispatches open in the same
//! millisecond and "the most recently notified dispatch" is never decided
//! by random id bits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::Union;
use proptest::test_runner::Config;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use qdn_relay_core::testing::{SIM_START, Simulation};
use qdn_relay_core::{
    Actor, Command, ConflictReason, DashboardAction, DeliveryError, DeliveryReport, DeliveryStatus,
    Dispatch, DispatchId, Effect, ErrorClass, EventKind, InboundText, Input, InputError, Level,
    MAX_SEND_ATTEMPTS, OUTBOX_GRACE, OptOuts, OutboundMessage, Outcome, PhoneNumber, Policy,
    ProviderMessageId, Purpose, RelayError, RouteReason, SendError, SendErrorKind, SkipReason,
    SmsProvider, State, Store, StoreError, Tag, Timestamp,
};

// ---------------------------------------------------------------------------
// The cast

const LINE: u64 = 16_195_550_000;
/// Level 0: A. Level 1: B and C at once. Level 2 (when there is one): D.
const DISPATCHERS: [u64; 4] = [
    16_195_550_101,
    16_195_550_102,
    16_195_550_103,
    16_195_550_104,
];
const CUSTOMERS: [u64; 3] = [16_195_550_201, 16_195_550_202, 16_195_550_203];

const CUSTOMER_BODIES: [&str; 5] = [
    "Need a 10-yard dumpster Friday",
    "Is anyone there?",
    "ACK",
    "#K7 hello",
    "Gate code is 4411",
];
const REPLIES: [&str; 3] = ["on my way", "OK, there in 10", "acknowledged - calling now"];
const OPERATOR: &str = "ops";
const DASHBOARD_REPLY: &str = "Driver on the way (dashboard)";

/// `OUTBOX_GRACE` in ms (a test below checks they agree).
const GRACE: i64 = 60_000;
/// The `Retry-After` a retryable provider error carries. It is longer than
/// any backoff of the first four attempts (5 s, 10 s, 20 s, 40 s plus at
/// most a quarter), so every retry happens exactly this long after a failure
/// and the model needs no backoff arithmetic.
const RETRY_AFTER: i64 = 55_000;

fn phone(digits: u64) -> PhoneNumber {
    PhoneNumber::from_u64(digits).expect("a valid test number")
}

fn line() -> PhoneNumber {
    phone(LINE)
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(SIM_START.as_millis() + ms)
}

fn sid(n: u64) -> ProviderMessageId {
    format!("IN{n:08}").parse().expect("a valid message id")
}

fn error_code(class: ErrorClass) -> u32 {
    match class {
        ErrorClass::RetryLater => 30003,
        ErrorClass::Unreachable => 30006,
        ErrorClass::Filtered => 30007,
        ErrorClass::Config => 20003,
        _ => 30008,
    }
}

fn send_error(kind: SendErrorKind) -> SendError {
    let (code, message) = match kind {
        SendErrorKind::Retryable => (Some(20429), "too many requests"),
        SendErrorKind::MaybeSent => (None, "timed out after sending"),
        SendErrorKind::Unreachable => (Some(21614), "not a mobile number"),
        SendErrorKind::OptedOut => (Some(21610), "recipient opted out"),
        SendErrorKind::Filtered => (Some(30007), "content filtered"),
        SendErrorKind::Config => (Some(20003), "authentication failed"),
        _ => (Some(21000), "rejected"),
    };
    let mut e = SendError::new(kind, message);
    if let Some(c) = code {
        e = e.with_code(c);
    }
    if kind == SendErrorKind::Retryable {
        e.retry_after_ms = Some(RETRY_AFTER as u64);
    }
    e
}

// ---------------------------------------------------------------------------
// Transitions

/// A dispatcher's text, before an optional tag.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DText {
    /// `None`: a reply to the customer.
    cmd: Option<Command>,
    /// Which spelling.
    variant: u8,
}

impl DText {
    fn render(&self) -> String {
        let v = usize::from(self.variant % 3);
        match self.cmd {
            Some(Command::Ack) => ["ACK", "ack", "Ack."][v],
            Some(Command::Pass) => ["PASS", "pass", "Pass!"][v],
            Some(Command::Done) => ["DONE", "done.", " Done! "][v],
            None => REPLIES[v],
        }
        .to_owned()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dash {
    Ack,
    Reply,
    Close,
}

impl Dash {
    fn action(self) -> DashboardAction {
        let by = OPERATOR.to_owned();
        match self {
            Dash::Ack => DashboardAction::Ack { by },
            Dash::Reply => DashboardAction::Reply {
                by,
                body: DASHBOARD_REPLY.to_owned(),
            },
            Dash::Close => DashboardAction::Close { by },
        }
    }
}

/// One of the two inputs of a `ConcurrentPair`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PairInput {
    Dash(Dash),
    Customer {
        body: usize,
    },
    Dispatcher {
        from: PhoneNumber,
        text: DText,
        style: u8,
    },
    /// The dispatch's deadline fires (the clock jumps to it).
    Timeout,
}

impl PairInput {
    fn is_text(&self) -> bool {
        matches!(
            self,
            PairInput::Customer { .. } | PairInput::Dispatcher { .. }
        )
    }
}

/// Where a process dies between saving a transition and sending its texts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Crash {
    /// While handling a customer's text (opening or joining a dispatch).
    Customer { customer: usize, body: usize },
    /// While handling a dashboard reply.
    DashReply { d: usize },
    /// While a sweep handles the dispatch's deadline (the clock jumps to it).
    Sweep { d: usize },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Transition {
    /// A customer texts the business line.
    CustomerText { customer: usize, body: usize },
    /// A policy target texts the business line, with or without `#TAG`
    /// (tag style 0..4) naming dispatch `tag.0`.
    DispatcherText {
        from: PhoneNumber,
        tag: Option<(usize, u8)>,
        text: DText,
    },
    /// A dashboard action on dispatch `d`.
    Dashboard { d: usize, action: Dash },
    /// A status callback for an accepted leg.
    Delivery {
        d: usize,
        leg: usize,
        status: DeliveryStatus,
        class: Option<ErrorClass>,
    },
    /// Virtual time passes; the sweep runs at every deadline on the way.
    Tick { millis: u64 },
    /// An earlier accepted inbound text, delivered again verbatim.
    DuplicateInbound { pick: usize },
    /// An earlier status callback, delivered again verbatim.
    DuplicateStatus { pick: usize },
    /// Two drivers load dispatch `d` at one version and apply `a` and `b`;
    /// `a` is saved first. The loser re-runs through the relay.
    ConcurrentPair {
        d: usize,
        a: PairInput,
        b: PairInput,
    },
    /// A transition saved but its sends never made.
    Crash(Crash),
    /// Every send to `to` fails with `kind` from now on.
    ProviderDown {
        to: PhoneNumber,
        kind: SendErrorKind,
    },
    /// Sends to `to` work again.
    ProviderUp { to: PhoneNumber },
}

// ---------------------------------------------------------------------------
// The reference model

#[derive(Clone, Debug)]
struct MLeg {
    to: PhoneNumber,
    purpose: Purpose,
    created: i64,
    status: DeliveryStatus,
    /// Attempts decided (the first one when the leg is made).
    attempts: u32,
    /// While pending: when the outbox (re)sends it.
    retry_at: Option<i64>,
    /// The provider accepted it (it has a provider id).
    accepted: bool,
    /// Hand-overs to the provider.
    sent: u32,
    /// Attempts lost in a crash between save and send.
    lost: u32,
    /// A reply's author, when a dispatcher wrote it (told if it is refused).
    author: Option<PhoneNumber>,
    /// Why the relay did not send it (status `skipped`).
    skipped: Option<SkipReason>,
}

#[derive(Clone, Debug)]
struct MDispatch {
    customer: PhoneNumber,
    opened: i64,
    state: State,
    round: u32,
    level: u32,
    /// The current level's deadline (meaningful while open).
    deadline: Option<i64>,
    ack: Option<Actor>,
    unreachable: Vec<PhoneNumber>,
    /// Numbers this dispatch learnt opted out (never texted by it again).
    opted_out: Vec<PhoneNumber>,
    legs: Vec<MLeg>,
    inbound: Vec<u64>,
}

/// What the relay must answer to the step's input.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    Nothing,
    Opened(usize),
    Applied(usize),
    Unchanged(usize),
    Rejected,
    /// A sweep that fired this many dispatches.
    Swept(usize),
}

#[derive(Clone, Debug)]
struct Model {
    /// Targets and timeout (ms) of each level.
    levels: Vec<(Vec<PhoneNumber>, i64)>,
    repeat: u32,
    /// Virtual ms since `SIM_START`.
    now: i64,
    dispatches: Vec<MDispatch>,
    /// Numbers the provider currently refuses, and how.
    faults: Vec<(PhoneNumber, SendErrorKind)>,
    /// The relay's opt-out list (`OptOuts`): numbers whose send failed with
    /// an opt-out error (`SendErrorKind::OptedOut`). The driver refuses every later send to
    /// them, in any dispatch, before the provider sees it.
    opted_out: Vec<PhoneNumber>,
    /// Inbound message ids issued so far (`IN00000001`, ...).
    sids: u64,
    /// Accepted inbound texts: (sid, dispatch).
    inbound_log: Vec<(u64, usize)>,
    /// Status callbacks delivered: (dispatch, leg, status, class).
    status_log: Vec<(usize, usize, DeliveryStatus, Option<ErrorClass>)>,
    expect: Expect,
}

impl Model {
    fn new(levels: Vec<(Vec<PhoneNumber>, i64)>, repeat: u32) -> Self {
        Self {
            levels,
            repeat,
            now: 0,
            dispatches: Vec::new(),
            faults: Vec::new(),
            opted_out: Vec::new(),
            sids: 0,
            inbound_log: Vec::new(),
            status_log: Vec::new(),
            expect: Expect::Nothing,
        }
    }

    fn targets(&self) -> Vec<PhoneNumber> {
        self.levels
            .iter()
            .flat_map(|(t, _)| t.iter().copied())
            .collect()
    }

    /// Who a provider fault may hit: the dispatchers and one customer.
    fn fault_targets(&self) -> Vec<PhoneNumber> {
        let mut t = self.targets();
        t.push(phone(CUSTOMERS[0]));
        t
    }

    fn fault(&self, n: PhoneNumber) -> Option<SendErrorKind> {
        self.faults.iter().find(|(m, _)| *m == n).map(|(_, k)| *k)
    }

    fn is_open(&self, d: usize) -> bool {
        self.dispatches.get(d).is_some_and(|x| x.state.is_open())
    }

    fn can_text(&self, d: usize, n: PhoneNumber) -> bool {
        n != line() && n != self.dispatches[d].customer && !self.barred(d, n)
    }

    /// Whether dispatch `d` knows it must not text `n`: found unreachable,
    /// or opted out.
    fn barred(&self, d: usize, n: PhoneNumber) -> bool {
        let x = &self.dispatches[d];
        x.unreachable.contains(&n) || x.opted_out.contains(&n)
    }

    /// When something is next due for `d`: its level's timeout while open,
    /// or a pending leg's (re)send.
    fn next_event(&self, d: usize) -> Option<i64> {
        let x = &self.dispatches[d];
        let level = if x.state == State::Open {
            x.deadline
        } else {
            None
        };
        x.legs
            .iter()
            .filter(|l| l.status == DeliveryStatus::Pending)
            .filter_map(|l| l.retry_at)
            .chain(level)
            .min()
    }

    /// `d` is due strictly before everyone else: the clock may jump there.
    fn sweepable(&self, d: usize) -> bool {
        if d >= self.dispatches.len() {
            return false;
        }
        let Some(t) = self.next_event(d) else {
            return false;
        };
        (0..self.dispatches.len()).all(|e| e == d || self.next_event(e).is_none_or(|u| u > t))
    }

    /// The state once the 1 ms step before an input has run.
    fn stepped(&self) -> Model {
        let mut s = self.clone();
        s.advance_to(s.now + 1);
        s
    }

    fn fresh_sid(&mut self) -> u64 {
        self.sids += 1;
        self.sids
    }

    // ----- time ---------------------------------------------------------

    fn advance_to(&mut self, target: i64) {
        while let Some(t) = (0..self.dispatches.len())
            .filter_map(|d| self.next_event(d))
            .min()
            .filter(|t| *t <= target)
        {
            self.now = self.now.max(t);
            self.sweep_due();
        }
        self.now = self.now.max(target);
    }

    fn sweep_due(&mut self) -> usize {
        let mut fired = 0;
        for d in 0..self.dispatches.len() {
            if self.next_event(d).is_some_and(|t| t <= self.now) {
                let q = self.timeout(d);
                self.send_all(d, q);
                fired += 1;
            }
        }
        fired
    }

    /// What a deadline does: (re)send due pending legs, escalate past a
    /// level whose time is up. Returns the legs to send.
    ///
    /// A due pending leg whose attempts are spent, or whose number was found
    /// unreachable since it was queued, fails instead of being re-sent (the
    /// outbox never texts a number found unreachable); one whose number
    /// opted out since is skipped.
    fn timeout(&mut self, d: usize) -> VecDeque<usize> {
        let now = self.now;
        let mut q = VecDeque::new();
        for i in 0..self.dispatches[d].legs.len() {
            let x = &mut self.dispatches[d];
            let l = &mut x.legs[i];
            if l.status != DeliveryStatus::Pending || l.retry_at.is_none_or(|t| t > now) {
                continue;
            }
            if l.attempts >= MAX_SEND_ATTEMPTS || x.unreachable.contains(&l.to) {
                l.status = DeliveryStatus::Failed;
                l.retry_at = None;
                self.after_leg_failed(d, i, false, &mut q);
            } else if x.opted_out.contains(&l.to) {
                // Its number opted out since it was queued: skipped, never
                // re-sent.
                l.status = DeliveryStatus::Skipped;
                l.skipped = Some(SkipReason::OptedOut);
                l.retry_at = None;
                self.after_leg_failed(d, i, false, &mut q);
            } else {
                l.attempts += 1;
                l.retry_at = Some(now + GRACE);
                q.push_back(i);
            }
        }
        let x = &self.dispatches[d];
        if x.state == State::Open && x.deadline.is_some_and(|t| t <= now) {
            self.escalate(d, &mut q);
        }
        q
    }

    // ----- sending ------------------------------------------------------

    fn send_all(&mut self, d: usize, mut q: VecDeque<usize>) {
        while let Some(i) = q.pop_front() {
            self.send_one(d, i, &mut q);
        }
    }

    fn send_one(&mut self, d: usize, i: usize, q: &mut VecDeque<usize>) {
        let now = self.now;
        let to = self.dispatches[d].legs[i].to;
        if self.opted_out.contains(&to) {
            self.send_blocked(d, i, q);
            return;
        }
        let fault = self.fault(to);
        let l = &mut self.dispatches[d].legs[i];
        l.sent += 1;
        let Some(kind) = fault else {
            if !l.accepted {
                l.accepted = true;
                l.retry_at = None;
                if l.status.rank() < DeliveryStatus::Queued.rank() {
                    l.status = DeliveryStatus::Queued;
                }
            }
            return;
        };
        if l.status != DeliveryStatus::Pending {
            return;
        }
        if kind == SendErrorKind::Retryable && l.attempts < MAX_SEND_ATTEMPTS {
            l.retry_at = Some(now + RETRY_AFTER);
        } else if kind == SendErrorKind::MaybeSent {
            l.status = DeliveryStatus::Unknown;
            l.retry_at = None;
        } else {
            l.status = DeliveryStatus::Failed;
            l.retry_at = None;
            let opted_out = kind == SendErrorKind::OptedOut;
            if opted_out {
                // The dispatch and the relay's opt-out list record the
                // number.
                let x = &mut self.dispatches[d];
                if !x.opted_out.contains(&to) {
                    x.opted_out.push(to);
                }
                if !self.opted_out.contains(&to) {
                    self.opted_out.push(to);
                }
            }
            let unreachable = opted_out || kind == SendErrorKind::Unreachable;
            self.after_leg_failed(d, i, unreachable, q);
        }
    }

    /// The driver refuses a send to a number on the opt-out list
    /// (`SendBlocked`): the leg is skipped, the dispatch records the
    /// opt-out, a dispatcher whose reply it was is told, and the step
    /// escalates if none of its texts can go out.
    fn send_blocked(&mut self, d: usize, i: usize, q: &mut VecDeque<usize>) {
        let x = &mut self.dispatches[d];
        let l = &mut x.legs[i];
        if l.status != DeliveryStatus::Pending {
            return;
        }
        l.status = DeliveryStatus::Skipped;
        l.skipped = Some(SkipReason::OptedOut);
        l.retry_at = None;
        let (to, purpose, author) = (l.to, l.purpose, l.author);
        if !x.opted_out.contains(&to) {
            x.opted_out.push(to);
        }
        if let (Purpose::Reply, Some(dispatcher)) = (purpose, author) {
            self.new_leg(d, dispatcher, Purpose::Notice, q);
        }
        self.after_leg_failed(d, i, false, q);
    }

    /// Carries out the queued sends, or loses them in a crash.
    fn finish(&mut self, d: usize, q: VecDeque<usize>, crash: bool) {
        if crash {
            for i in q {
                self.dispatches[d].legs[i].lost += 1;
            }
        } else {
            self.send_all(d, q);
        }
    }

    /// Queues a text to `to`, unless `to` was found unreachable in this
    /// dispatch or opted out: then nothing is queued (a reply to an
    /// opted-out customer, a notice to an unreachable dispatcher). Forwards
    /// and follow-ups never get here for such a number (`can_text`).
    fn new_leg(
        &mut self,
        d: usize,
        to: PhoneNumber,
        purpose: Purpose,
        q: &mut VecDeque<usize>,
    ) -> Option<usize> {
        let now = self.now;
        if self.barred(d, to) {
            return None;
        }
        let x = &mut self.dispatches[d];
        let i = x.legs.len();
        q.push_back(i);
        x.legs.push(MLeg {
            to,
            purpose,
            created: now,
            status: DeliveryStatus::Pending,
            attempts: 1,
            retry_at: Some(now + GRACE),
            accepted: false,
            sent: 0,
            lost: 0,
            author: None,
            skipped: None,
        });
        Some(i)
    }

    /// A reply to the customer. When nothing can be queued (the dispatch
    /// knows the customer is unreachable or opted out), a dispatcher who
    /// wrote it is told so by a notice.
    fn reply(&mut self, d: usize, author: Option<PhoneNumber>, q: &mut VecDeque<usize>) {
        let customer = self.dispatches[d].customer;
        match self.new_leg(d, customer, Purpose::Reply, q) {
            Some(i) => self.dispatches[d].legs[i].author = author,
            None => {
                if let Some(dispatcher) = author {
                    self.new_leg(d, dispatcher, Purpose::Notice, q);
                }
            }
        }
    }

    // ----- escalation ---------------------------------------------------

    /// Moves to the first level from (round, level) with someone textable;
    /// past the last round: failed.
    fn enter_step(&mut self, d: usize, mut round: u32, mut level: u32, q: &mut VecDeque<usize>) {
        loop {
            if level as usize >= self.levels.len() {
                level = 0;
                round += 1;
                if round > self.repeat {
                    let x = &mut self.dispatches[d];
                    x.state = State::Failed;
                    x.deadline = None;
                    return;
                }
            }
            let (targets, timeout) = self.levels[level as usize].clone();
            let targets: Vec<PhoneNumber> = targets
                .into_iter()
                .filter(|t| self.can_text(d, *t))
                .collect();
            if targets.is_empty() {
                level += 1;
                continue;
            }
            let x = &mut self.dispatches[d];
            x.round = round;
            x.level = level;
            x.deadline = Some(self.now + timeout);
            for t in targets {
                self.new_leg(d, t, Purpose::Forward { round, level }, q);
            }
            return;
        }
    }

    fn escalate(&mut self, d: usize, q: &mut VecDeque<usize>) {
        let (round, level) = (self.dispatches[d].round, self.dispatches[d].level);
        self.enter_step(d, round, level + 1, q);
    }

    fn record_ack(&mut self, d: usize, by: Actor) -> bool {
        let x = &mut self.dispatches[d];
        if x.ack.is_some() {
            return false;
        }
        x.ack = Some(by);
        if x.state == State::Open {
            x.state = State::Acked;
            x.deadline = None;
        }
        true
    }

    fn close(&mut self, d: usize) {
        let x = &mut self.dispatches[d];
        x.state = State::Closed;
        x.deadline = None;
    }

    /// A leg failed: maybe never text its number again; if every text of
    /// the current step failed, escalate at once.
    fn after_leg_failed(&mut self, d: usize, i: usize, unreachable: bool, q: &mut VecDeque<usize>) {
        let x = &mut self.dispatches[d];
        let to = x.legs[i].to;
        if unreachable && !x.unreachable.contains(&to) {
            x.unreachable.push(to);
        }
        let current = Purpose::Forward {
            round: x.round,
            level: x.level,
        };
        if x.state == State::Open
            && x.legs[i].purpose == current
            && x.legs
                .iter()
                .filter(|l| l.purpose == current)
                .all(|l| l.status.is_failure())
        {
            self.escalate(d, q);
        }
    }

    /// Who gets a customer's later texts: the dispatcher who acked, else
    /// the current step's targets whose text did not fail.
    fn holders(&self, d: usize) -> Vec<PhoneNumber> {
        let x = &self.dispatches[d];
        if let Some(Actor::Phone(p)) = &x.ack
            && self.can_text(d, *p)
        {
            return vec![*p];
        }
        let current = Purpose::Forward {
            round: x.round,
            level: x.level,
        };
        let mut out = Vec::new();
        for l in x.legs.iter().filter(|l| l.purpose == current) {
            if !l.status.is_failure() && self.can_text(d, l.to) && !out.contains(&l.to) {
                out.push(l.to);
            }
        }
        out
    }

    /// Which open dispatch an untagged text from a dispatcher goes to: the
    /// one that texted them last (ties: the newer dispatch).
    fn route(&self, from: PhoneNumber) -> Option<(usize, RouteReason)> {
        let mut c: Vec<(i64, i64, usize)> = (0..self.dispatches.len())
            .filter(|&d| self.is_open(d))
            .filter_map(|d| {
                let x = &self.dispatches[d];
                x.legs
                    .iter()
                    .filter(|l| {
                        l.to == from
                            && matches!(l.purpose, Purpose::Forward { .. } | Purpose::FollowUp)
                    })
                    .map(|l| l.created)
                    .max()
                    .map(|t| (t, x.opened, d))
            })
            .collect();
        c.sort_unstable();
        match c.as_slice() {
            [] => None,
            [only] => Some((only.2, RouteReason::Only)),
            [.., latest] => Some((latest.2, RouteReason::MostRecent)),
        }
    }

    // ----- inputs -------------------------------------------------------

    fn customer_text(&mut self, customer: PhoneNumber, sid: u64, crash: bool) -> Expect {
        let mut q = VecDeque::new();
        let open = (0..self.dispatches.len())
            .find(|&d| self.is_open(d) && self.dispatches[d].customer == customer);
        let (d, expect) = match open {
            Some(d) => {
                self.dispatches[d].inbound.push(sid);
                for to in self.holders(d) {
                    self.new_leg(d, to, Purpose::FollowUp, &mut q);
                }
                (d, Expect::Applied(d))
            }
            None => {
                let d = self.dispatches.len();
                self.dispatches.push(MDispatch {
                    customer,
                    opened: self.now,
                    state: State::Open,
                    round: 0,
                    level: 0,
                    deadline: None,
                    ack: None,
                    unreachable: Vec::new(),
                    opted_out: Vec::new(),
                    legs: Vec::new(),
                    inbound: vec![sid],
                });
                self.enter_step(d, 0, 0, &mut q);
                (d, Expect::Opened(d))
            }
        };
        self.inbound_log.push((sid, d));
        self.finish(d, q, crash);
        expect
    }

    fn dispatcher_on(
        &mut self,
        d: usize,
        from: PhoneNumber,
        cmd: Option<Command>,
        route: RouteReason,
        sid: u64,
    ) -> Expect {
        self.dispatches[d].inbound.push(sid);
        self.inbound_log.push((sid, d));
        let mut q = VecDeque::new();
        let by = Actor::Phone(from);
        match cmd {
            Some(Command::Ack) => {
                self.record_ack(d, by);
            }
            Some(Command::Pass) => {
                if self.dispatches[d].state == State::Open {
                    self.escalate(d, &mut q);
                } else {
                    self.new_leg(d, from, Purpose::Notice, &mut q);
                }
            }
            Some(Command::Done) => {
                self.record_ack(d, by);
                self.close(d);
            }
            None => {
                // Acks even when the customer is unreachable or opted out;
                // then no leg is made (the core records the reply with no
                // leg) and the dispatcher is told by a notice.
                self.record_ack(d, by);
                self.reply(d, Some(from), &mut q);
            }
        }
        if route == RouteReason::MostRecent {
            self.new_leg(d, from, Purpose::Notice, &mut q);
        }
        self.send_all(d, q);
        Expect::Applied(d)
    }

    fn dashboard(&mut self, d: usize, action: Dash, crash: bool) -> Expect {
        if !self.is_open(d) {
            return Expect::Rejected;
        }
        let by = Actor::Operator(OPERATOR.to_owned());
        let mut q = VecDeque::new();
        match action {
            Dash::Ack => {
                if !self.record_ack(d, by) {
                    return Expect::Unchanged(d);
                }
            }
            Dash::Reply => {
                // Refused, changing nothing, when the dispatch knows the
                // customer is unreachable or opted out.
                let customer = self.dispatches[d].customer;
                if self.barred(d, customer) {
                    return Expect::Rejected;
                }
                self.record_ack(d, by);
                self.reply(d, None, &mut q);
            }
            Dash::Close => self.close(d),
        }
        self.finish(d, q, crash);
        Expect::Applied(d)
    }

    fn delivery(
        &mut self,
        d: usize,
        leg: usize,
        status: DeliveryStatus,
        class: Option<ErrorClass>,
    ) -> Expect {
        self.status_log.push((d, leg, status, class));
        let l = &mut self.dispatches[d].legs[leg];
        // Status only moves forward, and a failed text's status is final.
        if l.status.is_failure() || status.rank() <= l.status.rank() {
            return Expect::Unchanged(d);
        }
        l.status = status;
        l.retry_at = None;
        if status.is_failure() {
            let mut q = VecDeque::new();
            self.after_leg_failed(d, leg, class == Some(ErrorClass::Unreachable), &mut q);
            self.send_all(d, q);
        }
        Expect::Applied(d)
    }

    /// The winner of a pair: applied to `d` as loaded.
    fn pair_direct(&mut self, d: usize, p: &PairInput, sid: Option<u64>) {
        match p {
            PairInput::Dash(a) => {
                self.dashboard(d, *a, false);
            }
            PairInput::Customer { .. } => {
                let customer = self.dispatches[d].customer;
                self.customer_text(customer, sid.unwrap_or_default(), false);
            }
            PairInput::Dispatcher { from, text, .. } => {
                self.dispatcher_on(
                    d,
                    *from,
                    text.cmd,
                    RouteReason::Tag,
                    sid.unwrap_or_default(),
                );
            }
            PairInput::Timeout => {
                let q = self.timeout(d);
                self.send_all(d, q);
            }
        }
    }

    /// The loser of a pair: re-run through the relay after the winner.
    fn pair_rerun(&mut self, d: usize, p: &PairInput, sid: Option<u64>) -> Expect {
        match p {
            PairInput::Dash(a) => self.dashboard(d, *a, false),
            PairInput::Customer { .. } => {
                let customer = self.dispatches[d].customer;
                self.customer_text(customer, sid.unwrap_or_default(), false)
            }
            PairInput::Dispatcher { from, text, .. } => {
                if self.is_open(d) {
                    self.dispatcher_on(
                        d,
                        *from,
                        text.cmd,
                        RouteReason::Tag,
                        sid.unwrap_or_default(),
                    )
                } else {
                    Expect::Rejected
                }
            }
            PairInput::Timeout => Expect::Swept(self.sweep_due()),
        }
    }

    fn pair_ok(&self, d: usize, a: &PairInput, b: &PairInput) -> bool {
        if d >= self.dispatches.len() || a == b {
            return false;
        }
        let timed = *a == PairInput::Timeout || *b == PairInput::Timeout;
        if timed && !self.sweepable(d) {
            return false;
        }
        let base = if timed { self.clone() } else { self.stepped() };
        if !base.is_open(d) {
            return false;
        }
        let x = &base.dispatches[d];
        let applies = |p: &PairInput| match p {
            PairInput::Dash(Dash::Ack) => x.ack.is_none(),
            PairInput::Dash(Dash::Reply) => {
                !x.unreachable.contains(&x.customer) && !x.opted_out.contains(&x.customer)
            }
            PairInput::Dispatcher { from, .. } => base.targets().contains(from),
            PairInput::Customer { body } => *body < CUSTOMER_BODIES.len(),
            _ => true,
        };
        applies(a) && applies(b)
    }

    fn lost(&self, d: usize, leg: usize) -> u32 {
        self.dispatches[d].legs.get(leg).map_or(0, |l| l.lost)
    }
}

// ---------------------------------------------------------------------------
// Strategies

fn dtext() -> impl Strategy<Value = DText> {
    (
        prop_oneof![
            2 => Just(Some(Command::Ack)),
            2 => Just(Some(Command::Pass)),
            1 => Just(Some(Command::Done)),
            3 => Just(None),
        ],
        0u8..3,
    )
        .prop_map(|(cmd, variant)| DText { cmd, variant })
}

fn dash() -> impl Strategy<Value = Dash> {
    prop_oneof![2 => Just(Dash::Ack), 2 => Just(Dash::Reply), 1 => Just(Dash::Close)]
}

fn report() -> impl Strategy<Value = (DeliveryStatus, Option<ErrorClass>)> {
    let classes = vec![
        ErrorClass::RetryLater,
        ErrorClass::Unreachable,
        ErrorClass::Filtered,
        ErrorClass::Config,
        ErrorClass::Unknown,
    ];
    prop_oneof![
        1 => Just((DeliveryStatus::Sending, None)),
        3 => Just((DeliveryStatus::Sent, None)),
        3 => Just((DeliveryStatus::Delivered, None)),
        1 => Just((DeliveryStatus::Read, None)),
        1 => Just((DeliveryStatus::Undelivered, None)),
        4 => (
            select(vec![DeliveryStatus::Undelivered, DeliveryStatus::Failed]),
            select(classes),
        )
            .prop_map(|(s, c)| (s, Some(c))),
    ]
}

fn tick() -> BoxedStrategy<Transition> {
    prop_oneof![
        3 => 1u64..5_000,
        3 => 5_000u64..120_000,
        2 => 120_000u64..1_800_000,
    ]
    .prop_map(|millis| Transition::Tick { millis })
    .boxed()
}

fn pair_input(timeout: bool, targets: Vec<PhoneNumber>) -> BoxedStrategy<PairInput> {
    let mut arms: Vec<(u32, BoxedStrategy<PairInput>)> = vec![
        (3, dash().prop_map(PairInput::Dash).boxed()),
        (
            2,
            (0..CUSTOMER_BODIES.len())
                .prop_map(|body| PairInput::Customer { body })
                .boxed(),
        ),
        (
            3,
            (select(targets), dtext(), 0u8..4)
                .prop_map(|(from, text, style)| PairInput::Dispatcher { from, text, style })
                .boxed(),
        ),
    ];
    if timeout {
        arms.push((4, Just(PairInput::Timeout).boxed()));
    }
    Union::new_weighted(arms).boxed()
}

struct RelayModel;

impl ReferenceStateMachine for RelayModel {
    type State = Model;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<Model> {
        let timeout = select(vec![3_000i64, 20_000, 60_000, 90_000, 300_000]);
        (2usize..=3, 0u32..=1, proptest::array::uniform3(timeout))
            .prop_map(|(n, repeat, timeouts)| {
                let [a, b, c, d] = DISPATCHERS.map(phone);
                let layout = [vec![a], vec![b, c], vec![d]];
                let levels = (0..n).map(|i| (layout[i].clone(), timeouts[i])).collect();
                Model::new(levels, repeat)
            })
            .boxed()
    }

    fn transitions(s: &Model) -> BoxedStrategy<Transition> {
        let s1 = s.stepped();
        let n = s.dispatches.len();
        let targets = s.targets();
        let open1: Vec<usize> = (0..n).filter(|&d| s1.is_open(d)).collect();
        let mut arms: Vec<(u32, BoxedStrategy<Transition>)> = Vec::new();

        arms.push((
            6,
            (0..CUSTOMERS.len(), 0..CUSTOMER_BODIES.len())
                .prop_map(|(customer, body)| Transition::CustomerText { customer, body })
                .boxed(),
        ));
        let tag = if open1.is_empty() {
            Just(None).boxed()
        } else {
            prop_oneof![
                1 => Just(None),
                2 => (select(open1.clone()), 0u8..4).prop_map(Some),
            ]
            .boxed()
        };
        arms.push((
            7,
            (select(targets.clone()), tag, dtext())
                .prop_map(|(from, tag, text)| Transition::DispatcherText { from, tag, text })
                .boxed(),
        ));
        if n > 0 {
            arms.push((
                3,
                (0..n, dash())
                    .prop_map(|(d, action)| Transition::Dashboard { d, action })
                    .boxed(),
            ));
        }
        let accepted: Vec<(usize, usize)> = s
            .dispatches
            .iter()
            .enumerate()
            .flat_map(|(d, x)| {
                x.legs
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.accepted)
                    .map(move |(i, _)| (d, i))
            })
            .collect();
        if !accepted.is_empty() {
            arms.push((
                5,
                (select(accepted), report())
                    .prop_map(|((d, leg), (status, class))| Transition::Delivery {
                        d,
                        leg,
                        status,
                        class,
                    })
                    .boxed(),
            ));
        }
        arms.push((6, tick()));
        if !s.inbound_log.is_empty() {
            arms.push((
                1,
                (0..s.inbound_log.len())
                    .prop_map(|pick| Transition::DuplicateInbound { pick })
                    .boxed(),
            ));
        }
        if !s.status_log.is_empty() {
            arms.push((
                1,
                (0..s.status_log.len())
                    .prop_map(|pick| Transition::DuplicateStatus { pick })
                    .boxed(),
            ));
        }
        let pairs: Vec<BoxedStrategy<Transition>> = (0..n)
            .filter(|&d| s1.is_open(d) || (s.is_open(d) && s.sweepable(d)))
            .map(|d| {
                let input = pair_input(s.is_open(d) && s.sweepable(d), targets.clone());
                (input.clone(), input)
                    .prop_filter("two different inputs", |(a, b)| a != b)
                    .prop_map(move |(a, b)| Transition::ConcurrentPair { d, a, b })
                    .boxed()
            })
            .collect();
        if !pairs.is_empty() {
            arms.push((3, Union::new(pairs).boxed()));
        }
        arms.push((
            1,
            (0..CUSTOMERS.len(), 0..CUSTOMER_BODIES.len())
                .prop_map(|(customer, body)| Transition::Crash(Crash::Customer { customer, body }))
                .boxed(),
        ));
        if !open1.is_empty() {
            arms.push((
                1,
                select(open1)
                    .prop_map(|d| Transition::Crash(Crash::DashReply { d }))
                    .boxed(),
            ));
        }
        let sweepable: Vec<usize> = (0..n).filter(|&d| s.sweepable(d)).collect();
        if !sweepable.is_empty() {
            arms.push((
                2,
                select(sweepable)
                    .prop_map(|d| Transition::Crash(Crash::Sweep { d }))
                    .boxed(),
            ));
        }
        let healthy: Vec<PhoneNumber> = s
            .fault_targets()
            .into_iter()
            .filter(|t| s.fault(*t).is_none())
            .collect();
        if !healthy.is_empty() {
            let kinds = vec![
                SendErrorKind::Retryable,
                SendErrorKind::MaybeSent,
                SendErrorKind::Unreachable,
                SendErrorKind::OptedOut,
                SendErrorKind::Filtered,
                SendErrorKind::Rejected,
            ];
            // Carrier-wide kinds (Config, CarrierDown) are about the
            // carrier, not a recipient: `carriers.rs` drives them.
            arms.push((
                1,
                (select(healthy), select(kinds))
                    .prop_map(|(to, kind)| Transition::ProviderDown { to, kind })
                    .boxed(),
            ));
        }
        if !s.faults.is_empty() {
            let down: Vec<PhoneNumber> = s.faults.iter().map(|(n, _)| *n).collect();
            arms.push((
                2,
                select(down)
                    .prop_map(|to| Transition::ProviderUp { to })
                    .boxed(),
            ));
        }
        Union::new_weighted(arms).boxed()
    }

    /// Shrinking removes earlier steps: every index must still point at
    /// something, and inputs that need an open dispatch must still have one.
    fn preconditions(s: &Model, t: &Transition) -> bool {
        let n = s.dispatches.len();
        match t {
            Transition::CustomerText { customer, body }
            | Transition::Crash(Crash::Customer { customer, body }) => {
                *customer < CUSTOMERS.len() && *body < CUSTOMER_BODIES.len()
            }
            Transition::DispatcherText { from, tag, .. } => {
                s.targets().contains(from) && tag.is_none_or(|(d, _)| s.stepped().is_open(d))
            }
            Transition::Dashboard { d, .. } => *d < n,
            Transition::Delivery { d, leg, .. } => s
                .dispatches
                .get(*d)
                .and_then(|x| x.legs.get(*leg))
                .is_some_and(|l| l.accepted),
            Transition::Tick { millis } => *millis > 0,
            Transition::DuplicateInbound { pick } => *pick < s.inbound_log.len(),
            Transition::DuplicateStatus { pick } => *pick < s.status_log.len(),
            Transition::ConcurrentPair { d, a, b } => s.pair_ok(*d, a, b),
            Transition::Crash(Crash::DashReply { d }) => s.stepped().is_open(*d),
            Transition::Crash(Crash::Sweep { d }) => s.sweepable(*d),
            Transition::ProviderDown { to, .. } => {
                s.fault_targets().contains(to) && s.fault(*to).is_none()
            }
            Transition::ProviderUp { to } => s.fault(*to).is_some(),
        }
    }

    fn apply(mut s: Model, t: &Transition) -> Model {
        s.expect = Expect::Nothing;
        match t {
            Transition::Tick { millis } => {
                let to = s.now + i64::try_from(*millis).unwrap_or(i64::MAX / 2);
                s.advance_to(to);
            }
            Transition::Crash(Crash::Sweep { d }) => {
                s.now = s.next_event(*d).unwrap_or(s.now);
                let q = s.timeout(*d);
                s.finish(*d, q, true);
            }
            Transition::ConcurrentPair { d, a, b } => {
                let sid_a = a.is_text().then(|| s.fresh_sid());
                let sid_b = b.is_text().then(|| s.fresh_sid());
                if *a == PairInput::Timeout || *b == PairInput::Timeout {
                    s.now = s.next_event(*d).unwrap_or(s.now);
                } else {
                    s.advance_to(s.now + 1);
                }
                s.pair_direct(*d, a, sid_a);
                s.expect = s.pair_rerun(*d, b, sid_b);
            }
            other => {
                s.advance_to(s.now + 1);
                s.expect = match other {
                    Transition::CustomerText { customer, .. } => {
                        let sid = s.fresh_sid();
                        s.customer_text(phone(CUSTOMERS[*customer]), sid, false)
                    }
                    Transition::Crash(Crash::Customer { customer, .. }) => {
                        let sid = s.fresh_sid();
                        s.customer_text(phone(CUSTOMERS[*customer]), sid, true)
                    }
                    Transition::DispatcherText { from, tag, text } => {
                        let sid = s.fresh_sid();
                        let routed = match tag {
                            Some((d, _)) => s.is_open(*d).then_some((*d, RouteReason::Tag)),
                            None => s.route(*from),
                        };
                        match routed {
                            Some((d, route)) => s.dispatcher_on(d, *from, text.cmd, route, sid),
                            None => Expect::Rejected,
                        }
                    }
                    Transition::Dashboard { d, action } => s.dashboard(*d, *action, false),
                    Transition::Crash(Crash::DashReply { d }) => s.dashboard(*d, Dash::Reply, true),
                    Transition::Delivery {
                        d,
                        leg,
                        status,
                        class,
                    } => s.delivery(*d, *leg, *status, *class),
                    Transition::DuplicateInbound { pick } => {
                        Expect::Unchanged(s.inbound_log[*pick].1)
                    }
                    Transition::DuplicateStatus { pick } => {
                        Expect::Unchanged(s.status_log[*pick].0)
                    }
                    Transition::ProviderDown { to, kind } => {
                        s.faults.push((*to, *kind));
                        Expect::Nothing
                    }
                    Transition::ProviderUp { to } => {
                        s.faults.retain(|(n, _)| n != to);
                        Expect::Nothing
                    }
                    Transition::Tick { .. }
                    | Transition::Crash(Crash::Sweep { .. })
                    | Transition::ConcurrentPair { .. } => Expect::Nothing,
                };
            }
        }
        s
    }
}

// ---------------------------------------------------------------------------
// The system under test

struct Sut {
    rt: tokio::runtime::Runtime,
    sim: Simulation,
    /// Real ids, in the model's order.
    ids: Vec<DispatchId>,
    /// Every inbound text made, by sid number (for verbatim duplicates).
    texts: HashMap<u64, InboundText>,
    sids: u64,
    /// Every dispatch as of the previous step.
    prev: HashMap<DispatchId, Dispatch>,
    /// How many texts the provider had been handed by the previous step.
    prev_sent: usize,
    rng: u64,
}

fn sends(effects: Vec<Effect>) -> impl Iterator<Item = OutboundMessage> {
    effects.into_iter().filter_map(|e| match e {
        Effect::Send(m) => Some(m),
        _ => None,
    })
}

impl Sut {
    fn new(m: &Model) -> Self {
        let levels = m
            .levels
            .iter()
            .map(|(targets, ms)| Level {
                name: None,
                targets: targets.clone(),
                timeout: Duration::from_millis(u64::try_from(*ms).expect("positive timeout")),
            })
            .collect();
        let policy = Policy::new(levels, m.repeat).expect("a valid policy");
        Self {
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a tokio runtime"),
            sim: Simulation::new(line(), policy),
            ids: Vec::new(),
            texts: HashMap::new(),
            sids: 0,
            prev: HashMap::new(),
            prev_sent: 0,
            rng: 0x5EED,
        }
    }

    fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn now(&self) -> Timestamp {
        self.sim.now()
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// The 1 ms step before every input but ticks.
    fn step(&self) {
        self.block(self.sim.advance(Duration::from_millis(1)))
            .expect("the 1 ms step before an input");
    }

    fn fresh_text(&mut self, from: PhoneNumber, body: &str) -> InboundText {
        self.sids += 1;
        let text = InboundText {
            sid: sid(self.sids),
            from,
            to: line(),
            body: body.to_owned(),
            media: Vec::new(),
        };
        self.texts.insert(self.sids, text.clone());
        text
    }

    fn load(&self, d: usize) -> Dispatch {
        let id = self.ids[d];
        self.block(self.sim.store.get(id))
            .expect("store get")
            .unwrap_or_else(|| panic!("dispatch {id} (#{d} of the model) is gone"))
    }

    fn tagged(&self, d: usize, style: u8, body: &str) -> String {
        let tag = self.load(d).tag();
        match style % 4 {
            0 => format!("#{tag} {body}"),
            1 => format!("[#{tag}] {body}"),
            2 => format!("#{tag}: {body}"),
            _ => format!("#{} {body}", tag.to_string().to_lowercase()),
        }
    }

    fn save(&self, d: &Dispatch, expected: u64) -> Result<(), StoreError> {
        self.block(self.sim.store.save(d, expected))
    }

    /// Checks what the relay answered against what the model expects.
    fn expect(&mut self, want: &Expect, got: Result<Outcome, RelayError>, what: &str) {
        match (want, &got) {
            (Expect::Opened(d), Ok(Outcome::Opened(id))) => {
                assert_eq!(*d, self.ids.len(), "{what}: opened an unexpected dispatch");
                self.ids.push(*id);
            }
            (Expect::Applied(d), Ok(Outcome::Applied(id)))
            | (Expect::Unchanged(d), Ok(Outcome::Unchanged(id))) => {
                assert_eq!(
                    *id, self.ids[*d],
                    "{what}: went to another dispatch than model #{d}"
                );
            }
            (Expect::Rejected, Err(e)) => {
                assert!(
                    !e.is_retryable(),
                    "{what}: refused for a transient reason: {e}"
                );
            }
            _ => panic!(
                "{what}: the model expected {want:?}, the relay answered {got:?}\n{}",
                self.sim.timeline()
            ),
        }
    }

    /// Records the opt-outs a transition's events report (a send refused
    /// with an opt-out error), as the driver does before its sends.
    fn record_opt_outs(&self, effects: &[Effect]) {
        for e in effects {
            if let Effect::Publish(ev) = e
                && let EventKind::OptedOut {
                    number,
                    code: Some(_),
                } = &ev.kind
            {
                self.block(self.sim.opt_outs.opt_out(*number, ev.at))
                    .expect("the in-memory opt-out list");
            }
        }
    }

    /// What a driver does after a won save: send (unless the recipient is
    /// on the opt-out list: then the refusal is fed back, as the driver's
    /// check before every send does; the test policy has no relay lines and
    /// no rate limits), record each outcome.
    fn carry_out(&self, id: DispatchId, effects: Vec<Effect>) {
        self.record_opt_outs(&effects);
        let mut queue: VecDeque<OutboundMessage> = sends(effects).collect();
        while let Some(msg) = queue.pop_front() {
            let opted_out = self
                .block(self.sim.opt_outs.is_opted_out(msg.to))
                .expect("the in-memory opt-out list");
            let input = if opted_out {
                Input::SendBlocked {
                    leg: msg.leg,
                    reason: SkipReason::OptedOut,
                }
            } else {
                let result = self.block(self.sim.provider.send(&msg));
                Input::SendOutcome {
                    leg: msg.leg,
                    result,
                }
            };
            let mut d = self
                .block(self.sim.store.get(id))
                .expect("store get")
                .expect("the dispatch just saved");
            let v = d.version();
            let fx = d
                .handle(self.now(), input)
                .expect("a send outcome for a leg of the dispatch");
            if fx.is_empty() {
                continue;
            }
            d.set_version(v + 1);
            self.save(&d, v).expect("no other writer in between");
            self.record_opt_outs(&fx);
            queue.extend(sends(fx));
        }
    }

    /// Saves a transition and loses its sends, as if the process died.
    fn save_crashed(&self, mut d: Dispatch, input: Input) {
        let v = d.version();
        let fx = d
            .handle(self.now(), input)
            .expect("the model says the input applies");
        assert!(!fx.is_empty(), "a crashed transition changed nothing");
        d.set_version(v + 1);
        self.save(&d, v).expect("the crashed transition saves");
    }

    fn free_tag(&mut self) -> Tag {
        loop {
            let tag = Tag::candidate(self.random(), 0);
            if self
                .block(self.sim.store.open_by_tag(tag))
                .expect("store open_by_tag")
                .is_none()
            {
                return tag;
            }
        }
    }

    fn versions(&self) -> Vec<(DispatchId, u64)> {
        self.sim
            .store
            .all()
            .iter()
            .map(|d| (d.id(), d.version()))
            .collect()
    }

    fn input(&mut self, m: &Model, t: &Transition) {
        match t {
            Transition::CustomerText { customer, body } => {
                let text = self.fresh_text(phone(CUSTOMERS[*customer]), CUSTOMER_BODIES[*body]);
                let got = self.block(self.sim.relay.inbound(text));
                self.expect(&m.expect, got, "customer text");
            }
            Transition::DispatcherText { from, tag, text } => {
                let body = match tag {
                    Some((d, style)) => self.tagged(*d, *style, &text.render()),
                    None => text.render(),
                };
                let inbound = self.fresh_text(*from, &body);
                let got = self.block(self.sim.relay.inbound(inbound));
                self.expect(&m.expect, got, "dispatcher text");
            }
            Transition::Dashboard { d, action } => {
                let got = self.block(self.sim.relay.dashboard(self.ids[*d], action.action()));
                self.expect(&m.expect, got, "dashboard action");
            }
            Transition::Delivery {
                d,
                leg,
                status,
                class,
            } => {
                let x = self.load(*d);
                let sid = x.legs()[*leg]
                    .sid
                    .clone()
                    .expect("the model says the provider accepted this leg");
                let report = DeliveryReport {
                    sid,
                    status: *status,
                    error: class.map(|class| DeliveryError {
                        code: error_code(class),
                        class,
                    }),
                };
                let got = self.block(self.sim.relay.delivery(report));
                self.expect(&m.expect, got, "status callback");
            }
            Transition::DuplicateInbound { pick } => {
                let text = self.texts[&m.inbound_log[*pick].0].clone();
                let (before, sent) = (self.versions(), self.sim.provider.sent().len());
                let got = self.block(self.sim.relay.inbound(text));
                self.expect(&m.expect, got, "duplicate inbound webhook");
                assert_eq!(
                    before,
                    self.versions(),
                    "B2: a duplicate text changed a dispatch"
                );
                assert_eq!(
                    sent,
                    self.sim.provider.sent().len(),
                    "B2: a duplicate text sent"
                );
            }
            Transition::DuplicateStatus { pick } => {
                let (d, leg, status, class) = m.status_log[*pick];
                let sid = self.load(d).legs()[leg]
                    .sid
                    .clone()
                    .expect("an accepted leg");
                let report = DeliveryReport {
                    sid,
                    status,
                    error: class.map(|class| DeliveryError {
                        code: error_code(class),
                        class,
                    }),
                };
                let (before, sent) = (self.versions(), self.sim.provider.sent().len());
                let got = self.block(self.sim.relay.delivery(report));
                self.expect(&m.expect, got, "duplicate status callback");
                assert_eq!(
                    before,
                    self.versions(),
                    "B2: a duplicate callback changed a dispatch"
                );
                assert_eq!(
                    sent,
                    self.sim.provider.sent().len(),
                    "B2: a duplicate callback sent"
                );
            }
            Transition::Crash(Crash::Customer { customer, body }) => {
                let from = phone(CUSTOMERS[*customer]);
                let text = self.fresh_text(from, CUSTOMER_BODIES[*body]);
                let open = self
                    .block(self.sim.store.open_for_customer(line(), from))
                    .expect("store open_for_customer");
                match open {
                    Some(d) => {
                        let at = self.ids.iter().position(|id| *id == d.id());
                        assert_eq!(
                            at.map(Expect::Applied),
                            Some(m.expect.clone()),
                            "crashed customer text joined another dispatch than the model's"
                        );
                        self.save_crashed(d, Input::CustomerText(text));
                    }
                    None => {
                        assert_eq!(m.expect, Expect::Opened(self.ids.len()), "crash: open");
                        let now = self.now();
                        let r = u128::from(self.random()) << 64 | u128::from(self.random());
                        let id = DispatchId::new(now, r);
                        let tag = self.free_tag();
                        let policy = self.sim.relay.policy(line()).expect("the line").clone();
                        let (mut d, _lost) =
                            Dispatch::open(id, tag, policy, text, now).expect("a customer text");
                        d.set_version(1);
                        self.save(&d, 0).expect("the crashed open saves");
                        self.ids.push(id);
                    }
                }
            }
            Transition::Crash(Crash::DashReply { d }) => {
                let mut x = self.load(*d);
                if m.expect == Expect::Rejected {
                    // The reply is refused (the customer is unreachable):
                    // nothing to save, so nothing for a crash to lose.
                    let before = x.clone();
                    let got = x.handle(self.now(), Input::Dashboard(Dash::Reply.action()));
                    assert_eq!(
                        got,
                        Err(InputError::Unreachable(x.customer())),
                        "crashed dashboard reply: the model expected a refusal"
                    );
                    assert_eq!(x, before, "a refused dashboard reply changed the dispatch");
                } else {
                    self.save_crashed(x, Input::Dashboard(Dash::Reply.action()));
                }
            }
            Transition::ProviderDown { to, kind } => {
                self.sim.provider.fail_always(*to, send_error(*kind));
            }
            Transition::ProviderUp { to } => self.sim.provider.heal(*to),
            Transition::Tick { .. }
            | Transition::Crash(Crash::Sweep { .. })
            | Transition::ConcurrentPair { .. } => {
                unreachable!("handled in apply")
            }
        }
    }

    fn crash_sweep(&self, d: usize) {
        let x = self.load(d);
        let t = x
            .next_deadline()
            .expect("a sweepable dispatch has a deadline");
        assert!(t > self.now(), "a deadline was left overdue");
        self.sim.clock.set(t);
        self.save_crashed(x, Input::Timeout);
    }

    fn pair_text(&mut self, d: usize, p: &PairInput) -> Option<InboundText> {
        match p {
            PairInput::Customer { body } => {
                let customer = self.load(d).customer();
                Some(self.fresh_text(customer, CUSTOMER_BODIES[*body]))
            }
            PairInput::Dispatcher { from, text, style } => {
                let body = self.tagged(d, *style, &text.render());
                Some(self.fresh_text(*from, &body))
            }
            _ => None,
        }
    }

    fn pair_input(p: &PairInput, text: Option<InboundText>) -> Input {
        match (p, text) {
            (PairInput::Dash(a), _) => Input::Dashboard(a.action()),
            (PairInput::Customer { .. }, Some(t)) => Input::CustomerText(t),
            (PairInput::Dispatcher { .. }, Some(text)) => Input::DispatcherText {
                text,
                route: RouteReason::Tag,
            },
            _ => Input::Timeout,
        }
    }

    fn pair(&mut self, m: &Model, d: usize, a: &PairInput, b: &PairInput) {
        let ta = self.pair_text(d, a);
        let tb = self.pair_text(d, b);
        if *a == PairInput::Timeout || *b == PairInput::Timeout {
            let t = self.load(d).next_deadline().expect("a due dispatch");
            assert!(t > self.now(), "a deadline was left overdue");
            self.sim.clock.set(t);
        } else {
            self.step();
        }
        let now = self.now();
        let id = self.ids[d];
        let mut first = self.load(d);
        let mut second = self.load(d);
        let v = first.version();
        assert_eq!(v, second.version(), "two loads, two versions");
        let won = first
            .handle(now, Self::pair_input(a, ta))
            .unwrap_or_else(|e| panic!("pair input {a:?} refused: {e}"));
        let lost = second
            .handle(now, Self::pair_input(b, tb.clone()))
            .unwrap_or_else(|e| panic!("pair input {b:?} refused: {e}"));
        assert!(
            !won.is_empty() && !lost.is_empty(),
            "a pair input changed nothing"
        );
        first.set_version(v + 1);
        second.set_version(v + 1);
        let r1 = self.save(&first, v);
        let r2 = self.save(&second, v);
        assert!(r1.is_ok(), "the first save of version {v} failed: {r1:?}");
        assert!(
            matches!(
                r2,
                Err(StoreError::Conflict {
                    reason: ConflictReason::Version { .. },
                    ..
                })
            ),
            "two writers saved over version {v}: the second save must be a version conflict, got {r2:?}"
        );
        assert_eq!(self.load(d), first, "the store holds the winner");
        // The loser's effects are dropped: it never saved.
        self.carry_out(id, won);
        match b {
            PairInput::Dash(action) => {
                let got = self.block(self.sim.relay.dashboard(id, action.action()));
                self.expect(&m.expect, got, "pair loser re-run (dashboard)");
            }
            PairInput::Customer { .. } | PairInput::Dispatcher { .. } => {
                let text = tb.expect("a text input");
                let got = self.block(self.sim.relay.inbound(text));
                self.expect(&m.expect, got, "pair loser re-run (text)");
            }
            PairInput::Timeout => {
                let report = self.block(self.sim.relay.sweep());
                assert!(report.is_ok(), "the sweep failed: {report:?}");
                assert_eq!(
                    m.expect,
                    Expect::Swept(report.fired),
                    "pair loser re-run (sweep)"
                );
            }
        }
    }

    // ----- checks ---------------------------------------------------------

    /// Property 3 (and no dispatch lost): compared with the previous step.
    fn check_history(&mut self, strict: bool) {
        let now: HashMap<DispatchId, Dispatch> = self
            .sim
            .store
            .all()
            .into_iter()
            .map(|d| (d.id(), d))
            .collect();
        for (id, p) in &self.prev {
            let d = now
                .get(id)
                .unwrap_or_else(|| panic!("dispatch {id} was lost"));
            let ctx = format!("P3: dispatch {id} (#{})", d.tag());
            assert!(d.version() >= p.version(), "{ctx}: version went back");
            if d.version() == p.version() {
                assert_eq!(d, p, "{ctx}: changed without a new version");
            }
            let (a, b) = (p.state(), d.state());
            assert!(
                a == b
                    || matches!(
                        (a, b),
                        (State::Open, State::Acked | State::Closed | State::Failed)
                            | (State::Acked, State::Closed)
                    ),
                "{ctx}: state moved {a:?} -> {b:?}"
            );
            assert!(
                (d.round(), d.level()) >= (p.round(), p.level()),
                "{ctx}: (round, level) moved back from {:?} to {:?}",
                (p.round(), p.level()),
                (d.round(), d.level())
            );
            if let Some(ack) = p.ack() {
                assert_eq!(d.ack(), Some(ack), "{ctx}: the ack changed");
                assert_eq!(
                    (d.round(), d.level()),
                    (p.round(), p.level()),
                    "{ctx}: escalated after the ack"
                );
            }
            assert!(d.legs().len() >= p.legs().len(), "{ctx}: a leg vanished");
            for (old, new) in p.legs().iter().zip(d.legs()) {
                assert_eq!(
                    (old.to, old.purpose),
                    (new.to, new.purpose),
                    "{ctx}: leg {} was rewritten",
                    old.index
                );
                if strict && old.status.is_failure() {
                    assert_eq!(
                        new.status, old.status,
                        "{ctx}: leg {} failed, then its status moved on",
                        old.index
                    );
                }
                assert!(
                    new.status.rank() >= old.status.rank(),
                    "{ctx}: leg {} status moved back {} -> {}",
                    old.index,
                    old.status,
                    new.status
                );
            }
        }
        if strict {
            let sent = self.sim.provider.sent();
            for s in &sent[self.prev_sent.min(sent.len())..] {
                let msg = &s.message;
                let known = self.prev.get(&msg.dispatch).is_some_and(|p| {
                    p.unreachable().contains(&msg.to) || p.opted_out().contains(&msg.to)
                });
                assert!(
                    !known,
                    "B8: dispatch {} texted {} (leg {}), a number it had already found \
                     unreachable or opted out\n{}",
                    msg.dispatch,
                    msg.to,
                    msg.leg,
                    self.sim.timeline()
                );
            }
        }
        self.prev_sent = self.sim.provider.sent().len();
        self.prev = now;
    }

    /// Properties 1, 2, 4, 5, 6 and the extras, on the real state alone
    /// (the model only says which attempts a crash lost).
    fn check_properties(&self, m: &Model) {
        let line = line();
        let now = self.now();
        let all = self.sim.store.all();
        let by_id: HashMap<DispatchId, &Dispatch> = all.iter().map(|d| (d.id(), d)).collect();
        let index: HashMap<DispatchId, usize> = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i))
            .collect();
        let sent = self.sim.provider.sent();
        let mut per_leg: HashMap<(DispatchId, u32), (u32, u32)> = HashMap::new();
        for s in &sent {
            let msg = &s.message;
            assert_ne!(msg.to, line, "P6: texted the business line: {msg:?}");
            assert_eq!(msg.from, line, "every text goes out from the business line");
            let d = by_id
                .get(&msg.dispatch)
                .unwrap_or_else(|| panic!("a text for an unknown dispatch: {msg:?}"));
            let leg = d
                .legs()
                .get(msg.leg as usize)
                .unwrap_or_else(|| panic!("a text for an unknown leg: {msg:?}"));
            assert_eq!(
                leg.to, msg.to,
                "a text went to another number than its leg's"
            );
            let e = per_leg.entry((msg.dispatch, msg.leg)).or_default();
            e.0 += 1;
            if s.result.is_ok() {
                e.1 += 1;
            }
        }
        let mut owners: HashMap<ProviderMessageId, DispatchId> = HashMap::new();
        for d in &all {
            let id = d.id();
            let ctx = format!("dispatch {id} (#{}, customer {})", d.tag(), d.customer());
            let model = index.get(&id).copied();

            // 1. At most one send per escalation step.
            let mut steps = HashSet::new();
            for leg in d.legs() {
                if let Purpose::Forward { round, level } = leg.purpose {
                    assert!(
                        steps.insert((round, level, leg.to)),
                        "P1: {ctx}: two forward legs for round {round} level {level} to {}\n{}",
                        leg.to,
                        self.sim.timeline()
                    );
                }
                let (attempts, accepted) =
                    per_leg.get(&(id, leg.index)).copied().unwrap_or_default();
                assert!(
                    accepted <= 1,
                    "P1: {ctx}: leg {} ({:?} to {}) accepted {accepted} times\n{}",
                    leg.index,
                    leg.purpose,
                    leg.to,
                    self.sim.timeline()
                );
                assert_eq!(
                    accepted == 1,
                    leg.sid.is_some(),
                    "P1: {ctx}: leg {} accepted {accepted} times but its provider id is {:?}",
                    leg.index,
                    leg.sid
                );
                let lost = model.map_or(0, |i| m.lost(i, leg.index as usize));
                assert!(
                    attempts + lost <= leg.attempts,
                    "P1: {ctx}: leg {} handed to the provider {attempts} times, \
                     {lost} attempts lost in crashes, but it counts {} attempts",
                    leg.index,
                    leg.attempts
                );
            }

            // 2. An inbound message id in one dispatch only.
            for s in d.inbound_sids() {
                if let Some(other) = owners.insert(s.clone(), id) {
                    panic!("P2: message {s} is held by {other} and by {id}");
                }
            }

            // 4. Open and un-acked: a deadline the due query finds.
            if d.state() == State::Open {
                let deadline = d
                    .next_deadline()
                    .unwrap_or_else(|| panic!("P4: {ctx} is open without a deadline"));
                assert!(
                    d.level_deadline().is_some(),
                    "P4: {ctx}: open without a level deadline"
                );
                let due = self
                    .block(self.sim.store.due(deadline, usize::MAX))
                    .expect("store due");
                assert!(
                    due.iter().any(|x| x.id == id && x.deadline == deadline),
                    "P4: {ctx}: due at {deadline} but the due query does not list it"
                );
            }
            for leg in d.legs() {
                if leg.status == DeliveryStatus::Pending {
                    assert!(
                        leg.retry_at.is_some_and(|t| t > now),
                        "{ctx}: pending leg {} has no future retry ({:?})",
                        leg.index,
                        leg.retry_at
                    );
                }
            }

            // 5. Failed only after every level of every round was tried.
            if d.state() == State::Failed {
                let policy = d.policy();
                for round in 0..policy.rounds() {
                    for (level, spec) in policy.levels().iter().enumerate() {
                        let level = level as u32;
                        let forwarded = d
                            .legs()
                            .iter()
                            .any(|l| l.purpose == Purpose::Forward { round, level });
                        let skipped = d
                            .events()
                            .iter()
                            .any(|e| e.kind == EventKind::LevelSkipped { round, level })
                            || spec.targets.iter().all(|t| {
                                d.unreachable().contains(t)
                                    || d.opted_out().contains(t)
                                    || *t == line
                                    || *t == d.customer()
                            });
                        assert!(
                            forwarded || skipped,
                            "P5: {ctx} failed but round {round} level {level} was never tried\n{}",
                            self.sim.timeline()
                        );
                    }
                }
            }

            // 6. Never the business line; the customer only gets replies.
            for leg in d.legs() {
                assert_ne!(leg.to, d.line(), "P6: {ctx}: leg {} to the line", leg.index);
                if matches!(
                    leg.purpose,
                    Purpose::Forward { .. } | Purpose::FollowUp | Purpose::Notice
                ) {
                    assert_ne!(
                        leg.to,
                        d.customer(),
                        "P6: {ctx}: leg {} ({:?}) to the customer",
                        leg.index,
                        leg.purpose
                    );
                }
            }

            // An ack stops the escalation; follow-ups go to the acker.
            if let Some(ack) = d.ack() {
                for leg in d.legs().iter().filter(|l| l.created_at > ack.at) {
                    assert!(
                        !matches!(leg.purpose, Purpose::Forward { .. }),
                        "{ctx}: forwarded (leg {}) after the ack at {}",
                        leg.index,
                        ack.at
                    );
                    if let Actor::Phone(p) = ack.by
                        && leg.purpose == Purpose::FollowUp
                        && !d.unreachable().contains(&p)
                        && !d.opted_out().contains(&p)
                    {
                        assert_eq!(
                            leg.to, p,
                            "B5: {ctx}: a customer text after {p}'s ack went to {}",
                            leg.to
                        );
                    }
                }
            }
        }

        // 2. Every accepted inbound message is found, in its dispatch.
        for (n, d) in &m.inbound_log {
            let s = sid(*n);
            let found = self
                .block(self.sim.store.by_inbound_sid(&s))
                .expect("store by_inbound_sid")
                .map(|x| x.id());
            assert_eq!(
                found,
                self.ids.get(*d).copied(),
                "P2: accepted message {s} is not found in its dispatch"
            );
            assert_eq!(owners.get(&s), found.as_ref(), "P2: message {s} owner");
        }

        // The sweep keeps up: nothing is left due.
        let due = self
            .block(self.sim.store.due(now, usize::MAX))
            .expect("store due");
        assert!(due.is_empty(), "left due after the step: {due:?}");
    }

    /// The real state against the model.
    fn check_model(&self, m: &Model) {
        assert_eq!(self.now(), ts(m.now), "the virtual clock");
        assert_eq!(
            self.ids.len(),
            m.dispatches.len(),
            "dispatches opened\n{}",
            self.sim.timeline()
        );
        assert_eq!(
            self.sim.store.len(),
            m.dispatches.len(),
            "dispatches stored"
        );
        let mut want = m.opted_out.clone();
        want.sort_unstable();
        assert_eq!(self.sim.opt_outs.all(), want, "the relay's opt-out list");
        let sent = self.sim.provider.sent();
        for (i, md) in m.dispatches.iter().enumerate() {
            let d = self.load(i);
            let ctx = format!("model #{i}: dispatch {} (#{})", d.id(), d.tag());
            let timeline = || self.sim.timeline();
            assert_eq!(d.customer(), md.customer, "{ctx}: customer");
            assert_eq!(d.state(), md.state, "{ctx}: state\n{}", timeline());
            assert_eq!(
                (d.round(), d.level()),
                (md.round, md.level),
                "{ctx}: (round, level)\n{}",
                timeline()
            );
            let level_deadline = if md.state == State::Open {
                md.deadline.map(ts)
            } else {
                None
            };
            assert_eq!(d.level_deadline(), level_deadline, "{ctx}: level deadline");
            assert_eq!(
                d.next_deadline(),
                m.next_event(i).map(ts),
                "{ctx}: next deadline"
            );
            assert_eq!(d.ack().map(|a| &a.by), md.ack.as_ref(), "{ctx}: ack");
            let mut unreachable = d.unreachable().to_vec();
            let mut want = md.unreachable.clone();
            unreachable.sort_unstable();
            want.sort_unstable();
            assert_eq!(unreachable, want, "{ctx}: unreachable numbers");
            let mut opted_out = d.opted_out().to_vec();
            let mut want = md.opted_out.clone();
            opted_out.sort_unstable();
            want.sort_unstable();
            assert_eq!(opted_out, want, "{ctx}: opted-out numbers");
            let mut inbound: Vec<String> = d.inbound_sids().map(ToString::to_string).collect();
            let mut want: Vec<String> = md.inbound.iter().map(|n| sid(*n).to_string()).collect();
            inbound.sort_unstable();
            want.sort_unstable();
            assert_eq!(inbound, want, "{ctx}: inbound messages");
            let real: Vec<String> = d
                .legs()
                .iter()
                .map(|l| {
                    let handed = sent
                        .iter()
                        .filter(|s| s.message.dispatch == d.id() && s.message.leg == l.index)
                        .count();
                    format!(
                        "{} {:?} {} {:?} attempts={} sent={handed} retry={:?} accepted={}",
                        l.to,
                        l.purpose,
                        l.status,
                        l.skipped,
                        l.attempts,
                        l.retry_at,
                        l.sid.is_some()
                    )
                })
                .collect();
            let model: Vec<String> = md
                .legs
                .iter()
                .map(|l| {
                    format!(
                        "{} {:?} {} {:?} attempts={} sent={} retry={:?} accepted={}",
                        l.to,
                        l.purpose,
                        l.status,
                        l.skipped,
                        l.attempts,
                        l.sent,
                        l.retry_at.map(ts),
                        l.accepted
                    )
                })
                .collect();
            assert_eq!(real, model, "{ctx}: legs (real vs model)\n{}", timeline());
        }
    }
}

/// The model test; `STRICT` adds the checks that three (fixed) core bugs
/// broke: no text to a number already found unreachable, failed is final.
struct RelayTest<const STRICT: bool>;

impl<const STRICT: bool> StateMachineTest for RelayTest<STRICT> {
    type SystemUnderTest = Sut;
    type Reference = RelayModel;

    fn init_test(m: &Model) -> Sut {
        Sut::new(m)
    }

    fn apply(mut sut: Sut, m: &Model, t: Transition) -> Sut {
        match &t {
            Transition::Tick { millis } => {
                sut.block(sut.sim.advance(Duration::from_millis(*millis)))
                    .expect("a tick");
            }
            Transition::Crash(Crash::Sweep { d }) => sut.crash_sweep(*d),
            Transition::ConcurrentPair { d, a, b } => sut.pair(m, *d, a, b),
            other => {
                sut.step();
                sut.input(m, other);
            }
        }
        sut.check_history(STRICT);
        sut
    }

    fn check_invariants(sut: &Sut, m: &Model) {
        sut.check_properties(m);
        sut.check_model(m);
        if let Err(e) = sut.sim.store.check_indexes() {
            panic!("{e}");
        }
    }
}

prop_state_machine! {
    #![proptest_config(Config {
        cases: 256,
        max_shrink_iters: 4096,
        ..Config::default()
    })]

    /// The relay against the model: 256 sequences of 1 to 40 steps.
    #[test]
    fn relay_follows_the_model(sequential 1..40 => RelayTest<false>);

    /// The same, plus two checks on the real state alone (see the
    /// regression tests below): a number found unreachable is never texted
    /// again in its dispatch, and a failed text's status is final.
    #[test]
    fn relay_follows_the_model_strict(sequential 1..40 => RelayTest<true>);
}

#[test]
fn the_model_uses_the_outbox_grace_of_the_core() {
    assert_eq!(Duration::from_millis(GRACE as u64), OUTBOX_GRACE);
}

// ---------------------------------------------------------------------------
// Regression tests: three core bugs the strict model test found, now fixed.

fn small_sim() -> Simulation {
    let [a, b, c, _] = DISPATCHERS.map(phone);
    let level = |targets: Vec<PhoneNumber>| Level {
        name: None,
        targets,
        timeout: Duration::from_secs(60),
    };
    let policy = Policy::new(vec![level(vec![a]), level(vec![b, c])], 0).expect("a policy");
    Simulation::new(line(), policy)
}

/// A customer whose number came back opted out (21610: they texted STOP)
/// is not texted by later replies: `ErrorClass::OptedOut` says "never
/// text it again in this dispatch" and B8 says "honour STOP". (The bug:
/// `Dispatch::reply`, and the `Notice` legs to dispatchers, did not look at
/// `Dispatch::unreachable`; now no leg is made to such a number.)
///
/// Minimal sequence from the strict model test: ProviderDown { customer 0,
/// OptedOut }, CustomerText { customer 0 }, DispatcherText { A, reply },
/// DispatcherText { A, reply }.
#[tokio::test]
async fn replies_never_text_a_customer_who_opted_out() {
    let sim = small_sim();
    let customer = phone(CUSTOMERS[0]);
    let a = phone(DISPATCHERS[0]);
    sim.provider
        .fail_always(customer, send_error(SendErrorKind::OptedOut));
    sim.customer_texts(customer, "Need a dumpster")
        .await
        .expect("opens");
    sim.dispatcher_texts(a, "on my way").await.expect("a reply");
    let d = sim.store.all().remove(0);
    assert_eq!(
        d.unreachable(),
        [customer],
        "the failed reply marks the customer"
    );
    sim.dispatcher_texts(a, "OK, there in 10")
        .await
        .expect("a second reply");
    let texts = sim
        .provider
        .sent()
        .iter()
        .filter(|s| s.message.to == customer)
        .count();
    assert_eq!(
        texts,
        1,
        "the customer opted out after the first reply but was texted again\n{}",
        sim.timeline()
    );
}

/// The outbox's variant: a reply saved before a crash is not re-sent by the
/// sweep after `OUTBOX_GRACE` when the customer's number was found
/// unreachable in the meantime; the pending leg fails instead. (The bug:
/// `Dispatch::on_timeout` re-sent every due pending leg without looking at
/// `Dispatch::unreachable`.)
///
/// Minimal sequence from the strict model test: CustomerText { customer 0 },
/// DispatcherText { A, reply }, Crash(DashReply { d: 0 }), Delivery { leg 1,
/// undelivered, Unreachable }, Tick { 59 999 ms }.
#[tokio::test]
async fn the_outbox_never_resends_to_an_unreachable_number() {
    let sim = small_sim();
    let customer = phone(CUSTOMERS[0]);
    let a = phone(DISPATCHERS[0]);
    sim.customer_texts(customer, "Need a dumpster")
        .await
        .expect("opens");
    sim.dispatcher_texts(a, "on my way").await.expect("a reply");
    // A dashboard reply is saved, then the process dies before sending it.
    let mut d = sim.store.all().remove(0);
    let v = d.version();
    d.handle(sim.now(), Input::Dashboard(Dash::Reply.action()))
        .expect("a dashboard reply");
    d.set_version(v + 1);
    sim.store.save(&d, v).await.expect("saved");
    // The first reply comes back undeliverable: the customer is unreachable.
    let first = d.legs()[1]
        .sid
        .clone()
        .expect("the first reply was accepted");
    sim.report(
        &first,
        DeliveryStatus::Undelivered,
        Some(DeliveryError {
            code: 30006,
            class: ErrorClass::Unreachable,
        }),
    )
    .await
    .expect("a status callback");
    sim.advance(OUTBOX_GRACE).await.expect("the sweep");
    let texts = sim
        .provider
        .sent()
        .iter()
        .filter(|s| s.message.to == customer)
        .count();
    assert_eq!(
        texts,
        1,
        "the outbox texted a number found unreachable\n{}",
        sim.timeline()
    );
}

/// A failed text never becomes `read`: `DeliveryStatus::rank`'s docs say
/// "among the terminal ones only `Delivered → Read` moves". (The bug:
/// `Undelivered` and `Failed` rank 5 and `Read` 6, so a `read` callback
/// after `undelivered` was applied, and the failed leg then counted as not
/// failed: it received follow-ups, and its level no longer escalated when
/// its other texts failed. Now a report for a failed leg changes nothing.)
///
/// Minimal sequence from the strict model test: CustomerText { customer 0 },
/// Delivery { leg 0, undelivered }, Delivery { leg 0, read }.
#[tokio::test]
async fn a_failed_text_never_turns_read() {
    let sim = small_sim();
    let customer = phone(CUSTOMERS[0]);
    sim.customer_texts(customer, "Need a dumpster")
        .await
        .expect("opens");
    let leg = sim.store.all().remove(0).legs()[0]
        .sid
        .clone()
        .expect("accepted");
    sim.report(&leg, DeliveryStatus::Undelivered, None)
        .await
        .expect("undelivered");
    sim.report(&leg, DeliveryStatus::Read, None)
        .await
        .expect("read");
    let d = sim.store.all().remove(0);
    assert_eq!(
        d.legs()[0].status,
        DeliveryStatus::Undelivered,
        "a failed text's status moved on"
    );
}

// ---------------------------------------------------------------------------
// Fixed sequences through the model test (relay against the model, strict
// checks after every step), for the opt-out rules of 82e1a96.

/// Runs `steps` as `relay_follows_the_model_strict` would, with levels A;
/// B and C; `repeat` 0 and 3 s timeouts; returns the model at the end.
fn replay(steps: &[Transition]) -> Model {
    let [a, b, c, _] = DISPATCHERS.map(phone);
    let mut m = Model::new(vec![(vec![a], 3_000), (vec![b, c], 3_000)], 0);
    let mut sut = <RelayTest<true> as StateMachineTest>::init_test(&m);
    for t in steps {
        assert!(RelayModel::preconditions(&m, t), "a valid step: {t:?}");
        m = RelayModel::apply(m, t);
        sut = <RelayTest<true> as StateMachineTest>::apply(sut, &m, t.clone());
        <RelayTest<true> as StateMachineTest>::check_invariants(&sut, &m);
    }
    m
}

fn reply_text() -> DText {
    DText {
        cmd: None,
        variant: 0,
    }
}

/// A number whose send failed as opted out (21610) in one dispatch is on
/// the relay's opt-out list: the next dispatch's texts to it are refused by
/// the driver before the provider (skipped, recorded as an opt-out, not as
/// unreachable), and a level none of whose texts can go out escalates.
///
/// The minimal sequence with which the model of f845cab diverged after
/// 82e1a96 (it expected the provider to be asked, and the numbers marked
/// unreachable).
#[test]
fn an_opt_out_carries_over_to_later_dispatches() {
    let [a, b, c, _] = DISPATCHERS.map(phone);
    let m = replay(&[
        Transition::ProviderDown {
            to: b,
            kind: SendErrorKind::OptedOut,
        },
        Transition::ProviderDown {
            to: a,
            kind: SendErrorKind::OptedOut,
        },
        Transition::CustomerText {
            customer: 0,
            body: 0,
        },
        Transition::Tick { millis: 2_999 },
        Transition::CustomerText {
            customer: 0,
            body: 0,
        },
    ]);
    assert_eq!(
        m.dispatches.len(),
        2,
        "the first one failed, a second opened"
    );
    assert_eq!(m.opted_out, [a, b]);
    let x = &m.dispatches[1];
    assert!(x.unreachable.is_empty());
    let skipped: Vec<PhoneNumber> = x
        .legs
        .iter()
        .filter(|l| l.skipped == Some(SkipReason::OptedOut))
        .map(|l| l.to)
        .collect();
    assert_eq!(skipped, [a, b], "the opted-out dispatchers were not texted");
    assert_eq!((x.state, x.level), (State::Open, 1), "forwarded on to C");
    assert!(x.legs.iter().any(|l| l.to == c && l.accepted));
}

/// A dispatcher's reply to a customer on the opt-out list (from an earlier
/// dispatch) is refused by the driver, and the dispatcher is told by a
/// notice (`SendBlocked` for a reply).
#[test]
fn a_reply_refused_by_the_opt_out_list_is_told_to_its_dispatcher() {
    let a = phone(DISPATCHERS[0]);
    let customer = phone(CUSTOMERS[0]);
    let m = replay(&[
        Transition::ProviderDown {
            to: customer,
            kind: SendErrorKind::OptedOut,
        },
        Transition::CustomerText {
            customer: 0,
            body: 0,
        },
        Transition::DispatcherText {
            from: a,
            tag: None,
            text: reply_text(),
        },
        Transition::Dashboard {
            d: 0,
            action: Dash::Close,
        },
        Transition::CustomerText {
            customer: 0,
            body: 0,
        },
        Transition::DispatcherText {
            from: a,
            tag: None,
            text: reply_text(),
        },
        // Now the dispatch knows: the next reply makes no leg, a notice.
        Transition::DispatcherText {
            from: a,
            tag: None,
            text: reply_text(),
        },
    ]);
    assert_eq!(m.opted_out, [customer]);
    let kinds: Vec<(PhoneNumber, Purpose, DeliveryStatus)> = m.dispatches[1]
        .legs
        .iter()
        .map(|l| (l.to, l.purpose, l.status))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                a,
                Purpose::Forward { round: 0, level: 0 },
                DeliveryStatus::Queued
            ),
            (customer, Purpose::Reply, DeliveryStatus::Skipped),
            (a, Purpose::Notice, DeliveryStatus::Queued),
            (a, Purpose::Notice, DeliveryStatus::Queued),
        ]
    );
}
