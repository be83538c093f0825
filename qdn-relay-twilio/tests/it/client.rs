//! The REST client against wiremock: the form it posts, Twilio's real error
//! bodies, retries only where nothing was sent, timeouts, and secrets.
//! What a transport could get wrong is in the conformance suite
//! (`conformance`), run over reqwest there.

use std::time::{Duration, Instant};

use qdn_relay_core::{SendErrorKind, SmsProvider};
use qdn_relay_twilio::{Form, TwilioClient};
use serde_json::json;
use wiremock::matchers::{basic_auth, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::*;

fn form_of(req: &Request) -> Form {
    Form::parse(&req.body)
}

async fn only_request(server: &MockServer) -> Request {
    let reqs = server.received_requests().await.expect("recording on");
    assert_eq!(reqs.len(), 1, "exactly one request");
    reqs.into_iter().next().expect("one request")
}

#[tokio::test]
async fn api_key_auth_keeps_the_account_in_the_path() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .and(basic_auth(SK, API_SECRET))
        .respond_with(created())
        .expect(1)
        .mount(&server)
        .await;
    let client = client(api_key_config(&server.uri()));
    let m = client.create_message(&message("hi")).await.expect("sent");
    assert_eq!(m.sid.as_str(), SID);
    assert_eq!(m.status.as_deref(), Some("queued"));
    assert_eq!(m.num_segments, Some(1));
    let req = only_request(&server).await;
    use base64::Engine as _;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{SK}:{API_SECRET}"))
    );
    assert_eq!(
        req.headers
            .get("authorization")
            .map(|v| v.to_str().unwrap_or_default()),
        Some(expected.as_str())
    );
}

#[tokio::test]
async fn messaging_service_replaces_from() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(created())
        .expect(1)
        .mount(&server)
        .await;
    let mut c = config(&server.uri());
    c.messaging_service_sid = Some(MG.parse().expect("valid"));
    client(c).send(&message("hi")).await.expect("sent");
    let form = form_of(&only_request(&server).await);
    assert_eq!(form.get("MessagingServiceSid"), Some(MG));
    assert_eq!(form.get("From"), None);
    assert_eq!(form.get("StatusCallback"), None);
    assert_eq!(form.get("ValidityPeriod"), None);
}

#[tokio::test]
async fn validity_period_is_sent_only_when_set_and_clamped() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(created())
        .expect(3)
        .mount(&server)
        .await;
    let client = client(config(&server.uri()));
    for v in [Some(0), Some(100_000), None] {
        let mut m = message("hi");
        m.validity_secs = v;
        client.send(&m).await.expect("sent");
    }
    let reqs = server.received_requests().await.expect("recording");
    let got: Vec<Option<String>> = reqs
        .iter()
        .map(|r| form_of(r).get("ValidityPeriod").map(str::to_owned))
        .collect();
    assert_eq!(got, [Some("1".into()), Some("36000".into()), None]);
}

#[tokio::test]
async fn the_body_never_exceeds_1600_chars() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(created())
        .expect(3)
        .mount(&server)
        .await;
    let client = client(config(&server.uri()));
    let long_ascii = "x".repeat(5000);
    let long_emoji = "🚗".repeat(1700);
    let exact = "é".repeat(1600);
    for body in [&long_ascii, &long_emoji, &exact] {
        client.send(&message(body)).await.expect("sent");
    }
    let reqs = server.received_requests().await.expect("recording");
    let bodies: Vec<String> = reqs
        .iter()
        .map(|r| form_of(r).get("Body").expect("Body").to_owned())
        .collect();
    for b in &bodies {
        assert!(b.chars().count() <= 1600, "{} chars", b.chars().count());
        assert!(
            b.encode_utf16().count() <= 1600,
            "{} UTF-16 units",
            b.encode_utf16().count()
        );
    }
    assert_eq!(bodies[0].chars().count(), 1600);
    assert_eq!(bodies[0], format!("{}...", "x".repeat(1597)));
    // An emoji is two UTF-16 units.
    assert_eq!(bodies[1], format!("{}...", "🚗".repeat(798)));
    assert_eq!(bodies[2], exact, "a body of exactly 1,600 chars is kept");
}

/// One of Twilio's error answers, and what the client must make of it.
struct ErrorCase {
    status: u16,
    code: u32,
    message: &'static str,
    kind: SendErrorKind,
}

