//! The Twilio REST client (feature `rest`; with reqwest, feature
//! `client`): sends texts through the Messages API and implements
//! [`SmsProvider`], over a [`Transport`].
//!
//! - `POST {base}/2010-04-01/Accounts/{AccountSid}/Messages.json` with
//!   `To`, `From` (or `MessagingServiceSid` when configured), `Body` (cut to
//!   1,600 characters), `StatusCallback` (when configured) and
//!   `ValidityPeriod` (when the message has one).
//! - Basic auth with the Account SID and Auth Token, or with an API Key SID
//!   and its secret (the Account SID stays in the path).
//! - Every call has a connect timeout and an overall timeout; the whole
//!   send, retries included, has a time budget below the core's
//!   [`OUTBOX_GRACE`].
//! - Retries only where Twilio guarantees nothing was sent: HTTP 429 /
//!   error 20429 (after `Retry-After` when given) and connections that
//!   could not be made, with exponential backoff and jitter, a bounded
//!   number of attempts and a bounded total time. A 5xx or a timeout after
//!   the request went out is [`SendErrorKind::MaybeSent`], never retried.
//! - Secrets are [`Secret`]s: no `Debug`, `Display`, error or log line
//!   shows them, and error messages from the server are scrubbed of them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use qdn_relay_core::{
    OUTBOX_GRACE, OutboundMessage, ProviderMessageId, SendError, SendErrorKind, SendReceipt,
    SmsProvider, fit_body,
};
use qdn_relay_transport::RetryPolicy;

use crate::classify::send_error_kind;
use crate::secret::Secret;
use crate::sid::{AccountSid, ApiKeySid, MessagingServiceSid};
use qdn_relay_transport::{Answer, Failed, Request, Transport, TransportError, TransportErrorKind};

/// Twilio's API base URL.
pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";
/// Default overall timeout of one HTTP call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Twilio's longest `ValidityPeriod`, in seconds.
pub const MAX_VALIDITY_SECS: u32 = 36_000;

/// The longest error body read, and the most of it quoted in a message.
const MAX_ERROR_BODY: usize = 64 * 1024;
const MAX_QUOTED: usize = 300;

/// How the client authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// The account's Auth Token (basic auth as Account SID : Auth Token).
    AuthToken(Secret),
    /// An API key (basic auth as API Key SID : API Secret).
    ApiKey {
        /// The key's SID (`SK…`).
        key: ApiKeySid,
        /// The key's secret.
        secret: Secret,
    },
}

impl Credentials {
    fn secret(&self) -> &Secret {
        match self {
            Credentials::AuthToken(s) | Credentials::ApiKey { secret: s, .. } => s,
        }
    }
}

/// Why a configuration was refused. The message names the setting (the
/// environment variable, when there is one) and never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting is absent.
    #[error("{var} is not set{hint}")]
    Missing {
        /// The environment variable.
        var: &'static str,
        /// What else would do.
        hint: &'static str,
    },
    /// A setting's value is not valid.
    #[error("invalid {var}: {reason}")]
    Invalid {
        /// The environment variable or setting.
        var: &'static str,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client: {0}")]
    Http(String),
}

/// Everything the client needs. Build it with [`TwilioConfig::new`] or
/// [`TwilioConfig::from_env`], then adjust the public fields.
///
/// `Debug` shows the Account SID and the kind of credentials, never the
/// token or secret.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TwilioConfig {
    /// The account (in every REST path).
    pub account_sid: AccountSid,
    /// How to authenticate.
    pub credentials: Credentials,
    /// The API base URL (`TWILIO_API_BASE`, default
    /// [`DEFAULT_API_BASE`]): `http://` or `https://`, no trailing slash
    /// needed.
    pub api_base: String,
    /// Send through this Messaging Service (`MessagingServiceSid`) instead
    /// of the message's `From`.
    pub messaging_service_sid: Option<MessagingServiceSid>,
    /// Where Twilio posts status callbacks (`StatusCallback`). Each
    /// message's callback URL gets `dispatch=<id>&leg=<n>` added to its
    /// query (see [`callback_url`]), so a callback can be placed even
    /// before the answer to the send is recorded.
    pub status_callback: Option<String>,
    /// Connect timeout of one call.
    pub connect_timeout: Duration,
    /// Overall timeout of one call (connect, send, answer).
    pub timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
}

