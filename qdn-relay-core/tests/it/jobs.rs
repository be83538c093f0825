//! The host's job system (the `Jobs` port): every text lands in the job's
//! message log exactly once, milestones land on the job, a job-system
//! outage or a crash delays nothing and loses nothing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use qdn_relay_core::testing::{SIM_START, Simulation};
use qdn_relay_core::{
    AckVia, Actor, DashboardAction, DeliveryStatus, Direction, Dispatch, EventKind, InboundText,
    JOB_RETRY_MIN, JOB_SYNC_GRACE, JobId, JobMessage, Jobs, JobsError, Milestone, MilestoneKind,
    Origin, PhoneNumber, Policy, ProviderMessageId, Purpose, Relay, RelayEvent, State, Store,
    Timestamp,
};

const MIN: Duration = Duration::from_secs(60);

fn n(s: &str) -> PhoneNumber {
    s.parse().expect("valid number")
}

fn job(s: &str) -> JobId {
    s.parse().expect("valid job id")
}

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

fn policy(c: &Cast) -> Policy {
    Policy::simple(c.primary, c.backup, 15 * MIN).expect("policy")
}

fn only(sim: &Simulation) -> Dispatch {
    let all = sim.store.all();
    assert_eq!(all.len(), 1, "expected exactly one dispatch");
    all.into_iter().next().expect("one")
}

fn sent_sids(sim: &Simulation) -> Vec<ProviderMessageId> {
    sim.provider
        .sent()
        .into_iter()
        .filter_map(|s| s.result.ok())
        .collect()
}

/// Sends `text` twice, as Twilio does when it retries a webhook.
async fn deliver_twice(sim: &Simulation, text: InboundText) {
    sim.relay
        .inbound(text.clone())
        .await
        .expect("first delivery");
    sim.relay.inbound(text).await.expect("retried delivery");
}

/// Reports every accepted send as delivered, each callback twice.
async fn report_all_delivered_twice(sim: &Simulation) {
    for sid in sent_sids(sim) {
        for _ in 0..2 {
            sim.report(&sid, DeliveryStatus::Delivered, None)
                .await
                .expect("callback");
        }
    }
}

/// Customer texts, nobody answers the primary, the backup replies: every
/// webhook and callback delivered twice.
async fn cascade(sim: &Simulation, c: &Cast) {
    deliver_twice(sim, sim.text(c.customer, "Need a dumpster at 5th & Main")).await;
    report_all_delivered_twice(sim).await;
    sim.advance(15 * MIN).await.expect("timeout");
    report_all_delivered_twice(sim).await;
    sim.advance(2 * MIN).await.expect("time passes");
    deliver_twice(sim, sim.text(c.backup, "On my way, 20 min")).await;
    report_all_delivered_twice(sim).await;
}

fn origins(messages: &[JobMessage]) -> Vec<(Direction, Origin, PhoneNumber, PhoneNumber)> {
    messages
        .iter()
        .map(|m| (m.direction, m.origin, m.from, m.to))
        .collect()
}

