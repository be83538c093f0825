//! Timers on SQS: every new deadline becomes a message delayed until it
//! (at most 15 minutes at a time), and the tick function, fed by the queue,
//! fires the dispatch when the message arrives.
//!
//! - [`SqsTimers`] is the relay's [`Timers`] port: `SendMessage` (SQS's
//!   JSON protocol, signed with SigV4; no SDK client) of a
//!   [`TimerMessage`] with `DelaySeconds` = the time left, rounded up,
//!   at most [`MAX_DELAY_SECS`].
//! - [`handle_timers`] takes a batch from the queue: a message whose
//!   deadline is still ahead (a deadline more than 15 minutes away, or a
//!   message delivered early) is sent again for the rest of the wait; a due
//!   one fires its dispatch ([`Relay::fire`](qdn_relay_core::Relay::fire)),
//!   which does nothing when the deadline moved on (acked, escalated
//!   already, a duplicate message). A message that could not be handled is
//!   reported in `batchItemFailures`, so only it comes back.
//! - A lost message (the enqueue failed after the save; it is logged) is
//!   caught by the scheduled sweep, which stays as a slower safety net.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use qdn_relay_app::DynRelay;
use qdn_relay_core::{DispatchId, RelayError, TimerError, Timers, Timestamp};
use qdn_relay_transport::Transport;
use qdn_relay_transport::aws::{
    Credentials, ErrorAnswer, JsonCall, JsonVersion, credentials_from_lookup, endpoint_from_lookup,
    region_from_lookup, signed_json_request,
};
use serde::{Deserialize, Serialize};

/// SQS's longest delay (15 minutes).
pub const MAX_DELAY_SECS: u64 = 900;

/// The variable naming the timer queue's URL; without it there are no
/// timers and only the schedule sweeps.
pub const QUEUE_VAR: &str = "RELAY_TIMER_QUEUE_URL";

const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_ANSWER: usize = 64 * 1024;

/// One timer: fire `dispatch` at `deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerMessage {
    /// The dispatch.
    pub dispatch: DispatchId,
    /// Its deadline when the message was sent.
    pub deadline: Timestamp,
}

/// The delay to ask SQS for: the time left until `deadline`, rounded up
/// to whole seconds (never early), at most [`MAX_DELAY_SECS`].
pub fn delay_secs(deadline: Timestamp, now: Timestamp) -> u64 {
    let left = deadline.since(now);
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    secs.min(MAX_DELAY_SECS)
}

/// Sends timer messages to the queue (see the module docs).
pub struct SqsTimers {
    http: Arc<dyn Transport>,
    queue_url: String,
    region: String,
    endpoint: String,
    credentials: Result<Credentials, String>,
}

impl std::fmt::Debug for SqsTimers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsTimers")
            .field("queue_url", &self.queue_url)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl SqsTimers {
    /// From the environment, read through `lookup`: `None` without
    /// [`QUEUE_VAR`]; an error naming the variable when the region is
    /// missing. The endpoint is `AWS_ENDPOINT_URL_SQS`, else
    /// `AWS_ENDPOINT_URL`, else SQS's in the region.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        http: Arc<dyn Transport>,
    ) -> Option<Result<Self, String>> {
        let queue_url = lookup(QUEUE_VAR).filter(|v| !v.trim().is_empty())?;
        Some((|| {
            let region = region_from_lookup(&lookup)
                .map_err(|e| format!("{e} (the region of {QUEUE_VAR})"))?;
            Ok(Self {
                http,
                endpoint: endpoint_from_lookup(&lookup, "SQS", "sqs", &region),
                queue_url: queue_url.trim().to_owned(),
                region,
                credentials: credentials_from_lookup(&lookup),
            })
        })())
    }

    /// The queue's URL.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Sends `m`, delayed by [`delay_secs`] from `now`.
    pub async fn enqueue(&self, m: TimerMessage, now: Timestamp) -> Result<(), TimerError> {
        let err = |s: String| TimerError(s.into());
        let credentials = self.credentials.as_ref().map_err(|e| err(e.clone()))?;
        let body = serde_json::json!({
            "QueueUrl": self.queue_url,
            "MessageBody": serde_json::to_string(&m).map_err(|e| err(e.to_string()))?,
            "DelaySeconds": delay_secs(m.deadline, now),
        });
        let body = Bytes::from(body.to_string());
        let call = JsonCall::new(
            "sqs",
            &self.region,
            &self.endpoint,
            "AmazonSQS.SendMessage",
            JsonVersion::V1_0,
            concat!("qdn-relay-lambda/", env!("CARGO_PKG_VERSION")),
        );
        let request = signed_json_request(credentials, &call, &body, SystemTime::now())
            .map_err(|e| err(e.message))?;
        let mut answer = self
            .http
            .send(request, ATTEMPT_TIMEOUT)
            .await
            .map_err(|e| err(e.message))?;
        let (body, read) = answer.read_body(MAX_ANSWER, false).await;
        read.map_err(|e| err(e.message))?;
        if answer.status.is_success() {
            return Ok(());
        }
        let a = ErrorAnswer::parse(answer.status.as_u16(), &answer.headers, &body);
        Err(err(format!("SendMessage: {}", a.summary())))
    }
}

