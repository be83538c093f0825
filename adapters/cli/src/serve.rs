//! `qdn-relay serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use async_trait::async_trait;
use clap::Args;
use qdn_relay_axum::{AppState, DynRelay, EventHub, HttpConfig, MaintenanceSink, router};
use qdn_relay_core::{
    Clock, EventSink, FanoutSink, ListFilter, OutboundMessage, PhoneNumber, Policy,
    ProviderMessageId, Relay, SendError, SendErrorKind, SendReceipt, SmsProvider, Store,
    SystemClock, TracingSink, parse_duration,
};
use qdn_relay_sqlite::SqliteStore;
use qdn_relay_twilio::{Secret, SignatureValidator, TwilioClient, TwilioConfig};
use tracing_subscriber::EnvFilter;

use crate::dev::{self, DevFile};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The business line customers text (E.164).
    #[arg(long, env = "QDN_TWILIO_NUMBER")]
    line: Option<String>,
    /// The escalation chain: comma-separated E.164 numbers, primary first.
    #[arg(long, env = "RELAY_CHAIN")]
    chain: Option<String>,
    /// How long each level has to acknowledge (e.g. 15m, 90s).
    #[arg(long, env = "RELAY_ACK_TIMEOUT", default_value = "15m")]
    ack_timeout: String,
    /// Where to listen.
    #[arg(long, env = "RELAY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// The SQLite database file.
    #[arg(long, env = "RELAY_DB", default_value = "qdn-relay.db")]
    db: PathBuf,
    /// The public base URL Twilio calls (signatures are checked against it).
    #[arg(long, env = "RELAY_PUBLIC_URL")]
    public_url: Option<String>,
    /// The dashboard's bearer token (at least 16 characters).
    #[arg(long, env = "RELAY_DASHBOARD_TOKEN", hide_env_values = true)]
    dashboard_token: Option<String>,
    /// Origins allowed by CORS, comma-separated.
    #[arg(long, env = "RELAY_CORS_ORIGINS")]
    cors_origins: Option<String>,
    /// Where to keep the maintenance.json snapshot.
    #[arg(long, env = "RELAY_MAINTENANCE_JSON")]
    maintenance_json: Option<PathBuf>,
    /// How often the sweeper fires due timeouts (default: 5s, or a quarter
    /// of the ack timeout if that is shorter).
    #[arg(long, env = "RELAY_SWEEP_INTERVAL")]
    sweep_interval: Option<String>,
    /// Log and record sends instead of sending them (the default without
    /// TWILIO_ACCOUNT_SID).
    #[arg(long)]
    dry_run: bool,
    /// Where to write the dev file `inject` and `status` read.
    #[arg(long, env = "RELAY_DEV_FILE", default_value = dev::DEFAULT_DEV_FILE)]
    dev_file: PathBuf,
    /// Twilio Account SID (unset: dry-run).
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    twilio_account_sid: Option<String>,
    /// Twilio Auth Token: signs webhooks; also authenticates REST calls
    /// unless an API key is given.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    twilio_auth_token: Option<String>,
    /// The previous or next Auth Token, accepted too while rotating.
    #[arg(long, env = "TWILIO_AUTH_TOKEN_SECONDARY", hide_env_values = true)]
    twilio_auth_token_secondary: Option<String>,
    /// Twilio API Key SID (with --twilio-api-secret, instead of the Auth Token for REST calls).
    #[arg(long, env = "TWILIO_API_KEY")]
    twilio_api_key: Option<String>,
    /// Twilio API Key secret.
    #[arg(long, env = "TWILIO_API_SECRET", hide_env_values = true)]
    twilio_api_secret: Option<String>,
    /// Twilio's REST base URL (for a local mock).
    #[arg(long, env = "TWILIO_API_BASE")]
    twilio_api_base: Option<String>,
}

fn required(v: &Option<String>, var: &str, flag: &str, example: &str) -> anyhow::Result<String> {
    match v.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => bail!("{var} (or {flag}) is required, e.g. {example}"),
    }
}

fn number(var: &str, s: &str) -> anyhow::Result<PhoneNumber> {
    s.trim()
        .parse()
        .map_err(|e| anyhow!("{var}: {s:?} is not a phone number: {e}"))
}

