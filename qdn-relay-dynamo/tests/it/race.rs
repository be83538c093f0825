//! Sweeps and acks racing through the emulator: exactly one transition
//! wins each race, and no escalation step is sent twice.
//!
//! moto runs every request on a thread of its own and does not isolate
//! transactions from each other (a cancelled transaction restores a copy
//! of the table taken when it started, undoing what others committed
//! meanwhile), while DynamoDB runs each request atomically. So the clients
//! here send one request at a time through a gate: the relay tasks still
//! interleave freely between requests (several load the same version,
//! handle it, and race their conditional saves), which is the race under
//! test.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use qdn_relay_core::testing::{CountingStore, RecordingProvider};
use qdn_relay_core::{
    DashboardAction, Dispatch, DispatchId, EventKind, InboundText, ManualClock, Outcome,
    PhoneNumber, Policy, Purpose, Relay, State, Store, Timestamp,
};
use qdn_relay_dynamo::DynamoStore;
use tokio::sync::{Barrier, Mutex};

use crate::common::{client, fresh, sid};

/// An HTTP client that lets one request through at a time.
#[derive(Debug, Clone)]
struct OneAtATime {
    inner: SharedHttpClient,
    gate: Arc<Mutex<()>>,
}

impl HttpClient for OneAtATime {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(Gated {
            inner: self.inner.http_connector(settings, components),
            gate: Arc::clone(&self.gate),
        })
    }
}

#[derive(Debug)]
struct Gated {
    inner: SharedHttpConnector,
    gate: Arc<Mutex<()>>,
}

impl HttpConnector for Gated {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        let gate = Arc::clone(&self.gate);
        // The gated section runs on a task of its own: a caller that stops
        // polling its request for a while (a sweep awaiting one dispatch
        // while others are in flight) must not hold the gate meanwhile.
        let call = tokio::spawn(async move {
            let _one = gate.lock().await;
            inner.call(request).await
        });
        HttpConnectorFuture::new(async move {
            call.await
                .unwrap_or_else(|e| panic!("gated request task: {e}"))
        })
    }
}

async fn gated_client(gate: &Arc<Mutex<()>>) -> aws_sdk_dynamodb::Client {
    use aws_smithy_http_client::tls;
    let inner = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https();
    let base = client().await;
    aws_sdk_dynamodb::Client::from_conf(
        base.config()
            .to_builder()
            .http_client(OneAtATime {
                inner,
                gate: Arc::clone(gate),
            })
            .build(),
    )
}

fn n(s: &str) -> PhoneNumber {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

const LINE: &str = "+16195550000";
const PRIMARY: &str = "+16195550101";
const BACKUP: &str = "+18583354807";
const DISPATCHES: usize = 4;
const SWEEPERS: usize = 6;
const ACKERS_PER_DISPATCH: usize = 2;
const ROUNDS: usize = 3;

/// The store counts the saves that lost a race (version conflicts).
type DynRelay = Relay<CountingStore<DynamoStore>, RecordingProvider, ManualClock>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweeps_and_acks_race_and_exactly_one_transition_wins() {
    let base = fresh().await;
    let gate = Arc::new(Mutex::new(()));
    let t0 = Timestamp::from_millis(1_767_603_600_000);
    let clock = Arc::new(ManualClock::new(t0));
    let provider = Arc::new(RecordingProvider::with_clock(clock.clone()));
    // Three relays, each with its own client and store (as three Lambda
    // instances would be), on one table.
    let mut relays: Vec<Arc<DynRelay>> = Vec::new();
    let mut counters = Vec::new();
    for i in 0..3u64 {
        let store = Arc::new(CountingStore::new(DynamoStore::new(
            gated_client(&gate).await,
            base.config().clone(),
        )));
        counters.push(Arc::clone(&store));
        let policy = Policy::simple(n(PRIMARY), n(BACKUP), Duration::from_secs(900))
            .unwrap_or_else(|e| panic!("{e}"));
        relays.push(Arc::new(
            Relay::builder(store, Arc::clone(&provider), Arc::clone(&clock))
                .line(n(LINE), policy)
                .seed(i + 1)
                .build(),
        ));
    }

    let mut all = Vec::new();
    let (mut escalated, mut acked_first) = (0, 0);
    for round in 0..ROUNDS {
        // Open a few dispatches; their forwards to the primary go out.
        let mut ids = Vec::new();
        for i in 0..DISPATCHES {
            let text = InboundText {
                sid: sid(&format!("SMrace{round}x{i}")),
                from: n(&format!("+1619555{round}2{i:02}")),
                to: n(LINE),
                body: format!("help {round}/{i}"),
                media: vec![],
            };
            match relays[i % 3].inbound(text).await {
                Ok(Outcome::Opened(id)) => ids.push(id),
                other => panic!("opening dispatch {i}: {other:?}"),
            }
        }
        // Past the level's timeout: every dispatch is due.
        clock.advance(Duration::from_secs(901));

        let tasks = SWEEPERS + DISPATCHES * ACKERS_PER_DISPATCH;
        let barrier = Arc::new(Barrier::new(tasks));
        let mut sweeps = Vec::new();
        for i in 0..SWEEPERS {
            let relay = Arc::clone(&relays[i % 3]);
            let barrier = Arc::clone(&barrier);
            sweeps.push(tokio::spawn(async move {
                barrier.wait().await;
                relay.sweep().await
            }));
        }
        // Even dispatches: the operators ack within the first few hundred
        // milliseconds of the sweeps, racing the timeout itself. Odd ones:
        // they ack the moment the escalation text to the backup goes out,
        // racing the sweeper that records that send.
        let mut acks = Vec::new();
        for (k, &id) in ids.iter().enumerate() {
            for j in 0..ACKERS_PER_DISPATCH {
                let relay = Arc::clone(&relays[(k + j + 1) % 3]);
                let barrier = Arc::clone(&barrier);
                let provider = Arc::clone(&provider);
                let delay = Duration::from_millis(mix((round * 100 + k * 10 + j) as u64) % 300);
                acks.push(tokio::spawn(async move {
                    barrier.wait().await;
                    if k % 2 == 0 {
                        tokio::time::sleep(delay).await;
                    } else {
                        wait_for_send(&provider, id, n(BACKUP)).await;
                    }
                    relay
                        .dashboard(
                            id,
                            DashboardAction::Ack {
                                by: format!("op-{k}-{j}"),
                            },
                        )
                        .await
                }));
            }
        }
        for t in sweeps {
            let report = t.await.unwrap_or_else(|e| panic!("sweeper: {e}"));
            assert!(
                report.is_ok(),
                "a sweep failed: {:?} {:?}",
                report.errors,
                report.query_error
            );
        }
        for t in acks {
            match t.await.unwrap_or_else(|e| panic!("acker: {e}")) {
                Ok(Outcome::Applied(_) | Outcome::Unchanged(_)) => {}
                other => panic!("an ack failed: {other:?}"),
            }
        }

        for id in ids {
            let d = base
                .get(id)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("dispatch {id} is gone"));
            if check_one_winner(&d) {
                escalated += 1;
            } else {
                acked_first += 1;
            }
            all.push(d);
        }
    }
    check_no_step_sent_twice(&provider, &all);
    let conflicts: u64 = counters.iter().map(|c| c.version_conflicts()).sum();
    eprintln!(
        "race: {escalated} dispatches escalated before the ack, {acked_first} acked at level 0, \
         {conflicts} saves lost a race"
    );
    assert!(
        escalated >= ROUNDS * DISPATCHES / 2,
        "every odd dispatch escalates before its ack"
    );
    assert!(
        conflicts > 0,
        "six sweepers on the same due dispatches must have collided"
    );
}

