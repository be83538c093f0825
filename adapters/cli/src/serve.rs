//! `qdn-relay serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use qdn_relay_app::{Backend, RelaySettings, TwilioHttp, Wiring, provider, sweep_interval};
use qdn_relay_axum::{AppState, EventHub, MaintenanceSink, router};
use qdn_relay_core::ListFilter;
use qdn_relay_twilio::{Secret, SignatureValidator};
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
    /// A policy file (TOML: levels, on-duty windows, throttling); wins over
    /// the chain. See `qdn-relay policy check`.
    #[arg(long, env = "RELAY_POLICY")]
    policy: Option<String>,
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

impl ServeArgs {
    /// Reads a setting the way the environment would hold it: flags (which
    /// clap already filled from the environment) by their variable's name.
    fn lookup(&self, var: &str) -> Option<String> {
        match var {
            "QDN_TWILIO_NUMBER" => self.line.clone(),
            "RELAY_CHAIN" => self.chain.clone(),
            "RELAY_POLICY" => self.policy.clone(),
            "RELAY_ACK_TIMEOUT" => Some(self.ack_timeout.clone()),
            "RELAY_PUBLIC_URL" => self.public_url.clone(),
            "RELAY_DASHBOARD_TOKEN" => self.dashboard_token.clone(),
            "RELAY_CORS_ORIGINS" => self.cors_origins.clone(),
            "TWILIO_ACCOUNT_SID" if self.dry_run => None,
            "TWILIO_ACCOUNT_SID" => self.twilio_account_sid.clone(),
            "TWILIO_AUTH_TOKEN" => self.twilio_auth_token.clone(),
            "TWILIO_AUTH_TOKEN_SECONDARY" => self.twilio_auth_token_secondary.clone(),
            "TWILIO_API_KEY" => self.twilio_api_key.clone(),
            "TWILIO_API_SECRET" => self.twilio_api_secret.clone(),
            "TWILIO_API_BASE" => self.twilio_api_base.clone(),
            other => std::env::var(other).ok(),
        }
    }
}

/// Where to listen and how often to sweep.
struct Local {
    listen: SocketAddr,
    sweep_every: Duration,
}

fn local(a: &ServeArgs, ack_timeout: Duration) -> anyhow::Result<Local> {
    let listen: SocketAddr = a.listen.parse().map_err(|e| {
        anyhow!(
            "RELAY_LISTEN: {:?} is not an address like 127.0.0.1:8080: {e}",
            a.listen
        )
    })?;
    let sweep_every = sweep_interval(a.sweep_interval.as_deref(), ack_timeout)?;
    Ok(Local {
        listen,
        sweep_every,
    })
}

pub async fn run(a: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let settings = RelaySettings::from_lookup(|k| a.lookup(k))?;
    let l = local(&a, settings.ack_timeout)?;
    let dry_run = settings.dry_run;

    // The token webhooks are signed with.
    let (validator, auth_token, generated_token) = match settings.validator() {
        Some(v) => (
            v,
            settings.auth_token.clone().map(|t| t.expose().to_owned()),
            false,
        ),
        None if dry_run => {
            let t = dev::random_token();
            (
                SignatureValidator::new(Secret::new(t.clone())),
                Some(t),
                true,
            )
        }
        None => bail!("TWILIO_AUTH_TOKEN: required to check Twilio's webhook signatures"),
    };
    let mut http = settings.http.clone();
    if http.dashboard_token.is_none() && dry_run {
        http.dashboard_token = Some(Secret::new(dev::random_token()));
    }
    let public_url = http.public_url.clone();

    // The relay: the provider the settings choose (status callbacks to
    // RELAY_PUBLIC_URL, else to this server), the SQLite store (which also
    // keeps opt-outs, so they survive restarts), the live event hub and
    // maintenance.json.
    let provider = provider(
        &settings,
        TwilioHttp::Reqwest,
        Some(&format!("http://{}", l.listen)),
    )?;
    let backend = Backend::open_sqlite(&a.db).await?;
    let hub = EventHub::default();
    let mut wiring = Wiring::new(&settings, backend.clone(), provider).sink(hub.clone());
    if let Some(path) = &a.maintenance_json {
        let m = MaintenanceSink::new(path.clone());
        let open = backend.store().list(ListFilter::Open, 10_000).await?;
        m.seed(&open)
            .await
            .with_context(|| format!("RELAY_MAINTENANCE_JSON: cannot write {}", path.display()))?;
        wiring = wiring.sink(m);
    }
    let relay = wiring.build();
    let dashboard_token = http.dashboard_token.as_ref().map(|t| t.expose().to_owned());
    let mut state = AppState::new(relay.clone(), validator, hub, http)?;
    // AWS SMS's two-way texts and delivery events, from its SNS topics.
    if let Some(aws) = settings
        .aws_sms
        .as_ref()
        .filter(|a| !a.sns_topics.is_empty())
    {
        let https = qdn_relay_twilio::ReqwestTransport::new(aws.config.connect_timeout)
            .map_err(|e| anyhow::anyhow!("AWS SMS: {}", e.message))?;
        state = state.with_sns(qdn_relay_axum::SnsIntake::over(
            aws.sns_topics.clone(),
            std::sync::Arc::new(https),
        ));
    }

    let listener = tokio::net::TcpListener::bind(l.listen)
        .await
        .with_context(|| format!("RELAY_LISTEN: cannot listen on {}", l.listen))?;
    let bound = listener.local_addr()?;
    let url = format!("http://{bound}");

    // Tell the user what is running.
    let chain: Vec<String> = settings.chain.iter().map(ToString::to_string).collect();
    tracing::info!(
        line = %settings.line, chain = %chain.join(" → "), ack_timeout = %a.ack_timeout, db = %a.db.display(),
        "qdn-relay listening on {url}"
    );
    let auth_token = auth_token.unwrap_or_default();
    if generated_token {
        tracing::warn!(
            "webhook signatures are checked with a local development token: {auth_token}"
        );
    }
    if settings.http.dashboard_token.is_none() {
        match &dashboard_token {
            Some(t) => tracing::warn!("dashboard token (development): {t}"),
            None => tracing::warn!("RELAY_DASHBOARD_TOKEN unset: dashboard routes answer 401"),
        }
    }
    if dry_run {
        // Only tokens made here for development go into the file; a real
        // Auth Token or a configured dashboard token stays in the
        // environment it came from.
        let file = DevFile {
            url: url.clone(),
            auth_token: generated_token.then(|| auth_token.clone()),
            dashboard_token: dashboard_token
                .clone()
                .filter(|_| settings.http.dashboard_token.is_none()),
            line: settings.line.to_string(),
            chain,
            public_url,
        };
        file.write(&a.dev_file)?;
        tracing::info!(
            "wrote {} for `qdn-relay inject` and `qdn-relay status`",
            a.dev_file.display()
        );
    }

    // The server and its sweeper; both stop on SIGTERM / Ctrl-C, requests
    // in flight finishing first.
    qdn_relay_axum::serve(listener, router(state), relay, l.sweep_every)
        .await
        .context("server failed")?;
    Ok(())
}
