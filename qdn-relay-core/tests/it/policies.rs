//! Behaviours B7 (time-of-day routing) and B8 (safety: opt-out,
//! throttling, loops), driving the real driver on virtual time.

use std::sync::Arc;
use std::time::Duration;

use qdn_relay_core::testing::Simulation;
use qdn_relay_core::{
    DeliveryError, DeliveryStatus, Dispatch, ErrorClass, EventKind, HoursZone, Level,
    MemoryOptOuts, MemoryRateLimiter, Outcome, OverLimit, PhoneNumber, Policy, Rate, Relay,
    RelayError, SendError, SendErrorKind, SkipReason, State, Store, Throttle, Timestamp,
    WhenClosed, Window, Zone,
};

fn n(s: &str) -> PhoneNumber {
    s.parse().expect("valid number")
}

fn t(s: &str) -> Timestamp {
    s.parse().expect("valid timestamp")
}

fn w(s: &str) -> Window {
    s.parse().expect("valid window")
}

fn zone(s: &str) -> Zone {
    Zone::get(s).expect("zone")
}

const MIN: Duration = Duration::from_secs(60);
const LINE: &str = "+16195550000";
const CUSTOMER: &str = "+16195550100";
const DAY: &str = "+16195550101";
const NIGHT: &str = "+16195550102";
const MANAGER: &str = "+16195550104";

fn level(targets: &[&str], minutes: u64) -> Level {
    Level {
        name: None,
        targets: targets.iter().map(|s| n(s)).collect(),
        timeout: MIN * minutes as u32,
    }
}

/// Day dispatcher 07:00–19:00 Mon–Sat, night on-call 19:00–07:00 daily,
/// manager always; in Los Angeles.
fn shifts(when_closed: WhenClosed) -> Policy {
    Policy::new(
        vec![
            level(&[DAY], 10),
            level(&[NIGHT], 10),
            level(&[MANAGER], 30),
        ],
        0,
    )
    .expect("policy")
    .with_time_zone(zone("America/Los_Angeles"))
    .with_when_closed(when_closed)
    .with_hours(0, vec![w("mon-sat 07:00-19:00")], HoursZone::Policy)
    .expect("day")
    .with_hours(1, vec![w("daily 19:00-07:00")], HoursZone::Policy)
    .expect("night")
}

fn sim_at(policy: Policy, at: &str) -> Simulation {
    let sim = Simulation::new(n(LINE), policy);
    sim.clock.set(t(at));
    sim
}

fn only(sim: &Simulation) -> Dispatch {
    let all = sim.store.all();
    assert_eq!(all.len(), 1, "expected exactly one dispatch");
    all.into_iter().next().expect("one")
}

fn texts_to(sim: &Simulation, to: &str) -> usize {
    sim.provider.accepted_to(n(to)).len()
}

fn kinds(d: &Dispatch) -> Vec<&'static str> {
    d.events().iter().map(|e| e.kind.name()).collect()
}

// ----- B7 Time-of-day routing ---------------------------------------------

#[tokio::test]
async fn b7_an_off_duty_level_is_passed_over_for_the_next_on_duty_one() {
    // Monday 01:00 in Los Angeles: the day dispatcher is off, the night one on.
    let sim = sim_at(shifts(WhenClosed::Skip), "2026-01-05T09:00:00Z");
    sim.customer_texts(n(CUSTOMER), "Need a dumpster")
        .await
        .expect("ok");
    assert_eq!(texts_to(&sim, DAY), 0);
    assert_eq!(texts_to(&sim, NIGHT), 1);
    let d = only(&sim);
    assert_eq!(d.level(), 1);
    assert!(d.events().iter().any(|e| matches!(
        e.kind,
        EventKind::LevelOffDuty { level: 0, opens_at: Some(at), .. } if at == t("2026-01-05T15:00:00Z")
    )));
    // Mid-morning the day dispatcher is texted first.
    let sim = sim_at(shifts(WhenClosed::Skip), "2026-01-05T18:00:00Z");
    sim.customer_texts(n(CUSTOMER), "Need a dumpster")
        .await
        .expect("ok");
    assert_eq!((texts_to(&sim, DAY), texts_to(&sim, NIGHT)), (1, 0));
}

/// Day dispatcher 07:00–19:00, manager 05:00–17:00 (earlier), in Los
/// Angeles.
fn early_manager(when_closed: WhenClosed) -> Policy {
    Policy::new(vec![level(&[DAY], 10), level(&[MANAGER], 30)], 0)
        .expect("p")
        .with_time_zone(zone("America/Los_Angeles"))
        .with_when_closed(when_closed)
        .with_hours(0, vec![w("mon-sat 07:00-19:00")], HoursZone::Policy)
        .expect("w")
        .with_hours(1, vec![w("mon-fri 05:00-17:00")], HoursZone::Policy)
        .expect("w")
}

