//! `job-service`: the job-tracking service with the relay embedded, on the
//! embedded defaults (relay state in one SQLite file, jobs in another;
//! dry-run unless a Twilio account is configured).
//!
//! Configuration is the relay's environment (`QDN_TWILIO_NUMBER`,
//! `RELAY_CHAIN` or `RELAY_POLICY`, `RELAY_ACK_TIMEOUT`,
//! `RELAY_DASHBOARD_TOKEN`, `RELAY_PUBLIC_URL`, `TWILIO_*`, see
//! `qdn_relay_app::RelaySettings`) plus `RELAY_LISTEN` (default
//! `127.0.0.1:8080`), `RELAY_DB` (default `job-service-relay.db`),
//! `JOBS_DB` (default `jobs.db`) and `RELAY_SWEEP_INTERVAL`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use qdn_relay_app::{Backend, RelaySettings, TwilioHttp, Wiring, provider, sweep_interval};
use qdn_relay_axum::{AppState, EventHub};
use qdn_relay_example_job_service::{JobsConfig, JobsDb, app};
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
    // `/jobs` lists customers' numbers and texts: never served open.
    let dashboard_token = settings.http.dashboard_token.clone().ok_or_else(|| {
        anyhow!(
            "RELAY_DASHBOARD_TOKEN: required: it guards /jobs (customers' numbers and texts) and the relay's dashboard routes (at least 16 characters)"
        )
    })?;
    let listen: SocketAddr = env("RELAY_LISTEN")
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned())
        .parse()
        .map_err(|e| anyhow!("RELAY_LISTEN: not an address like 127.0.0.1:8080: {e}"))?;
    let relay_db = env("RELAY_DB").unwrap_or_else(|| "job-service-relay.db".to_owned());
    let jobs_db = env("JOBS_DB").unwrap_or_else(|| "jobs.db".to_owned());
    let sweep_every = sweep_interval(env("RELAY_SWEEP_INTERVAL").as_deref(), settings.ack_timeout)?;
    let validator = settings.validator().ok_or_else(|| {
        anyhow!(
            "TWILIO_AUTH_TOKEN: required to check Twilio's webhook signatures (in dry-run any value will do: sign test webhooks with it)"
        )
    })?;
    // The provider: dry-run (texts logged, not sent) without TWILIO_ACCOUNT_SID.
    let provider = provider(
        &settings,
        TwilioHttp::Reqwest,
        Some(&format!("http://{listen}")),
    )?;

    // ---- embedding: the lines that matter -------------------------------
    // The relay's own state (dispatches, opt-outs) in its SQLite file.
    let backend = Backend::open_sqlite(&relay_db).await?;
    // The service's jobs, in its own file: also the relay's `Jobs` port.
    let jobs = JobsDb::open(&jobs_db)
        .await
        .with_context(|| format!("JOBS_DB: cannot open {jobs_db}"))?;
    let hub = EventHub::default();
    let relay = Wiring::new(&settings, backend, provider)
        .sink(hub.clone()) // the live /sms/events stream
        .jobs(Arc::new(jobs.clone())) // the relay talks to the jobs
        .build();
    let state = AppState::new(relay.clone(), validator, hub, settings.http.clone())?;
    let config = JobsConfig {
        line: settings.line,
        dashboard_token,
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

    // The server and the sweeper (due timeouts, job-system retries); both
    // stop on Ctrl-C / SIGTERM, requests in flight finishing first.
    qdn_relay_axum::serve(listener, router, relay, sweep_every)
        .await
        .context("server failed")?;
    Ok(())
}