#[tokio::test]
async fn jobs_a_whole_cascade_leaves_one_log_entry_per_text_and_the_ack_on_the_job() {
    let c = cast();
    let sim = Simulation::with_jobs(c.line, policy(&c));
    let j = job("dumpster-1042");
    sim.jobs.open_job(c.line, c.customer, j.clone());

    cascade(&sim, &c).await;

    let d = only(&sim);
    assert_eq!(d.state(), State::Acked);
    assert_eq!(d.job_id(), Some(&j), "the dispatch carries the job id");
    let record = sim.jobs.job(&j).expect("the job exists");

    // Five texts: the customer's, the two forwards, the backup's reply and
    // the reply sent on to the customer. One entry each, in order.
    assert_eq!(
        origins(&record.messages),
        vec![
            (Direction::Inbound, Origin::Customer, c.customer, c.line),
            (Direction::Outbound, Origin::Relay, c.line, c.primary),
            (Direction::Outbound, Origin::Relay, c.line, c.backup),
            (Direction::Inbound, Origin::Dispatcher, c.backup, c.line),
            (Direction::Outbound, Origin::Dispatcher, c.line, c.customer),
        ],
        "log: {:#?}",
        record.messages
    );
    let mut keys: Vec<&str> = record.messages.iter().map(|m| m.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 5, "every text has its own key");
    assert_eq!(
        sim.jobs.repeated_keys(),
        0,
        "retried webhooks and callbacks make no repeated job calls"
    );
    // Received texts carry their MessageSid, sent ones the provider's.
    let sent = sent_sids(&sim);
    for m in &record.messages {
        let sid = m.sid.as_ref().expect("every text has a sid");
        match m.direction {
            Direction::Inbound => assert!(sid.as_str().starts_with("SMin"), "{sid}"),
            Direction::Outbound => assert!(sent.contains(sid), "{sid} was sent"),
        }
    }
    assert_eq!(record.messages[0].body, "Need a dumpster at 5th & Main");
    assert_eq!(record.messages[3].body, "On my way, 20 min");
    assert_eq!(record.messages[4].body, "On my way, 20 min");
    assert_eq!(
        record.messages[1].purpose,
        Some(Purpose::Forward { round: 0, level: 0 })
    );

    // Milestones: forwarded, escalated, acked (at the reply, by the backup).
    let kinds: Vec<MilestoneKind> = record.milestones.iter().map(|m| m.kind).collect();
    assert_eq!(
        kinds,
        vec![
            MilestoneKind::Forwarded,
            MilestoneKind::Escalated,
            MilestoneKind::Acked
        ]
    );
    let ack = record.milestone(MilestoneKind::Acked).expect("acked");
    assert_eq!(ack.at, SIM_START.plus(17 * MIN));
    assert_eq!(ack.by, Some(Actor::Phone(c.backup)));
    assert_eq!(ack.level, Some(1));
    assert_eq!(ack.via, Some(AckVia::Reply));
    let fwd = record
        .milestone(MilestoneKind::Forwarded)
        .expect("forwarded");
    assert_eq!((fwd.at, fwd.to), (SIM_START, Some(c.primary)));
    let esc = record
        .milestone(MilestoneKind::Escalated)
        .expect("escalated");
    assert_eq!(esc.at, SIM_START.plus(15 * MIN));
    assert_eq!((esc.level, esc.to), (Some(1), Some(c.backup)));

    // The status is reachable by the job id and says nothing is owed.
    let found = sim.relay.find("dumpster-1042").await.expect("find");
    assert_eq!(found.map(|d| d.id()), Some(d.id()));
    let status = d.status();
    let sync = status.job_sync.expect("job sync status");
    assert_eq!((sync.owed, sync.failures), (0, 0));
    assert_eq!(sync.retry_at, None);
    assert_eq!(
        d.next_deadline(),
        None,
        "an acked dispatch with its job up to date is not due"
    );
}

#[tokio::test]
async fn jobs_an_outage_delays_nothing_and_loses_nothing() {
    let c = cast();
    // The same cascade without a job system, for the send times.
    let plain = Simulation::new(c.line, policy(&c));
    cascade(&plain, &c).await;

    let sim = Simulation::with_jobs(c.line, policy(&c));
    let j = job("dumpster-7");
    sim.jobs.open_job(c.line, c.customer, j.clone());
    sim.jobs.set_down(true);
    cascade(&sim, &c).await;

    let timeline = |s: &Simulation| -> Vec<(Option<Timestamp>, PhoneNumber, String)> {
        s.provider
            .sent()
            .into_iter()
            .map(|t| (t.at, t.message.to, t.message.body))
            .collect()
    };
    assert_eq!(
        timeline(&sim),
        timeline(&plain),
        "every text goes out at the same time, to the same people, during the outage"
    );
    let d = only(&sim);
    assert_eq!(d.state(), State::Acked);
    let status = d.status();
    let sync = status.job_sync.clone().expect("job sync status");
    assert!(sync.failures > 0, "{sync:?}");
    assert!(!sync.resolved, "the job was never resolved: {sync:?}");
    assert!(
        sync.last_error
            .as_deref()
            .is_some_and(|e| e.contains("unavailable")),
        "{sync:?}"
    );
    assert!(sync.retry_at.is_some(), "a retry is scheduled: {sync:?}");
    assert!(
        sim.sink
            .events()
            .iter()
            .any(|e| matches!(e.kind, EventKind::JobSyncFailed { .. })),
        "the failure is published"
    );
    assert!(sim.jobs.job(&j).expect("job").messages.is_empty());

    // The job system comes back: the sweep delivers everything, once.
    sim.jobs.set_down(false);
    sim.advance(JOB_SYNC_GRACE.max(30 * MIN))
        .await
        .expect("sweep");
    let record = sim.jobs.job(&j).expect("job");
    assert_eq!(record.messages.len(), 5, "{:#?}", record.messages);
    assert_eq!(record.milestones.len(), 3, "{:#?}", record.milestones);
    assert_eq!(sim.jobs.repeated_keys(), 0);
    let d = only(&sim);
    assert_eq!(d.job_id(), Some(&j));
    let sync = d.status().job_sync.expect("job sync status");
    assert_eq!((sync.owed, sync.failures, sync.retry_at), (0, 0, None));
    assert!(
        sim.sink
            .events()
            .iter()
            .any(|e| matches!(e.kind, EventKind::JobSyncRecovered { .. }))
    );
    assert_eq!(d.next_deadline(), None);
}