fn env_value(lookup: &impl Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    lookup(var)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

impl TwilioConfig {
    /// A configuration with the defaults: Twilio's API, a 5 s connect and
    /// 15 s overall timeout, 3 attempts within 30 s.
    pub fn new(account_sid: AccountSid, credentials: Credentials) -> Self {
        Self {
            account_sid,
            credentials,
            api_base: DEFAULT_API_BASE.to_owned(),
            messaging_service_sid: None,
            status_callback: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }

    /// Reads the configuration from the environment:
    ///
    /// - `TWILIO_ACCOUNT_SID` (required);
    /// - `TWILIO_API_KEY` and `TWILIO_API_SECRET`, or else
    ///   `TWILIO_AUTH_TOKEN`;
    /// - `TWILIO_API_BASE` (optional, default [`DEFAULT_API_BASE`]);
    /// - `TWILIO_MESSAGING_SERVICE_SID` (optional).
    ///
    /// Empty variables count as unset; values are trimmed.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var_os(k).map(|v| v.to_string_lossy().into_owned()))
    }

    /// As [`TwilioConfig::from_env`], reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let account = env_value(&lookup, "TWILIO_ACCOUNT_SID").ok_or(ConfigError::Missing {
            var: "TWILIO_ACCOUNT_SID",
            hint: "",
        })?;
        let account_sid = account
            .parse()
            .map_err(|e: crate::SidError| ConfigError::Invalid {
                var: "TWILIO_ACCOUNT_SID",
                reason: e.to_string(),
            })?;
        let key = env_value(&lookup, "TWILIO_API_KEY");
        let secret = env_value(&lookup, "TWILIO_API_SECRET");
        let credentials = match (key, secret) {
            (Some(key), Some(secret)) => Credentials::ApiKey {
                key: key
                    .parse()
                    .map_err(|e: crate::SidError| ConfigError::Invalid {
                        var: "TWILIO_API_KEY",
                        reason: e.to_string(),
                    })?,
                secret: Secret::new(secret),
            },
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    var: "TWILIO_API_SECRET",
                    hint: " (TWILIO_API_KEY is set and needs its secret)",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    var: "TWILIO_API_KEY",
                    hint: " (TWILIO_API_SECRET is set and needs its key SID)",
                });
            }
            (None, None) => match env_value(&lookup, "TWILIO_AUTH_TOKEN") {
                Some(token) => Credentials::AuthToken(Secret::new(token)),
                None => {
                    return Err(ConfigError::Missing {
                        var: "TWILIO_AUTH_TOKEN",
                        hint: " (or set TWILIO_API_KEY and TWILIO_API_SECRET)",
                    });
                }
            },
        };
        let mut config = Self::new(account_sid, credentials);
        if let Some(base) = env_value(&lookup, "TWILIO_API_BASE") {
            config.api_base = normalize_base(&base)?;
        }
        if let Some(ms) = env_value(&lookup, "TWILIO_MESSAGING_SERVICE_SID") {
            config.messaging_service_sid =
                Some(
                    ms.parse()
                        .map_err(|e: crate::SidError| ConfigError::Invalid {
                            var: "TWILIO_MESSAGING_SERVICE_SID",
                            reason: e.to_string(),
                        })?,
                );
        }
        Ok(config)
    }

    /// Checks the settings the type system does not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        normalize_base(&self.api_base)?;
        let invalid = |var, reason: &str| {
            Err(ConfigError::Invalid {
                var,
                reason: reason.to_owned(),
            })
        };
        if self.credentials.secret().is_empty() {
            return invalid("TWILIO_AUTH_TOKEN", "the token or secret is empty");
        }
        if let Some(cb) = &self.status_callback
            && !(cb.starts_with("https://") || cb.starts_with("http://"))
        {
            return invalid(
                "status_callback",
                "must be an absolute http:// or https:// URL",
            );
        }
        self.retry
            .validate(self.timeout, self.connect_timeout, OUTBOX_GRACE)
            .or_else(|e| invalid(e.setting, e.reason))
    }
}

