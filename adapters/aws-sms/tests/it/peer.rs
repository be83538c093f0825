//! The client against the fake `pinpoint-sms-voice-v2` endpoint
//! (`tests/peer/fake_sms_voice.py`, started by `./scripts/test`; its address
//! in `QDN_TEST_SMS_VOICE_URL`). The peer checks every request against
//! botocore's service model and its SigV4 signature with botocore's signer,
//! and fails on demand per destination, so each test uses destinations of
//! its own.

use std::hash::{BuildHasher as _, Hasher as _, RandomState};
use std::sync::Arc;
use std::time::Duration;

use qdn_relay_aws_sms::{AwsSmsClient, AwsSmsConfig, Failure, Scope, SendFailure};
use qdn_relay_core::{
    DispatchId, OutboundMessage, PhoneNumber, SendErrorKind, SmsProvider, Timestamp,
};
use qdn_relay_transport::aws::{Credentials, SharedCredentialsProvider};
use qdn_relay_transport::{ReqwestTransport, RetryPolicy, Transport};
use serde_json::{Value, json};

const ACCESS_KEY: &str = "AKIDRELAYTEST";
const SECRET_KEY: &str = "relay-test-secret-2f9a";
const SESSION_TOKEN: &str = "session-tok3n-8e1d";
const LINE: &str = "+18583354807";

fn peer_url() -> String {
    match std::env::var("QDN_TEST_SMS_VOICE_URL") {
        Ok(v) if !v.trim().is_empty() => v.trim_end_matches('/').to_owned(),
        _ => panic!(
            "QDN_TEST_SMS_VOICE_URL is not set: this test needs the fake pinpoint-sms-voice-v2 endpoint. Run the suite with ./scripts/test, which installs botocore and starts it."
        ),
    }
}

/// A call to the peer's control endpoints.
async fn control(method: http::Method, path: &str, body: Option<Value>) -> Value {
    let http = ReqwestTransport::new(Duration::from_secs(2)).expect("client");
    let request = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", peer_url()))
        .header("content-type", "application/json")
        .body(bytes::Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        ))
        .expect("request");
    let mut answer = http
        .send(request, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("the peer at {}: {e}", peer_url()));
    let (data, read) = answer.read_body(4 << 20, false).await;
    read.expect("read");
    let text = String::from_utf8_lossy(&data);
    assert!(
        answer.status.is_success(),
        "{path}: HTTP {}: {text}",
        answer.status
    );
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Lets the peer verify this test's signatures (idempotent).
async fn register() {
    control(
        http::Method::POST,
        "/_peer/credentials",
        Some(json!({"access_key": ACCESS_KEY, "secret_key": SECRET_KEY})),
    )
    .await;
}

/// How the peer answers sends to `destination`.
async fn fault(destination: &PhoneNumber, mut spec: Value) {
    spec["destination"] = destination.to_string().into();
    control(http::Method::POST, "/_peer/faults", Some(spec)).await;
}

/// The valid requests the peer got for `destination`.
async fn requests(destination: &PhoneNumber) -> Vec<Value> {
    let path = format!(
        "/_peer/requests?destination=%2B{}",
        destination.to_string().trim_start_matches('+')
    );
    match control(http::Method::GET, &path, None).await {
        Value::Array(a) => a,
        other => panic!("not a list: {other}"),
    }
}

/// A destination no other test uses.
fn destination() -> PhoneNumber {
    let n = RandomState::new().build_hasher().finish() % 8_000_000_000 + 2_000_000_000;
    format!("+1{n}").parse().expect("a number")
}

fn config(endpoint: &str) -> AwsSmsConfig {
    let mut c = AwsSmsConfig::new(
        "us-east-1",
        SharedCredentialsProvider::new(Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            Some(SESSION_TOKEN.to_owned()),
            None,
            "test",
        )),
    );
    c.endpoint = endpoint.to_owned();
    c.timeout = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(2);
    let mut retry = RetryPolicy::default();
    retry.base_delay = Duration::from_millis(20);
    retry.max_delay = Duration::from_millis(100);
    retry.max_total = Duration::from_secs(20);
    c.retry = retry;
    c
}

fn client(c: AwsSmsConfig) -> AwsSmsClient {
    let http: Arc<dyn Transport> =
        Arc::new(ReqwestTransport::new(c.connect_timeout).expect("a reqwest client"));
    AwsSmsClient::with_transport(c, http).expect("valid config")
}