#[tokio::test]
async fn jobs_retries_back_off_and_stop_once_caught_up() {
    let c = cast();
    let sim = Simulation::with_jobs(c.line, policy(&c));
    let j = job("j-backoff");
    sim.jobs.open_job(c.line, c.customer, j.clone());
    sim.jobs.set_down(true);
    sim.customer_texts(c.customer, "hello")
        .await
        .expect("accepted");
    let d = only(&sim);
    let first = d.job_sync().and_then(|s| s.retry_at).expect("retry due");
    assert_eq!(first, SIM_START.plus(JOB_RETRY_MIN));
    // Two sweeps later the delay has doubled twice.
    sim.advance(JOB_RETRY_MIN).await.expect("sweep");
    sim.advance(JOB_RETRY_MIN * 2).await.expect("sweep");
    let d = only(&sim);
    let sync = d.job_sync().expect("sync").clone();
    assert_eq!(sync.failures, 3);
    // The failures in a row each `job_sync_failed` event counts.
    let failures = |events: &[RelayEvent]| -> Vec<u32> {
        events
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::JobSyncFailed { failures, .. } => Some(failures),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        failures(d.events()),
        vec![1, 2],
        "the 3rd failure in a row is not kept in the dispatch's history"
    );
    assert_eq!(
        failures(&sim.sink.events()),
        vec![1, 2, 3],
        "but every failure is published"
    );
    assert_eq!(
        sync.retry_at,
        Some(SIM_START.plus(JOB_RETRY_MIN * 3).plus(JOB_RETRY_MIN * 4))
    );
    sim.jobs.set_down(false);
    sim.advance(JOB_RETRY_MIN * 4).await.expect("sweep");
    let record = sim.jobs.job(&j).expect("job");
    assert_eq!(record.messages.len(), 2, "the text and its forward");
    let (calls_before, _) = sim.jobs.calls();
    // Nothing owed: only what the escalation adds makes calls.
    sim.advance(15 * MIN).await.expect("timeout fires");
    sim.report(&sent_sids(&sim)[1], DeliveryStatus::Delivered, None)
        .await
        .expect("callback");
    let (calls_after, _) = sim.jobs.calls();
    assert_eq!(
        calls_after - calls_before,
        2,
        "only the escalation's forward and milestone were new"
    );
}

/// A job system whose appends never finish: the sync future is dropped
/// after the dispatch was saved (what a crash looks like to the store).
struct Hangs;

