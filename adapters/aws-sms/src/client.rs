//! The `SendTextMessage` client: [`AwsSmsClient`], an [`SmsProvider`]
//! over any [`Transport`].
//!
//! - One JSON 1.0 POST per attempt (`X-Amz-Target:
//!   PinpointSMSVoiceV2.SendTextMessage`), signed with SigV4 for the
//!   signing name `sms-voice` ([`qdn_relay_transport::aws`]).
//! - The request: `DestinationPhoneNumber`, `OriginationIdentity` (the
//!   line's, see [`AwsSmsConfig::origination`]), `MessageBody` (cut to
//!   1,600 characters as for Twilio), `MessageType`, `ConfigurationSetName`
//!   (when configured, so delivery events are published), `Context`
//!   (`dispatch` and `leg`, echoed in those events, as Twilio's callback
//!   URL carries them) and `TimeToLive` (the message's validity, clamped to
//!   5..=259,200 s).
//! - Every call has a connect timeout and an overall timeout; the whole
//!   send, retries included, has a time budget below the core's
//!   [`OUTBOX_GRACE`]. Only throttling and connections that could not be
//!   made are retried, with backoff ([`RetryPolicy`]).
//! - Errors are classified by [`Failure`] (the one table); credentials
//!   never reach a log, a `Debug` or an error.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use qdn_relay_core::{
    OUTBOX_GRACE, OutboundMessage, PhoneNumber, ProviderMessageId, SendError, SendReceipt,
    SmsProvider, fit_body,
};
use qdn_relay_transport::aws::{
    Credentials, ErrorAnswer, JsonCall, JsonVersion, ProvideCredentials, SharedCredentialsProvider,
    credentials_from_lookup, endpoint_from_lookup, region_from_lookup, signed_json_request,
};
use qdn_relay_transport::{Answer, Failed, RetryPolicy, Transport, TransportError};

use crate::classify::{Failure, Scope};

/// The operation's `X-Amz-Target`.
pub const TARGET: &str = "PinpointSMSVoiceV2.SendTextMessage";
/// The SigV4 signing name.
pub const SIGNING_NAME: &str = "sms-voice";
/// The endpoint prefix: `https://sms-voice.<region>.amazonaws.com`.
pub const ENDPOINT_PREFIX: &str = "sms-voice";
/// The `AWS_ENDPOINT_URL_<SERVICE>` suffix of this service.
pub const ENDPOINT_VAR: &str = "PINPOINT_SMS_VOICE_V2";
/// Default overall timeout of one call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);
/// The shortest `TimeToLive` the service accepts, in seconds.
pub const MIN_TIME_TO_LIVE: u32 = 5;
/// The longest `TimeToLive` the service accepts (72 h), in seconds.
pub const MAX_TIME_TO_LIVE: u32 = 259_200;
/// The `Context` key carrying the dispatch id.
pub const CONTEXT_DISPATCH: &str = "dispatch";
/// The `Context` key carrying the leg's index.
pub const CONTEXT_LEG: &str = "leg";

/// The longest answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// Why a configuration was refused. The message names the setting (the
/// environment variable, when there is one) and never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A required setting is absent.
    #[error("{0}")]
    Missing(String),
    /// A setting's value is not valid.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The environment variable or setting.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client: {0}")]
    Http(String),
}

/// A model-checked string: 1 to 256 of `[A-Za-z0-9_:/+-]` (`plus`
/// allowed or not).
fn model_token(s: &str, plus: bool, setting: &'static str) -> Result<String, ConfigError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "_:/-".contains(c) || (plus && c == '+');
    if s.is_empty() || s.len() > 256 || !s.chars().all(ok) {
        return Err(ConfigError::Invalid {
            setting,
            reason: format!(
                "{s:?} is not 1 to 256 of letters, digits and _:/{}-",
                if plus { "+" } else { "" }
            ),
        });
    }
    Ok(s.to_owned())
}

/// Where a text is sent from: a phone number (E.164), a phone number id or
/// ARN, a pool id or ARN, or a sender id (the model's
/// `TextMessageOriginationIdentity`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OriginationIdentity(String);

