//! Two carriers end to end, on the real binary: Twilio failing (a fake
//! Twilio REST API in the test, answering 503, 20003 or a 30007 delivery
//! failure) and AWS End User Messaging SMS taking the same text (the fake
//! `pinpoint-sms-voice-v2` endpoint `./scripts/test` starts, which checks
//! every request against botocore's service model and its SigV4
//! signature; its address in `QDN_TEST_SMS_VOICE_URL`).
//!
//! AWS's two-way texts and delivery events arrive over SNS, signed with a
//! certificate the test makes. The binary fetches that certificate from
//! `https://sns.us-east-1.amazonaws.com/…pem` as in production: the test
//! runs an HTTPS proxy (`HTTPS_PROXY`) whose tunnel to that host ends at a
//! TLS server of the test's, with a server certificate issued by a CA the
//! binary is told to trust (`SSL_CERT_FILE`). Nothing in the binary is
//! switched for the test.

use std::hash::{BuildHasher as _, Hasher as _, RandomState};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use qdn_relay_aws_sms::testing::{SMS_EVENT, SNS_NOTIFICATION, SnsSigner, TWO_WAY_SMS};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{ACCOUNT, CUSTOMER, LINE, Server, free_port, sid};

/// The line's AWS number.
const AWS_NUMBER: &str = "+16195550900";
const AWS_KEY: &str = "AKIDRELAYE2E";
const AWS_SECRET: &str = "relay-e2e-secret-7c41";
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:qdn-relay-e2e";
const SNS_HOST: &str = "sns.us-east-1.amazonaws.com";
const CERT_PATH: &str = "/SimpleNotificationService-0e2e5c0ffee0123456789abcdef01234.pem";
const CONFIGURATION_SET: &str = "relay-e2e-events";

/// Dispatcher numbers of this test's own: the peer keys what it records by
/// destination and is shared by every test of the suite.
fn dispatchers() -> (String, String) {
    let n = RandomState::new().build_hasher().finish() % 7_000_000 + 2_000_000;
    (format!("+1858{n:07}"), format!("+1760{n:07}"))
}

fn peer_url() -> String {
    match std::env::var("QDN_TEST_SMS_VOICE_URL") {
        Ok(v) if !v.trim().is_empty() => v.trim_end_matches('/').to_owned(),
        _ => panic!(
            "QDN_TEST_SMS_VOICE_URL is not set: run the suite with ./scripts/test, which starts the fake pinpoint-sms-voice-v2 endpoint"
        ),
    }
}

async fn peer(method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", peer_url()));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("the sms-voice peer");
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.json().await.unwrap_or(Value::Null)
}

/// The valid `SendTextMessage` requests the peer got for `to`.
async fn aws_sends(to: &str) -> Vec<Value> {
    let path = format!(
        "/_peer/requests?destination=%2B{}",
        to.trim_start_matches('+')
    );
    match peer(reqwest::Method::GET, &path, None).await {
        Value::Array(v) => v,
        other => panic!("requests: {other}"),
    }
}

/// What the fake Twilio answers to a `Messages.json` create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Twilio {
    /// 201 with a queued message.
    Accepts,
    /// 503: Twilio is down (carrier-wide, nothing was sent).
    Down,
    /// 401 with error 20003: the account's credentials are refused.
    AuthFails,
    /// 500: Twilio failed, and may or may not have sent it.
    Errors,
}

/// A create's form fields, in order.
type Form = Vec<(String, String)>;

/// A Twilio REST API on loopback whose answer the test sets, recording
/// every create it is sent.
#[derive(Clone)]
struct FakeTwilio {
    url: String,
    mode: Arc<Mutex<Twilio>>,
    creates: Arc<Mutex<Vec<Form>>>,
}