#[async_trait]
impl Jobs for Hangs {
    async fn resolve(
        &self,
        _: PhoneNumber,
        _: PhoneNumber,
        _: Timestamp,
    ) -> Result<Option<JobId>, JobsError> {
        std::future::pending().await
    }
    async fn append_message(&self, _: &JobId, _: &JobMessage) -> Result<(), JobsError> {
        std::future::pending().await
    }
    async fn milestone(&self, _: &JobId, _: &Milestone) -> Result<(), JobsError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn jobs_a_crash_between_save_and_sync_is_finished_by_the_sweep() {
    let c = cast();
    let sim = Simulation::with_jobs(c.line, policy(&c));
    let j = job("j-crash");
    sim.jobs.open_job(c.line, c.customer, j.clone());
    // The first process saves and sends, then dies inside the job sync.
    let crashing = Relay::builder(sim.store.clone(), sim.provider.clone(), sim.clock.clone())
        .line(c.line, policy(&c))
        .jobs(Arc::new(Hangs))
        .build();
    let text = sim.text(c.customer, "hello");
    let r = tokio::time::timeout(Duration::from_millis(200), crashing.inbound(text)).await;
    assert!(r.is_err(), "the sync hangs, as a crashed process would");
    let d = only(&sim);
    assert_eq!(d.legs().len(), 1, "the forward was saved and sent first");
    assert_eq!(sim.provider.sent().len(), 1);
    assert_eq!(
        d.job_sync().and_then(|s| s.retry_at),
        Some(SIM_START.plus(JOB_SYNC_GRACE)),
        "the sync is owed, due after the grace"
    );
    // The next process's sweep finds it.
    sim.advance(JOB_SYNC_GRACE).await.expect("sweep");
    let record = sim.jobs.job(&j).expect("job");
    assert_eq!(record.messages.len(), 2);
    assert_eq!(record.milestones.len(), 1);
    assert_eq!(sim.provider.sent().len(), 1, "nothing was sent twice");
}

#[tokio::test]
async fn jobs_no_job_appends_nothing_until_linked_then_replays_the_conversation() {
    let c = cast();
    let sim = Simulation::with_jobs(c.line, policy(&c));
    sim.customer_texts(c.customer, "first").await.expect("ok");
    sim.customer_texts(c.customer, "second").await.expect("ok");
    let d = only(&sim);
    assert_eq!(d.job_id(), None);
    let sync = d.status().job_sync.expect("sync");
    assert!(sync.resolved && sync.owed == 0, "{sync:?}");
    assert_eq!(d.next_deadline(), d.level_deadline(), "not due for jobs");
    assert_eq!(sim.jobs.calls(), (1, 0), "only resolve was asked, once");

    // The operator links it by hand later: the job gets the whole story.
    let j = job("created-later");
    sim.jobs.open_job(c.line, n("+15550000000"), j.clone());
    sim.relay.link_job(d.id(), j.clone()).await.expect("link");
    let record = sim.jobs.job(&j).expect("job");
    let bodies: Vec<&str> = record.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies.len(), 4, "{bodies:?}");
    assert_eq!(bodies[0], "first");
    assert_eq!(bodies[2], "second");
    assert!(bodies[1].ends_with(": first") && bodies[3].ends_with(": second"));
    let d = only(&sim);
    assert_eq!(d.job_id(), Some(&j));
    assert!(
        d.events()
            .iter()
            .any(|e| matches!(&e.kind, EventKind::JobLinked { job } if *job == j))
    );
    // Linking again to the same job changes nothing.
    let v = d.version();
    sim.relay.link_job(d.id(), j).await.expect("link again");
    assert_eq!(only(&sim).version(), v);
}

#[tokio::test]
async fn jobs_dispatches_are_listed_and_found_by_job_newest_first() {
    let c = cast();
    let sim = Simulation::with_jobs(c.line, policy(&c));
    let j = job("J-77");
    sim.jobs.open_job(c.line, c.customer, j.clone());
    sim.customer_texts(c.customer, "first visit")
        .await
        .expect("ok");
    let first = only(&sim);
    sim.relay
        .dashboard(first.id(), DashboardAction::Close { by: "ops".into() })
        .await
        .expect("closed");
    sim.advance(MIN).await.expect("time passes");
    sim.customer_texts(c.customer, "again").await.expect("ok");
    let listed: Vec<_> = sim
        .relay
        .by_job(&j, 10)
        .await
        .expect("list")
        .iter()
        .map(Dispatch::id)
        .collect();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1], first.id(), "newest first");
    let found = sim.relay.find("J-77").await.expect("find").expect("found");
    assert_eq!(found.id(), listed[0]);
    let status = found
        .status()
        .with_job_dispatches(&sim.relay.by_job(&j, 10).await.expect("list"));
    assert_eq!(status.job_dispatches.len(), 1);
    assert_eq!(status.job_dispatches[0].dispatch_id, first.id());
    assert_eq!(status.job_dispatches[0].state, State::Closed);
    // The closed one's milestone reached the job.
    let record = sim.jobs.job(&j).expect("job");
    assert!(record.milestone(MilestoneKind::Closed).is_some());
    assert!(sim.relay.find("J-78").await.expect("find").is_none());
}