/// The relay's settings, checked.
struct Settings {
    line: PhoneNumber,
    chain: Vec<PhoneNumber>,
    policy: Policy,
    listen: SocketAddr,
    sweep_every: Duration,
}

fn settings(a: &ServeArgs) -> anyhow::Result<Settings> {
    let line = number(
        "QDN_TWILIO_NUMBER",
        &required(&a.line, "QDN_TWILIO_NUMBER", "--line", "+16195550000")?,
    )?;
    let chain_s = required(
        &a.chain,
        "RELAY_CHAIN",
        "--chain",
        "+16195550101,+18583354807",
    )?;
    let chain = chain_s
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| number("RELAY_CHAIN", s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if chain.contains(&line) {
        bail!("RELAY_CHAIN must not contain the business line {line} (it would text itself)");
    }
    let timeout = parse_duration(&a.ack_timeout).map_err(|e| anyhow!("RELAY_ACK_TIMEOUT: {e}"))?;
    let policy = Policy::chain(&chain, timeout)
        .map_err(|e| anyhow!("RELAY_CHAIN / RELAY_ACK_TIMEOUT: {e}"))?;
    let listen: SocketAddr = a.listen.parse().map_err(|e| {
        anyhow!(
            "RELAY_LISTEN: {:?} is not an address like 127.0.0.1:8080: {e}",
            a.listen
        )
    })?;
    let sweep_every = match &a.sweep_interval {
        Some(s) => parse_duration(s).map_err(|e| anyhow!("RELAY_SWEEP_INTERVAL: {e}"))?,
        None => (timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5)),
    };
    if sweep_every.is_zero() {
        bail!("RELAY_SWEEP_INTERVAL must be more than zero");
    }
    Ok(Settings {
        line,
        chain,
        policy,
        listen,
        sweep_every,
    })
}

/// Sends nothing: logs each text and answers with a made-up sid.
struct DryRunProvider {
    counter: AtomicU64,
    epoch: u64,
}

impl DryRunProvider {
    fn new() -> Self {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            counter: AtomicU64::new(0),
            epoch,
        }
    }
}

#[async_trait]
impl SmsProvider for DryRunProvider {
    async fn send(&self, msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let sid: ProviderMessageId = format!("SMdry{:016x}{n:012x}", self.epoch)
            .parse()
            .map_err(|e| SendError::new(SendErrorKind::Rejected, format!("{e}")))?;
        tracing::info!(
            dispatch = %msg.dispatch, leg = msg.leg, from = %msg.from, to = %msg.to, sid = %sid,
            body = %msg.body, "dry-run: text recorded, not sent"
        );
        Ok(SendReceipt { sid })
    }

    fn name(&self) -> &str {
        "dry-run"
    }
}

