//! A relay call tried again while the store is busy: the loop the HTTP
//! routes and the Lambda SNS event source share.

use std::future::Future;
use std::time::Duration;

use qdn_relay_core::RelayError;

/// Runs `call`, and again while it fails with an error a later try may not
/// meet ([`RelayError::is_retryable`]: writers collided, the store was
/// busy), with a growing, jittered pause between tries (10 ms doubling to
/// 500 ms), until `budget` is spent; `on_retry` is told of each retry.
/// Returns the last answer. The callers' calls are idempotent (message ids
/// and callbacks are deduplicated), so a try that failed changed nothing a
/// second one could repeat.
pub async fn retry_busy<T, F, Fut>(
    budget: Duration,
    mut on_retry: impl FnMut(),
    mut call: F,
) -> Result<T, RelayError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, RelayError>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        match call().await {
            Err(e) if e.is_retryable() && started.elapsed() + pause < budget => {
                tracing::debug!(error = %e, "the store is busy; trying again");
                on_retry();
                // Full jitter, so writers that collided spread out.
                tokio::time::sleep(pause.mul_f64(0.5 + fastrand::f64() / 2.0)).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}
