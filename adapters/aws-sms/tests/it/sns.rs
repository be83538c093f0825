//! SNS messages as AWS documents them, signed with a test certificate.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use qdn_relay_aws_sms::{
    CertCache, SignatureVersion, SmsNotification, SnsError, SnsMessage, SnsType,
    TransportCertFetcher, verify,
};
use qdn_relay_transport::{Answer, Request, ReqwestTransport, Transport, TransportError};
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

const CERT_URL: &str = "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem";
const TOPIC: &str = "arn:aws:sns:us-west-2:123456789012:MyTopic";

/// The documented notification carrying `message`, signed with `version`.
fn notification(signer: &Signer, version: &str, message: &str) -> Value {
    let mut m = fixture_json("sns-notification.json");
    m["Message"] = message.into();
    m["SignatureVersion"] = version.into();
    signer.sign_message(&mut m);
    m
}

fn parse(m: &Value) -> SnsMessage {
    SnsMessage::parse(m.to_string().as_bytes()).expect("an SNS message")
}

#[tokio::test]
async fn signed_notifications_verify_in_both_versions() {
    let signer = Signer::new();
    let fetcher = FakeCerts::serving(CERT_URL, &signer.cert_pem);
    let certs = CertCache::new(fetcher.clone());
    let two_way = fixture("two-way-sms.json");
    for (version, want) in [("1", SignatureVersion::V1), ("2", SignatureVersion::V2)] {
        let m = parse(&notification(&signer, version, &two_way));
        assert_eq!(m.kind, SnsType::Notification);
        assert_eq!(m.signature_version, want);
        assert_eq!(m.subject.as_deref(), Some("My First Message"));
        m.check_topic(&[TOPIC]).expect("our topic");
        verify(&m, &certs).await.expect("a valid signature");
        let SmsNotification::Inbound(text) = SmsNotification::parse(&m.message).expect("a text")
        else {
            panic!("not a two-way text");
        };
        assert_eq!(
            text.inbound_message_id.as_str(),
            "cae173d2-66b9-564c-8309-21f858e9fb84"
        );
    }
    // Fetched once, kept for the second message.
    assert_eq!(fetcher.fetches(), [CERT_URL]);
}

#[tokio::test]
async fn confirmations_verify_and_carry_their_subscribe_url() {
    let signer = Signer::new();
    let certs = CertCache::new(FakeCerts::serving(CERT_URL, &signer.cert_pem));
    for (file, kind) in [
        (
            "sns-subscription-confirmation.json",
            SnsType::SubscriptionConfirmation,
        ),
        (
            "sns-unsubscribe-confirmation.json",
            SnsType::UnsubscribeConfirmation,
        ),
    ] {
        for version in ["1", "2"] {
            let mut v = fixture_json(file);
            v["SignatureVersion"] = version.into();
            signer.sign_message(&mut v);
            let m = parse(&v);
            assert_eq!(m.kind, kind);
            assert!(
                m.token
                    .as_deref()
                    .is_some_and(|t| t.starts_with("2336412f37"))
            );
            assert!(
                m.subscribe_url.as_deref().is_some_and(|u| u.starts_with(
                    "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&"
                )),
                "{:?}",
                m.subscribe_url
            );
            verify(&m, &certs).await.expect("a valid signature");
        }
    }
}

#[tokio::test]
async fn forgeries_do_not_verify() {
    let signer = Signer::new();
    let certs = CertCache::new(FakeCerts::serving(CERT_URL, &signer.cert_pem));
    let event = fixture("sms-event.json");
    let signed = notification(&signer, "2", &event);
    verify(&parse(&signed), &certs)
        .await
        .expect("the original verifies");

    let mut forgeries: Vec<(&str, Value)> = Vec::new();
    let mut m = signed.clone();
    m["Message"] = event.replace("TEXT_SUCCESSFUL", "TEXT_DELIVERED").into();
    forgeries.push(("message changed", m));
    let mut m = signed.clone();
    m["Subject"] = "Another subject".into();
    forgeries.push(("subject changed", m));
    let mut m = signed.clone();
    m.as_object_mut().expect("object").remove("Subject");
    forgeries.push(("subject removed", m));
    let mut m = signed.clone();
    m["TopicArn"] = "arn:aws:sns:us-west-2:123456789012:OtherTopic".into();
    forgeries.push(("topic changed", m));
    let mut m = signed.clone();
    m["SignatureVersion"] = "1".into();
    forgeries.push(("a SHA256 signature claimed as SHA1", m));
    let other = Signer::new();
    forgeries.push(("signed by another key", notification(&other, "2", &event)));
    for (what, m) in forgeries {
        let e = verify(&parse(&m), &certs).await.expect_err(what);
        assert_eq!(e, SnsError::BadSignature, "{what}");
    }
}

#[tokio::test]
async fn certificates_come_from_sns_hosts_only() {
    let signer = Signer::new();
    for url in [
        "https://evil.example/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
        "http://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
        "https://sns.us-west-2.amazonaws.com.evil.example/cert.pem",
    ] {
        let fetcher = FakeCerts::serving(url, &signer.cert_pem);
        let certs = CertCache::new(fetcher.clone());
        let mut m = fixture_json("sns-notification.json");
        m["SigningCertURL"] = url.into();
        signer.sign_message(&mut m);
        let e = verify(&parse(&m), &certs).await.expect_err(url);
        assert!(matches!(e, SnsError::CertUrl { .. }), "{url}: {e}");
        assert!(fetcher.fetches().is_empty(), "{url} was fetched");
    }
}

