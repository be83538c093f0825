//! The transport conformance suite (feature `testing`): the REST client
//! over any [`Transport`], against a wiremock server on loopback. Every
//! transport the client may be given runs it: `ReqwestTransport` in this
//! crate's tests, the Lambda functions' hyper client in theirs.
//!
//! The client decides retries from what the transport reports (an answer,
//! or a [`TransportErrorKind`]); each case checks one place where a
//! transport could get that wrong: the request as sent (form, basic auth,
//! headers), error answers read whole (429 with `Retry-After`, Twilio's
//! error body, 5xx), a refused connection and a failed TLS handshake
//! (nothing sent: retried), a slow answer (maybe sent: never retried),
//! and redirects (not followed).
//!
//! Each case is an `async fn` taking a [`MakeTransport`] (a transport for
//! a connect timeout). The
//! [`transport_conformance_tests!`](crate::transport_conformance_tests)
//! macro turns the suite into one `#[tokio::test]` per case:
//!
//! ```ignore
//! qdn_relay_twilio::transport_conformance_tests!(|connect_timeout| {
//!     std::sync::Arc::new(MyTransport::new(connect_timeout))
//!         as std::sync::Arc<dyn qdn_relay_twilio::Transport>
//! });
//! ```
//!
//! Cases panic with a message naming what broke.

use std::sync::Arc;
use std::time::{Duration, Instant};

use qdn_relay_core::{DispatchId, OutboundMessage, SendErrorKind, SmsProvider, Timestamp};
use qdn_relay_transport::{Transport, TransportErrorKind};
use serde_json::json;
use wiremock::matchers::{basic_auth, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{Credentials, Form, RetryPolicy, Secret, TwilioClient, TwilioConfig};

/// A transport for a connect timeout: what each case is given.
pub type MakeTransport = dyn Fn(Duration) -> Arc<dyn Transport>;

/// The test account.
pub const AC: &str = "AC0123456789abcdef0123456789abcdef";
/// A token that must never show up in a log, a `Debug` or an error.
pub const TOKEN: &str = "tok-5ecret-d5b8c0f4a7e2419db3a6f1c9";
/// The Messages API path of [`AC`].
pub const MESSAGES_PATH: &str =
    "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json";
/// The message id the fake API answers with.
pub const SID: &str = "SM0123456789abcdef0123456789abcdef";

/// A configuration against `base` with Auth Token credentials ([`AC`],
/// [`TOKEN`]), a 5 s timeout, a 2 s connect timeout and a fast retry
/// policy (3 attempts, 20 to 100 ms apart, 20 s in all).
pub fn config(base: &str) -> TwilioConfig {
    let mut c = TwilioConfig::new(
        AC.parse().expect("valid sid"),
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

/// Leg 1 of a fixed dispatch, from the business line `+18583354807` to
/// `+16195550100`.
pub fn message(body: &str) -> OutboundMessage {
    OutboundMessage {
        dispatch: DispatchId::new(Timestamp::from_millis(1_795_000_000_000), 0xBEEF),
        leg: 1,
        to: "+16195550100".parse().expect("valid number"),
        from: "+18583354807".parse().expect("valid number"),
        body: body.to_owned(),
        validity_secs: None,
        routes: Vec::new(),
        avoid: Vec::new(),
    }
}

/// A client for `c` over a transport made with its connect timeout.
fn client(make: &MakeTransport, c: TwilioConfig) -> TwilioClient {
    let http = make(c.connect_timeout);
    TwilioClient::with_transport(c, http).expect("valid config")
}

/// Twilio's answer to a created message ([`SID`]), as the API sends it.
pub fn created() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({
        "account_sid": AC,
        "api_version": "2010-04-01",
        "body": "hello",
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": "+18583354807",
        "num_media": "0",
        "num_segments": "1",
        "sid": SID,
        "status": "queued",
        "to": "+16195550100",
        "uri": format!("/2010-04-01/Accounts/{AC}/Messages/{SID}.json"),
    }))
}

/// Twilio's error body, as the API sends it.
pub fn twilio_error(status: u16, code: u32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    }))
}

/// An empty POST to `<base>/x` straight through a transport made for it.
async fn post_directly(
    make: &MakeTransport,
    base: &str,
) -> Result<qdn_relay_transport::Answer, qdn_relay_transport::TransportError> {
    let req = http::Request::post(format!("{base}/x"))
        .body(bytes::Bytes::new())
        .expect("request");
    make(Duration::from_secs(2))
        .send(req, Duration::from_secs(2))
        .await
}

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The form, in order, with basic auth, the form's content type, JSON
/// accepted and the client's user agent; the message id comes back.
pub async fn sends_the_form_with_basic_auth(make: &MakeTransport) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .and(basic_auth(AC, TOKEN))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(header("accept", "application/json"))
        .respond_with(created())
        .expect(1)
        .mount(&server)
        .await;
    let mut c = config(&server.uri());
    c.status_callback = Some("https://relay.example.com/sms/status".into());
    let client = client(make, c);
    let mut msg = message("[QDN #K7] +16195550100: flat tire & stuck");
    msg.validity_secs = Some(900);
    let receipt = client.send(&msg).await.expect("sent");
    assert_eq!(receipt.sid.as_str(), SID);
    assert_eq!(client.name(), "twilio");

    let reqs = server.received_requests().await.expect("recording on");
    assert_eq!(reqs.len(), 1, "exactly one request");
    let form = Form::parse(&reqs[0].body);
    assert_eq!(
        form.pairs(),
        Form::from_pairs([
            ("To", "+16195550100"),
            ("From", "+18583354807"),
            ("Body", "[QDN #K7] +16195550100: flat tire & stuck"),
            (
                "StatusCallback",
                format!(
                    "https://relay.example.com/sms/status?dispatch={}&leg=1",
                    msg.dispatch
                )
                .as_str(),
            ),
            ("ValidityPeriod", "900"),
        ])
        .pairs()
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

/// A 429 with `Retry-After: 1` is retried after a second, and the retry
/// succeeds: the transport hands back the error answer and its headers.
pub async fn too_many_requests_is_retried_after_retry_after(make: &MakeTransport) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            twilio_error(429, 20429, "Too Many Requests").insert_header("Retry-After", "1"),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(created())
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    let receipt = client(make, config(&server.uri()))
        .send(&message("hi"))
        .await
        .expect("sent on the second attempt");
    assert_eq!(receipt.sid.as_str(), SID);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "Retry-After honoured: {:?}",
        started.elapsed()
    );
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(2));
}

