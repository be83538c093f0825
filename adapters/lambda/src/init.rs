//! What both functions do once, at init: read the environment (resolving
//! secret references), build the provider, the store and the relay.
//!
//! Everything here is built once per execution environment, outside the
//! handler, and shared by every invocation it serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use qdn_relay_axum::{AppState, DryRunProvider, DynRelay, EventHub, RelaySettings, SettingsError};
use qdn_relay_core::{Clock, EventSink, Relay, SmsProvider, Store, TracingSink};
use qdn_relay_twilio::{TwilioClient, TwilioConfig};

use crate::http::HttpApp;
use crate::https::HttpsClient;
use crate::public_url::{BadPublicBase, PublicBase};
use crate::secrets::{self, SecretError, SecretFetcher};

/// The variables the functions read. Any of them may hold a secret
/// reference (`ssm:…`, `secretsmanager:…`; see [`crate::secrets`]).
pub const VARIABLES: &[&str] = &[
    "QDN_TWILIO_NUMBER",
    "RELAY_CHAIN",
    "RELAY_POLICY",
    "RELAY_ACK_TIMEOUT",
    "RELAY_PUBLIC_URL",
    "RELAY_DASHBOARD_TOKEN",
    "RELAY_CORS_ORIGINS",
    "RELAY_DYNAMO_TABLE",
    "RELAY_DYNAMO_KEYS",
    "RELAY_DYNAMO_KEY_PREFIX",
    "RELAY_DYNAMO_DUE_INDEX",
    "RELAY_DYNAMO_LIST_INDEX",
    "RELAY_DYNAMO_TTL_ATTRIBUTE",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_AUTH_TOKEN_SECONDARY",
    "TWILIO_API_KEY",
    "TWILIO_API_SECRET",
    "TWILIO_API_BASE",
    "TWILIO_MESSAGING_SERVICE_SID",
];

