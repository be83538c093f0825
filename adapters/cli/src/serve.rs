//! `qdn-relay serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use qdn_relay_app::{Backend, RelaySettings, TwilioHttp, Wiring, provider, sweep_interval};
use qdn_relay_axum::{
    AppState, EventHub, MaintenanceSink, ServeOptions, metrics_router, router, shutdown_signal,
};
use qdn_relay_core::{EventSink, FanoutSink, ListFilter, Store};
use qdn_relay_metrics::{MeteredStore, Metrics, MetricsSink};
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
    /// The SQLite database file (unless RELAY_DYNAMO_TABLE is set).
    #[arg(long, env = "RELAY_DB", default_value = "qdn-relay.db")]
    db: PathBuf,
    /// How this server uses the SQLite file: `exclusive` (it owns the
    /// file: every dispatch is also held in memory, so no read touches the
    /// file, and a second server on the same file is refused) or `shared`
    /// (every read from the file; other processes may write it).
    #[arg(long, env = "RELAY_DB_MODE", value_enum, default_value_t = DbMode::Exclusive)]
    db_mode: DbMode,
    /// A DynamoDB table instead of the SQLite file: several servers can
    /// share it (needs a build with the `dynamo` feature). Its layout
    /// comes from RELAY_DYNAMO_KEYS, RELAY_DYNAMO_KEY_PREFIX,
    /// RELAY_DYNAMO_DUE_INDEX, RELAY_DYNAMO_LIST_INDEX and
    /// RELAY_DYNAMO_TTL_ATTRIBUTE, the client from the AWS environment
    /// (AWS_REGION, credentials, AWS_ENDPOINT_URL_DYNAMODB).
    #[arg(long, env = "RELAY_DYNAMO_TABLE")]
    dynamo_table: Option<String>,
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
    /// The maintenance.json file's permission bits, in octal (e.g. 640 to
    /// let a dashboard's group read it).
    #[arg(long, env = "RELAY_MAINTENANCE_MODE", default_value = "600", value_parser = parse_mode)]
    maintenance_mode: u32,
    /// How maintenance.json shows phone numbers: `masked` (+1619•••0100) or
    /// `full`.
    #[arg(long, env = "RELAY_MAINTENANCE_NUMBERS", default_value = "masked", value_parser = ["masked", "full"])]
    maintenance_numbers: String,
    /// How often the sweeper fires due timeouts (default: 5s, or a quarter
    /// of the ack timeout if that is shorter).
    #[arg(long, env = "RELAY_SWEEP_INTERVAL")]
    sweep_interval: Option<String>,
    /// Where to serve `GET /metrics` without authentication, for a scraper
    /// inside the network (it is always on the main listener, behind the
    /// dashboard bearer).
    #[arg(long, env = "RELAY_METRICS_LISTEN")]
    metrics_listen: Option<String>,
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
            "RELAY_DYNAMO_TABLE" => self.dynamo_table.clone(),
            other => std::env::var(other).ok(),
        }
    }
}

/// Permission bits in octal (`600`, `0640`), owner-writable and at most `777`.
fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let mode = u32::from_str_radix(t.strip_prefix("0o").unwrap_or(t), 8).map_err(|_| {
        format!("RELAY_MAINTENANCE_MODE: {s:?} is not octal permission bits like 600 or 640")
    })?;
    if mode > 0o777 {
        return Err(format!("RELAY_MAINTENANCE_MODE: {s:?} is more than 777"));
    }
    if mode & 0o600 != 0o600 {
        return Err(format!(
            "RELAY_MAINTENANCE_MODE: {s:?} would not let the relay read and write its own file (it needs 600)"
        ));
    }
    Ok(mode)
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

/// Starts publishing the events of every process on the store to a sink
/// (the change feed of a shared table).
type Follow = Box<dyn FnOnce(Arc<dyn EventSink>) + Send>;

/// How `serve` uses its SQLite file (`RELAY_DB_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DbMode {
    /// This server owns the file; every dispatch is also held in memory.
    Exclusive,
    /// Every read from the file; other processes may write it.
    Shared,
}

/// The store we serve from.
struct Opened {
    backend: Backend,
    /// How to name it in the log.
    name: String,
    /// With a table shared by several servers, its change feed: the live
    /// sinks (SSE, maintenance.json) are fed from it, so they show every
    /// server's work; else they hear this process's relay.
    follow: Option<Follow>,
}

