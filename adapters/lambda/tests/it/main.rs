//! qdn-relay-lambda's integration tests (one binary):
//!
//! - `handlers`: the HTTP and tick handlers driven directly with real event
//!   JSON over in-memory ports;
//! - `emulator`: the built binaries against cargo-lambda's Runtime API
//!   emulator, with moto as DynamoDB, through a whole cascade.

mod emulator;
mod fixtures;
mod handlers;
