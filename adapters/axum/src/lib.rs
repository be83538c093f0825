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
//! | `POST /sms/dispatches/{job_id}/ack`, `/reply`, `/close` | dashboard | bearer | status JSON |
//! | `POST /sms/dispatches/{job_id}/link` `{"job_id": "J"}` | dashboard | bearer | status JSON |
//! | `GET /sms/events` | dashboard (server-sent events) | bearer, or `?access_token=` | `text/event-stream` |
//! | `GET /health` | load balancers | none | `{"status":"ok"}` |
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
use axum::routing::{get, post};
use qdn_relay_core::{Clock, Relay, SmsProvider, Store};
use qdn_relay_twilio::{Secret, SignatureValidator};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub mod config;
mod dry_run;
mod error;
mod events;
mod maintenance;
mod routes;
#[cfg(feature = "serve")]
mod serve;

pub use config::{RelaySettings, SettingsError};
pub use dry_run::DryRunProvider;
pub use error::{ApiError, check_bearer};
pub use events::EventHub;
pub use maintenance::MaintenanceSink;
#[cfg(feature = "serve")]
pub use serve::{serve, serve_until, shutdown_signal};

/// The relay with every port as a trait object: what the router serves.
pub type DynRelay = Relay<dyn Store, dyn SmsProvider, dyn Clock>;

/// The default request body limit: 64 KiB (a Twilio webhook is a few KiB).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// The HTTP surface's settings.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The public base URL Twilio calls (`RELAY_PUBLIC_URL`), e.g.
    /// `https://relay.example.com` or an API Gateway stage URL. When set it
    /// wins over the `Host` header for signature checks.
    pub public_url: Option<String>,
    /// The dashboard's bearer token (`RELAY_DASHBOARD_TOKEN`). Without one
    /// every dashboard route answers 401.
    pub dashboard_token: Option<Secret>,
    /// Origins allowed by CORS (`RELAY_CORS_ORIGINS`); none by default.
    pub cors_origins: Vec<String>,
    /// The largest request body accepted; larger ones get 413.
    pub body_limit: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            dashboard_token: None,
            cors_origins: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// Why an [`HttpConfig`] is not valid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The public URL is not an absolute http(s) URL.
    #[error(
        "RELAY_PUBLIC_URL must be an absolute http:// or https:// URL without query, got {0:?}"
    )]
    PublicUrl(String),
    /// A CORS origin is not `scheme://host[:port]`.
    #[error("RELAY_CORS_ORIGINS entry {0:?} is not an origin like https://dash.example.com")]
    CorsOrigin(String),
    /// The dashboard token is too short to be a secret.
    #[error("RELAY_DASHBOARD_TOKEN must be at least 16 characters")]
    WeakToken,
}

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
}

impl AppState {
    /// Builds the shared state. `validator` holds the Twilio Auth Token(s);
    /// `events` must also be one of the relay's event sinks for the live
    /// stream to carry anything.
    pub fn new(
        relay: Arc<DynRelay>,
        validator: SignatureValidator,
        events: EventHub,
        config: HttpConfig,
    ) -> Result<Self, ConfigError> {
        let (public_url, cors) = Self::check_http(&config)?;
        Ok(Self {
            inner: Arc::new(Inner {
                relay,
                validator,
                public_url,
                dashboard_token: config.dashboard_token,
                events,
                cors,
                body_limit: config.body_limit.max(1024),
            }),
        })
    }

    /// Checks an [`HttpConfig`]: the normalised public URL and the CORS
    /// origins as header values.
    pub(crate) fn check_http(
        config: &HttpConfig,
    ) -> Result<(Option<String>, Vec<HeaderValue>), ConfigError> {
        let public_url = match &config.public_url {
            None => None,
            Some(u) => Some(normalize_public_url(u)?),
        };
        if let Some(t) = &config.dashboard_token
            && t.expose().chars().count() < 16
        {
            return Err(ConfigError::WeakToken);
        }
        let mut cors = Vec::new();
        for o in &config.cors_origins {
            let o = o.trim().trim_end_matches('/');
            if o.is_empty() {
                continue;
            }
            let valid = (o.starts_with("https://") || o.starts_with("http://"))
                && !o
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.contains('/') || rest.is_empty());
            let hv = HeaderValue::from_str(o).ok().filter(|_| valid);
            cors.push(hv.ok_or_else(|| ConfigError::CorsOrigin(o.to_owned()))?);
        }
        Ok((public_url, cors))
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

fn normalize_public_url(u: &str) -> Result<String, ConfigError> {
    let t = u.trim().trim_end_matches('/');
    let ok = (t.starts_with("https://") || t.starts_with("http://"))
        && t.split_once("://")
            .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'))
        && !t.contains('?')
        && !t.contains('#')
        && !t.contains(char::is_whitespace);
    if ok {
        Ok(t.to_owned())
    } else {
        Err(ConfigError::PublicUrl(u.to_owned()))
    }
}

/// The relay's routes (see the crate docs). Never binds a port.
pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(state.inner.cors.clone()))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(std::time::Duration::from_secs(600));
    let limit = state.inner.body_limit;
    Router::new()
        .route(
            "/sms/inbound",
            post(routes::inbound).options(routes::options),
        )
        .route("/sms/status", post(routes::status).options(routes::options))
        .route("/sms/reply", post(routes::reply).options(routes::options))
        .route(
            "/sms/dispatch-status/{job_id}",
            get(routes::dispatch_status).options(routes::options),
        )
        .route(
            "/sms/dispatches",
            get(routes::list).options(routes::options),
        )
        .route(
            "/sms/dispatches/{job_id}/ack",
            post(routes::ack).options(routes::options),
        )
        .route(
            "/sms/dispatches/{job_id}/reply",
            post(routes::dashboard_reply).options(routes::options),
        )
        .route(
            "/sms/dispatches/{job_id}/close",
            post(routes::close).options(routes::options),
        )
        .route(
            "/sms/dispatches/{job_id}/link",
            post(routes::link).options(routes::options),
        )
        .route("/sms/events", get(routes::events).options(routes::options))
        .route("/health", get(routes::health).options(routes::options))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(cors)
        .with_state(state)
}
