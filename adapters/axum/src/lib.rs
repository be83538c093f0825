//! # qdn-relay-axum
//!
//! The relay's HTTP surface as one axum [`Router`]: Twilio's webhooks, the
//! dashboard's routes and a live event stream. [`router`] never binds a
//! port: a server serves it with `axum::serve`, a Lambda function with
//! `lambda_http::run`, a host application merges it into its own router.
//!
//! | route | caller | auth | answer |
//! |---|---|---|---|
//! | `POST /sms/inbound` | Twilio (a text to a business line) | `X-Twilio-Signature` | TwiML |
//! | `POST /sms/status` | Twilio (status callback) | `X-Twilio-Signature` | 204 |
//! | `POST /sms/reply` | Twilio (form), or the dashboard (JSON) | signature, or bearer | TwiML, or JSON |
//! | `GET /sms/dispatch-status/{job_id}` | dashboard | bearer | status JSON, 404 if unknown |
//! | `GET /sms/dispatches?status=open`, `?job_id=J&status=all` | dashboard | bearer | a list of status JSON |
//! | `POST /sms/dispatches/{job_id}/ack`, `/reply`, `/close`, `/escalate` | dashboard | bearer | status JSON |
//! | `POST /sms/dispatches/{job_id}/link` `{"job_id": "J"}` | dashboard | bearer | status JSON |
//! | `GET /sms/events` | dashboard (server-sent events) | bearer, or `?access_token=` | `text/event-stream` |
//! | `POST /sms/aws/sns` | SNS (AWS SMS two-way texts and delivery events, an HTTPS subscription) | SNS signature, topic allow-list | 200 / 204 |
//! | `GET /health` | load balancers | none | `{"status":"ok"}` |
//! | `/console/...` (feature `console`) | people, in a browser | session cookie from the dashboard token | HTML (see `qdn_relay_console`) |
//! | `GET /metrics` | Prometheus | bearer | the text format; 404 without [`AppState::with_metrics`] |
//! | `OPTIONS` on each | browsers | none | 204; CORS for allowed origins |
//!
//! `{job_id}` is a dispatch id; a host job id (see `qdn_relay_core::Jobs`:
//! the job's most recent dispatch, whose status links to the others in
//! `job_dispatches`); its tag (`K7`, open dispatches); a customer's number
//! (their open dispatch); or the `MessageSid` of any inbound text in it.
//!
//! Signatures are checked against the public URL Twilio called:
//! [`HttpConfig::public_url`] plus the request's path and query when set,
//! else the `Host` header (and `X-Forwarded-Proto`). Bad requests get a
//! 4xx with a JSON body `{"error": {"code": "...", "message": "..."}}` and
//! change nothing.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use axum::routing::{MethodRouter, get, post};
use qdn_relay_app::{DynRelay, HttpConfig, HttpConfigError};
use qdn_relay_aws_sms::{
    CertCache, SubscriptionConfirmer, TransportCertFetcher, TransportConfirmer,
};
use qdn_relay_metrics::{Metrics, Recorder};
use qdn_relay_twilio::{Secret, SignatureValidator};
use tower_http::cors::{AllowOrigin, CorsLayer};

mod error;
mod events;
pub mod maintenance;
mod routes;
#[cfg(feature = "serve")]
mod serve;

pub use error::{ApiError, check_bearer};
pub use events::EventHub;
pub use maintenance::MaintenanceSink;
#[cfg(feature = "serve")]
pub use serve::{
    DRAIN_TIMEOUT, HEADER_READ_TIMEOUT, REQUEST_TIMEOUT, RETRY_DUE, ServeOptions, serve,
    serve_until, serve_with, shutdown_signal,
};

/// How long a request keeps retrying the relay while the store is
/// contended or busy before answering 503: well under the 15 s Twilio
/// waits for a webhook, so a customer's text is not lost to "busy" (a 503
/// is left for a store that is really down; Twilio retries it only as the
/// webhook URL's connection overrides say, see the README).
pub const WEBHOOK_RETRY_BUDGET: std::time::Duration = std::time::Duration::from_secs(8);

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    relay: Arc<DynRelay>,
    validator: SignatureValidator,
    public_url: Option<String>,
    dashboard_token: Option<Secret>,
    events: EventHub,
    cors: Vec<HeaderValue>,
    body_limit: usize,
    retry_budget: std::time::Duration,
    metrics: Option<Arc<Metrics>>,
    recorder: Option<Arc<dyn Recorder>>,
    sns: Option<SnsIntake>,
    /// When set, a text's webhook is answered once its dispatch is durable
    /// and its sends finish in a task tracked here (see
    /// [`AppState::answer_before_sends`]).
    background: Option<tokio_util::task::TaskTracker>,
}

