//! The relay's metrics: one catalogue ([`CATALOGUE`]), most figures derived
//! from the relay's events ([`observations`], so no rule of the state
//! machine is copied here) plus a few hooks the hosts call (webhooks, the
//! sweep's lateness, store conflicts, gauges read from the store).
//!
//! Two outputs share the same [`Observation`]s:
//!
//! - [`Metrics`]: a registry rendered in the Prometheus (OpenMetrics) text
//!   format, for `GET /metrics` on a server; [`MetricsSink`] feeds it.
//! - [`emf_line`]: one CloudWatch embedded-metric-format log line per
//!   observation, for Lambda (CloudWatch extracts the metric from the log;
//!   no API call); [`EmfSink`] writes them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use qdn_relay_core::{
    Actor, EventKind, EventSink, ListFilter, RelayEvent, SinkError, Store, StoreError, SweepReport,
    Timestamp,
};

mod store;

pub use store::MeteredStore;

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; exported as `<name>_total`.
    Counter,
    /// A value read now.
    Gauge,
    /// Observations in buckets; exported as `<name>_bucket`, `_sum`, `_count`.
    Histogram,
}

/// One metric of the catalogue.
#[derive(Debug, PartialEq)]
pub struct Def {
    /// Its name without the counter's `_total` suffix.
    pub name: &'static str,
    /// What it counts.
    pub help: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its label names, in order.
    pub labels: &'static [&'static str],
    /// A histogram's bucket bounds (seconds); empty otherwise.
    pub buckets: &'static [f64],
    /// Its CloudWatch unit.
    pub unit: &'static str,
}

