//! The console over a real socket: sign-in, sessions, CSRF, each action,
//! the pages. The relay behind it is the real driver on a memory store,
//! a recording provider and a manual clock.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use qdn_relay_app::DynRelay;
use qdn_relay_console::{Console, router};
use qdn_relay_core::testing::RecordingProvider;
use qdn_relay_core::{
    Actor, Clock, DeliveryError, DeliveryReport, DeliveryStatus, Dispatch, ErrorClass, EventSink,
    InboundText, ManualClock, MemoryStore, PhoneNumber, Policy, Relay, RelayEvent, SinkError,
    SmsProvider, State, Store, Timestamp,
};
use qdn_relay_twilio::Secret;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, HOST, LOCATION, SET_COOKIE};
use tokio::sync::broadcast;

const DASH: &str = "dashboard-token-0123456789";
const LINE: &str = "+16195550000";
const CUSTOMER: &str = "+16195550100";
const PRIMARY: &str = "+16195550101";
const BACKUP: &str = "+18583354807";

fn n(s: &str) -> PhoneNumber {
    s.parse().expect("number")
}

struct Hub(broadcast::Sender<Arc<RelayEvent>>);

#[async_trait]
impl EventSink for Hub {
    async fn publish(&self, event: &RelayEvent) -> Result<(), SinkError> {
        let _ = self.0.send(Arc::new(event.clone()));
        Ok(())
    }
}

struct App {
    url: String,
    relay: Arc<DynRelay>,
    store: Arc<MemoryStore>,
    provider: Arc<RecordingProvider>,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn app() -> App {
    let policy = Policy::simple(n(PRIMARY), n(BACKUP), Duration::from_secs(900)).expect("policy");
    app_with(policy).await
}

async fn app_with(policy: Policy) -> App {
    app_full(policy, true).await
}

async fn app_full(policy: Policy, stream: bool) -> App {
    let store = Arc::new(MemoryStore::new());
    let provider = Arc::new(RecordingProvider::new());
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_767_603_600_000)));
    let (tx, _) = broadcast::channel(256);
    let relay: Arc<DynRelay> = Arc::new(
        Relay::<dyn Store, dyn SmsProvider, dyn Clock>::builder(
            store.clone() as Arc<dyn Store>,
            provider.clone() as Arc<dyn SmsProvider>,
            clock.clone() as Arc<dyn Clock>,
        )
        .line(n(LINE), policy)
        .sink(Arc::new(Hub(tx.clone())))
        .seed(7)
        .build(),
    );
    let console = Console::new(relay.clone(), Some(&Secret::new(DASH)));
    let console = if stream {
        console.with_events(move || tx.subscribe())
    } else {
        console
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        axum::serve(listener, router(console)).await.expect("serve");
    });
    App {
        url: format!("http://{addr}"),
        relay,
        store,
        provider,
        clock,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        server,
    }
}

impl App {
    async fn text(&self, sid: u32, body: &str) -> Dispatch {
        let out = self
            .relay
            .inbound(InboundText {
                sid: format!("SM{sid:032x}").parse().expect("sid"),
                from: n(CUSTOMER),
                to: n(LINE),
                body: body.to_owned(),
                media: Vec::new(),
            })
            .await
            .expect("inbound");
        self.dispatch(out.dispatch_id().expect("a dispatch").to_string())
            .await
    }

    async fn dispatch(&self, id: String) -> Dispatch {
        self.relay.find(&id).await.expect("find").expect("found")
    }

    async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        body: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.http.post(format!("{}{path}", self.url)).form(body);
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        req.send().await.expect("response")
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        req.send().await.expect("response")
    }

    /// Signs in as `name`: the cookie to send back.
    async fn sign_in(&self, name: &str) -> String {
        let r = self
            .post("/console/sign-in", None, &[("token", DASH), ("name", name)])
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let set = r
            .headers()
            .get(SET_COOKIE)
            .expect("a session cookie")
            .to_str()
            .expect("ascii");
        set.split(';').next().expect("name=value").to_owned()
    }

    /// A page's HTML and the CSRF token in its forms.
    async fn page(&self, path: &str, cookie: &str) -> (String, String) {
        let r = self.get(path, Some(cookie)).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let html = r.text().await.expect("html");
        let csrf = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a csrf token in the page")
            .to_owned();
        (html, csrf)
    }
}

