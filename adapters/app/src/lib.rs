//! # qdn-relay-app
//!
//! The one place that wires the relay: every way of running it (the
//! `qdn-relay` server, the Lambda functions, a host application) reads the
//! same settings and builds the relay the same way, here:
//!
//! 1. [`RelaySettings`] from the environment (or any lookup): the
//!    business line, the policy (`RELAY_CHAIN` or a `RELAY_POLICY` file),
//!    the HTTP surface's settings ([`HttpConfig`]), Twilio's, AWS SMS's
//!    ([`AwsSmsSettings`]). Every error names its variable
//!    ([`SettingsError`]).
//! 2. The SMS provider the settings choose ([`provider`]): the Twilio REST
//!    client over reqwest or the caller's HTTP stack ([`TwilioHttp`]), or
//!    without a Twilio account the [`DryRunProvider`]; with AWS SMS
//!    configured, a [`qdn_relay_core::Failover`] over both carriers (the
//!    carrier layer).
//! 3. The store and the ports it also serves ([`Backend`]): in memory,
//!    SQLite (feature `sqlite`) or DynamoDB (feature `dynamo`, its layout
//!    from [`dynamo_config`]).
//! 4. The relay ([`Wiring`]): line and policy from the settings, the
//!    backend, the provider, events to the log and to the caller's sinks,
//!    optionally the host's job system; a [`DynRelay`].
//!
//! ```ignore
//! let settings = RelaySettings::from_env()?;
//! let provider = qdn_relay_app::provider(&settings, TwilioHttp::Reqwest, Some("http://127.0.0.1:8080"))?;
//! let relay = Wiring::new(&settings, Backend::open_sqlite("relay.db").await?, provider)
//!     .sink(hub.clone())
//!     .build();
//! ```
//!
//! What runs the relay stays with its adapter: the HTTP router
//! (`qdn-relay-axum`, which takes [`HttpConfig`] and serves a
//! [`DynRelay`]), the Lambda handlers and their secret references
//! (`qdn-relay-lambda`), the command line (`qdn-relay-cli`). A new store or
//! carrier is a [`Backend`] constructor or a branch of [`provider`] here,
//! behind a feature, and every binary gets it.
//!
//! Features: `twilio-client` (the REST client over reqwest,
//! [`TwilioHttp::Reqwest`]), `sqlite`, `dynamo`; none by default (the
//! REST client over the caller's HTTP stack is always there).

use qdn_relay_core::{Clock, Relay, SmsProvider, Store};

mod aws;
mod dry_run;
mod http;
mod retry;
mod settings;
mod wiring;

pub use aws::take_sms_notification;
pub use dry_run::DryRunProvider;
pub use http::{CheckedHttp, DEFAULT_BODY_LIMIT, HttpConfig, HttpConfigError};
pub use retry::retry_busy;
#[cfg(feature = "dynamo")]
pub use settings::dynamo_config;
pub use settings::{AWS_SMS, AwsSmsSettings, RelaySettings, SettingsError, TWILIO, sweep_interval};
pub use wiring::{Backend, TwilioHttp, Wiring, WiringError, provider};

/// The relay with every port as a trait object: what the wiring builds and
/// the router serves.
pub type DynRelay = Relay<dyn Store, dyn SmsProvider, dyn Clock>;
