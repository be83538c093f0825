//! Live relay events for dashboards.

use std::sync::Arc;

use async_trait::async_trait;
use qdn_relay_core::{EventSink, RelayEvent, SinkError};
use tokio::sync::broadcast;

/// An [`EventSink`] that fans events out to live subscribers (the
/// server-sent-events route). Publishing never blocks: a subscriber that
/// falls more than the channel's capacity behind is told it lagged.
#[derive(Clone)]
pub struct EventHub {
    tx: broadcast::Sender<Arc<RelayEvent>>,
}

impl EventHub {
    /// A hub keeping up to `capacity` events per slow subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        Self { tx }
    }

    /// A new subscription, starting now.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RelayEvent>> {
        self.tx.subscribe()
    }

    /// How many subscribers are listening.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new(1024)
    }
}

#[async_trait]
impl EventSink for EventHub {
    async fn publish(&self, event: &RelayEvent) -> Result<(), SinkError> {
        // No subscriber is not an error.
        let _ = self.tx.send(Arc::new(event.clone()));
        Ok(())
    }
}