#[tokio::test]
async fn unknown_topics_and_bad_envelopes_are_refused() {
    let signer = Signer::new();
    let m = parse(&notification(&signer, "1", "hi"));
    let e = m
        .check_topic(&["arn:aws:sns:us-west-2:123456789012:RelaySms"])
        .expect_err("not ours");
    assert_eq!(e, SnsError::UnexpectedTopic(TOPIC.to_owned()));

    let base = notification(&signer, "1", "hi");
    type Change<'a> = &'a dyn Fn(&mut Value);
    let cases: [(&str, Change<'_>, &str); 6] = [
        (
            "no signature",
            &|m| drop(m.as_object_mut().map(|o| o.remove("Signature"))),
            "Signature is missing",
        ),
        ("bad type", &|m| m["Type"] = "Gossip".into(), "invalid Type"),
        (
            "version 3",
            &|m| m["SignatureVersion"] = "3".into(),
            "invalid SignatureVersion",
        ),
        (
            "bad base64",
            &|m| m["Signature"] = "not base64!".into(),
            "invalid Signature",
        ),
        (
            "no cert URL",
            &|m| drop(m.as_object_mut().map(|o| o.remove("SigningCertURL"))),
            "SigningCertURL is missing",
        ),
        (
            "confirmation without a token",
            &|m| m["Type"] = "SubscriptionConfirmation".into(),
            "SubscribeURL is missing",
        ),
    ];
    for (what, change, want) in cases {
        let mut m = base.clone();
        change(&mut m);
        let e = SnsMessage::parse(m.to_string().as_bytes()).expect_err(what);
        assert!(e.to_string().starts_with(want), "{what}: {e}");
    }
    let e = SnsMessage::parse(b"Type=Notification").expect_err("not JSON");
    assert!(matches!(e, SnsError::Parse(_)), "{e}");
}

#[tokio::test]
async fn a_lambda_sns_record_reads_and_verifies_the_same() {
    let signer = Signer::new();
    let event = fixture_json("lambda-sns-event.json");
    let mut sns = event["Records"][0]["Sns"].clone();
    sns["Message"] = fixture("sms-event.json").into();
    signer.sign_message(&mut sns);
    let m = parse(&sns);
    assert_eq!(m.topic_arn, "arn:aws:sns:us-east-1:123456789012:sns-lambda");
    let url = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-ac565b8b1a6c5d002d285f9598aa1d9b.pem";
    assert_eq!(m.signing_cert_url, url);
    assert!(m.unsubscribe_url.is_some());
    verify(
        &m,
        &CertCache::new(FakeCerts::serving(url, &signer.cert_pem)),
    )
    .await
    .expect("a valid signature");
    let SmsNotification::Delivery(event) = SmsNotification::parse(&m.message).expect("an event")
    else {
        panic!("not a delivery event");
    };
    assert_eq!(
        event.message_id.as_str(),
        "862a8790-60c0-4430-9b2b-658bdexample"
    );
}

/// A transport that sends every request to a local server instead of the
/// host it names, recording the URLs asked for.
#[derive(Debug)]
struct ToLocal {
    base: String,
    inner: ReqwestTransport,
    asked: Mutex<Vec<String>>,
}

#[async_trait]
impl Transport for ToLocal {
    async fn send(&self, request: Request, timeout: Duration) -> Result<Answer, TransportError> {
        self.asked.lock().expect("not poisoned").push(format!(
            "{} {}",
            request.method(),
            request.uri()
        ));
        let (mut head, body) = request.into_parts();
        let path = head.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        head.uri = format!("{}{path}", self.base).parse().expect("uri");
        self.inner
            .send(Request::from_parts(head, body), timeout)
            .await
    }
}

#[tokio::test]
async fn certificates_are_fetched_with_a_get_and_checked() {
    let signer = Signer::new();
    let server = MockServer::start().await;
    let pem_path = "/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem";
    Mock::given(method("GET"))
        .and(path(pem_path))
        .respond_with(ResponseTemplate::new(200).set_body_string(signer.cert_pem.clone()))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/not-a-cert.pem"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>hello</html>"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/huge.pem"))
        .respond_with(ResponseTemplate::new(200).set_body_string("A".repeat(100_000)))
        .mount(&server)
        .await;
    let http = Arc::new(ToLocal {
        base: server.uri(),
        inner: ReqwestTransport::new(Duration::from_secs(2)).expect("client"),
        asked: Mutex::default(),
    });
    let certs = CertCache::new(Arc::new(TransportCertFetcher::new(http.clone())));
    let m = parse(&notification(&signer, "2", "hi"));
    verify(&m, &certs).await.expect("verified");
    verify(&m, &certs).await.expect("verified from the cache");
    assert_eq!(
        *http.asked.lock().expect("not poisoned"),
        [format!("GET {CERT_URL}")],
        "one GET of the https URL"
    );

    let sns = "https://sns.us-west-2.amazonaws.com";
    let e = certs
        .certificate(&format!("{sns}/absent.pem"))
        .await
        .expect_err("404");
    assert!(
        matches!(&e, SnsError::Fetch(m) if m.contains("HTTP 404")),
        "{e}"
    );
    let e = certs
        .certificate(&format!("{sns}/not-a-cert.pem"))
        .await
        .expect_err("not PEM");
    assert!(matches!(e, SnsError::Certificate(_)), "{e}");
    let e = certs
        .certificate(&format!("{sns}/huge.pem"))
        .await
        .expect_err("too large");
    assert!(
        matches!(&e, SnsError::Fetch(m) if m.contains("larger than")),
        "{e}"
    );
    server.verify().await;
}
