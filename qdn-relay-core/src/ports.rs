//! Ports: the traits the driver talks to. Adapters implement them.
//!
//! Each trait states its contract; the in-memory adapters
//! ([`crate::MemoryStore`], [`crate::MemoryOptOuts`],
//! [`crate::MemoryRateLimiter`]) are the reference implementations, and the
//! contract suite (`testing::contract`, feature `testing`) checks any
//! [`Store`] against it.

use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::carrier::{CarrierSkip, Via};
use crate::dispatch::{Dispatch, HistoryPage};
use crate::event::{OutboundMessage, RelayEvent};
use crate::input::SendError;
use crate::types::{DispatchId, JobId, PhoneNumber, ProviderMessageId, Tag, Timestamp};

// ---------------------------------------------------------------------------
// SmsProvider

/// What a provider answers when it accepted a text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReceipt {
    /// The provider's id for the message; status callbacks carry it.
    pub sid: ProviderMessageId,
    /// The carrier and number it went through (filled by
    /// [`crate::Failover`]; a single provider may leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    /// The carriers passed over before it was accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<CarrierSkip>,
}

impl From<ProviderMessageId> for SendReceipt {
    fn from(sid: ProviderMessageId) -> Self {
        Self::new(sid)
    }
}

impl SendReceipt {
    /// A receipt with the provider's id only.
    pub fn new(sid: ProviderMessageId) -> Self {
        Self {
            sid,
            via: None,
            skipped: Vec::new(),
        }
    }
}

/// Sends one text.
///
/// # Contract
///
/// - `send` either returns the provider's id for an accepted message, or a
///   [`SendError`] whose kind tells the relay what to do:
///   `Retryable` only when the provider guarantees nothing was sent;
///   `MaybeSent` when the request may have gone out (a timeout or 5xx after
///   sending), which the relay never re-sends by itself.
/// - Delivery is reported later by status callbacks, never by `send`.
/// - `send` must finish (or time out) well within
///   [`crate::OUTBOX_GRACE`], after which a sweep assumes the sender crashed.
/// - Implementations never log credentials.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait SmsProvider: Send + Sync {
    /// Sends `msg`.
    async fn send(&self, msg: &OutboundMessage) -> Result<SendReceipt, SendError>;

    /// A short name for logs and events (`twilio`, `dry-run`).
    fn name(&self) -> &str;
}

#[async_trait]
impl<T: SmsProvider + ?Sized> SmsProvider for std::sync::Arc<T> {
    async fn send(&self, msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
        (**self).send(msg).await
    }
    fn name(&self) -> &str {
        (**self).name()
    }
}

#[async_trait]
impl<T: SmsProvider + ?Sized> SmsProvider for Box<T> {
    async fn send(&self, msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
        (**self).send(msg).await
    }
    fn name(&self) -> &str {
        (**self).name()
    }
}