fn message(to: PhoneNumber, body: &str) -> OutboundMessage {
    OutboundMessage {
        dispatch: DispatchId::new(Timestamp::from_millis(1_795_000_000_000), 0xBEEF),
        leg: 4,
        to,
        from: LINE.parse().expect("line"),
        body: body.to_owned(),
        validity_secs: None,
        routes: Vec::new(),
        avoid: Vec::new(),
    }
}

#[tokio::test]
async fn a_send_is_valid_for_the_model_and_carries_every_field() {
    register().await;
    let to = destination();
    let mut c = config(&peer_url());
    c.configuration_set = Some("relay-events".parse().expect("name"));
    c.origination.insert(
        LINE.parse().expect("line"),
        "pool-0123456789abcdef0123456789abcdef"
            .parse()
            .expect("pool"),
    );
    let client = client(c);
    let mut msg = message(to, "[QDN #K7] +16195550100: flat tire & stuck");
    msg.validity_secs = Some(900);
    let receipt = client.send(&msg).await.expect("sent");
    assert_eq!(client.name(), "aws-sms");

    let reqs = requests(&to).await;
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let r = &reqs[0];
    assert_eq!(r["operation"], "SendTextMessage");
    assert_eq!(
        r["body"],
        json!({
            "DestinationPhoneNumber": to.to_string(),
            "OriginationIdentity": "pool-0123456789abcdef0123456789abcdef",
            "MessageBody": "[QDN #K7] +16195550100: flat tire & stuck",
            "MessageType": "TRANSACTIONAL",
            "ConfigurationSetName": "relay-events",
            "Context": {"dispatch": msg.dispatch.to_string(), "leg": "4"},
            "TimeToLive": 900,
        })
    );
    assert_eq!(r["signature_verified"], true, "botocore's signer agrees");
    assert_eq!(r["session_token"], true);
    assert_eq!(r["region"], "us-east-1");
    assert_eq!(r["access_key"], ACCESS_KEY);
    assert!(
        r["user_agent"]
            .as_str()
            .is_some_and(|u| u.starts_with("qdn-relay-aws-sms/")),
        "{r}"
    );
    assert_eq!(r["answer"]["MessageId"], receipt.sid.as_str());

    // A line without an identity sends from its own number; no
    // configuration set, no TimeToLive.
    let to = destination();
    client_without_extras(to).await;
}

async fn client_without_extras(to: PhoneNumber) {
    let client = client(config(&peer_url()));
    client.send(&message(to, "hi")).await.expect("sent");
    let reqs = requests(&to).await;
    assert_eq!(reqs.len(), 1);
    let body = &reqs[0]["body"];
    assert_eq!(body["OriginationIdentity"], LINE);
    assert!(body.get("ConfigurationSetName").is_none(), "{body}");
    assert!(body.get("TimeToLive").is_none(), "{body}");
}

/// One injected answer and what the client must make of it.
struct Case {
    fault: Value,
    failure: Failure,
    kind: SendErrorKind,
    scope: Scope,
    attempts: usize,
    says: &'static str,
}