/// What `POST /sms/aws/sns` needs to take AWS SMS's messages from SNS: the
/// topics it accepts (messages from any other are refused), SNS's signing
/// certificates (fetched only from SNS's own HTTPS host, and cached), and
/// what confirms a subscription (a GET of its `SubscribeURL`, SNS's host
/// only). Without it the route answers 404.
pub struct SnsIntake {
    topics: Vec<String>,
    certs: CertCache,
    confirmer: Arc<dyn SubscriptionConfirmer>,
}

impl SnsIntake {
    /// Messages from `topics`, verified with `certs`, subscriptions
    /// confirmed by `confirmer`.
    pub fn new(
        topics: Vec<String>,
        certs: CertCache,
        confirmer: Arc<dyn SubscriptionConfirmer>,
    ) -> Self {
        Self {
            topics,
            certs,
            confirmer,
        }
    }

    /// Messages from `topics`, certificates fetched and subscriptions
    /// confirmed over `http`.
    pub fn over(topics: Vec<String>, http: Arc<dyn qdn_relay_twilio::Transport>) -> Self {
        let certs = CertCache::new(Arc::new(TransportCertFetcher::new(http.clone())));
        Self::new(topics, certs, Arc::new(TransportConfirmer::new(http)))
    }
}

impl AppState {
    /// Builds the shared state. `validator` holds the Twilio Auth Token(s);
    /// `events` must also be one of the relay's event sinks for the live
    /// stream to carry anything. `config` is checked by
    /// [`HttpConfig::check`].
    pub fn new(
        relay: Arc<DynRelay>,
        validator: SignatureValidator,
        events: EventHub,
        config: HttpConfig,
    ) -> Result<Self, HttpConfigError> {
        let checked = config.check()?;
        let (public_url, cors) = (checked.public_url, checked.cors_origins);
        Ok(Self {
            inner: Arc::new(Inner {
                relay,
                validator,
                public_url,
                dashboard_token: config.dashboard_token,
                events,
                cors,
                body_limit: config.body_limit.max(1024),
                retry_budget: WEBHOOK_RETRY_BUDGET,
                metrics: None,
                recorder: None,
                sns: None,
                background: None,
            }),
        })
    }

    /// How long a request keeps retrying the relay while the store is
    /// contended or busy (default [`WEBHOOK_RETRY_BUDGET`]); past it the
    /// answer is 503. Call before the state is shared.
    pub fn with_retry_budget(mut self, budget: std::time::Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.retry_budget = budget;
        }
        self
    }

    /// Serves `GET /metrics` (behind the dashboard bearer) from `metrics`
    /// and counts webhooks into it. The relay's events reach it only if a
    /// [`qdn_relay_metrics::MetricsSink`] over the same registry is one of
    /// the relay's sinks. Call before the state is shared.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.recorder = Some(Arc::clone(&metrics) as Arc<dyn Recorder>);
            inner.metrics = Some(metrics);
        }
        self
    }

    /// Answers a text's webhook as soon as its dispatch, with the texts
    /// it must send (the outbox), is durable, and sends them after the
    /// answer, in tasks tracked by [`AppState::background`] (a server
    /// waits for them when it stops). Twilio's answer then waits for one
    /// save, not for the provider and a second save; a crash between the
    /// answer and the sends is what the outbox covers (the sweep sends
    /// them). Not for Lambda, which may freeze the process once it has
    /// answered. Call before the state is shared.
    pub fn answer_before_sends(mut self) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.background = Some(tokio_util::task::TaskTracker::new());
        }
        self
    }

    /// The sends left to finish after their webhooks' answers, with
    /// [`AppState::answer_before_sends`]: wait for them before stopping
    /// ([`ServeOptions::background`]).
    pub fn background(&self) -> Option<tokio_util::task::TaskTracker> {
        self.inner.background.clone()
    }

    /// Takes AWS SMS's SNS messages at `POST /sms/aws/sns` (see
    /// [`SnsIntake`]). Call before the state is shared.
    pub fn with_sns(mut self, sns: SnsIntake) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.sns = Some(sns);
        }
        self
    }

    /// Counts webhooks into `recorder` without serving `/metrics` (Lambda:
    /// embedded-metric-format log lines). Call before the state is shared.
    pub fn with_recorder(mut self, recorder: Arc<dyn Recorder>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.recorder = Some(recorder);
        }
        self
    }

    /// The metrics registry, if metrics are on.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.inner.metrics.as_ref()
    }

    /// The relay behind the routes.
    pub fn relay(&self) -> &Arc<DynRelay> {
        &self.inner.relay
    }

    /// The live event hub.
    pub fn events(&self) -> &EventHub {
        &self.inner.events
    }
}

