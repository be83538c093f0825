//! Serving the router with its sweeper until the process is told to stop.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::DynRelay;

/// Serves `app` on `listener` and sweeps `relay` every `sweep_every` (due
/// timeouts, sends left in the outbox, job-system retries), until Ctrl-C
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let sweeper = tokio::spawn(sweeper(
        relay,
        sweep_every.max(Duration::from_millis(10)),
        stop_rx.clone(),
    ));
    let mut server_stop = stop_rx;
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = server_stop.changed().await;
    });
    let signals = async move {
        stop.await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = stop_tx.send(true);
    };
    let served = tokio::select! {
        r = server => r,
        () = async { signals.await; std::future::pending::<()>().await } => Ok(()),
    };
    let _ = sweeper.await;
    tracing::info!("stopped");
    served
}

async fn sweeper(relay: Arc<DynRelay>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let r = relay.sweep().await;
                if let Some(e) = &r.query_error {
                    tracing::warn!(error = %e, "sweep: the due query failed");
                } else if r.fired > 0 || !r.errors.is_empty() {
                    tracing::debug!(fired = r.fired, errors = r.errors.len(), "sweep");
                }
            }
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