#[tokio::test]
async fn jobs_a_relay_without_a_job_system_stops_owing_syncs() {
    let c = cast();
    let sim = Simulation::with_jobs(c.line, policy(&c));
    sim.jobs.set_down(true);
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    let owed = only(&sim);
    assert!(owed.job_sync().and_then(|s| s.retry_at).is_some());
    // The job system is removed from the configuration: a relay without
    // one clears the retry instead of sweeping it forever.
    let plain = Relay::builder(sim.store.clone(), sim.provider.clone(), sim.clock.clone())
        .line(c.line, policy(&c))
        .build();
    sim.clock.set(SIM_START.plus(JOB_RETRY_MIN));
    let report = plain.sweep().await;
    assert!(report.is_ok());
    let d = sim.store.get(owed.id()).await.expect("get").expect("found");
    assert_eq!(d.job_sync().and_then(|s| s.retry_at), None);
    assert_eq!(d.next_deadline(), d.level_deadline());
}

#[tokio::test]
async fn jobs_without_a_job_system_a_link_is_only_a_link() {
    let c = cast();
    let sim = Simulation::new(c.line, policy(&c));
    sim.customer_texts(c.customer, "hello").await.expect("ok");
    let d = only(&sim);
    let j = job("J-plain");
    sim.relay.link_job(d.id(), j.clone()).await.expect("linked");
    let d = only(&sim);
    assert_eq!(d.job_id(), Some(&j));
    assert!(
        d.job_sync().is_none(),
        "nothing is owed to a job system that is not there"
    );
    assert!(d.status().job_sync.is_none());
    assert_eq!(d.next_deadline(), d.level_deadline());
    let found = sim
        .relay
        .find("J-plain")
        .await
        .expect("find")
        .expect("found");
    assert_eq!(found.id(), d.id());
}

#[tokio::test]
async fn jobs_in_background_mode_the_host_or_the_sweep_syncs() {
    let c = cast();
    let sim = Simulation::with_jobs(c.line, policy(&c));
    let j = job("j-bg");
    sim.jobs.open_job(c.line, c.customer, j.clone());
    let relay = Relay::builder(sim.store.clone(), sim.provider.clone(), sim.clock.clone())
        .line(c.line, policy(&c))
        .jobs(sim.jobs.clone())
        .job_sync_mode(qdn_relay_core::JobSyncMode::Background)
        .build();
    let first = relay
        .inbound(sim.text(c.customer, "first"))
        .await
        .expect("opened")
        .dispatch();
    assert_eq!(
        sim.jobs.calls(),
        (0, 0),
        "the input did not wait for the job system"
    );
    // The host syncs off the request path.
    relay.sync_job(first).await;
    assert_eq!(sim.jobs.job(&j).expect("job").messages.len(), 2);
    // What the host did not sync, the sweep does after the grace.
    relay
        .inbound(sim.text(c.customer, "second"))
        .await
        .expect("joined");
    assert_eq!(sim.jobs.job(&j).expect("job").messages.len(), 2);
    sim.clock.set(SIM_START.plus(JOB_SYNC_GRACE));
    let report = relay.sweep().await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(sim.jobs.job(&j).expect("job").messages.len(), 4);
    assert_eq!(sim.jobs.repeated_keys(), 0);
}

// ----- property: whatever happens, every text reaches its job once -----

