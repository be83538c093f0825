//! One or more tests per behaviour (B1–B6, B9: the README's "What it does";
//! ARCHITECTURE.md maps each to the function that implements it), named
//! after it, driving the real driver on virtual time.

use std::sync::Arc;
use std::time::Duration;

use qdn_relay_core::testing::Simulation;
use qdn_relay_core::{
    AckVia, Actor, DashboardAction, DeliveryError, DeliveryReport, DeliveryStatus, Dispatch,
    ErrorClass, EventKind, FinalStatus, InboundText, Input, Level, ListFilter, OUTBOX_GRACE,
    Outcome, PhoneNumber, Policy, ProviderMessageId, RelayError, SendError, SendErrorKind, State,
    Store, Timestamp,
};

fn n(s: &str) -> PhoneNumber {
    s.parse().expect("valid number")
}

const MIN: Duration = Duration::from_secs(60);

struct Cast {
    line: PhoneNumber,
    customer: PhoneNumber,
    primary: PhoneNumber,
    backup: PhoneNumber,
}

fn cast() -> Cast {
    Cast {
        line: n("+16195550000"),
        customer: n("+16195550100"),
        primary: n("+16195550101"),
        backup: n("+18583354807"),
    }
}

fn seed_sim() -> (Simulation, Cast) {
    let c = cast();
    let policy = Policy::simple(c.primary, c.backup, 15 * MIN).expect("policy");
    (Simulation::new(c.line, policy), c)
}

fn only(sim: &Simulation) -> Dispatch {
    let all = sim.store.all();
    assert_eq!(all.len(), 1, "expected exactly one dispatch");
    all.into_iter().next().expect("one")
}

fn bodies_to(sim: &Simulation, to: PhoneNumber) -> Vec<String> {
    sim.provider
        .accepted_to(to)
        .into_iter()
        .map(|s| s.message.body)
        .collect()
}

fn first_sid_to(sim: &Simulation, to: PhoneNumber) -> ProviderMessageId {
    sim.provider.accepted_to(to)[0]
        .result
        .clone()
        .expect("accepted")
}

// ----- B1 Inbound --------------------------------------------------------

#[tokio::test]
async fn b1_inbound_opens_a_dispatch_and_forwards_to_level_0_with_tag() {
    let (sim, c) = seed_sim();
    let out = sim
        .customer_texts(c.customer, "Need a dumpster")
        .await
        .expect("accepted");
    assert!(matches!(out, Outcome::Opened(_)));
    let d = only(&sim);
    assert_eq!(d.state(), State::Open);
    let sent = bodies_to(&sim, c.primary);
    assert_eq!(
        sent,
        vec![format!("[QDN #{}] +16195550100: Need a dumpster", d.tag())]
    );
    assert!(
        bodies_to(&sim, c.backup).is_empty(),
        "the backup waits for the timeout"
    );
    assert_eq!(sim.provider.accepted_to(c.primary)[0].message.from, c.line);
}

#[tokio::test]
async fn b1_later_customer_texts_join_the_open_dispatch() {
    let (sim, c) = seed_sim();
    sim.customer_texts(c.customer, "first").await.expect("ok");
    let out = sim.customer_texts(c.customer, "second").await.expect("ok");
    assert!(matches!(out, Outcome::Applied(_)));
    let d = only(&sim);
    assert_eq!(d.thread().len(), 2);
    assert_eq!(
        bodies_to(&sim, c.primary).len(),
        2,
        "the follow-up goes to the current level"
    );
    // Another customer opens their own dispatch with another tag.
    sim.customer_texts(n("+16195550199"), "me too")
        .await
        .expect("ok");
    let all = sim.store.all();
    assert_eq!(all.len(), 2);
    assert_ne!(all[0].tag(), all[1].tag());
}

#[tokio::test]
async fn b1_forward_fits_the_1600_char_limit() {
    let (sim, c) = seed_sim();
    sim.customer_texts(c.customer, &"x".repeat(5000))
        .await
        .expect("ok");
    let body = &bodies_to(&sim, c.primary)[0];
    // The tag's brackets are GSM-7 extension characters (two septets
    // each), so the cut comes two characters earlier than 1,600.
    assert_eq!(qdn_relay_core::body_len(body), 1600);
    assert_eq!(body.chars().count(), 1598);
    assert!(body.ends_with("xxx..."));
}

#[tokio::test]
async fn b1_texts_to_unknown_lines_and_from_the_line_itself_are_refused() {
    let (sim, c) = seed_sim();
    let mut t = sim.text(c.customer, "hi");
    t.to = n("+15555550123");
    assert!(matches!(
        sim.relay.inbound(t).await,
        Err(RelayError::UnknownLine(_))
    ));
    let t = sim.text(c.line, "loop");
    assert!(matches!(
        sim.relay.inbound(t).await,
        Err(RelayError::Loop(_))
    ));
    assert!(sim.store.is_empty(), "a refused text changes nothing");
    assert!(sim.provider.sent().is_empty());
}

// ----- B2 Idempotency ----------------------------------------------------

#[tokio::test]
async fn b2_the_same_message_sid_twice_does_nothing_the_second_time() {
    let (sim, c) = seed_sim();
    let t = sim.text(c.customer, "hello");
    sim.relay.inbound(t.clone()).await.expect("first");
    let before = only(&sim);
    let out = sim.relay.inbound(t).await.expect("retry");
    assert!(matches!(out, Outcome::Unchanged(_)));
    assert_eq!(only(&sim), before, "nothing changed, not even the version");
    assert_eq!(sim.provider.sent().len(), 1, "one forward");
}