impl Def {
    /// The series names it is exported under in the text format.
    pub fn exported(&self) -> Vec<String> {
        match self.kind {
            Kind::Counter => vec![format!("{}_total", self.name)],
            Kind::Gauge => vec![self.name.to_owned()],
            Kind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{}{s}", self.name))
                .collect(),
        }
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const LATENESS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 15.0, 60.0, 300.0,
];
const ACK_BUCKETS: &[f64] = &[
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 86400.0,
];

macro_rules! def {
    ($id:ident, $name:literal, $kind:ident, [$($l:literal),*], $buckets:expr, $unit:literal, $help:literal) => {
        #[doc = $help]
        pub const $id: &Def = &Def {
            name: $name,
            help: $help,
            kind: Kind::$kind,
            labels: &[$($l),*],
            buckets: $buckets,
            unit: $unit,
        };
    };
}

def!(
    WEBHOOKS,
    "qdn_relay_webhooks",
    Counter,
    ["route", "result", "reason"],
    &[],
    "Count",
    "Webhooks taken (result accepted) or refused, by route and reason (ok, duplicate, signature, malformed, busy, error)."
);
def!(
    WEBHOOK_LATENCY,
    "qdn_relay_webhook_latency_seconds",
    Histogram,
    ["route"],
    LATENCY_BUCKETS,
    "Seconds",
    "How long a webhook took to answer, by route."
);
def!(
    TEXTS,
    "qdn_relay_texts",
    Counter,
    ["carrier", "purpose", "outcome"],
    &[],
    "Count",
    "Texts the relay tried to send, by carrier, purpose (forward, follow_up, reply, notice) and outcome class (accepted, skipped, or the send error's kind)."
);
def!(
    DELIVERIES,
    "qdn_relay_delivery_statuses",
    Counter,
    ["carrier", "status"],
    &[],
    "Count",
    "Delivery statuses reported by the carrier, by carrier and status."
);
def!(
    PROVIDER_ERRORS,
    "qdn_relay_provider_errors",
    Counter,
    ["carrier", "stage", "class", "code"],
    &[],
    "Count",
    "Provider errors, by carrier, stage (send or delivery), class and the provider's code."
);
def!(
    ESCALATIONS,
    "qdn_relay_escalations",
    Counter,
    ["level", "reason"],
    &[],
    "Count",
    "Escalations past a level, by the level left (0-based) and why."
);
def!(
    EXHAUSTED,
    "qdn_relay_exhausted",
    Counter,
    [],
    &[],
    "Count",
    "Dispatches that went through every level of every round without an ack."
);
def!(
    OPENED,
    "qdn_relay_dispatches_opened",
    Counter,
    [],
    &[],
    "Count",
    "Dispatches opened by a customer's text."
);
def!(
    ACKS,
    "qdn_relay_acks",
    Counter,
    ["kind", "level"],
    &[],
    "Count",
    "Acknowledgements, by who (text: a dispatcher's text, dashboard: an operator, relay) and the acking dispatcher's level."
);
def!(
    TIME_TO_ACK,
    "qdn_relay_time_to_ack_seconds",
    Histogram,
    ["kind"],
    ACK_BUCKETS,
    "Seconds",
    "From a dispatch's opening to its acknowledgement."
);
def!(
    HOLDS,
    "qdn_relay_holds",
    Counter,
    [],
    &[],
    "Count",
    "Times a dispatch had to hold for a level's on-duty window."
);
def!(
    OPT_OUTS,
    "qdn_relay_opt_outs",
    Counter,
    ["source"],
    &[],
    "Count",
    "Numbers that opted out, by source (keyword: a STOP text; carrier: a send failed with an opt-out error)."
);
def!(
    THROTTLED,
    "qdn_relay_throttled_texts",
    Counter,
    [],
    &[],
    "Count",
    "Texts held back by a rate limit."
);
def!(
    STORE_CONFLICTS,
    "qdn_relay_store_conflicts",
    Counter,
    ["reason"],
    &[],
    "Count",
    "Saves refused by the store's optimistic concurrency (the driver reloads and retries), by what conflicted."
);
def!(
    STORE_ERRORS,
    "qdn_relay_store_errors",
    Counter,
    ["retryable"],
    &[],
    "Count",
    "Store calls that failed with a backend error."
);
def!(
    WEBHOOK_RETRIES,
    "qdn_relay_webhook_retries",
    Counter,
    ["route"],
    &[],
    "Count",
    "Times a webhook retried the relay inside the request (a contended or busy store)."
);
def!(
    LATENESS,
    "qdn_relay_escalation_lateness_seconds",
    Histogram,
    [],
    LATENESS_BUCKETS,
    "Seconds",
    "How late a deadline was fired: when its handling began minus the deadline."
);
def!(
    OPEN,
    "qdn_relay_open_dispatches",
    Gauge,
    ["state"],
    &[],
    "Count",
    "Dispatches not yet closed or failed, by state (open, acked)."
);
def!(
    HOLDING,
    "qdn_relay_holding_dispatches",
    Gauge,
    [],
    &[],
    "Count",
    "Open dispatches holding for an on-duty window."
);
def!(
    JOB_SYNC_OWED,
    "qdn_relay_job_sync_owed",
    Gauge,
    [],
    &[],
    "Count",
    "Open dispatches whose job-system sync failed and waits for a retry."
);

/// Every metric, in the order they are registered.
pub const CATALOGUE: &[&Def] = &[
    WEBHOOKS,
    WEBHOOK_LATENCY,
    TEXTS,
    DELIVERIES,
    PROVIDER_ERRORS,
    ESCALATIONS,
    EXHAUSTED,
    OPENED,
    ACKS,
    TIME_TO_ACK,
    HOLDS,
    OPT_OUTS,
    THROTTLED,
    STORE_CONFLICTS,
    STORE_ERRORS,
    WEBHOOK_RETRIES,
    LATENESS,
    OPEN,
    HOLDING,
    JOB_SYNC_OWED,
];

/// Where observations made outside the event stream go (a webhook's, a
/// sweep's, a store conflict's): a [`Metrics`] registry on a server, an
/// [`EmfSink`]'s log lines on Lambda.
pub trait Recorder: Send + Sync {
    /// Records one observation.
    fn record(&self, o: &Observation);

