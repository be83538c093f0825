//! The server's sweeper sleeps until the earliest deadline and is woken by
//! a save that sets an earlier one, on tokio's paused clock (virtual time:
//! every instant below is exact, none is measured).

use std::sync::Arc;
use std::time::Duration;

use qdn_relay_app::{DynRelay, HttpConfig};
use qdn_relay_axum::{AppState, EventHub, router};
use qdn_relay_core::testing::RecordingProvider;
use qdn_relay_core::{
    Clock, InboundText, MemoryStore, Policy, Relay, SmsProvider, Store, Timestamp,
};
use qdn_relay_twilio::{Secret, SignatureValidator};

use super::{BACKUP, CUSTOMER, LINE, PRIMARY, TOKEN, n};

const BASE: Timestamp = Timestamp::from_millis(1_767_603_600_000);
const LEVEL: Duration = Duration::from_secs(900);
/// Far longer than the test: only a wake makes the sweeper fire in time.
const SAFETY: Duration = Duration::from_secs(86_400);

/// The wall clock of the relay, following tokio's (paused) clock.
struct TokioClock {
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        BASE.plus(self.start.elapsed())
    }
}

struct Server {
    relay: Arc<DynRelay>,
    provider: Arc<RecordingProvider>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn relay() -> (Arc<DynRelay>, Arc<RecordingProvider>) {
    let clock: Arc<dyn Clock> = Arc::new(TokioClock {
        start: tokio::time::Instant::now(),
    });
    let provider = Arc::new(RecordingProvider::with_clock(Arc::clone(&clock)));
    let policy = Policy::simple(n(PRIMARY), n(BACKUP), LEVEL).expect("policy");
    let relay = Relay::<dyn Store, dyn SmsProvider, dyn Clock>::builder(
        Arc::new(MemoryStore::new()) as Arc<dyn Store>,
        provider.clone() as Arc<dyn SmsProvider>,
        clock,
    )
    .line(n(LINE), policy)
    .seed(1)
    .build();
    (Arc::new(relay), provider)
}

async fn serve(relay: Arc<DynRelay>, provider: Arc<RecordingProvider>) -> Server {
    let state = AppState::new(
        relay.clone(),
        SignatureValidator::new(Secret::new(TOKEN)),
        EventHub::default(),
        HttpConfig::default(),
    )
    .expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(qdn_relay_axum::serve_until(
        listener,
        router(state),
        relay.clone(),
        SAFETY,
        async move {
            let _ = rx.await;
        },
    ));
    Server {
        relay,
        provider,
        stop: Some(tx),
        task,
    }
}

impl Server {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.await.expect("joined").expect("served");
    }
}

async fn open(relay: &DynRelay, i: u32) -> Timestamp {
    let sid = format!("SM{i:032x}").parse().expect("sid");
    relay
        .inbound(InboundText {
            sid,
            from: n(CUSTOMER),
            to: n(LINE),
            body: "the dumpster is on fire".into(),
            media: Vec::new(),
        })
        .await
        .expect("opened");
    relay
        .next_deadline()
        .await
        .expect("query")
        .expect("a deadline")
}

fn backup_texts_at(p: &RecordingProvider) -> Vec<Option<Timestamp>> {
    p.accepted_to(n(BACKUP)).iter().map(|s| s.at).collect()
}

/// A deadline in the store before the server starts: the sweeper sleeps
/// until exactly that instant (its safety net is a day away) and fires it.
#[tokio::test(start_paused = true)]
async fn the_sweeper_sleeps_until_the_earliest_deadline_and_fires_it_then() {
    let (relay, provider) = relay();
    let deadline = open(&relay, 1).await;
    assert_eq!(deadline, BASE.plus(LEVEL));
    let server = serve(relay, provider).await;
    tokio::time::sleep(LEVEL - Duration::from_millis(1)).await;
    assert!(
        backup_texts_at(&server.provider).is_empty(),
        "nothing before the deadline"
    );
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(
        backup_texts_at(&server.provider),
        vec![Some(deadline)],
        "the backup is texted at the deadline"
    );
    server.stop().await;
}

/// The sweeper sleeps on an empty store (until its safety net, a day
/// away); a text opens a dispatch: the save wakes the sweeper, which now
/// sleeps until the new deadline and fires it on the dot.
#[tokio::test(start_paused = true)]
async fn a_save_with_an_earlier_deadline_wakes_the_sleeping_sweeper() {
    let (relay, provider) = relay();
    let server = serve(relay, provider).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let deadline = open(&server.relay, 1).await;
    assert_eq!(deadline, BASE.plus(Duration::from_secs(60) + LEVEL));
    tokio::time::sleep(LEVEL + Duration::from_millis(1)).await;
    assert_eq!(
        backup_texts_at(&server.provider),
        vec![Some(deadline)],
        "the backup is texted at the deadline, not a day later"
    );
    assert!(
        !server.relay.deadline_watch().is_woken(),
        "the wake was taken"
    );
    server.stop().await;
}
