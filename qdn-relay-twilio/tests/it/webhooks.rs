//! Signed webhook bodies, checked and read as an HTTP layer does: validate
//! the signature over the decoded form, then parse the same form.

use qdn_relay_core::{DeliveryStatus, ErrorClass};
use qdn_relay_twilio::{
    Form, InboundWebhook, Secret, SignatureValidator, StatusCallback, WebhookError, twiml_empty,
    twiml_message,
};
use serde_json::Value;

fn vector(name: &str) -> (String, String, String, String) {
    let file: Value =
        serde_json::from_str(include_str!("../vectors/signatures.json")).expect("vectors parse");
    let v = file["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"));
    let s = |k: &str| v[k].as_str().expect("string field").to_owned();
    (s("token"), s("url"), s("body"), s("signature"))
}

#[test]
fn a_signed_inbound_message_is_checked_then_read() {
    for name in [
        "inbound message, every field Twilio sends",
        "body with & = + and spaces",
        "body with emoji",
        "body with non-ASCII",
    ] {
        let (token, url, body, sig) = vector(name);
        let form = Form::parse(body.as_bytes());
        SignatureValidator::new(Secret::new(token))
            .validate_form(&url, form.pairs(), Some(&sig))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = InboundWebhook::from_form(&form)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .into_inbound_text();
        assert_eq!(text.sid.as_str(), "SM7c1a0e5e9b3f4d2a8c6b1f0e9d8c7b6a");
        assert_eq!(text.from.to_string(), "+16195550100");
        assert_eq!(text.to.to_string(), "+18583354807");
        assert_eq!(Some(text.body.as_str()), form.get("Body"));
        assert!(text.media.is_empty());
    }
    let (_, _, body, _) = vector("body with & = + and spaces");
    assert_eq!(
        InboundWebhook::parse(body.as_bytes()).map(|h| h.body),
        Ok("a&b=c + d  e&&==++ 100% sure?".to_owned())
    );
    let (_, _, body, _) = vector("body with emoji");
    assert_eq!(
        InboundWebhook::parse(body.as_bytes()).map(|h| h.body),
        Ok("On my way 🚗💨 👍🏽 👨‍👩‍👧".to_owned())
    );
}

#[test]
fn a_signed_status_callback_is_checked_then_read() {
    let (token, url, body, sig) = vector("status callback");
    let form = Form::parse(body.as_bytes());
    SignatureValidator::new(Secret::new(token))
        .validate_form(&url, form.pairs(), Some(&sig))
        .expect("valid signature");
    let report = StatusCallback::from_form(&form)
        .expect("valid callback")
        .into_delivery_report();
    assert_eq!(report.status, DeliveryStatus::Undelivered);
    let err = report.error.expect("an error code");
    assert_eq!((err.code, err.class), (30003, ErrorClass::RetryLater));
}

#[test]
fn bad_fields_are_clear_errors() {
    let body = b"MessageSid=SM7c1a0e5e9b3f4d2a8c6b1f0e9d8c7b6a&AccountSid=AC0123456789abcdef0123456789abcdef&From=6195550100&To=%2B18583354807&Body=hi";
    let err = InboundWebhook::parse(body).unwrap_err();
    assert!(matches!(err, WebhookError::Invalid { .. }));
    assert_eq!(
        err.to_string(),
        "invalid From: phone number must start with '+' and the country code (E.164), e.g. +16195550100"
    );
    let err = InboundWebhook::parse(b"Body=hi").unwrap_err();
    assert_eq!(err.to_string(), "missing field MessageSid");
    let err = StatusCallback::parse(
        b"MessageSid=SM7c1a0e5e9b3f4d2a8c6b1f0e9d8c7b6a&AccountSid=AC0123456789abcdef0123456789abcdef&MessageStatus=received",
    )
    .unwrap_err();
    assert_eq!(err.field(), "MessageStatus");
    assert!(err.to_string().contains("inbound"), "{err}");
}

#[test]
fn twiml_answers() {
    assert_eq!(
        twiml_empty(),
        r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#
    );
    assert_eq!(
        twiml_message("#K7 -> \"ok\" & <done>"),
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>#K7 -&gt; &quot;ok&quot; &amp; &lt;done&gt;</Message></Response>"
    );
}

#[test]
fn advanced_opt_out_type_is_read() {
    use qdn_relay_twilio::OptOutType;
    let base = "MessageSid=SM0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef&From=%2B16195550100&To=%2B16195550000&Body=ARRET";
    let read = |extra: &str| {
        InboundWebhook::parse(format!("{base}{extra}").as_bytes())
            .expect("parses")
            .opt_out_type
    };
    assert_eq!(read(""), None);
    assert_eq!(read("&OptOutType=STOP"), Some(OptOutType::Stop));
    assert_eq!(read("&OptOutType=start"), Some(OptOutType::Start));
    assert_eq!(read("&OptOutType=HELP"), Some(OptOutType::Help));
    // A type Twilio may add later: an ordinary text, not a refused one.
    assert_eq!(read("&OptOutType=SOMETHING"), None);
    assert_eq!(read("&OptOutType="), None);
}