#[tokio::test]
async fn b7_nobody_on_duty_skip_mode_holds_for_whoever_comes_on_duty_first() {
    let sim = sim_at(early_manager(WhenClosed::Skip), "2026-01-05T09:00:00Z");
    sim.customer_texts(n(CUSTOMER), "Need a dumpster")
        .await
        .expect("ok");
    let d = only(&sim);
    assert_eq!(
        (d.level(), d.holding_until()),
        (1, Some(t("2026-01-05T13:00:00Z")))
    );
    sim.advance(4 * 60 * MIN).await.expect("ok");
    assert_eq!((texts_to(&sim, MANAGER), texts_to(&sim, DAY)), (1, 0));
}

#[tokio::test]
async fn b7_hold_mode_waits_for_the_window_and_the_status_says_until_when() {
    let sim = sim_at(early_manager(WhenClosed::Hold), "2026-01-05T09:00:00Z");
    sim.customer_texts(n(CUSTOMER), "Need a dumpster")
        .await
        .expect("ok");
    assert!(sim.provider.sent().is_empty(), "nobody is texted at 01:00");
    let d = only(&sim);
    let opens = t("2026-01-05T15:00:00Z");
    assert_eq!(d.state(), State::Open);
    assert_eq!(d.holding_until(), Some(opens));
    assert_eq!(d.next_deadline(), Some(opens));
    let v = serde_json::to_value(d.status()).expect("json");
    assert_eq!(v["holding_until"], "2026-01-05T15:00:00Z");
    assert_eq!(v["state"], "open");
    // A follow-up while holding is kept and goes out with the forward.
    sim.advance(60 * MIN).await.expect("ok");
    sim.customer_texts(n(CUSTOMER), "gate code 1234")
        .await
        .expect("ok");
    assert!(sim.provider.sent().is_empty());
    sim.advance(opens.since(sim.now())).await.expect("ok");
    let day = sim.provider.accepted_to(n(DAY));
    assert_eq!(day.len(), 1, "texted when the window opens");
    assert_eq!(day[0].at, Some(opens));
    assert!(
        day[0].message.body.contains("gate code 1234"),
        "{}",
        day[0].message.body
    );
    let d = only(&sim);
    assert_eq!(d.holding_until(), None);
    assert_eq!(d.level_deadline(), Some(opens.plus(10 * MIN)));
    assert_eq!(texts_to(&sim, MANAGER), 0);
    // Then the ordinary timeout escalation.
    sim.advance(10 * MIN).await.expect("ok");
    assert_eq!(texts_to(&sim, MANAGER), 1);
}

#[tokio::test]
async fn b7_skip_mode_with_every_level_off_duty_holds_for_the_earliest_opening() {
    let policy = Policy::new(vec![level(&[DAY], 10), level(&[NIGHT], 10)], 0)
        .expect("p")
        .with_time_zone(zone("Europe/Berlin"))
        .with_hours(0, vec![w("mon-fri 09:00-17:00")], HoursZone::Policy)
        .expect("w")
        .with_hours(1, vec![w("mon-fri 08:00-09:00")], HoursZone::Policy)
        .expect("w");
    // Saturday noon in Berlin: nobody on duty until Monday 08:00 (level 1).
    let sim = sim_at(policy, "2026-01-10T11:00:00Z");
    sim.customer_texts(n(CUSTOMER), "hello").await.expect("ok");
    let d = only(&sim);
    assert_eq!(d.state(), State::Open, "holding, not failed");
    assert_eq!((d.round(), d.level()), (0, 1));
    assert_eq!(d.holding_until(), Some(t("2026-01-12T07:00:00Z")));
    assert_eq!(kinds(&d), vec!["opened", "level_off_duty", "holding"]);
    sim.run_until_idle(Duration::from_secs(7 * 86_400))
        .await
        .expect("ok");
    let d = only(&sim);
    assert_eq!(texts_to(&sim, NIGHT), 1);
    assert_eq!(d.state(), State::Failed, "then the chain runs out as usual");
}