mod prop {
    use std::collections::HashSet;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError};
    use qdn_relay_core::{DeliveryStatus, Direction, Dispatch, MilestoneKind, Purpose, Relay};

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// A customer texts (0: the job's customer, 1: another one); the
        /// webhook is delivered `1 + retries` times.
        Customer { who: u8, retries: u8 },
        /// A dispatcher (0: primary, 1: backup) texts, maybe a command.
        Dispatcher { who: u8, command: u8 },
        /// Status callbacks for the `nth` accepted send.
        Callback { nth: u8, failed: bool },
        /// Time passes (sweeping at every deadline).
        Advance { secs: u16 },
        /// The job system goes down or comes back.
        JobsDown(bool),
        /// The dashboard acts on the newest dispatch.
        Dashboard { close: bool },
        /// A customer text handled by a process that dies during the job
        /// sync (after the relay saved and sent).
        CrashedCustomerText,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..2, 0u8..2).prop_map(|(who, retries)| Op::Customer { who, retries }),
            3 => (0u8..2, 0u8..4).prop_map(|(who, command)| Op::Dispatcher { who, command }),
            3 => (0u8..8, any::<bool>()).prop_map(|(nth, failed)| Op::Callback { nth, failed }),
            4 => (1u16..1800).prop_map(|secs| Op::Advance { secs }),
            2 => any::<bool>().prop_map(Op::JobsDown),
            1 => any::<bool>().prop_map(|close| Op::Dashboard { close }),
            1 => Just(Op::CrashedCustomerText),
        ]
    }

    /// Polls a future once: everything the in-memory ports can do happens
    /// in that poll; a future still pending then is dropped, as a process
    /// dies.
    fn poll_once<F: Future>(f: F) -> Option<F::Output> {
        let mut f = pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let c = cast();
        let sim = Simulation::with_jobs(c.line, policy(&c));
        let other = n("+16195550177");
        let j1 = job("job-customer");
        let j2 = job("job-other");
        sim.jobs.open_job(c.line, c.customer, j1.clone());
        sim.jobs.open_job(c.line, other, j2.clone());
        let crashing = Relay::builder(sim.store.clone(), sim.provider.clone(), sim.clock.clone())
            .line(c.line, policy(&c))
            .jobs(Arc::new(Hangs))
            .build();
        let mut crashed = false;
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Customer { who, retries } => {
                    let from = if who == 0 { c.customer } else { other };
                    let t = sim.text(from, &format!("customer text {i}"));
                    for _ in 0..=retries {
                        let _ = sim.relay.inbound(t.clone()).await;
                    }
                }
                Op::Dispatcher { who, command } => {
                    let from = if who == 0 { c.primary } else { c.backup };
                    let body = match command {
                        0 => "ACK".to_owned(),
                        1 => "PASS".to_owned(),
                        2 => "DONE".to_owned(),
                        _ => format!("reply {i}"),
                    };
                    let t = sim.text(from, &body);
                    let _ = sim.relay.inbound(t.clone()).await;
                    let _ = sim.relay.inbound(t).await;
                }
                Op::Callback { nth, failed } => {
                    let sids = sent_sids(&sim);
                    if let Some(sid) = sids.get(nth as usize) {
                        let status = if failed {
                            DeliveryStatus::Failed
                        } else {
                            DeliveryStatus::Delivered
                        };
                        let _ = sim.report(sid, status, None).await;
                        let _ = sim.report(sid, status, None).await;
                    }
                }
                Op::Advance { secs } => {
                    sim.advance(Duration::from_secs(u64::from(secs)))
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                Op::JobsDown(down) => sim.jobs.set_down(down),
                Op::Dashboard { close } => {
                    if let Some(d) = sim.store.all().first() {
                        let action = if close {
                            qdn_relay_core::DashboardAction::Close { by: "ops".into() }
                        } else {
                            qdn_relay_core::DashboardAction::Ack { by: "ops".into() }
                        };
                        let _ = sim.relay.dashboard(d.id(), action).await;
                    }
                }
                Op::CrashedCustomerText => {
                    let t = sim.text(c.customer, &format!("customer text {i}"));
                    if poll_once(crashing.inbound(t)).is_none() {
                        crashed = true;
                    }
                }
            }
        }
        // The job system is back; time passes (every retry comes due).
        sim.jobs.set_down(false);
        sim.advance(Duration::from_secs(6 * 3600))
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;

        for d in sim.store.all() {
            check(&sim, &d)?;
        }
        if !crashed {
            prop_assert_eq!(
                sim.jobs.repeated_keys(),
                0,
                "without a crash the relay never repeats a job call"
            );
        }
        Ok(())
    }

    /// The job's log holds exactly the dispatch's texts, in order; its
    /// milestones match the dispatch; nothing more is owed.
    fn check(sim: &Simulation, d: &Dispatch) -> Result<(), TestCaseError> {
        let sync = d.job_sync().cloned().unwrap_or_default();
        prop_assert!(sync.resolved, "{}: never resolved", d.id());
        prop_assert_eq!(sync.retry_at, None, "{}: still owes its job", d.id());
        let Some(j) = d.job_id() else {
            return Ok(());
        };
        let record = sim.jobs.job(j).expect("a resolved job exists");
        let mine: Vec<_> = record
            .messages
            .iter()
            .filter(|m| m.dispatch == d.id())
            .collect();
        let inbound: Vec<String> = d
            .thread()
            .iter()
            .filter(|e| e.direction == Direction::Inbound)
            .filter_map(|e| e.sid.as_ref().map(|s| format!("in:{s}")))
            .collect();
        let outbound: Vec<String> = d
            .legs()
            .iter()
            .filter(|l| l.sid.is_some() || l.status == DeliveryStatus::Unknown)
            .map(|l| format!("out:{}:{}", d.id(), l.index))
            .collect();
        let got_in: Vec<String> = mine
            .iter()
            .filter(|m| m.direction == Direction::Inbound)
            .map(|m| m.key.clone())
            .collect();
        let got_out: Vec<String> = mine
            .iter()
            .filter(|m| m.direction == Direction::Outbound)
            .map(|m| m.key.clone())
            .collect();
        prop_assert_eq!(&got_in, &inbound, "received texts, in order");
        prop_assert_eq!(&got_out, &outbound, "sent texts, in order");
        let keys: HashSet<&str> = mine.iter().map(|m| m.key.as_str()).collect();
        prop_assert_eq!(keys.len(), mine.len(), "no text twice");

        let has = |k: MilestoneKind| {
            record
                .milestones
                .iter()
                .filter(|m| m.dispatch == d.id() && m.kind == k)
                .count()
        };
        let sent_forward = |first: bool| {
            d.legs().iter().any(|l| {
                matches!(l.purpose, Purpose::Forward { round, level } if ((round, level) == (0, 0)) == first)
                    && l.sid.is_some()
            })
        };
        prop_assert_eq!(
            has(MilestoneKind::Forwarded),
            usize::from(sent_forward(true))
        );
        prop_assert_eq!(has(MilestoneKind::Escalated) > 0, sent_forward(false));
        prop_assert_eq!(has(MilestoneKind::Acked), usize::from(d.ack().is_some()));
        prop_assert_eq!(
            has(MilestoneKind::Closed),
            usize::from(d.closed_at().is_some())
        );
        prop_assert_eq!(
            has(MilestoneKind::Failed),
            usize::from(d.state() == State::Failed)
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(Config {
            cases: 128,
            max_shrink_iters: 2000,
            ..Config::default()
        })]

        #[test]
        fn jobs_every_text_reaches_its_job_once_through_outages_and_crashes(
            ops in proptest::collection::vec(op(), 1..30),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("runtime");
            rt.block_on(run(ops))?;
        }
    }
}

