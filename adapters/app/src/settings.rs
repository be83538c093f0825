//! The relay's settings from environment variables, shared by every way of
//! running it (the `qdn-relay` server, the Lambda functions, a host
//! application), so the same variables mean the same thing everywhere.

use std::path::PathBuf;
use std::time::Duration;

use qdn_relay_aws_sms::AwsSmsConfig;
use qdn_relay_core::{
    CarrierNumber, DEFAULT_ACK_TIMEOUT, DEFAULT_COOLING_OFF, DEFAULT_SUPPRESS_REPEATS, PhoneNumber,
    Policy, Throttle, parse_duration,
};
use qdn_relay_twilio::{Secret, SignatureValidator, TwilioConfig};

use crate::http::HttpConfig;

/// A setting that is missing or invalid, naming its variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct SettingsError {
    /// The environment variable.
    pub var: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError {
        var,
        message: message.into(),
    }
}

/// Everything the relay needs from its environment:
///
/// | variable | meaning |
/// |---|---|
/// | `QDN_TWILIO_NUMBER` | the business line (required) |
/// | `RELAY_POLICY` | a policy file (TOML); wins over `RELAY_CHAIN` |
/// | `RELAY_CHAIN` | comma-separated E.164 numbers, primary first (required without `RELAY_POLICY`) |
/// | `RELAY_ACK_TIMEOUT` | each level's time to acknowledge (default `15m`; `RELAY_CHAIN` only) |
/// | `RELAY_PUBLIC_URL` | the URL Twilio calls |
/// | `RELAY_DASHBOARD_TOKEN` | the dashboard's bearer token |
/// | `RELAY_CORS_ORIGINS` | comma-separated allowed origins |
/// | `TWILIO_ACCOUNT_SID` | unset: dry-run |
/// | `TWILIO_AUTH_TOKEN`, `TWILIO_AUTH_TOKEN_SECONDARY` | webhook signatures (and REST calls, without an API key) |
/// | `TWILIO_API_KEY`, `TWILIO_API_SECRET`, `TWILIO_API_BASE`, `TWILIO_MESSAGING_SERVICE_SID` | the REST client (see `TwilioConfig::from_lookup`) |
/// | `QDN_AWS_SMS_NUMBER` | the line's number on AWS End User Messaging SMS: set, AWS is the line's second carrier (see [`AwsSmsSettings`]) |
/// | `QDN_AWS_SMS_ORIGINATION_IDENTITY` | what AWS sends from, if not that number itself: a pool id, a phone number id or an ARN |
/// | `QDN_AWS_SMS_CONFIGURATION_SET` | the configuration set whose event destination (SNS) gets delivery events |
/// | `QDN_AWS_SMS_SNS_TOPICS` | the SNS topics (ARNs, comma-separated) whose two-way texts and delivery events `POST /sms/aws/sns` takes |
/// | `QDN_AWS_SMS_REGION` | AWS SMS's region (default `AWS_REGION`); credentials are the environment's (`AWS_ACCESS_KEY_ID`, ...) |
/// | `RELAY_CARRIER_COOLING_OFF` | how long a carrier that failed carrier-wide is passed over for new texts (default `5m`) |
///
/// With two carriers the line's carriers are, in order, Twilio from
/// `QDN_TWILIO_NUMBER` then AWS from `QDN_AWS_SMS_NUMBER`, unless the
/// policy file lists its `[[carriers]]` (then each must be configured
/// here, with the same numbers).
///
/// Empty values count as unset. `RELAY_POLICY` is read when the settings
/// are (a dispatch keeps the policy it opened with, so a changed file
/// applies to new dispatches after a restart). The `RELAY_CHAIN` form
/// suppresses identical repeated texts within
/// [`DEFAULT_SUPPRESS_REPEATS`], like a policy file that does not say, and
/// keeps [`Throttle::safe_defaults`] (a policy file sets its own
/// `[throttle]`).
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The business line.
    pub line: PhoneNumber,
    /// The chain, primary first (with a policy file: every target, in
    /// level order).
    pub chain: Vec<PhoneNumber>,
    /// Each level's timeout (with a policy file: the shortest).
    pub ack_timeout: Duration,
    /// The escalation policy: from `RELAY_POLICY`, else from the chain and
    /// timeout.
    pub policy: Policy,
    /// The policy file, if the policy came from one.
    pub policy_file: Option<PathBuf>,
    /// The HTTP surface's settings.
    pub http: HttpConfig,
    /// Whether no Twilio account is configured (sends are only recorded).
    pub dry_run: bool,
    /// The Twilio REST client's settings (checked), unless dry-run. Its
    /// status callback is left for [`crate::provider`] to set.
    pub twilio: Option<TwilioConfig>,
    /// The Auth Token webhooks are signed with, if set.
    pub auth_token: Option<Secret>,
    /// A second accepted token while rotating.
    pub auth_token_secondary: Option<Secret>,
    /// The AWS End User Messaging SMS carrier, if configured.
    pub aws_sms: Option<AwsSmsSettings>,
    /// How long a carrier that failed carrier-wide is passed over.
    pub carrier_cooling_off: Duration,
}