    /// Records several.
    fn record_all(&self, os: &[Observation]) {
        for o in os {
            self.record(o);
        }
    }
}

impl Recorder for Metrics {
    fn record(&self, o: &Observation) {
        Metrics::record(self, o);
    }
}

impl Recorder for EmfSink {
    fn record(&self, o: &Observation) {
        let now = qdn_relay_core::Clock::now(&qdn_relay_core::SystemClock);
        (self.out)(&emf_line(o, &self.namespace, now));
    }
}

/// At most this many open dispatches are read to set the gauges; a store
/// holding more reports this many.
pub const GAUGE_SCAN_LIMIT: usize = 10_000;

/// One value for one series: a counter's increment, a gauge's value, or
/// a histogram's observation.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The metric.
    pub def: &'static Def,
    /// Its labels, in the metric's order.
    pub labels: Vec<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

impl Observation {
    /// An observation of `def` with these label values (in the metric's
    /// label order).
    pub fn new(def: &'static Def, labels: &[&str], value: f64) -> Self {
        debug_assert_eq!(def.labels.len(), labels.len(), "{}", def.name);
        Self {
            def,
            labels: def
                .labels
                .iter()
                .zip(labels)
                .map(|(k, v)| (*k, (*v).to_owned()))
                .collect(),
            value,
        }
    }
}

fn snake<T: serde::Serialize + ?Sized>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(m)) => m
            .get("reason")
            .or_else(|| m.get("kind"))
            .and_then(|v| v.as_str())
            .unwrap_or("other")
            .to_owned(),
        _ => "other".to_owned(),
    }
}

/// A text's purpose as a label value (`unknown` for events recorded
/// before they carried it).
fn purpose_label(purpose: Option<qdn_relay_core::Purpose>) -> &'static str {
    use qdn_relay_core::Purpose;
    match purpose {
        Some(Purpose::Forward { .. }) => "forward",
        Some(Purpose::FollowUp) => "follow_up",
        Some(Purpose::Reply) => "reply",
        Some(Purpose::Notice) => "notice",
        None => "unknown",
    }
}

/// What one relay event counts for; `carrier` names the provider that
/// sent the dispatch's texts (its [`qdn_relay_core::SmsProvider::name`]),
/// unless the event says which carrier a text went through (a
/// [`qdn_relay_core::Via`], with several carriers on a line).
pub fn observations(event: &RelayEvent, carrier: &str) -> Vec<Observation> {
    let one = |def, labels: &[&str]| vec![Observation::new(def, labels, 1.0)];
    match &event.kind {
        EventKind::Opened { .. } => one(OPENED, &[]),
        EventKind::Sent { via, purpose, .. } => {
            let carrier = via.as_ref().map_or(carrier, |v| v.carrier.as_str());
            one(TEXTS, &[carrier, purpose_label(*purpose), "accepted"])
        }
        EventKind::SendFailed {
            kind,
            code,
            purpose,
            ..
        } => {
            let kind = snake(kind);
            let code = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
            vec![
                Observation::new(TEXTS, &[carrier, purpose_label(*purpose), &kind], 1.0),
                Observation::new(PROVIDER_ERRORS, &[carrier, "send", &kind, &code], 1.0),
            ]
        }
        EventKind::Skipped {
            reason, purpose, ..
        } => one(
            TEXTS,
            &[
                carrier,
                purpose_label(*purpose),
                &format!("skipped_{}", snake(reason)),
            ],
        ),
        EventKind::Delivery {
            status,
            code,
            class,
            ..
        } => {
            let mut out = one(DELIVERIES, &[carrier, &snake(status)]);
            if code.is_some() || class.is_some() {
                let class = class.map_or_else(|| "unknown".to_owned(), |c| snake(&c));
                let code = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
                out.push(Observation::new(
                    PROVIDER_ERRORS,
                    &[carrier, "delivery", &class, &code],
                    1.0,
                ));
            }
            out
        }
        EventKind::Escalated {
            from_level, reason, ..
        } => one(ESCALATIONS, &[&from_level.to_string(), &snake(reason)]),
        EventKind::Exhausted => one(EXHAUSTED, &[]),
        EventKind::Acked { by, level } => {
            let kind = match by {
                Actor::Phone(_) => "text",
                Actor::Operator(_) => "dashboard",
                Actor::Relay => "relay",
            };
            let level = level.map_or_else(|| "none".to_owned(), |l| l.to_string());
            let waited = event.at.since(event.dispatch.created_at());
            vec![
                Observation::new(ACKS, &[kind, &level], 1.0),
                Observation::new(TIME_TO_ACK, &[kind], waited.as_secs_f64()),
            ]
        }
        EventKind::Holding { .. } => one(HOLDS, &[]),
        EventKind::OptedOut { code, .. } => one(
            OPT_OUTS,
            &[if code.is_some() { "carrier" } else { "keyword" }],
        ),
        EventKind::Deferred { .. } => one(THROTTLED, &[]),
        _ => Vec::new(),
    }
}

