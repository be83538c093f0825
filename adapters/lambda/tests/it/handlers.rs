//! The two handlers driven directly with real event JSON (API Gateway HTTP
//! API payload 2.0, EventBridge scheduled event; `tests/fixtures/`), over
//! the in-memory store, a recording provider and a manual clock.
//!
//! The HTTP handler is [`HttpApp::handler`], the very value the binary
//! gives `lambda_runtime::run`: the event goes through `lambda_http`'s
//! conversion (which puts the stage in front of the path), our URL
//! restoration, the router, and back into an API Gateway response.
//!
//! The inbound fixture is signed, as Twilio would, with [`AUTH_TOKEN`] for
//! `https://abc123defg.execute-api.us-east-1.amazonaws.com/prod/sms/inbound`
//! (the stage `prod` is in the URL Twilio called).

use std::sync::Arc;
use std::time::Duration;

use lambda_http::request::LambdaRequest;
use lambda_runtime::{Context, LambdaEvent};
use qdn_relay_app::{Backend, DynRelay, Wiring};
use qdn_relay_core::testing::{MockStore, RecordingProvider};
use qdn_relay_core::{Clock, ManualClock, MemoryStore, PhoneNumber, StoreError, Timestamp};
use qdn_relay_lambda::{Env, HttpApp, TickEvent, TickReport, init, tick};
use qdn_relay_twilio::{Secret, SignatureValidator};
use serde_json::Value;
use tower::ServiceExt as _;

use crate::fixtures::{
    self, AUTH_TOKEN, BACKUP, CUSTOMER, DASH, DOMAIN, LINE, MESSAGE_SID, PRIMARY,
};

struct Harness {
    app: HttpApp,
    relay: Arc<DynRelay>,
    store: Arc<MemoryStore>,
    provider: Arc<RecordingProvider>,
    clock: Arc<ManualClock>,
}

fn env(extra: &[(&str, &str)]) -> Env {
    let mut pairs: Vec<(String, String)> = [
        ("QDN_TWILIO_NUMBER", LINE),
        ("RELAY_CHAIN", &*format!("{PRIMARY},{BACKUP}")),
        ("RELAY_ACK_TIMEOUT", "15m"),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("RELAY_DASHBOARD_TOKEN", DASH),
        ("RELAY_CORS_ORIGINS", "https://dash.example.com"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        pairs.retain(|(n, _)| n != k);
        pairs.push(((*k).to_owned(), (*v).to_owned()));
    }
    Env::from_lookup(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
}

fn harness_with(extra: &[(&str, &str)]) -> Harness {
    let settings = env(extra).settings().expect("settings");
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_795_537_205_000)));
    let provider = Arc::new(RecordingProvider::with_clock(clock.clone()));
    let relay = Wiring::new(
        &settings,
        Backend::new(store.clone())
            .with_opt_outs(Arc::new(qdn_relay_core::MemoryOptOuts::new()))
            .with_rate_limiter(Arc::new(qdn_relay_core::MemoryRateLimiter::new())),
        provider.clone(),
    )
    .clock(clock.clone())
    .build();
    let app = init::http_app(&settings, relay.clone()).expect("http app");
    Harness {
        app,
        relay,
        store,
        provider,
        clock,
    }
}

fn harness() -> Harness {
    harness_with(&[])
}

fn n(s: &str) -> PhoneNumber {
    s.parse().expect("number")
}

/// Runs one API Gateway event through the HTTP handler; the response as
/// API Gateway receives it.
async fn invoke(app: &HttpApp, event: &Value) -> Value {
    let req: LambdaRequest = serde_json::from_value(event.clone()).expect("an API Gateway event");
    let resp = app
        .clone()
        .handler()
        .oneshot(LambdaEvent::new(req, Context::default()))
        .await
        .expect("infallible");
    serde_json::to_value(resp).expect("response JSON")
}

fn status(resp: &Value) -> u64 {
    resp["statusCode"].as_u64().expect("statusCode")
}

