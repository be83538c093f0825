//! How the driver uses the store: the calls each path makes (a customer's
//! first text, a later one, a dispatcher's text, a status callback, a
//! dashboard action, a keyword, a sweep, a job link, the job sync), pinned
//! so a change that adds a round trip shows here — and a stale copy never
//! wins over the store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use qdn_relay_core::{
    Clock, DashboardAction, Dispatch, DispatchId, Due, HistoryPage, InboundLookup, InboundText,
    Input, JobId, ListFilter, ManualClock, MemoryStore, OutboundMessage, Outcome, PhoneNumber,
    Policy, ProviderMessageId, Relay, SendError, SendReceipt, SmsProvider, State, Store,
    StoreError, Tag, Timestamp,
};

fn n(s: &str) -> PhoneNumber {
    s.parse().expect("valid number")
}

const LINE: &str = "+16195550000";
const T0: i64 = 1_767_603_600_000;

/// A [`MemoryStore`] that counts calls by method.
#[derive(Default)]
struct Counting {
    inner: MemoryStore,
    calls: Mutex<BTreeMap<&'static str, u32>>,
    /// Once set, the next `open_by_tag` acks what it found from the
    /// dashboard (as another process might) after reading it: its answer
    /// is stale.
    ack_after_tag_lookup: std::sync::atomic::AtomicBool,
}

impl Counting {
    fn count(&self, name: &'static str) {
        *self
            .calls
            .lock()
            .expect("not poisoned")
            .entry(name)
            .or_default() += 1;
    }

    fn calls(&self, name: &str) -> u32 {
        self.calls
            .lock()
            .expect("not poisoned")
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    fn reset(&self) {
        self.calls.lock().expect("not poisoned").clear();
    }

    /// Every call since the last reset, by method (methods not called are
    /// absent), and resets.
    fn take(&self) -> BTreeMap<&'static str, u32> {
        std::mem::take(&mut *self.calls.lock().expect("not poisoned"))
    }
}