impl OriginationIdentity {
    /// The identity as the service reads it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for OriginationIdentity {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        model_token(s.trim(), true, "origination identity").map(Self)
    }
}

impl From<PhoneNumber> for OriginationIdentity {
    fn from(p: PhoneNumber) -> Self {
        Self(p.to_string())
    }
}

impl fmt::Display for OriginationIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A configuration set's name or ARN (the model's
/// `ConfigurationSetNameOrArn`): its event destinations receive the
/// delivery events of the texts sent with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfigurationSet(String);

impl ConfigurationSet {
    /// The name as the service reads it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ConfigurationSet {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        model_token(s.trim(), false, "configuration set").map(Self)
    }
}

impl fmt::Display for ConfigurationSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `MessageType` of the texts sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MessageType {
    /// Critical or time-sensitive (the relay's forwards and replies).
    #[default]
    Transactional,
    /// Not critical or time-sensitive.
    Promotional,
}

impl MessageType {
    /// The value the service reads.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Transactional => "TRANSACTIONAL",
            MessageType::Promotional => "PROMOTIONAL",
        }
    }
}

/// Everything the client needs. Build it with [`AwsSmsConfig::new`] or
/// [`AwsSmsConfig::from_lookup`], then adjust the public fields.
///
/// `Debug` never shows the credentials.
#[derive(Clone)]
#[non_exhaustive]
pub struct AwsSmsConfig {
    /// The signing region.
    pub region: String,
    /// The endpoint URL (scheme and authority): the regional endpoint, or
    /// an override (a test peer, a VPC endpoint).
    pub endpoint: String,
    /// Where credentials come from: the environment's by default; any
    /// provider (the AWS SDK's default chain, an assumed role) will do.
    pub credentials: SharedCredentialsProvider,
    /// `ConfigurationSetName`: its event destinations get the delivery
    /// events. Without one, no delivery report ever comes.
    pub configuration_set: Option<ConfigurationSet>,
    /// The origination identity of each business line. A line not listed
    /// sends from its own number (an AWS number that is the line itself).
    pub origination: BTreeMap<PhoneNumber, OriginationIdentity>,
    /// `MessageType`.
    pub message_type: MessageType,
    /// Connect timeout of one call.
    pub connect_timeout: Duration,
    /// Overall timeout of one call (connect, send, answer).
    pub timeout: Duration,
    /// Retries (throttling and connection failures only).
    pub retry: RetryPolicy,
}

impl fmt::Debug for AwsSmsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSmsConfig")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("configuration_set", &self.configuration_set)
            .field("origination", &self.origination)
            .field("message_type", &self.message_type)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for AwsSmsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AWS SMS in {} at {}", self.region, self.endpoint)?;
        if let Some(cs) = &self.configuration_set {
            write!(f, " with configuration set {cs}")?;
        }
        Ok(())
    }
}

impl AwsSmsConfig {
    /// A configuration for `region` with its regional endpoint, these
    /// credentials, no configuration set, every line sending from its own
    /// number, transactional texts, a 3.1 s connect and 10 s overall
    /// timeout, 3 attempts within 30 s.
    pub fn new(region: impl Into<String>, credentials: SharedCredentialsProvider) -> Self {
        let region = region.into();
        Self {
            endpoint: endpoint_from_lookup(|_| None, ENDPOINT_VAR, ENDPOINT_PREFIX, &region),
            region,
            credentials,
            configuration_set: None,
            origination: BTreeMap::new(),
            message_type: MessageType::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
        }
    }

