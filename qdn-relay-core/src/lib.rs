//! # qdn-relay-core
//!
//! The relay itself: a pure escalation state machine ([`Dispatch`]), the
//! ports it needs ([`SmsProvider`], [`Store`], [`Clock`], [`EventSink`],
//! and optionally [`Jobs`], the host's job system),
//! the driver that loops over them ([`Relay`]), and in-memory adapters
//! ([`MemoryStore`], [`MemoryOptOuts`], [`MemoryRateLimiter`]). Test
//! doubles and the simulation harness are in `testing` (feature
//! `testing`).
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

// Every module is private: the public API is what is re-exported here, one
// path per name (see ARCHITECTURE.md for where each lives), plus the
// `testing` namespace behind its feature.
mod carrier;
mod dispatch;
mod driver;
mod event;
mod failover;
mod input;
mod jobs;
mod memory;
mod policy;
mod policy_file;
mod ports;
mod record;
mod safety;
mod schedule;
mod status;
mod types;
mod wake;

#[cfg(any(feature = "testing", feature = "mock"))]
pub mod testing;

pub use carrier::{CarrierHold, CarrierNumber, CarrierSkip, MAX_CARRIER_NAME, Via};
pub use dispatch::{
    Dispatch, HIGH_BYTES, HIGH_ENTRIES, History, HistoryPage, InputError, JOB_RETRY_MAX,
    JOB_RETRY_MIN, JOB_SYNC_GRACE, JobSync, LOW_BYTES, LOW_ENTRIES, MAX_KEPT_EVENTS,
    MAX_SEND_ATTEMPTS, OUTBOX_GRACE, Step, first_step, first_steps,
};
pub use driver::{
    DEFAULT_SWEEP_CONCURRENCY, JobSyncMode, Outcome, Relay, RelayBuilder, RelayError, SweepReport,
    Taken,
};
pub use event::{Effect, EscalationReason, EventKind, OutboundMessage, RelayEvent};
pub use failover::{DEFAULT_COOLING_OFF, Failover, THROTTLE_BOUND};
pub use input::{
    Actor, Command, DashboardAction, DeliveryError, DeliveryReport, DeliveryStatus, ErrorClass,
    InboundText, Input, MAX_BODY_CHARS, Media, RouteReason, SendError, SendErrorKind, SkipReason,
    body_len, fit_body,
};
pub use jobs::{JobMessage, Jobs, JobsError, Milestone, MilestoneKind, Origin};
pub use memory::MemoryStore;
pub use policy::{
    DEFAULT_ACK_TIMEOUT, DEFAULT_SUPPRESS_REPEATS, DurationError, HoursZone, Level, LevelHours,
    MAX_LABEL_CHARS, MAX_LEVEL_TIMEOUT, MAX_LEVELS, MAX_RATE_COUNT, MAX_RATE_PERIOD, MAX_RATES,
    MAX_REPEAT, MAX_TARGETS_PER_LEVEL, MAX_WINDOWS_PER_LEVEL, OverLimit, Person, Policy,
    PolicyError, Rate, RateError, Throttle, WhenClosed, format_duration, parse_duration,
};
pub use policy_file::PolicyFileError;
pub use ports::{
    Clock, ConflictReason, Due, EventSink, FanoutSink, InboundLookup, ListFilter, ManualClock,
    NullSink, SendReceipt, SinkError, SmsProvider, Store, StoreError, SystemClock, TracingSink,
};
pub use record::{Ack, AckVia, Direction, Leg, Purpose, State, ThreadEntry};
pub use safety::{
    Admission, Keyword, MemoryOptOuts, MemoryRateLimiter, OptOuts, RateKey, RateLimiter,
    SafetyError, earliest_admission,
};
pub use schedule::{
    LocalTime, LocalTimeError, Weekdays, WeekdaysError, Window, WindowError, Zone, ZoneError,
};
pub use status::{DispatchStatus, FinalStatus, JobDispatchLink, JobSyncStatus};
pub use types::{
    DispatchId, DispatchIdError, JobId, JobIdError, PhoneNumber, PhoneNumberError,
    ProviderMessageId, ProviderMessageIdError, Tag, TagError, Timestamp, TimestampError,
};
pub use wake::{DeadlineWatch, TimerError, Timers, Woken};