/// Twilio's error body is read whole: its code classified, a secret the
/// server echoes scrubbed, no retry.
pub async fn an_error_answer_is_classified_and_scrubbed(make: &MakeTransport) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(twilio_error(
            400,
            21211,
            &format!("bad To, and here is your token {TOKEN}"),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(make, config(&server.uri()))
        .send(&message("hi"))
        .await
        .expect_err("400");
    assert_eq!(err.kind, SendErrorKind::Unreachable);
    assert_eq!(err.code, Some(21211));
    assert!(err.message.contains("[redacted]"), "{}", err.message);
    assert!(!err.message.contains(TOKEN), "{}", err.message);
    server.verify().await;
}

/// A 5xx answer got there: maybe sent (503, unavailable: nothing was
/// accepted, carrier down), never retried, its body quoted.
pub async fn server_errors_are_maybe_sent_and_not_retried(make: &MakeTransport) {
    for status in [500, 502, 503] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_string("upstream trouble"))
            .expect(1)
            .mount(&server)
            .await;
        let err = client(make, config(&server.uri()))
            .send(&message("hi"))
            .await
            .expect_err("5xx");
        let kind = if status == 503 {
            SendErrorKind::CarrierDown
        } else {
            SendErrorKind::MaybeSent
        };
        assert_eq!(err.kind, kind, "{status}");
        assert_eq!(
            err.message,
            format!("Twilio answered HTTP {status}: upstream trouble")
        );
        server.verify().await;
    }
}

/// Nothing listening: the transport says [`TransportErrorKind::Connect`]
/// (nothing was sent), so the client retries and ends `CarrierDown` (Twilio
/// cannot be reached: the line's next carrier sends), within its bounds.
pub async fn connection_refused_is_retried_then_carrier_down(make: &MakeTransport) {
    let base = format!("http://127.0.0.1:{}", closed_port());
    let e = post_directly(make, &base).await.expect_err("refused");
    assert_eq!(e.kind, TransportErrorKind::Connect, "{e}");
    assert!(e.message.contains(&base), "the URL is named: {e}");

    let started = Instant::now();
    let err = client(make, config(&base))
        .send(&message("hi"))
        .await
        .expect_err("refused");
    assert_eq!(err.kind, SendErrorKind::CarrierDown);
    assert!(err.message.contains("could not connect"), "{}", err.message);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded: {:?}",
        started.elapsed()
    );
}

/// A plain-HTTP server on an `https://` URL: the TLS handshake fails,
/// which is a connect failure (nothing was sent).
pub async fn https_needs_a_trusted_server(make: &MakeTransport) {
    let server = MockServer::start().await;
    let base = server.uri().replace("http://", "https://");
    let e = post_directly(make, &base).await.expect_err("no TLS there");
    assert_eq!(e.kind, TransportErrorKind::Connect, "{e}");
    assert_eq!(
        server.received_requests().await.map(|r| r.len()),
        Some(0),
        "no request reached the server"
    );
}

/// No answer within the call's timeout once the request went out: maybe
/// sent, not retried, and the call ends at the timeout.
pub async fn a_slow_answer_is_maybe_sent_and_not_retried(make: &MakeTransport) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(created().set_delay(Duration::from_secs(3)))
        .expect(1)
        .mount(&server)
        .await;
    let mut c = config(&server.uri());
    c.timeout = Duration::from_millis(400);
    let started = Instant::now();
    let err = client(make, c)
        .send(&message("hi"))
        .await
        .expect_err("timed out");
    assert_eq!(err.kind, SendErrorKind::MaybeSent);
    assert!(
        err.message.contains("may have been sent"),
        "{}",
        err.message
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A redirect is an answer, not followed: the client treats it as a
/// configuration error.
pub async fn redirects_are_not_followed(make: &MakeTransport) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(307).insert_header("Location", "https://elsewhere.example/"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = client(make, config(&server.uri()))
        .send(&message("hi"))
        .await
        .expect_err("redirect");
    assert_eq!(err.kind, SendErrorKind::Config);
    server.verify().await;
}

/// Generates one `#[tokio::test]` per case of the [transport conformance
/// suite](crate::testing). `$make` is an expression evaluating to a
/// closure from a connect timeout to an `Arc<dyn Transport>`; the calling
/// crate needs `tokio` with `macros` and `rt` as a dev-dependency.
#[macro_export]
macro_rules! transport_conformance_tests {
    ($make:expr) => {
        $crate::transport_conformance_tests!(@cases $make;
            sends_the_form_with_basic_auth,
            too_many_requests_is_retried_after_retry_after,
            an_error_answer_is_classified_and_scrubbed,
            server_errors_are_maybe_sent_and_not_retried,
            connection_refused_is_retried_then_carrier_down,
            https_needs_a_trusted_server,
            a_slow_answer_is_maybe_sent_and_not_retried,
            redirects_are_not_followed
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let make = $make;
                $crate::testing::$case(&make).await;
            }
        )*
    };
}
