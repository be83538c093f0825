//! AWS SMS's two-way texts and delivery events with SNS as the function's
//! event source: [`handle_sns`] driven with Lambda's SNS event JSON
//! (`tests/fixtures/sns-event.json`, AWS's documented sample) carrying AWS
//! SMS's documented payloads, signed with a certificate the test makes,
//! over the in-memory store and a recording provider.

use std::sync::Arc;

use qdn_relay_app::{Backend, DynRelay, RelaySettings, Wiring};
use qdn_relay_aws_sms::CertCache;
use qdn_relay_aws_sms::testing::{FixedCerts, SMS_EVENT, SnsSigner, TWO_WAY_SMS};
use qdn_relay_core::testing::{MockStore, RecordingProvider};
use qdn_relay_core::{
    DeliveryStatus, ManualClock, MemoryStore, PhoneNumber, State, StoreError, Timestamp,
};
use qdn_relay_lambda::{SnsEvent, SnsReport, SnsSource, SnsSourceError, handle_sns, is_sns_event};
use serde_json::{Value, json};

use crate::fixtures::{self, BACKUP, CUSTOMER, LINE, PRIMARY};

const AWS_NUMBER: &str = "+16195550900";
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:sns-lambda";
const CERT_URL: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-ac565b8b1a6c5d002d285f9598aa1d9b.pem";

struct Harness {
    relay: Arc<DynRelay>,
    provider: Arc<RecordingProvider>,
    source: SnsSource,
    signer: SnsSigner,
    certs: Arc<FixedCerts>,
}

