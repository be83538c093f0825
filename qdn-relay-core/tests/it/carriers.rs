//! Carrier failover over the real driver: two carriers (a line's Twilio
//! number and its AWS number) behind a `Failover`, random carrier outages
//! (outage, account error, a lost answer) and per-recipient errors.
//!
//! Properties:
//! 1. no leg is sent twice through the same carrier, and none is sent
//!    anywhere after a carrier accepted it: a lost answer (a carrier that
//!    may have sent it) is followed at most by the other carrier, at once;
//! 2. no carrier-wide error marks a recipient unreachable: only numbers
//!    the script made unreachable are;
//! 3. no dispatch fails while a dispatcher it has not tried is reachable,
//!    and every dispatch reaches a dispatcher or holds while every carrier
//!    is down; once the carriers are back, every dispatch reaches one.
//!
//! Also (unit tests): a text to the line's AWS number is the line's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;
use qdn_relay_core::{
    CarrierNumber, Clock, DeliveryStatus, DispatchId, Failover, InboundText, ManualClock,
    MemoryStore, OutboundMessage, PhoneNumber, Policy, Purpose, Relay, SendError, SendErrorKind,
    SendReceipt, SmsProvider, State, Timestamp,
};

const T0: Timestamp = Timestamp::from_millis(1_767_603_600_000);
const LINE: &str = "+16195550000";
const AWS: &str = "+16195550900";
const DISPATCHERS: [&str; 2] = ["+16195550101", "+18583354807"];
const CARRIERS: [&str; 2] = ["twilio", "aws-sms"];

fn n(s: &str) -> PhoneNumber {
    s.parse().expect("a number")
}

/// How a carrier answers now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Up,
    /// Every send fails with this carrier-wide kind.
    Down(SendErrorKind),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Accepted,
    MaybeSent,
    Refused(SendErrorKind),
}

#[derive(Default)]
struct World {
    health: BTreeMap<&'static str, Health>,
    /// The next send through this carrier loses its answer.
    lose_next: BTreeSet<&'static str>,
    /// Numbers that cannot receive texts (any carrier).
    unreachable: BTreeSet<PhoneNumber>,
    sends: Vec<(DispatchId, u32, &'static str, Answer)>,
    next: u32,
}

struct Carrier {
    name: &'static str,
    world: Arc<Mutex<World>>,
}

#[async_trait]
impl SmsProvider for Carrier {
    async fn send(&self, msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
        let mut w = self.world.lock().expect("lock");
        let answer = if let Some(&Health::Down(kind)) = w.health.get(self.name) {
            Answer::Refused(kind)
        } else if w.unreachable.contains(&msg.to) {
            Answer::Refused(SendErrorKind::Unreachable)
        } else if w.lose_next.remove(self.name) {
            Answer::MaybeSent
        } else {
            Answer::Accepted
        };
        w.sends
            .push((msg.dispatch, msg.leg, self.name, answer.clone()));
        w.next += 1;
        match answer {
            Answer::Accepted => Ok(SendReceipt::new(
                format!("SM{:032}", w.next).parse().expect("sid"),
            )),
            Answer::MaybeSent => Err(SendError::new(SendErrorKind::MaybeSent, "timeout")),
            Answer::Refused(kind) => Err(SendError::new(kind, "refused")),
        }
    }
    fn name(&self) -> &str {
        self.name
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// A customer (0..3) texts the line.
    Text(usize),
    /// A carrier goes down with a kind, or comes back.
    Carrier(usize, Health),
    /// The next send through a carrier loses its answer.
    LoseNext(usize),
    /// A dispatcher becomes unreachable.
    Unreachable(usize),
    /// Time passes (seconds); then a sweep.
    Tick(u64),
}

fn step() -> impl Strategy<Value = Step> {
    let health = prop_oneof![
        Just(Health::Up),
        Just(Health::Down(SendErrorKind::CarrierDown)),
        Just(Health::Down(SendErrorKind::Config)),
    ];
    prop_oneof![
        3 => (0usize..3).prop_map(Step::Text),
        3 => (0usize..2, health).prop_map(|(c, h)| Step::Carrier(c, h)),
        1 => (0usize..2).prop_map(Step::LoseNext),
        1 => (0usize..2).prop_map(Step::Unreachable),
        3 => (1u64..1_500).prop_map(Step::Tick),
    ]
}

struct Sut {
    rt: tokio::runtime::Runtime,
    world: Arc<Mutex<World>>,
    clock: Arc<ManualClock>,
    store: Arc<MemoryStore>,
    relay: Relay<MemoryStore, Failover, ManualClock>,
    texts: u32,
}

fn policy() -> Policy {
    Policy::simple(
        n(DISPATCHERS[0]),
        n(DISPATCHERS[1]),
        Duration::from_secs(900),
    )
    .and_then(|p| {
        p.with_carriers(vec![
            CarrierNumber {
                carrier: CARRIERS[0].into(),
                number: n(LINE),
            },
            CarrierNumber {
                carrier: CARRIERS[1].into(),
                number: n(AWS),
            },
        ])
    })
    .expect("policy")
}

impl Sut {
    fn new() -> Self {
        let world = Arc::new(Mutex::new(World::default()));
        let clock = Arc::new(ManualClock::new(T0));
        let carriers: Vec<Box<dyn SmsProvider>> = CARRIERS
            .iter()
            .map(|&name| {
                Box::new(Carrier {
                    name,
                    world: Arc::clone(&world),
                }) as Box<dyn SmsProvider>
            })
            .collect();
        let failover = Arc::new(Failover::new(carriers).with_clock(clock.clone()));
        let store = Arc::new(MemoryStore::new());
        let relay = Relay::builder(store.clone(), failover, clock.clone())
            .line(n(LINE), policy())
            .seed(7)
            .build();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime");
        Self {
            rt,
            world,
            clock,
            store,
            relay,
            texts: 0,
        }
    }