impl FakeTwilio {
    async fn start(mode: Twilio) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let fake = Self {
            url,
            mode: Arc::new(Mutex::new(mode)),
            creates: Arc::new(Mutex::new(Vec::new())),
        };
        let state = fake.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, body: Bytes| {
            let state = state.clone();
            async move { state.answer(&uri, &body) }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    fn set(&self, mode: Twilio) {
        *self.mode.lock().expect("mode") = mode;
    }

    /// The creates sent to `to`, each as its form fields.
    fn creates_to(&self, to: &str) -> Vec<Form> {
        self.creates
            .lock()
            .expect("creates")
            .iter()
            .filter(|f| f.iter().any(|(k, v)| k == "To" && v == to))
            .cloned()
            .collect()
    }

    fn answer(&self, uri: &Uri, body: &[u8]) -> axum::response::Response {
        let expected = format!("/2010-04-01/Accounts/{ACCOUNT}/Messages.json");
        if uri.path() != expected {
            return (StatusCode::NOT_FOUND, format!("no route {}", uri.path())).into_response();
        }
        let form: Form = form_urlencoded::parse(body).into_owned().collect();
        let field = |k: &str| {
            form.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let (to, from) = (field("To"), field("From"));
        let n = {
            let mut creates = self.creates.lock().expect("creates");
            creates.push(form.clone());
            creates.len()
        };
        let json_answer = |status: StatusCode, v: Value| {
            (
                status,
                [("content-type", "application/json")],
                v.to_string(),
            )
                .into_response()
        };
        match *self.mode.lock().expect("mode") {
            Twilio::Accepts => json_answer(
                StatusCode::CREATED,
                json!({
                    "sid": format!("SM{:032x}", 0xe2e0_0000_u64 + n as u64),
                    "account_sid": ACCOUNT,
                    "to": to,
                    "from": from,
                    "body": field("Body"),
                    "status": "queued",
                    "num_segments": "1",
                    "direction": "outbound-api",
                    "api_version": "2010-04-01",
                }),
            ),
            Twilio::Down => json_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"code": 20503, "message": "Service Unavailable", "status": 503}),
            ),
            Twilio::Errors => json_answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"code": 20500, "message": "Internal Server Error", "status": 500}),
            ),
            Twilio::AuthFails => json_answer(
                StatusCode::UNAUTHORIZED,
                json!({
                    "code": 20003,
                    "message": "Authenticate",
                    "more_info": "https://www.twilio.com/docs/errors/20003",
                    "status": 401,
                }),
            ),
        }
    }
}

/// SNS's certificate host as the binary reaches it: an HTTPS proxy on
/// loopback tunnelling `CONNECT sns.us-east-1.amazonaws.com:443` to a TLS
/// server of the test's, which serves the signing certificate.
struct SnsHost {
    proxy: String,
    ca_file: std::path::PathBuf,
    fetches: Arc<Mutex<Vec<String>>>,
}

impl SnsHost {
    async fn start(dir: &Path, signing_cert_pem: String) -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "qdn-relay e2e CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA cert");
        let host_key = rcgen::KeyPair::generate().expect("host key");
        let host_cert = rcgen::CertificateParams::new(vec![SNS_HOST.to_owned()])
            .and_then(|p| p.signed_by(&host_key, &ca))
            .expect("host cert");
        let ca_file = dir.join("e2e-ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write the CA");

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_no_client_auth()
            .with_single_cert(
                vec![host_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(host_key.serialize_der().into()),
            )
            .expect("TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let fetches = Arc::new(Mutex::new(Vec::new()));

        let tls_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let tls_addr = tls_listener.local_addr().expect("addr");
        let seen = fetches.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = tls_listener.accept().await {
                let (acceptor, seen, pem) =
                    (acceptor.clone(), seen.clone(), signing_cert_pem.clone());
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Some(head) = read_head(&mut stream).await else {
                        return;
                    };
                    let path = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned();
                    seen.lock().expect("fetches").push(path.clone());
                    let answer = if path == CERT_PATH {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/x-x509-ca-cert\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{pem}",
                            pem.len()
                        )
                    } else {
                        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .to_owned()
                    };
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });

        let proxy_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = format!("http://{}", proxy_listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = proxy_listener.accept().await {
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut client).await else {
                        return;
                    };
                    // Only SNS's host is tunnelled; anything else is refused.
                    if !head.starts_with(&format!("CONNECT {SNS_HOST}:443 ")) {
                        let _ = client
                            .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        return;
                    }
                    let Ok(mut upstream) = TcpStream::connect(tls_addr).await else {
                        return;
                    };
                    if client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_ok()
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Self {
            proxy,
            ca_file,
            fetches,
        }
    }

    /// The certificate URL SNS messages name.
    fn cert_url() -> String {
        format!("https://{SNS_HOST}{CERT_PATH}")
    }

    fn fetched(&self) -> Vec<String> {
        self.fetches.lock().expect("fetches").clone()
    }
}