#[tokio::test]
async fn b2_the_same_status_callback_twice_does_nothing_the_second_time() {
    let (sim, c) = seed_sim();
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    let sid = first_sid_to(&sim, c.primary);
    let first = sim
        .report(&sid, DeliveryStatus::Delivered, None)
        .await
        .expect("ok");
    assert!(matches!(first, Outcome::Applied(_)));
    let version = only(&sim).version();
    let second = sim
        .report(&sid, DeliveryStatus::Delivered, None)
        .await
        .expect("ok");
    assert!(matches!(second, Outcome::Unchanged(_)));
    assert_eq!(only(&sim).version(), version);
}

#[tokio::test]
async fn b2_a_retried_dispatcher_reply_is_sent_to_the_customer_once() {
    let (sim, c) = seed_sim();
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    let reply = sim.text(c.primary, "on my way");
    sim.relay.inbound(reply.clone()).await.expect("ok");
    sim.relay.inbound(reply).await.expect("retry");
    assert_eq!(bodies_to(&sim, c.customer), vec!["on my way".to_owned()]);
}

// ----- B3 Timeout escalation ---------------------------------------------

#[tokio::test]
async fn b3_no_ack_within_the_timeout_forwards_to_the_next_level() {
    let (sim, c) = seed_sim();
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    sim.advance(15 * MIN - Duration::from_secs(1))
        .await
        .expect("ok");
    assert!(
        bodies_to(&sim, c.backup).is_empty(),
        "not before the timeout"
    );
    sim.advance(Duration::from_secs(1)).await.expect("ok");
    assert_eq!(bodies_to(&sim, c.backup).len(), 1, "at the timeout");
    let d = only(&sim);
    assert_eq!((d.round(), d.level()), (0, 1));
    assert_eq!(d.final_status(), FinalStatus::BackupTriggered);
}

#[tokio::test]
async fn b3_past_the_last_level_repeats_then_fails() {
    let c = cast();
    let policy = Policy::simple(c.primary, c.backup, 15 * MIN)
        .expect("policy")
        .with_repeat(1)
        .expect("repeat");
    let sim = Simulation::new(c.line, policy);
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    sim.run_until_idle(Duration::from_secs(24 * 3600))
        .await
        .expect("ok");
    let d = only(&sim);
    assert_eq!(d.state(), State::Failed);
    assert_eq!(d.final_status(), FinalStatus::Failed);
    assert_eq!(bodies_to(&sim, c.primary).len(), 2, "two rounds");
    assert_eq!(bodies_to(&sim, c.backup).len(), 2, "two rounds");
    assert_eq!(d.next_deadline(), None, "a failed dispatch is never due");
    let kinds: Vec<&str> = d.events().iter().map(|e| e.kind.name()).collect();
    assert!(
        kinds.contains(&"repeated") && kinds.last() == Some(&"exhausted"),
        "{kinds:?}"
    );
    // It failed exactly after 4 × 15 minutes.
    let exhausted = d.events().last().expect("event").at;
    assert_eq!(exhausted.since(d.opened_at()), 60 * MIN);
}

#[tokio::test]
async fn b3_timeouts_early_late_or_twice_are_safe() {
    let (sim, c) = seed_sim();
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    let id = only(&sim).id();
    let t0 = sim.now();
    let early = sim.relay.sweep_at(t0.plus(MIN)).await;
    assert_eq!(
        (early.fired, early.errors.len()),
        (0, 0),
        "nothing due early"
    );
    // Late: two hours after, one sweep moves exactly one level.
    let late = t0.plus(120 * MIN);
    let r = sim.relay.sweep_at(late).await;
    assert_eq!(r.fired, 1);
    let d = sim.store.get(id).await.expect("get").expect("some");
    assert_eq!(
        d.level(),
        1,
        "one step per due deadline, not one per elapsed timeout"
    );
    // Twice at the same instant: the second does nothing.
    let again = sim.relay.sweep_at(late).await;
    assert_eq!(again.fired, 0);
    assert_eq!(
        sim.store
            .get(id)
            .await
            .expect("get")
            .expect("some")
            .version(),
        d.version()
    );
    // Directly on the state machine too.
    let mut copy = d.clone();
    assert!(copy.handle(late, Input::Timeout).expect("ok").is_empty());
    assert_eq!(copy, d);
}

#[tokio::test]
async fn b3_a_level_with_several_targets_texts_them_all_at_once() {
    let c = cast();
    let other = n("+16195550102");
    let policy = Policy::new(
        vec![
            Level {
                name: None,
                targets: vec![c.primary, other],
                timeout: 5 * MIN,
            },
            Level {
                name: None,
                targets: vec![c.backup],
                timeout: 5 * MIN,
            },
        ],
        0,
    )
    .expect("policy");
    let sim = Simulation::new(c.line, policy);
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    assert_eq!(bodies_to(&sim, c.primary).len(), 1);
    assert_eq!(bodies_to(&sim, other).len(), 1);
    // One of two failing does not escalate; both failing does.
    let s1 = first_sid_to(&sim, c.primary);
    let s2 = first_sid_to(&sim, other);
    sim.report(&s1, DeliveryStatus::Failed, None)
        .await
        .expect("ok");
    assert!(bodies_to(&sim, c.backup).is_empty());
    sim.report(&s2, DeliveryStatus::Undelivered, None)
        .await
        .expect("ok");
    assert_eq!(bodies_to(&sim, c.backup).len(), 1);
}

// ----- B4 Ack ------------------------------------------------------------