/// One line for a startup log: the account, how it authenticates and where
/// it sends (never the token or secret).
impl fmt::Display for TwilioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Twilio account {} ", self.account_sid)?;
        match &self.credentials {
            Credentials::AuthToken(_) => f.write_str("with its auth token")?,
            Credentials::ApiKey { key, .. } => write!(f, "with API key {key}")?,
        }
        write!(f, " at {}", self.api_base)?;
        if let Some(ms) = &self.messaging_service_sid {
            write!(f, " through messaging service {ms}")?;
        }
        Ok(())
    }
}

fn normalize_base(base: &str) -> Result<String, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        var: "TWILIO_API_BASE",
        reason: reason.to_owned(),
    };
    let base = base.trim().trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
        .ok_or_else(|| invalid("must start with http:// or https://"))?;
    if rest.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(invalid("must be a base URL like https://api.twilio.com"));
    }
    if rest.split('/').next().unwrap_or_default().contains('@') {
        return Err(invalid("must not carry user information"));
    }
    Ok(base.to_owned())
}

/// A message Twilio accepted (the fields of its answer the relay reads).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The message's SID (`SM…` or `MM…`): status callbacks carry it.
    pub sid: ProviderMessageId,
    /// Its status at creation (`queued`, `accepted`, …), informational only:
    /// delivery is reported by status callbacks.
    pub status: Option<String>,
    /// How many segments Twilio counted.
    pub num_segments: Option<u32>,
}

impl Message {
    /// Reads a Messages API answer. Only `sid` is required.
    fn from_json(body: &[u8]) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("answer is not JSON: {e}"))?;
        let sid = v
            .get("sid")
            .and_then(|s| s.as_str())
            .ok_or("answer has no sid")?
            .parse()
            .map_err(|e| format!("answer's sid is not valid: {e}"))?;
        let num_segments = match v.get("num_segments") {
            Some(serde_json::Value::String(s)) => s.parse().ok(),
            Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        };
        Ok(Self {
            sid,
            status: v.get("status").and_then(|s| s.as_str()).map(str::to_owned),
            num_segments,
        })
    }
}

/// Twilio's JSON error body.
#[derive(serde::Deserialize)]
struct ApiError {
    code: Option<u32>,
    message: Option<String>,
    more_info: Option<String>,
}

/// The Twilio REST client. Cheap to clone (the connection pool is
/// shared).
///
/// ```no_run
/// # #[cfg(feature = "client")]
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use qdn_relay_twilio::{TwilioClient, TwilioConfig};
/// let client = TwilioClient::new(TwilioConfig::from_env()?)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TwilioClient {
    http: Arc<dyn Transport>,
    config: TwilioConfig,
    messages_url: String,
    /// The base64 of `user:secret`, scrubbed from messages like the secret.
    basic: Secret,
}

impl fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioClient")
            .field("messages_url", &self.messages_url)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for TwilioClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Twilio REST client for {}", self.config)
    }
}

impl TwilioClient {
    /// A client for `config` (checked with [`TwilioConfig::validate`])
    /// over reqwest with rustls (feature `client`), with the configuration's
    /// connect timeout.
    #[cfg(feature = "client")]
    pub fn new(config: TwilioConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let http = qdn_relay_transport::ReqwestTransport::new(config.connect_timeout)
            .map_err(|e| ConfigError::Http(e.message))?;
        Self::with_transport(config, Arc::new(http))
    }