/// One route of [`router`]: its method and path (axum's `{param}`
/// syntax, as API Gateway's route keys write it too).
pub type RouteKey = (Method, &'static str);

/// Routes [`router`] serves that the Lambda deployment does not route
/// through API Gateway: the event stream (API Gateway would buffer it).
/// Nor `/metrics`: on Lambda the same figures are embedded-metric-format
/// log lines.
pub const NOT_BEHIND_API_GATEWAY: &[&str] = &["/sms/events", "/console/events", "/metrics"];

/// Every route with its handler: [`router`] is built from this table and
/// [`routes`] lists it, so what the router serves and what a deployment
/// routes to it (the SAM template, checked by a test) come from one place.
fn route_table() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![
        (Method::POST, "/sms/inbound", post(routes::inbound)),
        (Method::POST, "/sms/status", post(routes::status)),
        (Method::POST, "/sms/reply", post(routes::reply)),
        (
            Method::GET,
            "/sms/dispatch-status/{job_id}",
            get(routes::dispatch_status),
        ),
        (Method::GET, "/sms/dispatches", get(routes::list)),
        (
            Method::POST,
            "/sms/dispatches/{job_id}/ack",
            post(routes::ack),
        ),
        (
            Method::POST,
            "/sms/dispatches/{job_id}/reply",
            post(routes::dashboard_reply),
        ),
        (
            Method::POST,
            "/sms/dispatches/{job_id}/close",
            post(routes::close),
        ),
        (
            Method::POST,
            "/sms/dispatches/{job_id}/escalate",
            post(routes::escalate),
        ),
        (
            Method::POST,
            "/sms/dispatches/{job_id}/link",
            post(routes::link),
        ),
        (Method::GET, "/sms/events", get(routes::events)),
        (Method::POST, "/sms/aws/sns", post(routes::aws_sns)),
        (Method::GET, "/health", get(routes::health)),
        (Method::GET, "/metrics", get(routes::metrics)),
    ]
}

/// The routes [`router`] serves (each of the relay's also answers
/// `OPTIONS` for CORS); with the feature `console`, the console's too
/// (same-origin pages: no CORS).
pub fn routes() -> Vec<RouteKey> {
    let relay = route_table()
        .into_iter()
        .map(|(method, path, _)| (method, path));
    #[cfg(feature = "console")]
    let relay = relay.chain(qdn_relay_console::routes());
    relay.collect()
}

/// `GET /metrics` alone, without authentication, for a listen address
/// of its own inside the network (`RELAY_METRICS_LISTEN`): 404 when the
/// state has no metrics.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(routes::metrics_open))
        .with_state(state)
}

/// The relay's routes (see the crate docs and [`routes`]). Never binds a
/// port.
pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(state.inner.cors.clone()))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(std::time::Duration::from_secs(600));
    let limit = state.inner.body_limit;
    let mut router = Router::new();
    let mut with_options = std::collections::HashSet::new();
    for (_, path, handler) in route_table() {
        let handler = if with_options.insert(path) {
            handler.options(routes::options)
        } else {
            handler
        };
        router = router.route(path, handler);
    }
    #[cfg(feature = "console")]
    let console = {
        let hub = state.inner.events.clone();
        qdn_relay_console::router(
            qdn_relay_console::Console::new(
                state.inner.relay.clone(),
                state.inner.dashboard_token.as_ref(),
            )
            .with_events(move || hub.subscribe()),
        )
    };
    let router = router.fallback(routes::not_found).with_state(state);
    #[cfg(feature = "console")]
    let router = router.merge(console);
    router.layer(DefaultBodyLimit::max(limit)).layer(cors)
}
