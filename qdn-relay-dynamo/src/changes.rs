//! The table's change feed (feature `changes`): every event any process
//! on the table published, read from the table's DynamoDB stream.
//!
//! Servers sharing a table each publish the events of their own work; a
//! dashboard connected to one of them must also see what the others did.
//! The feed follows the table's stream (new and old images, which
//! [`create_table`](crate::create_table) turns on) and, for every saved
//! dispatch item, publishes the events the new version holds that the old
//! one did not. Every process on the table reads the same stream, so every
//! one of them publishes every event, its own included, in the order the
//! table took the saves of each dispatch.
//!
//! The stream is read with DynamoDB Streams' JSON API (`DescribeStream`,
//! `GetShardIterator`, `GetRecords`), signed with the store's own client's
//! region and credentials, through the caller's
//! [`Transport`]: no SDK client of its own.
//!
//! What it does not carry: events a transition publishes without keeping
//! them on the dispatch (the job sync's routine ones), and events of a
//! dispatch whose stream record DynamoDB dropped (records are kept 24
//! hours; a feed that falls further behind starts again at the newest).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
use base64::Engine as _;
use bytes::Bytes;
use qdn_relay_core::{Dispatch, EventSink, RelayEvent};
use qdn_relay_transport::Transport;
use qdn_relay_transport::aws::{
    ErrorAnswer, JsonCall, JsonVersion, ProvideCredentials as _, SharedCredentialsProvider,
    dns_suffix, signed_json_request,
};
use serde_json::{Value, json};

use crate::DynamoStore;
use crate::item;

/// How often the feed asks each shard of the stream for new records. A
/// shard answers at most five `GetRecords` a second, shared by every
/// reader: two servers polling every 500 ms stay under it; more servers
/// should poll less often ([`ChangeFeed::poll_every`]).
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How often the feed looks for new shards (DynamoDB splits a stream's
/// shards every few hours).
const DESCRIBE_INTERVAL: Duration = Duration::from_secs(30);

/// How long a shard may answer nothing before its iterator is renewed
/// after the last record read.
const RENEW_IDLE: Duration = Duration::from_secs(1);

/// The longest wait after throttling or an error.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One call's whole timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest answer read (`GetRecords` answers at most 1 MB).
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// The SigV4 signing name of DynamoDB Streams.
const SIGNING_NAME: &str = "dynamodb";

/// Why the feed cannot follow the table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeFeedError {
    /// The table has no stream, or not one with both images.
    #[error(
        "table {table} has no stream of new and old images ({found}); turn one on: \
         aws dynamodb update-table --table-name {table} \
         --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES"
    )]
    NoStream {
        /// The table.
        table: String,
        /// What it has instead.
        found: String,
    },
    /// The store's client has no region or no credentials.
    #[error("the DynamoDB client has no {0}")]
    Client(&'static str),
    /// A call to DynamoDB or DynamoDB Streams failed.
    #[error("{0}")]
    Call(String),
}

/// A failed Streams call, as far as the feed acts on it.
#[derive(Debug)]
struct CallError {
    /// The error code (`ExpiredIteratorException`, ...), if AWS answered.
    code: Option<String>,
    message: String,
}

impl CallError {
    fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
    fn throttled(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "LimitExceededException"
                    | "ThrottlingException"
                    | "ProvisionedThroughputExceededException"
                    | "RequestLimitExceeded"
            )
        )
    }
}

/// A shard of the stream, as `DescribeStream` lists it.
#[derive(Debug, Clone)]
struct Shard {
    id: String,
    closed: bool,
}

