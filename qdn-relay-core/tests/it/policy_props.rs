//! Property tests of the policies past the seed (B7, B8), over the real
//! driver on virtual time: random policies (levels with random windows in
//! zones with daylight saving, skip or hold, random rate limits and what to
//! do over them, repeat suppression), random starts (some on DST change
//! days), and random inputs (customer texts, dispatcher replies and
//! commands, STOP and START from anyone, opt-out delivery errors, time).
//!
//! Properties:
//!
//! 1. no forward is ever handed to the provider for a target outside its
//!    level's windows;
//! 2. no destination, and not the line, ever exceeds a rate limit: in any
//!    period of a limit's length at most its count of texts went out;
//! 3. a number that opted out (STOP, or error 21610) is never texted until
//!    it opts back in;
//! 4. every open dispatch has a deadline, a holding one holds until its
//!    level deadline and says so in its status; and after enough time every
//!    dispatch ended acked, closed or failed: none hangs.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;
use qdn_relay_core::testing::{SIM_START, Simulation};
use qdn_relay_core::{
    DeliveryError, DeliveryStatus, ErrorClass, HoursZone, Level, LocalTime, OverLimit, PhoneNumber,
    Policy, Purpose, Rate, State, Store, Throttle, Timestamp, Weekdays, WhenClosed, Window, Zone,
};

fn phone(s: &str) -> PhoneNumber {
    s.parse().expect("a valid number")
}

const LINE: &str = "+16195550000";
const DISPATCHERS: [&str; 4] = [
    "+16195550101",
    "+16195550102",
    "+16195550103",
    "+16195550104",
];
const CUSTOMERS: [&str; 3] = ["+16195550201", "+16195550202", "+16195550203"];
const ZONES: [&str; 3] = ["America/Los_Angeles", "Europe/Berlin", "Australia/Sydney"];
/// Where a run starts: the simulation's Monday, and the nights before
/// spring-forward and fall-back in Los Angeles and Berlin.
const STARTS: [&str; 5] = [
    "2026-01-05T09:00:00Z",
    "2026-03-08T07:30:00Z",
    "2026-11-01T07:30:00Z",
    "2026-03-28T23:30:00Z",
    "2026-10-24T23:30:00Z",
];

#[derive(Debug, Clone)]
struct LevelSpec {
    targets: Vec<usize>,
    timeout_min: u64,
    windows: Vec<(u8, u16, u16)>,
}

#[derive(Debug, Clone)]
struct Spec {
    levels: Vec<LevelSpec>,
    repeat: u32,
    hold: bool,
    zone: usize,
    target_zones: bool,
    per_destination: Vec<(u32, u64)>,
    line: Vec<(u32, u64)>,
    over_limit: u8,
    suppress: bool,
    start: usize,
}

#[derive(Debug, Clone)]
enum Action {
    Customer(usize),
    Dispatcher {
        who: usize,
        what: u8,
    },
    Stop(Who),
    Start(Who),
    /// The latest accepted text to a dispatcher comes back "undelivered:
    /// 21610", classed as opted out (the recipient opted out).
    OptOutError(usize),
    Advance(u32),
}

#[derive(Debug, Clone, Copy)]
enum Who {
    Dispatcher(usize),
    Customer(usize),
}

impl Who {
    fn number(self) -> PhoneNumber {
        match self {
            Who::Dispatcher(i) => phone(DISPATCHERS[i]),
            Who::Customer(i) => phone(CUSTOMERS[i]),
        }
    }
}

fn level_spec() -> impl Strategy<Value = LevelSpec> {
    let window = (1u8..128, 0u16..96, 0u16..96).prop_map(|(d, s, e)| (d, s * 15, e * 15));
    (
        proptest::sample::subsequence(vec![0usize, 1, 2, 3], 1..=2),
        prop_oneof![Just(5u64), Just(15), Just(60)],
        proptest::collection::vec(window, 0..=2),
    )
        .prop_map(|(targets, timeout_min, windows)| LevelSpec {
            targets,
            timeout_min,
            windows,
        })
}

fn spec() -> impl Strategy<Value = Spec> {
    let rate = (
        1u32..4,
        prop_oneof![Just(60u64), Just(300), Just(900), Just(3600)],
    );
    (
        proptest::collection::vec(level_spec(), 1..=3),
        0u32..=1,
        any::<bool>(),
        0usize..ZONES.len(),
        any::<bool>(),
        proptest::collection::vec(rate.clone(), 0..=2),
        proptest::collection::vec(rate, 0..=1),
        0u8..3,
        any::<bool>(),
        0usize..STARTS.len(),
    )
        .prop_map(
            |(
                levels,
                repeat,
                hold,
                zone,
                target_zones,
                per_destination,
                line,
                over_limit,
                suppress,
                start,
            )| Spec {
                levels,
                repeat,
                hold,
                zone,
                target_zones,
                per_destination,
                line,
                over_limit,
                suppress,
                start,
            },
        )
}