    /// Reads the AWS settings from the environment, as the Lambda
    /// functions' secrets code does: the region (`AWS_REGION`, else
    /// `AWS_DEFAULT_REGION`), the endpoint
    /// (`AWS_ENDPOINT_URL_PINPOINT_SMS_VOICE_V2`, else `AWS_ENDPOINT_URL`,
    /// else the regional one) and the credentials (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`). The configuration
    /// set and the lines' origination identities are the caller's to set.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let region = region_from_lookup(&lookup)
            .map_err(|e| ConfigError::Missing(format!("{e} (the region of AWS SMS)")))?;
        let credentials = credentials_from_lookup(&lookup).map_err(ConfigError::Missing)?;
        let mut config = Self::new(region, SharedCredentialsProvider::new(credentials));
        config.endpoint =
            endpoint_from_lookup(&lookup, ENDPOINT_VAR, ENDPOINT_PREFIX, &config.region);
        Ok(config)
    }

    /// The origination identity of a line.
    pub fn origination_of(&self, line: PhoneNumber) -> OriginationIdentity {
        self.origination
            .get(&line)
            .cloned()
            .unwrap_or_else(|| line.into())
    }

    /// Checks the settings the type system does not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: &str| {
            Err(ConfigError::Invalid {
                setting,
                reason: reason.to_owned(),
            })
        };
        if self.region.is_empty()
            || !self
                .region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return invalid("AWS_REGION", "must be a region name like us-east-1");
        }
        let uri: http::Uri = match self.endpoint.parse() {
            Ok(u) => u,
            Err(_) => return invalid("endpoint", "must be an absolute http:// or https:// URL"),
        };
        if !matches!(uri.scheme_str(), Some("http" | "https"))
            || uri.host().is_none()
            || uri.authority().is_some_and(|a| a.as_str().contains('@'))
            || uri.path_and_query().is_some_and(|p| p.as_str() != "/")
        {
            return invalid(
                "endpoint",
                "must be an http:// or https:// URL with a host and nothing after it",
            );
        }
        self.retry
            .validate(self.timeout, self.connect_timeout, OUTBOX_GRACE)
            .or_else(|e| invalid(e.setting, e.reason))
    }
}

/// A failed send: the core's error (what the relay acts on today) and the
/// [`Failure`] it came from (its scope, for failover between carriers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
#[non_exhaustive]
pub struct SendFailure {
    /// What went wrong, in the table's terms.
    pub failure: Failure,
    /// The core's error: its kind is `failure`'s, the message names AWS's
    /// error code and reason, and never holds a credential.
    pub error: SendError,
}

impl SendFailure {
    /// Whose problem it is.
    pub fn scope(&self) -> Scope {
        self.failure.scope()
    }

    /// Whether every send through this carrier would fail alike.
    pub fn carrier_wide(&self) -> bool {
        self.failure.carrier_wide()
    }
}

/// The `SendTextMessage` client (see the [module docs](self)). Cheap to
/// clone.
#[derive(Clone)]
pub struct AwsSmsClient {
    http: Arc<dyn Transport>,
    config: Arc<AwsSmsConfig>,
}

impl fmt::Debug for AwsSmsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSmsClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for AwsSmsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AWS SMS client for {}", self.config)
    }
}

impl AwsSmsClient {
    /// A client for `config` (checked with [`AwsSmsConfig::validate`])
    /// over reqwest with rustls (feature `reqwest`).
    #[cfg(feature = "reqwest")]
    pub fn new(config: AwsSmsConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let http = qdn_relay_transport::ReqwestTransport::new(config.connect_timeout)
            .map_err(|e| ConfigError::Http(e.message))?;
        Self::with_transport(config, Arc::new(http))
    }