/// The store: the DynamoDB table when `RELAY_DYNAMO_TABLE` is set, else
/// the SQLite file.
async fn open_backend(a: &ServeArgs) -> anyhow::Result<Opened> {
    let table = a
        .lookup("RELAY_DYNAMO_TABLE")
        .filter(|t| !t.trim().is_empty());
    match table {
        None if a.db_mode == DbMode::Shared => Ok(Opened {
            backend: Backend::open_sqlite(&a.db).await?,
            name: format!("sqlite {} (shared)", a.db.display()),
            follow: None,
        }),
        None => Ok(Opened {
            backend: Backend::open_sqlite_exclusive(&a.db).await?,
            name: format!("sqlite {} (exclusive, mirrored in memory)", a.db.display()),
            follow: None,
        }),
        Some(table) => open_dynamo(a, table).await,
    }
}

#[cfg(feature = "dynamo")]
async fn open_dynamo(a: &ServeArgs, table: String) -> anyhow::Result<Opened> {
    let sdk = qdn_relay_dynamo::config_from_env().await;
    let client = qdn_relay_dynamo::Client::new(&sdk);
    let (backend, store) = Backend::open_dynamo(client, |k| a.lookup(k))?;
    // A table that does not exist or credentials that are refused will
    // not get better: stop now. A store that is only unreachable for the
    // moment may come back; /health answers 503 until it does.
    let now = qdn_relay_core::Timestamp::from_millis(0);
    if let Err(e) = backend.store().due(now, 1).await {
        if matches!(
            e,
            qdn_relay_core::StoreError::Backend {
                retryable: true,
                ..
            }
        ) {
            tracing::warn!(error = %e, table = %table, "the DynamoDB table is unreachable for now; /health answers 503 until it is");
        } else {
            bail!(
                "RELAY_DYNAMO_TABLE: cannot use table {table}: {e} (create it with \
                 `qdn-relay dynamo create-table`; region and credentials come from the AWS \
                 environment, an emulator's address from AWS_ENDPOINT_URL_DYNAMODB)"
            );
        }
    }
    let http = Arc::new(
        qdn_relay_transport::ReqwestTransport::new(Duration::from_millis(3100))
            .context("cannot build the HTTP client of the change feed")?,
    );
    let follow: Option<Follow> = match store.change_feed(&sdk, http, |k| a.lookup(k)).await {
        Ok(feed) => {
            tracing::info!(stream = %feed.stream_arn(), "live events follow the table's stream (every server's work)");
            Some(Box::new(move |sink: Arc<dyn EventSink>| {
                tokio::spawn(feed.run(sink, std::future::pending()));
            }))
        }
        Err(e) => {
            tracing::warn!(error = %e, "live events (SSE, maintenance.json) show this server's work only");
            None
        }
    };
    Ok(Opened {
        backend,
        name: format!("dynamodb {table}"),
        follow,
    })
}

