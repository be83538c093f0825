//! SQS timers against moto's SQS (`QDN_TEST_DYNAMO_URL`: the moto server
//! `./scripts/test` starts serves SQS's JSON protocol too): every new
//! deadline is a message; the tick function's batch handling fires each
//! deadline once, whatever the duplicates, the order and the stale ones.

use std::sync::Arc;
use std::time::Duration;

use qdn_relay_app::DynRelay;
use qdn_relay_core::testing::RecordingProvider;
use qdn_relay_core::{
    Clock, DispatchId, InboundText, ManualClock, MemoryStore, OUTBOX_GRACE, Outcome, PhoneNumber,
    Policy, Relay, SmsProvider, Store, SystemClock, Timers, Timestamp,
};
use qdn_relay_lambda::HttpsClient;
use qdn_relay_lambda::timers::{
    SqsBatch, SqsTimers, TimerMessage, TimerOutcome, handle_timer, handle_timers,
};
use serde_json::{Value, json};

const LEVEL: Duration = Duration::from_secs(900);
const LINE: &str = "+16195550000";
const PRIMARY: &str = "+16195550101";
const BACKUP: &str = "+18583354807";

fn n(s: &str) -> PhoneNumber {
    s.parse().expect("number")
}

fn moto_url() -> String {
    match std::env::var("QDN_TEST_DYNAMO_URL") {
        Ok(v) if !v.trim().is_empty() => v.trim_end_matches('/').to_owned(),
        _ => panic!(
            "QDN_TEST_DYNAMO_URL is not set: this test needs moto in server mode. Run the suite with ./scripts/test, which installs and starts it."
        ),
    }
}