    /// A client for `config` (checked with [`AwsSmsConfig::validate`])
    /// sending through `http`, whose connect timeout should be the
    /// configuration's.
    pub fn with_transport(
        mut config: AwsSmsConfig,
        http: Arc<dyn Transport>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        config.endpoint = config.endpoint.trim_end_matches('/').to_owned();
        Ok(Self {
            http,
            config: Arc::new(config),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &AwsSmsConfig {
        &self.config
    }

    /// The `SendTextMessage` request for `msg`, or why it is refused
    /// before sending (an empty body).
    pub fn request_body(&self, msg: &OutboundMessage) -> Result<serde_json::Value, SendFailure> {
        let body = fit_body(&msg.body);
        if body.trim().is_empty() {
            return Err(failure(
                Failure::InvalidMessage,
                "the text is empty: AWS SMS needs a non-blank MessageBody".to_owned(),
            ));
        }
        let mut req = serde_json::json!({
            "DestinationPhoneNumber": msg.to.to_string(),
            "OriginationIdentity": self.config.origination_of(msg.from).as_str(),
            "MessageBody": body,
            "MessageType": self.config.message_type.as_str(),
            "Context": {
                CONTEXT_DISPATCH: msg.dispatch.to_string(),
                CONTEXT_LEG: msg.leg.to_string(),
            },
        });
        if let Some(cs) = &self.config.configuration_set {
            req["ConfigurationSetName"] = cs.as_str().into();
        }
        if let Some(v) = msg.validity_secs {
            req["TimeToLive"] = v.clamp(MIN_TIME_TO_LIVE, MAX_TIME_TO_LIVE).into();
        }
        Ok(req)
    }

    /// Sends `msg`: the message id AWS gave it, or the failure with its
    /// scope.
    pub async fn send_text_message(
        &self,
        msg: &OutboundMessage,
    ) -> Result<ProviderMessageId, SendFailure> {
        let result = self.send_inner(msg).await;
        match &result {
            Ok(id) => tracing::debug!(
                dispatch = %msg.dispatch,
                leg = msg.leg,
                message_id = %id,
                "aws sms accepted the message"
            ),
            Err(e) => tracing::warn!(
                dispatch = %msg.dispatch,
                leg = msg.leg,
                failure = ?e.failure,
                kind = ?e.error.kind,
                carrier_wide = e.carrier_wide(),
                error = %e.error.message,
                "aws sms send failed"
            ),
        }
        result
    }

    async fn send_inner(&self, msg: &OutboundMessage) -> Result<ProviderMessageId, SendFailure> {
        let body = Bytes::from(self.request_body(msg)?.to_string());
        let credentials = self
            .config
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| {
                failure(
                    Failure::AccessDenied,
                    format!("no AWS credentials to sign with: {e}"),
                )
            })?;
        let user_agent = concat!("qdn-relay-aws-sms/", env!("CARGO_PKG_VERSION"));
        let call = JsonCall::new(
            SIGNING_NAME,
            &self.config.region,
            &self.config.endpoint,
            TARGET,
            JsonVersion::V1_0,
            user_agent,
        );
        self.config
            .retry
            .run(
                self.config.timeout,
                |per_call| {
                    let (credentials, call, body) = (&credentials, &call, &body);
                    async move {
                        let request =
                            signed_json_request(credentials, call, body, SystemTime::now())
                                .map_err(|e| {
                                    failure(
                                        Failure::Misconfigured,
                                        format!("could not sign the request: {}", e.message),
                                    )
                                });
                        let outcome = match request {
                            Ok(request) => match self.http.send(request, per_call).await {
                                Ok(answer) => self.read_answer(answer, credentials).await,
                                Err(e) => Err(self.transport_failure(&e, credentials)),
                            },
                            Err(e) => Err(e),
                        };
                        outcome.map_err(|e| {
                            let again = e.failure.retried_by_client();
                            Failed::new(e, again)
                        })
                    }
                },
                |attempt, delay, e: &SendFailure| {
                    tracing::info!(
                        attempt,
                        delay_ms = delay.as_millis() as u64,
                        failure = ?e.failure,
                        error = %e.error.message,
                        "aws sms send not made, retrying"
                    )
                },
            )
            .await
    }

    async fn read_answer(
        &self,
        mut answer: Answer,
        credentials: &Credentials,
    ) -> Result<ProviderMessageId, SendFailure> {
        let status = answer.status;
        let (body, read) = answer.read_body(MAX_ANSWER, !status.is_success()).await;
        if status.is_success() {
            let id = read
                .map_err(|e| format!("reading the answer failed: {e}"))
                .and_then(|()| message_id(&body));
            return id.map_err(|why| {
                failure(
                    Failure::MalformedAnswer,
                    format!(
                        "AWS SMS answered HTTP {} but {why}; the message may have been sent",
                        status.as_u16()
                    ),
                )
            });
        }
        let error = ErrorAnswer::parse(status.as_u16(), &answer.headers, &body);
        let kind = Failure::from_answer(&error);
        let mut text = format!("AWS SMS answered {}", error.summary());
        if let Some(reason) = error.field("Reason") {
            text.push_str(&format!(" [reason {reason}]"));
        }
        if let Some(fields) = error.body.get("Fields").and_then(|f| f.as_array()) {
            let names: Vec<String> = fields
                .iter()
                .filter_map(|f| {
                    let name = f.get("Name")?.as_str()?;
                    let msg = f.get("Message").and_then(|m| m.as_str()).unwrap_or("");
                    Some(format!("{name}: {msg}"))
                })
                .collect();
            if !names.is_empty() {
                text.push_str(&format!(" [{}]", names.join("; ")));
            }
        }
        if let (Some(t), Some(id)) = (error.field("ResourceType"), error.field("ResourceId")) {
            text.push_str(&format!(" [{t} {id}]"));
        }
        Err(failure(kind, scrub(&text, credentials)))
    }

    fn transport_failure(&self, e: &TransportError, credentials: &Credentials) -> SendFailure {
        let f = Failure::from_transport(e.kind);
        let detail = scrub(&e.message, credentials);
        let text = match f {
            Failure::NotSent => format!("could not connect to AWS SMS: {detail}"),
            Failure::Misconfigured => format!("could not build the request: {detail}"),
            _ => format!(
                "no answer from AWS SMS in time, or the connection broke after the request was sent; the message may have been sent: {detail}"
            ),
        };
        failure(f, text)
    }
}

/// A failure with its core error.
fn failure(failure: Failure, message: String) -> SendFailure {
    SendFailure {
        failure,
        error: SendError::new(failure.kind(), message),
    }
}

/// Replaces the secret key and the session token wherever a
/// server-provided text repeats them.
fn scrub(s: &str, credentials: &Credentials) -> String {
    let mut s = s.to_owned();
    for secret in [
        Some(credentials.secret_access_key()),
        credentials.session_token(),
    ]
    .into_iter()
    .flatten()
    {
        if !secret.is_empty() {
            s = s.replace(secret, "[redacted]");
        }
    }
    s
}

/// The `MessageId` of a `SendTextMessage` answer.
fn message_id(body: &[u8]) -> Result<ProviderMessageId, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    v.get("MessageId")
        .and_then(serde_json::Value::as_str)
        .ok_or("the answer has no MessageId")?
        .parse()
        .map_err(|e| format!("the answer's MessageId is not valid: {e}"))
}

#[async_trait]
impl SmsProvider for AwsSmsClient {
    async fn send(&self, msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
        self.send_text_message(msg)
            .await
            .map(SendReceipt::new)
            .map_err(|f| f.error)
    }

