//! # qdn-relay-lambda
//!
//! qdn-relay on AWS Lambda, two functions over one DynamoDB table:
//!
//! - **HTTP** (`qdn-relay-http`): the same axum router as the server
//!   (`qdn_relay_axum::router`) behind an API Gateway HTTP API, through
//!   `lambda_http`. Twilio's signatures are checked against the public URL
//!   rebuilt per request from the API Gateway context ([`public_url`]):
//!   the stage prefix, the `execute-api` domain, or `RELAY_PUBLIC_URL` for
//!   custom domains (it wins).
//! - **Tick** (`qdn-relay-tick`): an EventBridge schedule (every minute)
//!   invokes it; it runs [`Relay::sweep`](qdn_relay_core::Relay::sweep)
//!   once ([`tick()`]), firing due timeouts and finishing sends a crash
//!   left pending. A failed sweep fails the invocation. The same binary
//!   takes the SQS timer queue's batches ([`timers`]) and, as the stack's
//!   SMS events function, AWS SMS's messages from its SNS topic
//!   ([`sns`]).
//!
//! Both read the same environment variables as the server
//! ([`RelaySettings`](qdn_relay_app::RelaySettings)), plus
//! `RELAY_DYNAMO_TABLE` (and, to live in an application's table,
//! `RELAY_DYNAMO_KEYS`, `RELAY_DYNAMO_KEY_PREFIX`, `RELAY_DYNAMO_DUE_INDEX`,
//! `RELAY_DYNAMO_LIST_INDEX`, `RELAY_DYNAMO_TTL_ATTRIBUTE`: see
//! `qdn_relay_app::dynamo_config`); any of them may be a secret reference
//! (`ssm:/…`, `secretsmanager:…`, see [`secrets`]) resolved at init, and
//! wire the relay as every runner does (`qdn-relay-app`). Clients (AWS
//! SDK, Twilio) are built once at init, outside the handler.
//!
//! The handlers are plain values (`HttpApp::handler`, [`tick()`]) so
//! tests drive them with real event JSON and in-memory ports; the binaries
//! only wire [`init::from_env`] to `lambda_runtime::run`.
//!
//! Features, all default: `dynamo` (the DynamoDB store and AWS
//! configuration, needed by both binaries), `secrets` (SSM / Secrets
//! Manager) and `http` (the HTTP function: the axum router and
//! `lambda_http`, needed by `qdn-relay-http` only). The tick function
//! builds without `http`, so it links no HTTP router:
//! `cargo build -p qdn-relay-lambda --no-default-features --features dynamo,secrets --bin qdn-relay-tick`.

#[cfg(feature = "http")]
pub mod http;
pub mod https;
pub mod init;
pub mod public_url;
pub mod secrets;
pub mod sns;
pub mod tick;
#[cfg(feature = "timers")]
pub mod timers;

#[cfg(feature = "http")]
pub use http::{HttpApp, restore};
pub use https::HttpsClient;
pub use init::{Env, InitError};
pub use public_url::{PublicBase, Rebuilt, RequestFacts, rebuild};
pub use sns::{SnsEvent, SnsReport, SnsSource, SnsSourceError, handle_sns, is_sns_event};
pub use tick::{TickError, TickEvent, TickReport, tick};
