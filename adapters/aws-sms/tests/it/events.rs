//! AWS's payloads read into the core's inputs.

use qdn_relay_aws_sms::{DeliveryEvent, EventType, Scope, SmsNotification, TwoWayMessage};
use qdn_relay_core::{DeliveryStatus, DispatchId, ErrorClass, Timestamp};

use crate::support::*;

#[test]
fn a_two_way_text_becomes_an_inbound_text() {
    let m = TwoWayMessage::parse(&fixture("two-way-sms.json")).expect("a text");
    assert_eq!(m.message_keyword.as_deref(), Some("JOIN"));
    assert_eq!(
        m.previous_published_message_id.as_deref(),
        Some("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    );
    let text = m.into_inbound_text();
    assert_eq!(text.sid.as_str(), "cae173d2-66b9-564c-8309-21f858e9fb84");
    assert_eq!(text.from.to_string(), "+14255550182");
    assert_eq!(text.to.to_string(), "+12125550101");
    assert_eq!(text.body, "EXAMPLE");
    assert!(text.media.is_empty());
}

#[test]
fn the_documented_event_is_a_sent_report_without_placement() {
    let e = DeliveryEvent::parse(&fixture("sms-event.json")).expect("an event");
    assert_eq!(e.event_type, EventType::Successful);
    assert!(e.is_final);
    assert_eq!(e.message_status.as_deref(), Some("SUCCESSFUL"));
    assert_eq!(e.at, Some(Timestamp::from_millis(1_686_975_103_470)));
    assert_eq!(
        e.destination.map(|d| d.to_string()).as_deref(),
        Some("+14255550156")
    );
    // Its context is someone else's ({"account": "bar"}): no dispatch.
    assert_eq!(e.placement, None);
    let r = e.report();
    assert_eq!(r.sid.as_str(), "862a8790-60c0-4430-9b2b-658bdexample");
    assert_eq!(r.status, DeliveryStatus::Sent);
    assert_eq!(r.error, None);
}

#[test]
fn events_carry_the_context_the_client_sent_and_their_class() {
    let dispatch = DispatchId::new(Timestamp::from_millis(1_795_000_000_000), 0xBEEF);
    let cases = [
        ("TEXT_DELIVERED", DeliveryStatus::Delivered, None),
        ("TEXT_QUEUED", DeliveryStatus::Queued, None),
        (
            "TEXT_INVALID",
            DeliveryStatus::Failed,
            Some((ErrorClass::Unreachable, Scope::Recipient, 901)),
        ),
        (
            "TEXT_CARRIER_UNREACHABLE",
            DeliveryStatus::Undelivered,
            Some((ErrorClass::RetryLater, Scope::Recipient, 904)),
        ),
        (
            "TEXT_BLOCKED",
            DeliveryStatus::Undelivered,
            Some((ErrorClass::Unreachable, Scope::Recipient, 905)),
        ),
        (
            "TEXT_SPAM",
            DeliveryStatus::Undelivered,
            Some((ErrorClass::Carrier, Scope::Carrier, 907)),
        ),
        (
            "TEXT_TTL_EXPIRED",
            DeliveryStatus::Failed,
            Some((ErrorClass::RetryLater, Scope::Carrier, 909)),
        ),
        (
            "TEXT_UNKNOWN",
            DeliveryStatus::Undelivered,
            Some((ErrorClass::Unknown, Scope::Recipient, 908)),
        ),
    ];
    for (event_type, status, failure) in cases {
        let mut v = fixture_json("sms-event.json");
        v["eventType"] = event_type.into();
        v["isFinal"] = status.is_terminal().into();
        v["context"] = serde_json::json!({"dispatch": dispatch.to_string(), "leg": "2"});
        let SmsNotification::Delivery(e) =
            SmsNotification::parse(&v.to_string()).expect("an event")
        else {
            panic!("{event_type}: not a delivery event");
        };
        assert_eq!(e.placement, Some((dispatch, 2)), "{event_type}");
        let r = e.report();
        assert_eq!(r.status, status, "{event_type}");
        let got = e.event_type.failure().map(|f| (f.class, f.scope, f.code));
        assert_eq!(got, failure, "{event_type}");
        assert_eq!(
            r.error.map(|d| (d.class, d.code)),
            failure.map(|(c, _, code)| (c, code)),
            "{event_type}"
        );
    }
}