#[tokio::test]
async fn twilio_error_bodies_are_classified() {
    use SendErrorKind::*;
    let cases = [
        ErrorCase {
            status: 400,
            code: 21211,
            message: "The 'To' number +1619555 is not a valid phone number.",
            kind: Unreachable,
        },
        ErrorCase {
            status: 400,
            code: 21610,
            message: "Attempt to send to unsubscribed recipient",
            kind: OptedOut,
        },
        ErrorCase {
            status: 400,
            code: 21614,
            message: "'To' number is not a valid mobile number",
            kind: Unreachable,
        },
        ErrorCase {
            status: 400,
            code: 30006,
            message: "Landline or unreachable carrier",
            kind: Unreachable,
        },
        ErrorCase {
            status: 400,
            code: 30005,
            message: "Unknown destination handset",
            kind: Unreachable,
        },
        ErrorCase {
            status: 400,
            code: 30007,
            message: "Message filtered",
            kind: CarrierDown,
        },
        ErrorCase {
            status: 400,
            code: 30003,
            message: "Unreachable destination handset",
            kind: Retryable,
        },
        ErrorCase {
            status: 400,
            code: 30001,
            message: "Queue overflow",
            kind: Retryable,
        },
        ErrorCase {
            status: 401,
            code: 20003,
            message: "Authenticate",
            kind: Config,
        },
        ErrorCase {
            status: 400,
            code: 21606,
            message: "The From phone number +18583354807 is not a valid, SMS-capable inbound phone number or short code for your account.",
            kind: Config,
        },
        ErrorCase {
            status: 400,
            code: 21212,
            message: "The 'From' number 123 is not a valid phone number, shortcode, or alphanumeric sender ID.",
            kind: Config,
        },
        ErrorCase {
            status: 404,
            code: 20404,
            message: "The requested resource /2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json was not found",
            kind: Config,
        },
        ErrorCase {
            status: 400,
            code: 21617,
            message: "The concatenated message body exceeds the 1600 character limit.",
            kind: Rejected,
        },
        ErrorCase {
            status: 400,
            code: 21602,
            message: "Message body is required.",
            kind: Rejected,
        },
    ];
    for case in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(twilio_error(case.status, case.code, case.message))
            .expect(1)
            .mount(&server)
            .await;
        let err = client(config(&server.uri()))
            .send(&message("hi"))
            .await
            .expect_err("an error answer");
        assert_eq!(err.kind, case.kind, "{} {}", case.status, case.code);
        assert_eq!(err.code, Some(case.code));
        assert_eq!(
            err.message,
            format!(
                "Twilio answered HTTP {} error {}: {} (https://www.twilio.com/docs/errors/{})",
                case.status, case.code, case.message, case.code
            )
        );
        assert_eq!(err.retry_after_ms, None);
        // Dropping the server checks `expect(1)`: no retry of any of these.
    }
}

#[tokio::test]
async fn too_many_requests_exhausted_is_retryable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            twilio_error(429, 20429, "Too Many Requests").insert_header("Retry-After", "0"),
        )
        .expect(3)
        .mount(&server)
        .await;
    let err = client(config(&server.uri()))
        .send(&message("hi"))
        .await
        .expect_err("still limited");
    assert_eq!(err.kind, SendErrorKind::Retryable);
    assert_eq!(err.code, Some(20429));
    assert_eq!(err.retry_after_ms, Some(0));
}

#[tokio::test]
async fn a_retry_after_past_the_budget_is_not_waited_for() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            twilio_error(429, 20429, "Too Many Requests").insert_header("Retry-After", "120"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();
    let err = client(config(&server.uri()))
        .send(&message("hi"))
        .await
        .expect_err("limited");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.kind, SendErrorKind::Retryable);
    assert_eq!(
        err.retry_after_ms,
        Some(120_000),
        "the relay learns when to retry"
    );
}