/// Every save of a dispatch publishes at least one event, the job system's
/// bookkeeping included (a link, the cursor, a failure, a pause); an input
/// that changes nothing is not saved.
#[tokio::test]
async fn jobs_every_change_to_a_dispatch_publishes_an_event() {
    let c = cast();
    let sim = Simulation::with_jobs(c.line, policy(&c));
    let j = job("j-events");
    sim.jobs.open_job(c.line, c.customer, j.clone());
    let mut seen = (0u64, 0usize);
    let check = |sim: &Simulation, seen: &mut (u64, usize), what: &str| {
        let version = only(sim).version();
        let published = sim.sink.events().len();
        assert!(
            published - seen.1 >= (version - seen.0) as usize,
            "{what}: {} saves, {} events",
            version - seen.0,
            published - seen.1
        );
        *seen = (version, published);
    };
    let first = sim.text(c.customer, "Need a dumpster");
    sim.relay.inbound(first.clone()).await.expect("opened");
    check(&sim, &mut seen, "the first text, synced");
    sim.relay.inbound(first).await.expect("a repeat");
    assert_eq!(only(&sim).version(), seen.0, "a repeat is not saved");
    report_all_delivered_twice(&sim).await;
    check(&sim, &mut seen, "delivery callbacks");
    sim.advance(15 * MIN).await.expect("timeout");
    check(&sim, &mut seen, "an escalation");
    sim.dispatcher_texts(c.backup, "on it")
        .await
        .expect("reply");
    check(&sim, &mut seen, "a reply");
    sim.jobs.set_down(true);
    sim.customer_texts(c.customer, "thanks")
        .await
        .expect("joined");
    sim.advance(30 * MIN).await.expect("retries");
    check(&sim, &mut seen, "a text and failed syncs");
    sim.jobs.set_down(false);
    sim.advance(30 * MIN).await.expect("recovered");
    check(&sim, &mut seen, "the job system back");
    let d = only(&sim);
    // Another job the host knows (another customer's).
    sim.jobs.open_job(c.line, n("+16195550177"), job("j-other"));
    sim.relay
        .link_job(d.id(), job("j-other"))
        .await
        .expect("linked");
    check(
        &sim,
        &mut seen,
        "a link, the conversation replayed to the job",
    );
    sim.relay
        .link_job(d.id(), job("j-other"))
        .await
        .expect("linked again");
    assert_eq!(only(&sim).version(), seen.0, "the same link is not saved");
    // A relay without a job system pauses the sync owed.
    sim.jobs.set_down(true);
    let close = DashboardAction::Close { by: "ops".into() };
    sim.relay.dashboard(d.id(), close).await.expect("closed");
    check(&sim, &mut seen, "a close, its sync failing");
    let plain = Relay::builder(sim.store.clone(), sim.provider.clone(), sim.clock.clone())
        .line(c.line, policy(&c))
        .sink(sim.sink.clone())
        .build();
    sim.clock.set(sim.now().plus(JOB_RETRY_MIN * 2));
    assert!(plain.sweep().await.is_ok());
    let d = only(&sim);
    assert_eq!(d.job_sync().and_then(|s| s.retry_at), None, "paused");
    check(&sim, &mut seen, "the pause");
}

