//! Test doubles and harnesses (feature `testing`; the mocks alone with
//! feature `mock`): what a host's or an adapter's tests use, not the relay.
//!
//! - [`Simulation`]: the real driver over in-memory adapters on a virtual
//!   clock, jumping from deadline to deadline.
//! - [`RecordingProvider`] and [`RecordingSink`]: record every send and
//!   event; the provider answers from a script.
//! - [`MemoryJobs`]: the reference job system.
//! - [`CountingStore`]: any store with its calls counted by method.
//! - [`contract`]: the [`Store`](crate::Store) contract suite every store
//!   runs against itself ([`store_contract_tests!`](crate::store_contract_tests)).
//! - With `mock`: `mockall` mocks of the ports (`MockStore`,
//!   `MockSmsProvider`, `MockEventSink`, `MockJobs`, `MockOptOuts`,
//!   `MockRateLimiter`).

#[cfg(feature = "testing")]
pub mod contract;
#[cfg(feature = "testing")]
mod counting;
#[cfg(feature = "testing")]
mod jobs;
#[cfg(feature = "testing")]
mod recording;
#[cfg(feature = "testing")]
mod sim;

#[cfg(feature = "testing")]
pub use counting::{CallStats, CountingStore};
#[cfg(feature = "testing")]
pub use jobs::{MemoryJob, MemoryJobs};
#[cfg(feature = "testing")]
pub use recording::{RecordingProvider, RecordingSink, SentText};
#[cfg(feature = "testing")]
pub use sim::{SIM_START, SimError, SimRelay, Simulation};

#[cfg(feature = "mock")]
pub use crate::jobs::MockJobs;
#[cfg(feature = "mock")]
pub use crate::ports::{MockEventSink, MockSmsProvider, MockStore};
#[cfg(feature = "mock")]
pub use crate::safety::{MockOptOuts, MockRateLimiter};
