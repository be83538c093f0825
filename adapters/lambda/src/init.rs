//! What both functions do once, at init: read the environment (resolving
//! secret references), then wire the relay as every runner does
//! (`qdn-relay-app`): the settings, the provider they choose (the Twilio
//! client over the functions' [`HttpsClient`]), the DynamoDB store.
//!
//! Everything here is built once per execution environment, outside the
//! handler, and shared by every invocation it serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use qdn_relay_app::{DynRelay, RelaySettings, SettingsError, TwilioHttp};
use qdn_relay_core::SmsProvider;

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
    /// The relay could not be wired (the Twilio REST client).
    #[error(transparent)]
    Wiring(#[from] qdn_relay_app::WiringError),
    /// The public URL is invalid.
    #[error(transparent)]
    PublicUrl(#[from] BadPublicBase),
    /// The HTTP surface's settings are invalid.
    #[error(transparent)]
    Http(#[from] qdn_relay_app::HttpConfigError),
    /// The timer queue (`RELAY_TIMER_QUEUE_URL`) cannot be used.
    #[error("RELAY_TIMER_QUEUE_URL: {0}")]
    Timers(String),
    /// A required variable is missing.
    #[error("{var} is not set: {why}")]
    Missing {
        /// The variable.
        var: &'static str,
        /// What it is for.
        why: &'static str,
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

/// The SMS provider the settings choose (see `qdn_relay_app::provider`):
/// the Twilio REST client over the functions' HTTP client
/// ([`HttpsClient`]), its status callback at `RELAY_PUBLIC_URL/sms/status`,
/// or, without `TWILIO_ACCOUNT_SID`, a dry-run provider that logs and
/// records.
pub fn provider(settings: &RelaySettings) -> Result<Arc<dyn SmsProvider>, InitError> {
    // The same check the HTTP function makes, so a bad URL fails both.
    public_base(settings)?;
    let connect_timeout = settings
        .twilio
        .as_ref()
        .map_or(qdn_relay_twilio::client::DEFAULT_CONNECT_TIMEOUT, |c| {
            c.connect_timeout
        });
    let http = TwilioHttp::Transport(Arc::new(HttpsClient::new(connect_timeout)));
    Ok(qdn_relay_app::provider(settings, http, None)?)
}

/// The HTTP function's service over `relay`: webhook signatures are checked
/// with `TWILIO_AUTH_TOKEN` (required) against the public URL rebuilt per
/// request.
#[cfg(feature = "http")]
pub fn http_app(
    settings: &RelaySettings,
    relay: Arc<DynRelay>,
) -> Result<crate::http::HttpApp, InitError> {
    let validator = settings.validator().ok_or(InitError::Missing {
        var: "TWILIO_AUTH_TOKEN",
        why: "Twilio's webhook signatures are checked with it",
    })?;
    let base = public_base(settings)?;
    let mut http = settings.http.clone();
    // The URL is rebuilt per request (public_url::rebuild), base included.
    http.public_url = None;
    let emf = qdn_relay_metrics::EmfSink::stdout(relay.provider().name());
    let mut state =
        qdn_relay_axum::AppState::new(relay, validator, qdn_relay_axum::EventHub::default(), http)?
            .with_recorder(Arc::new(emf));
    // AWS SMS's two-way texts and delivery events, for a stack that
    // subscribes /sms/aws/sns over HTTPS (this stack's topic invokes the SMS
    // events function instead: `crate::sns`).
    if let Some(aws) = settings.aws_sms_over_sns() {
        let https = Arc::new(HttpsClient::new(aws.config.connect_timeout));
        state = state.with_sns(qdn_relay_axum::SnsIntake::over(
            aws.sns_topics.clone(),
            https,
        ));
    }
    Ok(crate::http::HttpApp::new(state, base))
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
    let (settings, relay, _) = from_env_with_timers().await?;
    Ok((settings, relay))
}

/// The timers of [`from_env_with_timers`]: none without the `timers`
/// feature.
#[cfg(feature = "timers")]
pub type TimerQueue = Option<Arc<crate::timers::SqsTimers>>;
/// The timers of [`from_env_with_timers`]: none without the `timers`
/// feature.
#[cfg(not(feature = "timers"))]
pub type TimerQueue = Option<std::convert::Infallible>;

/// [`from_env`], and the SQS timer queue when `RELAY_TIMER_QUEUE_URL`
/// names one (feature `timers`): the relay hands it every new deadline,
/// and the tick function sends a timer again when its deadline is more
/// than 15 minutes away.
#[cfg(feature = "dynamo")]
pub async fn from_env_with_timers() -> Result<(RelaySettings, Arc<DynRelay>, TimerQueue), InitError>
{
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
    let (backend, _) = qdn_relay_app::Backend::open_dynamo(
        qdn_relay_dynamo::Client::new(&service_config(&aws, &env, "AWS_ENDPOINT_URL_DYNAMODB")),
        |k| env.get(k),
    )?;
    let provider = provider(&settings)?;
    // The metrics as embedded-metric-format lines on standard output
    // (CloudWatch extracts them from the log; no API call).
    let emf = Arc::new(qdn_relay_metrics::EmfSink::stdout(provider.name()));
    let recorder = Arc::clone(&emf) as Arc<dyn qdn_relay_metrics::Recorder>;
    // Opt-outs and rate-limit history in the same table: a STOP and a
    // throttle hold across Lambda instances.
    let backend = backend.map_store(move |s| {
        Arc::new(qdn_relay_metrics::MeteredStore::new(s, recorder))
            as Arc<dyn qdn_relay_core::Store>
    });
    let builder = qdn_relay_app::Wiring::new(&settings, backend, provider)
        .sink(emf)
        .builder();
    #[cfg(feature = "timers")]
    let timers = match crate::timers::SqsTimers::from_lookup(
        |k| env.get(k),
        Arc::new(HttpsClient::new(
            qdn_relay_twilio::client::DEFAULT_CONNECT_TIMEOUT,
        )),
    ) {
        None => None,
        Some(Ok(t)) => Some(Arc::new(t)),
        Some(Err(e)) => return Err(InitError::Timers(e)),
    };
    #[cfg(not(feature = "timers"))]
    let timers: TimerQueue = None;
    #[cfg(feature = "timers")]
    let builder = match &timers {
        Some(t) => builder.timers(Arc::clone(t) as Arc<dyn qdn_relay_core::Timers>),
        None => builder,
    };
    let relay = Arc::new(builder.build());
    Ok((settings, relay, timers))
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

    #[cfg(feature = "http")]
    #[test]
    fn the_http_function_needs_the_auth_token() {
        let e = env(BASE);
        let s = e.settings().expect("settings");
        let relay = qdn_relay_app::Wiring::new(
            &s,
            qdn_relay_app::Backend::new(Arc::new(qdn_relay_core::MemoryStore::new())),
            Arc::new(qdn_relay_app::DryRunProvider::new()),
        )
        .build();
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
        assert_eq!(provider(&s).expect("provider").name(), "twilio");
        assert_eq!(
            s.status_callback(None).as_deref(),
            Some("https://abc.execute-api.us-east-1.amazonaws.com/prod/sms/status#rc=3&rp=ct,5xx")
        );
        // The same URL as the HTTP function rebuilds requests under (the
        // fragment, Twilio's retry overrides, is not part of a signature).
        let base = public_base(&s).expect("valid").expect("set");
        assert_eq!(
            s.status_callback(None),
            Some(qdn_relay_twilio::with_webhook_overrides(
                &base.join("/sms/status")
            ))
        );
    }

    #[test]
    fn without_an_account_it_is_dry_run() {
        let e = env(BASE);
        let s = e.settings().expect("settings");
        assert_eq!(provider(&s).expect("provider").name(), "dry-run");
    }
}
