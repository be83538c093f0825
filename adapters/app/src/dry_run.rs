//! A provider that sends nothing: for running the relay without a Twilio
//! account (the server's dry-run mode, a Lambda without credentials).

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use qdn_relay_core::{
    OutboundMessage, ProviderMessageId, SendError, SendErrorKind, SendReceipt, SmsProvider,
};

/// Sends nothing: logs each text and answers with a made-up sid
/// (`SMdry…`, unique per process start and send).
#[derive(Debug)]
pub struct DryRunProvider {
    counter: AtomicU64,
    epoch: u64,
}

impl DryRunProvider {
    /// A provider whose sids start from the current time.
    pub fn new() -> Self {
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            counter: AtomicU64::new(0),
            epoch,
        }
    }
}

impl Default for DryRunProvider {
    fn default() -> Self {
        Self::new()
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
        Ok(SendReceipt::new(sid))
    }

    fn name(&self) -> &str {
        "dry-run"
    }
}