#[tokio::test]
async fn every_failure_class_maps_as_the_table_says() {
    use Failure::*;
    use SendErrorKind as K;
    register().await;
    let cases = [
        Case {
            fault: json!({"error": "ThrottlingException", "message": "Rate exceeded"}),
            failure: Throttled,
            kind: K::Retryable,
            scope: Scope::Carrier,
            attempts: 3,
            says: "ThrottlingException (HTTP 400): Rate exceeded",
        },
        Case {
            fault: json!({"error": "ThrottlingException", "status": 429}),
            failure: Throttled,
            kind: K::Retryable,
            scope: Scope::Carrier,
            attempts: 3,
            says: "ThrottlingException (HTTP 429)",
        },
        Case {
            fault: json!({"error": "ServiceQuotaExceededException", "reason": "MONTHLY_SPEND_LIMIT_REACHED_FOR_TEXT"}),
            failure: QuotaExceeded,
            kind: K::CarrierDown,
            scope: Scope::Carrier,
            attempts: 1,
            says: "[reason MONTHLY_SPEND_LIMIT_REACHED_FOR_TEXT]",
        },
        Case {
            fault: json!({"error": "InternalServerException", "message": "try again"}),
            failure: ServiceFault,
            kind: K::MaybeSent,
            scope: Scope::Carrier,
            attempts: 1,
            says: "InternalServerException (HTTP 500): try again",
        },
        Case {
            fault: json!({"status": 502, "body": "<html>Bad Gateway</html>"}),
            failure: ServiceFault,
            kind: K::MaybeSent,
            scope: Scope::Carrier,
            attempts: 1,
            says: "HTTP 502",
        },
        Case {
            fault: json!({"error": "ServiceUnavailable"}),
            failure: ServiceFault,
            kind: K::MaybeSent,
            scope: Scope::Carrier,
            attempts: 1,
            says: "ServiceUnavailable (HTTP 503)",
        },
        Case {
            fault: json!({"error": "ConflictException", "reason": "DESTINATION_PHONE_NUMBER_OPTED_OUT", "resource_type": "opted-out-number", "resource_id": "+16195550100"}),
            failure: OptedOut,
            kind: K::OptedOut,
            scope: Scope::Recipient,
            attempts: 1,
            says: "[opted-out-number +16195550100]",
        },
        Case {
            fault: json!({"error": "ConflictException", "reason": "DESTINATION_PHONE_NUMBER_NOT_VERIFIED"}),
            failure: DestinationBlocked,
            kind: K::Unreachable,
            scope: Scope::Recipient,
            attempts: 1,
            says: "[reason DESTINATION_PHONE_NUMBER_NOT_VERIFIED]",
        },
        Case {
            fault: json!({"error": "ValidationException", "reason": "DESTINATION_COUNTRY_BLOCKED"}),
            failure: DestinationBlocked,
            kind: K::Unreachable,
            scope: Scope::Recipient,
            attempts: 1,
            says: "[reason DESTINATION_COUNTRY_BLOCKED]",
        },
        Case {
            fault: json!({"error": "ValidationException", "reason": "FIELD_VALIDATION_FAILED", "fields": [{"Name": "DestinationPhoneNumber", "Message": "not a valid phone number"}]}),
            failure: InvalidDestination,
            kind: K::Unreachable,
            scope: Scope::Recipient,
            attempts: 1,
            says: "[DestinationPhoneNumber: not a valid phone number]",
        },
        Case {
            fault: json!({"error": "ValidationException", "reason": "INVALID_IDENTITY_FOR_DESTINATION_COUNTRY"}),
            failure: DestinationConfig,
            kind: K::Rejected,
            scope: Scope::Recipient,
            attempts: 1,
            says: "[reason INVALID_IDENTITY_FOR_DESTINATION_COUNTRY]",
        },
        Case {
            fault: json!({"error": "ValidationException", "reason": "MAXIMUM_SIZE_EXCEEDED"}),
            failure: InvalidMessage,
            kind: K::Rejected,
            scope: Scope::Message,
            attempts: 1,
            says: "[reason MAXIMUM_SIZE_EXCEEDED]",
        },
        Case {
            fault: json!({"error": "ValidationException", "reason": "OTHER"}),
            failure: Rejected,
            kind: K::Rejected,
            scope: Scope::Message,
            attempts: 1,
            says: "[reason OTHER]",
        },
        Case {
            fault: json!({"error": "AccessDeniedException", "reason": "ACCOUNT_DISABLED"}),
            failure: AccessDenied,
            kind: K::Config,
            scope: Scope::Carrier,
            attempts: 1,
            says: "[reason ACCOUNT_DISABLED]",
        },
        Case {
            fault: json!({"error": "AccessDeniedException", "message": "not authorized to perform sms-voice:SendTextMessage"}),
            failure: AccessDenied,
            kind: K::Config,
            scope: Scope::Carrier,
            attempts: 1,
            says: "sms-voice:SendTextMessage",
        },
        Case {
            fault: json!({"error": "ResourceNotFoundException", "resource_type": "configuration-set", "resource_id": "relay-events"}),
            failure: ResourceNotFound,
            kind: K::Config,
            scope: Scope::Carrier,
            attempts: 1,
            says: "[configuration-set relay-events]",
        },
        Case {
            fault: json!({"error": "ResourceNotFoundException", "resource_type": "pool", "resource_id": "pool-0123"}),
            failure: ResourceNotFound,
            kind: K::Config,
            scope: Scope::Carrier,
            attempts: 1,
            says: "[pool pool-0123]",
        },
        Case {
            fault: json!({"error": "ConflictException", "reason": "NO_ORIGINATION_IDENTITIES_FOUND"}),
            failure: Misconfigured,
            kind: K::Config,
            scope: Scope::Carrier,
            attempts: 1,
            says: "[reason NO_ORIGINATION_IDENTITIES_FOUND]",
        },
        Case {
            fault: json!({"error": "ConflictException", "reason": "RESOURCE_NOT_ACTIVE", "resource_type": "phone-number", "resource_id": "phone-abc"}),
            failure: Misconfigured,
            kind: K::Config,
            scope: Scope::Carrier,
            attempts: 1,
            says: "[phone-number phone-abc]",
        },
    ];
    let client = client(config(&peer_url()));
    for case in cases {
        let to = destination();
        fault(&to, case.fault.clone()).await;
        let e: SendFailure = client
            .send_text_message(&message(to, "hi"))
            .await
            .expect_err("a failure");
        let what = &case.fault;
        assert_eq!(e.failure, case.failure, "{what}");
        assert_eq!(e.error.kind, case.kind, "{what}");
        assert_eq!(e.scope(), case.scope, "{what}");
        assert_eq!(e.carrier_wide(), case.scope == Scope::Carrier, "{what}");
        assert!(
            e.error.message.contains(case.says),
            "{what}: {}",
            e.error.message
        );
        assert_eq!(requests(&to).await.len(), case.attempts, "{what}");
    }
}