/// The expected calls, by method.
fn calls(expected: &[(&'static str, u32)]) -> BTreeMap<&'static str, u32> {
    expected.iter().copied().collect()
}

#[async_trait]
impl Store for Counting {
    async fn get(&self, id: DispatchId) -> Result<Option<Dispatch>, StoreError> {
        self.count("get");
        self.inner.get(id).await
    }
    async fn save(&self, d: &Dispatch, expected: u64) -> Result<(), StoreError> {
        self.count("save");
        self.inner.save(d, expected).await
    }
    async fn by_inbound_sid(
        &self,
        sid: &ProviderMessageId,
    ) -> Result<Option<Dispatch>, StoreError> {
        self.count("by_inbound_sid");
        self.inner.by_inbound_sid(sid).await
    }
    async fn by_leg_sid(&self, sid: &ProviderMessageId) -> Result<Option<Dispatch>, StoreError> {
        self.count("by_leg_sid");
        self.inner.by_leg_sid(sid).await
    }
    async fn inbound_lookup(
        &self,
        line: PhoneNumber,
        from: PhoneNumber,
        sid: &ProviderMessageId,
    ) -> Result<InboundLookup, StoreError> {
        self.count("inbound_lookup");
        self.inner.inbound_lookup(line, from, sid).await
    }
    async fn open_for_customer(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
    ) -> Result<Option<Dispatch>, StoreError> {
        self.count("open_for_customer");
        self.inner.open_for_customer(line, customer).await
    }
    async fn open_by_tag(&self, tag: Tag) -> Result<Option<Dispatch>, StoreError> {
        self.count("open_by_tag");
        let found = self.inner.open_by_tag(tag).await?;
        if let Some(d) = &found
            && self.ack_after_tag_lookup.swap(false, Ordering::SeqCst)
        {
            let mut d = d.clone();
            let expected = d.version();
            let ack = Input::Dashboard(DashboardAction::Ack { by: "ann".into() });
            let fx = d.handle(d.updated_at(), ack).expect("the ack applies");
            assert!(!fx.is_empty());
            d.set_version(expected + 1);
            self.inner.save(&d, expected).await?;
        }
        Ok(found)
    }
    async fn first_free_tag(&self, candidates: &[Tag]) -> Result<Option<Tag>, StoreError> {
        self.count("first_free_tag");
        self.inner.first_free_tag(candidates).await
    }
    async fn open_for_dispatcher(
        &self,
        dispatcher: PhoneNumber,
        limit: usize,
    ) -> Result<Vec<Dispatch>, StoreError> {
        self.count("open_for_dispatcher");
        self.inner.open_for_dispatcher(dispatcher, limit).await
    }
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Due>, StoreError> {
        self.count("due");
        self.inner.due(now, limit).await
    }
    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        self.count("list");
        self.inner.list(filter, limit).await
    }
    async fn by_job(&self, job: &JobId, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        self.count("by_job");
        self.inner.by_job(job, limit).await
    }

    async fn history(&self, id: DispatchId) -> Result<Vec<HistoryPage>, StoreError> {
        self.count("history");
        self.inner.history(id).await
    }
}

/// Accepts every text; on the first, first does what another process
/// might do meanwhile: acks the dispatch from the dashboard, straight in
/// the store.
struct AckingProvider {
    store: Arc<Counting>,
    clock: Arc<ManualClock>,
    sent: AtomicU64,
}

#[async_trait]
impl SmsProvider for AckingProvider {
    async fn send(&self, _msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
        let i = self.sent.fetch_add(1, Ordering::SeqCst);
        if i == 0 {
            let mut d = self
                .store
                .inner
                .list(ListFilter::Open, 1)
                .await
                .expect("list")
                .pop()
                .expect("the dispatch being sent for");
            let expected = d.version();
            let fx = d
                .handle(
                    self.clock.now(),
                    Input::Dashboard(DashboardAction::Ack { by: "ann".into() }),
                )
                .expect("the ack applies");
            assert!(!fx.is_empty());
            d.set_version(expected + 1);
            self.store.inner.save(&d, expected).await.expect("saved");
        }
        Ok(SendReceipt::new(
            format!("SM{i:032x}").parse().expect("a sid"),
        ))
    }

    fn name(&self) -> &str {
        "acking"
    }
}

fn text(i: u64) -> InboundText {
    InboundText {
        sid: format!("SM{:032x}", 0xabc0_0000_u128 + u128::from(i))
            .parse()
            .expect("a sid"),
        from: format!("+1619{}", 2_000_000 + i).parse().expect("a number"),
        to: n(LINE),
        body: "Need a dumpster".to_owned(),
        media: Vec::new(),
    }
}

fn relay<P: SmsProvider + 'static>(
    store: Arc<Counting>,
    provider: Arc<P>,
    clock: Arc<ManualClock>,
) -> Relay<Counting, P, ManualClock> {
    let policy = Policy::simple(
        n("+16195550101"),
        n("+18583354807"),
        Duration::from_secs(900),
    )
    .expect("policy");
    Relay::builder(store, provider, clock)
        .line(n(LINE), policy)
        .seed(7)
        .build()
}

#[tokio::test]
async fn a_first_text_asks_for_a_tag_once_and_does_not_reload_what_it_saved() {
    let store = Arc::new(Counting::default());
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let provider = Arc::new(qdn_relay_core::testing::RecordingProvider::new());
    let relay = relay(Arc::clone(&store), provider, clock);
    // Enough open dispatches that short tags start to be taken.
    for i in 0..300 {
        relay.inbound(text(i)).await.expect("accepted");
    }
    store.reset();

    let out = relay.inbound(text(1000)).await.expect("accepted");
    let Outcome::Opened(id) = out else {
        panic!("expected a new dispatch, got {out:?}")
    };
    assert_eq!(
        store.calls("inbound_lookup"),
        1,
        "one call to route the text"
    );
    for single in ["open_for_dispatcher", "by_inbound_sid", "open_for_customer"] {
        assert_eq!(store.calls(single), 0, "{single} is in the routing call");
    }
    assert_eq!(store.calls("first_free_tag"), 1, "one call for the tag");
    assert_eq!(store.calls("open_by_tag"), 0, "no probe per candidate");
    assert_eq!(
        store.calls("get"),
        0,
        "the send outcome starts from the dispatch just saved"
    );
    assert_eq!(store.calls("save"), 2, "the new dispatch, then the outcome");
    let d = store.inner.get(id).await.expect("get").expect("stored");
    assert_eq!(d.version(), 2);
    assert!(d.legs()[0].sid.is_some(), "the send outcome was saved");
}

#[tokio::test]
async fn a_send_outcome_on_a_stale_copy_is_rerun_on_the_stored_dispatch() {
    let store = Arc::new(Counting::default());
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let provider = Arc::new(AckingProvider {
        store: Arc::clone(&store),
        clock: Arc::clone(&clock),
        sent: AtomicU64::new(0),
    });
    let relay = relay(Arc::clone(&store), provider, clock);

    let out = relay.inbound(text(1)).await.expect("accepted");
    let Outcome::Opened(id) = out else {
        panic!("expected a new dispatch, got {out:?}")
    };
    let d = store.inner.get(id).await.expect("get").expect("stored");
    assert_eq!(
        d.state(),
        State::Acked,
        "the ack saved meanwhile is not overwritten"
    );
    assert_eq!(
        d.legs()[0].sid.as_ref().map(ProviderMessageId::as_str),
        Some(format!("SM{:032x}", 0).as_str()),
        "the send outcome is recorded on top of it"
    );
    assert_eq!(d.version(), 3, "open, ack, outcome");
    assert_eq!(store.calls("get"), 1, "the conflict reloaded once");
}

// ----- every path's calls -------------------------------------------------

const PRIMARY: &str = "+16195550101";
const BACKUP: &str = "+18583354807";

/// A relay over a counting store, with one dispatch opened by customer 1's
/// first text (its forward to the primary accepted), and the counts reset.
struct Opened {
    store: Arc<Counting>,
    clock: Arc<ManualClock>,
    provider: Arc<qdn_relay_core::testing::RecordingProvider>,
    relay: Relay<Counting, qdn_relay_core::testing::RecordingProvider, ManualClock>,
    id: DispatchId,
}

async fn opened_with(jobs: Option<Arc<qdn_relay_core::testing::MemoryJobs>>) -> Opened {
    let store = Arc::new(Counting::default());
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let provider = Arc::new(qdn_relay_core::testing::RecordingProvider::new());
    let policy = Policy::simple(n(PRIMARY), n(BACKUP), Duration::from_secs(900)).expect("policy");
    let mut builder = Relay::builder(
        Arc::clone(&store),
        Arc::clone(&provider),
        Arc::clone(&clock),
    )
    .line(n(LINE), policy)
    .seed(7);
    if let Some(jobs) = jobs {
        builder = builder.jobs(jobs);
    }
    let relay = builder.build();
    let out = relay.inbound(text(1)).await.expect("accepted");
    let Outcome::Opened(id) = out else {
        panic!("expected a new dispatch, got {out:?}")
    };
    store.reset();
    Opened {
        store,
        clock,
        provider,
        relay,
        id,
    }
}

async fn opened() -> Opened {
    opened_with(None).await
}

fn from(who: &str, body: &str, i: u64) -> InboundText {
    InboundText {
        sid: format!("SM{:032x}", 0xdef0_0000_u128 + u128::from(i))
            .parse()
            .expect("a sid"),
        from: n(who),
        to: n(LINE),
        body: body.to_owned(),
        media: Vec::new(),
    }
}

#[tokio::test]
async fn calls_a_first_text() {
    let store = Arc::new(Counting::default());
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let provider = Arc::new(qdn_relay_core::testing::RecordingProvider::new());
    let relay = relay(Arc::clone(&store), provider, clock);
    relay.inbound(text(1)).await.expect("accepted");
    assert_eq!(
        store.take(),
        calls(&[("first_free_tag", 1), ("inbound_lookup", 1), ("save", 2)]),
        "route, tag, the new dispatch, the send outcome"
    );
}

#[tokio::test]
async fn calls_a_customer_text_joining_their_open_dispatch() {
    let o = opened().await;
    let mut later = text(1);
    later.sid = "SM000000000000000000000000000000ff".parse().expect("a sid");
    later.body = "Also: the gate code is 1234".to_owned();
    assert_eq!(
        o.relay.inbound(later).await.expect("joined"),
        Outcome::Applied(o.id)
    );
    assert_eq!(
        o.store.take(),
        calls(&[("inbound_lookup", 1), ("save", 2)]),
        "route, the text (on the copy found), the follow-up's send outcome"
    );
}

#[tokio::test]
async fn calls_a_repeated_customer_text() {
    let o = opened().await;
    assert_eq!(
        o.relay.inbound(text(1)).await.expect("a repeat"),
        Outcome::Unchanged(o.id)
    );
    assert_eq!(o.store.take(), calls(&[("inbound_lookup", 1)]));
}

#[tokio::test]
async fn calls_a_policy_dispatchers_reply_by_tag() {
    let o = opened().await;
    let tag = o
        .store
        .inner
        .get(o.id)
        .await
        .expect("get")
        .expect("found")
        .tag();
    let reply = from(PRIMARY, &format!("#{tag} on my way"), 1);
    assert_eq!(
        o.relay.inbound(reply).await.expect("routed"),
        Outcome::Applied(o.id)
    );
    assert_eq!(
        o.store.take(),
        calls(&[("by_inbound_sid", 1), ("open_by_tag", 1), ("save", 2)]),
        "repeat?, route by tag, the reply (on the copy found), its send outcome"
    );
}

#[tokio::test]
async fn calls_a_policy_dispatchers_reply_to_their_only_dispatch() {
    let o = opened().await;
    let reply = from(PRIMARY, "on my way", 1);
    assert_eq!(
        o.relay.inbound(reply).await.expect("routed"),
        Outcome::Applied(o.id)
    );
    assert_eq!(
        o.store.take(),
        calls(&[
            ("by_inbound_sid", 1),
            ("open_for_dispatcher", 1),
            ("save", 2)
        ]),
        "repeat?, route, the reply (on the copy found), its send outcome"
    );
}

#[tokio::test]
async fn calls_a_notified_dispatcher_outside_the_lines_policy() {
    // The dispatch was opened under a policy whose primary is PRIMARY; the
    // line's policy now names someone else, so PRIMARY is a dispatcher
    // only because they were texted about the dispatch.
    let o = opened().await;
    let policy =
        Policy::simple(n("+16195550177"), n(BACKUP), Duration::from_secs(900)).expect("policy");
    let relay = Relay::builder(
        Arc::clone(&o.store),
        Arc::clone(&o.provider),
        Arc::clone(&o.clock),
    )
    .line(n(LINE), policy)
    .build();
    let reply = from(PRIMARY, "ACK", 1);
    assert_eq!(
        relay.inbound(reply).await.expect("routed"),
        Outcome::Applied(o.id)
    );
    assert_eq!(
        o.store.take(),
        calls(&[
            ("inbound_lookup", 1),
            ("open_for_dispatcher", 1),
            ("save", 1)
        ]),
        "route (a dispatcher, not a repeat), route to the dispatch, the ack (on the copy found)"
    );
}

#[tokio::test]
async fn calls_a_status_callback() {
    let o = opened().await;
    let sid = o.provider.sent()[0].result.clone().expect("accepted");
    let report = qdn_relay_core::DeliveryReport {
        sid,
        status: qdn_relay_core::DeliveryStatus::Delivered,
        error: None,
    };
    assert_eq!(
        o.relay.delivery(report.clone()).await.expect("applied"),
        Outcome::Applied(o.id)
    );
    assert_eq!(
        o.store.take(),
        calls(&[("by_leg_sid", 1), ("save", 1)]),
        "find the leg, the status (on the copy found)"
    );
    assert_eq!(
        o.relay.delivery(report).await.expect("a repeat"),
        Outcome::Unchanged(o.id)
    );
    assert_eq!(
        o.store.take(),
        calls(&[("by_leg_sid", 1), ("get", 1)]),
        "a repeated callback is not saved; that it changes nothing is decided on a fresh load"
    );
}

#[tokio::test]
async fn calls_a_status_callback_naming_its_leg() {
    let o = opened().await;
    let sid = o.provider.sent()[0].result.clone().expect("accepted");
    let report = qdn_relay_core::DeliveryReport {
        sid,
        status: qdn_relay_core::DeliveryStatus::Delivered,
        error: None,
    };
    assert_eq!(
        o.relay
            .leg_delivery(report, o.id, 0)
            .await
            .expect("applied"),
        Outcome::Applied(o.id)
    );
    assert_eq!(
        o.store.take(),
        calls(&[("by_leg_sid", 1), ("save", 1)]),
        "find the leg, the status (on the copy found)"
    );
}

#[tokio::test]
async fn calls_a_dashboard_ack() {
    let o = opened().await;
    let action = DashboardAction::Ack { by: "ann".into() };
    assert_eq!(
        o.relay.dashboard(o.id, action).await.expect("applied"),
        Outcome::Applied(o.id)
    );
    assert_eq!(o.store.take(), calls(&[("get", 1), ("save", 1)]));
}

#[tokio::test]
async fn calls_a_customers_stop() {
    let o = opened().await;
    let stop = from("+16192000001", "STOP", 1);
    o.relay.inbound(stop).await.expect("recorded");
    assert_eq!(
        o.store.take(),
        calls(&[
            ("open_for_customer", 1),
            ("open_for_dispatcher", 1),
            ("save", 2)
        ]),
        "their dispatches as customer and as dispatcher, the opt-out (on the copy found), \
         the notice's send outcome"
    );
}

#[tokio::test]
async fn calls_a_sweep_that_escalates() {
    let o = opened().await;
    o.clock.set(Timestamp::from_millis(T0 + 900_000));
    let report = o.relay.sweep().await;
    assert_eq!((report.fired, report.unchanged), (1, 0));
    assert_eq!(
        o.store.take(),
        calls(&[("due", 1), ("get", 1), ("save", 2)]),
        "due, load, the escalation, its send outcome"
    );
}

#[tokio::test]
async fn calls_a_job_link() {
    let o = opened().await;
    let job: JobId = "J-1".parse().expect("a job id");
    assert_eq!(
        o.relay.link_job(o.id, job).await.expect("linked"),
        Outcome::Applied(o.id)
    );
    assert_eq!(o.store.take(), calls(&[("get", 1), ("save", 1)]));
}

#[tokio::test]
async fn calls_a_first_text_with_a_job_system() {
    let store = Arc::new(Counting::default());
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let provider = Arc::new(qdn_relay_core::testing::RecordingProvider::new());
    let policy = Policy::simple(n(PRIMARY), n(BACKUP), Duration::from_secs(900)).expect("policy");
    let jobs = Arc::new(qdn_relay_core::testing::MemoryJobs::new());
    let job: JobId = "J-1".parse().expect("a job id");
    jobs.open_job(n(LINE), text(1).from, job.clone());
    let relay = Relay::builder(Arc::clone(&store), provider, clock)
        .line(n(LINE), policy)
        .jobs(jobs.clone())
        .seed(7)
        .build();
    relay.inbound(text(1)).await.expect("accepted");
    assert_eq!(
        store.take(),
        calls(&[("first_free_tag", 1), ("inbound_lookup", 1), ("save", 3)]),
        "route, tag, the new dispatch, the send outcome, the job cursor (from the copy saved)"
    );
    assert_eq!(jobs.job(&job).expect("the job").messages.len(), 2);
}

#[tokio::test]
async fn calls_a_customer_text_joining_with_a_job_system() {
    let jobs = Arc::new(qdn_relay_core::testing::MemoryJobs::new());
    jobs.open_job(n(LINE), text(1).from, "J-1".parse().expect("a job id"));
    let o = opened_with(Some(jobs)).await;
    let mut later = text(1);
    later.sid = "SM000000000000000000000000000000ff".parse().expect("a sid");
    o.relay.inbound(later).await.expect("joined");
    assert_eq!(
        o.store.take(),
        calls(&[("inbound_lookup", 1), ("save", 3)]),
        "route, the text, the follow-up's send outcome, the job cursor: each on the copy in hand"
    );
}

#[tokio::test]
async fn a_dispatchers_text_on_a_stale_copy_is_rerun_on_the_stored_dispatch() {
    let o = opened().await;
    let before = o.store.inner.get(o.id).await.expect("get").expect("found");
    o.store.ack_after_tag_lookup.store(true, Ordering::SeqCst);
    let text = from(PRIMARY, &format!("#{} PASS", before.tag()), 1);
    assert_eq!(
        o.relay.inbound(text).await.expect("routed"),
        Outcome::Applied(o.id)
    );
    let d = o.store.inner.get(o.id).await.expect("get").expect("found");
    assert_eq!(
        d.version(),
        before.version() + 3,
        "the ack, the PASS (ignored, with a notice), the notice's send outcome"
    );
    assert_eq!(d.state(), State::Acked, "the ack saved meanwhile stands");
    assert_eq!(d.level(), 0, "a PASS after an ack does not escalate");
    assert!(
        d.events()
            .iter()
            .any(|e| matches!(&e.kind, qdn_relay_core::EventKind::Ignored { reason } if reason.contains("PASS"))),
        "the PASS was applied to the stored dispatch"
    );
    assert_eq!(
        o.store.calls("get"),
        1,
        "the conflict reloaded once, then nothing else"
    );
}