#[tokio::test]
async fn b7_windows_in_each_targets_own_zone() {
    let berlin = n("+4930555010");
    let la = n(DAY);
    let policy = Policy::new(
        vec![Level {
            name: None,
            targets: vec![berlin, la],
            timeout: 10 * MIN,
        }],
        0,
    )
    .expect("p")
    .with_person(
        berlin,
        qdn_relay_core::Person {
            name: Some("jonas".into()),
            time_zone: Some(zone("Europe/Berlin")),
        },
    )
    .with_person(
        la,
        qdn_relay_core::Person {
            name: Some("ana".into()),
            time_zone: Some(zone("America/Los_Angeles")),
        },
    )
    .with_hours(0, vec![w("mon-fri 09:00-17:00")], HoursZone::Target)
    .expect("w");
    // Monday 09:00 UTC: 10:00 in Berlin, 01:00 in Los Angeles.
    let sim = sim_at(policy, "2026-01-05T09:00:00Z");
    sim.customer_texts(n(CUSTOMER), "hello").await.expect("ok");
    assert_eq!(sim.provider.accepted_to(berlin).len(), 1);
    assert_eq!(sim.provider.accepted_to(la).len(), 0);
}

/// Holding across the spring-forward gap: a window starting at 02:30 on the
/// night clocks jump from 02:00 to 03:00 opens at 03:30 (the gap's length
/// later), in two zones.
#[tokio::test]
async fn b7_dst_spring_forward_gap_in_two_zones() {
    for (tz, text_at, opens) in [
        (
            "America/Los_Angeles",
            "2026-03-08T08:00:00Z",
            "2026-03-08T10:30:00Z",
        ),
        (
            "Europe/Berlin",
            "2026-03-28T23:30:00Z",
            "2026-03-29T01:30:00Z",
        ),
        (
            "Australia/Sydney",
            "2026-10-03T14:00:00Z",
            "2026-10-03T16:30:00Z",
        ),
    ] {
        let policy = Policy::new(vec![level(&[DAY], 10)], 0)
            .expect("p")
            .with_time_zone(zone(tz))
            .with_when_closed(WhenClosed::Hold)
            .with_hours(0, vec![w("sun 02:30-06:00")], HoursZone::Policy)
            .expect("w");
        let sim = sim_at(policy, text_at);
        sim.customer_texts(n(CUSTOMER), "hello").await.expect("ok");
        assert_eq!(only(&sim).holding_until(), Some(t(opens)), "{tz}");
        sim.advance(t(opens).since(sim.now()) - Duration::from_secs(1))
            .await
            .expect("ok");
        assert_eq!(texts_to(&sim, DAY), 0, "{tz}: not before 03:30");
        sim.advance(Duration::from_secs(1)).await.expect("ok");
        assert_eq!(texts_to(&sim, DAY), 1, "{tz}: at 03:30");
    }
}

/// Holding across the fall-back repeat: a window starting in the repeated
/// hour opens at its first occurrence, and one ending in it closes at its
/// first occurrence, in two zones.
#[tokio::test]
async fn b7_dst_fall_back_repeat_in_two_zones() {
    for (tz, text_at, opens, closes) in [
        // 01:30 PDT (first), and the window ends at the first 01:59.
        (
            "America/Los_Angeles",
            "2026-11-01T07:00:00Z",
            "2026-11-01T08:30:00Z",
            "2026-11-01T08:59:00Z",
        ),
        // 02:30 CEST (first) to the first 02:59 in Berlin.
        (
            "Europe/Berlin",
            "2026-10-24T22:00:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T00:59:00Z",
        ),
    ] {
        let start = if tz.starts_with("America") {
            "sun 01:30-01:59"
        } else {
            "sun 02:30-02:59"
        };
        let policy = Policy::new(vec![level(&[DAY], 10)], 0)
            .expect("p")
            .with_time_zone(zone(tz))
            .with_when_closed(WhenClosed::Hold)
            .with_hours(0, vec![w(start)], HoursZone::Policy)
            .expect("w");
        let sim = sim_at(policy.clone(), text_at);
        sim.customer_texts(n(CUSTOMER), "hello").await.expect("ok");
        assert_eq!(only(&sim).holding_until(), Some(t(opens)), "{tz}");
        sim.advance(t(opens).since(sim.now())).await.expect("ok");
        assert_eq!(
            texts_to(&sim, DAY),
            1,
            "{tz}: texted at the first occurrence"
        );
        // In the repeated hour the wall clock shows the window's times again,
        // but it has closed: the level is off duty.
        let repeat = t(opens).plus(Duration::from_secs(3600));
        assert!(policy.on_duty(0, n(DAY), t(opens)));
        assert!(!policy.on_duty(0, n(DAY), t(closes)));
        assert!(
            !policy.on_duty(0, n(DAY), repeat),
            "{tz}: the second occurrence is outside"
        );
    }
}