fn action() -> impl Strategy<Value = Action> {
    let who = prop_oneof![
        (0usize..4).prop_map(Who::Dispatcher),
        (0usize..3).prop_map(Who::Customer)
    ];
    prop_oneof![
        4 => (0usize..3).prop_map(Action::Customer),
        3 => (0usize..4, 0u8..4).prop_map(|(who, what)| Action::Dispatcher { who, what }),
        1 => who.clone().prop_map(Action::Stop),
        1 => who.prop_map(Action::Start),
        1 => (0usize..4).prop_map(Action::OptOutError),
        4 => prop_oneof![1u32..120, 120u32..1500, 1500u32..4000].prop_map(Action::Advance),
    ]
}

fn build(spec: &Spec) -> Policy {
    let levels: Vec<Level> = spec
        .levels
        .iter()
        .map(|l| Level {
            name: None,
            targets: l.targets.iter().map(|&i| phone(DISPATCHERS[i])).collect(),
            timeout: Duration::from_secs(l.timeout_min * 60),
        })
        .collect();
    let zone = Zone::get(ZONES[spec.zone]).expect("zone");
    let mut p = Policy::new(levels, spec.repeat)
        .expect("policy")
        .with_time_zone(zone)
        .with_when_closed(if spec.hold {
            WhenClosed::Hold
        } else {
            WhenClosed::Skip
        });
    if spec.target_zones {
        // Each dispatcher lives in another zone.
        for (i, d) in DISPATCHERS.iter().enumerate() {
            let person = qdn_relay_core::Person {
                name: Some(format!("d{i}")),
                time_zone: Some(Zone::get(ZONES[i % ZONES.len()]).expect("zone")),
            };
            p = p.with_person(phone(d), person);
        }
    }
    for (i, l) in spec.levels.iter().enumerate() {
        if l.windows.is_empty() {
            continue;
        }
        let windows = l
            .windows
            .iter()
            .map(|&(days, s, e)| Window {
                days: days_of(days),
                start: LocalTime::new((s / 60) as u8, (s % 60) as u8).expect("start"),
                end: LocalTime::new((e / 60) as u8, (e % 60) as u8).expect("end"),
            })
            .collect();
        let zone = if spec.target_zones {
            HoursZone::Target
        } else {
            HoursZone::Policy
        };
        p = p.with_hours(i, windows, zone).expect("windows");
    }
    let rates = |v: &[(u32, u64)]| -> Vec<Rate> {
        v.iter()
            .map(|&(count, secs)| Rate {
                count,
                per: Duration::from_secs(secs),
            })
            .collect()
    };
    let throttle = Throttle {
        per_destination: rates(&spec.per_destination),
        line: rates(&spec.line),
        over_limit: [OverLimit::Delay, OverLimit::Digest, OverLimit::Drop]
            [spec.over_limit as usize],
    };
    p = p.with_throttle(throttle).expect("throttle");
    if spec.suppress {
        p = p
            .with_suppress_repeats(Some(Duration::from_secs(600)))
            .expect("suppress");
    }
    p
}

fn days_of(mask: u8) -> Weekdays {
    let names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let list: Vec<&str> = (0..7)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| names[i])
        .collect();
    list.join(",").parse().expect("days")
}

/// Every open dispatch has a deadline; a holding one holds until its level
/// deadline, and its status says so.
fn check_deadlines(sim: &Simulation) -> Result<(), TestCaseError> {
    for d in sim.store.all() {
        if d.state() == State::Open {
            prop_assert!(
                d.next_deadline().is_some(),
                "open without a deadline: {}",
                d.id()
            );
            if let Some(until) = d.holding_until() {
                prop_assert_eq!(Some(until), d.level_deadline());
                let v = serde_json::to_value(d.status()).expect("json");
                let shown = until.to_string();
                prop_assert_eq!(v["holding_until"].as_str(), Some(shown.as_str()));
            }
        } else {
            prop_assert!(d.holding_until().is_none());
        }
    }
    Ok(())
}