fn body(resp: &Value) -> String {
    resp["body"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_inbound_fixture_is_signed_for_the_stage_url() {
    // The fixture's signature covers the URL with /prod, not without.
    let event = fixtures::load("apigw-v2-inbound-stage.json");
    let params = fixtures::form_params(&event);
    let sig = SignatureValidator::new(Secret::new(AUTH_TOKEN));
    let header = event["headers"]["x-twilio-signature"]
        .as_str()
        .expect("signed");
    assert_eq!(
        sig.sign_form(&format!("https://{DOMAIN}/prod/sms/inbound"), &params),
        header
    );
    assert_ne!(
        sig.sign_form(&format!("https://{DOMAIN}/sms/inbound"), &params),
        header
    );
}

#[tokio::test]
async fn a_signed_inbound_webhook_on_a_stage_is_accepted_and_forwarded() {
    let h = harness();
    let resp = invoke(&h.app, &fixtures::load("apigw-v2-inbound-stage.json")).await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert!(body(&resp).contains("<Response"), "{resp}");
    assert!(
        resp["headers"]["content-type"]
            .as_str()
            .is_some_and(|c| c.starts_with("text/xml")),
        "{resp}"
    );
    let sent = h.provider.accepted_to(n(PRIMARY));
    assert_eq!(sent.len(), 1, "{:?}", h.provider.sent());
    assert!(
        sent[0].message.body.contains(CUSTOMER)
            && sent[0].message.body.contains("Water heater leaking"),
        "{}",
        sent[0].message.body
    );
    assert_eq!(h.store.len(), 1);

    // Twilio retries: the same webhook again changes nothing (B2).
    let again = invoke(&h.app, &fixtures::load("apigw-v2-inbound-stage.json")).await;
    assert_eq!(status(&again), 200, "{again}");
    assert_eq!(h.provider.sent().len(), 1);
}

#[tokio::test]
async fn a_forged_webhook_is_403_and_changes_nothing() {
    let h = harness();
    let good = fixtures::load("apigw-v2-inbound-stage.json");

    // The body changed after signing.
    let mut params = fixtures::form_params(&good);
    for (k, v) in &mut params {
        if k == "Body" {
            *v = "Send the technician to my address instead".into();
        }
    }
    let forged = fixtures::with_form(&good, &params);
    let resp = invoke(&h.app, &forged).await;
    assert_eq!(status(&resp), 403, "{resp}");

    // Signed for the URL without the stage (what a router that dropped
    // the stage would check).
    let params = fixtures::form_params(&good);
    let wrong_url = fixtures::with_signature(
        &good,
        &SignatureValidator::new(Secret::new(AUTH_TOKEN))
            .sign_form(&format!("https://{DOMAIN}/sms/inbound"), &params),
    );
    let resp = invoke(&h.app, &wrong_url).await;
    assert_eq!(status(&resp), 403, "{resp}");

    // Signed with another account's token.
    let other = fixtures::with_signature(
        &good,
        &SignatureValidator::new(Secret::new("another-accounts-token"))
            .sign_form(&format!("https://{DOMAIN}/prod/sms/inbound"), &params),
    );
    let resp = invoke(&h.app, &other).await;
    assert_eq!(status(&resp), 403, "{resp}");

    // No signature at all.
    let mut unsigned = good.clone();
    unsigned["headers"]
        .as_object_mut()
        .expect("headers")
        .remove("x-twilio-signature");
    let resp = invoke(&h.app, &unsigned).await;
    assert_eq!(status(&resp), 403, "{resp}");

    assert!(h.provider.sent().is_empty());
    assert!(h.store.is_empty());
}

#[tokio::test]
async fn a_custom_domain_from_relay_public_url_wins() {
    let h = harness_with(&[("RELAY_PUBLIC_URL", "https://relay.example.com")]);
    let good = fixtures::load("apigw-v2-inbound-stage.json");
    let params = fixtures::form_params(&good);
    let mut event = fixtures::with_signature(
        &good,
        &SignatureValidator::new(Secret::new(AUTH_TOKEN))
            .sign_form("https://relay.example.com/sms/inbound", &params),
    );
    // Through the custom domain: its host, and a path without the stage.
    event["headers"]["host"] = "relay.example.com".into();
    event["requestContext"]["domainName"] = "relay.example.com".into();
    event["requestContext"]["domainPrefix"] = "relay".into();
    event["rawPath"] = "/sms/inbound".into();
    event["requestContext"]["http"]["path"] = "/sms/inbound".into();
    let resp = invoke(&h.app, &event).await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(h.provider.sent().len(), 1);

    // The execute-api URL is not the configured one: refused.
    let resp = invoke(&h.app, &good).await;
    assert_eq!(status(&resp), 403, "{resp}");
}

#[tokio::test]
async fn the_status_route_answers_on_the_default_stage_with_cors() {
    let h = harness();
    let unknown = invoke(&h.app, &fixtures::load("apigw-v2-dispatch-status.json")).await;
    assert_eq!(status(&unknown), 404, "{unknown}");

    invoke(&h.app, &fixtures::load("apigw-v2-inbound-stage.json")).await;
    let resp = invoke(&h.app, &fixtures::load("apigw-v2-dispatch-status.json")).await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert_eq!(
        resp["headers"]["access-control-allow-origin"], "https://dash.example.com",
        "{resp}"
    );
    let json: Value = serde_json::from_str(&body(&resp)).expect("status JSON");
    assert_eq!(json["message_id"], MESSAGE_SID);
    assert_eq!(json["customer_phone"], CUSTOMER);
    assert_eq!(json["final_status"], "delivered");

    let mut no_token = fixtures::load("apigw-v2-dispatch-status.json");
    no_token["headers"]
        .as_object_mut()
        .expect("headers")
        .remove("authorization");
    assert_eq!(status(&invoke(&h.app, &no_token).await), 401);
}

async fn run_tick(h: &Harness, event: Value) -> Result<TickReport, qdn_relay_lambda::TickError> {
    let payload: TickEvent = serde_json::from_value(event).expect("a tick event");
    tick(&h.relay, LambdaEvent::new(payload, Context::default())).await
}

#[tokio::test]
async fn the_scheduled_event_parses_as_a_scheduled_event() {
    let e: TickEvent =
        serde_json::from_value(fixtures::load("eventbridge-scheduled.json")).expect("event");
    let TickEvent::Scheduled(e) = e else {
        panic!("not recognised as a scheduled event: {e:?}")
    };
    assert_eq!(e.detail_type, "Scheduled Event");
    assert_eq!(e.source, "aws.events");
    // A manual test invoke sweeps too.
    assert!(matches!(
        serde_json::from_str::<TickEvent>("{}").expect("any JSON"),
        TickEvent::Other(_)
    ));
}

#[tokio::test]
async fn a_tick_after_the_timeout_escalates_to_the_backup() {
    let h = harness();
    let resp = invoke(&h.app, &fixtures::load("apigw-v2-inbound-stage.json")).await;
    assert_eq!(status(&resp), 200, "{resp}");

    // Before the timeout: nothing to do.
    h.clock.advance(Duration::from_secs(14 * 60));
    let r = run_tick(&h, fixtures::load("eventbridge-scheduled.json"))
        .await
        .expect("sweep");
    assert_eq!(r.fired, 0);
    assert!(h.provider.accepted_to(n(BACKUP)).is_empty());

    // Past it: the backup is texted.
    h.clock.advance(Duration::from_secs(61));
    let r = run_tick(&h, fixtures::load("eventbridge-scheduled.json"))
        .await
        .expect("sweep");
    assert_eq!(r.fired, 1, "{r:?}");
    assert_eq!(r.swept_at, h.clock.now());
    assert_eq!(h.provider.accepted_to(n(BACKUP)).len(), 1);
    let report = serde_json::to_value(&r).expect("report JSON");
    assert_eq!(report["fired"], 1, "{report}");

    let resp = invoke(&h.app, &fixtures::load("apigw-v2-dispatch-status.json")).await;
    let json: Value = serde_json::from_str(&body(&resp)).expect("status JSON");
    assert_eq!(json["final_status"], "backup_triggered", "{json}");
    assert!(json["forwarded_to_backup_at"].is_string(), "{json}");

    // The same minute's tick again (a retry) does not text anyone twice.
    let r = run_tick(&h, fixtures::load("eventbridge-scheduled.json"))
        .await
        .expect("sweep");
    assert_eq!(r.fired, 0);
    assert_eq!(h.provider.accepted_to(n(BACKUP)).len(), 1);
}

#[tokio::test]
async fn a_failed_sweep_is_an_error_result() {
    let mut store = MockStore::new();
    store
        .expect_due()
        .returning(|_, _| Err(StoreError::backend(true, "table unreachable")));
    let settings = env(&[]).settings().expect("settings");
    let relay = Wiring::new(
        &settings,
        Backend::new(Arc::new(store))
            .with_opt_outs(Arc::new(qdn_relay_core::MemoryOptOuts::new()))
            .with_rate_limiter(Arc::new(qdn_relay_core::MemoryRateLimiter::new())),
        Arc::new(RecordingProvider::new()),
    )
    .clock(Arc::new(ManualClock::new(Timestamp::from_millis(
        1_795_537_205_000,
    ))))
    .build();
    let payload: TickEvent =
        serde_json::from_value(fixtures::load("eventbridge-scheduled.json")).expect("event");
    let e = tick(&relay, LambdaEvent::new(payload, Context::default()))
        .await
        .expect_err("a failed sweep fails the invocation");
    assert!(e.message.contains("due query failed"), "{e}");
    assert!(e.message.contains("table unreachable"), "{e}");
    let d: lambda_runtime::Diagnostic = e.into();
    assert_eq!(d.error_type, "SweepFailed");
}

/// An API Gateway event for the console on the stage `prod`.
fn console_event(method: &str, route: &str, path: &str, cookie: Option<&str>, form: &str) -> Value {
    let mut e = fixtures::load("apigw-v2-dispatch-status.json");
    let raw = format!("/prod{path}");
    e["routeKey"] = format!("{method} {route}").into();
    e["rawPath"] = raw.clone().into();
    e["requestContext"]["routeKey"] = format!("{method} {route}").into();
    e["requestContext"]["stage"] = "prod".into();
    e["requestContext"]["http"]["method"] = method.into();
    e["requestContext"]["http"]["path"] = raw.into();
    e.as_object_mut().expect("event").remove("pathParameters");
    let headers = e["headers"].as_object_mut().expect("headers");
    headers.remove("authorization");
    headers.remove("origin");
    headers.insert("content-length".into(), form.len().to_string().into());
    if !form.is_empty() {
        headers.insert(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        );
        e["body"] = form.into();
    }
    if let Some(c) = cookie {
        e["cookies"] = serde_json::json!([c]);
    }
    e
}

#[tokio::test]
async fn the_console_on_a_stage_keeps_the_stage_in_links_and_its_secure_cookie() {
    let h = harness();
    // Not signed in: to the sign-in page, on the stage.
    let resp = invoke(
        &h.app,
        &console_event("GET", "/console", "/console", None, ""),
    )
    .await;
    assert_eq!(status(&resp), 303, "{resp}");
    assert_eq!(
        resp["headers"]["location"], "/prod/console/sign-in",
        "{resp}"
    );
    // A wrong token: no cookie.
    let wrong = console_event(
        "POST",
        "/console/sign-in",
        "/console/sign-in",
        None,
        "token=nope",
    );
    let resp = invoke(&h.app, &wrong).await;
    assert_eq!(status(&resp), 401, "{resp}");
    assert!(
        resp["cookies"].as_array().is_none_or(Vec::is_empty),
        "{resp}"
    );
    // The dashboard token: a Secure cookie for the stage's console.
    let form = format!("token={DASH}");
    let resp = invoke(
        &h.app,
        &console_event("POST", "/console/sign-in", "/console/sign-in", None, &form),
    )
    .await;
    assert_eq!(status(&resp), 303, "{resp}");
    assert_eq!(resp["headers"]["location"], "/prod/console", "{resp}");
    let set = resp["cookies"][0]
        .as_str()
        .expect("a session cookie")
        .to_owned();
    for attr in [
        "Path=/prod/console;",
        "HttpOnly",
        "SameSite=Strict",
        "; Secure",
    ] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    let cookie = set.split(';').next().expect("name=value");
    // Signed in: the pages link within the stage.
    let resp = invoke(
        &h.app,
        &console_event(
            "GET",
            "/console/on-call",
            "/console/on-call",
            Some(cookie),
            "",
        ),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    let html = body(&resp);
    assert!(html.contains("href=\"/prod/console/on-call\""), "{html}");
    assert!(html.contains("src=\"/prod/console/console.js\""), "{html}");
}