#[tokio::test]
async fn b7_a_forward_resent_after_its_window_closed_is_skipped_and_escalates() {
    // The day dispatcher's forward is saved at 18:59:30, the process dies
    // before sending; the outbox finds it after 19:00, off duty.
    let policy = shifts(WhenClosed::Skip);
    let sim = sim_at(policy.clone(), "2026-01-06T02:59:30Z");
    let text = sim.text(n(CUSTOMER), "hello");
    let now = sim.now();
    let (mut d, _effects) = Dispatch::open(
        qdn_relay_core::DispatchId::new(now, 1),
        "K7".parse().expect("tag"),
        Arc::new(policy),
        text,
        now,
    )
    .expect("open");
    assert_eq!(d.legs()[0].to, n(DAY));
    d.set_version(1);
    sim.store.save(&d, 0).await.expect("saved");
    sim.advance(2 * MIN).await.expect("ok");
    assert_eq!(texts_to(&sim, DAY), 0, "never sent off duty");
    assert_eq!(texts_to(&sim, NIGHT), 1, "the night level has it");
    let d = only(&sim);
    assert_eq!(d.legs()[0].skipped, Some(SkipReason::OffDuty));
    assert_eq!(d.legs()[0].status, DeliveryStatus::Skipped);
}

#[tokio::test]
async fn b7_the_policy_is_snapshotted_when_the_dispatch_opens() {
    let sim = sim_at(
        Policy::new(vec![level(&[DAY], 10), level(&[NIGHT], 10)], 0).expect("p"),
        "2026-01-05T18:00:00Z",
    );
    sim.customer_texts(n(CUSTOMER), "hello").await.expect("ok");
    // The operator edits the policy: now only the manager, and windows.
    let edited = Policy::new(vec![level(&[MANAGER], 1)], 0).expect("p");
    let relay = Relay::builder(sim.store.clone(), sim.provider.clone(), sim.clock.clone())
        .line(n(LINE), edited)
        .build();
    sim.clock.set(sim.now().plus(10 * MIN));
    relay.sweep().await;
    assert_eq!(
        texts_to(&sim, NIGHT),
        1,
        "the escalation under way keeps its policy"
    );
    assert_eq!(texts_to(&sim, MANAGER), 0);
    // A new customer gets the new policy.
    relay
        .inbound(sim.text(n("+16195550199"), "me too"))
        .await
        .expect("ok");
    assert_eq!(texts_to(&sim, MANAGER), 1);
}

// ----- B8 Safety -----------------------------------------------------------

#[tokio::test]
async fn b8_a_customer_stop_is_not_forwarded_and_replies_are_refused_until_start() {
    let sim = sim_at(
        Policy::new(vec![level(&[DAY], 10), level(&[NIGHT], 10)], 0).expect("p"),
        "2026-01-05T18:00:00Z",
    );
    sim.customer_texts(n(CUSTOMER), "hello").await.expect("ok");
    let out = sim.customer_texts(n(CUSTOMER), "STOP").await.expect("ok");
    assert!(
        matches!(
            out,
            Outcome::Keyword {
                dispatch: Some(_),
                ..
            }
        ),
        "{out:?}"
    );
    assert!(sim.opt_outs.contains(n(CUSTOMER)));
    let to_day: Vec<String> = sim
        .provider
        .accepted_to(n(DAY))
        .into_iter()
        .map(|s| s.message.body)
        .collect();
    assert_eq!(to_day.len(), 2, "the forward, then a notice: {to_day:?}");
    assert!(
        !to_day[1].contains(": STOP"),
        "the keyword is not forwarded as a text"
    );
    assert!(to_day[1].contains("texted STOP"), "{}", to_day[1]);
    // A dispatcher's reply is recorded but not sent; they are told why.
    sim.dispatcher_texts(n(DAY), "on my way").await.expect("ok");
    assert_eq!(texts_to(&sim, CUSTOMER), 0);
    let last = sim
        .provider
        .accepted_to(n(DAY))
        .pop()
        .expect("notice")
        .message
        .body;
    assert!(last.contains("Not sent") && last.contains("STOP"), "{last}");
    let d = only(&sim);
    assert_eq!(d.opted_out(), &[n(CUSTOMER)]);
    let v = serde_json::to_value(d.status()).expect("json");
    assert_eq!(v["opted_out"][0], CUSTOMER);
    // A dashboard reply is refused with a clear error.
    let err = sim
        .relay
        .dashboard(
            d.id(),
            qdn_relay_core::DashboardAction::Reply {
                by: "ana".into(),
                body: "hi".into(),
            },
        )
        .await
        .expect_err("refused");
    assert!(matches!(err, RelayError::Input(_)), "{err}");
    // START: replies reach them again.
    let out = sim.customer_texts(n(CUSTOMER), "START").await.expect("ok");
    assert!(matches!(out, Outcome::Keyword { .. }));
    assert!(!sim.opt_outs.contains(n(CUSTOMER)));
    sim.dispatcher_texts(n(DAY), "there at 3")
        .await
        .expect("ok");
    assert_eq!(texts_to(&sim, CUSTOMER), 1);
    // "START" from someone who never opted out is an ordinary text.
    let out = sim.customer_texts(n(CUSTOMER), "start").await.expect("ok");
    assert!(matches!(out, Outcome::Applied(_)), "{out:?}");
}