/// The observations of a sweep: how late each fired deadline was.
pub fn sweep_observations(report: &SweepReport) -> Vec<Observation> {
    report
        .lateness
        .iter()
        .map(|late| Observation::new(LATENESS, &[], late.as_secs_f64()))
        .collect()
}

/// A webhook's observations: taken or refused (`reason`), and how long it
/// took.
pub fn webhook_observations(
    route: &str,
    accepted: bool,
    reason: &str,
    took: Duration,
) -> Vec<Observation> {
    let result = if accepted { "accepted" } else { "refused" };
    vec![
        Observation::new(WEBHOOKS, &[route, result, reason], 1.0),
        Observation::new(WEBHOOK_LATENCY, &[route], took.as_secs_f64()),
    ]
}

/// A webhook retried the relay inside the request (a busy store).
pub fn retry_observation(route: &str) -> Observation {
    Observation::new(WEBHOOK_RETRIES, &[route], 1.0)
}

type Labels = Vec<(String, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}
fn lateness_histogram() -> Histogram {
    Histogram::new(LATENESS_BUCKETS.iter().copied())
}
fn ack_histogram() -> Histogram {
    Histogram::new(ACK_BUCKETS.iter().copied())
}

enum Series {
    Counter(Family<Labels, Counter>),
    Gauge(Family<Labels, Gauge>),
    Histogram(HistogramFamily),
}

/// The registry of every metric in [`CATALOGUE`], rendered in the
/// Prometheus text format ([`Metrics::render`]).
pub struct Metrics {
    registry: Registry,
    series: HashMap<&'static str, Series>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The content type of [`Metrics::render`]'s answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric of the catalogue: those without labels at zero, the
    /// others without series until their first observation.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let mut series = HashMap::new();
        for def in CATALOGUE {
            let s = match def.kind {
                Kind::Counter => {
                    let f = Family::<Labels, Counter>::default();
                    registry.register(def.name, def.help, f.clone());
                    Series::Counter(f)
                }
                Kind::Gauge => {
                    let f = Family::<Labels, Gauge>::default();
                    registry.register(def.name, def.help, f.clone());
                    Series::Gauge(f)
                }
                Kind::Histogram => {
                    let make: fn() -> Histogram = if def.buckets == LATENESS_BUCKETS {
                        lateness_histogram
                    } else if def.buckets == ACK_BUCKETS {
                        ack_histogram
                    } else {
                        latency_histogram
                    };
                    let f = HistogramFamily::new_with_constructor(make);
                    registry.register(def.name, def.help, f.clone());
                    Series::Histogram(f)
                }
            };
            // A series without labels exists from the start (at zero); a
            // labelled one appears with its first observation.
            if def.labels.is_empty() {
                match &s {
                    Series::Counter(f) => drop(f.get_or_create(&Vec::new())),
                    Series::Gauge(f) => drop(f.get_or_create(&Vec::new())),
                    Series::Histogram(f) => drop(f.get_or_create(&Vec::new())),
                }
            }
            series.insert(def.name, s);
        }
        Self { registry, series }
    }

    /// Records one observation.
    pub fn record(&self, o: &Observation) {
        let labels: Labels = o
            .labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        match self.series.get(o.def.name) {
            Some(Series::Counter(f)) => {
                f.get_or_create(&labels).inc_by(o.value as u64);
            }
            Some(Series::Gauge(f)) => {
                f.get_or_create(&labels).set(o.value as i64);
            }
            Some(Series::Histogram(f)) => f.get_or_create(&labels).observe(o.value),
            None => {}
        }
    }

    /// Records several observations.
    pub fn record_all(&self, os: &[Observation]) {
        for o in os {
            self.record(o);
        }
    }

    /// Sets the gauges from the store: its open dispatches (at most
    /// [`GAUGE_SCAN_LIMIT`] of them are read).
    pub async fn refresh_gauges(&self, store: &dyn Store) -> Result<(), StoreError> {
        for o in gauge_observations(store).await? {
            self.record(&o);
        }
        Ok(())
    }

    /// The metrics in the Prometheus (OpenMetrics) text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The gauges' values read from the store (see [`GAUGE_SCAN_LIMIT`]).