#[tokio::test]
async fn a_wrong_token_is_refused_without_a_cookie_and_pages_need_a_session() {
    let app = app().await;
    let r = app.get("/console", None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/console/sign-in");
    for wrong in [
        "",
        "dashboard-token-012345678",
        "DASHBOARD-TOKEN-0123456789",
    ] {
        let r = app
            .post("/console/sign-in", None, &[("token", wrong)])
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{wrong:?}");
        assert!(
            r.headers().get(SET_COOKIE).is_none(),
            "no cookie for {wrong:?}"
        );
        let html = r.text().await.expect("html");
        assert!(html.contains("not the dashboard token"), "{html}");
    }
    // A forged cookie is no session.
    let r = app
        .get(
            "/console",
            Some("qdn_console=v1.99999999999999.AAAA.Ym9i.AAAA"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // The event stream too.
    let r = app.get("/console/events", None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_token_becomes_an_httponly_strict_expiring_cookie_secure_off_loopback() {
    let app = app().await;
    let r = app
        .post(
            "/console/sign-in",
            None,
            &[("token", DASH), ("name", "ana")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/console");
    let set = r.headers()[SET_COOKIE].to_str().expect("ascii").to_owned();
    assert!(set.starts_with("qdn_console="), "{set}");
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Max-Age=43200",
        "Path=/console",
    ] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Secure"), "loopback: no Secure ({set})");
    assert!(!set.contains(DASH), "the cookie is not the token");

    // Anywhere else, Secure.
    let r = app
        .http
        .post(format!("{}/console/sign-in", app.url))
        .header(HOST, "relay.example.com")
        .form(&[("token", DASH)])
        .send()
        .await
        .expect("response");
    let set = r.headers()[SET_COOKIE].to_str().expect("ascii").to_owned();
    assert!(set.contains("; Secure"), "{set}");

    // The session works, then expires.
    let cookie = app.sign_in("ana").await;
    let (html, _) = app.page("/console", &cookie).await;
    assert!(html.contains("ana"), "the operator's name is shown");
    assert!(!html.contains(DASH), "the token is never in a page");
    app.clock.advance(Duration::from_secs(12 * 3600 + 1));
    let r = app.get("/console", Some(&cookie)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "expired");
}

#[tokio::test]
async fn without_the_cookie_or_the_csrf_token_an_action_changes_nothing() {
    let app = app().await;
    let d = app.text(1, "Need a dumpster").await;
    let cookie = app.sign_in("ana").await;
    let (_, csrf) = app
        .page(&format!("/console/dispatches/{}", d.id()), &cookie)
        .await;
    let other = app.sign_in("bob").await;
    let (_, other_csrf) = app.page("/console", &other).await;
    for action in ["ack", "escalate", "close", "reply"] {
        let path = format!("/console/dispatches/{}/{action}", d.id());
        let body = [("csrf", csrf.as_str()), ("body", "hi")];
        // No cookie.
        let r = app.post(&path, None, &body).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{action}");
        // The cookie but no CSRF token, or another session's.
        let r = app.post(&path, Some(&cookie), &[("body", "hi")]).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{action}");
        let r = app
            .post(
                &path,
                Some(&cookie),
                &[("csrf", other_csrf.as_str()), ("body", "hi")],
            )
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{action}");
    }
    let after = app.dispatch(d.id().to_string()).await;
    assert_eq!(after.version(), d.version(), "nothing was saved");
    assert_eq!(after.state(), State::Open);
    assert!(app.provider.accepted_to(n(BACKUP)).is_empty());
    assert!(app.provider.accepted_to(n(CUSTOMER)).is_empty());
    // Signing out needs the CSRF token too.
    let r = app.post("/console/sign-out", Some(&cookie), &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn each_action_goes_through_the_relay() {
    let app = app().await;
    let d = app.text(1, "Need a 10-yard dumpster Friday").await;
    let cookie = app.sign_in("ana").await;
    let page = format!("/console/dispatches/{}", d.id());
    let (html, csrf) = app.page(&page, &cookie).await;
    assert!(
        html.contains("Need a 10-yard dumpster Friday"),
        "the text in the timeline"
    );
    assert!(html.contains("backup in 15:00"), "the countdown: {html}");
    for button in ["Ack", "Escalate now", "Close", "Send reply"] {
        assert!(html.contains(&format!(">{button}</button>")), "{button}");
    }

    // Escalate now: the backup is texted at once.
    let r = app
        .post(
            &format!("{page}/escalate"),
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.provider.accepted_to(n(BACKUP)).len(), 1);
    let (html, _) = app.page(&format!("{page}?done=escalate"), &cookie).await;
    assert!(
        html.contains("Escalated: the next level was texted."),
        "{html}"
    );
    assert!(html.contains("escalated now by ana"), "{html}");

    // Reply: from the business line to the customer, in the timeline.
    let r = app
        .post(
            &format!("{page}/reply"),
            Some(&cookie),
            &[("csrf", &csrf), ("body", "On our way, 8am")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let sent = app.provider.accepted_to(n(CUSTOMER));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message.body, "On our way, 8am");
    assert_eq!(sent[0].message.from, n(LINE));
    let (html, _) = app.page(&page, &cookie).await;
    assert!(
        html.contains("On our way, 8am"),
        "the reply in the timeline"
    );
    // The reply acknowledged it, by the operator.
    let after = app.dispatch(d.id().to_string()).await;
    assert_eq!(after.state(), State::Acked);
    assert_eq!(
        after.ack().map(|a| a.by.clone()),
        Some(Actor::Operator("ana".into()))
    );
    // Escalating an acknowledged dispatch is refused, in words.
    let r = app
        .post(
            &format!("{page}/escalate"),
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let html = r.text().await.expect("html");
    assert!(html.contains("acknowledged by operator ana"), "{html}");

    // An empty reply is refused and sends nothing.
    let r = app
        .post(
            &format!("{page}/reply"),
            Some(&cookie),
            &[("csrf", &csrf), ("body", "  ")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(app.provider.accepted_to(n(CUSTOMER)).len(), 1);

    // Close.
    let r = app
        .post(&format!("{page}/close"), Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.dispatch(d.id().to_string()).await.state(),
        State::Closed
    );

    // Ack on a fresh dispatch: acked by the operator, the backup never texted.
    let d2 = app.text(2, "Another one").await;
    let page2 = format!("/console/dispatches/{}", d2.id());
    let r = app
        .post(&format!("{page2}/ack"), Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let acked = app.dispatch(d2.id().to_string()).await;
    assert_eq!(acked.state(), State::Acked);
    assert_eq!(
        acked.ack().map(|a| a.by.clone()),
        Some(Actor::Operator("ana".into()))
    );
    app.clock.advance(Duration::from_secs(3600));
    app.relay.sweep().await;
    assert_eq!(
        app.provider.accepted_to(n(BACKUP)).len(),
        1,
        "only the escalation's"
    );

    // An unknown action or dispatch: 404, nothing done.
    let r = app
        .post(
            &format!("{page2}/delete"),
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = app
        .post(
            "/console/dispatches/01KZZZZZZZZZZZZZZZZZZZZZZZ/ack",
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(app.store.all().len() == 2);
}

#[tokio::test]
async fn the_list_puts_open_first_filters_by_state_and_searches() {
    let app = app().await;
    let first = app.text(1, "First problem").await;
    let cookie = app.sign_in("ana").await;
    let (_, csrf) = app.page("/console", &cookie).await;
    let r = app
        .post(
            &format!("/console/dispatches/{}/close", first.id()),
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let second = app.text(2, "Second problem, gate code 1234").await;
    let (html, _) = app.page("/console", &cookie).await;
    let (a, b) = (
        html.find(&format!("#{}", second.tag())).expect("open row"),
        html.find(&format!("#{}", first.tag())).expect("closed row"),
    );
    assert!(a < b, "the open dispatch comes first");
    assert!(html.contains("state-open"), "state words");
    assert!(html.contains(">closed<"), "state words");
    assert!(html.contains("Holder: "), "who holds it");
    let (html, _) = app.page("/console?state=closed", &cookie).await;
    assert!(html.contains("First problem") && !html.contains("Second problem"));
    let (html, _) = app
        .page(&format!("/console?q={}", second.tag()), &cookie)
        .await;
    assert!(html.contains("Second problem") && !html.contains("First problem"));
    let (html, _) = app.page("/console?q=555-0100", &cookie).await;
    assert!(html.contains("Second problem"), "by part of the number");
    let (html, _) = app.page("/console/on-call", &cookie).await;
    assert!(html.contains("On call") && html.contains("UTC"), "{html}");
}

#[tokio::test]
async fn a_failure_reads_in_words_and_the_escalation_it_caused_is_in_the_timeline() {
    let app = app().await;
    let d = app.text(1, "Need a dumpster").await;
    let sid = d.legs()[0]
        .sid
        .clone()
        .expect("the primary's forward was accepted");
    app.relay
        .delivery(DeliveryReport {
            sid,
            status: DeliveryStatus::Undelivered,
            error: Some(DeliveryError {
                code: 30006,
                class: ErrorClass::Unreachable,
            }),
        })
        .await
        .expect("delivery");
    let cookie = app.sign_in("ana").await;
    let (html, _) = app
        .page(&format!("/console/dispatches/{}", d.id()), &cookie)
        .await;
    assert!(
        html.contains(
            "30006: landline or unreachable carrier — never texted again in this dispatch"
        ),
        "{html}"
    );
    assert!(
        html.contains("data-status=\"undelivered\""),
        "the leg's badge"
    );
    assert!(
        html.contains("Escalation past primary: every text of the level failed"),
        "{html}"
    );
    assert!(
        html.contains("fully escalated: gives up in 15:00"),
        "{html}"
    );
    assert!(
        html.contains("escalating now ends the dispatch as failed"),
        "the last level's Escalate now says what it does"
    );
}

/// One level on duty 07:00–19:00 every day in Los Angeles; texts outside
/// those hours wait.
fn day_shift_in_los_angeles() -> Policy {
    Policy::from_toml(
        r#"
time_zone = "America/Los_Angeles"
when_closed = "hold"
[[levels]]
targets = ["+16195550101"]
windows = ["mon-sun 07:00-19:00"]
"#,
    )
    .expect("policy")
}

#[tokio::test]
async fn a_dispatch_held_for_a_window_says_until_when_in_the_policy_zone() {
    // 2026-01-05 09:00 UTC is 01:00 in Los Angeles: nobody on duty until 07:00.
    let app = app_with(day_shift_in_los_angeles()).await;
    let d = app.text(1, "Gate is locked").await;
    assert!(d.holding_until().is_some());
    let cookie = app.sign_in("ana").await;
    let (html, _) = app.page("/console?state=holding", &cookie).await;
    assert!(html.contains("Gate is locked"), "{html}");
    assert!(html.contains(">holding<"), "the state in words");
    assert!(html.contains("holding until"), "{html}");
    assert!(html.contains(">07:00</time> (nobody on duty)"), "{html}");
    assert!(
        html.contains("America/Los_Angeles"),
        "the policy's zone is named"
    );
    let (html, _) = app.page("/console/on-call", &cookie).await;
    assert!(html.contains("class=\"held\""), "held hours shaded: {html}");
    assert!(html.contains("class=\"first\""), "on-duty hours marked");
}

/// The on-call grid's rows are wall-clock hours, also in the weeks the
/// clocks change: the hour that does not happen says so, the hour that
/// happens twice says so, and every day keeps its 24 rows.
#[tokio::test]
async fn the_on_call_grid_reads_in_wall_clock_hours_across_a_clock_change() {
    let app = app_with(day_shift_in_los_angeles()).await;
    let cookie = app.sign_in("ana").await;
    let gap = "no such hour (clocks go forward)";
    // An ordinary week (the app's clock: 2026-01-05): no note.
    let (html, _) = app.page("/console/on-call", &cookie).await;
    assert!(!html.contains(gap) && !html.contains("(twice)"), "{html}");
    assert_eq!(html.matches("<th scope=\"row\">").count(), 24);
    // Friday 2026-03-06: the week holds Sunday 8 March, when 02:00 is skipped.
    app.clock.set("2026-03-06T18:00:00Z".parse().expect("time"));
    let cookie = app.sign_in("ana").await; // a session expires
    let (html, _) = app.page("/console/on-call", &cookie).await;
    assert_eq!(html.matches(gap).count(), 1, "one hour skipped: {html}");
    assert!(!html.contains("(twice)"));
    assert_eq!(html.matches("<th scope=\"row\">").count(), 24);
    let row = |h: &str| {
        let start = html
            .find(&format!("<th scope=\"row\">{h}</th>"))
            .unwrap_or_else(|| panic!("row {h}: {html}"));
        let end = html[start..].find("</tr>").expect("row end") + start;
        html[start..end].to_owned()
    };
    assert!(row("02").contains(gap), "the gap is in the 02 row");
    // 07:00 is still the first on-duty hour on that Sunday: every column of
    // row 07 marks the level, and row 06 marks none.
    assert_eq!(
        row("07").matches("class=\"first\"").count(),
        7,
        "{}",
        row("07")
    );
    assert_eq!(
        row("06").matches("class=\"first\"").count(),
        0,
        "{}",
        row("06")
    );
    // Friday 2026-10-30: the week holds Sunday 1 November, when 01:00
    // happens twice.
    app.clock.set("2026-10-30T18:00:00Z".parse().expect("time"));
    let cookie = app.sign_in("ana").await;
    let (html, _) = app.page("/console/on-call", &cookie).await;
    assert_eq!(html.matches("(twice)").count(), 1, "one hour twice: {html}");
    assert!(!html.contains(gap));
    assert_eq!(html.matches("<th scope=\"row\">").count(), 24);
}

#[tokio::test]
async fn an_old_open_dispatch_is_listed_however_many_newer_ones_closed() {
    let app = app().await;
    let old = app.text(1, "Still waiting from this morning").await;
    for i in 0..201u32 {
        app.clock.advance(Duration::from_secs(1));
        let d = app
            .relay
            .inbound(InboundText {
                sid: format!("SM{:032x}", 1000 + i).parse().expect("sid"),
                from: format!("+1619555{:04}", 2000 + i).parse().expect("number"),
                to: n(LINE),
                body: format!("closed one {i}"),
                media: Vec::new(),
            })
            .await
            .expect("inbound")
            .dispatch_id()
            .expect("a dispatch");
        app.relay
            .dashboard(d, qdn_relay_core::DashboardAction::Close { by: "x".into() })
            .await
            .expect("closed");
    }
    let cookie = app.sign_in("ana").await;
    let (html, _) = app.page("/console", &cookie).await;
    let (open, closed) = (
        html.find("Still waiting from this morning")
            .expect("the old open dispatch"),
        html.find("closed one 200").expect("the newest closed one"),
    );
    assert!(open < closed, "open first");
    assert!(html.contains(&format!("data-dispatch=\"{}\"", old.id())));
}

#[tokio::test]
async fn pages_poll_where_there_is_no_event_stream() {
    let policy = Policy::simple(n(PRIMARY), n(BACKUP), Duration::from_secs(900)).expect("policy");
    for stream in [true, false] {
        let app = app_full(policy.clone(), stream).await;
        let cookie = app.sign_in("ana").await;
        let (html, _) = app.page("/console", &cookie).await;
        assert!(html.contains("data-live=\"1\""), "{html}");
        assert_eq!(
            html.contains("data-events=\"/console/events\""),
            stream,
            "the stream only where there is one: {html}"
        );
        let r = app.get("/console/events", Some(&cookie)).await;
        let expected = if stream {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(r.status(), expected);
    }
}

/// A long conversation: the page shows what the record keeps and says how
/// much moved to the dispatch's history, with a link to the whole
/// timeline, which has the first text again.
#[tokio::test]
async fn a_long_conversation_links_to_its_whole_timeline() {
    let app = app().await;
    let d = app.text(1, "Need a dumpster").await;
    app.relay
        .inbound(InboundText {
            sid: format!("SM{:032x}", 2).parse().expect("sid"),
            from: n(PRIMARY),
            to: n(LINE),
            body: "on my way".into(),
            media: Vec::new(),
        })
        .await
        .expect("the primary's reply");
    for i in 3..160 {
        app.text(i, &format!("still waiting {i}")).await;
    }
    let d = app.dispatch(d.id().to_string()).await;
    assert!(d.history().thread > 0, "texts moved out of the record");
    let cookie = app.sign_in("ana").await;
    let path = format!("/console/dispatches/{}", d.id());
    let (html, _) = app.page(&path, &cookie).await;
    assert!(!html.contains("Need a dumpster"), "the record's texts only");
    assert!(html.contains("still waiting 159"), "the latest text");
    assert!(
        html.contains(&format!(
            "{} earlier texts and {} earlier sent texts are in the dispatch's history",
            d.history().thread,
            d.history().legs
        )),
        "{html}"
    );
    assert!(
        html.contains(&format!("{path}?history=all")),
        "a link to it"
    );
    let (whole, _) = app.page(&format!("{path}?history=all"), &cookie).await;
    assert!(whole.contains("Need a dumpster"), "the first text");
    assert!(whole.contains("still waiting 3<") || whole.contains("still waiting 3 "));
    assert!(!whole.contains("earlier texts and"), "nothing left out");
}