/// Why a function could not start. Every message names the variable at
/// fault and never holds a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// A relay setting is missing or invalid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A secret reference could not be resolved.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The Twilio REST client's settings are invalid.
    #[error("Twilio: {0}")]
    Twilio(#[from] qdn_relay_twilio::ConfigError),
    /// The public URL is invalid.
    #[error(transparent)]
    PublicUrl(#[from] BadPublicBase),
    /// The HTTP surface's settings are invalid.
    #[error(transparent)]
    Http(#[from] qdn_relay_axum::ConfigError),
    /// A required variable is missing.
    #[error("{var} is not set: {why}")]
    Missing {
        /// The variable.
        var: &'static str,
        /// What it is for.
        why: &'static str,
    },
    /// A variable's value is invalid.
    #[error("{var}: {reason}")]
    Invalid {
        /// The variable (for a layout that is wrong as a whole, the table's).
        var: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The environment, read once: a snapshot of the variables, in which the
/// secret references among [`VARIABLES`] are resolved by [`Env::resolve`].
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may be secrets.
        f.debug_struct("Env")
            .field("set", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Env {
    /// The process environment (every variable with a UTF-8 name and
    /// value).
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// The values of [`VARIABLES`] through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            vars: VARIABLES
                .iter()
                .filter_map(|k| lookup(k).map(|v| ((*k).to_owned(), v)))
                .collect(),
        }
    }

    /// A variable's value (after [`Env::resolve`], a secret's value).
    pub fn get(&self, var: &str) -> Option<String> {
        self.vars.get(var).cloned()
    }

    /// Whether any variable is a secret reference.
    pub fn has_references(&self) -> bool {
        secrets::has_references(&self.vars, VARIABLES)
    }

    /// Replaces secret references by their values (see
    /// [`crate::secrets::resolve`]); logs the names of the variables
    /// resolved, never their values.
    pub async fn resolve(
        &mut self,
        fetcher: Option<&dyn SecretFetcher>,
    ) -> Result<(), SecretError> {
        let done = secrets::resolve(&mut self.vars, VARIABLES, fetcher).await?;
        if !done.is_empty() {
            tracing::info!(variables = ?done, "secret references resolved");
        }
        Ok(())
    }

    /// The relay's settings (`RelaySettings::from_lookup` over this
    /// environment).
    pub fn settings(&self) -> Result<RelaySettings, SettingsError> {
        RelaySettings::from_lookup(|k| self.get(k))
    }

    /// The DynamoDB table (`RELAY_DYNAMO_TABLE`).
    pub fn table(&self) -> Result<String, InitError> {
        self.get("RELAY_DYNAMO_TABLE")
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or(InitError::Missing {
                var: "RELAY_DYNAMO_TABLE",
                why: "the DynamoDB table of the relay's state",
            })
    }
}

#[cfg(feature = "dynamo")]
impl Env {
    /// The DynamoDB layout: `RELAY_DYNAMO_TABLE`, and to live in an
    /// application's table (see `qdn_relay_dynamo`'s "Sharing an
    /// application's table"): `RELAY_DYNAMO_KEYS` (`PK,SK`: the table's key
    /// attributes), `RELAY_DYNAMO_KEY_PREFIX`, `RELAY_DYNAMO_DUE_INDEX` and
    /// `RELAY_DYNAMO_LIST_INDEX` (`name,partition key,sort key`) and
    /// `RELAY_DYNAMO_TTL_ATTRIBUTE`. Unset ones keep the relay's defaults;
    /// the whole is checked by `DynamoConfig::validate`.
    pub fn dynamo_config(&self) -> Result<qdn_relay_dynamo::DynamoConfig, InitError> {
        use qdn_relay_dynamo::{DynamoConfig, IndexNames};
        let parts = |var: &'static str, n: usize| -> Result<Option<Vec<String>>, InitError> {
            let Some(v) = self.get(var) else {
                return Ok(None);
            };
            let p: Vec<String> = v.split(',').map(|s| s.trim().to_owned()).collect();
            if p.len() != n || p.iter().any(String::is_empty) {
                let shape = if n == 2 {
                    "partition key,sort key"
                } else {
                    "index name,partition key,sort key"
                };
                return Err(InitError::Invalid {
                    var,
                    reason: format!("expected {n} comma-separated names ({shape}), got {v:?}"),
                });
            }
            Ok(Some(p))
        };
        let mut c = DynamoConfig::new(self.table()?);
        if let Some(k) = parts("RELAY_DYNAMO_KEYS", 2)? {
            c = c.keys(k[0].clone(), k[1].clone());
        }
        if let Some(p) = self.get("RELAY_DYNAMO_KEY_PREFIX") {
            c = c.key_prefix(p);
        }
        if let Some(i) = parts("RELAY_DYNAMO_DUE_INDEX", 3)? {
            c = c.due_index(IndexNames::new(i[0].clone(), i[1].clone(), i[2].clone()));
        }
        if let Some(i) = parts("RELAY_DYNAMO_LIST_INDEX", 3)? {
            c = c.list_index(IndexNames::new(i[0].clone(), i[1].clone(), i[2].clone()));
        }
        if let Some(t) = self.get("RELAY_DYNAMO_TTL_ATTRIBUTE") {
            c.ttl_attribute = t.trim().to_owned();
        }
        c.validate().map_err(|e| InitError::Invalid {
            var: "RELAY_DYNAMO_TABLE",
            reason: format!("the DynamoDB layout is invalid: {e}"),
        })?;
        Ok(c)
    }
}

/// `RELAY_PUBLIC_URL`, parsed.
pub fn public_base(settings: &RelaySettings) -> Result<Option<PublicBase>, BadPublicBase> {
    settings
        .http
        .public_url
        .as_deref()
        .map(PublicBase::parse)
        .transpose()
}

/// The Twilio client's configuration (`TwilioConfig::from_lookup` over this
/// environment) with its status callback at `RELAY_PUBLIC_URL/sms/status`;
/// `None` in dry-run (no `TWILIO_ACCOUNT_SID`).
pub fn twilio_config(
    settings: &RelaySettings,
    env: &Env,
) -> Result<Option<TwilioConfig>, InitError> {
    if settings.dry_run {
        return Ok(None);
    }
    let mut config = TwilioConfig::from_lookup(|k| env.get(k))?;
    config.status_callback = public_base(settings)?.map(|b| b.join("/sms/status"));
    Ok(Some(config))
}

/// The SMS provider: the Twilio REST client (see [`twilio_config`]) over
/// the functions' HTTP client ([`HttpsClient`]), or, without
/// `TWILIO_ACCOUNT_SID`, a dry-run provider that logs and records.
pub fn provider(settings: &RelaySettings, env: &Env) -> Result<Arc<dyn SmsProvider>, InitError> {
    let Some(config) = twilio_config(settings, env)? else {
        tracing::warn!(
            "DRY-RUN: TWILIO_ACCOUNT_SID is unset; texts are logged and recorded, not sent"
        );
        return Ok(Arc::new(DryRunProvider::new()));
    };
    if config.status_callback.is_none() {
        tracing::warn!(
            "RELAY_PUBLIC_URL is unset: texts go out without a status callback, so failed deliveries do not escalate early"
        );
    }
    let http = Arc::new(HttpsClient::new(config.connect_timeout));
    Ok(Arc::new(TwilioClient::with_transport(config, http)?))
}

/// The relay over these ports, for the settings' business line and
/// policy, keeping opt-outs in `opt_outs` and rate-limit history in
/// `limiter`, publishing its events to the log (and to `extra_sinks`).
pub fn relay(
    settings: &RelaySettings,
    store: Arc<dyn Store>,
    opt_outs: Arc<dyn qdn_relay_core::OptOuts>,
    limiter: Arc<dyn qdn_relay_core::RateLimiter>,
    provider: Arc<dyn SmsProvider>,
    clock: Arc<dyn Clock>,
    extra_sinks: Vec<Box<dyn EventSink>>,
) -> Arc<DynRelay> {
    let mut sinks: Vec<Box<dyn EventSink>> = vec![Box::new(TracingSink)];
    sinks.extend(extra_sinks);
    Arc::new(
        Relay::builder(store, provider, clock)
            .line(settings.line, settings.policy.clone())
            .opt_outs(opt_outs)
            .rate_limiter(limiter)
            .sink(Arc::new(qdn_relay_core::FanoutSink(sinks)))
            .build(),
    )
}

/// The HTTP function's service over `relay`: webhook signatures are checked
/// with `TWILIO_AUTH_TOKEN` (required) against the public URL rebuilt per
/// request.
pub fn http_app(settings: &RelaySettings, relay: Arc<DynRelay>) -> Result<HttpApp, InitError> {
    let validator = settings.validator().ok_or(InitError::Missing {
        var: "TWILIO_AUTH_TOKEN",
        why: "Twilio's webhook signatures are checked with it",
    })?;
    let base = public_base(settings)?;
    let mut http = settings.http.clone();
    // The URL is rebuilt per request (public_url::rebuild), base included.
    http.public_url = None;
    let state = AppState::new(relay, validator, EventHub::default(), http)?;
    Ok(HttpApp::new(state, base))
}

/// Logs to standard output (CloudWatch Logs) at the level named by
/// `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG` (`error` … `trace`; default
/// `info`), as JSON when `AWS_LAMBDA_LOG_FORMAT` is `JSON`, without
/// timestamps (CloudWatch adds them). A level rather than per-module
/// filters keeps the regex engine out of the binary.
pub fn init_logging() {
    use tracing::level_filters::LevelFilter;
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let level = var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|| var("RUST_LOG"))
        .and_then(|l| l.trim().parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let fmt = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false)
        .without_time();
    let json = var("AWS_LAMBDA_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
    let _ = if json {
        fmt.json().try_init()
    } else {
        fmt.try_init()
    };
}

/// The AWS configuration as Lambda provides it, from the environment
/// alone: the region (`AWS_REGION`), the function role's credentials
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) and
/// an optional `AWS_ENDPOINT_URL`. Unlike `aws_config::load_defaults` it
/// reads no profile files and links no other credential source (STS, SSO,
/// IMDS, ECS), which Lambda never needs: a smaller binary, a faster init.
/// The SDK sends through the functions' HTTP client
/// ([`crate::https::sdk::SdkHttpClient`]), not its own.
#[cfg(feature = "dynamo")]
pub fn aws_config(env: &Env) -> aws_config::SdkConfig {
    use aws_config::environment::EnvironmentVariableCredentialsProvider;
    use aws_sdk_dynamodb::config::{Region, SharedCredentialsProvider};
    let region = env
        .get("AWS_REGION")
        .or_else(|| env.get("AWS_DEFAULT_REGION"))
        .filter(|r| !r.trim().is_empty())
        .map(Region::new);
    let mut b = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(region)
        .http_client(crate::https::sdk::SdkHttpClient::new())
        .credentials_provider(SharedCredentialsProvider::new(
            EnvironmentVariableCredentialsProvider::new(),
        ));
    if let Some(url) = env.get("AWS_ENDPOINT_URL").filter(|u| !u.trim().is_empty()) {
        b = b.endpoint_url(url);
    }
    b.build()
}

/// `config` for one service, its endpoint overridden by `var`
/// (`AWS_ENDPOINT_URL_DYNAMODB`, …) when set, as the SDK's own loader does.
#[cfg(feature = "dynamo")]
pub fn service_config(
    config: &aws_config::SdkConfig,
    env: &Env,
    var: &str,
) -> aws_config::SdkConfig {
    match env.get(var).filter(|u| !u.trim().is_empty()) {
        Some(url) => config.to_builder().endpoint_url(url).build(),
        None => config.clone(),
    }
}

/// Both functions' init on AWS: the environment (secret references
/// resolved through SSM and Secrets Manager, feature `secrets`), the
/// DynamoDB store on
/// `RELAY_DYNAMO_TABLE`, the provider and the relay. The AWS configuration
/// ([`aws_config()`]) is built once and shared.
#[cfg(feature = "dynamo")]
pub async fn from_env() -> Result<(RelaySettings, Arc<DynRelay>), InitError> {
    let mut env = Env::from_process();
    let aws = aws_config(&env);
    if env.has_references() {
        #[cfg(feature = "secrets")]
        {
            let http = Arc::new(HttpsClient::new(
                qdn_relay_twilio::client::DEFAULT_CONNECT_TIMEOUT,
            ));
            let fetcher = secrets::AwsSecretFetcher::from_lookup(|k| env.get(k), http);
            env.resolve(Some(&fetcher)).await?;
        }
        #[cfg(not(feature = "secrets"))]
        env.resolve(None).await?;
    }
    let settings = env.settings()?;
    let layout = env.dynamo_config()?;
    let store = Arc::new(qdn_relay_dynamo::DynamoStore::new(
        qdn_relay_dynamo::Client::new(&service_config(&aws, &env, "AWS_ENDPOINT_URL_DYNAMODB")),
        layout,
    ));
    let provider = provider(&settings, &env)?;
    // Opt-outs and rate-limit history in the same table: a STOP and a
    // throttle hold across Lambda instances.
    let relay = relay(
        &settings,
        store.clone(),
        store.clone(),
        store,
        provider,
        Arc::new(qdn_relay_core::SystemClock),
        Vec::new(),
    );
    Ok((settings, relay))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env::from_lookup(|k| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    const BASE: &[(&str, &str)] = &[
        ("QDN_TWILIO_NUMBER", "+16195550000"),
        ("RELAY_CHAIN", "+16195550101,+18583354807"),
        ("RELAY_DYNAMO_TABLE", "qdn-relay"),
    ];

    #[test]
    fn debug_shows_names_not_values() {
        let e = env(&[("TWILIO_AUTH_TOKEN", "very-secret-value")]);
        let d = format!("{e:?}");
        assert!(
            d.contains("TWILIO_AUTH_TOKEN") && !d.contains("very-secret"),
            "{d}"
        );
    }

    #[test]
    fn the_table_is_required() {
        let e = env(&BASE[..2]);
        let err = e.table().expect_err("missing").to_string();
        assert!(err.starts_with("RELAY_DYNAMO_TABLE"), "{err}");
        assert_eq!(env(BASE).table().expect("table"), "qdn-relay");
    }

    #[cfg(feature = "dynamo")]
    #[test]
    fn a_shared_tables_layout_comes_from_the_environment() {
        let c = env(BASE).dynamo_config().expect("defaults");
        assert_eq!(c, qdn_relay_dynamo::DynamoConfig::new("qdn-relay"));
        let mut pairs = BASE[..2].to_vec();
        pairs.extend([
            ("RELAY_DYNAMO_TABLE", "qdn-jobs"),
            ("RELAY_DYNAMO_KEYS", "PK, SK"),
            ("RELAY_DYNAMO_KEY_PREFIX", "RELAY#"),
            ("RELAY_DYNAMO_DUE_INDEX", "relay-due,GSI1PK,GSI1SK"),
            ("RELAY_DYNAMO_LIST_INDEX", "GSI2,GSI2PK,GSI2SK"),
            ("RELAY_DYNAMO_TTL_ATTRIBUTE", "ttl"),
        ]);
        let c = env(&pairs).dynamo_config().expect("shared layout");
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
            let mut pairs = BASE.to_vec();
            pairs.push((var, value));
            let err = env(&pairs).dynamo_config().expect_err(value).to_string();
            let named = if var == "RELAY_DYNAMO_KEY_PREFIX" || value == "PK,PK" {
                "RELAY_DYNAMO_TABLE: the DynamoDB layout is invalid"
            } else {
                var
            };
            assert!(err.starts_with(named), "{var}={value:?}: {err}");
        }
    }

    #[test]
    fn the_http_function_needs_the_auth_token() {
        let e = env(BASE);
        let s = e.settings().expect("settings");
        let relay = relay(
            &s,
            Arc::new(qdn_relay_core::MemoryStore::new()),
            Arc::new(qdn_relay_core::MemoryOptOuts::new()),
            Arc::new(qdn_relay_core::MemoryRateLimiter::new()),
            Arc::new(DryRunProvider::new()),
            Arc::new(qdn_relay_core::SystemClock),
            Vec::new(),
        );
        let err = http_app(&s, relay)
            .err()
            .expect("missing token")
            .to_string();
        assert!(err.starts_with("TWILIO_AUTH_TOKEN"), "{err}");
    }

    #[test]
    fn the_status_callback_is_under_the_public_url() {
        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
            ("TWILIO_AUTH_TOKEN", "token"),
            (
                "RELAY_PUBLIC_URL",
                "https://abc.execute-api.us-east-1.amazonaws.com/prod/",
            ),
        ]);
        let e = env(&pairs);
        let s = e.settings().expect("settings");
        assert_eq!(provider(&s, &e).expect("provider").name(), "twilio");
        let config = twilio_config(&s, &e).expect("config").expect("not dry-run");
        assert_eq!(
            config.status_callback.as_deref(),
            Some("https://abc.execute-api.us-east-1.amazonaws.com/prod/sms/status")
        );
    }

    #[test]
    fn without_an_account_it_is_dry_run() {
        let e = env(BASE);
        let s = e.settings().expect("settings");
        assert_eq!(provider(&s, &e).expect("provider").name(), "dry-run");
    }
}
