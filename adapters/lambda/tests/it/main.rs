//! qdn-relay-lambda's integration tests (one binary):
//!
//! - `handlers`: the HTTP and tick handlers driven directly with real event
//!   JSON over in-memory ports;
//! - `emulator`: the built binaries against cargo-lambda's Runtime API
//!   emulator, with moto as DynamoDB, through a whole cascade;
//! - `secrets`: secret references read from moto's SSM and Secrets
//!   Manager (and wiremock) over the functions' HTTP client;
//! - `transport_conformance`: the transport conformance suite (the Twilio
//!   REST client's scenarios) over that HTTP client;
//! - `sdk_http`: the AWS SDK (DynamoDB) over that HTTP client;
//! - `sns`: AWS SMS's texts and delivery events with SNS as the event
//!   source (Lambda's SNS event JSON, signed with a test certificate);
//! - `timers`: SQS timers on moto's SQS, and the tick function's handling
//!   of duplicated, re-ordered, stale and early timer messages.

mod emulator;
mod fixtures;
mod handlers;
mod sdk_http;
mod secrets;
mod sns;
mod timers;
mod transport_conformance;