/// Follows a table's stream and publishes the events of every dispatch
/// saved in it (see the module's docs). Made by
/// [`DynamoStore::change_feed`]; run with [`ChangeFeed::run`].
pub struct ChangeFeed {
    http: Arc<dyn Transport>,
    credentials: SharedCredentialsProvider,
    region: String,
    endpoint: String,
    stream_arn: String,
    partition_key: String,
    sort_key: String,
    dispatch_prefix: String,
    /// The sort key of dispatch items (their partition also holds their
    /// history pages, which carry no events to publish).
    dispatch_sk: String,
    poll: Duration,
    /// The shards followed, and where in each.
    iterators: HashMap<String, String>,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("stream_arn", &self.stream_arn)
            .field("endpoint", &self.endpoint)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl DynamoStore {
    /// The change feed of this store's table: its stream's ARN from
    /// `DescribeTable`, read through `http` at the Streams endpoint
    /// `lookup` names (`AWS_ENDPOINT_URL_DYNAMODB_STREAMS`, else
    /// `AWS_ENDPOINT_URL_DYNAMODB`, as emulators serve both on one address,
    /// else `AWS_ENDPOINT_URL`, else `streams.dynamodb.<region>`), signed
    /// with the region and credentials of `sdk` (the configuration this
    /// store's client was built from).
    ///
    /// The feed starts here: [`ChangeFeed::run`] publishes the events of
    /// the saves made after this returns (it has its place in every open
    /// shard of the stream by then).
    ///
    /// Fails with [`ChangeFeedError::NoStream`] when the table has no
    /// stream of new and old images.
    pub async fn change_feed(
        &self,
        sdk: &aws_config::SdkConfig,
        http: Arc<dyn Transport>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ChangeFeed, ChangeFeedError> {
        let config = self.config();
        let out = self
            .client()
            .describe_table()
            .table_name(&config.table)
            .send()
            .await
            .map_err(|e| {
                ChangeFeedError::Call(format!(
                    "cannot describe table {}: {}",
                    config.table,
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                ))
            })?;
        let table = out.table;
        let view = table
            .as_ref()
            .and_then(|t| t.stream_specification.as_ref())
            .filter(|s| s.stream_enabled)
            .and_then(|s| s.stream_view_type.clone());
        let arn = match (view, table.and_then(|t| t.latest_stream_arn)) {
            (Some(StreamViewType::NewAndOldImages), Some(arn)) => arn,
            (view, _) => {
                return Err(ChangeFeedError::NoStream {
                    table: config.table.clone(),
                    found: view.map_or_else(
                        || "no stream".to_owned(),
                        |v| format!("a stream of {}", v.as_str()),
                    ),
                });
            }
        };
        let region = sdk
            .region()
            .ok_or(ChangeFeedError::Client("region (AWS_REGION)"))?
            .to_string();
        let credentials = sdk
            .credentials_provider()
            .ok_or(ChangeFeedError::Client("credentials"))?;
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().trim_end_matches('/').to_owned())
                .filter(|v| !v.is_empty())
        };
        let endpoint = get("AWS_ENDPOINT_URL_DYNAMODB_STREAMS")
            .or_else(|| get("AWS_ENDPOINT_URL_DYNAMODB"))
            .or_else(|| get("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| {
                format!("https://streams.dynamodb.{region}.{}", dns_suffix(&region))
            });
        let mut feed = ChangeFeed {
            http,
            credentials,
            region,
            endpoint,
            stream_arn: arn,
            partition_key: config.partition_key.clone(),
            sort_key: config.sort_key.clone(),
            dispatch_prefix: format!("{}D#", config.key_prefix),
            dispatch_sk: format!("{}D", config.key_prefix),
            poll: POLL_INTERVAL,
            iterators: HashMap::new(),
        };
        let mut iterators = HashMap::new();
        feed.discover(&mut iterators, &HashSet::new(), true)
            .await
            .map_err(|e| {
                ChangeFeedError::Call(format!("cannot read the table's stream: {}", e.message))
            })?;
        feed.iterators = iterators;
        Ok(feed)
    }
}

impl ChangeFeed {
    /// Polls each shard every `every` instead of [`POLL_INTERVAL`].
    pub fn poll_every(mut self, every: Duration) -> Self {
        self.poll = every.max(Duration::from_millis(10));
        self
    }

    /// The stream's ARN.
    pub fn stream_arn(&self) -> &str {
        &self.stream_arn
    }