#[tokio::test]
async fn b4_a_reply_from_a_notified_dispatcher_acks_and_stops_escalation() {
    let (sim, c) = seed_sim();
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    sim.advance(3 * MIN).await.expect("ok");
    sim.dispatcher_texts(c.primary, "got it").await.expect("ok");
    sim.run_until_idle(Duration::from_secs(24 * 3600))
        .await
        .expect("ok");
    let d = only(&sim);
    assert_eq!(d.state(), State::Acked);
    let ack = d.ack().expect("acked");
    assert_eq!(
        (ack.by.clone(), ack.via, ack.level),
        (Actor::Phone(c.primary), AckVia::Reply, Some(0))
    );
    assert_eq!(ack.at.since(d.opened_at()), 3 * MIN);
    assert!(
        bodies_to(&sim, c.backup).is_empty(),
        "no escalation after the ack"
    );
    let status = d.status();
    assert_eq!(status.final_status, FinalStatus::Acked);
    assert_eq!(status.primary_ack_at, Some(ack.at));
}

#[tokio::test]
async fn b4_a_dashboard_ack_stops_escalation() {
    let (sim, c) = seed_sim();
    let id = sim
        .customer_texts(c.customer, "hello")
        .await
        .expect("ok")
        .dispatch();
    sim.relay
        .dashboard(id, DashboardAction::Ack { by: "ana".into() })
        .await
        .expect("ok");
    sim.run_until_idle(Duration::from_secs(24 * 3600))
        .await
        .expect("ok");
    let d = only(&sim);
    assert_eq!(
        d.ack().map(|a| a.by.clone()),
        Some(Actor::Operator("ana".into()))
    );
    assert_eq!(
        d.status().primary_ack_at,
        None,
        "only a level-0 dispatcher sets primary_ack_at"
    );
    assert!(bodies_to(&sim, c.backup).is_empty());
}

#[tokio::test]
async fn b4_escalate_now_texts_the_next_level_at_once_and_names_the_operator() {
    let (sim, c) = seed_sim();
    let id = sim
        .customer_texts(c.customer, "hello")
        .await
        .expect("ok")
        .dispatch();
    assert!(bodies_to(&sim, c.backup).is_empty());
    let before = only(&sim).level_deadline().expect("level deadline");
    sim.relay
        .dashboard(id, DashboardAction::Escalate { by: "ana".into() })
        .await
        .expect("escalated");
    // At once: no time passed, the backup was texted.
    assert_eq!(bodies_to(&sim, c.backup).len(), 1);
    let d = only(&sim);
    assert_eq!((d.state(), d.level()), (State::Open, 1));
    assert_eq!(d.final_status(), FinalStatus::BackupTriggered);
    // No time passed: the backup has its own full 15 minutes from now.
    assert_eq!(d.level_deadline(), Some(before));
    assert!(d.events().iter().any(|e| e.kind
        == EventKind::Escalated {
            from_level: 0,
            reason: qdn_relay_core::EscalationReason::Operator,
            by: Some(Actor::Operator("ana".into())),
        }));
    // From the last level: past the chain, the dispatch fails (no repeat).
    sim.relay
        .dashboard(id, DashboardAction::Escalate { by: "ana".into() })
        .await
        .expect("escalated");
    assert_eq!(only(&sim).state(), State::Failed);
}

#[tokio::test]
async fn b4_escalate_now_is_refused_once_acked_closed_or_failed_and_changes_nothing() {
    let escalate = DashboardAction::Escalate { by: "ana".into() };
    // Acknowledged: refused, naming who acknowledged.
    let (sim, c) = seed_sim();
    let id = sim
        .customer_texts(c.customer, "hello")
        .await
        .expect("ok")
        .dispatch();
    sim.dispatcher_texts(c.primary, "ack").await.expect("ok");
    let before = only(&sim);
    let err = sim
        .relay
        .dashboard(id, escalate.clone())
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, RelayError::Input(qdn_relay_core::InputError::Acknowledged(Actor::Phone(p))) if *p == c.primary),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("acknowledged by +16195550101"),
        "{err}"
    );
    assert_eq!(only(&sim).version(), before.version(), "nothing saved");
    assert!(bodies_to(&sim, c.backup).is_empty());

    // Closed and failed: refused as not open.
    for end in ["close", "fail"] {
        let (sim, c) = seed_sim();
        let id = sim
            .customer_texts(c.customer, "hello")
            .await
            .expect("ok")
            .dispatch();
        if end == "close" {
            sim.relay
                .dashboard(id, DashboardAction::Close { by: "ana".into() })
                .await
                .expect("closed");
        } else {
            sim.run_until_idle(Duration::from_secs(24 * 3600))
                .await
                .expect("ok");
            assert_eq!(only(&sim).state(), State::Failed);
        }
        let before = only(&sim);
        let texts = sim.provider.accepted_to(c.backup).len();
        let err = sim
            .relay
            .dashboard(id, escalate.clone())
            .await
            .expect_err("refused");
        assert!(
            matches!(
                err,
                RelayError::Input(qdn_relay_core::InputError::NotOpen(_))
            ),
            "{end}: {err:?}"
        );
        assert_eq!(
            only(&sim).version(),
            before.version(),
            "{end}: nothing saved"
        );
        assert_eq!(sim.provider.accepted_to(c.backup).len(), texts);
    }
}

