//! The REST client against a real peer: Stoplight Prism mocking Twilio's
//! official OpenAPI spec (`twilio_api_v2010.json`), which validates every
//! request against the spec (path, auth, form fields and their types) and
//! answers with random but schema-valid messages.
//!
//! `./scripts/test` installs and starts Prism and sets `QDN_TEST_PRISM_URL`.
//! Without it these tests fail: they are never skipped.

use qdn_relay_core::{ProviderMessageId, SendErrorKind, SmsProvider};

use crate::support::*;

fn prism_url() -> String {
    match std::env::var("QDN_TEST_PRISM_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "QDN_TEST_PRISM_URL is not set: run ./scripts/test, which starts Prism \
             mocking Twilio's OpenAPI spec and sets it"
        ),
    }
}

fn assert_message_sid(sid: &ProviderMessageId) {
    let s = sid.as_str();
    assert_eq!(s.len(), 34, "{s}");
    assert!(s.starts_with("SM") || s.starts_with("MM"), "{s}");
    assert!(s[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{s}");
    // It round-trips as the core's id type.
    assert_eq!(s.parse::<ProviderMessageId>().as_ref(), Ok(sid));
}

#[tokio::test]
async fn a_valid_send_comes_back_as_a_message() {
    let client = client(config(&prism_url()));
    let m = client
        .create_message(&message("[QDN #K7] +16195550100: flat tire on I-5 🚗"))
        .await
        .expect("Prism accepts a valid request");
    assert_message_sid(&m.sid);
    // The status Prism returns is random: it is not used.
    let receipt = client.send(&message("second")).await.expect("accepted");
    assert_message_sid(&receipt.sid);
}

#[tokio::test]
async fn every_optional_field_matches_the_spec() {
    // Prism checks MessagingServiceSid's pattern, StatusCallback's URI
    // format and ValidityPeriod's integer type.
    let mut c = api_key_config(&prism_url());
    c.messaging_service_sid = Some(MG.parse().expect("valid"));
    c.status_callback = Some("https://relay.example.com/sms/status".into());
    let mut msg = message(&"long body ".repeat(300));
    msg.validity_secs = Some(3600);
    let m = client(c)
        .create_message(&msg)
        .await
        .expect("Prism accepts every field the client sends");
    assert_message_sid(&m.sid);
}

#[tokio::test]
async fn a_request_without_to_is_rejected_clearly() {
    let err = client(config(&prism_url()))
        .post_message_form(&[("From", "+18583354807"), ("Body", "no recipient")])
        .await
        .expect_err("To is required by the spec");
    // Prism answers 422 where Twilio answers 400 (21604); both are a
    // rejection of this request, never retried.
    assert_eq!(err.kind, SendErrorKind::Rejected, "{err}");
    assert!(err.message.contains("HTTP 422"), "{}", err.message);
    assert!(err.message.contains("'To'"), "{}", err.message);
}

#[tokio::test]
async fn a_badly_typed_field_is_rejected_clearly() {
    let err = client(config(&prism_url()))
        .post_message_form(&[
            ("To", "+16195550100"),
            ("From", "+18583354807"),
            ("Body", "hi"),
            ("ValidityPeriod", "soon"),
        ])
        .await
        .expect_err("ValidityPeriod must be an integer");
    assert_eq!(err.kind, SendErrorKind::Rejected, "{err}");
    assert!(err.message.contains("ValidityPeriod"), "{}", err.message);
}