#[async_trait]
impl Timers for SqsTimers {
    async fn scheduled(&self, id: DispatchId, at: Timestamp) -> Result<(), TimerError> {
        let now = qdn_relay_core::Clock::now(&qdn_relay_core::SystemClock);
        self.enqueue(
            TimerMessage {
                dispatch: id,
                deadline: at,
            },
            now,
        )
        .await
    }
}

/// A batch of SQS messages, as Lambda's event source mapping delivers it.
#[derive(Debug, Clone, Deserialize)]
pub struct SqsBatch {
    /// The messages.
    #[serde(rename = "Records")]
    pub records: Vec<SqsRecord>,
}

/// One message of a batch.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsRecord {
    /// Its id (what a partial batch failure names).
    pub message_id: String,
    /// Its body: a [`TimerMessage`].
    #[serde(default)]
    pub body: String,
}

/// The answer to a batch: the messages to deliver again
/// (`{"batchItemFailures": [{"itemIdentifier": id}]}`, Lambda's partial
/// batch response; the event source mapping must have
/// `ReportBatchItemFailures`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    /// The failed messages.
    pub batch_item_failures: Vec<ItemFailure>,
}

/// One failed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemFailure {
    /// Its message id.
    pub item_identifier: String,
}

/// What happened to one timer message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerOutcome {
    /// The dispatch's due work was done.
    Fired,
    /// Nothing was due (a stale or repeated timer), or the dispatch does
    /// not exist (its save never happened).
    Stale,
    /// The deadline is still ahead: sent again for the rest of the wait.
    Requeued,
}

/// Handles one timer message at `now` (see the module docs).
pub async fn handle_timer(
    relay: &DynRelay,
    timers: Option<&SqsTimers>,
    m: TimerMessage,
    now: Timestamp,
) -> Result<TimerOutcome, String> {
    if m.deadline > now {
        let Some(timers) = timers else {
            return Err(format!("{QUEUE_VAR} is not set: cannot wait longer"));
        };
        timers.enqueue(m, now).await.map_err(|e| e.to_string())?;
        return Ok(TimerOutcome::Requeued);
    }
    match relay.fire(m.dispatch).await {
        Ok(qdn_relay_core::Outcome::Unchanged(_)) | Err(RelayError::NotFound(_)) => {
            Ok(TimerOutcome::Stale)
        }
        Ok(_) => Ok(TimerOutcome::Fired),
        Err(e) => Err(e.to_string()),
    }
}

