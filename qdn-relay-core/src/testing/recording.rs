//! A provider that records every send and answers from a script
//! ([`RecordingProvider`]), and a sink that keeps every event
//! ([`RecordingSink`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::event::{OutboundMessage, RelayEvent};
use crate::input::{SendError, SendErrorKind};
use crate::ports::{Clock, EventSink, SendReceipt, SinkError, SmsProvider};
use crate::types::{PhoneNumber, ProviderMessageId, Timestamp};

/// A process-wide order of recorded sends and events, so a timeline can
/// interleave them exactly.
static SEQ: AtomicU64 = AtomicU64::new(0);

fn next_seq() -> u64 {
    SEQ.fetch_add(1, Ordering::SeqCst)
}

/// One text a [`RecordingProvider`] was asked to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentText {
    /// Position among every recorded send and event of this process.
    pub seq: u64,
    /// When (from the provider's clock, if it has one).
    pub at: Option<Timestamp>,
    /// What.
    pub message: OutboundMessage,
    /// What the provider answered.
    pub result: Result<ProviderMessageId, SendError>,
}

/// A provider that records every send and answers from a script: by
/// default it accepts and returns sids `SM000…1`, `SM000…2`, …; outcomes
/// queued for a number with [`RecordingProvider::script`] are answered
/// first, in order.
#[derive(Default)]
pub struct RecordingProvider {
    sent: Mutex<Vec<SentText>>,
    script: Mutex<HashMap<PhoneNumber, VecDeque<Result<(), SendError>>>>,
    always_fail: Mutex<HashMap<PhoneNumber, SendError>>,
    counter: AtomicU64,
    clock: Option<Arc<dyn Clock>>,
}

impl RecordingProvider {
    /// A provider that accepts everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// A provider that stamps each send with `clock`'s time.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock: Some(clock),
            ..Self::default()
        }
    }

    /// Queues outcomes for the next sends to `to`.
    pub fn script(
        &self,
        to: PhoneNumber,
        outcomes: impl IntoIterator<Item = Result<(), SendError>>,
    ) {
        lock(&self.script).entry(to).or_default().extend(outcomes);
    }

    /// Makes every send to `to` fail with `err` (until [`Self::heal`]).
    pub fn fail_always(&self, to: PhoneNumber, err: SendError) {
        lock(&self.always_fail).insert(to, err);
    }

    /// Undoes [`Self::fail_always`].
    pub fn heal(&self, to: PhoneNumber) {
        lock(&self.always_fail).remove(&to);
    }

    /// Everything sent so far.
    pub fn sent(&self) -> Vec<SentText> {
        lock(&self.sent).clone()
    }

    /// Accepted texts to `to`.
    pub fn accepted_to(&self, to: PhoneNumber) -> Vec<SentText> {
        lock(&self.sent)
            .iter()
            .filter(|s| s.message.to == to && s.result.is_ok())
            .cloned()
            .collect()
    }

    /// Forgets what was sent.
    pub fn clear(&self) {
        lock(&self.sent).clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl SmsProvider for RecordingProvider {
    async fn send(&self, msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
        let scripted = lock(&self.script)
            .get_mut(&msg.to)
            .and_then(VecDeque::pop_front);
        let failing = lock(&self.always_fail).get(&msg.to).cloned();
        let result = match (scripted, failing) {
            (Some(Err(e)), _) | (None, Some(e)) => Err(e),
            _ => {
                let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(format!("SM{n:032x}")
                    .parse::<ProviderMessageId>()
                    .map_err(|e| SendError::new(SendErrorKind::Rejected, e.to_string()))?)
            }
        };
        lock(&self.sent).push(SentText {
            seq: next_seq(),
            at: self.clock.as_ref().map(|c| c.now()),
            message: msg.clone(),
            result: result.clone(),
        });
        result.map(SendReceipt::new)
    }

    fn name(&self) -> &str {
        "recording"
    }
}

// ---------------------------------------------------------------------------
// RecordingSink

/// A sink that keeps every event.
#[derive(Default)]
pub struct RecordingSink(Mutex<Vec<(u64, RelayEvent)>>);

impl RecordingSink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }
    /// Every event so far.
    pub fn events(&self) -> Vec<RelayEvent> {
        lock(&self.0).iter().map(|(_, e)| e.clone()).collect()
    }
    /// Every event with its position among recorded sends and events.
    pub fn events_in_order(&self) -> Vec<(u64, RelayEvent)> {
        lock(&self.0).clone()
    }
}

#[async_trait]
impl EventSink for RecordingSink {
    async fn publish(&self, event: &RelayEvent) -> Result<(), SinkError> {
        lock(&self.0).push((next_seq(), event.clone()));
        Ok(())
    }
}
