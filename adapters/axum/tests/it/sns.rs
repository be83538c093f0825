//! `POST /sms/aws/sns`: AWS SMS's two-way texts and delivery events over an
//! SNS HTTPS subscription, with AWS's documented payloads signed by a
//! certificate the test makes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use qdn_relay_aws_sms::CertCache;
use qdn_relay_aws_sms::testing::{
    FixedCerts, RecordingConfirmer, SMS_EVENT, SNS_NOTIFICATION, SNS_SUBSCRIPTION_CONFIRMATION,
    SnsSigner, TWO_WAY_SMS,
};
use qdn_relay_axum::SnsIntake;
use qdn_relay_core::{CarrierNumber, JobSyncMode, Policy, State};
use serde_json::{Value, json};

use super::{App, BACKUP, CUSTOMER, LINE, PRIMARY, build_app_full, config, inbound, n, send};

const AWS: &str = "+16195550900";
const TOPIC: &str = "arn:aws:sns:us-west-2:123456789012:MyTopic";
const CERT_URL: &str = "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem";

struct Sns {
    app: App,
    signer: SnsSigner,
    certs: Arc<FixedCerts>,
    confirmer: Arc<RecordingConfirmer>,
}

fn sns_app() -> Sns {
    let signer = SnsSigner::new();
    let certs = FixedCerts::serving(CERT_URL, &signer.cert_pem);
    let confirmer = Arc::new(RecordingConfirmer::default());
    let intake = SnsIntake::new(
        vec![TOPIC.to_owned()],
        CertCache::new(certs.clone()),
        confirmer.clone(),
    );
    let policy = Policy::simple(n(PRIMARY), n(BACKUP), Duration::from_secs(900))
        .and_then(|p| {
            p.with_carriers(vec![
                CarrierNumber {
                    carrier: "twilio".into(),
                    number: n(LINE),
                },
                CarrierNumber {
                    carrier: "aws-sms".into(),
                    number: n(AWS),
                },
            ])
        })
        .expect("policy");
    let app = build_app_full(config(), None, JobSyncMode::Inline, Some((intake, policy)));
    Sns {
        app,
        signer,
        certs,
        confirmer,
    }
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).expect("a fixture")
}

/// The documented notification carrying `message`, signed.
fn notification(signer: &SnsSigner, id: &str, message: &Value, version: &str) -> Value {
    let mut m = json(SNS_NOTIFICATION);
    m["MessageId"] = id.into();
    m["Message"] = message.to_string().into();
    m["SignatureVersion"] = version.into();
    signer.sign_message(&mut m);
    m
}

fn post(m: &Value) -> Request<Body> {
    Request::post("/sms/aws/sns")
        .header("content-type", "text/plain; charset=UTF-8")
        .header("x-amz-sns-message-type", m["Type"].as_str().unwrap_or(""))
        .body(Body::from(m.to_string()))
        .expect("a request")
}

/// A dispatcher's two-way text to the line's AWS number.
fn two_way(from: &str, id: &str, body: &str) -> Value {
    let mut t = json(TWO_WAY_SMS);
    t["originationNumber"] = from.into();
    t["destinationNumber"] = AWS.into();
    t["inboundMessageId"] = id.into();
    t["messageBody"] = body.into();
    t
}

/// A delivery event for a message the relay sent, with the context the
/// client gives every text.
fn event(event_type: &str, message_id: &str, dispatch: &str, leg: u32) -> Value {
    let mut e = json(SMS_EVENT);
    e["eventType"] = event_type.into();
    e["messageId"] = message_id.into();
    e["context"] = json!({"dispatch": dispatch, "leg": leg.to_string()});
    e
}

