//! The job service over a real socket: its `/jobs` routes and the relay's
//! Twilio webhooks (signed against the URL the server sees, each delivered
//! twice as Twilio retries) in one server, a `ManualClock` for time and a
//! `RecordingProvider` for texts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use qdn_relay_app::{DynRelay, HttpConfig};
use qdn_relay_axum::{AppState, EventHub};
use qdn_relay_core::testing::RecordingProvider;
use qdn_relay_core::{
    Clock, JOB_RETRY_MAX, ManualClock, PhoneNumber, Policy, Relay, SmsProvider, Store, Timestamp,
};
use qdn_relay_example_job_service::{JobsConfig, JobsDb, app};
use qdn_relay_sqlite::SqliteStore;
use qdn_relay_twilio::{Secret, SignatureValidator};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "test-auth-token";
const DASH: &str = "dashboard-token-0123456789";
const LINE: &str = "+16195550000";
const CUSTOMER: &str = "+16195550100";
const PRIMARY: &str = "+16195550101";
const BACKUP: &str = "+18583354807";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const MIN: Duration = Duration::from_secs(60);
const START: Timestamp = Timestamp::from_millis(1_767_603_600_000);

fn n(s: &str) -> PhoneNumber {
    s.parse().expect("number")
}

struct Server {
    base: String,
    http: reqwest::Client,
    relay: Arc<DynRelay>,
    provider: Arc<RecordingProvider>,
    clock: Arc<ManualClock>,
    jobs_path: PathBuf,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The service as `main.rs` wires it, on a test clock and provider, the
/// relay's SQLite store and the jobs database in a temporary directory.
async fn start() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let jobs_path = dir.path().join("jobs.db");
    let clock = Arc::new(ManualClock::new(START));
    let provider = Arc::new(RecordingProvider::with_clock(clock.clone()));
    let store = SqliteStore::open(dir.path().join("relay.db"))
        .await
        .expect("relay store");
    // A short lock wait, so an outage test fails calls quickly.
    let jobs = JobsDb::open_with(&jobs_path, Duration::from_millis(50))
        .await
        .expect("jobs db");
    let hub = EventHub::default();
    let policy = Policy::simple(n(PRIMARY), n(BACKUP), 15 * MIN).expect("policy");
    let relay: Arc<DynRelay> = Arc::new(
        Relay::<dyn Store, dyn SmsProvider, dyn Clock>::builder(
            Arc::new(store) as Arc<dyn Store>,
            provider.clone() as Arc<dyn SmsProvider>,
            clock.clone() as Arc<dyn Clock>,
        )
        .line(n(LINE), policy)
        .sink(Arc::new(hub.clone()))
        .jobs(Arc::new(jobs.clone()))
        .seed(7)
        .build(),
    );
    let http = HttpConfig {
        dashboard_token: Some(Secret::new(DASH)),
        ..HttpConfig::default()
    };
    let state = AppState::new(
        relay.clone(),
        SignatureValidator::new(Secret::new(TOKEN)),
        hub,
        http,
    )
    .expect("state");
    let router = app(
        state,
        jobs,
        JobsConfig {
            line: n(LINE),
            dashboard_token: Secret::new(DASH),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    Server {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        relay,
        provider,
        clock,
        jobs_path,
        task,
        _dir: dir,
    }
}

impl Server {
    /// A form posted the way Twilio posts it: signed over the full URL the
    /// server sees.
    async fn twilio(&self, path: &str, pairs: &[(&str, &str)]) -> (StatusCode, String) {
        let url = format!("{}{path}", self.base);
        let form: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let sig = SignatureValidator::new(Secret::new(TOKEN)).sign_form(&url, &form);
        let res = self
            .http
            .post(&url)
            .header("X-Twilio-Signature", sig)
            .form(&form)
            .send()
            .await
            .expect("webhook");
        let status = res.status();
        (status, res.text().await.expect("body"))
    }

    /// A text to the business line, delivered twice (Twilio retries).
    async fn text_twice(&self, sid: &str, from: &str, body: &str) {
        let form = [
            ("MessageSid", sid),
            ("AccountSid", ACCOUNT),
            ("From", from),
            ("To", LINE),
            ("Body", body),
            ("NumMedia", "0"),
        ];
        for attempt in 0..2 {
            let (s, b) = self.twilio("/sms/inbound", &form).await;
            assert_eq!(s, StatusCode::OK, "inbound #{attempt}: {b}");
        }
    }

    /// A `delivered` callback, twice, for every text accepted so far that
    /// has not had one yet.
    async fn callbacks_twice(&self, done: &mut usize) {
        let sent = self.provider.sent();
        for t in &sent[*done..] {
            let sid = t.result.clone().expect("accepted").to_string();
            let to = t.message.to.to_string();
            let form = [
                ("MessageSid", sid.as_str()),
                ("AccountSid", ACCOUNT),
                ("MessageStatus", "delivered"),
                ("From", LINE),
                ("To", to.as_str()),
            ];
            for attempt in 0..2 {
                let (s, b) = self.twilio("/sms/status", &form).await;
                assert_eq!(s, StatusCode::NO_CONTENT, "callback #{attempt}: {b}");
            }
        }
        *done = sent.len();
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(DASH);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status();
        let text = res.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn create_job(&self, description: &str) -> String {
        let (s, v) = self
            .post(
                "/jobs",
                json!({"customer_phone": CUSTOMER, "description": description}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["status"], "open");
        v["id"].as_str().expect("id").to_owned()
    }

    /// Every text sent so far: (when, to, sid).
    fn sent(&self) -> Vec<(Option<Timestamp>, PhoneNumber, String)> {
        self.provider
            .sent()
            .into_iter()
            .map(|t| {
                let sid = t.result.expect("accepted").to_string();
                (t.at, t.message.to, sid)
            })
            .collect()
    }
}

fn inbound_sid(k: u32) -> String {
    format!("SMin{k:030x}")
}

fn ts(t: Timestamp) -> Value {
    serde_json::to_value(t).expect("timestamp")
}

/// The cascade every test tells: the customer texts, the primary does not
/// answer, the ack timeout passes and the sweep escalates to the backup,
/// who replies by text. Every webhook and callback arrives twice. Returns
/// (when the customer texted, when the sweep escalated, when the backup
/// replied).
async fn cascade(s: &Server) -> (Timestamp, Timestamp, Timestamp) {
    let mut called_back = 0;
    s.clock.advance(MIN);
    let texted = s.clock.now();
    s.text_twice(&inbound_sid(1), CUSTOMER, "Need a 10-yard dumpster Friday")
        .await;
    assert_eq!(s.sent().len(), 1, "forwarded to the primary, once");
    s.callbacks_twice(&mut called_back).await;

    // The primary does not answer: past the ack timeout the sweep escalates.
    s.clock.advance(15 * MIN + Duration::from_secs(1));
    let escalated = s.clock.now();
    let r = s.relay.sweep().await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(s.sent().len(), 2, "forwarded to the backup");
    s.callbacks_twice(&mut called_back).await;

    s.clock.advance(2 * MIN);
    let replied = s.clock.now();
    s.text_twice(&inbound_sid(2), BACKUP, "On it, Friday 8am")
        .await;
    assert_eq!(s.sent().len(), 3, "the reply went to the customer, once");
    s.callbacks_twice(&mut called_back).await;
    (texted, escalated, replied)
}

/// The job's log and milestones after [`cascade`]: one entry per text.
fn assert_job_after_cascade(
    s: &Server,
    job: &Value,
    (texted, escalated, replied): (Timestamp, Timestamp, Timestamp),
) {
    let sent = s.sent();
    assert_eq!(
        sent.iter()
            .map(|(at, to, _)| (*at, *to))
            .collect::<Vec<_>>(),
        vec![
            (Some(texted), n(PRIMARY)),
            (Some(escalated), n(BACKUP)),
            (Some(replied), n(CUSTOMER)),
        ],
        "each text went out at the moment its cause happened"
    );
    let messages = job["messages"].as_array().expect("messages");
    let got: Vec<(&str, &str, &str, &str, &str)> = messages
        .iter()
        .map(|m| {
            (
                m["direction"].as_str().expect("direction"),
                m["origin"].as_str().expect("origin"),
                m["from"].as_str().expect("from"),
                m["to"].as_str().expect("to"),
                m["sid"].as_str().expect("sid"),
            )
        })
        .collect();
    let in1 = inbound_sid(1);
    let in2 = inbound_sid(2);
    assert_eq!(
        got,
        vec![
            ("inbound", "customer", CUSTOMER, LINE, in1.as_str()),
            ("outbound", "relay", LINE, PRIMARY, sent[0].2.as_str()),
            ("outbound", "relay", LINE, BACKUP, sent[1].2.as_str()),
            ("inbound", "dispatcher", BACKUP, LINE, in2.as_str()),
            ("outbound", "dispatcher", LINE, CUSTOMER, sent[2].2.as_str()),
        ],
        "one log entry per text: {job:#}"
    );
    let at: Vec<&Value> = messages.iter().map(|m| &m["at"]).collect();
    assert_eq!(
        at,
        vec![
            &ts(texted),
            &ts(texted),
            &ts(escalated),
            &ts(replied),
            &ts(replied)
        ]
    );
    assert_eq!(messages[0]["body"], "Need a 10-yard dumpster Friday");
    assert_eq!(messages[4]["body"], "On it, Friday 8am");
    assert_eq!(
        messages[2]["purpose"],
        json!({"kind": "forward", "round": 0, "level": 1})
    );

    // The milestones, on the record and in order.
    assert_eq!(job["forwarded_to_primary_at"], ts(texted));
    assert_eq!(job["forwarded_to_backup_at"], ts(escalated));
    assert_eq!(job["acked_at"], ts(replied));
    assert_eq!(job["acked_by"], BACKUP);
    assert_eq!(
        job["primary_ack_at"],
        Value::Null,
        "the backup acked, not the primary"
    );
    assert_eq!(job["failed_at"], Value::Null);
    assert_eq!(job["closed_at"], Value::Null);
    assert_eq!(job["status"], "open");
    let kinds: Vec<&str> = job["milestones"]
        .as_array()
        .expect("milestones")
        .iter()
        .map(|m| m["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["forwarded", "escalated", "acked"]);
    assert_eq!(job["milestones"][2]["via"], "reply");
    assert_eq!(job["milestones"][2]["level"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cascade_lands_in_the_job_once_per_text_with_its_milestones() {
    let s = start().await;
    let id = s.create_job("10-yard dumpster, 5th & Main").await;
    assert_eq!(id, "job-1");

    let times = cascade(&s).await;

    let (st, job) = s.get(&format!("/jobs/{id}")).await;
    assert_eq!(st, StatusCode::OK, "{job}");
    assert_job_after_cascade(&s, &job, times);
    assert_eq!(job["description"], "10-yard dumpster, 5th & Main");
    assert_eq!(job["customer_phone"], CUSTOMER);
    assert_eq!(job["line"], LINE);

    // The relay's view of the same conversation, found by the job id.
    let (st, status) = s.get(&format!("/sms/dispatch-status/{id}")).await;
    assert_eq!(st, StatusCode::OK, "{status}");
    assert_eq!(status["job_id"], id.as_str());
    assert_eq!(status["final_status"], "acked");
    assert_eq!(status["customer_phone"], CUSTOMER);
    assert_eq!(status["forwarded_to_backup_at"], ts(times.1));
    assert_eq!(status["job_sync"]["owed"], 0);
    assert_eq!(status["job_sync"]["failures"], 0);

    // The list.
    let (st, list) = s.get("/jobs?status=open").await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(list["jobs"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["jobs"][0]["acked_by"], BACKUP);
    assert!(
        list["jobs"][0].get("messages").is_none(),
        "the list has no logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_database_outage_delays_no_text_and_everything_lands_once_it_is_back() {
    let s = start().await;
    let id = s.create_job("dumpster swap").await;

    // Another process holds the jobs database's write lock: every write
    // the relay asks for fails (SQLITE_BUSY after the lock wait).
    let locker = rusqlite::Connection::open(&s.jobs_path).expect("second connection");
    locker
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("take the write lock");

    let times = cascade(&s).await; // asserts every text went out at once

    let (st, job) = s.get(&format!("/jobs/{id}")).await;
    assert_eq!(st, StatusCode::OK, "reads still work: {job}");
    assert_eq!(job["messages"], json!([]), "nothing could be written");
    assert_eq!(job["acked_at"], Value::Null);
    let (st, status) = s.get(&format!("/sms/dispatch-status/{id}")).await;
    assert_eq!(st, StatusCode::OK, "{status}");
    assert_eq!(status["final_status"], "acked", "the relay carried on");
    let sync = &status["job_sync"];
    assert!(sync["failures"].as_u64().is_some_and(|f| f > 0), "{sync}");
    assert!(sync["owed"].as_u64().is_some_and(|o| o > 0), "{sync}");
    let err = sync["last_error"].as_str().expect("last error");
    assert!(err.contains("jobs database unavailable"), "{err}");
    assert!(
        !err.contains(s.jobs_path.to_str().expect("utf-8")),
        "no paths in the status: {err}"
    );
    assert!(sync["retry_at"].is_string(), "{sync}");

    // The lock is released; the next sweep past the retry time brings the
    // job up to date, each text once.
    locker.execute_batch("COMMIT").expect("release");
    drop(locker);
    s.clock.advance(JOB_RETRY_MAX + Duration::from_secs(1));
    let r = s.relay.sweep().await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(s.sent().len(), 3, "the sweep sent nothing more");

    let (st, job) = s.get(&format!("/jobs/{id}")).await;
    assert_eq!(st, StatusCode::OK, "{job}");
    assert_job_after_cascade(&s, &job, times);
    let (_, status) = s.get(&format!("/sms/dispatch-status/{id}")).await;
    assert_eq!(status["job_sync"]["owed"], 0, "{status}");
    assert_eq!(status["job_sync"]["failures"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_to_post_jobs_is_a_400_that_says_why_and_creates_nothing() {
    let s = start().await;
    let cases = [
        (
            json!({"description": "dumpster"}),
            "customer_phone is required",
        ),
        (
            json!({"customer_phone": "6195550100", "description": "dumpster"}),
            "E.164",
        ),
        (
            json!({"customer_phone": "+1 (619) call-me", "description": "dumpster"}),
            "E.164",
        ),
        (
            json!({"customer_phone": CUSTOMER, "description": "   "}),
            "description must not be empty",
        ),
        (
            json!({"customer_phone": CUSTOMER}),
            "description must not be empty",
        ),
        (
            json!({"customer_phone": PRIMARY, "description": "dumpster"}),
            "not a customer",
        ),
        (
            json!({"customer_phone": CUSTOMER, "description": "x", "line": "+15550001111"}),
            "not one of the relay's lines",
        ),
        (json!(["not", "an", "object"]), "JSON object"),
    ];
    for (body, says) in cases {
        let (st, v) = s.post("/jobs", body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body} → {v}");
        assert_eq!(v["error"]["code"], "bad_request", "{v}");
        let msg = v["error"]["message"].as_str().expect("message");
        assert!(msg.contains(says), "{body}: {msg:?} should say {says:?}");
    }
    // Not JSON at all.
    let res = s
        .http
        .post(format!("{}/jobs", s.base))
        .bearer_auth(DASH)
        .body("customer_phone=+16195550100")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // No token, or the wrong one: 401, as on the relay's dashboard routes.
    for auth in [None, Some("wrong-token-0123456789")] {
        let mut req = s
            .http
            .post(format!("{}/jobs", s.base))
            .json(&json!({"customer_phone": CUSTOMER, "description": "dumpster"}));
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    let (st, list) = s.get("/jobs?status=all").await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(list["jobs"], json!([]), "nothing was created");
    let (st, _) = s.get("/jobs/job-1").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_job_closes_its_conversation_and_the_next_text_starts_a_new_one() {
    let s = start().await;
    let id = s.create_job("dumpster pickup").await;
    s.clock.advance(MIN);
    s.text_twice(&inbound_sid(1), CUSTOMER, "Ready for pickup")
        .await;
    s.clock.advance(MIN);
    let closed = s.clock.now();
    let (st, job) = s
        .post(&format!("/jobs/{id}/close"), json!({"by": "alice"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{job}");
    assert_eq!(job["status"], "closed");
    assert_eq!(job["closed_at"], ts(closed));

    let (_, status) = s.get(&format!("/sms/dispatch-status/{id}")).await;
    assert_eq!(status["state"], "closed", "{status}");
    let (_, job) = s.get(&format!("/jobs/{id}")).await;
    let last = job["milestones"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["kind"], "closed", "{job:#}");
    assert_eq!(last["by"], "operator alice");

    // The customer's next text opens a new dispatch, belonging to no job
    // (theirs is closed), and lands in no closed job's log.
    s.clock.advance(MIN);
    s.text_twice(&inbound_sid(2), CUSTOMER, "One more thing")
        .await;
    let (st, status) = s.get(&format!("/sms/dispatch-status/{CUSTOMER}")).await;
    assert_eq!(st, StatusCode::OK, "{status}");
    assert_eq!(status["body"], "One more thing");
    assert_eq!(status["job_id"], Value::Null);
    let (_, job) = s.get(&format!("/jobs/{id}")).await;
    let bodies: Vec<&str> = job["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert!(bodies.contains(&"Ready for pickup"), "{job:#}");
    assert!(
        !bodies.iter().any(|b| b.contains("One more thing")),
        "{job:#}"
    );
}

/// The `Jobs` contract on the SQLite implementation itself: a key already
/// recorded for a job changes nothing; `resolve` finds the customer's most
/// recent open job on the line created at or before the time asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_db_records_each_key_once_per_job_and_resolves_the_open_job() {
    use qdn_relay_core::{
        Direction, DispatchId, JobMessage, Jobs, Milestone, MilestoneKind, Origin, Tag,
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let db = JobsDb::open(dir.path().join("jobs.db")).await.expect("db");
    let t = |m: u32| START.plus(m * MIN);
    let first = db
        .create(n(LINE), n(CUSTOMER), "first".into(), t(0))
        .await
        .expect("create");
    let second = db
        .create(n(LINE), n(CUSTOMER), "second".into(), t(10))
        .await
        .expect("create");
    let other_line = db
        .create(n("+16195550001"), n(CUSTOMER), "elsewhere".into(), t(20))
        .await
        .expect("create");
    let resolve = |at| db.resolve(n(LINE), n(CUSTOMER), at);
    assert_eq!(
        resolve(t(5)).await.expect("resolve"),
        Some(first.id.job_id())
    );
    assert_eq!(
        resolve(t(10)).await.expect("resolve"),
        Some(second.id.job_id()),
        "created at the very time asked counts"
    );
    assert_eq!(
        resolve(t(30)).await.expect("resolve"),
        Some(second.id.job_id())
    );
    assert_eq!(
        resolve(Timestamp::from_millis(START.as_millis() - 1))
            .await
            .expect("resolve"),
        None,
        "no job was created yet"
    );
    assert_eq!(
        db.resolve(n(LINE), n(PRIMARY), t(30))
            .await
            .expect("resolve"),
        None,
        "nobody else's job"
    );
    db.close(second.id, t(31)).await.expect("close");
    assert_eq!(
        resolve(t(40)).await.expect("resolve"),
        Some(first.id.job_id()),
        "a closed job is not resolved"
    );
    assert!(other_line.id != first.id);

    let dispatch = DispatchId::new(t(1), 42);
    let message = JobMessage {
        key: "in:SMin0001".into(),
        dispatch,
        tag: "K7".parse::<Tag>().expect("tag"),
        direction: Direction::Inbound,
        origin: Origin::Customer,
        author: None,
        from: n(CUSTOMER),
        to: n(LINE),
        body: "hello".into(),
        media: Vec::new(),
        sid: Some("SMin0001".parse().expect("sid")),
        purpose: None,
        at: t(1),
    };
    let ack = |at, by: &str| Milestone {
        key: format!("{dispatch}:acked"),
        dispatch,
        kind: MilestoneKind::Acked,
        at,
        round: None,
        level: Some(0),
        to: None,
        by: Some(qdn_relay_core::Actor::Phone(n(by))),
        via: Some(qdn_relay_core::AckVia::Reply),
    };
    let job = first.id.job_id();
    for _ in 0..3 {
        db.append_message(&job, &message).await.expect("append");
    }
    db.milestone(&job, &ack(t(2), PRIMARY)).await.expect("ack");
    // The same key again, even with other values, changes nothing.
    db.milestone(&job, &ack(t(3), BACKUP))
        .await
        .expect("ack again");
    // The same key on another job is that job's own entry.
    db.append_message(&other_line.id.job_id(), &message)
        .await
        .expect("append elsewhere");

    let detail = db.get(first.id).await.expect("get").expect("job");
    assert_eq!(detail.messages.len(), 1);
    assert_eq!(detail.milestones.len(), 1);
    assert_eq!(detail.job.acked_at, Some(t(2)));
    assert_eq!(detail.job.primary_ack_at, Some(t(2)), "acked at level 0");
    assert_eq!(detail.job.acked_by.as_deref(), Some(PRIMARY));
    let elsewhere = db.get(other_line.id).await.expect("get").expect("job");
    assert_eq!(elsewhere.messages.len(), 1);

    // A job this service does not have is an error (the relay retries).
    let missing: qdn_relay_core::JobId = "job-999".parse().expect("job id");
    assert!(db.append_message(&missing, &message).await.is_err());
    let foreign: qdn_relay_core::JobId = "JOB-ABC".parse().expect("job id");
    assert!(db.milestone(&foreign, &ack(t(2), PRIMARY)).await.is_err());
}

/// The service never serves `/jobs` open: without `RELAY_DASHBOARD_TOKEN`
/// it refuses to start, naming the variable.
#[test]
fn the_service_refuses_to_start_without_a_token_for_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_job-service"))
        .env_clear()
        .env("QDN_TWILIO_NUMBER", LINE)
        .env("RELAY_CHAIN", "+16195550101")
        .env("TWILIO_AUTH_TOKEN", TOKEN)
        .env("RELAY_LISTEN", "127.0.0.1:0")
        .env("RELAY_DB", dir.path().join("relay.db"))
        .env("JOBS_DB", dir.path().join("jobs.db"))
        .output()
        .expect("run job-service");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RELAY_DASHBOARD_TOKEN"), "{err}");
    assert!(
        !dir.path().join("jobs.db").exists(),
        "nothing created before refusing"
    );
}
