//! Serving the router with its sweeper until the process is told to stop.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::timeout::TimeoutLayer;

use crate::DynRelay;
use qdn_relay_metrics::Metrics;

/// How long a client may take to send a request's headers before its
/// connection is closed (a slowloris connection must not hold a worker).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a whole request may take, its body read and the relay's work
/// included (Twilio itself gives up after 15 s); past it the answer is 408.
/// A response that streams (the event stream) is not cut once it started.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stop waits for connections still open (an event stream
/// never ends by itself) before it returns anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the sweeper waits before trying again when due work is left
/// after a sweep (a failing store or dispatch), so it never spins.
pub const RETRY_DUE: Duration = Duration::from_secs(1);

/// How [`serve_with`] serves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The longest the sweeper sleeps (a safety net): it sleeps until the
    /// earliest deadline in the store and is woken when a save sets an
    /// earlier one, so this only bounds how long a deadline written by
    /// another process (a second server, a crashed one) can wait.
    pub sweep_every: Duration,
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// See [`DRAIN_TIMEOUT`].
    pub drain_timeout: Duration,
    /// Where the sweeper records how late each deadline fired (the
    /// escalation lateness histogram), if anywhere.
    pub metrics: Option<Arc<Metrics>>,
    /// The sends webhooks left to finish after their answers
    /// ([`crate::AppState::background`]): waited for when stopping, after
    /// the connections (at most [`ServeOptions::drain_timeout`] more).
    pub background: Option<tokio_util::task::TaskTracker>,
}

impl ServeOptions {
    /// The defaults, sweeping at least every `sweep_every`.
    pub fn new(sweep_every: Duration) -> Self {
        Self {
            sweep_every,
            header_read_timeout: HEADER_READ_TIMEOUT,
            request_timeout: REQUEST_TIMEOUT,
            drain_timeout: DRAIN_TIMEOUT,
            metrics: None,
            background: None,
        }
    }

    /// Waiting for `background` (the sends left after answers) when
    /// stopping.
    pub fn background(mut self, background: Option<tokio_util::task::TaskTracker>) -> Self {
        self.background = background;
        self
    }

    /// With the sweep's lateness recorded into `metrics`.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// With another header-read timeout.
    pub fn header_read_timeout(mut self, d: Duration) -> Self {
        self.header_read_timeout = d;
        self
    }

    /// With another whole-request timeout.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }
}

/// Serves `app` on `listener` and sweeps `relay` whenever its earliest
/// deadline comes, and at least every `sweep_every` (due timeouts, sends
/// left in the outbox, job-system retries), until Ctrl-C
/// or SIGTERM: then the listener stops taking connections, requests in
/// flight finish, the sweeper stops after its current sweep, and this
/// returns.
///
/// For a host that merges the relay's router into its own: pass the merged
/// router. The sweep is what makes escalations happen on time, so a server
/// that does not use this must sweep by itself.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    relay: Arc<DynRelay>,
    sweep_every: Duration,
) -> std::io::Result<()> {
    serve_until(listener, app, relay, sweep_every, shutdown_signal()).await
}

/// Like [`serve`], stopping when `stop` completes instead of on a signal.
pub async fn serve_until(
    listener: TcpListener,
    app: Router,
    relay: Arc<DynRelay>,
    sweep_every: Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, relay, ServeOptions::new(sweep_every), stop).await
}

/// Like [`serve_until`], with every limit given.
///
/// Each connection is HTTP/1.1 with a header-read timeout; each request
/// has a whole-request timeout (408). On `stop` the listener closes,
/// connections finish the request in flight and close (at most
/// [`ServeOptions::drain_timeout`]), the sweeper stops after its current
/// sweep, and this returns.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    relay: Arc<DynRelay>,
    options: ServeOptions,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let sweeper = tokio::spawn(sweeper(
        relay,
        options.sweep_every.max(Duration::from_millis(10)),
        options.metrics.clone(),
        stop_rx.clone(),
    ));
    tokio::spawn(async move {
        stop.await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = stop_tx.send(true);
    });
    let app = app.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        options.request_timeout,
    ));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut stopping = stop_rx;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopping.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off a little
                // instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after the drain timeout (event streams); stopping anyway"
        );
    }
    if let Some(background) = options.background {
        background.close();
        if tokio::time::timeout(options.drain_timeout, background.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = background.len(),
                "sends still under way after the drain timeout; the outbox sends them after a restart"
            );
        }
    }
    let _ = sweeper.await;
    tracing::info!("stopped");
    Ok(())
}

/// Sweeps, then sleeps until the earliest deadline in the store (at most
/// `safety`), woken early when a save sets an earlier one (see
/// [`qdn_relay_core::DeadlineWatch`] for the order of the calls).
async fn sweeper(
    relay: Arc<DynRelay>,
    safety: Duration,
    metrics: Option<Arc<Metrics>>,
    mut stop: watch::Receiver<bool>,
) {
    let deadlines = Arc::clone(relay.deadline_watch());
    loop {
        let at = relay.clock().now();
        let r = relay.sweep_at(at).await;
        if let Some(e) = &r.query_error {
            tracing::warn!(error = %e, "sweep: the due query failed");
        } else if r.fired > 0 || !r.errors.is_empty() {
            tracing::debug!(fired = r.fired, errors = r.errors.len(), "sweep");
        }
        for late in &r.lateness {
            tracing::debug!(lateness_ms = late.as_millis() as u64, "deadline fired");
        }
        if let Some(m) = &metrics {
            m.record_all(&qdn_relay_metrics::sweep_observations(&r));
        }
        deadlines.arm();
        let next = match relay.next_deadline().await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "sweeper: the next-deadline query failed");
                Some(at)
            }
        };
        let now = relay.clock().now();
        let wait = match next {
            None => safety,
            // Still due after a sweep that handled it: failing; no spin.
            Some(t) if t <= at => RETRY_DUE.min(safety),
            Some(t) => t.since(now).min(safety),
        };
        deadlines.sleep_until(now.plus(wait));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = deadlines.woken() => {}
            _ = stop.changed() => break,
        }
    }
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
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