/// Twilio's signatures carry no time: a captured `STOP` (or `START`)
/// replayed later, or a webhook retried after it was taken, is recognised
/// by its message id and changes nothing.
#[tokio::test]
async fn b8_a_replayed_stop_or_start_is_taken_once() {
    let sim = sim_at(
        Policy::new(vec![level(&[DAY], 10), level(&[NIGHT], 10)], 0).expect("p"),
        "2026-01-05T18:00:00Z",
    );
    sim.customer_texts(n(CUSTOMER), "hello").await.expect("ok");
    let stop = sim.text(n(CUSTOMER), "STOP");
    sim.relay.inbound(stop.clone()).await.expect("ok");
    assert!(sim.opt_outs.contains(n(CUSTOMER)));
    let notices = sim.provider.accepted_to(n(DAY)).len();
    // Twilio retries the same STOP: no second notice to the dispatcher.
    let out = sim.relay.inbound(stop.clone()).await.expect("ok");
    assert!(
        matches!(out, Outcome::Keyword { dispatch: None, .. }),
        "{out:?}"
    );
    assert_eq!(sim.provider.accepted_to(n(DAY)).len(), notices);
    // START, then the old STOP replayed: they stay opted in.
    let start = sim.text(n(CUSTOMER), "START");
    sim.relay.inbound(start.clone()).await.expect("ok");
    assert!(!sim.opt_outs.contains(n(CUSTOMER)));
    sim.relay.inbound(stop).await.expect("ok");
    assert!(
        !sim.opt_outs.contains(n(CUSTOMER)),
        "a replayed STOP opted them out again"
    );
    sim.dispatcher_texts(n(DAY), "there at 3")
        .await
        .expect("ok");
    assert_eq!(texts_to(&sim, CUSTOMER), 1, "replies reach them");
    // A new STOP (a new message id) is taken, and the old START replayed
    // after it does not opt them back in.
    sim.customer_texts(n(CUSTOMER), "STOP").await.expect("ok");
    assert!(sim.opt_outs.contains(n(CUSTOMER)));
    sim.relay.inbound(start).await.expect("ok");
    assert!(
        sim.opt_outs.contains(n(CUSTOMER)),
        "a replayed START opted them back in"
    );
}

#[tokio::test]
async fn b8_a_dispatcher_who_texts_stop_is_skipped_and_the_level_escalates() {
    let sim = sim_at(
        Policy::new(vec![level(&[DAY], 10), level(&[NIGHT], 10)], 1).expect("p"),
        "2026-01-05T18:00:00Z",
    );
    sim.customer_texts(n(CUSTOMER), "hello").await.expect("ok");
    sim.dispatcher_texts(n(DAY), "stop").await.expect("ok");
    assert_eq!(texts_to(&sim, NIGHT), 1, "escalated at once");
    // Another customer: the opted-out dispatcher's level is skipped.
    sim.customer_texts(n("+16195550199"), "me too")
        .await
        .expect("ok");
    assert_eq!(
        texts_to(&sim, DAY),
        1,
        "only the first forward, before STOP"
    );
    sim.run_until_idle(Duration::from_secs(86_400))
        .await
        .expect("ok");
    assert_eq!(texts_to(&sim, DAY), 1, "never again, in any round");
    for d in sim.store.all() {
        assert_eq!(d.state(), State::Failed);
        assert!(kinds(&d).contains(&"level_skipped") || kinds(&d).contains(&"opted_out"));
    }
}

/// A day and a night level, at 18:00 UTC, and the provider's answer to the
/// first text to the day dispatcher.
fn day_then_night(first_to_day: SendError) -> Simulation {
    let sim = sim_at(
        Policy::new(vec![level(&[DAY], 10), level(&[NIGHT], 10)], 0).expect("p"),
        "2026-01-05T18:00:00Z",
    );
    sim.provider.script(n(DAY), [Err(first_to_day)]);
    sim
}

/// The first text to the night dispatcher comes back undelivered, classed
/// as opted out with `code`.
async fn night_text_fails_as_opted_out(sim: &Simulation, code: u32) {
    let sid = sim.provider.accepted_to(n(NIGHT))[0]
        .result
        .clone()
        .expect("sid");
    let error = DeliveryError {
        code,
        class: ErrorClass::OptedOut,
    };
    sim.report(&sid, DeliveryStatus::Undelivered, Some(error))
        .await
        .expect("ok");
}

