//! The router, driven with real HTTP requests through `tower::ServiceExt`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use qdn_relay_app::{DynRelay, HttpConfig};
use qdn_relay_axum::{AppState, EventHub, MaintenanceSink, router};
use qdn_relay_core::testing::{CountingStore, MemoryJobs, RecordingProvider};
use qdn_relay_core::{
    Clock, FanoutSink, JobId, JobMessage, JobSyncMode, Jobs, JobsError, ManualClock, MemoryStore,
    Milestone, PhoneNumber, Policy, Relay, SendError, SendErrorKind, SmsProvider, State, Store,
    Timestamp,
};
use qdn_relay_twilio::{Secret, SignatureValidator};
use serde_json::Value;
use tower::ServiceExt;

#[cfg(feature = "serve")]
mod sweeper;

const TOKEN: &str = "test-auth-token";
const DASH: &str = "dashboard-token-0123456789";
const LINE: &str = "+16195550000";
const CUSTOMER: &str = "+16195550100";
const PRIMARY: &str = "+16195550101";
const BACKUP: &str = "+18583354807";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

fn n(s: &str) -> PhoneNumber {
    s.parse().expect("number")
}

struct App {
    router: Router,
    store: Arc<MemoryStore>,
    provider: Arc<RecordingProvider>,
    clock: Arc<ManualClock>,
    relay: Arc<DynRelay>,
    hub: EventHub,
    _dir: tempfile::TempDir,
    maintenance: std::path::PathBuf,
}

fn app_with(config: HttpConfig) -> App {
    build_app(config, None)
}

fn build_app(config: HttpConfig, jobs: Option<Arc<MemoryJobs>>) -> App {
    build_app_with(
        config,
        jobs.map(|j| j as Arc<dyn Jobs>),
        JobSyncMode::Inline,
    )
}

mod deferred;
mod sns;

fn build_app_with(config: HttpConfig, jobs: Option<Arc<dyn Jobs>>, mode: JobSyncMode) -> App {
    build_app_full(config, jobs, mode, None)
}

fn build_app_full(
    config: HttpConfig,
    jobs: Option<Arc<dyn Jobs>>,
    mode: JobSyncMode,
    sns: Option<(qdn_relay_axum::SnsIntake, Policy)>,
) -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let maintenance = dir.path().join("maintenance.json");
    let store = Arc::new(MemoryStore::new());
    let provider = Arc::new(RecordingProvider::new());
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_767_603_600_000)));
    let hub = EventHub::default();
    let sink = FanoutSink(vec![
        Box::new(hub.clone()),
        Box::new(MaintenanceSink::new(maintenance.clone())),
    ]);
    let (sns, policy) = match sns {
        Some((intake, policy)) => (Some(intake), policy),
        None => (
            None,
            Policy::simple(n(PRIMARY), n(BACKUP), Duration::from_secs(900)).expect("policy"),
        ),
    };
    let mut builder = Relay::<dyn Store, dyn SmsProvider, dyn Clock>::builder(
        store.clone() as Arc<dyn Store>,
        provider.clone() as Arc<dyn SmsProvider>,
        clock.clone() as Arc<dyn Clock>,
    )
    .line(n(LINE), policy)
    .sink(Arc::new(sink))
    .seed(1)
    .job_sync_mode(mode);
    if let Some(jobs) = jobs {
        builder = builder.jobs(jobs);
    }
    let relay: Arc<DynRelay> = Arc::new(builder.build());
    let state = AppState::new(
        relay.clone(),
        SignatureValidator::new(Secret::new(TOKEN)),
        hub.clone(),
        config,
    )
    .expect("state");
    let state = match sns {
        Some(intake) => state.with_sns(intake),
        None => state,
    };
    App {
        router: router(state),
        store,
        provider,
        clock,
        relay,
        hub,
        _dir: dir,
        maintenance,
    }
}

fn config() -> HttpConfig {
    HttpConfig {
        dashboard_token: Some(Secret::new(DASH)),
        cors_origins: vec!["https://dash.example.com".into()],
        body_limit: 8 * 1024,
        ..HttpConfig::default()
    }
}

fn app() -> App {
    app_with(config())
}

fn form(pairs: &[(&str, &str)]) -> (Vec<(String, String)>, String) {
    let owned: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let body = form_encode(&owned);
    (owned, body)
}

fn form_encode(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn signed(path: &str, pairs: &[(&str, &str)]) -> Request<Body> {
    signed_at("http://relay.test", path, "relay.test", pairs)
}

fn signed_at(base: &str, path: &str, host: &str, pairs: &[(&str, &str)]) -> Request<Body> {
    let (owned, body) = form(pairs);
    let sig =
        SignatureValidator::new(Secret::new(TOKEN)).sign_form(&format!("{base}{path}"), &owned);
    Request::post(path)
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", sig)
        .body(Body::from(body))
        .expect("request")
}

fn text(sid: &str, from: &str, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MessageSid", sid.to_owned()),
        ("AccountSid", ACCOUNT.to_owned()),
        ("From", from.to_owned()),
        ("To", LINE.to_owned()),
        ("Body", body.to_owned()),
        ("NumMedia", "0".to_owned()),
    ]
}

fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn sid(n: u32) -> String {
    format!("SM{n:032x}")
}

async fn send(app: &App, req: Request<Body>) -> (StatusCode, String, axum::http::HeaderMap) {
    let res = app.router.clone().oneshot(req).await.expect("response");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), headers)
}

