//! How the driver uses the store on the hot path (a customer's first text):
//! one call to route it, one for a free tag, no reload of a dispatch it has just saved — and
//! a stale copy never wins over the store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use qdn_relay_core::{
    Clock, DashboardAction, Dispatch, DispatchId, Due, InboundLookup, InboundText, Input, JobId,
    ListFilter, ManualClock, MemoryStore, OutboundMessage, Outcome, PhoneNumber, Policy,
    ProviderMessageId, Relay, SendError, SendReceipt, SmsProvider, State, Store, StoreError, Tag,
    Timestamp,
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
        self.inner.open_by_tag(tag).await
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
        Ok(SendReceipt {
            sid: format!("SM{i:032x}").parse().expect("a sid"),
        })
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
    let provider = Arc::new(qdn_relay_core::RecordingProvider::new());
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