#[tokio::test]
async fn b8_an_opted_out_error_is_an_opt_out_across_dispatches() {
    let sim =
        day_then_night(SendError::new(SendErrorKind::OptedOut, "unsubscribed").with_code(21610));
    sim.customer_texts(n(CUSTOMER), "hello").await.expect("ok");
    assert_eq!(texts_to(&sim, NIGHT), 1, "failover at once");
    assert!(sim.opt_outs.contains(n(DAY)));
    // The next dispatch skips the day dispatcher without trying.
    let before = sim.provider.sent().len();
    sim.customer_texts(n("+16195550199"), "me too")
        .await
        .expect("ok");
    let new: Vec<PhoneNumber> = sim.provider.sent()[before..]
        .iter()
        .map(|s| s.message.to)
        .collect();
    assert_eq!(new, vec![n(NIGHT)]);
    // And a delivery callback classed as opted out does the same.
    night_text_fails_as_opted_out(&sim, 21610).await;
    assert!(sim.opt_outs.contains(n(NIGHT)));
}

/// The core acts on the class an adapter gives an error, not on its code:
/// a failure classed unreachable is not an opt-out, whatever its code; one
/// classed opted out is, with no code at all.
#[tokio::test]
async fn b8_the_class_decides_an_opt_out_not_the_code() {
    let sim =
        day_then_night(SendError::new(SendErrorKind::Unreachable, "not a mobile").with_code(21610));
    sim.customer_texts(n(CUSTOMER), "hello").await.expect("ok");
    assert_eq!(texts_to(&sim, NIGHT), 1, "failover at once");
    assert!(
        !sim.opt_outs.contains(n(DAY)),
        "unreachable is not opted out"
    );
    let d = only(&sim);
    assert_eq!(d.unreachable(), [n(DAY)]);
    assert!(d.opted_out().is_empty());

    night_text_fails_as_opted_out(&sim, 0).await;
    assert!(sim.opt_outs.contains(n(NIGHT)));
    assert_eq!(only(&sim).opted_out(), [n(NIGHT)]);
}

#[tokio::test]
async fn b8_never_forwards_to_the_line_the_sender_or_another_relay_line() {
    let other_line = n("+16195550999");
    let policy = Policy::new(vec![level(&[DAY, CUSTOMER], 10), level(&[NIGHT], 10)], 0)
        .expect("p")
        .with_relay_lines(vec![other_line])
        .expect("relay lines");
    let sim = sim_at(policy, "2026-01-05T18:00:00Z");
    // A text from another relay line is refused (a loop).
    let err = sim
        .relay
        .inbound(sim.text(other_line, "hello"))
        .await
        .expect_err("loop");
    assert!(matches!(err, RelayError::Loop(_)), "{err}");
    // The customer is in level 0 too (a number in the policy is routed as a
    // dispatcher, so this one comes through `customer_text`): the forward
    // goes to the other dispatcher only, never back to the sender.
    sim.relay
        .customer_text(sim.text(n(CUSTOMER), "hello"))
        .await
        .expect("ok");
    assert_eq!(texts_to(&sim, DAY), 1);
    assert_eq!(texts_to(&sim, CUSTOMER), 0);
    // A policy that targets a relay line is refused.
    assert!(
        Policy::new(vec![level(&[DAY], 10)], 0)
            .expect("p")
            .with_relay_lines(vec![n(DAY)])
            .is_err()
    );
}

#[tokio::test]
async fn b8_a_relay_never_texts_its_own_other_lines() {
    // Two lines on one relay; line B's policy targets line A by mistake.
    let line_a = n(LINE);
    let line_b = n("+16195550001");
    let sim = Simulation::new(line_a, Policy::new(vec![level(&[DAY], 10)], 0).expect("p"));
    let relay = Relay::builder(sim.store.clone(), sim.provider.clone(), sim.clock.clone())
        .line(line_a, Policy::new(vec![level(&[DAY], 10)], 0).expect("p"))
        .line(
            line_b,
            Policy::new(vec![level(&[LINE], 10), level(&[NIGHT], 10)], 0).expect("p"),
        )
        .build();
    let mut text = sim.text(n(CUSTOMER), "hello");
    text.to = line_b;
    relay.inbound(text).await.expect("ok");
    assert_eq!(
        sim.provider.accepted_to(line_a).len(),
        0,
        "never to a relay line"
    );
    assert_eq!(texts_to(&sim, NIGHT), 1, "skipped as a loop and escalated");
    let d = only(&sim);
    assert_eq!(d.legs()[0].skipped, Some(SkipReason::Loop));
}

