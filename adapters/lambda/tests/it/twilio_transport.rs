//! The Twilio REST client over the functions' HTTP client
//! ([`HttpsClient`]) rather than reqwest: what it posts, and that each
//! transport failure gets the class the reqwest transport gives it (only
//! failures where nothing was sent are retried). qdn-relay-twilio's own
//! suite covers the client's logic over reqwest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use qdn_relay_core::{DispatchId, OutboundMessage, SendErrorKind, SmsProvider, Timestamp};
use qdn_relay_lambda::HttpsClient;
use qdn_relay_twilio::transport::{Transport, TransportErrorKind};
use qdn_relay_twilio::{Credentials, Form, RetryPolicy, Secret, TwilioClient, TwilioConfig};
use serde_json::json;
use wiremock::matchers::{basic_auth, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const AC: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "tok-5ecret-d5b8c0f4a7e2419db3a6f1c9";
const SID: &str = "SM0123456789abcdef0123456789abcdef";
const MESSAGES: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";

fn config(base: &str) -> TwilioConfig {
    let mut c = TwilioConfig::new(
        AC.parse().expect("sid"),
        Credentials::AuthToken(Secret::new(TOKEN)),
    );
    c.api_base = base.to_owned();
    c.timeout = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(2);
    let mut retry = RetryPolicy::default();
    retry.base_delay = Duration::from_millis(20);
    retry.max_delay = Duration::from_millis(100);
    retry.max_total = Duration::from_secs(20);
    c.retry = retry;
    c
}

fn client(c: TwilioConfig) -> TwilioClient {
    let http = Arc::new(HttpsClient::new(c.connect_timeout));
    TwilioClient::with_transport(c, http).expect("valid config")
}

fn message(body: &str) -> OutboundMessage {
    OutboundMessage {
        dispatch: DispatchId::new(Timestamp::from_millis(1_795_000_000_000), 0xBEEF),
        leg: 1,
        to: "+16195550100".parse().expect("number"),
        from: "+18583354807".parse().expect("number"),
        body: body.to_owned(),
        validity_secs: None,
    }
}

fn created() -> ResponseTemplate {
    ResponseTemplate::new(201)
        .set_body_json(json!({"sid": SID, "status": "queued", "num_segments": "1"}))
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn sends_the_form_with_basic_auth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .and(basic_auth(AC, TOKEN))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(header("accept", "application/json"))
        .respond_with(created())
        .expect(1)
        .mount(&server)
        .await;
    let mut c = config(&server.uri());
    c.status_callback = Some("https://relay.example/sms/status".into());
    let msg = message("hello");
    let receipt = client(c).send(&msg).await.expect("sent");
    assert_eq!(receipt.sid.as_str(), SID);
    let reqs = server.received_requests().await.expect("recording");
    let form = Form::parse(&reqs[0].body);
    assert_eq!(form.get("To"), Some("+16195550100"));
    assert_eq!(form.get("From"), Some("+18583354807"));
    assert_eq!(form.get("Body"), Some("hello"));
    assert_eq!(
        form.get("StatusCallback"),
        Some(
            format!(
                "https://relay.example/sms/status?dispatch={}&leg={}",
                msg.dispatch, msg.leg
            )
            .as_str()
        )
    );
    let ua = reqs[0]
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok());
    assert!(
        ua.is_some_and(|u| u.starts_with("qdn-relay-twilio/")),
        "{ua:?}"
    );
}

#[tokio::test]
async fn too_many_requests_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({
            "code": 20429, "message": "Too Many Requests", "status": 429
        })))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(created())
        .mount(&server)
        .await;
    let receipt = client(config(&server.uri()))
        .send(&message("hi"))
        .await
        .expect("sent on the retry");
    assert_eq!(receipt.sid.as_str(), SID);
    assert_eq!(server.received_requests().await.expect("rec").len(), 2);
}

#[tokio::test]
async fn a_twilio_error_is_classified_and_scrubbed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21211,
            "message": format!("bad To, and here is your token {TOKEN}"),
            "more_info": "https://www.twilio.com/docs/errors/21211",
            "status": 400,
        })))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(config(&server.uri()))
        .send(&message("hi"))
        .await
        .expect_err("400");
    assert_eq!(err.code, Some(21211));
    assert!(err.message.contains("[redacted]"), "{}", err.message);
    assert!(!err.message.contains(TOKEN), "{}", err.message);
}

#[tokio::test]
async fn connection_refused_is_retryable_and_retried() {
    let base = format!("http://127.0.0.1:{}", closed_port());
    let transport = HttpsClient::new(Duration::from_secs(2));
    let req = http::Request::post(format!("{base}/x"))
        .body(bytes::Bytes::new())
        .expect("request");
    let e = transport
        .send(req, Duration::from_secs(2))
        .await
        .expect_err("refused");
    assert_eq!(e.kind, TransportErrorKind::Connect, "{e}");

    let started = Instant::now();
    let err = client(config(&base))
        .send(&message("hi"))
        .await
        .expect_err("refused");
    assert_eq!(err.kind, SendErrorKind::Retryable);
    assert!(err.message.contains("could not connect"), "{}", err.message);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_slow_answer_is_maybe_sent_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(created().set_delay(Duration::from_secs(3)))
        .expect(1)
        .mount(&server)
        .await;
    let mut c = config(&server.uri());
    c.timeout = Duration::from_millis(400);
    let started = Instant::now();
    let err = client(c).send(&message("hi")).await.expect_err("timed out");
    assert_eq!(err.kind, SendErrorKind::MaybeSent);
    assert!(
        err.message.contains("may have been sent"),
        "{}",
        err.message
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(307).insert_header("Location", "https://elsewhere.example/"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = client(config(&server.uri()))
        .send(&message("hi"))
        .await
        .expect_err("redirect");
    assert_eq!(err.kind, SendErrorKind::Config);
}

#[tokio::test]
async fn https_needs_a_trusted_server() {
    // A plain-HTTP server on an https:// URL: the TLS handshake fails,
    // which is a connect failure (nothing was sent), after the root
    // certificates were loaded.
    let server = MockServer::start().await;
    let base = server.uri().replace("http://", "https://");
    let transport = HttpsClient::new(Duration::from_secs(2));
    let req = http::Request::post(format!("{base}/x"))
        .body(bytes::Bytes::new())
        .expect("request");
    let e = transport
        .send(req, Duration::from_secs(2))
        .await
        .expect_err("no TLS there");
    assert_eq!(e.kind, TransportErrorKind::Connect, "{e}");
}
