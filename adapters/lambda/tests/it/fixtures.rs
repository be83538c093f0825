//! The event fixtures (`tests/fixtures/`) and what the tests change in them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// The Twilio Auth Token the inbound fixture is signed with.
pub const AUTH_TOKEN: &str = "fixture-twilio-auth-token";
/// The dashboard token of the status fixture.
pub const DASH: &str = "fixture-dashboard-token-0123456789";
/// The API's `execute-api` domain in the fixtures.
pub const DOMAIN: &str = "abc123defg.execute-api.us-east-1.amazonaws.com";
/// The inbound fixture's `MessageSid`.
pub const MESSAGE_SID: &str = "SM0f1e2d3c4b5a69788796a5b4c3d2e1f0";
pub const LINE: &str = "+16195550000";
pub const CUSTOMER: &str = "+16195550100";
pub const PRIMARY: &str = "+16195550101";
pub const BACKUP: &str = "+18583354807";

/// A fixture's JSON.
pub fn load(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The form parameters of an event's (base64) body, in order.
pub fn form_params(event: &Value) -> Vec<(String, String)> {
    let raw = event["body"].as_str().expect("a body");
    let bytes = if event["isBase64Encoded"].as_bool().unwrap_or(false) {
        STANDARD.decode(raw).expect("base64 body")
    } else {
        raw.as_bytes().to_vec()
    };
    form_urlencoded::parse(&bytes).into_owned().collect()
}

/// `event` with `params` as its body (base64, as API Gateway sends forms).
pub fn with_form(event: &Value, params: &[(String, String)]) -> Value {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let mut e = event.clone();
    e["headers"]["content-length"] = body.len().to_string().into();
    e["body"] = STANDARD.encode(body).into();
    e["isBase64Encoded"] = true.into();
    e
}

/// `event` with another `X-Twilio-Signature`.
pub fn with_signature(event: &Value, signature: &str) -> Value {
    let mut e = event.clone();
    e["headers"]["x-twilio-signature"] = signature.into();
    e
}
