//! The integration tests of qdn-relay-sqlite (one binary).

mod common;
mod concurrency;
mod contract;
mod durability;
mod errors;
mod mirror;