    /// A client for `config` (checked with [`TwilioConfig::validate`])
    /// sending through `http`, whose connect timeout should be the
    /// configuration's (`connect_timeout`); the overall timeout, retries
    /// and authentication are the client's.
    pub fn with_transport(
        mut config: TwilioConfig,
        http: Arc<dyn Transport>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        config.api_base = normalize_base(&config.api_base)?;
        let messages_url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            config.api_base, config.account_sid
        );
        let user = match &config.credentials {
            Credentials::AuthToken(_) => config.account_sid.to_string(),
            Credentials::ApiKey { key, .. } => key.to_string(),
        };
        let basic = Secret::new(
            base64::engine::general_purpose::STANDARD
                .encode(format!("{user}:{}", config.credentials.secret().expose())),
        );
        Ok(Self {
            http,
            config,
            messages_url,
            basic,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &TwilioConfig {
        &self.config
    }

    /// The form the client posts for `msg`, in order: `To`, `From` or
    /// `MessagingServiceSid`, `Body` (cut to 1,600 characters),
    /// `StatusCallback` and `ValidityPeriod` (clamped to 1..=36000) when
    /// set.
    pub fn message_form(&self, msg: &OutboundMessage) -> Vec<(&'static str, String)> {
        let mut form = vec![("To", msg.to.to_string())];
        match &self.config.messaging_service_sid {
            Some(ms) => form.push(("MessagingServiceSid", ms.to_string())),
            None => form.push(("From", msg.from.to_string())),
        }
        form.push(("Body", fit_body(&msg.body)));
        if let Some(cb) = &self.config.status_callback {
            form.push(("StatusCallback", callback_url(cb, msg)));
        }
        if let Some(v) = msg.validity_secs {
            form.push(("ValidityPeriod", v.clamp(1, MAX_VALIDITY_SECS).to_string()));
        }
        form
    }

    /// Sends `msg`. On success the [`Message`] Twilio created; its status
    /// is informational (delivery comes by status callback).
    pub async fn create_message(&self, msg: &OutboundMessage) -> Result<Message, SendError> {
        let form = self.message_form(msg);
        let result = self.post_message_form(&form).await;
        match &result {
            Ok(m) => tracing::debug!(
                dispatch = %msg.dispatch,
                leg = msg.leg,
                sid = %m.sid,
                "twilio accepted the message"
            ),
            Err(e) => tracing::warn!(
                dispatch = %msg.dispatch,
                leg = msg.leg,
                kind = ?e.kind,
                code = ?e.code,
                error = %e.message,
                "twilio send failed"
            ),
        }
        result
    }

    /// Posts `params` as given to the Messages API, with the client's
    /// authentication, timeouts and retries: the low-level form of
    /// [`TwilioClient::create_message`] (no `Body` fitting, nothing added).
    pub async fn post_message_form<K, V>(&self, params: &[(K, V)]) -> Result<Message, SendError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let body = {
            let mut s = form_urlencoded::Serializer::new(String::new());
            for (k, v) in params {
                s.append_pair(k.as_ref(), v.as_ref());
            }
            bytes::Bytes::from(s.finish())
        };
        self.config
            .retry
            .run(
                self.config.timeout,
                |per_call| {
                    let body = body.clone();
                    async move {
                        let sent = match self.request(body) {
                            Ok(request) => self.http.send(request, per_call).await,
                            Err(e) => Err(e),
                        };
                        match sent {
                            Ok(answer) => self.read_answer(answer).await,
                            Err(e) => Err(self.transport_failure(&e)),
                        }
                    }
                },
                |attempt, delay, error: &SendError| {
                    tracing::info!(
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        kind = ?error.kind,
                        code = ?error.code,
                        error = %error.message,
                        "twilio send not made, retrying"
                    )
                },
            )
            .await
    }

    /// The Messages API request for a form body: basic auth (a sensitive
    /// header), the form's content type, JSON accepted, the client's
    /// user agent.
    fn request(&self, body: bytes::Bytes) -> Result<Request, TransportError> {
        use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, USER_AGENT};
        let build = || -> Result<Request, http::Error> {
            let mut auth = HeaderValue::try_from(format!("Basic {}", self.basic.expose()))?;
            auth.set_sensitive(true);
            http::Request::post(self.messages_url.as_str())
                .header(AUTHORIZATION, auth)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(ACCEPT, "application/json")
                .header(
                    USER_AGENT,
                    concat!("qdn-relay-twilio/", env!("CARGO_PKG_VERSION")),
                )
                .body(body)
        };
        // An http::Error names the part at fault, never a header's value.
        build().map_err(|e| {
            TransportError::new(
                TransportErrorKind::Request,
                format!("{} ({})", self.messages_url, e),
            )
        })
    }