async fn run(spec: Spec, actions: Vec<Action>) -> Result<(), TestCaseError> {
    let policy = build(&spec);
    let sim = Simulation::new(phone(LINE), policy.clone()).with_max_jumps(50_000);
    let start: Timestamp = STARTS[spec.start].parse().expect("start");
    sim.clock.set(start);
    let _ = SIM_START;
    for a in &actions {
        let before_opted: HashSet<PhoneNumber> = sim.opt_outs.all().into_iter().collect();
        let sent_before = sim.provider.sent().len();
        let mut exempt = None;
        match a {
            Action::Customer(c) => {
                let _ = sim
                    .customer_texts(phone(CUSTOMERS[*c]), "Need a dumpster")
                    .await;
            }
            Action::Dispatcher { who, what } => {
                let body = ["on my way", "ACK", "PASS", "DONE"][*what as usize];
                let _ = sim.dispatcher_texts(phone(DISPATCHERS[*who]), body).await;
            }
            Action::Stop(w) => {
                let _ = sim.relay.inbound(sim.text(w.number(), "STOP")).await;
                prop_assert!(sim.opt_outs.contains(w.number()));
            }
            Action::Start(w) => {
                exempt = Some(w.number());
                let _ = sim.relay.inbound(sim.text(w.number(), "START")).await;
            }
            Action::OptOutError(i) => {
                let to = phone(DISPATCHERS[*i]);
                if let Some(sid) = sim
                    .provider
                    .accepted_to(to)
                    .last()
                    .and_then(|s| s.result.clone().ok())
                {
                    let err = DeliveryError {
                        code: 21610,
                        class: ErrorClass::OptedOut,
                    };
                    let _ = sim
                        .report(&sid, DeliveryStatus::Undelivered, Some(err))
                        .await;
                }
            }
            Action::Advance(min) => {
                sim.advance(Duration::from_secs(u64::from(*min) * 60))
                    .await
                    .map_err(|e| TestCaseError::fail(format!("advance: {e}")))?;
            }
        }
        // 3. Nobody who had opted out before this input was texted by it.
        for s in &sim.provider.sent()[sent_before..] {
            let to = s.message.to;
            prop_assert!(
                !before_opted.contains(&to) || Some(to) == exempt,
                "{to} had opted out but was texted: {:?}\n{}",
                s.message.body,
                sim.timeline()
            );
        }
        check_deadlines(&sim)?;
    }
    // 4. Nothing hangs: every dispatch ends.
    sim.run_until_idle(Duration::from_secs(150 * 86_400))
        .await
        .map_err(|e| TestCaseError::fail(format!("run_until_idle: {e}")))?;
    for d in sim.store.all() {
        prop_assert!(
            d.state() != State::Open,
            "dispatch {} still open at {} (holding until {:?})",
            d.tag(),
            sim.now(),
            d.holding_until()
        );
    }
    let sent = sim.provider.sent();
    // 1. No forward to a target outside its level's windows.
    let dispatches: BTreeMap<_, _> = sim.store.all().into_iter().map(|d| (d.id(), d)).collect();
    for s in &sent {
        let d = &dispatches[&s.message.dispatch];
        let leg = &d.legs()[s.message.leg as usize];
        if let Purpose::Forward { level, .. } = leg.purpose {
            let at = s.at.expect("stamped");
            prop_assert!(
                policy.on_duty(level as usize, s.message.to, at),
                "forward to {} for level {level} at {at}, off duty\n{}",
                s.message.to,
                sim.timeline()
            );
        }
    }
    // 2. No destination and not the line over a limit.
    let mut by_to: BTreeMap<PhoneNumber, Vec<Timestamp>> = BTreeMap::new();
    let mut line: Vec<Timestamp> = Vec::new();
    for s in &sent {
        let at = s.at.expect("stamped");
        by_to.entry(s.message.to).or_default().push(at);
        line.push(at);
    }
    let over = |times: &[Timestamp], rates: &[Rate]| -> Option<String> {
        for r in rates {
            let n = r.count as usize;
            for w in times.windows(n + 1) {
                if w[n].since(w[0]) < r.per {
                    return Some(format!(
                        "{} texts within {:?} (limit {r})",
                        n + 1,
                        w[n].since(w[0])
                    ));
                }
            }
        }
        None
    };
    let t = policy.throttle();
    for (to, times) in &by_to {
        if let Some(e) = over(times, &t.per_destination) {
            prop_assert!(false, "to {to}: {e}\n{}", sim.timeline());
        }
    }
    if let Some(e) = over(&line, &t.line) {
        prop_assert!(false, "line: {e}\n{}", sim.timeline());
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config {
        cases: 300,
        max_shrink_iters: 2000,
        ..Config::default()
    })]

    #[test]
    fn policies_keep_windows_limits_opt_outs_and_end(
        spec in spec(),
        actions in proptest::collection::vec(action(), 1..25),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(run(spec, actions))?;
    }
}

#[tokio::test]
async fn the_store_sees_what_the_properties_see() {
    // A smoke test of the harness itself: one dispatch, one forward.
    let spec = Spec {
        levels: vec![LevelSpec {
            targets: vec![0],
            timeout_min: 5,
            windows: vec![],
        }],
        repeat: 0,
        hold: false,
        zone: 0,
        target_zones: false,
        per_destination: vec![],
        line: vec![],
        over_limit: 0,
        suppress: false,
        start: 0,
    };
    let sim = Simulation::new(phone(LINE), build(&spec));
    sim.customer_texts(phone(CUSTOMERS[0]), "hi")
        .await
        .expect("opens");
    let d = sim.store.all().remove(0);
    let got = sim.store.get(d.id()).await.expect("get").expect("some");
    assert_eq!(got.legs().len(), 1);
}