/// SplitMix64: deterministic spread of the operators' delays.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Waits until the provider accepted a text of dispatch `id` to `to`.
async fn wait_for_send(provider: &RecordingProvider, id: DispatchId, to: PhoneNumber) {
    for _ in 0..6000 {
        if provider
            .accepted_to(to)
            .iter()
            .any(|s| s.message.dispatch == id)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("dispatch {id} never escalated to {to}");
}

/// Checks a dispatch's history: acked exactly once, and either at level 0
/// or after exactly one escalation to level 1; never two forwards for one
/// (round, level). Returns whether it escalated.
fn check_one_winner(d: &Dispatch) -> bool {
    let id = d.id();
    assert_eq!(d.state(), State::Acked, "dispatch {id} ends acked");
    let mut forwards: HashMap<(u32, u32), usize> = HashMap::new();
    let mut order = Vec::new();
    for e in d.events() {
        match &e.kind {
            EventKind::Forwarded { round, level, .. } => {
                *forwards.entry((*round, *level)).or_default() += 1;
                order.push(format!("forwarded {round}/{level}"));
            }
            EventKind::Escalated { from_level, .. } => {
                order.push(format!("escalated {from_level}"))
            }
            EventKind::Acked { .. } => order.push("acked".into()),
            _ => {}
        }
    }
    for (step, count) in &forwards {
        assert_eq!(
            *count, 1,
            "dispatch {id}: step {step:?} forwarded {count} times: {order:?}"
        );
    }
    let acked = ["acked".to_owned()];
    let escalated_then_acked = [
        "forwarded 0/0".to_owned(),
        "escalated 0".to_owned(),
        "forwarded 0/1".to_owned(),
        "acked".to_owned(),
    ];
    if order == ["forwarded 0/0".to_owned(), acked[0].clone()] {
        false
    } else if order == escalated_then_acked {
        true
    } else {
        panic!("dispatch {id}: unexpected history {order:?}");
    }
}

/// At most one accepted send per (dispatch, round, level, target), and per
/// leg.
fn check_no_step_sent_twice(provider: &RecordingProvider, all: &[Dispatch]) {
    let by_id: HashMap<DispatchId, &Dispatch> = all.iter().map(|d| (d.id(), d)).collect();
    let mut steps: HashMap<(DispatchId, u32, u32, PhoneNumber), usize> = HashMap::new();
    let mut legs: HashMap<(DispatchId, u32), usize> = HashMap::new();
    for s in provider.sent() {
        if s.result.is_err() {
            continue;
        }
        let m = &s.message;
        *legs.entry((m.dispatch, m.leg)).or_default() += 1;
        let d = by_id
            .get(&m.dispatch)
            .unwrap_or_else(|| panic!("a send for unknown dispatch {}", m.dispatch));
        let leg = d
            .legs()
            .get(m.leg as usize)
            .unwrap_or_else(|| panic!("dispatch {} has no leg {}", m.dispatch, m.leg));
        if let Purpose::Forward { round, level } = leg.purpose {
            *steps.entry((m.dispatch, round, level, m.to)).or_default() += 1;
        }
    }
    for (step, count) in steps {
        assert_eq!(count, 1, "escalation step {step:?} was sent {count} times");
    }
    for (leg, count) in legs {
        assert_eq!(count, 1, "leg {leg:?} was sent {count} times");
    }
}
