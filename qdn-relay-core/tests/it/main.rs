//! The integration tests of qdn-relay-core (one binary).

mod behaviours;
mod carriers;
mod jobs;
mod memory_contract;
mod policies;
mod policy_props;
mod props;
mod records;
mod store_calls;
mod timers;
