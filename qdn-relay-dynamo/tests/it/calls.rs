//! What an inbound text costs in DynamoDB requests: the store's
//! `inbound_lookup` and `first_free_tag` against the trait's defaults (the
//! single lookups one after another) over the same table, and a whole
//! first text through the relay. The counts are the ones the crate docs
//! give ("An inbound text"); a change that adds a request fails here.
//!
//! Every request is logged by the HTTP client under the client (its
//! operation, from `X-Amz-Target`). A request that starts while another is
//! in flight shares that one's round trip; one that starts with none in
//! flight begins a new round trip. Nothing here measures time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use qdn_relay_core::testing::RecordingProvider;
use qdn_relay_core::testing::contract::fixture;
use qdn_relay_core::{
    Dispatch, DispatchId, Due, HistoryPage, InboundText, JobId, ListFilter, ManualClock, Outcome,
    PhoneNumber, Policy, ProviderMessageId, Relay, Store, StoreError, Tag, Timestamp,
};
use qdn_relay_dynamo::{DynamoConfig, DynamoStore, create_table};

use crate::common::{client, sid, unique_table};

/// The requests sent so far: (operation, round trip).
#[derive(Debug, Default)]
struct Log {
    requests: Mutex<Vec<(String, usize)>>,
    in_flight: AtomicUsize,
    rounds: AtomicUsize,
}

impl Log {
    /// Forgets what was logged.
    fn clear(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.rounds.store(0, Ordering::SeqCst);
    }

    /// The operations sent since the last `clear`, each round trip's sorted
    /// by name, round trips in order.
    fn take(&self) -> Vec<Vec<String>> {
        let mut g = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let mut rounds: Vec<Vec<String>> = Vec::new();
        for (op, round) in g.drain(..) {
            if rounds.len() < round {
                rounds.resize(round, Vec::new());
            }
            rounds[round - 1].push(op);
        }
        for r in &mut rounds {
            r.sort();
        }
        self.rounds.store(0, Ordering::SeqCst);
        rounds
    }
}

/// An HTTP client that logs every request into a [`Log`].
#[derive(Debug, Clone)]
struct Logging {
    inner: SharedHttpClient,
    log: Arc<Log>,
}

impl HttpClient for Logging {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(Logged {
            inner: self.inner.http_connector(settings, components),
            log: Arc::clone(&self.log),
        })
    }
}

#[derive(Debug)]
struct Logged {
    inner: SharedHttpConnector,
    log: Arc<Log>,
}

impl HttpConnector for Logged {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let op = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or("?")
            .to_owned();
        let log = Arc::clone(&self.log);
        {
            let mut g = log.requests.lock().unwrap_or_else(|e| e.into_inner());
            if log.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
                log.rounds.fetch_add(1, Ordering::SeqCst);
            }
            g.push((op, log.rounds.load(Ordering::SeqCst)));
        }
        let call = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let r = call.await;
            log.in_flight.fetch_sub(1, Ordering::SeqCst);
            r
        })
    }
}

/// A store on a new table whose client logs its requests.
async fn logged_store() -> (DynamoStore, Arc<Log>) {
    use aws_smithy_http_client::tls;
    let inner = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https();
    let log = Arc::new(Log::default());
    let base = client().await;
    let logged = aws_sdk_dynamodb::Client::from_conf(
        base.config()
            .to_builder()
            .http_client(Logging {
                inner,
                log: Arc::clone(&log),
            })
            .build(),
    );
    let config = DynamoConfig::new(unique_table());
    create_table(&base, &config)
        .await
        .unwrap_or_else(|e| panic!("create table {}: {e}", config.table));
    (DynamoStore::new(logged, config), log)
}

/// The store with the trait's default `inbound_lookup` and
/// `first_free_tag` (what the store cost before it overrode them).
struct Defaults(DynamoStore);