#[tokio::test]
async fn a_subscription_is_confirmed_once_verified_and_certificates_are_cached() {
    let s = sns_app();
    let mut c = json(SNS_SUBSCRIPTION_CONFIRMATION);
    c["SignatureVersion"] = "2".into();
    s.signer.sign_message(&mut c);
    let (status, body, _) = send(&s.app, post(&c)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        s.confirmer.confirmed(),
        [c["SubscribeURL"].as_str().unwrap_or("")]
    );
    // Version 1 too; the certificate is fetched once.
    let mut c1 = json(SNS_SUBSCRIPTION_CONFIRMATION);
    c1["SignatureVersion"] = "1".into();
    s.signer.sign_message(&mut c1);
    let (status, body, _) = send(&s.app, post(&c1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s.certs.fetches(), [CERT_URL]);
}

#[tokio::test]
async fn forged_foreign_and_misdirected_messages_are_403_and_change_nothing() {
    let s = sns_app();
    inbound(&s.app, 1, CUSTOMER, "hello").await;
    let before = s.app.provider.sent().len();
    let reply = two_way(PRIMARY, "in-1", "on my way");
    // A bad signature.
    let mut forged = notification(&s.signer, "m-1", &reply, "2");
    forged["Message"] = two_way(PRIMARY, "in-1", "send it to me instead")
        .to_string()
        .into();
    // Another topic, correctly signed.
    let mut foreign = json(SNS_NOTIFICATION);
    foreign["TopicArn"] = "arn:aws:sns:us-west-2:999999999999:Theirs".into();
    foreign["Message"] = reply.to_string().into();
    s.signer.sign_message(&mut foreign);
    // A certificate URL off SNS's host.
    let mut elsewhere = json(SNS_NOTIFICATION);
    elsewhere["SigningCertURL"] = "https://evil.example/cert.pem".into();
    elsewhere["Message"] = reply.to_string().into();
    s.signer.sign_message(&mut elsewhere);
    for m in [forged, foreign, elsewhere] {
        let (status, body, _) = send(&s.app, post(&m)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let (status, _, _) = send(
        &s.app,
        Request::post("/sms/aws/sns")
            .body(Body::from("not json"))
            .expect("request"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(s.app.provider.sent().len(), before, "nothing sent");
    let d = s.app.store.all().pop().expect("the dispatch");
    assert_eq!(d.state(), State::Open, "nobody acked");
    assert!(s.confirmer.confirmed().is_empty());
    assert_eq!(s.certs.fetches(), [CERT_URL], "only SNS's host is fetched");
}

#[tokio::test]
async fn a_dispatchers_reply_over_sns_reaches_the_customer_once() {
    let s = sns_app();
    inbound(&s.app, 1, CUSTOMER, "hello").await;
    let reply = notification(
        &s.signer,
        "m-1",
        &two_way(PRIMARY, "cae173d2-66b9-564c-8309-21f858e9fb84", "on my way"),
        "1",
    );
    for _ in 0..2 {
        let (status, body, _) = send(&s.app, post(&reply)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let to_customer = s.app.provider.accepted_to(n(CUSTOMER));
    assert_eq!(to_customer.len(), 1, "once, despite SNS redelivering");
    assert_eq!(
        to_customer[0].message.from,
        n(LINE),
        "from the business line"
    );
    assert!(to_customer[0].message.body.contains("on my way"));
    let d = s.app.store.all().pop().expect("the dispatch");
    assert_eq!(d.state(), State::Acked);
}

#[tokio::test]
async fn delivery_events_are_placed_by_their_context_once_and_only_forward() {
    let s = sns_app();
    inbound(&s.app, 1, CUSTOMER, "hello").await;
    let d = s.app.store.all().pop().expect("the dispatch");
    let leg_sid = s.app.provider.accepted_to(n(PRIMARY))[0]
        .result
        .clone()
        .expect("sent")
        .to_string();
    let id = d.id().to_string();
    // Out of order: delivered arrives, then a stale "pending"; then the
    // carrier blocks it (a later status), twice.
    let events = [
        ("m-1", event("TEXT_SUCCESSFUL", &leg_sid, &id, 0)),
        ("m-2", event("TEXT_PENDING", &leg_sid, &id, 0)),
        ("m-3", event("TEXT_BLOCKED", &leg_sid, &id, 0)),
        ("m-3", event("TEXT_BLOCKED", &leg_sid, &id, 0)),
    ];
    for (mid, e) in &events {
        let m = notification(&s.signer, mid, e, "2");
        let (status, body, _) = send(&s.app, post(&m)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let d = s.app.store.all().pop().expect("the dispatch");
    let leg = &d.legs()[0];
    assert_eq!(leg.status.as_str(), "undelivered");
    assert_eq!(leg.error_code, Some(905));
    assert_eq!(
        s.app.provider.accepted_to(n(BACKUP)).len(),
        1,
        "escalated at once, once"
    );
    // An event for a message the relay never sent: logged, not redelivered.
    let stray = notification(&s.signer, "m-9", &json(SMS_EVENT), "2");
    let (status, body, _) = send(&s.app, post(&stray)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

#[tokio::test]
async fn without_sns_settings_the_route_is_404() {
    let app = super::app();
    let mut m = json(SNS_NOTIFICATION);
    m["Message"] = two_way(PRIMARY, "x", "y").to_string().into();
    let (status, body, _) = send(&app, post(&m)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("QDN_AWS_SMS_SNS_TOPICS"), "{body}");
}