/// The line's second carrier, AWS End User Messaging SMS: its number and
/// the client's configuration (region, endpoint, the environment's
/// credentials, configuration set, origination identity).
#[derive(Debug, Clone)]
pub struct AwsSmsSettings {
    /// The line's number on AWS (`QDN_AWS_SMS_NUMBER`): texts to it are the
    /// line's; dispatchers may be texted from it.
    pub number: PhoneNumber,
    /// The client's configuration.
    pub config: AwsSmsConfig,
    /// The SNS topics (ARNs) whose messages the relay takes
    /// (`QDN_AWS_SMS_SNS_TOPICS`, comma-separated): two-way texts and the
    /// configuration set's delivery events. Messages from any other topic
    /// are refused (anyone may point a topic at a public URL).
    pub sns_topics: Vec<String>,
}

impl AwsSmsSettings {
    /// Reads the `QDN_AWS_SMS_*` variables (see [`RelaySettings`]); `None`
    /// without `QDN_AWS_SMS_NUMBER`. Every error names its variable.
    pub fn from_lookup(
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, SettingsError> {
        const NUMBER: &str = "QDN_AWS_SMS_NUMBER";
        let Some(n) = get(NUMBER) else {
            for var in [
                "QDN_AWS_SMS_ORIGINATION_IDENTITY",
                "QDN_AWS_SMS_CONFIGURATION_SET",
                "QDN_AWS_SMS_REGION",
                "QDN_AWS_SMS_SNS_TOPICS",
            ] {
                if get(var).is_some() {
                    return Err(err(
                        NUMBER,
                        format!("required with {var}: the line's number on AWS SMS"),
                    ));
                }
            }
            return Ok(None);
        };
        let number: PhoneNumber = n
            .parse()
            .map_err(|e| err(NUMBER, format!("{n:?} is not a phone number: {e}")))?;
        let region = get("QDN_AWS_SMS_REGION");
        let lookup = |k: &str| match (k, &region) {
            ("AWS_REGION", Some(r)) => Some(r.clone()),
            _ => get(k),
        };
        let mut config = AwsSmsConfig::from_lookup(lookup).map_err(|e| {
            let var = if region.is_none() && e.to_string().contains("AWS_REGION") {
                "QDN_AWS_SMS_REGION"
            } else {
                "AWS_ACCESS_KEY_ID"
            };
            err(var, format!("needed for AWS SMS: {e}"))
        })?;
        if let Some(cs) = get("QDN_AWS_SMS_CONFIGURATION_SET") {
            config.configuration_set = Some(
                cs.parse()
                    .map_err(|e| err("QDN_AWS_SMS_CONFIGURATION_SET", format!("{e}")))?,
            );
        }
        if let Some(id) = get("QDN_AWS_SMS_ORIGINATION_IDENTITY") {
            let id = id
                .parse()
                .map_err(|e| err("QDN_AWS_SMS_ORIGINATION_IDENTITY", format!("{e}")))?;
            config.origination.insert(number, id);
        }
        let mut sns_topics = Vec::new();
        for t in get("QDN_AWS_SMS_SNS_TOPICS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let parts: Vec<&str> = t.split(':').collect();
            let ok = parts.len() == 6
                && parts[0] == "arn"
                && parts[1].starts_with("aws")
                && parts[2] == "sns"
                && parts[3..].iter().all(|p| !p.is_empty());
            if !ok {
                return Err(err(
                    "QDN_AWS_SMS_SNS_TOPICS",
                    format!("{t:?} is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"),
                ));
            }
            sns_topics.push(t.to_owned());
        }
        config.validate().map_err(|e| {
            let var = match &e {
                qdn_relay_aws_sms::ConfigError::Invalid {
                    setting: "AWS_REGION",
                    ..
                } if region.is_some() => "QDN_AWS_SMS_REGION",
                qdn_relay_aws_sms::ConfigError::Invalid {
                    setting: "AWS_REGION",
                    ..
                } => "AWS_REGION",
                _ => "AWS_ENDPOINT_URL_PINPOINT_SMS_VOICE_V2",
            };
            err(var, e.to_string())
        })?;
        Ok(Some(Self {
            number,
            config,
            sns_topics,
        }))
    }
}

/// The carrier names the wiring knows.
pub const TWILIO: &str = "twilio";
/// The AWS End User Messaging SMS carrier's name.
pub const AWS_SMS: &str = "aws-sms";

/// The line's carriers: the policy file's, checked against what is
/// configured, or Twilio then AWS when AWS is configured.
fn carriers(
    policy: Policy,
    line: PhoneNumber,
    aws: Option<&AwsSmsSettings>,
) -> Result<Policy, SettingsError> {
    if policy.carriers().is_empty() {
        let Some(aws) = aws else {
            return Ok(policy);
        };
        let list = vec![
            CarrierNumber {
                carrier: TWILIO.into(),
                number: line,
            },
            CarrierNumber {
                carrier: AWS_SMS.into(),
                number: aws.number,
            },
        ];
        return policy
            .with_carriers(list)
            .map_err(|e| err("QDN_AWS_SMS_NUMBER", e.to_string()));
    }
    for (i, c) in policy.carriers().iter().enumerate() {
        let bad = |why: String| err("RELAY_POLICY", format!("carriers[{i}]: {why}"));
        match (c.carrier.as_str(), aws) {
            (TWILIO, _) if c.number != line => {
                return Err(bad(format!(
                    "twilio sends from the business line QDN_TWILIO_NUMBER ({line}), not {}",
                    c.number
                )));
            }
            (TWILIO, _) => {}
            (AWS_SMS, None) => {
                return Err(bad(
                    "aws-sms is not configured: set QDN_AWS_SMS_NUMBER (and its region)".into(),
                ));
            }
            (AWS_SMS, Some(a)) if a.number != c.number => {
                return Err(bad(format!(
                    "aws-sms sends from {} but QDN_AWS_SMS_NUMBER is {}",
                    c.number, a.number
                )));
            }
            (AWS_SMS, Some(_)) => {}
            (other, _) => {
                return Err(bad(format!(
                    "unknown carrier {other:?}: the carriers are twilio and aws-sms"
                )));
            }
        }
    }
    if aws.is_some() && !policy.carriers().iter().any(|c| c.carrier == AWS_SMS) {
        return Err(err(
            "QDN_AWS_SMS_NUMBER",
            "set, but the policy file's [[carriers]] does not list aws-sms",
        ));
    }
    Ok(policy)
}

impl RelaySettings {
    /// The AWS SMS carrier when it takes SNS messages: configured, with the
    /// topics to accept them from (`QDN_AWS_SMS_SNS_TOPICS`).
    pub fn aws_sms_over_sns(&self) -> Option<&AwsSmsSettings> {
        self.aws_sms.as_ref().filter(|a| !a.sns_topics.is_empty())
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `lookup` (a variable's value, if set).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let number = |var: &'static str, s: &str| -> Result<PhoneNumber, SettingsError> {
            s.trim()
                .parse()
                .map_err(|e| err(var, format!("{s:?} is not a phone number: {e}")))
        };
        let line_s = get("QDN_TWILIO_NUMBER").ok_or_else(|| {
            err(
                "QDN_TWILIO_NUMBER",
                "required: the business line, e.g. +16195550000",
            )
        })?;
        let line = number("QDN_TWILIO_NUMBER", &line_s)?;
        if let Some(path) = get("RELAY_POLICY") {
            let (policy, chain, ack_timeout) = policy_file(&path, line)?;
            return Self::finish(
                &get,
                line,
                chain,
                ack_timeout,
                policy,
                Some(PathBuf::from(path)),
            );
        }
        let chain_s = get("RELAY_CHAIN").ok_or_else(|| {
            err("RELAY_CHAIN", "required: comma-separated E.164 numbers, primary first, e.g. +16195550101,+18583354807")
        })?;
        let chain = chain_s
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| number("RELAY_CHAIN", s))
            .collect::<Result<Vec<_>, _>>()?;
        if chain.contains(&line) {
            return Err(err(
                "RELAY_CHAIN",
                format!("must not contain the business line {line} (it would text itself)"),
            ));
        }
        let ack_timeout = match get("RELAY_ACK_TIMEOUT") {
            None => DEFAULT_ACK_TIMEOUT,
            Some(s) => parse_duration(&s).map_err(|e| err("RELAY_ACK_TIMEOUT", e.to_string()))?,
        };
        let policy = Policy::chain(&chain, ack_timeout)
            .and_then(|p| p.with_suppress_repeats(Some(DEFAULT_SUPPRESS_REPEATS)))
            .and_then(|p| p.with_throttle(Throttle::safe_defaults()))
            .map_err(|e| {
                let var = if matches!(e, qdn_relay_core::PolicyError::BadTimeout { .. }) {
                    "RELAY_ACK_TIMEOUT"
                } else {
                    "RELAY_CHAIN"
                };
                err(var, e.to_string())
            })?;
        Self::finish(&get, line, chain, ack_timeout, policy, None)
    }