#[tokio::test]
async fn throttling_is_retried_and_the_retry_is_sent() {
    register().await;
    let to = destination();
    fault(&to, json!({"error": "ThrottlingException", "times": 2})).await;
    let receipt = client(config(&peer_url()))
        .send(&message(to, "hi"))
        .await
        .expect("sent on the third attempt");
    let reqs = requests(&to).await;
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[2]["answer"]["MessageId"], receipt.sid.as_str());
}

#[tokio::test]
async fn a_slow_answer_is_maybe_sent_and_not_retried() {
    register().await;
    let to = destination();
    fault(&to, json!({"delay": 3})).await;
    let mut c = config(&peer_url());
    c.timeout = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let e = client(c)
        .send_text_message(&message(to, "hi"))
        .await
        .expect_err("timed out");
    assert_eq!(e.failure, Failure::NoAnswer);
    assert_eq!(e.error.kind, SendErrorKind::MaybeSent);
    assert!(e.carrier_wide());
    assert!(
        e.error.message.contains("may have been sent"),
        "{}",
        e.error.message
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The request did reach the service: it was maybe sent indeed, once.
    assert_eq!(requests(&to).await.len(), 1);
}

#[tokio::test]
async fn refused_connections_are_not_sent_and_retried() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let e = client(config(&format!("http://127.0.0.1:{port}")))
        .send_text_message(&message(destination(), "hi"))
        .await
        .expect_err("refused");
    assert_eq!(e.failure, Failure::NotSent);
    assert_eq!(e.error.kind, SendErrorKind::CarrierDown);
    assert!(e.carrier_wide());
    assert!(
        e.error.message.contains("could not connect"),
        "{}",
        e.error.message
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_peer_as_by_aws() {
    register().await;
    let mut c = config(&peer_url());
    c.credentials = SharedCredentialsProvider::new(Credentials::new(
        ACCESS_KEY,
        "not-the-secret",
        None,
        None,
        "test",
    ));
    let to = destination();
    let e = client(c)
        .send_text_message(&message(to, "hi"))
        .await
        .expect_err("bad signature");
    assert_eq!(e.failure, Failure::AccessDenied);
    assert_eq!(e.error.kind, SendErrorKind::Config);
    assert!(e.carrier_wide());
    assert!(
        e.error
            .message
            .contains("InvalidSignatureException (HTTP 403)"),
        "{}",
        e.error.message
    );
    assert!(requests(&to).await.is_empty(), "nothing was sent");
}

#[tokio::test]
async fn credentials_never_reach_errors_or_debug() {
    register().await;
    let to = destination();
    fault(
        &to,
        json!({"error": "ValidationException", "reason": "OTHER", "message": "echo {token} and more"}),
    )
    .await;
    let c = config(&peer_url());
    let shown = format!("{c:?} {c}");
    let client = client(c);
    let e = client
        .send_text_message(&message(to, "hi"))
        .await
        .expect_err("refused");
    for text in [
        shown,
        format!("{client:?} {client}"),
        e.to_string(),
        format!("{e:?}"),
        serde_json::to_string(&e.error).expect("JSON"),
    ] {
        assert!(!text.contains(SECRET_KEY), "{text}");
        assert!(!text.contains(SESSION_TOKEN), "{text}");
    }
    assert!(
        e.error.message.contains("echo [redacted] and more"),
        "{}",
        e.error.message
    );
}