/// Reads an HTTP request's head (up to the blank line), byte by byte so
/// nothing after it is consumed.
async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || s.read_exact(&mut byte).await.is_err() {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

/// One server with both carriers, its fake Twilio and SNS's host.
struct TwoCarriers {
    server: Server,
    twilio: FakeTwilio,
    sns: SnsHost,
    signer: SnsSigner,
    primary: String,
    backup: String,
    _dir: tempfile::TempDir,
}

impl TwoCarriers {
    async fn start(twilio: Twilio, ack_timeout: &str) -> Self {
        Self::start_cooling(twilio, ack_timeout, "10m").await
    }

    /// [`Self::start`] with a carrier's cooling-off period of `cooling_off`.
    async fn start_cooling(twilio: Twilio, ack_timeout: &str, cooling_off: &str) -> Self {
        peer(
            reqwest::Method::POST,
            "/_peer/credentials",
            Some(json!({"access_key": AWS_KEY, "secret_key": AWS_SECRET})),
        )
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let signer = SnsSigner::new();
        let sns = SnsHost::start(dir.path(), signer.cert_pem.clone()).await;
        let twilio = FakeTwilio::start(twilio).await;
        let (primary, backup) = dispatchers();
        let extra = [
            ("RELAY_CHAIN", format!("{primary},{backup}")),
            ("QDN_AWS_SMS_NUMBER", AWS_NUMBER.to_owned()),
            (
                "QDN_AWS_SMS_CONFIGURATION_SET",
                CONFIGURATION_SET.to_owned(),
            ),
            ("QDN_AWS_SMS_SNS_TOPICS", TOPIC.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", AWS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET.to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("AWS_ENDPOINT_URL_PINPOINT_SMS_VOICE_V2", peer_url()),
            ("RELAY_CARRIER_COOLING_OFF", cooling_off.to_owned()),
            ("HTTPS_PROXY", sns.proxy.clone()),
            ("NO_PROXY", "127.0.0.1,localhost".to_owned()),
            ("SSL_CERT_FILE", sns.ca_file.display().to_string()),
        ];
        let server = Server::start_with(
            &dir.path().join("relay.db"),
            free_port(),
            ack_timeout,
            &twilio.url,
            &extra,
        )
        .await;
        Self {
            server,
            twilio,
            sns,
            signer,
            primary,
            backup,
            _dir: dir,
        }
    }

    /// Posts an SNS notification carrying `message`, signed, as SNS does.
    async fn sns(&self, id: &str, message: &Value) -> (u16, String) {
        let mut m: Value = serde_json::from_str(SNS_NOTIFICATION).expect("fixture");
        m["MessageId"] = id.into();
        m["TopicArn"] = TOPIC.into();
        m["Message"] = message.to_string().into();
        m["SignatureVersion"] = "2".into();
        m["SigningCertURL"] = SnsHost::cert_url().into();
        m["UnsubscribeURL"] =
            format!("https://{SNS_HOST}/?Action=Unsubscribe&SubscriptionArn={TOPIC}:e2e").into();
        self.signer.sign_message(&mut m);
        let res = reqwest::Client::new()
            .post(format!("{}/sms/aws/sns", self.server.url))
            .header("content-type", "text/plain; charset=UTF-8")
            .header("x-amz-sns-message-type", "Notification")
            .header("x-amz-sns-topic-arn", TOPIC)
            .body(m.to_string())
            .send()
            .await
            .expect("SNS post");
        (res.status().as_u16(), res.text().await.unwrap_or_default())
    }

    /// A dispatcher's text to the line's AWS number, over SNS.
    async fn two_way(&self, from: &str, inbound_id: &str, body: &str) -> (u16, String) {
        let mut t: Value = serde_json::from_str(TWO_WAY_SMS).expect("fixture");
        t["originationNumber"] = from.into();
        t["destinationNumber"] = AWS_NUMBER.into();
        t["inboundMessageId"] = inbound_id.into();
        t["messageBody"] = body.into();
        t["messageKeyword"] = "KEYWORD_123456789012".into();
        self.sns(&format!("sns-{inbound_id}"), &t).await
    }

    /// A delivery event for the AWS send `request` (as the peer recorded
    /// it): its message id and the context the relay gave it.
    async fn delivery_event(&self, id: &str, event_type: &str, request: &Value) -> (u16, String) {
        let mut e: Value = serde_json::from_str(SMS_EVENT).expect("fixture");
        e["eventType"] = event_type.into();
        e["messageStatus"] = event_type.trim_start_matches("TEXT_").into();
        e["messageType"] = "TRANSACTIONAL".into();
        e["isFinal"] = true.into();
        e["messageId"] = request["answer"]["MessageId"].clone();
        e["originationPhoneNumber"] = AWS_NUMBER.into();
        e["destinationPhoneNumber"] = request["body"]["DestinationPhoneNumber"].clone();
        e["context"] = request["body"]["Context"].clone();
        self.sns(id, &e).await
    }

    /// Checks that an SNS post was taken (2xx), with the server's log if
    /// not.
    fn taken(&self, code: u16, body: &str) {
        assert!(
            (200..300).contains(&code),
            "{code} {body}\n{}",
            self.server.logs()
        );
    }

    /// Waits until a forward of dispatch `key` to the primary went out
    /// through AWS; the status then.
    async fn forwarded_through_aws(&self, key: &str) -> Value {
        self.server
            .wait_for(key, "a forward through AWS", |v| {
                legs(v, &self.primary)
                    .iter()
                    .any(|l| via(l).0 == Some("aws-sms"))
            })
            .await
    }

    /// Waits until the peer has `n` sends to `to`.
    async fn wait_aws_sends(&self, to: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let sends = aws_sends(to).await;
            if sends.len() >= n {
                return sends;
            }
            assert!(
                Instant::now() < deadline,
                "{n} AWS sends to {to} expected, {} seen\n{}",
                sends.len(),
                self.server.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn legs<'a>(v: &'a Value, to: &str) -> Vec<&'a Value> {
    super::legs_to(v, to)
}

fn via(leg: &Value) -> (Option<&str>, Option<&str>) {
    (leg["via"]["carrier"].as_str(), leg["via"]["from"].as_str())
}

/// Checks one AWS send as the service sees it: from the line's AWS
/// number, transactional, with the configuration set, the dispatch and
/// leg in its context, and a signature the peer verified.
fn check_aws_send(send: &Value, dispatch: &Value, leg: &Value) {
    let body = &send["body"];
    assert_eq!(body["OriginationIdentity"], AWS_NUMBER, "{send}");
    assert_eq!(body["MessageType"], "TRANSACTIONAL", "{send}");
    assert_eq!(body["ConfigurationSetName"], CONFIGURATION_SET, "{send}");
    assert_eq!(
        body["Context"]["dispatch"], dispatch["dispatch_id"],
        "{send}"
    );
    assert_eq!(
        body["Context"]["leg"].as_str(),
        Some(leg["index"].to_string().as_str()),
        "{send}"
    );
    assert_eq!(send["signature_verified"], true, "{send}");
    assert_eq!(send["answer"]["status"], 200, "{send}");
}

#[tokio::test(flavor = "multi_thread")]
async fn twilio_down_sends_the_forward_through_aws_and_a_reply_over_sns_reaches_the_customer() {
    let t = TwoCarriers::start(Twilio::Down, "10m").await;
    let first = sid(0x0c_a001);
    let (code, body) = t
        .server
        .text(&first, CUSTOMER, "Dumpster overflowing")
        .await;
    assert_eq!(code, 200, "{body}");

    // Twilio answered 503: the same forward goes out through AWS at once.
    let v = t.forwarded_through_aws(&first).await;
    let forwards = legs(&v, &t.primary);
    assert_eq!(forwards.len(), 1, "one forward, not one per carrier: {v:#}");
    assert_eq!(via(forwards[0]), (Some("aws-sms"), Some(AWS_NUMBER)));
    assert_eq!(
        t.twilio.creates_to(&t.primary).len(),
        1,
        "Twilio was tried first"
    );
    let sends = t.wait_aws_sends(&t.primary, 1).await;
    assert_eq!(sends.len(), 1);
    check_aws_send(&sends[0], &v, forwards[0]);
    assert_eq!(
        forwards[0]["sid"], sends[0]["answer"]["MessageId"],
        "the leg carries AWS's message id"
    );
    assert!(
        sends[0]["body"]["MessageBody"]
            .as_str()
            .is_some_and(|b| b.contains("Dumpster overflowing")),
        "{}",
        sends[0]
    );
    assert!(legs(&v, &t.backup).is_empty(), "nobody escalated: {v:#}");

    // Twilio is back; the primary answers to the AWS number, over SNS.
    t.twilio.set(Twilio::Accepts);
    let reply = || {
        t.two_way(
            &t.primary,
            "5b0a6f4e-e2e0-4c1d-9a11-000000000001",
            "On my way",
        )
    };
    let (code, body) = reply().await;
    t.taken(code, &body);
    let v = t
        .server
        .wait_for(&first, "the reply to the customer", |v| {
            legs(v, CUSTOMER).iter().any(|l| super::accepted(l))
        })
        .await;
    assert_eq!(v["final_status"], "acked", "{v:#}");
    assert_eq!(v["ack"]["by"]["id"], t.primary.as_str());
    let replies = legs(&v, CUSTOMER);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["body"], "On my way");
    assert_eq!(
        via(replies[0]),
        (Some("twilio"), Some(LINE)),
        "the customer sees the business number"
    );
    let to_customer = t.twilio.creates_to(CUSTOMER);
    assert_eq!(to_customer.len(), 1);
    assert!(
        to_customer[0].iter().any(|(k, v)| k == "From" && v == LINE),
        "{to_customer:?}"
    );
    assert!(
        aws_sends(CUSTOMER).await.is_empty(),
        "nothing to the customer through AWS"
    );

    // SNS delivers at least once: the same message again changes nothing.
    let version = v["version"].as_u64();
    let (code, body) = reply().await;
    t.taken(code, &body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = t.server.status(&first).await.expect("status");
    assert_eq!(again["version"].as_u64(), version, "{again:#}");
    assert_eq!(t.twilio.creates_to(CUSTOMER).len(), 1, "one reply");

    // The certificate came from SNS's host, once (then cached).
    assert_eq!(t.sns.fetched(), [CERT_PATH]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_account_error_fails_over_and_an_aws_delivery_failure_reaches_the_backup_at_once() {
    let t = TwoCarriers::start(Twilio::AuthFails, "10m").await;
    let first = sid(0x0c_a002);
    let (code, body) = t.server.text(&first, CUSTOMER, "Gate code?").await;
    assert_eq!(code, 200, "{body}");

    // 20003 is the account's problem, not the primary's: AWS sends it.
    let v = t.forwarded_through_aws(&first).await;
    assert!(
        v["unreachable"].as_array().is_none_or(Vec::is_empty),
        "an account error never makes a dispatcher unreachable: {v:#}"
    );
    let forward = legs(&v, &t.primary)[0].clone();
    let sends = t.wait_aws_sends(&t.primary, 1).await;
    check_aws_send(&sends[0], &v, &forward);

    // AWS reports the primary's carrier unreachable: the backup is texted
    // at once, not after the 10-minute timeout, and Twilio (cooling off)
    // is passed over for it.
    let started = Instant::now();
    let (code, body) = t
        .delivery_event("evt-unreachable-1", "TEXT_CARRIER_UNREACHABLE", &sends[0])
        .await;
    t.taken(code, &body);
    let v = t
        .server
        .wait_for(&first, "the backup", |v| {
            legs(v, &t.backup)
                .iter()
                .any(|l| super::accepted(l) || via(l).0.is_some())
        })
        .await;
    assert!(started.elapsed() < Duration::from_secs(15), "at once");
    assert_eq!(v["final_status"], "backup_triggered", "{v:#}");
    let primary = &legs(&v, &t.primary)[0];
    assert_eq!(primary["status"], "undelivered", "{v:#}");
    assert_eq!(
        (
            primary["error_code"].as_u64(),
            primary["error_class"].as_str()
        ),
        (Some(904), Some("retry_later")),
        "{v:#}"
    );
    assert!(
        v["unreachable"].as_array().is_none_or(Vec::is_empty),
        "a transient failure in the primary's network does not bar the primary: {v:#}"
    );
    assert_eq!(via(legs(&v, &t.backup)[0]).0, Some("aws-sms"));
    assert!(
        t.twilio.creates_to(&t.backup).is_empty(),
        "Twilio is cooling off: the backup's text went to AWS first"
    );
    let backup_sends = t.wait_aws_sends(&t.backup, 1).await;
    check_aws_send(&backup_sends[0], &v, legs(&v, &t.backup)[0]);

    // The same event again, and an event out of order after it, change
    // nothing.
    let version = v["version"].as_u64();
    let (code, body) = t
        .delivery_event("evt-unreachable-1", "TEXT_CARRIER_UNREACHABLE", &sends[0])
        .await;
    t.taken(code, &body);
    let (code, body) = t
        .delivery_event("evt-pending-late", "TEXT_PENDING", &sends[0])
        .await;
    t.taken(code, &body);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = t.server.status(&first).await.expect("status");
    assert_eq!(again["version"].as_u64(), version, "{again:#}");
    assert_eq!(
        aws_sends(&t.backup).await.len(),
        1,
        "one text to the backup"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_twilio_30007_filtering_callback_sends_the_same_forward_through_aws() {
    let t = TwoCarriers::start(Twilio::Accepts, "10m").await;
    let first = sid(0x0c_a003);
    let (code, body) = t.server.text(&first, CUSTOMER, "Pickup missed").await;
    assert_eq!(code, 200, "{body}");
    let v = t
        .server
        .wait_for(&first, "the forward through Twilio", |v| {
            legs(v, &t.primary).iter().any(|l| super::accepted(l))
        })
        .await;
    let twilio_leg = legs(&v, &t.primary)[0].clone();
    assert_eq!(via(&twilio_leg), (Some("twilio"), Some(LINE)));
    let leg_sid = twilio_leg["sid"].as_str().expect("sid").to_owned();

    // The carrier filtered the Twilio number: the same text to the same
    // dispatcher goes out through AWS; nobody escalates.
    let (code, body) = t
        .server
        .callback(&leg_sid, "undelivered", Some("30007"))
        .await;
    assert_eq!(code, 204, "{body}");
    let sends = t.wait_aws_sends(&t.primary, 1).await;
    let v = t.forwarded_through_aws(&first).await;
    let forwards = legs(&v, &t.primary);
    assert_eq!(forwards.len(), 2, "{v:#}");
    assert_eq!(forwards[0]["error_code"], 30007);
    assert_eq!(forwards[1]["body"], forwards[0]["body"], "the same text");
    check_aws_send(&sends[0], &v, forwards[1]);
    assert!(legs(&v, &t.backup).is_empty(), "nobody escalated: {v:#}");
    assert!(
        v["unreachable"].as_array().is_none_or(Vec::is_empty),
        "filtering of the sending number is not the dispatcher's: {v:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_twilio_500_fails_over_to_aws_and_twilio_is_back_after_the_probe() {
    // Long enough that the second text surely comes while Twilio cools
    // off, on a loaded machine too.
    let t = TwoCarriers::start_cooling(Twilio::Errors, "10m", "8s").await;
    let first = sid(0x0c_a004);
    let sent_first = Instant::now();
    let (code, body) = t.server.text(&first, CUSTOMER, "Truck blocked").await;
    assert_eq!(code, 200, "{body}");
    let v = t.forwarded_through_aws(&first).await;
    let forwards = legs(&v, &t.primary);
    assert_eq!(forwards.len(), 1, "{v:#}");
    let sends = t.wait_aws_sends(&t.primary, 1).await;
    check_aws_send(&sends[0], &v, forwards[0]);
    // Twilio may have sent it: it is never asked again for this text, and
    // is passed over for the next one while it cools off.
    t.twilio.set(Twilio::Accepts);
    let second = sid(0x0c_a005);
    let (code, body) = t.server.text(&second, "+16195550188", "Also blocked").await;
    assert_eq!(code, 200, "{body}");
    t.wait_aws_sends(&t.primary, 2).await;
    assert_eq!(
        t.twilio.creates_to(&t.primary).len(),
        1,
        "one try through Twilio, for the first text only"
    );

    // After the cooling-off period the next text tries Twilio first (the
    // probe); it answers, so Twilio is back in service.
    tokio::time::sleep_until((sent_first + Duration::from_millis(9_500)).into()).await;
    let third = sid(0x0c_a006);
    let (code, body) = t.server.text(&third, "+16195550189", "Now?").await;
    assert_eq!(code, 200, "{body}");
    let v = t
        .server
        .wait_for(&third, "the probe through Twilio", |v| {
            legs(v, &t.primary).iter().any(|l| super::accepted(l))
        })
        .await;
    assert_eq!(
        via(legs(&v, &t.primary)[0]),
        (Some("twilio"), Some(LINE)),
        "{v:#}"
    );
    assert_eq!(t.twilio.creates_to(&t.primary).len(), 2);
    assert_eq!(aws_sends(&t.primary).await.len(), 2, "nothing more to AWS");
}