/// Handles a batch: each message on its own; the ones that failed (and
/// the ones whose body is not a timer, which are logged) are reported so
/// SQS delivers only them again (and, after the queue's `maxReceiveCount`,
/// moves them to its dead-letter queue).
pub async fn handle_timers(
    relay: &DynRelay,
    timers: Option<&SqsTimers>,
    batch: SqsBatch,
) -> BatchResponse {
    // The batch's messages at once: each fires its own dispatch (two
    // messages for one dispatch race as any two inputs do: one wins, the
    // other finds nothing due), so a message does not wait behind the
    // ones before it.
    let handled = futures_util::future::join_all(batch.records.into_iter().map(|r| async move {
        let now = relay.clock().now();
        let mut lateness = None;
        let result = match serde_json::from_str::<TimerMessage>(&r.body) {
            Ok(m) => {
                let outcome = handle_timer(relay, timers, m, now).await;
                if outcome == Ok(TimerOutcome::Fired) {
                    let late = now.since(m.deadline);
                    lateness = Some(late);
                    // As the server logs its sweep's (how late the
                    // dispatch's due work started).
                    tracing::debug!(
                        message_id = %r.message_id,
                        dispatch = %m.dispatch,
                        lateness_ms = u64::try_from(late.as_millis()).unwrap_or(u64::MAX),
                        "deadline fired"
                    );
                }
                outcome
            }
            Err(e) => Err(format!("not a timer message: {e}")),
        };
        (r.message_id, result, lateness)
    }))
    .await;
    let mut out = BatchResponse::default();
    let mut late = Vec::new();
    for (message_id, result, lateness) in handled {
        late.extend(lateness);
        match result {
            Ok(outcome) => {
                tracing::debug!(message = %message_id, ?outcome, "timer");
            }
            Err(e) => {
                tracing::warn!(message = %message_id, error = %e, "timer failed; SQS delivers it again");
                out.batch_item_failures.push(ItemFailure {
                    item_identifier: message_id,
                });
            }
        }
    }
    if !late.is_empty() {
        let report = qdn_relay_core::SweepReport {
            fired: late.len(),
            lateness: late,
            ..qdn_relay_core::SweepReport::default()
        };
        qdn_relay_metrics::EmfSink::stdout(relay.provider().name()).write(
            &qdn_relay_metrics::sweep_observations(&report),
            relay.clock().now(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp::from_millis(1_767_603_600_000);

    #[test]
    fn the_delay_is_the_time_left_rounded_up_and_at_most_15_minutes() {
        assert_eq!(delay_secs(T, T), 0);
        assert_eq!(delay_secs(T, T.plus(Duration::from_secs(5))), 0, "past");
        assert_eq!(delay_secs(T.plus(Duration::from_millis(1)), T), 1);
        assert_eq!(delay_secs(T.plus(Duration::from_secs(30)), T), 30);
        assert_eq!(delay_secs(T.plus(Duration::from_secs(3600)), T), 900);
    }

    #[test]
    fn a_timer_message_round_trips_and_a_batch_parses() {
        let m = TimerMessage {
            dispatch: DispatchId::from_u128(7),
            deadline: T,
        };
        let body = serde_json::to_string(&m).expect("json");
        let event = serde_json::json!({"Records": [
            {"messageId": "m-1", "body": body, "eventSource": "aws:sqs"}
        ]});
        let b: SqsBatch = serde_json::from_value(event).expect("batch");
        assert_eq!(b.records[0].message_id, "m-1");
        assert_eq!(
            serde_json::from_str::<TimerMessage>(&b.records[0].body).expect("timer"),
            m
        );
        let r = BatchResponse {
            batch_item_failures: vec![ItemFailure {
                item_identifier: "m-1".into(),
            }],
        };
        assert_eq!(
            serde_json::to_value(&r).expect("json"),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-1"}]})
        );
    }

    /// Log lines captured by a test's subscriber.
    #[derive(Clone, Default)]
    struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_fired_deadline_logs_its_lateness() {
        use qdn_relay_core::testing::RecordingProvider;
        use qdn_relay_core::{
            Clock, InboundText, ManualClock, MemoryStore, Outcome, Policy, Relay, SmsProvider,
            Store,
        };
        let n = |s: &str| s.parse().expect("number");
        let level = Duration::from_secs(900);
        let clock = Arc::new(ManualClock::new(T));
        let provider = Arc::new(RecordingProvider::with_clock(clock.clone()));
        let relay: DynRelay = Relay::<dyn Store, dyn SmsProvider, dyn Clock>::builder(
            Arc::new(MemoryStore::new()) as Arc<dyn Store>,
            provider.clone() as Arc<dyn SmsProvider>,
            clock.clone() as Arc<dyn Clock>,
        )
        .line(
            n("+16195550000"),
            Policy::simple(n("+16195550101"), n("+18583354807"), level).expect("policy"),
        )
        .seed(3)
        .build();
        let opened = relay
            .inbound(InboundText {
                sid: "SM0123456789abcdef0123456789abcdef".parse().expect("sid"),
                from: n("+16195550100"),
                to: n("+16195550000"),
                body: "the bin is on fire".into(),
                media: Vec::new(),
            })
            .await
            .expect("opened");
        let Outcome::Opened(id) = opened else {
            panic!("{opened:?}")
        };
        clock.set(T.plus(level).plus(Duration::from_millis(1234)));
        let body = serde_json::to_string(&TimerMessage {
            dispatch: id,
            deadline: T.plus(level),
        })
        .expect("json");
        let batch: SqsBatch = serde_json::from_value(serde_json::json!({"Records": [
            {"messageId": "m-1", "body": body, "eventSource": "aws:sqs"}
        ]}))
        .expect("batch");

        let logs = Capture::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        let out = {
            let _guard = tracing::subscriber::set_default(subscriber);
            handle_timers(&relay, None, batch).await
        };
        assert_eq!(out, BatchResponse::default());
        assert_eq!(
            provider.accepted_to(n("+18583354807")).len(),
            1,
            "escalated"
        );
        let logs = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
        assert!(
            logs.contains(&format!(
                "deadline fired message_id=m-1 dispatch={id} lateness_ms=1234"
            )),
            "{logs}"
        );
    }
}