#[tokio::test]
async fn b4_ack_and_timeout_at_the_same_moment_exactly_one_wins() {
    for ack_first in [true, false] {
        let (sim, c) = seed_sim();
        let id = sim
            .customer_texts(c.customer, "hello")
            .await
            .expect("ok")
            .dispatch();
        let deadline = only(&sim).next_deadline().expect("deadline");
        // Two drivers load the same version.
        let loaded = sim.store.get(id).await.expect("get").expect("some");
        let mut by_ack = loaded.clone();
        let mut by_timeout = loaded.clone();
        let v = loaded.version();
        by_ack
            .handle(
                deadline,
                Input::Dashboard(DashboardAction::Ack { by: "ana".into() }),
            )
            .expect("ok");
        let fx = by_timeout.handle(deadline, Input::Timeout).expect("ok");
        assert!(!fx.is_empty());
        by_ack.set_version(v + 1);
        by_timeout.set_version(v + 1);
        let (first, second) = if ack_first {
            (&by_ack, &by_timeout)
        } else {
            (&by_timeout, &by_ack)
        };
        sim.store.save(first, v).await.expect("first save wins");
        let lost = sim.store.save(second, v).await;
        assert!(lost.expect_err("second save loses").is_conflict());
        // The loser re-runs through the driver on the new version.
        if ack_first {
            let r = sim.relay.sweep_at(deadline).await;
            assert_eq!(r.fired, 0, "the timeout finds the dispatch acked");
            assert_eq!(sim.store.get(id).await.expect("g").expect("s").level(), 0);
        } else {
            sim.relay
                .dashboard(id, DashboardAction::Ack { by: "ana".into() })
                .await
                .expect("ack after escalation");
            let d = sim.store.get(id).await.expect("g").expect("s");
            assert_eq!((d.level(), d.state()), (1, State::Acked));
        }
    }
}

// ----- B5 Reply path -----------------------------------------------------

#[tokio::test]
async fn b5_a_dispatcher_reply_reaches_the_customer_from_the_business_line() {
    let (sim, c) = seed_sim();
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    sim.dispatcher_texts(c.primary, "Be there at 3")
        .await
        .expect("ok");
    let to_customer = sim.provider.accepted_to(c.customer);
    assert_eq!(to_customer.len(), 1);
    assert_eq!(to_customer[0].message.body, "Be there at 3");
    assert_eq!(to_customer[0].message.from, c.line);
}

#[tokio::test]
async fn b5_routing_by_tag_wins_then_only_then_most_recent_with_a_notice() {
    let (sim, c) = seed_sim();
    let cust2 = n("+16195550199");
    let first = sim
        .customer_texts(c.customer, "one")
        .await
        .expect("ok")
        .dispatch();
    sim.advance(MIN).await.expect("ok");
    let second = sim
        .customer_texts(cust2, "two")
        .await
        .expect("ok")
        .dispatch();
    let d1 = sim.store.get(first).await.expect("g").expect("s");
    // Tag wins even though the second is more recent.
    sim.dispatcher_texts(c.primary, &format!("#{} for you", d1.tag()))
        .await
        .expect("ok");
    assert_eq!(bodies_to(&sim, c.customer), vec!["for you".to_owned()]);
    assert!(bodies_to(&sim, cust2).is_empty());
    // No tag, two open: the most recent, and the dispatcher is told.
    sim.dispatcher_texts(c.primary, "and you")
        .await
        .expect("ok");
    assert_eq!(bodies_to(&sim, cust2), vec!["and you".to_owned()]);
    let d2 = sim.store.get(second).await.expect("g").expect("s");
    let notices: Vec<String> = sim
        .provider
        .accepted_to(c.primary)
        .into_iter()
        .filter(|s| s.message.body.contains("Your text went to"))
        .map(|s| s.message.body)
        .collect();
    assert_eq!(notices.len(), 1);
    assert!(
        notices[0].contains(&format!("#{}", d2.tag())),
        "{notices:?}"
    );
    // Close the second: now the first is the only one.
    sim.dispatcher_texts(c.primary, &format!("#{} DONE", d2.tag()))
        .await
        .expect("ok");
    sim.dispatcher_texts(c.primary, "only you now")
        .await
        .expect("ok");
    assert_eq!(
        bodies_to(&sim, c.customer).last().map(String::as_str),
        Some("only you now")
    );
}

#[tokio::test]
async fn b5_unknown_tag_or_no_open_dispatch_is_refused_and_sends_nothing() {
    let (sim, c) = seed_sim();
    let err = sim
        .dispatcher_texts(c.primary, "anyone?")
        .await
        .expect_err("no dispatch");
    assert!(
        matches!(err.to_string().as_str(), s if s.contains("no open dispatch")),
        "{err}"
    );
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    let err = sim
        .dispatcher_texts(c.primary, "#Z999 hi")
        .await
        .expect_err("bad tag");
    assert!(err.to_string().contains("#Z999"), "{err}");
    assert!(bodies_to(&sim, c.customer).is_empty());
}

#[tokio::test]
async fn b5_commands_ack_pass_done() {
    // ACK acknowledges without texting the customer.
    let (sim, c) = seed_sim();
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    sim.dispatcher_texts(c.primary, "ack").await.expect("ok");
    let d = only(&sim);
    assert_eq!(
        (d.state(), d.ack().map(|a| a.via)),
        (State::Acked, Some(AckVia::Command))
    );
    assert!(bodies_to(&sim, c.customer).is_empty());

    // PASS escalates now.
    let (sim, c) = seed_sim();
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    sim.dispatcher_texts(c.primary, "PASS").await.expect("ok");
    assert_eq!(bodies_to(&sim, c.backup).len(), 1);
    assert_eq!(only(&sim).state(), State::Open);

    // DONE closes (and acks).
    let (sim, c) = seed_sim();
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    sim.dispatcher_texts(c.primary, "Done.").await.expect("ok");
    let d = only(&sim);
    assert_eq!(d.state(), State::Closed);
    assert_eq!(
        d.final_status(),
        FinalStatus::Acked,
        "a closed dispatch keeps acked"
    );
    // The customer's next text opens a new dispatch.
    let out = sim
        .customer_texts(c.customer, "new problem")
        .await
        .expect("ok");
    assert!(matches!(out, Outcome::Opened(_)));
}