#[async_trait::async_trait]
impl Store for Defaults {
    async fn get(&self, id: DispatchId) -> Result<Option<Dispatch>, StoreError> {
        self.0.get(id).await
    }
    async fn save(&self, d: &Dispatch, expected: u64) -> Result<(), StoreError> {
        self.0.save(d, expected).await
    }
    async fn by_inbound_sid(
        &self,
        sid: &ProviderMessageId,
    ) -> Result<Option<Dispatch>, StoreError> {
        self.0.by_inbound_sid(sid).await
    }
    async fn by_leg_sid(&self, sid: &ProviderMessageId) -> Result<Option<Dispatch>, StoreError> {
        self.0.by_leg_sid(sid).await
    }
    async fn open_for_customer(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
    ) -> Result<Option<Dispatch>, StoreError> {
        self.0.open_for_customer(line, customer).await
    }
    async fn open_by_tag(&self, tag: Tag) -> Result<Option<Dispatch>, StoreError> {
        self.0.open_by_tag(tag).await
    }
    async fn open_for_dispatcher(
        &self,
        dispatcher: PhoneNumber,
        limit: usize,
    ) -> Result<Vec<Dispatch>, StoreError> {
        self.0.open_for_dispatcher(dispatcher, limit).await
    }
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Due>, StoreError> {
        self.0.due(now, limit).await
    }
    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        self.0.list(filter, limit).await
    }
    async fn by_job(&self, job: &JobId, limit: usize) -> Result<Vec<Dispatch>, StoreError> {
        self.0.by_job(job, limit).await
    }

    async fn history(&self, id: DispatchId) -> Result<Vec<HistoryPage>, StoreError> {
        self.0.history(id).await
    }
}

fn n(s: &str) -> PhoneNumber {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn tag(s: &str) -> Tag {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Operation names, one round trip each.
fn ops(rounds: &[&[&str]]) -> Vec<Vec<String>> {
    rounds
        .iter()
        .map(|r| {
            let mut r: Vec<String> = r.iter().map(|&s| s.to_owned()).collect();
            r.sort();
            r
        })
        .collect()
}

// The contract fixtures' line, dispatcher and customers.
const LINE: &str = "+16195550000";
const PRIMARY: &str = "+16195550101";
const CUSTOMER: &str = "+16195550100";
const STRANGER: &str = "+16195550177";

#[tokio::test]
async fn the_lookups_of_a_text_take_one_round_trip_and_the_tag_one_request() {
    let (store, log) = logged_store().await;
    let defaults = Defaults(store.clone());
    // An open dispatch (tag K7, forwarded to PRIMARY) and another (B8).
    let d = fixture(1, "K7", CUSTOMER, "SMin1", 0);
    store.save(&d, 0).await.expect("save K7");
    let b8 = fixture(2, "B8", "+16195550111", "SMin2", 1);
    store.save(&b8, 0).await.expect("save B8");
    log.clear();

    let line = n(LINE);
    // (who, sid, what the lookup finds, calls now, calls with the defaults)
    type Case<'a> = (
        &'a str,
        &'a str,
        (bool, bool, bool),
        Vec<Vec<String>>,
        Vec<Vec<String>>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            STRANGER,
            "SMfirst",
            (false, false, false),
            ops(&[&["BatchGetItem", "Query"]]),
            ops(&[&["Query"], &["GetItem"], &["GetItem"]]),
        ),
        (
            CUSTOMER,
            "SMnext",
            (false, false, true),
            ops(&[&["BatchGetItem", "Query"], &["BatchGetItem"]]),
            ops(&[&["Query"], &["GetItem"], &["GetItem"], &["GetItem"]]),
        ),
        (
            CUSTOMER,
            "SMin1",
            (false, true, true),
            ops(&[&["BatchGetItem", "Query"], &["BatchGetItem"]]),
            ops(&[
                &["Query"],
                &["GetItem"],
                &["GetItem"],
                &["GetItem"],
                &["GetItem"],
            ]),
        ),
        (
            PRIMARY,
            "SMack",
            (true, false, false),
            ops(&[&["BatchGetItem", "Query"], &["BatchGetItem"]]),
            ops(&[&["Query"], &["BatchGetItem"], &["GetItem"], &["GetItem"]]),
        ),
    ];
    for (from, in_sid, want, now, before) in cases {
        let (from, in_sid) = (n(from), sid(in_sid));
        let got = store
            .inbound_lookup(line, from, &in_sid)
            .await
            .expect("inbound_lookup");
        assert_eq!(log.take(), now, "inbound_lookup({from}, {in_sid})");
        let single = defaults
            .inbound_lookup(line, from, &in_sid)
            .await
            .expect("default inbound_lookup");
        assert_eq!(
            log.take(),
            before,
            "default inbound_lookup({from}, {in_sid})"
        );
        assert_eq!(got, single, "inbound_lookup({from}, {in_sid})");
        let found = (got.notified, got.repeated.is_some(), got.open.is_some());
        assert_eq!(found, want, "inbound_lookup({from}, {in_sid})");
    }

    // A new dispatch's tag: K7 and B8 are held, C9 is free.
    let candidates = [tag("K7"), tag("B8"), tag("C9"), tag("D2")];
    assert_eq!(
        store.first_free_tag(&candidates).await.expect("tag"),
        Some(tag("C9"))
    );
    assert_eq!(log.take(), ops(&[&["BatchGetItem"]]));
    assert_eq!(
        defaults.first_free_tag(&candidates).await.expect("tag"),
        Some(tag("C9"))
    );
    assert_eq!(
        log.take(),
        ops(&[
            &["GetItem"],
            &["GetItem"],
            &["GetItem"],
            &["GetItem"],
            &["GetItem"]
        ]),
        "two reads per held candidate (tag item, dispatch), one for the free one"
    );

    // The driver's 32 candidates, every one held but the last: still one
    // request (the defaults would make 63).
    for i in 1..=100u32 {
        let d = fixture(
            u128::from(100 + i),
            &format!("Q{i}"),
            &format!("+1619555{:04}", 2000 + i),
            &format!("SMq{i}"),
            2,
        );
        store.save(&d, 0).await.expect("save");
    }
    log.clear();
    let mut driver: Vec<Tag> = (1..=31).map(|i| tag(&format!("Q{i}"))).collect();
    driver.push(tag("Z5"));
    assert_eq!(
        store.first_free_tag(&driver).await.expect("tag"),
        Some(tag("Z5"))
    );
    assert_eq!(log.take(), ops(&[&["BatchGetItem"]]));
    // More than 100 distinct candidates: a second batch only when the first
    // 100 are all held; a candidate asked twice is read once.
    let mut many: Vec<Tag> = (1..=100).map(|i| tag(&format!("Q{i}"))).collect();
    many.extend([tag("Q3"), tag("Z5"), tag("Z6")]);
    assert_eq!(
        store.first_free_tag(&many).await.expect("tag"),
        Some(tag("Z5"))
    );
    assert_eq!(log.take(), ops(&[&["BatchGetItem"], &["BatchGetItem"]]));
    many.insert(40, tag("Z7"));
    assert_eq!(
        store.first_free_tag(&many).await.expect("tag"),
        Some(tag("Z7"))
    );
    assert_eq!(
        log.take(),
        ops(&[&["BatchGetItem"]]),
        "a free one among the first 100"
    );
    assert_eq!(store.first_free_tag(&[]).await.expect("tag"), None);
    assert!(log.take().is_empty(), "no candidates, no request");
}