pub async fn run(a: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let s = settings(&a)?;
    let dry_run = a.dry_run
        || a.twilio_account_sid
            .as_deref()
            .is_none_or(|v| v.trim().is_empty());

    // The token webhooks are signed with.
    let env_token = a.twilio_auth_token.clone().filter(|t| !t.trim().is_empty());
    let (auth_token, generated_token) = match env_token {
        Some(t) => (t, false),
        None if dry_run => (dev::random_token(), true),
        None => bail!("TWILIO_AUTH_TOKEN is required to check Twilio's webhook signatures"),
    };
    let mut validator = SignatureValidator::new(Secret::new(auth_token.clone()));
    if let Some(sec) = a
        .twilio_auth_token_secondary
        .clone()
        .filter(|t| !t.trim().is_empty())
    {
        validator = validator.with_secondary(Secret::new(sec));
    }
    let dashboard_token = match a.dashboard_token.clone().filter(|t| !t.trim().is_empty()) {
        Some(t) => Some(t),
        None if dry_run => Some(dev::random_token()),
        None => None,
    };
    let public_url = a.public_url.clone().filter(|u| !u.trim().is_empty());
    let callback_base = public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", s.listen))
        .trim_end_matches('/')
        .to_owned();

    // The provider.
    let provider: Arc<dyn SmsProvider> = if dry_run {
        Arc::new(DryRunProvider::new())
    } else {
        let lookup = |k: &str| -> Option<String> {
            match k {
                "TWILIO_ACCOUNT_SID" => a.twilio_account_sid.clone(),
                "TWILIO_AUTH_TOKEN" => a.twilio_auth_token.clone(),
                "TWILIO_API_KEY" => a.twilio_api_key.clone(),
                "TWILIO_API_SECRET" => a.twilio_api_secret.clone(),
                "TWILIO_API_BASE" => a.twilio_api_base.clone(),
                other => std::env::var(other).ok(),
            }
        };
        let mut config = TwilioConfig::from_lookup(lookup)?;
        config.status_callback = Some(format!("{callback_base}/sms/status"));
        Arc::new(TwilioClient::new(config)?)
    };

    // The store and the sinks.
    let store = SqliteStore::open(&a.db)
        .await
        .with_context(|| format!("RELAY_DB: cannot open {}", a.db.display()))?;
    let store: Arc<dyn Store> = Arc::new(store);
    let hub = EventHub::default();
    let mut sinks: Vec<Box<dyn EventSink>> = vec![Box::new(TracingSink), Box::new(hub.clone())];
    if let Some(path) = &a.maintenance_json {
        let m = MaintenanceSink::new(path.clone());
        let open = store.list(ListFilter::Open, 10_000).await?;
        m.seed(&open)
            .await
            .with_context(|| format!("RELAY_MAINTENANCE_JSON: cannot write {}", path.display()))?;
        sinks.push(Box::new(m));
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let relay: Arc<DynRelay> = Arc::new(
        Relay::builder(store, provider, clock)
            .line(s.line, s.policy.clone())
            .sink(Arc::new(FanoutSink(sinks)))
            .build(),
    );
    let cors_origins = a
        .cors_origins
        .as_deref()
        .map(|s| {
            s.split(',')
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let state = AppState::new(
        relay.clone(),
        validator,
        hub,
        HttpConfig {
            public_url: public_url.clone(),
            dashboard_token: dashboard_token.clone().map(Secret::new),
            cors_origins,
            ..HttpConfig::default()
        },
    )?;

    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("RELAY_LISTEN: cannot listen on {}", s.listen))?;
    let bound = listener.local_addr()?;
    let url = format!("http://{bound}");

    // Tell the user what is running.
    let chain: Vec<String> = s.chain.iter().map(ToString::to_string).collect();
    tracing::info!(
        line = %s.line, chain = %chain.join(" → "), ack_timeout = %a.ack_timeout, db = %a.db.display(),
        "qdn-relay listening on {url}"
    );
    if dry_run {
        tracing::warn!(
            "DRY-RUN: no Twilio account configured (TWILIO_ACCOUNT_SID unset or --dry-run); texts are logged and recorded, not sent"
        );
    }
    if generated_token {
        tracing::warn!(
            "webhook signatures are checked with a local development token: {auth_token}"
        );
    }
    if a.dashboard_token
        .as_deref()
        .is_none_or(|t| t.trim().is_empty())
    {
        match &dashboard_token {
            Some(t) => tracing::warn!("dashboard token (development): {t}"),
            None => tracing::warn!("RELAY_DASHBOARD_TOKEN unset: dashboard routes answer 401"),
        }
    }
    if dry_run {
        let file = DevFile {
            url: url.clone(),
            auth_token: auth_token.clone(),
            dashboard_token: dashboard_token.clone(),
            line: s.line.to_string(),
            chain,
            public_url,
        };
        file.write(&a.dev_file)?;
        tracing::info!(
            "wrote {} for `qdn-relay inject` and `qdn-relay status`",
            a.dev_file.display()
        );
    }

    // The sweeper, and the server; both stop on SIGTERM / Ctrl-C.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sweeper = {
        let relay = relay.clone();
        let mut stop = stop_rx.clone();
        let every = s.sweep_every;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let r = relay.sweep().await;
                        if r.fired > 0 || !r.is_ok() {
                            tracing::debug!(fired = r.fired, errors = r.errors.len(), "sweep");
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        })
    };
    let mut stop = stop_rx.clone();
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
        let _ = stop.changed().await;
    });
    let signals = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = stop_tx.send(true);
    };
    tokio::select! {
        r = server => r.context("server failed")?,
        () = async { signals.await; std::future::pending::<()>().await } => {}
    }
    let _ = sweeper.await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