#[tokio::test]
async fn b5_after_an_ack_the_customers_texts_go_to_the_acker_only() {
    let (sim, c) = seed_sim();
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    sim.advance(15 * MIN).await.expect("ok");
    sim.dispatcher_texts(c.backup, "I have it")
        .await
        .expect("ok");
    let primary_before = bodies_to(&sim, c.primary).len();
    sim.customer_texts(c.customer, "thanks, gate code 1234")
        .await
        .expect("ok");
    assert_eq!(bodies_to(&sim, c.primary).len(), primary_before);
    assert!(
        bodies_to(&sim, c.backup)
            .last()
            .expect("some")
            .contains("gate code 1234")
    );
}

// ----- B6 Delivery failure = failover ------------------------------------

#[tokio::test]
async fn b6_a_failed_delivery_of_the_current_level_escalates_at_once() {
    let (sim, c) = seed_sim();
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    sim.advance(Duration::from_secs(5)).await.expect("ok");
    let sid = first_sid_to(&sim, c.primary);
    let err = DeliveryError {
        code: 30003,
        class: ErrorClass::RetryLater,
    };
    sim.report(&sid, DeliveryStatus::Undelivered, Some(err))
        .await
        .expect("ok");
    assert_eq!(bodies_to(&sim, c.backup).len(), 1, "no 15-minute wait");
    let d = only(&sim);
    let leg = &d.legs()[0];
    assert_eq!(
        (leg.status, leg.error_code),
        (DeliveryStatus::Undelivered, Some(30003))
    );
}

#[tokio::test]
async fn b6_an_unreachable_number_is_not_texted_again_in_later_rounds() {
    let c = cast();
    let policy = Policy::simple(c.primary, c.backup, 15 * MIN)
        .expect("p")
        .with_repeat(1)
        .expect("r");
    let sim = Simulation::new(c.line, policy);
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    let sid = first_sid_to(&sim, c.primary);
    let err = DeliveryError {
        code: 30006,
        class: ErrorClass::Unreachable,
    };
    sim.report(&sid, DeliveryStatus::Failed, Some(err))
        .await
        .expect("ok");
    sim.run_until_idle(Duration::from_secs(24 * 3600))
        .await
        .expect("ok");
    assert_eq!(bodies_to(&sim, c.primary).len(), 1, "never again");
    assert_eq!(
        bodies_to(&sim, c.backup).len(),
        2,
        "the backup in both rounds"
    );
    let d = only(&sim);
    assert_eq!(d.unreachable(), &[c.primary]);
    assert!(
        d.events()
            .iter()
            .any(|e| matches!(e.kind, EventKind::LevelSkipped { round: 1, level: 0 }))
    );
    assert_eq!(d.state(), State::Failed);
}

#[tokio::test]
async fn b6_a_send_refused_as_unreachable_escalates_at_once() {
    let (sim, c) = seed_sim();
    sim.provider.fail_always(
        c.primary,
        SendError::new(SendErrorKind::Unreachable, "not a mobile").with_code(21614),
    );
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    assert_eq!(bodies_to(&sim, c.backup).len(), 1);
    let d = only(&sim);
    assert_eq!(d.legs()[0].status, DeliveryStatus::Failed);
    assert_eq!(d.unreachable(), &[c.primary]);
}

#[tokio::test]
async fn b6_a_retryable_send_error_is_retried_with_backoff_then_escalates() {
    let (sim, c) = seed_sim();
    sim.provider.fail_always(
        c.primary,
        SendError::new(SendErrorKind::Retryable, "429").with_code(20429),
    );
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    assert!(
        bodies_to(&sim, c.backup).is_empty(),
        "a retryable error does not escalate at once"
    );
    sim.advance(5 * MIN).await.expect("ok");
    let attempts = sim
        .provider
        .sent()
        .iter()
        .filter(|s| s.message.to == c.primary)
        .count();
    assert_eq!(
        attempts,
        qdn_relay_core::MAX_SEND_ATTEMPTS as usize,
        "bounded retries"
    );
    let times: Vec<Timestamp> = sim
        .provider
        .sent()
        .iter()
        .filter(|s| s.message.to == c.primary)
        .filter_map(|s| s.at)
        .collect();
    let gaps: Vec<u64> = times
        .windows(2)
        .map(|w| w[1].since(w[0]).as_millis() as u64)
        .collect();
    assert!(
        gaps.windows(2).all(|g| g[1] > g[0]),
        "backoff grows: {gaps:?}"
    );
    assert_eq!(
        bodies_to(&sim, c.backup).len(),
        1,
        "gave up on the primary, escalated"
    );
}

#[tokio::test]
async fn b6_a_maybe_sent_error_is_never_resent_and_the_timeout_covers_it() {
    let (sim, c) = seed_sim();
    sim.provider.script(
        c.primary,
        [Err(SendError::new(SendErrorKind::MaybeSent, "timeout"))],
    );
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    sim.advance(14 * MIN).await.expect("ok");
    assert_eq!(
        sim.provider
            .sent()
            .iter()
            .filter(|s| s.message.to == c.primary)
            .count(),
        1
    );
    assert_eq!(only(&sim).legs()[0].status, DeliveryStatus::Unknown);
    sim.advance(MIN).await.expect("ok");
    assert_eq!(bodies_to(&sim, c.backup).len(), 1);
}