/// A long conversation during a job-system outage: nothing the job has not
/// recorded moves out of the dispatch's record; once the job system is
/// back, the job gets every text once, and the next change moves the old
/// entries out.
#[tokio::test]
async fn a_long_conversation_reaches_its_job_whole_after_an_outage() {
    let c = cast();
    let sim = Simulation::with_jobs(c.line, policy(&c));
    let j = job("dumpster-8");
    sim.jobs.open_job(c.line, c.customer, j.clone());
    sim.customer_texts(c.customer, "first").await.expect("text");
    sim.dispatcher_texts(c.primary, "on it").await.expect("ack");
    sim.jobs.set_down(true);
    for i in 0..150 {
        sim.customer_texts(c.customer, &format!("text {i:03}"))
            .await
            .expect("text");
    }
    let d = only(&sim);
    assert!(
        d.thread().len() >= 150 && d.history().thread <= 3,
        "what the job lacks stays in the record: {} kept, {} moved",
        d.thread().len(),
        d.history().thread
    );
    sim.jobs.set_down(false);
    sim.advance(30 * MIN).await.expect("sweep");
    let record = sim.jobs.job(&j).expect("job");
    for i in 0..150 {
        let body = format!("text {i:03}");
        let n = record
            .messages
            .iter()
            .filter(|m| m.body.contains(&body))
            .count();
        assert!(n >= 1, "{body} reached the job");
    }
    assert_eq!(sim.jobs.repeated_keys(), 0, "none twice");
    sim.customer_texts(c.customer, "one more")
        .await
        .expect("text");
    let d = only(&sim);
    assert!(
        d.thread().len() <= qdn_relay_core::HIGH_ENTRIES && d.history().thread > 0,
        "then the old entries move out: {} kept",
        d.thread().len()
    );
}