    fn apply(&mut self, s: &Step) {
        match *s {
            Step::Text(c) => {
                self.texts += 1;
                let text = InboundText {
                    sid: format!("SMin{:030}", self.texts).parse().expect("sid"),
                    from: format!("+1619555020{c}").parse().expect("customer"),
                    to: n(LINE),
                    body: "help".into(),
                    media: vec![],
                };
                // A closed or failed dispatch refuses nothing here: a new
                // one opens.
                let _ = self.rt.block_on(self.relay.inbound(text));
            }
            Step::Carrier(c, h) => {
                self.world
                    .lock()
                    .expect("lock")
                    .health
                    .insert(CARRIERS[c], h);
            }
            Step::LoseNext(c) => {
                self.world
                    .lock()
                    .expect("lock")
                    .lose_next
                    .insert(CARRIERS[c]);
            }
            Step::Unreachable(d) => {
                self.world
                    .lock()
                    .expect("lock")
                    .unreachable
                    .insert(n(DISPATCHERS[d]));
            }
            Step::Tick(secs) => {
                self.clock.advance(Duration::from_secs(secs));
                let report = self.rt.block_on(self.relay.sweep());
                assert!(report.is_ok(), "{report:?}");
            }
        }
    }

    fn all_down(&self) -> bool {
        let w = self.world.lock().expect("lock");
        CARRIERS
            .iter()
            .all(|c| matches!(w.health.get(c), Some(Health::Down(_))))
    }

    fn check(&self) {
        let w = self.world.lock().expect("lock");
        // 1. a leg is never handed to the same carrier twice, and never
        // sent anywhere after a carrier accepted it (a carrier that lost
        // its answer may be followed by the other carrier, not by itself).
        let mut accepted: BTreeSet<(DispatchId, u32)> = BTreeSet::new();
        let mut handed: BTreeMap<(DispatchId, u32, &str), Answer> = BTreeMap::new();
        for (d, leg, carrier, answer) in &w.sends {
            assert!(
                !accepted.contains(&(*d, *leg)),
                "leg {leg} of {d} sent again through {carrier} after it was accepted"
            );
            if let Some(before) = handed.get(&(*d, *leg, *carrier)) {
                panic!("leg {leg} of {d} sent twice through {carrier}, after {before:?}");
            }
            if *answer == Answer::Accepted {
                accepted.insert((*d, *leg));
            }
            if matches!(answer, Answer::Accepted | Answer::MaybeSent) {
                handed.insert((*d, *leg, *carrier), answer.clone());
            }
        }
        for d in self.store.all() {
            // 2. only scripted numbers are unreachable.
            for u in d.unreachable() {
                assert!(
                    w.unreachable.contains(u),
                    "{u} marked unreachable by a carrier error"
                );
            }
            // 3. failed only after every dispatcher was told (or cannot
            // be): a carrier error never burns through the levels.
            if d.state() == State::Failed {
                for t in DISPATCHERS {
                    let told = d.legs().iter().any(|l| {
                        l.to == n(t)
                            && matches!(l.purpose, Purpose::Forward { .. })
                            && handed_over(l)
                    });
                    assert!(
                        told || w.unreachable.contains(&n(t)),
                        "{} failed while {t} was reachable and never told",
                        d.id()
                    );
                }
            }
            if d.state() == State::Open && !reached(&d) && d.carrier_hold().is_none() {
                // Not held and nothing handed over: a send must be under
                // way (its outbox retry) or the level waits on a per-
                // recipient failure being escalated.
                assert!(
                    d.legs().iter().any(|l| l.status == DeliveryStatus::Pending)
                        || d.next_deadline().is_some(),
                    "{} neither reached a dispatcher nor holds",
                    d.id()
                );
            }
            if d.carrier_hold().is_some() && self_all_up(&w) {
                // A hold ends at the next try; it must be due.
                assert!(
                    d.next_deadline().is_some(),
                    "{} holds with nothing due",
                    d.id()
                );
            }
        }
    }