#[tokio::test]
async fn b6_a_callback_naming_its_leg_heals_a_lost_send_answer_and_fails_over() {
    let (sim, c) = seed_sim();
    sim.provider.script(
        c.primary,
        [Err(SendError::new(SendErrorKind::MaybeSent, "timeout"))],
    );
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    let d = only(&sim);
    assert_eq!(d.legs()[0].status, DeliveryStatus::Unknown);
    let sid: ProviderMessageId = "SMlate0000000000000000000000000001".parse().expect("sid");
    // Without the leg the callback cannot be placed.
    let e = sim
        .report(&sid, DeliveryStatus::Sent, None)
        .await
        .expect_err("unknown sid");
    assert!(e.to_string().contains("SMlate"), "{e}");
    // Naming its leg, it is: the leg learns its sid.
    let report = |status, error| DeliveryReport {
        sid: sid.clone(),
        status,
        error,
    };
    let out = sim
        .relay
        .leg_delivery(report(DeliveryStatus::Sent, None), d.id(), 0)
        .await
        .expect("placed");
    assert!(matches!(out, Outcome::Applied(_)));
    let leg = only(&sim).legs()[0].clone();
    assert_eq!(
        (leg.sid.as_ref(), leg.status),
        (Some(&sid), DeliveryStatus::Sent)
    );
    // Then it fails: the backup is texted at once (B6), not after 15 min.
    sim.relay
        .leg_delivery(
            report(
                DeliveryStatus::Undelivered,
                Some(DeliveryError {
                    code: 30003,
                    class: ErrorClass::RetryLater,
                }),
            ),
            d.id(),
            0,
        )
        .await
        .expect("failed");
    assert_eq!(bodies_to(&sim, c.backup).len(), 1);
    // A sid that belongs to another leg, a leg that does not exist, or
    // another dispatch: refused, nothing changes.
    let v = only(&sim).version();
    for (dispatch, leg) in [(d.id(), 1), (d.id(), 9)] {
        let e = sim
            .relay
            .leg_delivery(report(DeliveryStatus::Read, None), dispatch, leg)
            .await;
        assert!(
            matches!(e, Ok(Outcome::Unchanged(_)) | Err(_)),
            "{dispatch}/{leg}: {e:?}"
        );
    }
    let other_sid: ProviderMessageId = "SMlate0000000000000000000000000002".parse().expect("sid");
    for leg in [0, 9] {
        let e = sim
            .relay
            .leg_delivery(
                DeliveryReport {
                    sid: other_sid.clone(),
                    status: DeliveryStatus::Sent,
                    error: None,
                },
                d.id(),
                leg,
            )
            .await;
        assert!(
            matches!(e, Err(RelayError::UnknownMessage(_))),
            "leg {leg}: {e:?}"
        );
    }
    let e = sim
        .relay
        .leg_delivery(
            DeliveryReport {
                sid: other_sid,
                status: DeliveryStatus::Sent,
                error: None,
            },
            qdn_relay_core::DispatchId::from_u128(42),
            0,
        )
        .await;
    assert!(matches!(e, Err(RelayError::UnknownMessage(_))), "{e:?}");
    assert_eq!(only(&sim).version(), v, "refused callbacks change nothing");
}

#[test]
fn b2_a_callback_that_overtakes_the_send_answer_is_kept_and_the_answer_is_a_no_op() {
    let c = cast();
    let policy = Arc::new(Policy::simple(c.primary, c.backup, 15 * MIN).expect("policy"));
    let now = Timestamp::from_millis(1_767_603_600_000);
    let text = InboundText {
        sid: "SMin1".parse().expect("sid"),
        from: c.customer,
        to: c.line,
        body: "hello".into(),
        media: vec![],
    };
    let (mut d, _) = Dispatch::open(
        qdn_relay_core::DispatchId::from_u128(7),
        "K7".parse().expect("tag"),
        policy,
        text,
        now,
    )
    .expect("open");
    assert_eq!(d.legs()[0].status, DeliveryStatus::Pending);
    let sid: ProviderMessageId = "SMfast".parse().expect("sid");
    let fx = d
        .handle(
            now,
            Input::LegDelivery {
                leg: 0,
                report: DeliveryReport {
                    sid: sid.clone(),
                    status: DeliveryStatus::Delivered,
                    error: None,
                },
            },
        )
        .expect("placed");
    assert!(!fx.is_empty());
    assert_eq!(d.legs()[0].status, DeliveryStatus::Delivered);
    assert_eq!(d.legs()[0].retry_at, None, "the outbox will not resend it");
    // The provider's answer arrives afterwards: nothing more happens.
    let fx = d
        .handle(
            now,
            Input::SendOutcome {
                leg: 0,
                result: Ok(sid.clone().into()),
            },
        )
        .expect("ok");
    assert!(fx.is_empty(), "{fx:?}");
    let fx = d
        .handle(
            now,
            Input::SendOutcome {
                leg: 0,
                result: Err(SendError::new(SendErrorKind::MaybeSent, "late timeout")),
            },
        )
        .expect("ok");
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(d.legs()[0].sid.as_ref(), Some(&sid));
}