#[tokio::test]
async fn b8_identical_auto_replies_to_one_number_are_suppressed_within_the_window() {
    let policy = Policy::new(vec![level(&[DAY], 60)], 0)
        .expect("p")
        .with_suppress_repeats(Some(10 * MIN))
        .expect("s");
    let sim = sim_at(policy, "2026-01-05T18:00:00Z");
    sim.customer_texts(n(CUSTOMER), "hello").await.expect("ok");
    // An auto-responder on the dispatcher's phone and one on the customer's.
    for _ in 0..3 {
        sim.dispatcher_texts(n(DAY), "I'm driving, will reply later")
            .await
            .expect("ok");
        sim.customer_texts(n(CUSTOMER), "Thanks for your message!")
            .await
            .expect("ok");
        sim.advance(MIN).await.expect("ok");
    }
    assert_eq!(
        texts_to(&sim, CUSTOMER),
        1,
        "the same reply once in 10 minutes"
    );
    assert_eq!(
        texts_to(&sim, DAY),
        2,
        "the forward and the first identical follow-up"
    );
    // After the window the same text goes again.
    sim.advance(10 * MIN).await.expect("ok");
    sim.dispatcher_texts(n(DAY), "I'm driving, will reply later")
        .await
        .expect("ok");
    assert_eq!(texts_to(&sim, CUSTOMER), 2);
    let d = only(&sim);
    assert!(
        d.events()
            .iter()
            .any(|e| matches!(&e.kind, EventKind::Ignored { reason } if reason.contains("repeat")))
    );
}

fn throttled(over_limit: OverLimit) -> Policy {
    Policy::new(vec![level(&[DAY], 30), level(&[NIGHT], 30)], 0)
        .expect("p")
        .with_throttle(Throttle {
            per_destination: vec![
                Rate { count: 1, per: MIN },
                Rate {
                    count: 3,
                    per: 15 * MIN,
                },
            ],
            line: vec![],
            over_limit,
        })
        .expect("t")
}

#[tokio::test]
async fn b8_over_the_limit_texts_are_delayed_never_lost() {
    let sim = sim_at(throttled(OverLimit::Delay), "2026-01-05T18:00:00Z");
    for i in 0..5 {
        sim.customer_texts(n(&format!("+1619555030{i}")), "burst")
            .await
            .expect("ok");
    }
    assert_eq!(texts_to(&sim, DAY), 1, "one a minute");
    let deferred = sim
        .store
        .all()
        .iter()
        .flat_map(|d| d.legs().to_vec())
        .filter(|l| l.deferrals > 0)
        .count();
    assert_eq!(deferred, 4);
    sim.advance(MIN).await.expect("ok");
    assert_eq!(texts_to(&sim, DAY), 2);
    sim.advance(2 * MIN).await.expect("ok");
    assert_eq!(texts_to(&sim, DAY), 3);
    sim.advance(11 * MIN).await.expect("ok");
    assert_eq!(texts_to(&sim, DAY), 3, "three per 15 minutes");
    sim.advance(MIN).await.expect("ok");
    assert_eq!(texts_to(&sim, DAY), 4);
    let times: Vec<Timestamp> = sim
        .provider
        .accepted_to(n(DAY))
        .iter()
        .filter_map(|s| s.at)
        .collect();
    for w in times.windows(2) {
        assert!(w[1].since(w[0]) >= MIN, "{times:?}");
    }
    let d = sim.store.all();
    assert!(d.iter().any(|d| kinds(d).contains(&"deferred")));
}

#[tokio::test]
async fn b8_digest_merges_delayed_texts_to_one_number() {
    let sim = sim_at(throttled(OverLimit::Digest), "2026-01-05T18:00:00Z");
    sim.customer_texts(n(CUSTOMER), "one").await.expect("ok");
    sim.customer_texts(n(CUSTOMER), "two").await.expect("ok");
    sim.customer_texts(n(CUSTOMER), "three").await.expect("ok");
    assert_eq!(texts_to(&sim, DAY), 1);
    sim.advance(MIN).await.expect("ok");
    let day = sim.provider.accepted_to(n(DAY));
    assert_eq!(day.len(), 2, "the two follow-ups as one text");
    assert!(
        day[1].message.body.contains("two") && day[1].message.body.contains("three"),
        "{}",
        day[1].message.body
    );
    let d = only(&sim);
    assert!(
        d.legs()
            .iter()
            .any(|l| matches!(l.skipped, Some(SkipReason::Merged { .. })))
    );
    assert!(kinds(&d).contains(&"merged"));
}