    /// Brings every carrier back and lets time pass until nothing is due.
    fn recover(&mut self) {
        {
            let mut w = self.world.lock().expect("lock");
            for c in CARRIERS {
                w.health.insert(c, Health::Up);
            }
        }
        for _ in 0..200 {
            let next = self
                .store
                .all()
                .iter()
                .filter(|d| (d.state() == State::Open && !reached(d)) || d.carrier_hold().is_some())
                .filter_map(|d| d.next_deadline())
                .min();
            let Some(next) = next else { break };
            if next > self.clock.now() {
                self.clock.set(next);
            }
            let report = self.rt.block_on(self.relay.sweep());
            assert!(report.is_ok(), "{report:?}");
        }
        for d in self.store.all() {
            assert!(
                reached(&d) || d.state() == State::Failed,
                "{} did not reach a dispatcher with every carrier up: {:#?}",
                d.id(),
                d.legs()
            );
            assert!(
                d.carrier_hold().is_none(),
                "{} still holds: {:#?} {:#?}",
                d.id(),
                d.carrier_hold(),
                d.legs()
            );
        }
    }
}

fn self_all_up(w: &World) -> bool {
    CARRIERS
        .iter()
        .all(|c| !matches!(w.health.get(c), Some(Health::Down(_))))
}

/// Whether a leg was handed to a carrier (accepted, or maybe sent).
fn handed_over(l: &qdn_relay_core::Leg) -> bool {
    l.sid.is_some() || l.status == DeliveryStatus::Unknown
}

/// Whether a forward was handed to a carrier.
fn reached(d: &qdn_relay_core::Dispatch) -> bool {
    d.legs()
        .iter()
        .any(|l| matches!(l.purpose, Purpose::Forward { .. }) && handed_over(l))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn carrier_outages_never_double_send_never_blame_the_recipient_and_never_lose_a_dispatch(
        steps in proptest::collection::vec(step(), 1..40)
    ) {
        let mut sut = Sut::new();
        for s in &steps {
            sut.apply(s);
            sut.check();
            if sut.all_down() {
                for d in sut.store.all() {
                    if d.state() == State::Open && !reached(&d) {
                        let pending_forward = d.legs().iter().any(|l| {
                            matches!(l.purpose, Purpose::Forward { .. })
                                && l.status == DeliveryStatus::Pending
                        });
                        prop_assert!(
                            !pending_forward || d.carrier_hold().is_some(),
                            "{} has a pending forward, every carrier down, and no hold", d.id()
                        );
                    }
                }
            }
        }
        sut.recover();
        sut.check();
    }
}

#[test]
fn a_dispatcher_reply_to_the_lines_aws_number_is_the_lines_and_reaches_the_customer() {
    let mut sut = Sut::new();
    sut.apply(&Step::Carrier(0, Health::Down(SendErrorKind::Config)));
    sut.apply(&Step::Text(0));
    let d = sut.store.all().pop().expect("a dispatch");
    let forward = &d.legs()[0];
    let via = forward.via.clone().expect("sent through a carrier");
    assert_eq!((via.carrier.as_str(), via.from), ("aws-sms", n(AWS)));
    assert!(
        d.events()
            .iter()
            .any(|e| e.kind.name() == "carrier_skipped")
    );
    // Twilio is back; the dispatcher answers the AWS number.
    sut.apply(&Step::Carrier(0, Health::Up));
    sut.clock.advance(Duration::from_secs(600));
    let reply = InboundText {
        sid: "SMreply000000000000000000000001".parse().expect("sid"),
        from: n(DISPATCHERS[0]),
        to: n(AWS),
        body: "on my way".into(),
        media: vec![],
    };
    assert_eq!(sut.relay.line_of(n(AWS)), Some(n(LINE)));
    sut.rt
        .block_on(sut.relay.inbound(reply))
        .expect("a dispatcher's text");
    let d = sut.store.all().pop().expect("a dispatch");
    assert_eq!(d.state(), State::Acked);
    let reply_leg = d
        .legs()
        .iter()
        .find(|l| l.purpose == Purpose::Reply)
        .expect("a reply");
    let via = reply_leg.via.clone().expect("sent");
    assert_eq!(
        (via.carrier.as_str(), via.from),
        ("twilio", n(LINE)),
        "the customer sees the business number"
    );
}