#[tokio::test]
async fn b6_delivery_status_only_moves_forward() {
    let (sim, c) = seed_sim();
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    let sid = first_sid_to(&sim, c.primary);
    sim.report(&sid, DeliveryStatus::Delivered, None)
        .await
        .expect("ok");
    let out = sim
        .report(&sid, DeliveryStatus::Sent, None)
        .await
        .expect("ok");
    assert!(matches!(out, Outcome::Unchanged(_)));
    let out = sim
        .report(&sid, DeliveryStatus::Failed, None)
        .await
        .expect("ok");
    assert!(matches!(out, Outcome::Unchanged(_)), "delivered is final");
    assert_eq!(only(&sim).legs()[0].status, DeliveryStatus::Delivered);
    assert!(bodies_to(&sim, c.backup).is_empty());
    // A callback for a message the relay never sent is refused, not a panic.
    let unknown: ProviderMessageId = "SMdoesnotexist".parse().expect("sid");
    assert!(matches!(
        sim.report(&unknown, DeliveryStatus::Delivered, None).await,
        Err(qdn_relay_core::testing::SimError::Relay(
            RelayError::UnknownMessage(_)
        ))
    ));
}

// ----- outbox ------------------------------------------------------------

#[tokio::test]
async fn outbox_a_crash_between_save_and_send_is_finished_by_the_sweep() {
    let (sim, c) = seed_sim();
    // Save the opened dispatch as a driver would, then "crash" before sending.
    let text = sim.text(c.customer, "hello");
    let now = sim.now();
    let policy = Arc::new(Policy::simple(c.primary, c.backup, 15 * MIN).expect("p"));
    let (mut d, effects) = Dispatch::open(
        qdn_relay_core::DispatchId::new(now, 1),
        "K7".parse().expect("tag"),
        policy,
        text,
        now,
    )
    .expect("open");
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, qdn_relay_core::Effect::Send(_)))
    );
    d.set_version(1);
    sim.store.save(&d, 0).await.expect("saved");
    assert!(sim.provider.sent().is_empty(), "crashed before sending");
    sim.advance(OUTBOX_GRACE - Duration::from_secs(1))
        .await
        .expect("ok");
    assert!(
        sim.provider.sent().is_empty(),
        "not before the grace period"
    );
    sim.advance(Duration::from_secs(1)).await.expect("ok");
    assert_eq!(
        bodies_to(&sim, c.primary).len(),
        1,
        "the sweep sent it once"
    );
    let d = only(&sim);
    assert!(d.legs()[0].sid.is_some());
    assert_eq!(
        d.level_deadline(),
        Some(d.opened_at().plus(15 * MIN)),
        "the level clock was not reset"
    );
}

// ----- B9 Status -----------------------------------------------------------

#[tokio::test]
async fn b9_status_json_carries_the_seed_fields() {
    let (sim, c) = seed_sim();
    let first_sid;
    {
        let t = sim.text(c.customer, "Need a dumpster");
        first_sid = t.sid.clone();
        sim.relay.inbound(t).await.expect("ok");
    }
    let d = only(&sim);
    let v = serde_json::to_value(d.status()).expect("json");
    assert_eq!(v["message_id"], first_sid.as_str());
    assert_eq!(v["customer_phone"], "+16195550100");
    assert_eq!(v["body"], "Need a dumpster");
    assert_eq!(v["final_status"], "delivered");
    assert!(v["forwarded_to_primary_at"].is_string());
    assert!(v["primary_ack_at"].is_null());
    assert!(v["forwarded_to_backup_at"].is_null());
    sim.advance(15 * MIN).await.expect("ok");
    let v = serde_json::to_value(only(&sim).status()).expect("json");
    assert_eq!(v["final_status"], "backup_triggered");
    assert!(v["forwarded_to_backup_at"].is_string());
    sim.dispatcher_texts(c.backup, "on it").await.expect("ok");
    let v = serde_json::to_value(only(&sim).status()).expect("json");
    assert_eq!(v["final_status"], "acked");
    assert!(
        v["primary_ack_at"].is_null(),
        "the backup acked, not the primary"
    );
    assert_eq!(v["state"], "acked");
    for key in ["legs", "thread", "events"] {
        assert!(v[key].as_array().is_some_and(|a| !a.is_empty()), "{key}");
    }
    // Found by id, by tag and by message id.
    let d = only(&sim);
    for key in [
        d.id().to_string(),
        d.tag().to_string(),
        first_sid.to_string(),
    ] {
        assert_eq!(
            sim.relay.find(&key).await.expect("ok").map(|x| x.id()),
            Some(d.id()),
            "{key}"
        );
    }
    assert!(sim.relay.find("nothing").await.expect("ok").is_none());
}

#[tokio::test]
async fn b9_every_transition_publishes_an_event() {
    let (sim, c) = seed_sim();
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    let mut last_version = 0;
    let mut last_events = 0;
    let check = |sim: &Simulation, last_version: &mut u64, last_events: &mut usize| {
        let d = only(sim);
        let published = sim.sink.events().len();
        if d.version() > *last_version {
            assert!(
                published > *last_events,
                "version {} changed without an event",
                d.version()
            );
        }
        *last_version = d.version();
        *last_events = published;
    };
    check(&sim, &mut last_version, &mut last_events);
    sim.advance(15 * MIN).await.expect("ok");
    check(&sim, &mut last_version, &mut last_events);
    sim.dispatcher_texts(c.backup, "on it").await.expect("ok");
    check(&sim, &mut last_version, &mut last_events);
    let sid = first_sid_to(&sim, c.customer);
    sim.report(&sid, DeliveryStatus::Delivered, None)
        .await
        .expect("ok");
    check(&sim, &mut last_version, &mut last_events);
    let d = only(&sim);
    assert_eq!(
        sim.sink.events(),
        d.events().to_vec(),
        "the sink saw exactly the dispatch's history, in order"
    );
    let open = sim.store.list(ListFilter::Open, 10).await.expect("list");
    assert_eq!(open.len(), 1);
}