    /// Replaces any occurrence of the secret (or of the basic-auth
    /// credentials) in a server-provided message.
    fn scrub(&self, s: &str) -> String {
        let mut s = s.to_owned();
        for secret in [self.config.credentials.secret(), &self.basic] {
            if !secret.is_empty() {
                s = s.replace(secret.expose(), "[redacted]");
            }
        }
        s
    }

    async fn read_answer(&self, mut answer: Answer) -> Result<Message, Failed<SendError>> {
        let status = answer.status;
        let retry_after = retry_after(&answer.headers);
        let (body, read) = answer.read_body(MAX_ERROR_BODY, !status.is_success()).await;
        if status.is_success() {
            let outcome = match read {
                Ok(()) => Message::from_json(&body),
                Err(e) => Err(format!("reading the answer failed: {e}")),
            };
            return outcome.map_err(|why| {
                Failed::new(
                    SendError::new(
                        SendErrorKind::MaybeSent,
                        format!("Twilio answered HTTP {} but {why}", status.as_u16()),
                    ),
                    false,
                )
            });
        }
        let parsed: Option<ApiError> = serde_json::from_slice(&body).ok();
        let code = parsed.as_ref().and_then(|p| p.code);
        let kind = send_error_kind(status.as_u16(), code);
        let message = match &parsed {
            Some(ApiError {
                message: Some(m),
                more_info,
                ..
            }) => {
                let mut s = format!("Twilio answered HTTP {}", status.as_u16());
                if let Some(c) = code {
                    s.push_str(&format!(" error {c}"));
                }
                s.push_str(&format!(": {m}"));
                if let Some(info) = more_info {
                    s.push_str(&format!(" ({info})"));
                }
                s
            }
            _ => {
                let summary = problem_summary(&body).unwrap_or_else(|| {
                    String::from_utf8_lossy(&body)
                        .trim()
                        .chars()
                        .take(MAX_QUOTED)
                        .collect()
                });
                if summary.is_empty() {
                    format!("Twilio answered HTTP {}", status.as_u16())
                } else {
                    format!("Twilio answered HTTP {}: {summary}", status.as_u16())
                }
            }
        };
        let mut error = SendError::new(kind, self.scrub(&message));
        error.code = code;
        let retry_here =
            kind == SendErrorKind::Retryable && (status.as_u16() == 429 || code == Some(20429));
        if kind == SendErrorKind::Retryable {
            error.retry_after_ms = retry_after.map(|d| d.as_millis() as u64);
        }
        Err(Failed::new(error, retry_here).after(retry_after))
    }

    fn transport_failure(&self, e: &TransportError) -> Failed<SendError> {
        // The error's text names the URL (no secret in it), and causes.
        let detail = self.scrub(&e.message);
        if e.kind == TransportErrorKind::Connect {
            Failed::new(
                SendError::new(
                    SendErrorKind::CarrierDown,
                    format!("could not connect to the Twilio API: {detail}"),
                ),
                true,
            )
        } else if e.kind == TransportErrorKind::Request {
            Failed::new(
                SendError::new(
                    SendErrorKind::Config,
                    format!("could not build the request: {detail}"),
                ),
                false,
            )
        } else if e.kind == TransportErrorKind::Timeout {
            Failed::new(
                SendError::new(
                    SendErrorKind::MaybeSent,
                    format!(
                        "no answer from the Twilio API in time; the message may have been sent: {detail}"
                    ),
                ),
                false,
            )
        } else {
            Failed::new(
                SendError::new(
                    SendErrorKind::MaybeSent,
                    format!(
                        "the request to the Twilio API failed after it was sent; the message may have been sent: {detail}"
                    ),
                ),
                false,
            )
        }
    }
}

/// Summarises an RFC 7807 problem body (what a gateway or a mock such as
/// Prism answers instead of Twilio's error body): its title, then each
/// validation message, or its detail.
fn problem_summary(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let title = v.get("title")?.as_str()?;
    let mut s = title.to_owned();
    let validation: Vec<&str> = v
        .get("validation")
        .and_then(|x| x.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|e| e.get("message").and_then(|m| m.as_str()))
                .collect()
        })
        .unwrap_or_default();
    if !validation.is_empty() {
        s.push_str(": ");
        s.push_str(&validation.join("; "));
    } else if let Some(detail) = v.get("detail").and_then(|d| d.as_str()) {
        s.push_str(": ");
        s.push_str(detail);
    }
    Some(s.chars().take(MAX_QUOTED * 2).collect())
}