/// The settings as the function reads them from its environment.
fn settings() -> RelaySettings {
    let pairs: Vec<(String, String)> = [
        ("QDN_TWILIO_NUMBER", LINE),
        ("RELAY_CHAIN", &*format!("{PRIMARY},{BACKUP}")),
        ("RELAY_ACK_TIMEOUT", "15m"),
        ("TWILIO_AUTH_TOKEN", "fixture-twilio-auth-token"),
        ("QDN_AWS_SMS_NUMBER", AWS_NUMBER),
        ("QDN_AWS_SMS_SNS_TOPICS", TOPIC),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        ),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    RelaySettings::from_lookup(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .expect("settings")
}

fn relay_over(backend: Backend, provider: Arc<RecordingProvider>) -> Arc<DynRelay> {
    let settings = settings();
    Wiring::new(
        &settings,
        backend
            .with_opt_outs(Arc::new(qdn_relay_core::MemoryOptOuts::new()))
            .with_rate_limiter(Arc::new(qdn_relay_core::MemoryRateLimiter::new())),
        provider,
    )
    .clock(Arc::new(ManualClock::new(Timestamp::from_millis(
        1_795_537_205_000,
    ))))
    .build()
}

fn harness() -> Harness {
    let store = Arc::new(MemoryStore::new());
    let provider = Arc::new(RecordingProvider::new());
    let relay = relay_over(Backend::new(store.clone()), provider.clone());
    let signer = SnsSigner::new();
    let certs = FixedCerts::serving(CERT_URL, &signer.cert_pem);
    let source = SnsSource::new(vec![TOPIC.to_owned()], CertCache::new(certs.clone()));
    Harness {
        relay,
        provider,
        source,
        signer,
        certs,
    }
}

impl Harness {
    /// The dispatch `d` as the store holds it now.
    async fn now(&self, d: &qdn_relay_core::Dispatch) -> qdn_relay_core::Dispatch {
        self.relay
            .find(&d.id().to_string())
            .await
            .expect("find")
            .expect("dispatch")
    }
}

fn n(s: &str) -> PhoneNumber {
    s.parse().expect("number")
}

/// Lambda's SNS event carrying `message` as message `id`, signed.
fn event(signer: &SnsSigner, id: &str, message: &Value) -> Value {
    let mut e = fixtures::load("sns-event.json");
    let sns = &mut e["Records"][0]["Sns"];
    sns["MessageId"] = id.into();
    sns["Message"] = message.to_string().into();
    sns["SignatureVersion"] = "2".into();
    signer.sign_message(sns);
    e
}

fn two_way(from: &str, id: &str, body: &str) -> Value {
    let mut t: Value = serde_json::from_str(TWO_WAY_SMS).expect("fixture");
    t["originationNumber"] = from.into();
    t["destinationNumber"] = AWS_NUMBER.into();
    t["inboundMessageId"] = id.into();
    t["messageBody"] = body.into();
    t
}

async fn run(h: &Harness, e: Value) -> Result<SnsReport, SnsSourceError> {
    assert!(is_sns_event(&e), "{e}");
    let e: SnsEvent = serde_json::from_value(e).expect("an SNS event");
    handle_sns(&h.relay, Some(&h.source), e).await
}

/// A customer's text, forwarded to the primary.
async fn open(h: &Harness) -> qdn_relay_core::Dispatch {
    let text = qdn_relay_core::InboundText {
        sid: "SM0f1e2d3c4b5a69788796a5b4c3d2e1f0".parse().expect("sid"),
        from: n(CUSTOMER),
        to: n(LINE),
        body: "Need a dumpster Friday".into(),
        media: Vec::new(),
    };
    h.relay.inbound(text).await.expect("inbound");
    assert_eq!(h.provider.accepted_to(n(PRIMARY)).len(), 1);
    h.relay
        .find("SM0f1e2d3c4b5a69788796a5b4c3d2e1f0")
        .await
        .expect("find")
        .expect("the dispatch")
}

#[test]
fn only_sns_records_are_taken_for_sns() {
    assert!(is_sns_event(&fixtures::load("sns-event.json")));
    assert!(!is_sns_event(&fixtures::load("eventbridge-scheduled.json")));
    let sqs = json!({"Records": [{"messageId": "m1", "eventSource": "aws:sqs", "body": "{}"}]});
    assert!(!is_sns_event(&sqs));
    assert!(!is_sns_event(&json!({"Records": []})));
}

#[tokio::test]
async fn a_dispatchers_text_to_the_aws_number_acks_and_reaches_the_customer_once() {
    let h = harness();
    let d = open(&h).await;
    let e = event(
        &h.signer,
        "sns-reply-1",
        &two_way(PRIMARY, "5b0a6f4e-0000-4c1d-9a11-000000000001", "On it"),
    );
    let report = run(&h, e.clone()).await.expect("taken");
    assert_eq!(
        report,
        SnsReport {
            taken: 1,
            ..SnsReport::default()
        }
    );
    let after = h.now(&d).await;
    assert_eq!(after.state(), State::Acked);
    let replies = h.provider.accepted_to(n(CUSTOMER));
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].message.body, "On it");
    assert_eq!(
        h.certs.fetches(),
        [CERT_URL],
        "the certificate, fetched once"
    );

    // SNS delivers at least once: the same event again changes nothing.
    run(&h, e).await.expect("a duplicate is taken");
    let again = h.now(&d).await;
    assert_eq!(again.version(), after.version());
    assert_eq!(h.provider.accepted_to(n(CUSTOMER)).len(), 1);
    assert_eq!(h.certs.fetches().len(), 1, "cached");
}

#[tokio::test]
async fn a_delivery_failure_placed_by_its_context_reaches_the_backup_at_once() {
    let h = harness();
    let d = open(&h).await;
    let leg = &d.legs()[0];
    let mut ev: Value = serde_json::from_str(SMS_EVENT).expect("fixture");
    ev["eventType"] = "TEXT_BLOCKED".into();
    ev["messageStatus"] = "BLOCKED".into();
    ev["messageId"] = leg.sid.as_ref().expect("sent").to_string().into();
    ev["destinationPhoneNumber"] = PRIMARY.into();
    ev["originationPhoneNumber"] = AWS_NUMBER.into();
    ev["context"] = json!({"dispatch": d.id().to_string(), "leg": leg.index.to_string()});
    let report = run(&h, event(&h.signer, "sns-event-1", &ev))
        .await
        .expect("taken");
    assert_eq!(report.taken, 1, "{report:?}");
    let after = h.now(&d).await;
    assert_eq!(after.legs()[0].status, DeliveryStatus::Undelivered);
    assert_eq!(
        h.provider.accepted_to(n(BACKUP)).len(),
        1,
        "at once, not after the 15-minute timeout"
    );
}