#[tokio::test]
async fn bad_inputs_are_errors_not_panics() {
    let (sim, c) = seed_sim();
    let id = sim
        .customer_texts(c.customer, "hello")
        .await
        .expect("ok")
        .dispatch();
    let empty = sim
        .relay
        .dashboard(
            id,
            DashboardAction::Reply {
                by: "ana".into(),
                body: "  ".into(),
            },
        )
        .await;
    assert!(matches!(empty, Err(RelayError::Input(_))));
    let stranger = InboundText {
        sid: sim.next_sid(),
        from: n("+14155550000"),
        to: c.line,
        body: "#".to_owned() + &only(&sim).tag().to_string() + " hi",
        media: vec![],
    };
    // A stranger naming a tag is a customer, not a dispatcher: opens their own.
    let out = sim.relay.inbound(stranger).await.expect("ok");
    assert!(matches!(out, Outcome::Opened(_)));
    sim.relay
        .dashboard(id, DashboardAction::Close { by: "ana".into() })
        .await
        .expect("ok");
    let closed = sim
        .relay
        .dashboard(id, DashboardAction::Ack { by: "ana".into() })
        .await;
    assert!(
        matches!(closed, Err(RelayError::Input(_))),
        "acting on a closed dispatch is refused"
    );
}

#[tokio::test]
async fn b1_media_is_forwarded_as_links_and_an_empty_text_says_so() {
    let (sim, c) = seed_sim();
    let mut t = sim.text(c.customer, "");
    t.media = vec![qdn_relay_core::Media {
        url: "https://api.twilio.com/m/1".into(),
        content_type: Some("image/jpeg".into()),
    }];
    sim.relay.inbound(t).await.expect("ok");
    let tag = only(&sim).tag();
    sim.customer_texts(c.customer, "See photo")
        .await
        .expect("ok");
    let mut t = sim.text(c.customer, "  ");
    t.media.clear();
    sim.relay.inbound(t).await.expect("ok");
    assert_eq!(
        bodies_to(&sim, c.primary),
        vec![
            format!("[QDN #{tag}] +16195550100: [media: https://api.twilio.com/m/1]"),
            format!("[QDN #{tag}] +16195550100: See photo"),
            format!("[QDN #{tag}] +16195550100: (no text)"),
        ]
    );
    sim.advance(15 * MIN).await.expect("ok");
    assert_eq!(
        bodies_to(&sim, c.backup),
        vec![format!(
            "[QDN #{tag}] +16195550100 (3 texts): [media: https://api.twilio.com/m/1] / See photo /   "
        )]
    );
}

/// A provider that yields before answering and records how many sends
/// were in flight at once.
struct Overlapping {
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    sent: std::sync::Mutex<Vec<qdn_relay_core::OutboundMessage>>,
}

#[async_trait::async_trait]
impl qdn_relay_core::SmsProvider for Overlapping {
    async fn send(
        &self,
        msg: &qdn_relay_core::OutboundMessage,
    ) -> Result<qdn_relay_core::SendReceipt, SendError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        self.in_flight.fetch_sub(1, SeqCst);
        let mut sent = self.sent.lock().expect("lock");
        sent.push(msg.clone());
        Ok(qdn_relay_core::SendReceipt::new(
            format!("SMov{:030}", sent.len()).parse().expect("sid"),
        ))
    }
    fn name(&self) -> &str {
        "overlapping"
    }
}

async fn sweep_many(concurrency: usize) -> (usize, usize, Vec<PhoneNumber>) {
    let c = cast();
    let clock = Arc::new(qdn_relay_core::ManualClock::new(Timestamp::from_millis(
        1_767_603_600_000,
    )));
    let store = Arc::new(qdn_relay_core::MemoryStore::new());
    let provider = Arc::new(Overlapping {
        in_flight: 0.into(),
        most: 0.into(),
        sent: Default::default(),
    });
    let relay = qdn_relay_core::Relay::builder(store.clone(), provider.clone(), clock.clone())
        .line(
            c.line,
            Policy::simple(c.primary, c.backup, 15 * MIN).expect("policy"),
        )
        .sweep_concurrency(concurrency)
        .sweep_batch(7)
        .build();
    for i in 0..40u32 {
        let text = InboundText {
            sid: format!("SMin{i:030}").parse().expect("sid"),
            from: format!("+1619555{:04}", 2000 + i).parse().expect("number"),
            to: c.line,
            body: "hello".into(),
            media: vec![],
        };
        relay.customer_text(text).await.expect("opened");
    }
    provider.most.store(0, std::sync::atomic::Ordering::SeqCst);
    clock.set(Timestamp::from_millis(1_767_603_600_000).plus(15 * MIN));
    let report = relay.sweep().await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.fired, 40);
    let to_backup: Vec<PhoneNumber> = provider
        .sent
        .lock()
        .expect("lock")
        .iter()
        .filter(|m| m.to == c.backup)
        .map(|m| m.to)
        .collect();
    let dispatches = store.all();
    assert!(
        dispatches
            .iter()
            .all(|d| d.level() == 1 && d.legs().len() == 2),
        "every dispatch escalated exactly once"
    );
    (
        provider.most.load(std::sync::atomic::Ordering::SeqCst),
        report.fired,
        to_backup,
    )
}

#[tokio::test]
async fn b3_a_sweep_escalates_many_dispatches_concurrently_each_once() {
    let (most, fired, to_backup) = sweep_many(8).await;
    assert_eq!((fired, to_backup.len()), (40, 40));
    assert!(
        (2..=8).contains(&most),
        "sends overlap, within the bound: {most} in flight at most"
    );
    let (most, _, to_backup) = sweep_many(1).await;
    assert_eq!(to_backup.len(), 40);
    assert_eq!(most, 1, "concurrency 1 sends one after another");
}
