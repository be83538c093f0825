//! Shared pieces: the fixtures, and the crate's test SNS signer with a
//! certificate it makes (`qdn_relay_aws_sms::testing`).

use serde_json::Value;

pub use qdn_relay_aws_sms::testing::{FixedCerts as FakeCerts, SnsSigner as Signer};

/// A fixture file's text.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A fixture file's JSON.
pub fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}
