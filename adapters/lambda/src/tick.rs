//! The tick function: one sweep per scheduled event.

use std::fmt::Write as _;

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{Diagnostic, LambdaEvent};
use qdn_relay_app::DynRelay;
use qdn_relay_core::Timestamp;
use serde::{Deserialize, Serialize};

/// What invokes the tick function: an EventBridge (CloudWatch Events)
/// scheduled event, or anything else (a manual test invoke), which sweeps
/// all the same.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TickEvent {
    /// A scheduled event (`"detail-type": "Scheduled Event"`).
    Scheduled(Box<EventBridgeEvent>),
    /// Any other payload.
    Other(serde_json::Value),
}

/// What one sweep did: the function's response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickReport {
    /// The time swept at.
    pub swept_at: Timestamp,
    /// Dispatches whose due work was handled (escalations, resends).
    pub fired: usize,
    /// Dispatches that were due but had nothing left to do.
    pub unchanged: usize,
}

/// A sweep that failed, whole or in part: the invocation fails, so Lambda
/// retries it and the function's error metric can alarm.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TickError {
    /// Dispatches handled before or besides the failures.
    pub fired: usize,
    /// What failed (dispatch ids and errors; never a secret).
    pub message: String,
}

impl From<TickError> for Diagnostic {
    fn from(e: TickError) -> Self {
        Diagnostic {
            error_type: "SweepFailed".into(),
            error_message: e.message,
        }
    }
}

/// Handles one tick: sweeps every due deadline once (see
/// [`Relay::sweep`](qdn_relay_core::Relay::sweep)) and reports it.
pub async fn tick(
    relay: &DynRelay,
    event: LambdaEvent<TickEvent>,
) -> Result<TickReport, TickError> {
    match &event.payload {
        TickEvent::Scheduled(e) => tracing::debug!(
            request_id = %event.context.request_id,
            source = %e.source,
            detail_type = %e.detail_type,
            time = ?e.time,
            rule = ?e.resources,
            "tick"
        ),
        TickEvent::Other(_) => tracing::info!(
            request_id = %event.context.request_id,
            "tick (not a scheduled event: sweeping anyway)"
        ),
    }
    let now = relay.clock().now();
    let report = relay.sweep_at(now).await;
    // How late each deadline fired, as embedded-metric-format lines.
    qdn_relay_metrics::EmfSink::stdout(relay.provider().name())
        .write(&qdn_relay_metrics::sweep_observations(&report), now);
    if report.is_ok() {
        if report.fired > 0 || report.unchanged > 0 {
            tracing::info!(fired = report.fired, unchanged = report.unchanged, "sweep");
        }
        return Ok(TickReport {
            swept_at: now,
            fired: report.fired,
            unchanged: report.unchanged,
        });
    }
    let mut message = format!(
        "sweep at {now} failed: {} dispatch(es) fired, {} failed",
        report.fired,
        report.errors.len()
    );
    if let Some(e) = &report.query_error {
        let _ = write!(message, "; the due query failed: {e}");
    }
    for (id, e) in report.errors.iter().take(10) {
        let _ = write!(message, "; {id}: {e}");
    }
    if report.errors.len() > 10 {
        let _ = write!(message, "; and {} more", report.errors.len() - 10);
    }
    tracing::error!(
        fired = report.fired,
        errors = report.errors.len(),
        "{message}"
    );
    Err(TickError {
        fired: report.fired,
        message,
    })
}