    fn name(&self) -> &str {
        "aws-sms"
    }
}

#[cfg(test)]
mod tests {
    use qdn_relay_core::{DispatchId, SendErrorKind, Timestamp};

    use super::*;

    fn config() -> AwsSmsConfig {
        AwsSmsConfig::new(
            "us-east-1",
            SharedCredentialsProvider::new(Credentials::new(
                "AKIDEXAMPLE",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                Some("tok3n".into()),
                None,
                "test",
            )),
        )
    }

    #[derive(Debug)]
    struct Never;

    #[async_trait]
    impl Transport for Never {
        async fn send(
            &self,
            _: qdn_relay_transport::Request,
            _: Duration,
        ) -> Result<Answer, TransportError> {
            Err(TransportError::new(
                qdn_relay_transport::TransportErrorKind::Connect,
                "not in unit tests",
            ))
        }
    }

    fn msg(body: &str) -> OutboundMessage {
        OutboundMessage {
            dispatch: DispatchId::new(Timestamp::from_millis(1_795_000_000_000), 7),
            leg: 3,
            to: "+16195550100".parse().expect("number"),
            from: "+18583354807".parse().expect("number"),
            body: body.to_owned(),
            validity_secs: None,
            routes: Vec::new(),
            avoid: Vec::new(),
        }
    }