pub async fn gauge_observations(store: &dyn Store) -> Result<Vec<Observation>, StoreError> {
    let open = store.list(ListFilter::Open, GAUGE_SCAN_LIMIT).await?;
    let (mut not_acked, mut acked, mut holding, mut owed) = (0u64, 0u64, 0u64, 0u64);
    for d in &open {
        match d.state() {
            qdn_relay_core::State::Acked => acked += 1,
            s if s.is_open() => not_acked += 1,
            _ => continue,
        }
        if d.holding_until().is_some() {
            holding += 1;
        }
        if d.job_sync().is_some_and(|j| j.retry_at.is_some()) {
            owed += 1;
        }
    }
    Ok(vec![
        Observation::new(OPEN, &["open"], not_acked as f64),
        Observation::new(OPEN, &["acked"], acked as f64),
        Observation::new(HOLDING, &[], holding as f64),
        Observation::new(JOB_SYNC_OWED, &[], owed as f64),
    ])
}

/// An [`EventSink`] that counts every event into a [`Metrics`].
#[derive(Debug, Clone)]
pub struct MetricsSink {
    metrics: Arc<Metrics>,
    carrier: String,
}

impl MetricsSink {
    /// Counts into `metrics`, labelling texts with `carrier`.
    pub fn new(metrics: Arc<Metrics>, carrier: impl Into<String>) -> Self {
        Self {
            metrics,
            carrier: carrier.into(),
        }
    }
}

#[async_trait]
impl EventSink for MetricsSink {
    async fn publish(&self, event: &RelayEvent) -> Result<(), SinkError> {
        self.metrics.record_all(&observations(event, &self.carrier));
        Ok(())
    }
}

/// The CloudWatch namespace the embedded-metric-format lines use.
pub const EMF_NAMESPACE: &str = "qdn-relay";

/// One observation as a CloudWatch embedded-metric-format log line (a
/// JSON object on one line): the labels are its dimensions. A histogram's
/// observation is one value of the metric (CloudWatch keeps the
/// percentiles); a counter's is its increment.
pub fn emf_line(o: &Observation, namespace: &str, at: Timestamp) -> String {
    let mut root = serde_json::Map::new();
    let dims: Vec<&str> = o.labels.iter().map(|(k, _)| *k).collect();
    let name = match o.def.kind {
        Kind::Counter => format!("{}_total", o.def.name),
        _ => o.def.name.to_owned(),
    };
    root.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": at.as_millis(),
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dims],
                "Metrics": [{ "Name": name, "Unit": o.def.unit }],
            }],
        }),
    );
    for (k, v) in &o.labels {
        root.insert((*k).to_owned(), serde_json::Value::String(v.clone()));
    }
    root.insert(name, serde_json::json!(o.value));
    serde_json::Value::Object(root).to_string()
}

/// Where [`EmfSink`] writes its lines.
pub type EmfWriter = Arc<dyn Fn(&str) + Send + Sync>;

/// An [`EventSink`] that writes each event's observations as
/// embedded-metric-format lines (for Lambda: to standard output, which
/// CloudWatch Logs keeps and extracts the metrics from).
#[derive(Clone)]
pub struct EmfSink {
    carrier: String,
    namespace: String,
    out: EmfWriter,
}

impl std::fmt::Debug for EmfSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmfSink")
            .field("carrier", &self.carrier)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl EmfSink {
    /// Lines for `carrier`'s texts in [`EMF_NAMESPACE`], written to
    /// standard output.
    pub fn stdout(carrier: impl Into<String>) -> Self {
        Self::new(carrier, Arc::new(|line: &str| println!("{line}")))
    }

    /// Lines written by `out`.
    pub fn new(carrier: impl Into<String>, out: EmfWriter) -> Self {
        Self {
            carrier: carrier.into(),
            namespace: EMF_NAMESPACE.to_owned(),
            out,
        }
    }

    /// Writes observations made outside the event stream (a sweep's
    /// lateness, a webhook's), stamped `at`.
    pub fn write(&self, os: &[Observation], at: Timestamp) {
        for o in os {
            (self.out)(&emf_line(o, &self.namespace, at));
        }
    }
}

#[async_trait]
impl EventSink for EmfSink {
    async fn publish(&self, event: &RelayEvent) -> Result<(), SinkError> {
        self.write(&observations(event, &self.carrier), event.at);
        Ok(())
    }
}