fn dash(method: &str, uri: &str, body: Option<Value>) -> Request<Body> {
    let b = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {DASH}"));
    match body {
        Some(v) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string()))
            .expect("req"),
        None => b.body(Body::empty()).expect("req"),
    }
}

async fn inbound(app: &App, n: u32, from: &str, body: &str) -> (StatusCode, String) {
    let t = text(&sid(n), from, body);
    let (s, b, _) = send(app, signed("/sms/inbound", &pairs(&t))).await;
    (s, b)
}

#[tokio::test]
async fn signed_inbound_is_forwarded_and_answered_with_empty_twiml() {
    let app = app();
    let (status, body) = inbound(&app, 1, CUSTOMER, "Need a dumpster").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("<Response/>") || body.contains("<Response></Response>"),
        "{body}"
    );
    assert_eq!(app.store.len(), 1);
    let sent = app.provider.accepted_to(n(PRIMARY));
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]
            .message
            .body
            .ends_with("+16195550100: Need a dumpster")
    );
}

#[tokio::test]
async fn missing_or_forged_signature_is_403_and_stores_nothing() {
    let app = app();
    let t = text(&sid(1), CUSTOMER, "hello");
    let (_, body) = form(&pairs(&t));
    let unsigned = Request::post("/sms/inbound")
        .header(header::HOST, "relay.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.clone()))
        .expect("req");
    let (s, b, _) = send(&app, unsigned).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert!(b.contains("invalid_signature"));
    // Signed for another body.
    let mut forged = signed("/sms/inbound", &pairs(&t));
    *forged.body_mut() = Body::from(body.replace("hello", "hellO"));
    let (s, _, _) = send(&app, forged).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // Signed for another host.
    let other_host = signed_at("http://evil.test", "/sms/inbound", "relay.test", &pairs(&t));
    let (s, _, _) = send(&app, other_host).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(app.store.is_empty());
    assert!(app.provider.sent().is_empty());
}

#[tokio::test]
async fn the_public_url_wins_over_the_host_header() {
    let app = app_with(HttpConfig {
        public_url: Some("https://relay.example.com/prod/".into()),
        ..HttpConfig::default()
    });
    let t = text(&sid(1), CUSTOMER, "hello");
    // Twilio signed the public URL; the request arrives with an internal Host.
    let req = signed_at(
        "https://relay.example.com/prod",
        "/sms/inbound",
        "10.0.0.7:8080",
        &pairs(&t),
    );
    let (s, b, _) = send(&app, req).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let req = signed_at(
        "http://10.0.0.7:8080",
        "/sms/inbound",
        "10.0.0.7:8080",
        &pairs(&text(&sid(2), CUSTOMER, "x")),
    );
    let (s, _, _) = send(&app, req).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "the Host header is not trusted when a public URL is set"
    );
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_and_change_nothing() {
    let app = app();
    // Missing From, signed.
    let mut t = text(&sid(1), CUSTOMER, "hello");
    t.retain(|(k, _)| *k != "From");
    let (s, b, _) = send(&app, signed("/sms/inbound", &pairs(&t))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let v: Value = serde_json::from_str(&b).expect("json error");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("From"),
        "{b}"
    );
    // Invalid number.
    let t = text(&sid(2), "6195550100", "hello");
    let (s, b, _) = send(&app, signed("/sms/inbound", &pairs(&t))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // JSON to a Twilio route.
    let req = Request::post("/sms/inbound")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .expect("req");
    let (s, _, _) = send(&app, req).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Over the body limit.
    let big = "x".repeat(20 * 1024);
    let t = text(&sid(3), CUSTOMER, &big);
    let (s, b, _) = send(&app, signed("/sms/inbound", &pairs(&t))).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
    // To an unknown business line.
    let mut t = text(&sid(4), CUSTOMER, "hello");
    t[3].1 = "+15555550123".into();
    let (s, b, _) = send(&app, signed("/sms/inbound", &pairs(&t))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(b.contains("unknown_line"));
    assert!(app.store.is_empty());
    assert!(app.provider.sent().is_empty());
}

#[tokio::test]
async fn the_same_message_sid_twice_forwards_once() {
    let app = app();
    for _ in 0..3 {
        let (s, _) = inbound(&app, 1, CUSTOMER, "hello").await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(app.provider.accepted_to(n(PRIMARY)).len(), 1);
}

#[tokio::test]
async fn a_failed_status_callback_escalates_at_once() {
    let app = app();
    inbound(&app, 1, CUSTOMER, "hello").await;
    let leg_sid = app.provider.accepted_to(n(PRIMARY))[0]
        .result
        .clone()
        .expect("sid")
        .to_string();
    let cb = [
        ("MessageSid", leg_sid.as_str()),
        ("AccountSid", ACCOUNT),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30003"),
        ("From", LINE),
        ("To", PRIMARY),
    ];
    for _ in 0..2 {
        let (s, b, _) = send(&app, signed("/sms/status", &cb)).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    }
    assert_eq!(
        app.provider.accepted_to(n(BACKUP)).len(),
        1,
        "once, despite the retried callback"
    );
    // A callback for a message the relay never sent.
    let unknown = [
        ("MessageSid", "SMffffffffffffffffffffffffffffffff"),
        ("AccountSid", ACCOUNT),
        ("MessageStatus", "delivered"),
    ];
    let (s, _, _) = send(&app, signed("/sms/status", &unknown)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_status_callback_naming_its_leg_is_placed_even_without_a_recorded_sid() {
    let app = app();
    // The send's answer is lost (a timeout after the request went out).
    app.provider.script(
        n(PRIMARY),
        [Err(SendError::new(SendErrorKind::MaybeSent, "timeout"))],
    );
    inbound(&app, 1, CUSTOMER, "hello").await;
    let d = app.store.all()[0].clone();
    assert_eq!(d.legs()[0].sid, None);
    let cb = |status: &'static str| {
        vec![
            ("MessageSid", "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"),
            ("AccountSid", ACCOUNT),
            ("MessageStatus", status),
            ("ErrorCode", "30003"),
            ("From", LINE),
            ("To", PRIMARY),
        ]
    };
    // Bad leg references are refused and change nothing.
    for q in [
        format!("dispatch={}", d.id()),
        "leg=0".to_owned(),
        "dispatch=nope&leg=0".to_owned(),
        format!("dispatch={}&leg=-1", d.id()),
    ] {
        let (s, b, _) = send(
            &app,
            signed(&format!("/sms/status?{q}"), &cb("undelivered")),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {b}");
    }
    // A signature over another URL (the leg changed in transit) is refused.
    let (owned, body) = form(&cb("undelivered"));
    let sig = SignatureValidator::new(Secret::new(TOKEN)).sign_form(
        &format!("http://relay.test/sms/status?dispatch={}&leg=1", d.id()),
        &owned,
    );
    let forged = Request::post(format!("/sms/status?dispatch={}&leg=0", d.id()))
        .header(header::HOST, "relay.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", sig)
        .body(Body::from(body))
        .expect("request");
    let (s, _, _) = send(&app, forged).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(app.store.all()[0].version(), d.version());

    let path = format!("/sms/status?dispatch={}&leg=0", d.id());
    for _ in 0..2 {
        let (s, b, _) = send(&app, signed(&path, &cb("undelivered"))).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    }
    let d = app.store.all()[0].clone();
    assert_eq!(
        d.legs()[0].sid.as_ref().map(ToString::to_string).as_deref(),
        Some("SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1")
    );
    assert_eq!(
        app.provider.accepted_to(n(BACKUP)).len(),
        1,
        "the failed primary escalates at once, once"
    );
}

#[tokio::test]
async fn a_dispatcher_reply_reaches_the_customer_and_acks() {
    let app = app();
    inbound(&app, 1, CUSTOMER, "hello").await;
    // Via the business line's inbound webhook...
    let (s, _) = inbound(&app, 2, PRIMARY, "On my way").await;
    assert_eq!(s, StatusCode::OK);
    // ... and via the reply webhook.
    let t = text(&sid(3), PRIMARY, "10 minutes out");
    let (s, b, _) = send(&app, signed("/sms/reply", &pairs(&t))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let to_customer: Vec<String> = app
        .provider
        .accepted_to(n(CUSTOMER))
        .into_iter()
        .map(|s| s.message.body)
        .collect();
    assert_eq!(
        to_customer,
        vec!["On my way".to_owned(), "10 minutes out".to_owned()]
    );
    let d = &app.store.all()[0];
    assert_eq!(d.state(), State::Acked);
}

#[tokio::test]
async fn a_dispatcher_with_no_open_dispatch_is_told_in_twiml() {
    let app = app();
    let (s, b) = inbound(&app, 1, PRIMARY, "hello?").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        b.contains("<Message>") && b.contains("no open dispatch"),
        "{b}"
    );
    assert!(app.provider.sent().is_empty());
}

#[tokio::test]
async fn dashboard_routes_need_the_bearer_token() {
    let app = app();
    inbound(&app, 1, CUSTOMER, "hello").await;
    let id = app.store.all()[0].id().to_string();
    let uri = format!("/sms/dispatch-status/{id}");
    let (s, _, h) = send(&app, Request::get(&uri).body(Body::empty()).expect("req")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.get(header::WWW_AUTHENTICATE).map(|v| v.to_str().ok()),
        Some(Some("Bearer"))
    );
    let wrong = Request::get(&uri)
        .header(header::AUTHORIZATION, "Bearer nope-nope-nope-nope")
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&app, wrong).await.0, StatusCode::UNAUTHORIZED);
    let (s, b, _) = send(&app, dash("GET", &uri, None)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Without a configured token, dashboard routes are closed.
    let closed = app_with(HttpConfig::default());
    let (s, b, _) = send(&closed, dash("GET", "/sms/dispatches", None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b.contains("RELAY_DASHBOARD_TOKEN"));
}

#[tokio::test]
async fn status_json_by_id_tag_and_message_sid_with_seed_fields() {
    let app = app();
    inbound(&app, 1, CUSTOMER, "Need a dumpster").await;
    let d = app.store.all()[0].clone();
    for key in [d.id().to_string(), d.tag().to_string(), sid(1)] {
        let (s, b, _) = send(
            &app,
            dash("GET", &format!("/sms/dispatch-status/{key}"), None),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{key}: {b}");
        let v: Value = serde_json::from_str(&b).expect("json");
        assert_eq!(v["message_id"], sid(1));
        assert_eq!(v["customer_phone"], CUSTOMER);
        assert_eq!(v["body"], "Need a dumpster");
        assert_eq!(v["final_status"], "delivered");
        assert!(v["forwarded_to_primary_at"].is_string());
        assert!(v["primary_ack_at"].is_null());
        assert!(v["forwarded_to_backup_at"].is_null());
        assert!(v["legs"].is_array() && v["thread"].is_array() && v["events"].is_array());
    }
    let (s, b, _) = send(&app, dash("GET", "/sms/dispatch-status/SMnothing", None)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
}

/// A conversation longer than the record keeps: the status JSON is whole
/// (the first text and every leg are there, found by a moved text's
/// MessageSid too), and the list says where each record starts.
#[tokio::test]
async fn the_status_of_a_long_conversation_is_whole() {
    let app = app();
    inbound(&app, 1, CUSTOMER, "Need a dumpster").await;
    inbound(&app, 2, PRIMARY, "on my way").await;
    for i in 3..150 {
        let (s, _) = inbound(&app, i, CUSTOMER, &format!("still waiting {i}")).await;
        assert_eq!(s, StatusCode::OK);
    }
    let d = app.store.all()[0].clone();
    assert!(d.history().thread > 0, "texts moved out of the record");
    let (s, b, _) = send(
        &app,
        dash("GET", &format!("/sms/dispatch-status/{}", sid(1)), None),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["body"], "Need a dumpster");
    assert_eq!(v["message_id"], sid(1));
    let thread = v["thread"].as_array().expect("thread");
    let texts = thread.iter().filter(|e| e["sid"].is_string()).count();
    assert_eq!(texts, 149, "every text");
    assert_eq!(thread[0]["body"], "Need a dumpster");
    assert_eq!(
        (v["thread_from"].as_u64(), v["legs_from"].as_u64()),
        (Some(0), Some(0))
    );
    let legs = v["legs"].as_array().expect("legs");
    assert_eq!(legs.len() as u32, d.history().legs + d.legs().len() as u32);
    let (s, b, _) = send(&app, dash("GET", "/sms/dispatches?status=all", None)).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: Value = serde_json::from_str(&b).expect("json");
    let listed = &v["dispatches"][0];
    assert_eq!(
        listed["thread_from"].as_u64(),
        Some(u64::from(d.history().thread))
    );
    assert_eq!(
        listed["body"], "Need a dumpster",
        "the first text, kept aside"
    );
}

#[tokio::test]
async fn status_by_job_id_links_the_jobs_other_dispatches_and_lists_by_job() {
    let jobs = Arc::new(MemoryJobs::new());
    let job: JobId = "dumpster 1042".parse().expect("job id");
    jobs.open_job(n(LINE), n(CUSTOMER), job.clone());
    let app = build_app(config(), Some(jobs.clone()));
    inbound(&app, 1, CUSTOMER, "first").await;
    let first = app.store.all()[0].clone();
    assert_eq!(first.job_id(), Some(&job));
    let (s, b, _) = send(
        &app,
        dash(
            "POST",
            &format!("/sms/dispatches/{}/close", first.id()),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    inbound(&app, 2, CUSTOMER, "second").await;

    // By job id (URL-encoded): the most recent dispatch, linking the other.
    let (s, b, _) = send(
        &app,
        dash("GET", "/sms/dispatch-status/dumpster%201042", None),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["job_id"], "dumpster 1042");
    assert_eq!(v["body"], "second");
    assert_eq!(
        v["job_dispatches"][0]["dispatch_id"],
        first.id().to_string()
    );
    assert_eq!(v["job_dispatches"][0]["state"], "closed");
    assert_eq!(v["job_sync"]["owed"], 0);
    assert_eq!(v["job_sync"]["failures"], 0);

    // Listed by job: both, whatever their state, newest first.
    let (s, b, _) = send(
        &app,
        dash("GET", "/sms/dispatches?job_id=dumpster%201042", None),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: Value = serde_json::from_str(&b).expect("json");
    let listed: Vec<&str> = v["dispatches"]
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["body"].as_str().expect("body"))
        .collect();
    assert_eq!(listed, ["second", "first"]);
    let (_, b, _) = send(
        &app,
        dash(
            "GET",
            "/sms/dispatches?job_id=dumpster%201042&status=open",
            None,
        ),
    )
    .await;
    let v: Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["dispatches"].as_array().map(Vec::len), Some(1));
    let (s, b, _) = send(&app, dash("GET", "/sms/dispatches?job_id=%20bad", None)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b, _) = send(&app, dash("GET", "/sms/dispatches?jobid=x", None)).await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "unknown parameters are refused: {b}"
    );

    // The job's message log has each text once.
    let record = jobs.job(&job).expect("job");
    let bodies: Vec<&str> = record.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies.len(), 4, "{bodies:?}");
}

/// A job system whose calls wait until the test opens the gate.
struct Gated {
    inner: MemoryJobs,
    open: tokio::sync::watch::Receiver<bool>,
}

impl Gated {
    async fn wait(&self) {
        let mut open = self.open.clone();
        let _ = open.wait_for(|o| *o).await;
    }
}

#[async_trait::async_trait]
impl Jobs for Gated {
    async fn resolve(
        &self,
        line: PhoneNumber,
        customer: PhoneNumber,
        at: Timestamp,
    ) -> Result<Option<JobId>, JobsError> {
        self.wait().await;
        self.inner.resolve(line, customer, at).await
    }
    async fn append_message(&self, job: &JobId, m: &JobMessage) -> Result<(), JobsError> {
        self.wait().await;
        self.inner.append_message(job, m).await
    }
    async fn milestone(&self, job: &JobId, m: &Milestone) -> Result<(), JobsError> {
        self.wait().await;
        self.inner.milestone(job, m).await
    }
}

#[tokio::test]
async fn in_background_mode_webhooks_are_answered_before_the_job_system_is() {
    let (gate, open) = tokio::sync::watch::channel(false);
    let jobs = Arc::new(Gated {
        inner: MemoryJobs::new(),
        open,
    });
    let job: JobId = "J-bg".parse().expect("job id");
    jobs.inner.open_job(n(LINE), n(CUSTOMER), job.clone());
    let app = build_app_with(config(), Some(jobs.clone()), JobSyncMode::Background);
    // The job system does not answer, yet the webhook is answered and the
    // forward is sent.
    let (s, b) = inbound(&app, 1, CUSTOMER, "hello").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(app.provider.accepted_to(n(PRIMARY)).len(), 1);
    assert!(jobs.inner.job(&job).expect("job").messages.is_empty());
    // Once it answers, the spawned sync lands the texts.
    gate.send(true).expect("gate");
    for _ in 0..1000 {
        if jobs.inner.job(&job).expect("job").messages.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let record = jobs.inner.job(&job).expect("job");
    assert_eq!(record.messages.len(), 2, "{:#?}", record.messages);
    assert_eq!(app.store.all()[0].job_id(), Some(&job));
}

#[tokio::test]
async fn a_dispatch_can_be_linked_to_a_job_from_the_dashboard() {
    let jobs = Arc::new(MemoryJobs::new());
    let app = build_app(config(), Some(jobs.clone()));
    inbound(&app, 1, CUSTOMER, "no job yet").await;
    let d = app.store.all()[0].clone();
    assert_eq!(d.job_id(), None);
    let job: JobId = "J-9".parse().expect("job id");
    jobs.open_job(n(LINE), n("+15550000000"), job.clone());
    let uri = format!("/sms/dispatches/{}/link", d.tag());
    // Bad input changes nothing.
    for bad in [
        serde_json::json!({}),
        serde_json::json!({"job_id": ""}),
        serde_json::json!({"job_id": "x", "extra": 1}),
    ] {
        let (s, b, _) = send(&app, dash("POST", &uri, Some(bad))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    }
    assert_eq!(app.store.all()[0].version(), d.version());
    let (s, b, _) = send(
        &app,
        dash("POST", &uri, Some(serde_json::json!({"job_id": "J-9"}))),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["job_id"], "J-9");
    assert_eq!(jobs.job(&job).expect("job").messages.len(), 2);
}

#[tokio::test]
async fn dashboard_actions_ack_reply_close_and_list() {
    let app = app();
    inbound(&app, 1, CUSTOMER, "hello").await;
    inbound(&app, 2, "+16195550111", "hi").await;
    let (s, b, _) = send(&app, dash("GET", "/sms/dispatches?status=open", None)).await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["dispatches"].as_array().map(Vec::len), Some(2));
    let (s, _, _) = send(&app, dash("GET", "/sms/dispatches?status=bogus", None)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let key = sid(1);
    let (s, b, _) = send(
        &app,
        dash(
            "POST",
            &format!("/sms/dispatches/{key}/ack"),
            Some(serde_json::json!({"by": "ana"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["final_status"], "acked");
    assert_eq!(v["ack"]["by"]["id"], "ana");

    let (s, b, _) = send(
        &app,
        dash(
            "POST",
            &format!("/sms/dispatches/{key}/reply"),
            Some(serde_json::json!({"by": "ana", "body": "We're on it"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        app.provider.accepted_to(n(CUSTOMER))[0].message.body,
        "We're on it"
    );
    // The dashboard's JSON reply on /sms/reply.
    let (s, b, _) = send(
        &app,
        dash(
            "POST",
            "/sms/reply",
            Some(serde_json::json!({"job_id": key, "body": "Arriving 3pm"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(app.provider.accepted_to(n(CUSTOMER)).len(), 2);
    let (s, b, _) = send(
        &app,
        dash(
            "POST",
            &format!("/sms/dispatches/{key}/reply"),
            Some(serde_json::json!({"by": "ana"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b, _) = send(
        &app,
        dash(
            "POST",
            &format!("/sms/dispatches/{key}/ack"),
            Some(serde_json::json!({"who": "x"})),
        ),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "unknown fields are refused: {b}"
    );

    let (s, _, _) = send(
        &app,
        dash("POST", &format!("/sms/dispatches/{key}/close"), None),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b, _) = send(
        &app,
        dash("POST", &format!("/sms/dispatches/{key}/ack"), None),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, b, _) = send(&app, dash("GET", "/sms/dispatches?status=open", None)).await;
    assert_eq!(s, StatusCode::OK);
    let v: Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["dispatches"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn dashboard_escalate_now_texts_the_backup_and_is_refused_once_acked() {
    let app = app();
    inbound(&app, 1, CUSTOMER, "hello").await;
    let key = sid(1);
    // Without the bearer token: refused, nothing changes.
    let req = Request::builder()
        .method("POST")
        .uri(format!("/sms/dispatches/{key}/escalate"))
        .body(Body::empty())
        .expect("request");
    let (s, _, _) = send(&app, req).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(app.provider.accepted_to(n(BACKUP)).is_empty());

    let (s, b, _) = send(
        &app,
        dash(
            "POST",
            &format!("/sms/dispatches/{key}/escalate"),
            Some(serde_json::json!({"by": "ana"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let v: Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["final_status"], "backup_triggered");
    assert_eq!(v["level"], 1);
    assert_eq!(app.provider.accepted_to(n(BACKUP)).len(), 1, "at once");
    let escalated = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["type"] == "escalated")
        .expect("an escalated event");
    assert_eq!(escalated["reason"], "operator");
    assert_eq!(escalated["by"]["id"], "ana");

    // Acknowledged: 409, naming who, and the backup is not texted again.
    let (s, _, _) = send(
        &app,
        dash("POST", &format!("/sms/dispatches/{key}/ack"), None),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b, _) = send(
        &app,
        dash("POST", &format!("/sms/dispatches/{key}/escalate"), None),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let v: Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["error"]["code"], "acknowledged");
    assert!(
        v["error"]["message"]
            .as_str()
            .expect("message")
            .contains("acknowledged by operator dashboard"),
        "{b}"
    );
    // Closed: 409 not open.
    let (s, _, _) = send(
        &app,
        dash("POST", &format!("/sms/dispatches/{key}/close"), None),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b, _) = send(
        &app,
        dash("POST", &format!("/sms/dispatches/{key}/escalate"), None),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert_eq!(app.provider.accepted_to(n(BACKUP)).len(), 1);
}

#[tokio::test]
async fn cors_only_for_allowed_origins_and_options_everywhere() {
    let app = app();
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/sms/dispatches")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization")
            .body(Body::empty())
            .expect("req")
    };
    let (s, _, h) = send(&app, preflight("https://dash.example.com")).await;
    assert!(s.is_success());
    assert_eq!(
        h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .and_then(|v| v.to_str().ok()),
        Some("https://dash.example.com")
    );
    let (_, _, h) = send(&app, preflight("https://evil.example.com")).await;
    assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    for path in [
        "/sms/inbound",
        "/sms/status",
        "/sms/reply",
        "/sms/dispatch-status/K7",
        "/health",
        "/sms/events",
    ] {
        let req = Request::builder()
            .method("OPTIONS")
            .uri(path)
            .body(Body::empty())
            .expect("req");
        let (s, _, _) = send(&app, req).await;
        assert!(s.is_success(), "{path}: {s}");
    }
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let app = app();
    let (s, b, _) = send(
        &app,
        Request::get("/health").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!((s, b.as_str()), (StatusCode::OK, r#"{"status":"ok"}"#));
    let (s, b, _) = send(
        &app,
        Request::get("/nope").body(Body::empty()).expect("req"),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(b.contains("no route"));
}

#[tokio::test]
async fn the_event_stream_carries_relay_events() {
    let app = app();
    let req = Request::get(format!("/sms/events?access_token={DASH}"))
        .body(Body::empty())
        .expect("req");
    let res = app.router.clone().oneshot(req).await.expect("res");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    assert_eq!(app.hub.subscribers(), 1);
    inbound(&app, 1, CUSTOMER, "hello").await;
    let mut body = res.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("an event in time")
        .expect("a frame")
        .expect("ok frame");
    let text = String::from_utf8_lossy(frame.data_ref().expect("data")).into_owned();
    assert!(text.contains("event: opened"), "{text}");
    assert!(text.contains("\"customer\":\"+16195550100\""), "{text}");
    let unauth = Request::get("/sms/events")
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&app, unauth).await.0, StatusCode::UNAUTHORIZED);
}

/// Closes the app's one dispatch from the dashboard.
async fn close_the_dispatch(app: &App) {
    let id = app.store.all()[0].id();
    app.relay
        .dashboard(
            id,
            qdn_relay_core::DashboardAction::Close { by: "ana".into() },
        )
        .await
        .expect("close");
}

#[tokio::test]
async fn maintenance_json_tracks_open_dispatches() {
    let app = app();
    inbound(&app, 1, CUSTOMER, "hello").await;
    let read = || -> Value {
        serde_json::from_slice(&std::fs::read(&app.maintenance).expect("file")).expect("whole JSON")
    };
    let v = read();
    let open = v["open_dispatches"].as_object().expect("object");
    assert_eq!(open.len(), 1);
    let entry = open.values().next().expect("entry");
    // Numbers are masked by default, and the file is its owner's only.
    assert_eq!(
        entry["customer_phone"],
        qdn_relay_axum::maintenance::mask_number(CUSTOMER)
    );
    let text = std::fs::read_to_string(&app.maintenance).expect("file");
    assert!(
        !text.contains(CUSTOMER),
        "a whole customer number in {text}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&app.maintenance)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(entry["final_status"], "delivered");
    app.clock.advance(Duration::from_secs(900));
    app.relay.sweep().await;
    assert_eq!(
        read()["open_dispatches"]
            .as_object()
            .expect("o")
            .values()
            .next()
            .expect("e")["final_status"],
        "backup_triggered"
    );
    close_the_dispatch(&app).await;
    let v = read();
    assert!(v["open_dispatches"].as_object().expect("o").is_empty());
    assert!(v["recent_events"].as_array().is_some_and(|e| e.len() >= 4));
    // No temp file left behind.
    let leftovers: Vec<_> = std::fs::read_dir(app.maintenance.parent().expect("dir"))
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[tokio::test]
async fn maintenance_json_leaves_out_the_job_syncs_bookkeeping() {
    let jobs = Arc::new(MemoryJobs::new());
    jobs.open_job(n(LINE), n(CUSTOMER), "J-7".parse().expect("job id"));
    let app = build_app(config(), Some(jobs));
    inbound(&app, 1, CUSTOMER, "hello").await;
    close_the_dispatch(&app).await;
    let v: Value =
        serde_json::from_slice(&std::fs::read(&app.maintenance).expect("file")).expect("JSON");
    assert!(
        v["open_dispatches"].as_object().expect("o").is_empty(),
        "the sync after the close does not bring the dispatch back: {v}"
    );
    let kinds: Vec<&str> = v["recent_events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert!(kinds.contains(&"closed"), "{kinds:?}");
    assert!(!kinds.contains(&"job_synced"), "{kinds:?}");
}

#[test]
fn invalid_http_config_is_refused() {
    use qdn_relay_app::HttpConfigError;
    let make = |c: HttpConfig| {
        let store = Arc::new(MemoryStore::new()) as Arc<dyn Store>;
        let provider = Arc::new(RecordingProvider::new()) as Arc<dyn SmsProvider>;
        let clock = Arc::new(ManualClock::default()) as Arc<dyn Clock>;
        let relay = Arc::new(Relay::builder(store, provider, clock).build());
        AppState::new(
            relay,
            SignatureValidator::new(Secret::new(TOKEN)),
            EventHub::default(),
            c,
        )
    };
    let bad_url = make(HttpConfig {
        public_url: Some("relay.example.com".into()),
        ..HttpConfig::default()
    });
    assert!(matches!(bad_url, Err(HttpConfigError::PublicUrl(_))));
    let bad_origin = make(HttpConfig {
        cors_origins: vec!["https://x.com/path".into()],
        ..HttpConfig::default()
    });
    assert!(matches!(bad_origin, Err(HttpConfigError::CorsOrigin(_))));
    let weak = make(HttpConfig {
        dashboard_token: Some(Secret::new("short")),
        ..HttpConfig::default()
    });
    assert!(matches!(weak, Err(HttpConfigError::WeakToken)));
}

#[cfg(feature = "serve")]
#[tokio::test]
async fn serve_answers_over_a_socket_sweeps_and_stops_when_told() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = app();
    inbound(&app, 1, CUSTOMER, "hello").await;
    // Past the primary's timeout: the sweeper's first sweep escalates.
    app.clock
        .set(Timestamp::from_millis(1_767_603_600_000).plus(Duration::from_secs(901)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(qdn_relay_axum::serve_until(
        listener,
        app.router.clone(),
        app.relay.clone(),
        Duration::from_millis(20),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: relay.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for _ in 0..500 {
        if !app.provider.accepted_to(n(BACKUP)).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        app.provider.accepted_to(n(BACKUP)).len(),
        1,
        "the sweeper escalated the due dispatch once"
    );
    stop_tx.send(()).expect("stop");
    server.await.expect("joined").expect("served");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after the stop"
    );
}

/// A slowloris connection (headers never finished) is closed after the
/// header-read timeout, a body that never arrives is answered 408 after the
/// request timeout, and neither keeps other clients from being served.
#[cfg(feature = "serve")]
#[tokio::test]
async fn slow_clients_are_cut_off_and_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = qdn_relay_axum::ServeOptions::new(Duration::from_secs(1))
        .header_read_timeout(Duration::from_millis(300))
        .request_timeout(Duration::from_millis(300));
    let server = tokio::spawn(qdn_relay_axum::serve_with(
        listener,
        app.router.clone(),
        app.relay.clone(),
        options,
        async move {
            let _ = stop_rx.await;
        },
    ));
    // Generous bounds: the checks are that the server acts at all, not how
    // fast.
    let bound = Duration::from_secs(10);

    // Headers started and never finished.
    let mut loris = tokio::net::TcpStream::connect(addr).await.expect("connect");
    loris
        .write_all(b"POST /sms/inbound HTTP/1.1\r\nHost: relay.test\r\nX-Slow: ")
        .await
        .expect("write");
    // A body promised and never sent.
    let mut slow_body = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow_body
        .write_all(
            b"POST /sms/dispatches/x/ack HTTP/1.1\r\nHost: relay.test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .expect("write");

    // Someone else is served meanwhile.
    let mut ok = tokio::net::TcpStream::connect(addr).await.expect("connect");
    ok.write_all(b"GET /health HTTP/1.1\r\nHost: relay.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(bound, ok.read_to_string(&mut answer))
        .await
        .expect("served in time")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let mut rest = Vec::new();
    let closed = tokio::time::timeout(bound, loris.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the slowloris connection was left open");

    let mut answer = Vec::new();
    let cut = tokio::time::timeout(bound, slow_body.read_to_end(&mut answer)).await;
    assert!(cut.is_ok(), "the slow body's connection was left open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    stop_tx.send(()).expect("stop");
    server.await.expect("joined").expect("served");
}

/// The SAM template routes exactly what the router serves (but the event
/// stream), so a route added to one cannot be forgotten in the other.
#[test]
fn the_sam_template_routes_every_route_of_the_router() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml");
    let template = std::fs::read_to_string(path).expect("infra/template.yaml");
    let in_template: std::collections::BTreeSet<String> = template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("RouteKey:"))
        .map(|k| k.trim().to_owned())
        // Without the feature `console` the router has no console.
        .filter(|k| cfg!(feature = "console") || !k.contains(" /console"))
        .collect();
    let served: std::collections::BTreeSet<String> = qdn_relay_axum::routes()
        .into_iter()
        .filter(|(_, path)| !qdn_relay_axum::NOT_BEHIND_API_GATEWAY.contains(path))
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    let missing: Vec<_> = served.difference(&in_template).collect();
    let extra: Vec<_> = in_template.difference(&served).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes the template lacks: {missing:?}; template routes the router does not serve: {extra:?}"
    );
    assert!(served.len() >= 10, "{served:?}");
}

/// An origin configured the way people write them (upper case, the default
/// port, a trailing slash) matches what browsers send.
#[tokio::test]
async fn configured_origins_are_normalised_to_match_browsers() {
    let app = app_with(HttpConfig {
        cors_origins: vec!["HTTPS://Dash.Example.com:443/".into()],
        ..config()
    });
    let req = Request::builder()
        .method("OPTIONS")
        .uri("/sms/dispatches")
        .header(header::ORIGIN, "https://dash.example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .body(Body::empty())
        .expect("req");
    let (s, _, h) = send(&app, req).await;
    assert!(s.is_success());
    assert_eq!(
        h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .and_then(|v| v.to_str().ok()),
        Some("https://dash.example.com")
    );
}

/// Twilio's Advanced Opt-Out marks custom and localized keywords with
/// `OptOutType`: such a text is an opt-out, opt-in or help keyword whatever
/// its words, and is never forwarded to a dispatcher.
#[tokio::test]
async fn advanced_opt_out_keywords_are_honoured_not_forwarded() {
    let app = app();
    let keyword = |n: u32, body: &str, kind: &str| {
        let mut t = text(&sid(n), CUSTOMER, body);
        t.push(("OptOutType", kind.to_owned()));
        t
    };
    // The customer has an open dispatch: the primary was texted once.
    inbound(&app, 1, CUSTOMER, "Need a dumpster").await;
    assert_eq!(app.provider.accepted_to(n(PRIMARY)).len(), 1);

    let t = keyword(2, "ARRET", "STOP");
    let (s, b, _) = send(&app, signed("/sms/inbound", &pairs(&t))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(
        app.relay
            .opt_outs()
            .is_opted_out(n(CUSTOMER))
            .await
            .expect("opt-outs")
    );
    // Not forwarded as a text: the primary got a notice that the customer
    // opted out, not "ARRET".
    let to_primary = app.provider.accepted_to(n(PRIMARY));
    assert!(
        to_primary.iter().all(|t| !t.message.body.contains("ARRET")),
        "{to_primary:?}"
    );

    let t = keyword(3, "AIDE", "HELP");
    let (s, b, _) = send(&app, signed("/sms/inbound", &pairs(&t))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let sent = app.provider.sent();
    assert!(
        sent.iter().all(|t| !t.message.body.contains("AIDE")),
        "{sent:?}"
    );

    let t = keyword(4, "COMMENCER", "START");
    let (s, b, _) = send(&app, signed("/sms/inbound", &pairs(&t))).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(
        !app.relay
            .opt_outs()
            .is_opted_out(n(CUSTOMER))
            .await
            .expect("opt-outs")
    );
    let sent = app.provider.sent();
    assert!(
        sent.iter().all(|t| !t.message.body.contains("COMMENCER")),
        "{sent:?}"
    );
    // Still one dispatch, with nothing of the three forwarded.
    assert_eq!(app.store.len(), 1);
}

/// A store that is busy for a moment (a locked database, throttling) costs
/// no text: the webhook retries inside the request and answers 200 once the
/// text is stored. Only a store that stays down past the retry budget gets
/// a 503 (and then nothing is stored, so Twilio's retry is not a double).
#[tokio::test]
async fn a_busy_store_is_retried_inside_the_webhook_and_only_a_down_store_is_503() {
    let store = Arc::new(CountingStore::new(MemoryStore::new()));
    let provider = Arc::new(RecordingProvider::new());
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_767_603_600_000)));
    let policy = Policy::simple(n(PRIMARY), n(BACKUP), Duration::from_secs(900)).expect("policy");
    let relay: Arc<DynRelay> = Arc::new(
        Relay::<dyn Store, dyn SmsProvider, dyn Clock>::builder(
            store.clone() as Arc<dyn Store>,
            provider.clone() as Arc<dyn SmsProvider>,
            clock as Arc<dyn Clock>,
        )
        .line(n(LINE), policy)
        .seed(1)
        .build(),
    );
    let state = |budget: Duration| {
        AppState::new(
            relay.clone(),
            SignatureValidator::new(Secret::new(TOKEN)),
            EventHub::default(),
            config(),
        )
        .expect("state")
        .with_retry_budget(budget)
    };
    let post = |state: AppState, n: u32| async move {
        let t = text(&sid(n), CUSTOMER, "Need a dumpster");
        let resp = router(state)
            .oneshot(signed("/sms/inbound", &pairs(&t)))
            .await
            .expect("response");
        resp.status()
    };

    // Busy for three tries: answered 200, stored once, forwarded once.
    store.fail_next("inbound_lookup", 3);
    assert_eq!(post(state(Duration::from_secs(8)), 1).await, StatusCode::OK);
    assert_eq!(store.calls("inbound_lookup"), 4);
    assert_eq!(store.inner().len(), 1);
    assert_eq!(provider.accepted_to(n(PRIMARY)).len(), 1);

    // Down for good: 503 once the budget is spent, and nothing changed.
    store.fail_next("inbound_lookup", u64::MAX);
    store.fail_next("save", u64::MAX);
    let status = post(state(Duration::from_millis(100)), 2).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(store.calls("inbound_lookup") > 5, "it was retried");
    store.heal();
    assert_eq!(store.inner().len(), 1);
    assert_eq!(provider.accepted_to(n(PRIMARY)).len(), 1);

    // Twilio's retry of that webhook, once the store is back, lands.
    assert_eq!(post(state(Duration::from_secs(8)), 2).await, StatusCode::OK);
    assert_eq!(
        store.inner().len(),
        1,
        "the same customer joins the open dispatch"
    );
    assert_eq!(
        relay
            .store()
            .get(store.inner().all()[0].id())
            .await
            .expect("get")
            .expect("found")
            .thread()
            .len(),
        2
    );
}