/// The limits a relay keeps when its policy names none: a customer (or a
/// script) flooding the line reaches the dispatcher as at most 60 texts in
/// 5 minutes, the rest merged into digests; nothing is dropped.
#[tokio::test]
async fn b8_the_safe_default_limits_slow_a_flood_to_digests_and_lose_nothing() {
    let policy = Policy::chain(&[n(DAY), n(NIGHT)], 30 * MIN)
        .expect("p")
        .with_throttle(Throttle::safe_defaults())
        .expect("t");
    let sim = sim_at(policy, "2026-01-05T18:00:00Z");
    for i in 0..200 {
        sim.customer_texts(n(CUSTOMER), &format!("m{i:03}"))
            .await
            .expect("ok");
    }
    assert_eq!(texts_to(&sim, DAY), 60, "the first 60 go at once");
    sim.advance(4 * MIN).await.expect("ok");
    assert_eq!(texts_to(&sim, DAY), 60, "nothing more within 5 minutes");
    sim.advance(2 * MIN).await.expect("ok");
    let day = sim.provider.accepted_to(n(DAY));
    assert!(
        day.len() > 60 && day.len() < 70,
        "then a few digests: {}",
        day.len()
    );
    let d = only(&sim);
    let status = sim.relay.status(&d).await.expect("status");
    assert_eq!(status.thread.len(), 200, "every text is in the dispatch");
    assert!(
        d.thread().len() < 200,
        "the oldest moved out of the record: {}",
        d.thread().len()
    );
    let bodies: String = day.iter().map(|s| s.message.body.as_str()).collect();
    for i in 0..200 {
        assert!(
            bodies.contains(&format!("m{i:03}")),
            "m{i:03} never reached the dispatcher"
        );
    }
    assert!(
        status
            .legs
            .iter()
            .all(|l| !matches!(l.skipped, Some(SkipReason::OverLimit | SkipReason::Stale))),
        "none dropped"
    );
}

#[tokio::test]
async fn b8_drop_mode_drops_with_an_event_and_a_dropped_forward_escalates() {
    let sim = sim_at(throttled(OverLimit::Drop), "2026-01-05T18:00:00Z");
    sim.customer_texts(n(CUSTOMER), "one").await.expect("ok");
    sim.customer_texts(n("+16195550199"), "two")
        .await
        .expect("ok");
    assert_eq!(texts_to(&sim, DAY), 1);
    assert_eq!(
        texts_to(&sim, NIGHT),
        1,
        "the second dispatch escalated at once"
    );
    let dropped: Vec<Dispatch> = sim
        .store
        .all()
        .into_iter()
        .filter(|d| {
            d.legs()
                .iter()
                .any(|l| l.skipped == Some(SkipReason::OverLimit))
        })
        .collect();
    assert_eq!(dropped.len(), 1);
    assert!(kinds(&dropped[0]).contains(&"skipped"));
}

#[tokio::test]
async fn b8_the_safety_ports_are_shared_by_relays_over_one_store() {
    // Two relay processes share the opt-out list and the rate history.
    let opt_outs = Arc::new(MemoryOptOuts::new());
    let limiter = Arc::new(MemoryRateLimiter::new());
    let sim = sim_at(throttled(OverLimit::Delay), "2026-01-05T18:00:00Z");
    let relay = |p: Policy| {
        Relay::builder(sim.store.clone(), sim.provider.clone(), sim.clock.clone())
            .line(n(LINE), p)
            .opt_outs(opt_outs.clone())
            .rate_limiter(limiter.clone())
            .build()
    };
    let (a, b) = (
        relay(throttled(OverLimit::Delay)),
        relay(throttled(OverLimit::Delay)),
    );
    a.inbound(sim.text(n(CUSTOMER), "one")).await.expect("ok");
    b.inbound(sim.text(n("+16195550199"), "two"))
        .await
        .expect("ok");
    assert_eq!(
        texts_to(&sim, DAY),
        1,
        "the second process respects the first's text"
    );
    b.inbound(sim.text(n(NIGHT), "STOP")).await.expect("ok");
    assert!(opt_outs.contains(n(NIGHT)));
}

// ----- the policy file -----------------------------------------------------

#[test]
fn b7_the_example_policy_file_reads_and_an_error_names_its_line_and_field() {
    let src = include_str!("../../../examples/policy.toml");
    let p = Policy::from_toml(src).expect("the example is valid");
    assert!(p.levels().len() >= 3);
    assert_eq!(p.when_closed(), WhenClosed::Hold);
    assert!(!p.throttle().is_off());
    // Break one window's end time on its own line.
    let line = src
        .lines()
        .position(|l| l.contains("19:00"))
        .expect("a 19:00 window")
        + 1;
    let broken = src.replacen("19:00", "25:00", 1);
    let e = Policy::from_toml(&broken).expect_err("invalid");
    assert_eq!(e.line, line, "{e}");
    assert!(e.field.starts_with("levels[0].windows[0]"), "{e}");
    assert!(e.to_string().contains(&format!("line {line}")), "{e}");
}