/// Reads `Retry-After`: delta-seconds or an HTTP date.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[async_trait]
impl SmsProvider for TwilioClient {
    async fn send(&self, msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
        self.create_message(msg)
            .await
            .map(|m| SendReceipt::new(m.sid))
    }

    fn name(&self) -> &str {
        "twilio"
    }
}

/// The status callback URL for one message: `base` with
/// `dispatch=<id>&leg=<n>` added to its query (before any `#` fragment,
/// where Twilio's connection overrides such as `#rc=5` live). Twilio signs
/// the URL it calls, so the pair is authenticated with the callback.
///
/// ```
/// # use qdn_relay_core::{DispatchId, OutboundMessage, Timestamp};
/// let msg = OutboundMessage {
///     dispatch: DispatchId::new(Timestamp::from_millis(0), 1),
///     leg: 2,
///     to: "+16195550100".parse().unwrap(),
///     from: "+16195550000".parse().unwrap(),
///     body: "hi".into(),
///     validity_secs: None,
///     routes: Vec::new(),
///     avoid: Vec::new(),
/// };
/// let url = qdn_relay_twilio::callback_url("https://relay.example/sms/status?x=1#rc=3", &msg);
/// assert_eq!(
///     url,
///     format!("https://relay.example/sms/status?x=1&dispatch={}&leg=2#rc=3", msg.dispatch)
/// );
/// ```
pub fn callback_url(base: &str, msg: &OutboundMessage) -> String {
    let (head, fragment) = match base.split_once('#') {
        Some((h, f)) => (h, Some(f)),
        None => (base, None),
    };
    let sep = match head.contains('?') {
        true if head.ends_with('?') || head.ends_with('&') => "",
        true => "&",
        false => "?",
    };
    let mut url = format!("{head}{sep}dispatch={}&leg={}", msg.dispatch, msg.leg);
    if let Some(f) = fragment {
        url.push('#');
        url.push_str(f);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";
    const SK: &str = "SK0123456789abcdef0123456789abcdef";

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn from_env_reads_auth_token_or_api_key() {
        let c = TwilioConfig::from_lookup(env(&[
            ("TWILIO_ACCOUNT_SID", AC),
            ("TWILIO_AUTH_TOKEN", " tok \n"),
        ]))
        .unwrap();
        assert_eq!(c.credentials, Credentials::AuthToken(Secret::new("tok")));
        assert_eq!(c.api_base, DEFAULT_API_BASE);
        let c = TwilioConfig::from_lookup(env(&[
            ("TWILIO_ACCOUNT_SID", AC),
            ("TWILIO_AUTH_TOKEN", "tok"),
            ("TWILIO_API_KEY", SK),
            ("TWILIO_API_SECRET", "sec"),
            ("TWILIO_API_BASE", "http://127.0.0.1:4010/"),
            (
                "TWILIO_MESSAGING_SERVICE_SID",
                "MG0123456789abcdef0123456789abcdef",
            ),
        ]))
        .unwrap();
        assert!(matches!(c.credentials, Credentials::ApiKey { .. }));
        assert_eq!(c.api_base, "http://127.0.0.1:4010");
        assert!(c.messaging_service_sid.is_some());
    }

    #[test]
    fn from_env_errors_name_the_variable() {
        let err = |vars: &[(&str, &str)]| {
            TwilioConfig::from_lookup(env(vars))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(err(&[]), "TWILIO_ACCOUNT_SID is not set");
        assert_eq!(
            err(&[("TWILIO_ACCOUNT_SID", AC)]),
            "TWILIO_AUTH_TOKEN is not set (or set TWILIO_API_KEY and TWILIO_API_SECRET)"
        );
        assert_eq!(
            err(&[("TWILIO_ACCOUNT_SID", AC), ("TWILIO_AUTH_TOKEN", "   ")]),
            "TWILIO_AUTH_TOKEN is not set (or set TWILIO_API_KEY and TWILIO_API_SECRET)"
        );
        assert!(
            err(&[("TWILIO_ACCOUNT_SID", "tok-by-mistake")])
                .starts_with("invalid TWILIO_ACCOUNT_SID:")
        );
        assert!(!err(&[("TWILIO_ACCOUNT_SID", "tok-by-mistake")]).contains("tok-by-mistake"));
        assert_eq!(
            err(&[("TWILIO_ACCOUNT_SID", AC), ("TWILIO_API_KEY", SK)]),
            "TWILIO_API_SECRET is not set (TWILIO_API_KEY is set and needs its secret)"
        );
        assert_eq!(
            err(&[("TWILIO_ACCOUNT_SID", AC), ("TWILIO_API_SECRET", "s3cr3t")]),
            "TWILIO_API_KEY is not set (TWILIO_API_SECRET is set and needs its key SID)"
        );
        assert!(
            err(&[
                ("TWILIO_ACCOUNT_SID", AC),
                ("TWILIO_API_KEY", "nope"),
                ("TWILIO_API_SECRET", "s3cr3t")
            ])
            .starts_with("invalid TWILIO_API_KEY:")
        );
        assert_eq!(
            err(&[
                ("TWILIO_ACCOUNT_SID", AC),
                ("TWILIO_AUTH_TOKEN", "t"),
                ("TWILIO_API_BASE", "api.twilio.com")
            ]),
            "invalid TWILIO_API_BASE: must start with http:// or https://"
        );
        assert_eq!(
            err(&[
                ("TWILIO_ACCOUNT_SID", AC),
                ("TWILIO_AUTH_TOKEN", "t"),
                ("TWILIO_API_BASE", "https://u:p@api.twilio.com")
            ]),
            "invalid TWILIO_API_BASE: must not carry user information"
        );
        assert!(
            err(&[
                ("TWILIO_ACCOUNT_SID", AC),
                ("TWILIO_AUTH_TOKEN", "t"),
                ("TWILIO_MESSAGING_SERVICE_SID", "MGnope")
            ])
            .starts_with("invalid TWILIO_MESSAGING_SERVICE_SID:")
        );
    }

    #[test]
    fn defaults_stay_within_the_outbox_grace() {
        let c = TwilioConfig::new(AC.parse().unwrap(), Credentials::AuthToken("t".into()));
        assert_eq!(c.timeout, Duration::from_secs(15));
        assert!(c.retry.max_total * 2 <= OUTBOX_GRACE);
        assert!(c.validate().is_ok());
        let mut bad = c.clone();
        bad.retry.max_total = OUTBOX_GRACE;
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("retry.max_total")
        );
        let mut bad = c.clone();
        bad.timeout = Duration::from_secs(31);
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.retry.max_attempts = 0;
        assert!(bad.validate().is_err());
        let mut bad = c;
        bad.status_callback = Some("/sms/status".into());
        assert!(bad.validate().is_err());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(http::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn problem_bodies_are_summarised() {
        let body = br#"{"type":"https://stoplight.io/prism/errors#UNPROCESSABLE_ENTITY","title":"Invalid request","status":422,"detail":"Your request is not valid","validation":[{"location":["body"],"severity":"Error","code":"required","message":"Request body must have required property 'To'"}]}"#;
        assert_eq!(
            problem_summary(body).as_deref(),
            Some("Invalid request: Request body must have required property 'To'")
        );
        assert_eq!(
            problem_summary(br#"{"title":"Unauthorized","detail":"no auth"}"#).as_deref(),
            Some("Unauthorized: no auth")
        );
        assert_eq!(problem_summary(b"oops"), None);
        assert_eq!(problem_summary(br#"{"code":1}"#), None);
    }

    #[test]
    fn message_answers_need_a_sid() {
        let m = Message::from_json(
            br#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued","num_segments":"2"}"#,
        )
        .unwrap();
        assert_eq!(m.sid.as_str(), "SM0123456789abcdef0123456789abcdef");
        assert_eq!(m.status.as_deref(), Some("queued"));
        assert_eq!(m.num_segments, Some(2));
        assert!(Message::from_json(br#"{"status":"queued"}"#).is_err());
        assert!(Message::from_json(br#"{"sid":null}"#).is_err());
        assert!(Message::from_json(b"<html>").is_err());
    }
}
