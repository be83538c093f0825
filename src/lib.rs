//! # qdn-relay
//!
//! A cascading SMS relay with escalation. A customer texts the business
//! number; the relay forwards the text to the primary dispatcher; if nobody
//! acknowledges in time it goes to the backup, and on down the chain (or at
//! once when a delivery fails); dispatchers' replies go back to the customer
//! from the business number.
//!
//! This crate is a facade: it re-exports the relay's crates behind features.
//! Adapter crates depend on [`core`] directly.
//!
//! See `README.md` for the quickstart and `ARCHITECTURE.md` for the codemap.

pub use qdn_relay_core as core;

/// Twilio: webhook parsing, `X-Twilio-Signature` validation and (with the
/// `twilio-client` feature) the REST client.
#[cfg(feature = "twilio")]
pub use qdn_relay_twilio as twilio;

/// The embedded SQLite store.
#[cfg(feature = "sqlite")]
pub use qdn_relay_sqlite as sqlite;

/// The DynamoDB store (AWS SDK): the table design, `create_table`.
#[cfg(feature = "dynamo")]
pub use qdn_relay_dynamo as dynamo;

/// The wiring every runner shares: [`RelaySettings`](qdn_relay_app::RelaySettings)
/// from the environment, the provider and store they choose, the relay
/// built from them ([`Wiring`](qdn_relay_app::Wiring)).
#[cfg(feature = "app")]
pub use qdn_relay_app as app;

/// The HTTP router (axum): Twilio webhooks, dashboard routes, SSE events.
#[cfg(feature = "axum")]
pub use qdn_relay_axum as axum;

/// The Lambda adapter: the same router behind API Gateway, and the sweep.
#[cfg(feature = "lambda")]
pub use qdn_relay_lambda as lambda;
