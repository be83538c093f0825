//! `job-service`: the job-tracking service with the relay embedded, on the
//! embedded defaults (relay state in one SQLite file, jobs in another;
//! dry-run unless a Twilio account is configured).
//!
//! Configuration is the relay's environment (`QDN_TWILIO_NUMBER`,
//! `RELAY_CHAIN` or `RELAY_POLICY`, `RELAY_ACK_TIMEOUT`,
//! `RELAY_DASHBOARD_TOKEN`, `RELAY_PUBLIC_URL`, `TWILIO_*`, see
//! `qdn_relay_axum::RelaySettings`) plus `RELAY_LISTEN` (default
//! `127.0.0.1:8080`), `RELAY_DB` (default `job-service-relay.db`),
//! `JOBS_DB` (default `jobs.db`) and `RELAY_SWEEP_INTERVAL`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use qdn_relay_axum::{AppState, DryRunProvider, DynRelay, EventHub, RelaySettings};
use qdn_relay_core::{
    Clock, EventSink, FanoutSink, OptOuts, Relay, SmsProvider, Store, SystemClock, TracingSink,
    parse_duration,
};
use qdn_relay_example_job_service::{JobsConfig, JobsDb, app};
use qdn_relay_sqlite::SqliteStore;
use qdn_relay_twilio::{TwilioClient, TwilioConfig};
use tracing_subscriber::EnvFilter;

fn env(var: &str) -> Option<String> {
    std::env::var(var)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let settings = RelaySettings::from_env()?;
    let listen: SocketAddr = env("RELAY_LISTEN")
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned())
        .parse()
        .map_err(|e| anyhow!("RELAY_LISTEN: not an address like 127.0.0.1:8080: {e}"))?;
    let relay_db = env("RELAY_DB").unwrap_or_else(|| "job-service-relay.db".to_owned());
    let jobs_db = env("JOBS_DB").unwrap_or_else(|| "jobs.db".to_owned());
    let sweep_every = match env("RELAY_SWEEP_INTERVAL") {
        Some(s) => parse_duration(&s).map_err(|e| anyhow!("RELAY_SWEEP_INTERVAL: {e}"))?,
        None => {
            (settings.ack_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(5))
        }
    };
    let validator = settings.validator().ok_or_else(|| {
        anyhow!(
            "TWILIO_AUTH_TOKEN: required to check Twilio's webhook signatures (in dry-run any value will do: sign test webhooks with it)"
        )
    })?;
    if sweep_every.is_zero() {
        bail!("RELAY_SWEEP_INTERVAL must be more than zero");
    }

    // The provider: dry-run (texts logged, not sent) without TWILIO_ACCOUNT_SID.
    let provider: Arc<dyn SmsProvider> = if settings.dry_run {
        tracing::warn!("DRY-RUN: TWILIO_ACCOUNT_SID unset; texts are logged, not sent");
        Arc::new(DryRunProvider::new())
    } else {
        let mut config = TwilioConfig::from_lookup(|k| std::env::var(k).ok())?;
        let base = settings
            .http
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"));
        config.status_callback = Some(format!("{}/sms/status", base.trim_end_matches('/')));
        Arc::new(TwilioClient::new(config)?)
    };

    // ---- embedding: the lines that matter -------------------------------
    // The relay's own state (dispatches, opt-outs) in its SQLite file.
    let store = SqliteStore::open(&relay_db)
        .await
        .with_context(|| format!("RELAY_DB: cannot open {relay_db}"))?;
    let opt_outs: Arc<dyn OptOuts> = Arc::new(store.clone());
    let store: Arc<dyn Store> = Arc::new(store);
    // The service's jobs, in its own file: also the relay's `Jobs` port.
    let jobs = JobsDb::open(&jobs_db)
        .await
        .with_context(|| format!("JOBS_DB: cannot open {jobs_db}"))?;
    let hub = EventHub::default();
    let sinks: Vec<Box<dyn EventSink>> = vec![Box::new(TracingSink), Box::new(hub.clone())];
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let relay: Arc<DynRelay> = Arc::new(
        Relay::builder(store, provider, clock)
            .line(settings.line, settings.policy.clone())
            .opt_outs(opt_outs)
            .sink(Arc::new(FanoutSink(sinks)))
            .jobs(Arc::new(jobs.clone()))
            .build(),
    );
    let state = AppState::new(relay.clone(), validator, hub, settings.http.clone())?;
    let config = JobsConfig {
        line: settings.line,
        dashboard_token: settings.http.dashboard_token.clone(),
    };
    // `/jobs` and the relay's `/sms/...` in one router.
    let router = app(state, jobs, config);
    // ---------------------------------------------------------------------

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("RELAY_LISTEN: cannot listen on {listen}"))?;
    tracing::info!(
        line = %settings.line, relay_db = %relay_db, jobs_db = %jobs_db,
        "job-service listening on http://{}", listener.local_addr()?
    );
    if settings.http.dashboard_token.is_none() {
        tracing::warn!(
            "RELAY_DASHBOARD_TOKEN unset: /jobs is open to anyone and the relay's dashboard routes answer 401"
        );
    }

    // The server and the sweeper (due timeouts, job-system retries); both
    // stop on Ctrl-C / SIGTERM, requests in flight finishing first.
    qdn_relay_axum::serve(listener, router, relay, sweep_every)
        .await
        .context("server failed")?;
    Ok(())
}
