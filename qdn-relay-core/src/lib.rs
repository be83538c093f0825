//! # qdn-relay-core
//!
//! The relay itself: a pure escalation state machine ([`Dispatch`]), the
//! ports it needs ([`SmsProvider`], [`Store`], [`Clock`], [`EventSink`],
//! and optionally [`Jobs`], the host's job system),
//! the driver that loops over them ([`Relay`]), and in-memory adapters for
//! tests and simulation.
//!
//! The state machine never does I/O and never reads a clock: time is an
//! argument, randomness a seed. The driver is the only place that loops:
//! load → [`Dispatch::handle`] → save with the expected version (on
//! conflict: reload and re-run, bounded) → carry out the effects → feed send
//! outcomes back. Sends are saved as pending legs before they go out (the
//! outbox), so a crash between save and send is finished by the next
//! [`Relay::sweep`].
//!
//! ```
//! use std::time::Duration;
//! use qdn_relay_core::{Policy, PhoneNumber};
//! let policy = Policy::simple(
//!     "+16195550101".parse().unwrap(),
//!     "+18583354807".parse().unwrap(),
//!     Duration::from_secs(15 * 60),
//! ).unwrap();
//! assert_eq!(policy.levels().len(), 2);
//! ```

#![warn(missing_docs)]

#[cfg(feature = "testing")]
pub mod contract;
pub mod dispatch;
pub mod driver;
pub mod event;
pub mod failover;
pub mod input;
pub mod jobs;
pub mod memory;
pub mod policy;
pub mod policy_file;
pub mod ports;
pub mod safety;
pub mod schedule;
pub mod sim;
pub mod status;
pub mod types;

pub use dispatch::{
    Ack, AckVia, Direction, Dispatch, InputError, JOB_SYNC_GRACE, Leg, MAX_SEND_ATTEMPTS,
    OUTBOX_GRACE, Purpose, SkipReason, State, ThreadEntry,
};
pub use driver::{
    DEFAULT_SWEEP_CONCURRENCY, JobSyncMode, MAX_CONFLICT_RETRIES, Outcome, Relay, RelayBuilder,
    RelayError, SweepReport,
};
pub use event::{Effect, EscalationReason, EventKind, OutboundMessage, RelayEvent};
pub use failover::Failover;
pub use input::{
    Actor, Command, DashboardAction, DeliveryError, DeliveryReport, DeliveryStatus, ErrorClass,
    InboundText, Input, MAX_BODY_CHARS, Media, RouteReason, SendError, SendErrorKind, body_len,
    fit_body,
};
pub use jobs::{
    JOB_RETRY_MAX, JOB_RETRY_MIN, JobItem, JobMessage, JobSync, JobWork, Jobs, JobsError,
    MemoryJob, MemoryJobs, Milestone, MilestoneKind, Origin,
};
pub use memory::{MemoryStore, RecordingProvider, RecordingSink, SentText};
pub use policy::{
    DEFAULT_ACK_TIMEOUT, DEFAULT_SUPPRESS_REPEATS, HoursZone, Level, LevelHours, OverLimit, Person,
    Policy, PolicyError, Rate, Throttle, WhenClosed, format_duration, parse_duration,
};
pub use policy_file::PolicyFileError;
pub use ports::{
    Clock, ConflictReason, Due, EventSink, FanoutSink, InboundLookup, ListFilter, ManualClock,
    NullSink, SendReceipt, SinkError, SmsProvider, Store, StoreError, SystemClock, TracingSink,
};
pub use safety::{
    Admission, Keyword, MemoryOptOuts, MemoryRateLimiter, OPT_OUT_ERROR_CODES, OptOuts, RateKey,
    RateLimiter, SafetyError,
};
pub use schedule::{LocalTime, Weekdays, Window, Zone};
pub use status::{DispatchStatus, FinalStatus, JobDispatchLink, JobSyncStatus};
pub use types::{
    DispatchId, JobId, JobIdError, PhoneNumber, PhoneNumberError, ProviderMessageId, Tag, Timestamp,
};