// ---------------------------------------------------------------------------
// Store

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The stored version is not the expected one, or a uniqueness rule
    /// (one open dispatch per customer and line, one open dispatch per tag,
    /// one dispatch per inbound message id) would break. Reload and retry.
    #[error("conflict saving dispatch {id}: {reason}")]
    Conflict {
        /// The dispatch being saved.
        id: DispatchId,
        /// What conflicted.
        reason: ConflictReason,
    },
    /// The dispatch passed to `save` is not valid for the call (its version
    /// is not `expected + 1`). A bug in the caller.
    #[error("invalid save of dispatch {id}: {message}")]
    Invalid {
        /// The dispatch.
        id: DispatchId,
        /// What is wrong.
        message: String,
    },
    /// The backend failed; `retryable` says whether trying again may help
    /// (throttling, a busy database, a dropped connection).
    #[error("store backend error (retryable: {retryable}): {source}")]
    Backend {
        /// Whether a retry may help.
        retryable: bool,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored record could not be read back.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether this is a [`StoreError::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }

    /// A backend error.
    pub fn backend(
        retryable: bool,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Backend {
            retryable,
            source: source.into(),
        }
    }
}

/// What a [`StoreError::Conflict`] was about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConflictReason {
    /// The stored version differs from the expected one (`None`: absent).
    Version {
        /// What the caller expected.
        expected: u64,
        /// What is stored.
        found: Option<u64>,
    },
    /// The customer already has another open dispatch on the line.
    OpenCustomer,
    /// Another open dispatch holds the tag.
    Tag(Tag),
    /// Another dispatch already holds this inbound message id.
    InboundSid(ProviderMessageId),
}

impl std::fmt::Display for ConflictReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConflictReason::Version { expected, found } => match found {
                Some(v) => write!(f, "expected version {expected}, found {v}"),
                None => write!(f, "expected version {expected}, found none"),
            },
            ConflictReason::OpenCustomer => {
                f.write_str("the customer already has an open dispatch on this line")
            }
            ConflictReason::Tag(t) => write!(f, "tag {t} is held by another open dispatch"),
            ConflictReason::InboundSid(s) => write!(f, "message {s} belongs to another dispatch"),
        }
    }
}

/// Which dispatches [`Store::list`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ListFilter {
    /// Open or acked dispatches.
    #[default]
    Open,
    /// Every dispatch.
    All,
}

/// One entry of the due query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Due {
    /// When it became due.
    pub deadline: Timestamp,
    /// The dispatch.
    pub id: DispatchId,
}

/// What [`Store::inbound_lookup`] found for an inbound text: the three
/// lookups that route it, answered together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundLookup {
    /// Whether the sender was texted about an open dispatch, on any line
    /// (`open_for_dispatcher(from, 1)` is not empty).
    pub notified: bool,
    /// The dispatch already holding the text's message id (a repeated
    /// webhook), as `by_inbound_sid` finds it.
    pub repeated: Option<Dispatch>,
    /// The sender's open dispatch on the line as a customer, as
    /// `open_for_customer` finds it.
    pub open: Option<Dispatch>,
}

/// Keeps dispatches.
///
/// # Contract
///
/// - `save(d, expected)`: `d.version()` MUST be `expected + 1` (else
///   [`StoreError::Invalid`]). `expected == 0` creates: MUST return
///   `Conflict` if the id exists. Otherwise the stored version MUST equal
///   `expected`, else `Conflict` (with [`ConflictReason::Version`]). The
///   write is atomic with every index below.
/// - Uniqueness, checked atomically with the write (MUST return `Conflict`):
///   at most one *open* dispatch per (line, customer); at most one *open*
///   dispatch per tag; each inbound message id in at most one dispatch.
///   "Open" is [`crate::State::is_open`].
/// - Every lookup returns the latest saved version, is answered from an
///   index (never a scan of all dispatches), and returns `Ok(None)` (or an
///   empty list) when nothing matches.
/// - `due(now, limit)` returns at most `limit` dispatches whose
///   [`Dispatch::next_deadline`] is `<= now`, earliest first (ties by id),
///   without scanning dispatches that are not due.
/// - `first_free_tag(candidates)` returns the first candidate, in the
///   order given, that no open dispatch holds (`None` if all are held),
///   as `open_by_tag` would find it.
/// - `inbound_lookup(line, from, sid)` answers what
///   `open_for_dispatcher(from, 1)` (is it empty?), `by_inbound_sid(sid)`
///   and `open_for_customer(line, from)` would.
/// - `open_for_dispatcher(n)` returns the open dispatches whose
///   [`Dispatch::notified`] contains `n`, most recently notified first.
/// - `list(filter, limit)` returns dispatches newest first (by id).
/// - `by_job(job, limit)` returns the dispatches whose
///   [`Dispatch::job_id`] is `job`, open or not, newest first (by id); a
///   dispatch's job id may first appear (or change) on any save.
/// - History: `save` writes [`Dispatch::unsaved_pages`] in the same
///   atomic write as the record (a page written again is the same page);
///   `history(id)` returns every page written, by `seq`. The message ids
///   of moved entries ([`HistoryPage::inbound_sids`],
///   [`HistoryPage::leg_sids`]) stay in the lookups: `by_inbound_sid` and
///   `by_leg_sid` still find their dispatch, and the uniqueness of inbound
///   ids still holds for them.
/// - Errors: a transient backend failure is `Backend { retryable: true }`.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Store: Send + Sync {
    /// Loads a dispatch by id.
    async fn get(&self, id: DispatchId) -> Result<Option<Dispatch>, StoreError>;

    /// Saves a dispatch whose stored version is `expected` (0: new).
    async fn save(&self, dispatch: &Dispatch, expected: u64) -> Result<(), StoreError>;

    /// The dispatch holding an inbound message id.
    async fn by_inbound_sid(&self, sid: &ProviderMessageId)
    -> Result<Option<Dispatch>, StoreError>;

    /// The dispatch that sent an outbound message.
    async fn by_leg_sid(&self, sid: &ProviderMessageId) -> Result<Option<Dispatch>, StoreError>;

    /// The customer's open dispatch on a line.
    async fn open_for_customer(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
    ) -> Result<Option<Dispatch>, StoreError>;

    /// The open dispatch holding a tag.
    async fn open_by_tag(&self, tag: Tag) -> Result<Option<Dispatch>, StoreError>;

    /// The first of `candidates` that no open dispatch holds, or `None`
    /// when every one is taken (or there are none).
    ///
    /// The default asks [`Store::open_by_tag`] for one candidate after
    /// another and stops at the first free one; a store that can answer
    /// for all of them in one round trip, from its tag index alone, should
    /// override it (a new dispatch draws up to 32 candidates). The answer
    /// is a hint: the uniqueness rule is still checked by `save`.
    async fn first_free_tag(&self, candidates: &[Tag]) -> Result<Option<Tag>, StoreError> {
        for &tag in candidates {
            if self.open_by_tag(tag).await?.is_none() {
                return Ok(Some(tag));
            }
        }
        Ok(None)
    }

    /// The lookups that route an inbound text from `from` to `line` with
    /// message id `sid`, in one call: is `from` a dispatcher of an open
    /// dispatch, is the text a repeat, and `from`'s open dispatch as a
    /// customer.
    ///
    /// The default makes the three calls; a store that can answer them in
    /// one round trip should override it (every inbound text asks).
    async fn inbound_lookup(
        &self,
        line: PhoneNumber,
        from: PhoneNumber,
        sid: &ProviderMessageId,
    ) -> Result<InboundLookup, StoreError> {
        Ok(InboundLookup {
            notified: !self.open_for_dispatcher(from, 1).await?.is_empty(),
            repeated: self.by_inbound_sid(sid).await?,
            open: self.open_for_customer(line, from).await?,
        })
    }

    /// Open dispatches a dispatcher was texted about, most recently
    /// notified first, at most `limit`.
    async fn open_for_dispatcher(
        &self,
        dispatcher: PhoneNumber,
        limit: usize,
    ) -> Result<Vec<Dispatch>, StoreError>;

    /// Dispatches due at `now`, earliest first, at most `limit`.
    async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Due>, StoreError>;

    /// Dispatches for a dashboard, newest first, at most `limit`.
    async fn list(&self, filter: ListFilter, limit: usize) -> Result<Vec<Dispatch>, StoreError>;

    /// Dispatches of a host job, newest first, at most `limit`.
    async fn by_job(&self, job: &JobId, limit: usize) -> Result<Vec<Dispatch>, StoreError>;

    /// The pages a dispatch moved out of its record, by `seq` (empty for
    /// an unknown id).
    async fn history(&self, id: DispatchId) -> Result<Vec<HistoryPage>, StoreError>;
}

// ---------------------------------------------------------------------------
// Clock

/// Tells the time. Only the driver reads it; the state machine takes `now`
/// as an argument.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_jiff(jiff::Timestamp::now())
    }
}

/// A clock that moves only when told to: for tests and simulation.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// A clock showing `t`.
    pub fn new(t: Timestamp) -> Self {
        Self(AtomicI64::new(t.as_millis()))
    }
    /// Sets the time (it may go backwards; the relay copes).
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.as_millis(), Ordering::SeqCst);
    }
    /// Moves the time forward by `d`.
    pub fn advance(&self, d: std::time::Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

impl<T: Clock + ?Sized> Clock for std::sync::Arc<T> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

// ---------------------------------------------------------------------------
// EventSink

/// Why an event sink could not take an event.
#[derive(Debug, thiserror::Error)]
#[error("event sink error: {0}")]
pub struct SinkError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Where relay events go: a dashboard snapshot, a live stream, logs.
///
/// # Contract
///
/// - `publish` is called after the transition that produced the event was
///   saved, in the order the events were produced for one dispatch.
/// - A sink's failure never undoes or blocks a transition: the driver logs
///   it and goes on. The event stays in the dispatch's own history.
/// - It should return quickly; slow work belongs on the sink's own task.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Takes one event.
    async fn publish(&self, event: &RelayEvent) -> Result<(), SinkError>;
}

/// A sink that drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

#[async_trait]
impl EventSink for NullSink {
    async fn publish(&self, _event: &RelayEvent) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A sink that writes each event to `tracing` at INFO.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingSink;

#[async_trait]
impl EventSink for TracingSink {
    async fn publish(&self, e: &RelayEvent) -> Result<(), SinkError> {
        tracing::info!(
            dispatch = %e.dispatch,
            tag = %e.tag,
            event = e.kind.name(),
            detail = %serde_json::to_string(&e.kind).unwrap_or_default(),
            "relay event"
        );
        Ok(())
    }
}

#[async_trait]
impl<T: EventSink + ?Sized> EventSink for std::sync::Arc<T> {
    async fn publish(&self, event: &RelayEvent) -> Result<(), SinkError> {
        (**self).publish(event).await
    }
}

/// Sends every event to each sink in turn; a failing sink does not stop the
/// others (the first error is returned).
#[derive(Default)]
pub struct FanoutSink(pub Vec<Box<dyn EventSink>>);

#[async_trait]
impl EventSink for FanoutSink {
    async fn publish(&self, event: &RelayEvent) -> Result<(), SinkError> {
        let mut first = None;
        for s in &self.0 {
            if let Err(e) = s.publish(event).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}