#[tokio::test]
async fn forged_and_foreign_messages_are_refused_and_change_nothing() {
    let h = harness();
    let d = open(&h).await;
    let reply = two_way(PRIMARY, "5b0a6f4e-0000-4c1d-9a11-000000000002", "On it");

    let mut forged = event(&h.signer, "sns-forged", &reply);
    forged["Records"][0]["Sns"]["Message"] = two_way(PRIMARY, "x", "forged").to_string().into();
    let other = SnsSigner::new();
    let wrong_key = event(&other, "sns-wrong-key", &reply);
    let mut foreign = fixtures::load("sns-event.json");
    foreign["Records"][0]["Sns"]["TopicArn"] = "arn:aws:sns:us-east-1:999999999999:other".into();
    foreign["Records"][0]["Sns"]["Message"] = reply.to_string().into();
    h.signer.sign_message(&mut foreign["Records"][0]["Sns"]);
    let mut elsewhere = event(&h.signer, "sns-cert-elsewhere", &reply);
    elsewhere["Records"][0]["Sns"]["SigningCertUrl"] =
        "https://attacker.example.com/SimpleNotificationService-x.pem".into();

    for e in [forged, wrong_key, foreign, elsewhere] {
        let report = run(&h, e).await.expect("refused, not retried");
        assert_eq!(report.refused, 1, "{report:?}");
        assert_eq!(report.taken, 0);
    }
    let after = h.now(&d).await;
    assert_eq!(after.version(), d.version(), "nothing changed");
    assert!(h.provider.accepted_to(n(CUSTOMER)).is_empty());
    assert!(
        h.certs.fetches().iter().all(|u| u == CERT_URL),
        "no certificate fetched from anywhere else: {:?}",
        h.certs.fetches()
    );
}

#[tokio::test]
async fn a_message_the_relay_cannot_use_is_dropped_and_a_store_outage_fails_for_a_retry() {
    let h = harness();
    // A stranger's text to the line's AWS number is a customer's text.
    let e = event(
        &h.signer,
        "sns-stranger",
        &two_way(
            "+16195550177",
            "5b0a6f4e-0000-4c1d-9a11-000000000003",
            "hello?",
        ),
    );
    let report = run(&h, e).await.expect("taken");
    assert_eq!(report.taken, 1, "{report:?}");
    assert_eq!(h.provider.accepted_to(n(PRIMARY)).len(), 1, "forwarded");
    // A text from the business line itself (a loop): dropped, no retry
    // can make it usable.
    let e = event(
        &h.signer,
        "sns-loop",
        &two_way(LINE, "5b0a6f4e-0000-4c1d-9a11-000000000005", "loop"),
    );
    let report = run(&h, e).await.expect("dropped");
    assert_eq!(report.ignored, 1, "{report:?}");
    let not_sms = event(&h.signer, "sns-not-sms", &json!({"hello": "world"}));
    let report = run(&h, not_sms).await.expect("dropped");
    assert_eq!(report.ignored, 1, "{report:?}");

    // The store down: the invocation fails, so Lambda delivers it again.
    fn down<T>() -> Result<T, StoreError> {
        Err(StoreError::backend(false, "table unreachable"))
    }
    let mut store = MockStore::new();
    store.expect_inbound_lookup().returning(|_, _, _| down());
    store.expect_open_for_dispatcher().returning(|_, _| down());
    store.expect_by_inbound_sid().returning(|_| down());
    store.expect_open_for_customer().returning(|_, _| down());
    store.expect_open_by_tag().returning(|_| down());
    let down = Harness {
        relay: relay_over(
            Backend::new(Arc::new(store)),
            Arc::new(RecordingProvider::new()),
        ),
        ..harness()
    };
    let e = event(
        &down.signer,
        "sns-down",
        &two_way(PRIMARY, "5b0a6f4e-0000-4c1d-9a11-000000000004", "On it"),
    );
    let err = run(&down, e).await.expect_err("fails for Lambda's retry");
    assert!(matches!(err, SnsSourceError::Relay { .. }), "{err}");
    let d: lambda_runtime::Diagnostic = err.into();
    assert_eq!(d.error_type, "SnsMessageFailed");

    // Without topics configured nothing is dropped unread either.
    let e: SnsEvent = serde_json::from_value(fixtures::load("sns-event.json")).expect("event");
    let err = handle_sns(&h.relay, None, e)
        .await
        .expect_err("not configured");
    assert!(matches!(err, SnsSourceError::NotConfigured), "{err}");
}