#[cfg(not(feature = "dynamo"))]
async fn open_dynamo(_: &ServeArgs, _: String) -> anyhow::Result<Opened> {
    bail!(
        "RELAY_DYNAMO_TABLE is set, but this qdn-relay was built without the `dynamo` \
         feature: build it with `cargo build --release -p qdn-relay-cli --features dynamo`, \
         or unset RELAY_DYNAMO_TABLE to keep the state in the SQLite file (RELAY_DB)"
    )
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
    for warning in settings.check_server()? {
        tracing::warn!("{warning}");
    }
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
    let metrics = Arc::new(Metrics::new());
    let Opened {
        backend,
        name: store_name,
        follow,
    } = open_backend(&a).await?;
    let metered = {
        let m = Arc::clone(&metrics);
        backend
            .clone()
            .map_store(move |s| Arc::new(MeteredStore::new(s, m)) as Arc<dyn Store>)
    };
    let hub = EventHub::default();
    let mut live: Vec<Box<dyn EventSink>> = vec![Box::new(hub.clone())];
    if let Some(path) = &a.maintenance_json {
        let m = MaintenanceSink::new(path.clone())
            .mode(a.maintenance_mode)
            .full_numbers(a.maintenance_numbers == "full");
        let open = backend.store().list(ListFilter::Open, 10_000).await?;
        m.seed(&open)
            .await
            .with_context(|| format!("RELAY_MAINTENANCE_JSON: cannot write {}", path.display()))?;
        live.push(Box::new(m));
    }
    let live = FanoutSink(live);
    // The metrics count this server's own work: fed by its relay, never by
    // the change feed (which carries every server's events).
    let carrier = provider.name().to_owned();
    let mut wiring = Wiring::new(&settings, metered, provider)
        .sink(MetricsSink::new(Arc::clone(&metrics), carrier));
    match follow {
        Some(follow) => follow(Arc::new(live)),
        None => wiring = wiring.sink(live),
    }
    let relay = wiring.build();
    let dashboard_token = http.dashboard_token.as_ref().map(|t| t.expose().to_owned());
    // A text's webhook is answered once its dispatch and the texts it must
    // send are durable; the sends follow the answer (the outbox covers a
    // crash in between).
    let mut state = AppState::new(relay.clone(), validator, hub, http)?
        .with_metrics(Arc::clone(&metrics))
        .answer_before_sends();
    // AWS SMS's two-way texts and delivery events, from its SNS topics.
    if let Some(aws) = settings.aws_sms_over_sns() {
        let https = qdn_relay_twilio::ReqwestTransport::new(aws.config.connect_timeout)
            .map_err(|e| anyhow::anyhow!("AWS SMS: {}", e.message))?;
        state = state.with_sns(qdn_relay_axum::SnsIntake::over(
            aws.sns_topics.clone(),
            std::sync::Arc::new(https),
        ));
    }
    if let Some(addr) = &a.metrics_listen {
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| anyhow!("RELAY_METRICS_LISTEN: {addr:?} is not host:port: {e}"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("RELAY_METRICS_LISTEN: cannot listen on {addr}"))?;
        tracing::info!("metrics (no authentication) on http://{addr}/metrics");
        let app = metrics_router(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        });
    }

    let listener = tokio::net::TcpListener::bind(l.listen)
        .await
        .with_context(|| format!("RELAY_LISTEN: cannot listen on {}", l.listen))?;
    let bound = listener.local_addr()?;
    let url = format!("http://{bound}");

    // Tell the user what is running.
    let chain: Vec<String> = settings.chain.iter().map(ToString::to_string).collect();
    tracing::info!(
        line = %settings.line, chain = %chain.join(" → "), ack_timeout = %a.ack_timeout, store = %store_name,
        "qdn-relay listening on {url}"
    );
    #[cfg(feature = "console")]
    if dashboard_token.is_some() {
        tracing::info!("operator console: {url}/console (sign in with the dashboard token)");
    }
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
    let options = ServeOptions::new(l.sweep_every)
        .metrics(metrics)
        .background(state.background());
    qdn_relay_axum::serve_with(listener, router(state), relay, options, shutdown_signal())
        .await
        .context("server failed")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["qdn-relay", "serve"];
        argv.extend_from_slice(extra);
        match crate::Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}")) {
            crate::Cli {
                command: crate::Command::Serve(a),
            } => *a,
            _ => panic!("not serve"),
        }
    }

    /// Built without the `dynamo` feature (`cargo test -p qdn-relay-cli`),
    /// a table is refused with what to do, and nothing is opened.
    #[cfg(not(feature = "dynamo"))]
    #[tokio::test]
    async fn a_dynamo_table_without_the_feature_is_refused_naming_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("never.db");
        let a = args(&[
            "--dynamo-table",
            "qdn-relay",
            "--db",
            db.to_str().expect("utf-8 path"),
        ]);
        let err = open_backend(&a).await.err().expect("refused").to_string();
        assert!(
            err.contains("RELAY_DYNAMO_TABLE") && err.contains("`dynamo` feature"),
            "{err}"
        );
        assert!(!db.exists(), "no SQLite file opened instead");
    }

    #[test]
    fn the_table_comes_from_the_flag_or_the_variable() {
        let a = args(&["--dynamo-table", "t1"]);
        assert_eq!(a.lookup("RELAY_DYNAMO_TABLE").as_deref(), Some("t1"));
        assert_eq!(args(&[]).dynamo_table, None);
    }
}