    /// The settings every policy source shares.
    fn finish(
        get: &dyn Fn(&str) -> Option<String>,
        line: PhoneNumber,
        chain: Vec<PhoneNumber>,
        ack_timeout: Duration,
        policy: Policy,
        policy_file: Option<PathBuf>,
    ) -> Result<Self, SettingsError> {
        let http = HttpConfig {
            public_url: get("RELAY_PUBLIC_URL"),
            dashboard_token: get("RELAY_DASHBOARD_TOKEN").map(Secret::new),
            cors_origins: get("RELAY_CORS_ORIGINS")
                .map(|s| {
                    s.split(',')
                        .map(|o| o.trim().to_owned())
                        .filter(|o| !o.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            ..HttpConfig::default()
        };
        // Checked here so a bad value names its variable at start.
        http.check().map_err(|e| err(e.var(), e.to_string()))?;
        let aws_sms = AwsSmsSettings::from_lookup(get)?;
        let policy = carriers(policy, line, aws_sms.as_ref())?;
        let carrier_cooling_off = match get("RELAY_CARRIER_COOLING_OFF") {
            None => DEFAULT_COOLING_OFF,
            Some(s) => match parse_duration(&s) {
                Ok(d) if !d.is_zero() && d <= Duration::from_secs(86_400) => d,
                Ok(_) => {
                    return Err(err(
                        "RELAY_CARRIER_COOLING_OFF",
                        format!("{s:?}: must be more than zero and at most 24h"),
                    ));
                }
                Err(e) => return Err(err("RELAY_CARRIER_COOLING_OFF", e.to_string())),
            },
        };
        let dry_run = get("TWILIO_ACCOUNT_SID").is_none();
        let twilio = if dry_run {
            None
        } else {
            let config = TwilioConfig::from_lookup(get).map_err(twilio_error)?;
            config.validate().map_err(twilio_error)?;
            Some(config)
        };
        Ok(Self {
            line,
            chain,
            ack_timeout,
            policy,
            policy_file,
            http,
            dry_run,
            twilio,
            auth_token: get("TWILIO_AUTH_TOKEN").map(Secret::new),
            auth_token_secondary: get("TWILIO_AUTH_TOKEN_SECONDARY").map(Secret::new),
            aws_sms,
            carrier_cooling_off,
        })
    }

    /// Replaces the policy with the one in `path` (a `--policy` flag wins
    /// over the environment). Errors name `RELAY_POLICY`, the file, the
    /// line and the field.
    pub fn with_policy_file(mut self, path: &str) -> Result<Self, SettingsError> {
        let (policy, chain, ack_timeout) = policy_file(path, self.line)?;
        let policy = carriers(policy, self.line, self.aws_sms.as_ref())?;
        self.policy = policy;
        self.chain = chain;
        self.ack_timeout = ack_timeout;
        self.policy_file = Some(PathBuf::from(path));
        Ok(self)
    }

    /// The webhook signature validator, if an Auth Token is set.
    pub fn validator(&self) -> Option<SignatureValidator> {
        let mut v = SignatureValidator::new(self.auth_token.clone()?);
        if let Some(s) = &self.auth_token_secondary {
            v = v.with_secondary(s.clone());
        }
        Some(v)
    }

    /// What a server that Twilio calls directly needs before it sends for
    /// real (the Lambda functions learn their URL from API Gateway
    /// instead): with `TWILIO_ACCOUNT_SID` set, `RELAY_PUBLIC_URL` is
    /// required, since every send's status callback and every webhook
    /// signature is built on it (without it Twilio would be handed a
    /// loopback address and signatures checked against whatever `Host` a
    /// client sent). Dry-run keeps its loopback default. Returns the
    /// warnings worth logging: a public URL that is plain `http` to a host
    /// other than loopback.
    pub fn check_server(&self) -> Result<Vec<String>, SettingsError> {
        let checked = self.http.check().map_err(|e| err(e.var(), e.to_string()))?;
        let Some(url) = checked.public_url else {
            if self.dry_run {
                return Ok(Vec::new());
            }
            return Err(err(
                "RELAY_PUBLIC_URL",
                "required with TWILIO_ACCOUNT_SID: the https URL Twilio reaches this server at \
                 (e.g. https://relay.example.com); status callbacks and webhook signatures are built on it",
            ));
        };
        let mut warnings = Vec::new();
        if let Some(rest) = url.strip_prefix("http://") {
            let authority = rest.split('/').next().unwrap_or_default();
            let host = match authority.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or_default(),
                None => authority.split(':').next().unwrap_or_default(),
            };
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                warnings.push(format!(
                    "RELAY_PUBLIC_URL is plain http ({url}): customers' texts and signed webhooks \
                     cross the network unencrypted; use https"
                ));
            }
        }
        Ok(warnings)
    }

    /// Where Twilio posts status callbacks (with Twilio's connection
    /// overrides, [`qdn_relay_twilio::WEBHOOK_OVERRIDES`]): `/sms/status` under
    /// `RELAY_PUBLIC_URL`, else under `local_base` (a server's own address,
    /// `http://127.0.0.1:8080`); `None` when neither is known (then texts
    /// go out without one, and failed deliveries do not escalate early).
    pub fn status_callback(&self, local_base: Option<&str>) -> Option<String> {
        let base = self
            .http
            .check()
            .ok()
            .and_then(|c| c.public_url)
            .or_else(|| local_base.map(|b| b.trim().trim_end_matches('/').to_owned()))?;
        Some(qdn_relay_twilio::with_webhook_overrides(&format!(
            "{base}/sms/status"
        )))
    }
}

/// A Twilio REST setting that is missing or invalid, naming its variable.
fn twilio_error(e: qdn_relay_twilio::ConfigError) -> SettingsError {
    use qdn_relay_twilio::ConfigError;
    match e {
        ConfigError::Missing { var, hint } => {
            err(var, format!("required with TWILIO_ACCOUNT_SID{hint}"))
        }
        ConfigError::Invalid { var, reason } => err(var, reason),
        other => err("TWILIO_ACCOUNT_SID", other.to_string()),
    }
}

/// The longest a server's sweeper sleeps (a safety net: it sleeps until
/// the earliest deadline and is woken by a save that sets an earlier one):
/// `RELAY_SWEEP_INTERVAL` when set (`value`), else a quarter of the ack
/// timeout, at least 200 ms and at most 5 s. (The Lambda tick function
/// runs on its schedule instead.)
pub fn sweep_interval(
    value: Option<&str>,
    ack_timeout: Duration,
) -> Result<Duration, SettingsError> {
    let every = match value.map(str::trim).filter(|v| !v.is_empty()) {
        Some(s) => parse_duration(s).map_err(|e| err("RELAY_SWEEP_INTERVAL", e.to_string()))?,
        None => (ack_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5)),
    };
    if every.is_zero() {
        return Err(err("RELAY_SWEEP_INTERVAL", "must be more than zero"));
    }
    Ok(every)
}

/// The DynamoDB layout (feature `dynamo`): `RELAY_DYNAMO_TABLE`
/// (required), and to live in an application's table (see
/// `qdn_relay_dynamo`'s "Sharing an application's table"):
/// `RELAY_DYNAMO_KEYS` (`PK,SK`: the table's key attributes),
/// `RELAY_DYNAMO_KEY_PREFIX`, `RELAY_DYNAMO_DUE_INDEX` and
/// `RELAY_DYNAMO_LIST_INDEX` (`name,partition key,sort key`) and
/// `RELAY_DYNAMO_TTL_ATTRIBUTE`. Unset ones keep the relay's defaults; the
/// whole is checked by `DynamoConfig::validate` (its errors name
/// `RELAY_DYNAMO_TABLE`).
#[cfg(feature = "dynamo")]
pub fn dynamo_config(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<qdn_relay_dynamo::DynamoConfig, SettingsError> {
    use qdn_relay_dynamo::{DynamoConfig, IndexNames};
    let parts = |var: &'static str, n: usize| -> Result<Option<Vec<String>>, SettingsError> {
        let Some(v) = lookup(var) else {
            return Ok(None);
        };
        let p: Vec<String> = v.split(',').map(|s| s.trim().to_owned()).collect();
        if p.len() != n || p.iter().any(String::is_empty) {
            let shape = if n == 2 {
                "partition key,sort key"
            } else {
                "index name,partition key,sort key"
            };
            return Err(err(
                var,
                format!("expected {n} comma-separated names ({shape}), got {v:?}"),
            ));
        }
        Ok(Some(p))
    };
    let table = lookup("RELAY_DYNAMO_TABLE")
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            err(
                "RELAY_DYNAMO_TABLE",
                "required: the DynamoDB table of the relay's state",
            )
        })?;
    let mut c = DynamoConfig::new(table);
    if let Some(k) = parts("RELAY_DYNAMO_KEYS", 2)? {
        c = c.keys(k[0].clone(), k[1].clone());
    }
    if let Some(p) = lookup("RELAY_DYNAMO_KEY_PREFIX") {
        c = c.key_prefix(p);
    }
    if let Some(i) = parts("RELAY_DYNAMO_DUE_INDEX", 3)? {
        c = c.due_index(IndexNames::new(i[0].clone(), i[1].clone(), i[2].clone()));
    }
    if let Some(i) = parts("RELAY_DYNAMO_LIST_INDEX", 3)? {
        c = c.list_index(IndexNames::new(i[0].clone(), i[1].clone(), i[2].clone()));
    }
    if let Some(t) = lookup("RELAY_DYNAMO_TTL_ATTRIBUTE") {
        c.ttl_attribute = t.trim().to_owned();
    }
    c.validate().map_err(|e| {
        err(
            "RELAY_DYNAMO_TABLE",
            format!("the DynamoDB layout is invalid: {e}"),
        )
    })?;
    Ok(c)
}