#[tokio::test]
async fn a_2xx_without_a_sid_is_maybe_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_string("<html>ok</html>"))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(config(&server.uri()))
        .send(&message("hi"))
        .await
        .expect_err("no sid");
    assert_eq!(err.kind, SendErrorKind::MaybeSent);
}

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The conformance suite checks what a refused connection comes to; this
/// checks that each retry is logged.
#[tokio::test(flavor = "current_thread")]
async fn refused_connections_log_each_retry() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let base = format!("http://127.0.0.1:{}", closed_port());
    let err = client(config(&base))
        .send(&message("hi"))
        .await
        .expect_err("refused");
    assert_eq!(err.kind, SendErrorKind::CarrierDown);
    let text = logs.text();
    assert_eq!(
        text.matches("twilio send not made, retrying").count(),
        2,
        "3 attempts, 2 retries: {text}"
    );
}

#[tokio::test]
async fn retries_stop_at_the_time_budget() {
    let base = format!("http://127.0.0.1:{}", closed_port());
    let mut c = config(&base);
    c.retry.max_attempts = 100;
    c.retry.base_delay = Duration::from_millis(200);
    c.retry.max_delay = Duration::from_millis(400);
    c.retry.max_total = Duration::from_secs(3);
    c.timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = client(c).send(&message("hi")).await.expect_err("refused");
    assert_eq!(err.kind, SendErrorKind::CarrierDown);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(
        took >= Duration::from_millis(1000),
        "it did retry: {took:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn secrets_never_reach_debug_errors_or_logs() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let server = MockServer::start().await;
    // A hostile or broken server that echoes the Authorization header,
    // raw and decoded, in its error message.
    Mock::given(method("POST"))
        .respond_with(|req: &Request| {
            use base64::Engine as _;
            let auth = req
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let decoded = auth
                .strip_prefix("Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            ResponseTemplate::new(400).set_body_json(json!({
                "code": 21211,
                "message": format!("bad request with {auth} ({decoded})"),
                "more_info": "https://www.twilio.com/docs/errors/21211",
                "status": 400,
            }))
        })
        .mount(&server)
        .await;
    let mut errors = Vec::new();
    for c in [config(&server.uri()), api_key_config(&server.uri())] {
        assert_no_secret("config Debug", &format!("{c:?}"));
        assert_no_secret("config Display", &format!("{c}"));
        assert!(format!("{c}").starts_with(&format!("Twilio account {AC} with ")));
        assert_no_secret("credentials Debug", &format!("{:?}", c.credentials));
        let client: TwilioClient = client(c);
        assert_no_secret("client Debug", &format!("{client:?}"));
        assert_no_secret("client Display", &format!("{client}"));
        errors.push(client.send(&message("hi")).await.expect_err("400"));
    }
    // And the transport failures.
    let refused = format!("http://127.0.0.1:{}", closed_port());
    errors.push(
        client(config(&refused))
            .send(&message("hi"))
            .await
            .expect_err("refused"),
    );
    errors.push(
        client(api_key_config(&refused))
            .send(&message("hi"))
            .await
            .expect_err("refused"),
    );
    for e in &errors {
        assert_no_secret("error Display", &e.to_string());
        assert_no_secret("error Debug", &format!("{e:?}"));
        assert_no_secret("error JSON", &serde_json::to_string(e).expect("serialises"));
    }
    assert!(
        errors[0].message.contains("[redacted]"),
        "{}",
        errors[0].message
    );
    assert!(
        errors[1].message.contains("[redacted]"),
        "{}",
        errors[1].message
    );
    let text = logs.text();
    assert!(
        text.contains("twilio send failed"),
        "the failures were logged: {text}"
    );
    assert_no_secret("the log", &text);
}

#[test]
fn config_errors_never_show_secrets() {
    use qdn_relay_twilio::TwilioConfig;
    let cases: [&[(&str, &str)]; 4] = [
        &[("TWILIO_AUTH_TOKEN", TOKEN)],
        &[("TWILIO_ACCOUNT_SID", TOKEN), ("TWILIO_AUTH_TOKEN", TOKEN)],
        &[
            ("TWILIO_ACCOUNT_SID", AC),
            ("TWILIO_API_SECRET", API_SECRET),
        ],
        &[
            ("TWILIO_ACCOUNT_SID", AC),
            ("TWILIO_API_KEY", API_SECRET),
            ("TWILIO_API_SECRET", API_SECRET),
        ],
    ];
    for vars in cases {
        let err = TwilioConfig::from_lookup(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .expect_err("invalid");
        assert_no_secret("config error", &err.to_string());
        assert_no_secret("config error Debug", &format!("{err:?}"));
    }
}
