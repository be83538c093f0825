//! The integration tests of qdn-relay-dynamo (one binary), against a
//! DynamoDB emulator whose address `./scripts/test` exports as
//! `QDN_TEST_DYNAMO_URL`.
//!
//! Every test creates a table of its own with a unique name: nextest runs
//! the tests in parallel processes, so resetting the emulator
//! (`/moto-api/reset`) from a test would delete the tables other tests are
//! using. The script starts a fresh emulator for every run instead.

mod calls;
#[cfg(feature = "changes")]
mod changes;
mod common;
mod contract;
mod errors;
mod race;
mod safety;
mod shared;
mod store;