async fn sqs(target: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{}/", moto_url()))
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", format!("AmazonSQS.{target}"))
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{target} on moto: {e}"));
    let status = resp.status();
    let text = resp.text().await.expect("body");
    assert!(status.is_success(), "{target}: HTTP {status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn new_queue() -> String {
    let name = format!(
        "timers-{}-{}",
        std::process::id(),
        SystemClock.now().as_millis()
    );
    let out = sqs("CreateQueue", json!({ "QueueName": name })).await;
    out["QueueUrl"].as_str().expect("QueueUrl").to_owned()
}

/// Everything visible on the queue now, as the event source mapping would
/// deliver it.
async fn receive_all(queue: &str) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let out = sqs(
            "ReceiveMessage",
            json!({ "QueueUrl": queue, "MaxNumberOfMessages": 10, "VisibilityTimeout": 600 }),
        )
        .await;
        let batch = out["Messages"].as_array().cloned().unwrap_or_default();
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

fn timers_for(queue: &str) -> SqsTimers {
    let moto = moto_url();
    let queue = queue.to_owned();
    SqsTimers::from_lookup(
        move |k| match k {
            "RELAY_TIMER_QUEUE_URL" => Some(queue.clone()),
            "AWS_REGION" => Some("us-east-1".into()),
            "AWS_ENDPOINT_URL_SQS" => Some(moto.clone()),
            "AWS_ACCESS_KEY_ID" => Some("test".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("test".into()),
            _ => None,
        },
        Arc::new(HttpsClient::new(Duration::from_secs(2))),
    )
    .expect("configured")
    .expect("valid")
}

struct Setup {
    relay: DynRelay,
    clock: Arc<ManualClock>,
    provider: Arc<RecordingProvider>,
    timers: Arc<SqsTimers>,
    queue: String,
}

async fn setup(t0: Timestamp) -> Setup {
    let queue = new_queue().await;
    let timers = Arc::new(timers_for(&queue));
    let clock = Arc::new(ManualClock::new(t0));
    let provider = Arc::new(RecordingProvider::with_clock(clock.clone()));
    let relay = Relay::<dyn Store, dyn SmsProvider, dyn Clock>::builder(
        Arc::new(MemoryStore::new()) as Arc<dyn Store>,
        provider.clone() as Arc<dyn SmsProvider>,
        clock.clone() as Arc<dyn Clock>,
    )
    .line(
        n(LINE),
        Policy::simple(n(PRIMARY), n(BACKUP), LEVEL).expect("policy"),
    )
    .timers(timers.clone() as Arc<dyn Timers>)
    .seed(3)
    .build();
    Setup {
        relay,
        clock,
        provider,
        timers,
        queue,
    }
}

async fn open(s: &Setup) -> DispatchId {
    let out = s
        .relay
        .inbound(InboundText {
            sid: "SM0123456789abcdef0123456789abcdef".parse().expect("sid"),
            from: n("+16195550100"),
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

fn record(id: &str, body: &str) -> Value {
    json!({ "messageId": id, "body": body, "eventSource": "aws:sqs" })
}

/// The dispatch opens an hour in the past (so SQS delays nothing and the
/// test need not wait): its two deadlines (the outbox's grace, then the
/// level's) are two messages on moto's queue. Delivered twice each, in
/// reverse order, with a stale one and a malformed one: the backup is
/// texted once, only the malformed message is reported failed.
#[tokio::test]
async fn timers_on_moto_sqs_fire_each_deadline_once() {
    let t0 = Timestamp::from_millis(SystemClock.now().as_millis() - 3_600_000);
    let s = setup(t0).await;
    let id = open(&s).await;
    let msgs = receive_all(&s.queue).await;
    let mut timers: Vec<TimerMessage> = msgs
        .iter()
        .map(|m| serde_json::from_str(m["Body"].as_str().expect("body")).expect("timer"))
        .collect();
    timers.sort_by_key(|t| t.deadline);
    assert_eq!(
        timers,
        vec![
            TimerMessage {
                dispatch: id,
                deadline: t0.plus(OUTBOX_GRACE)
            },
            TimerMessage {
                dispatch: id,
                deadline: t0.plus(LEVEL)
            },
        ],
        "one message per new deadline"
    );

    // At the level's deadline: both messages, twice, latest first, and a
    // malformed one.
    s.clock.set(t0.plus(LEVEL));
    let mut records = Vec::new();
    for (i, m) in msgs.iter().rev().chain(msgs.iter()).enumerate() {
        records.push(record(&format!("m-{i}"), m["Body"].as_str().expect("body")));
    }
    records.push(record("bad", "not a timer"));
    let batch: SqsBatch = serde_json::from_value(json!({ "Records": records })).expect("batch");
    let out = handle_timers(&s.relay, Some(&s.timers), batch).await;
    assert_eq!(
        serde_json::to_value(&out).expect("json"),
        json!({"batchItemFailures": [{"itemIdentifier": "bad"}]})
    );
    assert_eq!(
        s.provider.accepted_to(n(BACKUP)).len(),
        1,
        "the backup is texted once"
    );
    // The backup's deadlines were enqueued in turn (its text's grace, then
    // its level's timeout).
    let mut next: Vec<Timestamp> = receive_all(&s.queue)
        .await
        .iter()
        .map(|m| {
            serde_json::from_str::<TimerMessage>(m["Body"].as_str().expect("body"))
                .expect("timer")
                .deadline
        })
        .collect();
    next.sort();
    assert_eq!(
        next,
        vec![
            t0.plus(LEVEL).plus(OUTBOX_GRACE),
            t0.plus(LEVEL).plus(LEVEL)
        ]
    );
}

/// A message that comes before its deadline (more than 15 minutes away, or
/// early) is sent again and fires nothing; one for a dispatch whose save
/// never happened is stale.
#[tokio::test]
async fn an_early_timer_waits_again_and_a_ghost_timer_is_stale() {
    let now = SystemClock.now();
    let s = setup(now).await;
    let id = open(&s).await;
    let delayed = || async {
        sqs(
            "GetQueueAttributes",
            json!({ "QueueUrl": s.queue, "AttributeNames": ["ApproximateNumberOfMessagesDelayed"] }),
        )
        .await["Attributes"]["ApproximateNumberOfMessagesDelayed"]
            .as_str()
            .and_then(|v| v.parse::<u32>().ok())
            .expect("a count")
    };
    let before = delayed().await;
    let far = TimerMessage {
        dispatch: id,
        deadline: now.plus(Duration::from_secs(3 * 3600)),
    };
    let out = handle_timer(&s.relay, Some(&s.timers), far, now)
        .await
        .expect("requeued");
    assert_eq!(out, TimerOutcome::Requeued);
    assert!(s.provider.accepted_to(n(BACKUP)).is_empty());
    assert_eq!(delayed().await, before + 1, "sent again with a delay");
    let ghost = TimerMessage {
        dispatch: DispatchId::from_u128(99),
        deadline: now,
    };
    assert_eq!(
        handle_timer(&s.relay, Some(&s.timers), ghost, now).await,
        Ok(TimerOutcome::Stale)
    );
}
