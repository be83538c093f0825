//! The `Timers` port and `Relay::fire`: every new deadline is handed to
//! the host's timer service; timers that are duplicated, re-ordered, early,
//! stale or lost never make a deadline fire twice or not at all.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use qdn_relay_core::testing::RecordingProvider;
use qdn_relay_core::{
    Clock, DispatchId, InboundText, ManualClock, MemoryStore, OUTBOX_GRACE, Outcome, PhoneNumber,
    Policy, Relay, RelayError, Store, TimerError, Timers, Timestamp,
};

const T0: Timestamp = Timestamp::from_millis(1_767_603_600_000);
const LEVEL: Duration = Duration::from_secs(900);

fn n(s: &str) -> PhoneNumber {
    s.parse().expect("number")
}

const LINE: &str = "+16195550000";
const CUSTOMER: &str = "+16195550100";
const PRIMARY: &str = "+16195550101";
const BACKUP: &str = "+18583354807";

/// Records every timer asked for; fails every call when told to.
#[derive(Default)]
struct TimerQueue {
    scheduled: Mutex<Vec<(DispatchId, Timestamp)>>,
    down: bool,
}

#[async_trait]
impl Timers for TimerQueue {
    async fn scheduled(&self, id: DispatchId, at: Timestamp) -> Result<(), TimerError> {
        if self.down {
            return Err(TimerError("the queue is unreachable".into()));
        }
        self.scheduled.lock().expect("lock").push((id, at));
        Ok(())
    }
}

struct Setup {
    relay: Relay<MemoryStore, RecordingProvider, ManualClock>,
    clock: Arc<ManualClock>,
    provider: Arc<RecordingProvider>,
    timers: Arc<TimerQueue>,
}

fn setup(down: bool) -> Setup {
    let clock = Arc::new(ManualClock::new(T0));
    let provider = Arc::new(RecordingProvider::with_clock(clock.clone()));
    let timers = Arc::new(TimerQueue {
        down,
        ..TimerQueue::default()
    });
    let relay = Relay::builder(
        Arc::new(MemoryStore::new()),
        provider.clone(),
        clock.clone(),
    )
    .line(
        n(LINE),
        Policy::simple(n(PRIMARY), n(BACKUP), LEVEL).expect("policy"),
    )
    .timers(timers.clone())
    .seed(7)
    .build();
    Setup {
        relay,
        clock,
        provider,
        timers,
    }
}

async fn open(s: &Setup) -> DispatchId {
    let out = s
        .relay
        .inbound(InboundText {
            sid: "SM0123456789abcdef0123456789abcdef".parse().expect("sid"),
            from: n(CUSTOMER),
            to: n(LINE),
            body: "the bin is on fire".into(),
            media: Vec::new(),
        })
        .await
        .expect("opened");
    let Outcome::Opened(id) = out else {
        panic!("{out:?}")
    };
    id
}

fn backup_texts(s: &Setup) -> usize {
    s.provider.accepted_to(n(BACKUP)).len()
}

#[tokio::test]
async fn every_new_deadline_is_handed_to_the_timers_once() {
    let s = setup(false);
    let id = open(&s).await;
    assert_eq!(
        *s.timers.scheduled.lock().expect("lock"),
        vec![(id, T0.plus(OUTBOX_GRACE)), (id, T0.plus(LEVEL))],
        "the outbox's grace while the text is pending, then the level's \
         deadline once the text is sent; each once"
    );
    s.clock.set(T0.plus(LEVEL));
    assert_eq!(s.relay.fire(id).await.expect("fired"), Outcome::Applied(id));
    let scheduled = s.timers.scheduled.lock().expect("lock").clone();
    assert_eq!(
        scheduled.last(),
        Some(&(id, T0.plus(LEVEL).plus(LEVEL))),
        "the backup's deadline: {scheduled:?}"
    );
    assert_eq!(backup_texts(&s), 1);
}

#[tokio::test]
async fn duplicated_reordered_and_early_timers_fire_each_deadline_once() {
    let s = setup(false);
    let id = open(&s).await;
    // Early (a re-ordered timer of a later deadline, or a clock skew).
    s.clock.set(T0.plus(LEVEL - Duration::from_secs(1)));
    assert_eq!(s.relay.fire(id).await.expect("ok"), Outcome::Unchanged(id));
    assert_eq!(backup_texts(&s), 0, "nothing before the deadline");
    // On time, then the same message delivered again (SQS is at least
    // once).
    s.clock.set(T0.plus(LEVEL));
    assert_eq!(s.relay.fire(id).await.expect("ok"), Outcome::Applied(id));
    assert_eq!(s.relay.fire(id).await.expect("ok"), Outcome::Unchanged(id));
    assert_eq!(backup_texts(&s), 1, "the backup is texted once");
    // The first level's timer again, late and out of order: stale.
    s.clock.set(T0.plus(LEVEL).plus(Duration::from_secs(5)));
    assert_eq!(s.relay.fire(id).await.expect("ok"), Outcome::Unchanged(id));
    assert_eq!(backup_texts(&s), 1);
    // And a sweep at the same instant agrees: nothing is due.
    assert_eq!(s.relay.sweep().await.fired, 0);
}

#[tokio::test]
async fn a_timer_for_a_save_that_never_happened_does_nothing() {
    // Enqueued, then the process died before the save: the message names a
    // dispatch that does not exist, or a deadline it never had.
    let s = setup(false);
    let ghost = DispatchId::from_u128(42);
    assert!(matches!(
        s.relay.fire(ghost).await,
        Err(RelayError::NotFound(_))
    ));
    let id = open(&s).await;
    s.clock.set(T0.plus(Duration::from_secs(60)));
    assert_eq!(s.relay.fire(id).await.expect("ok"), Outcome::Unchanged(id));
    assert_eq!(backup_texts(&s), 0);
    let d = s.relay.store().get(id).await.expect("get").expect("stored");
    assert_eq!(d.level(), 0, "the dispatch did not move");
}

#[tokio::test]
async fn a_save_whose_timer_was_lost_is_fired_by_the_safety_net_sweep_once() {
    let s = setup(true);
    let id = open(&s).await;
    assert!(
        s.timers.scheduled.lock().expect("lock").is_empty(),
        "the queue was down"
    );
    let d = s.relay.store().get(id).await.expect("get").expect("saved");
    assert_eq!(
        d.next_deadline(),
        Some(T0.plus(LEVEL)),
        "saved all the same"
    );
    // The slower schedule's sweep, a minute late, finds it.
    s.clock.set(T0.plus(LEVEL).plus(Duration::from_secs(60)));
    let r = s.relay.sweep().await;
    assert_eq!((r.fired, r.errors.len()), (1, 0));
    assert_eq!(r.lateness, vec![Duration::from_secs(60)]);
    assert_eq!(backup_texts(&s), 1);
    assert_eq!(s.relay.sweep().await.fired, 0, "and only once");
    assert_eq!(
        s.relay.clock().now(),
        T0.plus(LEVEL).plus(Duration::from_secs(60))
    );
}