/// Reads a policy file: the policy, every target in level order, and the
/// shortest level timeout.
fn policy_file(
    path: &str,
    line: PhoneNumber,
) -> Result<(Policy, Vec<PhoneNumber>, Duration), SettingsError> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| err("RELAY_POLICY", format!("cannot read {path}: {e}")))?;
    let policy =
        Policy::from_toml(&src).map_err(|e| err("RELAY_POLICY", format!("{path}: {e}")))?;
    if policy.is_target(line) {
        return Err(err(
            "RELAY_POLICY",
            format!("{path}: a level targets the business line {line} (it would text itself)"),
        ));
    }
    let mut chain: Vec<PhoneNumber> = Vec::new();
    for l in policy.levels() {
        for t in &l.targets {
            if !chain.contains(t) {
                chain.push(*t);
            }
        }
    }
    let ack_timeout = policy
        .levels()
        .iter()
        .map(|l| l.timeout)
        .min()
        .unwrap_or(DEFAULT_ACK_TIMEOUT);
    Ok((policy, chain, ack_timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<RelaySettings, SettingsError> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        RelaySettings::from_lookup(move |k| {
            owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn minimal_settings_are_dry_run_with_the_seed_policy() {
        let s = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550101, +18583354807"),
        ])
        .expect("valid");
        assert!(s.dry_run);
        assert_eq!(s.policy.levels().len(), 2);
        assert_eq!(s.ack_timeout, DEFAULT_ACK_TIMEOUT);
        assert!(s.validator().is_none());
    }

    #[test]
    fn every_error_names_its_variable() {
        let base = [
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550101"),
        ];
        let case = |extra: (&str, &str)| {
            let mut v: Vec<(&str, &str)> = base
                .iter()
                .copied()
                .filter(|(k, _)| *k != extra.0)
                .collect();
            v.push(extra);
            with(&v).expect_err("invalid").var
        };
        assert_eq!(
            with(&base[1..]).expect_err("missing").var,
            "QDN_TWILIO_NUMBER"
        );
        assert_eq!(with(&base[..1]).expect_err("missing").var, "RELAY_CHAIN");
        assert_eq!(
            case(("QDN_TWILIO_NUMBER", "6195550000")),
            "QDN_TWILIO_NUMBER"
        );
        assert_eq!(case(("RELAY_CHAIN", "+16195550101,nope")), "RELAY_CHAIN");
        assert_eq!(case(("RELAY_CHAIN", "+16195550000")), "RELAY_CHAIN");
        assert_eq!(case(("RELAY_ACK_TIMEOUT", "soon")), "RELAY_ACK_TIMEOUT");
        assert_eq!(case(("RELAY_ACK_TIMEOUT", "0s")), "RELAY_ACK_TIMEOUT");
        assert_eq!(
            case(("RELAY_PUBLIC_URL", "relay.example.com")),
            "RELAY_PUBLIC_URL"
        );
        assert_eq!(
            case(("RELAY_CORS_ORIGINS", "https://a.com/x")),
            "RELAY_CORS_ORIGINS"
        );
        assert_eq!(
            case(("RELAY_DASHBOARD_TOKEN", "short")),
            "RELAY_DASHBOARD_TOKEN"
        );
    }

    #[test]
    fn a_policy_file_wins_over_the_chain_and_its_errors_name_line_and_field() {
        let dir = tempfile::tempdir().expect("dir");
        let good = dir.path().join("policy.toml");
        std::fs::write(
            &good,
            "time_zone = \"America/Los_Angeles\"\n[[levels]]\ntargets = [\"+16195550101\"]\ntimeout = \"5m\"\nwindows = [\"mon-fri 07:00-19:00\"]\n[[levels]]\ntargets = [\"+18583354807\"]\n",
        )
        .expect("write");
        let path = good.to_str().expect("utf-8");
        let s = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550199"),
            ("RELAY_POLICY", path),
        ])
        .expect("valid");
        assert_eq!(s.policy.levels().len(), 2);
        assert!(s.policy.hours(0).is_some());
        assert_eq!(s.chain.len(), 2);
        assert_eq!(s.ack_timeout, Duration::from_secs(300));
        // Without RELAY_CHAIN too.
        let s = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_POLICY", path),
        ])
        .expect("valid");
        assert_eq!(s.policy_file.as_deref(), Some(good.as_path()));
        // An error names the variable, the file, the line and the field.
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "[[levels]]\ntargets = [\"+16195550101\"]\ntimeout = \"soon\"\n",
        )
        .expect("write");
        let e = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_POLICY", bad.to_str().expect("utf-8")),
        ])
        .expect_err("invalid");
        assert_eq!(e.var, "RELAY_POLICY");
        assert!(e.message.contains("line 3: levels[0].timeout"), "{e}");
        let e = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550101"),
            ("RELAY_POLICY", path),
        ])
        .expect_err("targets the line");
        assert_eq!(e.var, "RELAY_POLICY");
        // The chain form suppresses repeats by default.
        let s = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550101"),
        ])
        .expect("valid");
        assert_eq!(s.policy.suppress_repeats(), Some(DEFAULT_SUPPRESS_REPEATS));
    }

    #[test]
    fn with_an_account_the_twilio_settings_are_read_and_name_their_variables() {
        let base = [
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550101"),
            ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
        ];
        let e = with(&base).expect_err("no credentials");
        assert_eq!(e.var, "TWILIO_AUTH_TOKEN");
        let mut v = base.to_vec();
        v.push(("TWILIO_API_KEY", "SK0123456789abcdef0123456789abcdef"));
        assert_eq!(
            with(&v).expect_err("a key without its secret").var,
            "TWILIO_API_SECRET"
        );
        let mut v = base.to_vec();
        v[2] = ("TWILIO_ACCOUNT_SID", "not-a-sid");
        v.push(("TWILIO_AUTH_TOKEN", "secret-token-value"));
        let e = with(&v).expect_err("a bad sid");
        assert_eq!(e.var, "TWILIO_ACCOUNT_SID");
        assert!(!e.to_string().contains("secret-token-value"), "{e}");
        let mut v = base.to_vec();
        v.extend([
            ("TWILIO_AUTH_TOKEN", "secret-token-value"),
            ("TWILIO_API_BASE", "ftp://api.example.com"),
        ]);
        assert_eq!(with(&v).expect_err("a bad base").var, "TWILIO_API_BASE");
        let mut v = base.to_vec();
        v.push(("TWILIO_AUTH_TOKEN", "secret-token-value"));
        let s = with(&v).expect("valid");
        assert!(!s.dry_run);
        let twilio = s.twilio.as_ref().expect("the REST settings");
        assert_eq!(
            twilio.account_sid.as_str(),
            "AC0123456789abcdef0123456789abcdef"
        );
        assert!(!format!("{s:?}").contains("secret-token-value"));
        // Dry-run reads none of them.
        assert!(with(&base[..2]).expect("valid").twilio.is_none());
    }

    #[test]
    fn the_status_callback_is_under_the_public_url_else_the_local_address() {
        let s = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550101"),
            (
                "RELAY_PUBLIC_URL",
                "https://abc.execute-api.us-east-1.amazonaws.com/prod/",
            ),
        ])
        .expect("valid");
        assert_eq!(
            s.status_callback(Some("http://127.0.0.1:8080")).as_deref(),
            Some("https://abc.execute-api.us-east-1.amazonaws.com/prod/sms/status#rc=3&rp=ct,5xx")
        );
        let s = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550101"),
        ])
        .expect("valid");
        assert_eq!(
            s.status_callback(Some("http://127.0.0.1:8080/")).as_deref(),
            Some("http://127.0.0.1:8080/sms/status#rc=3&rp=ct,5xx")
        );
        assert_eq!(s.status_callback(None), None);
    }

    #[test]
    fn the_chain_form_keeps_safe_default_limits() {
        let s = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550101,+16195550102"),
        ])
        .expect("valid");
        assert_eq!(s.policy.throttle(), &Throttle::safe_defaults());
        assert!(!s.policy.throttle().is_off());
    }

    #[test]
    fn a_server_sending_for_real_needs_its_public_url() {
        let base = [
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550101"),
            ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
            ("TWILIO_AUTH_TOKEN", "token"),
        ];
        let e = with(&base).expect("valid").check_server().unwrap_err();
        assert_eq!(e.var, "RELAY_PUBLIC_URL");
        assert!(e.message.contains("TWILIO_ACCOUNT_SID"), "{e}");
        // Dry-run keeps its loopback default.
        assert_eq!(with(&base[..2]).expect("valid").check_server(), Ok(vec![]));
        let with_url = |url: &str| {
            let mut v = base.to_vec();
            v.push(("RELAY_PUBLIC_URL", url));
            with(&v).expect("valid").check_server()
        };
        assert_eq!(with_url("https://relay.example.com"), Ok(vec![]));
        assert_eq!(with_url("http://127.0.0.1:8080"), Ok(vec![]));
        assert_eq!(with_url("http://localhost:8080/"), Ok(vec![]));
        assert_eq!(with_url("http://[::1]:8080"), Ok(vec![]));
        let w = with_url("http://relay.example.com").expect("a warning, not an error");
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("https"), "{w:?}");
    }

    #[test]
    fn the_sweep_interval_defaults_to_a_quarter_of_the_timeout_within_bounds() {
        let min = Duration::from_secs(60);
        assert_eq!(sweep_interval(None, 15 * min), Ok(Duration::from_secs(5)));
        assert_eq!(
            sweep_interval(None, Duration::from_secs(2)),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(
            sweep_interval(None, Duration::from_millis(400)),
            Ok(Duration::from_millis(200))
        );
        assert_eq!(
            sweep_interval(Some(" 2s "), min),
            Ok(Duration::from_secs(2))
        );
        for bad in ["0s", "soon"] {
            let e = sweep_interval(Some(bad), min).expect_err(bad);
            assert_eq!(e.var, "RELAY_SWEEP_INTERVAL");
        }
    }

    #[cfg(feature = "dynamo")]
    #[test]
    fn the_table_is_required() {
        let e = dynamo_config(|_| None).expect_err("missing").to_string();
        assert!(e.starts_with("RELAY_DYNAMO_TABLE"), "{e}");
        let c = dynamo_config(|k| (k == "RELAY_DYNAMO_TABLE").then(|| "qdn-relay".to_owned()))
            .expect("defaults");
        assert_eq!(c, qdn_relay_dynamo::DynamoConfig::new("qdn-relay"));
    }

    #[cfg(feature = "dynamo")]
    #[test]
    fn a_shared_tables_layout_comes_from_the_environment() {
        fn config(pairs: &[(&str, &str)]) -> Result<qdn_relay_dynamo::DynamoConfig, SettingsError> {
            dynamo_config(|k| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            })
        }
        let base = [("RELAY_DYNAMO_TABLE", "qdn-relay")];
        let pairs = [
            ("RELAY_DYNAMO_TABLE", "qdn-jobs"),
            ("RELAY_DYNAMO_KEYS", "PK, SK"),
            ("RELAY_DYNAMO_KEY_PREFIX", "RELAY#"),
            ("RELAY_DYNAMO_DUE_INDEX", "relay-due,GSI1PK,GSI1SK"),
            ("RELAY_DYNAMO_LIST_INDEX", "GSI2,GSI2PK,GSI2SK"),
            ("RELAY_DYNAMO_TTL_ATTRIBUTE", "ttl"),
        ];
        let c = config(&pairs).expect("shared layout");
        assert_eq!(c.table, "qdn-jobs");
        assert_eq!(
            (c.partition_key.as_str(), c.sort_key.as_str()),
            ("PK", "SK")
        );
        assert_eq!(c.key_prefix, "RELAY#");
        assert_eq!(
            c.due_index,
            qdn_relay_dynamo::IndexNames::new("relay-due", "GSI1PK", "GSI1SK")
        );
        assert_eq!(
            c.list_index,
            qdn_relay_dynamo::IndexNames::new("GSI2", "GSI2PK", "GSI2SK")
        );
        assert_eq!(c.ttl_attribute, "ttl");
        // Every bad value names its variable.
        for (var, value) in [
            ("RELAY_DYNAMO_KEYS", "PK"),
            ("RELAY_DYNAMO_DUE_INDEX", "due,due_pk"),
            ("RELAY_DYNAMO_LIST_INDEX", "list,,list_sk"),
            ("RELAY_DYNAMO_KEY_PREFIX", ""),
            ("RELAY_DYNAMO_KEYS", "PK,PK"),
        ] {
            let mut pairs = base.to_vec();
            pairs.push((var, value));
            let err = config(&pairs).expect_err(value).to_string();
            let named = if var == "RELAY_DYNAMO_KEY_PREFIX" || value == "PK,PK" {
                "RELAY_DYNAMO_TABLE: the DynamoDB layout is invalid"
            } else {
                var
            };
            assert!(err.starts_with(named), "{var}={value:?}: {err}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let s = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550101"),
            ("TWILIO_AUTH_TOKEN", "super-secret-token"),
            ("RELAY_DASHBOARD_TOKEN", "dashboard-secret-0123456789"),
        ])
        .expect("valid");
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("super-secret-token") && !dbg.contains("dashboard-secret"),
            "{dbg}"
        );
    }
}