    #[test]
    fn the_request_carries_every_field_the_relay_sets() {
        let mut c = config();
        c.configuration_set = Some("relay-events".parse().expect("name"));
        c.origination.insert(
            "+18583354807".parse().expect("line"),
            "pool-0123456789abcdef0123456789abcdef".parse().expect("id"),
        );
        let client = AwsSmsClient::with_transport(c, Arc::new(Never)).expect("valid");
        let mut m = msg("hello");
        m.validity_secs = Some(900);
        let req = client.request_body(&m).expect("request");
        assert_eq!(
            req,
            serde_json::json!({
                "DestinationPhoneNumber": "+16195550100",
                "OriginationIdentity": "pool-0123456789abcdef0123456789abcdef",
                "MessageBody": "hello",
                "MessageType": "TRANSACTIONAL",
                "ConfigurationSetName": "relay-events",
                "Context": {"dispatch": m.dispatch.to_string(), "leg": "3"},
                "TimeToLive": 900,
            })
        );
        // A line without an identity sends from its own number; TTLs are
        // clamped to what the service accepts.
        let client = AwsSmsClient::with_transport(config(), Arc::new(Never)).expect("valid");
        for (v, want) in [(1, 5), (1_000_000, 259_200)] {
            m.validity_secs = Some(v);
            let req = client.request_body(&m).expect("request");
            assert_eq!(req["OriginationIdentity"], "+18583354807");
            assert_eq!(req["TimeToLive"], want);
            assert!(req.get("ConfigurationSetName").is_none());
        }
        let err = client.request_body(&msg(" \n ")).expect_err("blank");
        assert_eq!(err.failure, Failure::InvalidMessage);
        assert_eq!(err.error.kind, SendErrorKind::Rejected);
    }

    #[test]
    fn settings_are_checked() {
        let bad = |f: &dyn Fn(&mut AwsSmsConfig)| {
            let mut c = config();
            f(&mut c);
            c.validate().expect_err("invalid")
        };
        bad(&|c| c.endpoint = "sms-voice.us-east-1.amazonaws.com".into());
        bad(&|c| c.endpoint = "https://user@sms-voice.us-east-1.amazonaws.com".into());
        bad(&|c| c.endpoint = "https://sms-voice.us-east-1.amazonaws.com/path".into());
        bad(&|c| c.region = "US East".into());
        bad(&|c| c.retry.max_total = OUTBOX_GRACE);
        bad(&|c| c.timeout = Duration::ZERO);
        config().validate().expect("the defaults are valid");
        assert!("pool abc".parse::<OriginationIdentity>().is_err());
        assert!("+1858".parse::<ConfigurationSet>().is_err());
        assert!(
            "arn:aws:sms-voice:us-east-1:111122223333:pool/pool-1"
                .parse::<OriginationIdentity>()
                .is_ok()
        );
    }

    #[test]
    fn from_lookup_reads_the_aws_settings() {
        let vars = [
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            (
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            ),
            (
                "AWS_ENDPOINT_URL_PINPOINT_SMS_VOICE_V2",
                "http://127.0.0.1:4566/",
            ),
        ];
        let get = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        };
        let c = AwsSmsConfig::from_lookup(get).expect("config");
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.endpoint, "http://127.0.0.1:4566");
        let shown = format!("{c:?} {c}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        let c = AwsSmsConfig::from_lookup(|k| (k == "AWS_REGION").then(|| "ap-south-1".into()));
        assert!(
            matches!(&c, Err(ConfigError::Missing(m)) if m.contains("AWS_ACCESS_KEY_ID")),
            "{c:?}"
        );
        let c = AwsSmsConfig::new(
            "cn-north-1",
            SharedCredentialsProvider::new(Credentials::new("a", "b", None, None, "t")),
        );
        assert_eq!(c.endpoint, "https://sms-voice.cn-north-1.amazonaws.com.cn");
    }

    #[test]
    fn scrub_hides_the_secret_key_and_token() {
        let creds = Credentials::new("AKID", "s3cret-key", Some("tok3n".into()), None, "t");
        assert_eq!(
            scrub("echo s3cret-key and tok3n", &creds),
            "echo [redacted] and [redacted]"
        );
    }
}