    /// Publishes to `sink` every event saved in the table from now on,
    /// until `stop` completes. Errors are logged and retried with backoff;
    /// a sink's failure is logged and the feed goes on.
    pub async fn run(mut self, sink: Arc<dyn EventSink>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut iterators = std::mem::take(&mut self.iterators);
        let mut finished: HashSet<String> = HashSet::new();
        // Per shard: the last sequence number read, and when.
        let mut places: HashMap<String, (String, Instant)> = HashMap::new();
        let mut described = Instant::now();
        let mut stale = false;
        let mut backoff = Duration::ZERO;
        loop {
            let wait = self.poll.max(backoff);
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(wait) => {}
            }
            let refresh = stale || described.elapsed() >= DESCRIBE_INTERVAL;
            if refresh {
                match self.discover(&mut iterators, &finished, false).await {
                    Ok(()) => {
                        described = Instant::now();
                        stale = false;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.message, "change feed: cannot describe the stream");
                        backoff = next_backoff(backoff);
                        continue;
                    }
                }
            }
            let mut trouble = false;
            let shards: Vec<(String, String)> = iterators
                .iter()
                .map(|(s, i)| (s.clone(), i.clone()))
                .collect();
            for (shard, iterator) in shards {
                match self.records(&iterator).await {
                    Ok((records, next)) => {
                        let seen = records
                            .last()
                            .and_then(|r| r["dynamodb"]["SequenceNumber"].as_str());
                        match seen {
                            Some(seq) => {
                                places.insert(shard.clone(), (seq.to_owned(), Instant::now()));
                            }
                            None => {
                                // Nothing new for a while: take a fresh
                                // iterator after the last record read.
                                // Cheap insurance against an iterator that
                                // lost its place (moto, the emulator, drops
                                // them whenever it cancels a transaction);
                                // on DynamoDB it only renews the iterator.
                                if let (Some(_), Some((seq, since))) = (&next, places.get(&shard))
                                    && since.elapsed() >= RENEW_IDLE
                                {
                                    let seq = seq.clone();
                                    if let Ok(i) = self.iterator_after(&shard, &seq).await {
                                        places.insert(shard.clone(), (seq, Instant::now()));
                                        iterators.insert(shard.clone(), i);
                                        continue;
                                    }
                                }
                            }
                        }
                        for record in &records {
                            for event in self.events_of(record) {
                                if let Err(e) = sink.publish(&event).await {
                                    tracing::warn!(error = %e, "change feed: a sink failed");
                                }
                            }
                        }
                        match next {
                            Some(next) => {
                                iterators.insert(shard, next);
                            }
                            None => {
                                // The shard is closed and read to its end:
                                // its children are found by the next
                                // describe, which comes at once.
                                iterators.remove(&shard);
                                finished.insert(shard);
                                stale = true;
                            }
                        }
                    }
                    Err(e)
                        if e.is("ExpiredIteratorException")
                            || e.is("TrimmedDataAccessException") =>
                    {
                        let renewed = match places.get(&shard) {
                            Some((seq, _)) => self.iterator_after(&shard, &seq.clone()).await,
                            None => {
                                tracing::warn!(shard = %shard, error = %e.message, "change feed: starting the shard again at its newest record");
                                self.iterator(&shard, "LATEST").await
                            }
                        };
                        match renewed {
                            Ok(i) => {
                                iterators.insert(shard, i);
                            }
                            Err(_) => trouble = true,
                        }
                    }
                    Err(e) if e.is("ResourceNotFoundException") => {
                        iterators.remove(&shard);
                        finished.insert(shard);
                    }
                    Err(e) => {
                        if !e.throttled() {
                            tracing::warn!(shard = %shard, error = %e.message, "change feed: GetRecords failed");
                        }
                        trouble = true;
                    }
                }
            }
            backoff = if trouble {
                next_backoff(backoff)
            } else {
                Duration::ZERO
            };
        }
    }

    /// Lists the stream's shards and starts following the new ones: at the
    /// first look, the open shards from their newest record (the feed
    /// shows what happens from now on); later, every new shard from its
    /// oldest (it began after the feed did).
    async fn discover(
        &self,
        iterators: &mut HashMap<String, String>,
        finished: &HashSet<String>,
        first: bool,
    ) -> Result<(), CallError> {
        for shard in self.shards().await? {
            if iterators.contains_key(&shard.id) || finished.contains(&shard.id) {
                continue;
            }
            if first && shard.closed {
                continue;
            }
            let kind = if first { "LATEST" } else { "TRIM_HORIZON" };
            let it = self.iterator(&shard.id, kind).await?;
            iterators.insert(shard.id, it);
        }
        Ok(())
    }

    async fn shards(&self) -> Result<Vec<Shard>, CallError> {
        let mut out = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let mut body = json!({ "StreamArn": self.stream_arn });
            if let Some(s) = &start {
                body["ExclusiveStartShardId"] = json!(s);
            }
            let answer = self.call("DescribeStream", &body).await?;
            let desc = &answer["StreamDescription"];
            for s in desc["Shards"].as_array().into_iter().flatten() {
                if let Some(id) = s["ShardId"].as_str() {
                    out.push(Shard {
                        id: id.to_owned(),
                        closed: s["SequenceNumberRange"]["EndingSequenceNumber"].is_string(),
                    });
                }
            }
            match desc["LastEvaluatedShardId"].as_str() {
                Some(last) if !last.is_empty() => start = Some(last.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    async fn iterator(&self, shard: &str, kind: &str) -> Result<String, CallError> {
        let answer = self
            .call(
                "GetShardIterator",
                &json!({ "StreamArn": self.stream_arn, "ShardId": shard, "ShardIteratorType": kind }),
            )
            .await?;
        answer["ShardIterator"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| CallError {
                code: None,
                message: "GetShardIterator answered no iterator".into(),
            })
    }

    /// An iterator just after the record `seq` of `shard`.
    async fn iterator_after(&self, shard: &str, seq: &str) -> Result<String, CallError> {
        let answer = self
            .call(
                "GetShardIterator",
                &json!({
                    "StreamArn": self.stream_arn, "ShardId": shard,
                    "ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": seq,
                }),
            )
            .await?;
        answer["ShardIterator"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| CallError {
                code: None,
                message: "GetShardIterator answered no iterator".into(),
            })
    }

    /// One `GetRecords`: the records and the next iterator (none once a
    /// closed shard is read to its end).
    async fn records(&self, iterator: &str) -> Result<(Vec<Value>, Option<String>), CallError> {
        let mut answer = self
            .call(
                "GetRecords",
                &json!({ "ShardIterator": iterator, "Limit": 1000 }),
            )
            .await?;
        let records = match answer["Records"].take() {
            Value::Array(v) => v,
            _ => Vec::new(),
        };
        let next = answer["NextShardIterator"].as_str().map(str::to_owned);
        Ok((records, next))
    }

    /// The events a stream record adds: those of the new image's dispatch
    /// that the old image's did not hold. Anything that is not a dispatch
    /// item of this store (history pages, lookup items, opt-outs, an
    /// application's items) adds none; a record that does not decode is logged and adds none.
    fn events_of(&self, record: &Value) -> Vec<RelayEvent> {
        let images = &record["dynamodb"];
        let new = &images["NewImage"];
        let is_dispatch = new[&self.partition_key]["S"]
            .as_str()
            .is_some_and(|pk| pk.starts_with(&self.dispatch_prefix))
            && new[&self.sort_key]["S"].as_str() == Some(self.dispatch_sk.as_str());
        if !is_dispatch {
            return Vec::new();
        }
        let decoded = decode_image(new).and_then(|new| {
            let old = match images.get("OldImage") {
                Some(old) if old.is_object() => Some(decode_image(old)?),
                _ => None,
            };
            Ok(added_events(old.as_ref(), &new))
        });
        match decoded {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, "change feed: a dispatch record does not decode");
                Vec::new()
            }
        }
    }

    async fn call(&self, operation: &str, body: &Value) -> Result<Value, CallError> {
        let fail = |message: String| CallError {
            code: None,
            message,
        };
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| fail(format!("no AWS credentials: {e}")))?;
        let target = format!("DynamoDBStreams_20120810.{operation}");
        let call = JsonCall::new(
            SIGNING_NAME,
            &self.region,
            &self.endpoint,
            &target,
            JsonVersion::V1_0,
            concat!("qdn-relay-dynamo/", env!("CARGO_PKG_VERSION")),
        );
        let body = Bytes::from(body.to_string());
        let request = signed_json_request(&credentials, &call, &body, SystemTime::now())
            .map_err(|e| fail(format!("cannot sign {operation}: {}", e.message)))?;
        let mut answer = self
            .http
            .send(request, CALL_TIMEOUT)
            .await
            .map_err(|e| fail(format!("{operation}: {e}")))?;
        let (bytes, read) = answer.read_body(MAX_ANSWER, false).await;
        read.map_err(|e| fail(format!("{operation}: reading the answer: {e}")))?;
        if !answer.status.is_success() {
            let e = ErrorAnswer::parse(answer.status.as_u16(), &answer.headers, &bytes);
            return Err(CallError {
                code: e.code.clone(),
                message: format!("{operation}: {}", e.summary()),
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| fail(format!("{operation}: unreadable answer: {e}")))
    }
}

fn next_backoff(d: Duration) -> Duration {
    if d.is_zero() {
        Duration::from_millis(250)
    } else {
        (d * 2).min(MAX_BACKOFF)
    }
}

/// The dispatch an image's record attribute holds (a string of JSON, or
/// LZ4 binary in base64 as the stream carries it).
fn decode_image(image: &Value) -> Result<Dispatch, String> {
    let rec = &image[item::RECORD];
    let value = if let Some(s) = rec["S"].as_str() {
        AttributeValue::S(s.to_owned())
    } else if let Some(b) = rec["B"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| format!("record is not base64: {e}"))?;
        AttributeValue::B(Blob::new(bytes))
    } else {
        return Err(format!("image without attribute {}", item::RECORD));
    };
    item::decode(&value)
}

/// The events `new` holds that `old` (the previous version, if any) did
/// not: a dispatch keeps its latest events and counts the older ones it
/// moved out (or, before that, dropped), so an event's place in the whole
/// history is that count plus its index.
pub(crate) fn added_events(old: Option<&Dispatch>, new: &Dispatch) -> Vec<RelayEvent> {
    let seen = old.map_or(0, Dispatch::events_total);
    let first = new.events_total() - new.events().len();
    new.events()
        .iter()
        .enumerate()
        .filter(|(i, _)| first + i >= seen)
        .map(|(_, e)| e.clone())
        .collect()
}