/// Every DynamoDB request of a customer's first text through the relay
/// (nothing sent before; the opt-outs and rate limits are the relay's
/// in-memory ones, so every request is the store's).
async fn first_text<S: Store + 'static>(store: S, log: &Log) -> Vec<Vec<String>> {
    let t0 = Timestamp::from_millis(1_767_603_600_000);
    let clock = Arc::new(ManualClock::new(t0));
    let provider = Arc::new(RecordingProvider::with_clock(clock.clone()));
    let policy = Policy::simple(n(PRIMARY), n("+18583354807"), Duration::from_secs(900))
        .unwrap_or_else(|e| panic!("{e}"));
    let relay = Relay::builder(Arc::new(store), provider, clock)
        .line(n(LINE), policy)
        .seed(7)
        .build();
    log.clear();
    let text = InboundText {
        sid: sid("SMfirst"),
        from: n(STRANGER),
        to: n(LINE),
        body: "the gate is stuck".into(),
        media: vec![],
    };
    match relay.inbound(text).await {
        Ok(Outcome::Opened(_)) => {}
        other => panic!("first text: {other:?}"),
    }
    log.take()
}

#[tokio::test]
async fn a_first_text_through_the_relay() {
    let (store, log) = logged_store().await;
    // The lookups (one round trip), the tag, the new dispatch, the forward's
    // outcome.
    assert_eq!(
        first_text(store, &log).await,
        ops(&[
            &["BatchGetItem", "Query"],
            &["BatchGetItem"],
            &["TransactWriteItems"],
            &["TransactWriteItems"],
        ])
    );
    // With the defaults: three lookups and a tag read one after another.
    let (store, log) = logged_store().await;
    assert_eq!(
        first_text(Defaults(store), &log).await,
        ops(&[
            &["Query"],
            &["GetItem"],
            &["GetItem"],
            &["GetItem"],
            &["TransactWriteItems"],
            &["TransactWriteItems"],
        ])
    );
}
