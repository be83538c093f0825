//! The fault soak: mixed traffic on the real binary while its Twilio fails
//! in every class at random and the server is killed with SIGKILL every
//! few seconds, then an audit from outside.
//!
//! Traffic: new texts from a pool of customers, follow-ups, webhooks
//! retried as Twilio retries them (`#rc=3`) and duplicated, status
//! callbacks out of order and twice, dashboard acks, replies and closes.
//! Twilio's REST API is a fake on loopback that answers each send, at
//! random, accepted, 429 (retry later), 400 with 21211 (invalid number:
//! that dispatcher is passed over in the dispatch), 400 with 21611 (the
//! sending number's queue is full: retry later), or 500 after it has sent
//! the text (the relay must record "maybe sent" and never send it again).
//! (An opt-out error, 21610, is left out: it would opt a dispatcher out of
//! every later dispatch, which the B8 tests cover, and starve the soak.)
//!
//! The audit: every inbound webhook answered 2xx is in its dispatch
//! (lost = 0); no leg was accepted twice by the fake within one server
//! life (doubled = 0; a leg accepted again after a SIGKILL that hit
//! between the provider's answer and its save is the outbox's documented
//! window, counted apart); a maybe-sent leg is never sent again; each
//! level's forward and each escalation happened at most once per round;
//! no dispatch is stuck (open, unacknowledged and with no deadline).
//!
//! `QDN_SOAK_SECS` (default 20) and `QDN_SOAK_KILL_EVERY_MS` (default
//! 3000) size it; `scripts/soak` runs it for minutes and prints the
//! figures, which BENCHMARKS.md records.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::{ACCOUNT, AUTH_TOKEN, BACKUP, DASH, LINE, PRIMARY, Server, binary, free_port};

fn env_u64(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One text the fake accepted (or sent before answering 500).
#[derive(Clone, Debug)]
struct Sent {
    sid: String,
    dispatch: String,
    leg: u32,
    /// The server's life it was sent in (kills so far).
    life: u64,
    /// Answered 500 although it went out.
    maybe: bool,
}

#[derive(Default)]
struct Fake {
    rng: u64,
    next: u64,
    sent: Vec<Sent>,
    faults: BTreeMap<&'static str, u64>,
}

struct FakeTwilio {
    state: Mutex<Fake>,
    /// Faults on (off for the final quiet period).
    faulty: AtomicBool,
    /// Kills so far (the server's life).
    life: Arc<AtomicU64>,
}

impl FakeTwilio {
    fn lock(&self) -> std::sync::MutexGuard<'_, Fake> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn rand(state: &mut u64) -> u64 {
    // xorshift64*: reproducible from the seed.
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message, "status": status.as_u16()})),
    )
        .into_response()
}

async fn create_message(
    State(fake): State<Arc<FakeTwilio>>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let callback = get("StatusCallback");
    let query: HashMap<String, String> = callback
        .split_once('?')
        .map(|(_, q)| q.split('#').next().unwrap_or_default())
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let dispatch = query.get("dispatch").cloned().unwrap_or_default();
    let leg: u32 = query
        .get("leg")
        .and_then(|l| l.parse().ok())
        .unwrap_or(u32::MAX);
    let life = fake.life.load(Ordering::SeqCst);
    let mut s = fake.lock();
    let roll = if fake.faulty.load(Ordering::SeqCst) {
        rand(&mut s.rng) % 100
    } else {
        0
    };
    let fault = match roll {
        0..=71 => None,
        72..=79 => Some("429"),
        80..=85 => Some("21211"),
        86..=89 => Some("21611"),
        _ => Some("500-after-send"),
    };
    if let Some(f) = fault {
        *s.faults.entry(f).or_default() += 1;
    }
    match fault {
        Some("429") => {
            return twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
        }
        Some("21211") => {
            return twilio_error(StatusCode::BAD_REQUEST, 21211, "Invalid 'To' Phone Number");
        }
        Some("21611") => {
            return twilio_error(
                StatusCode::BAD_REQUEST,
                21611,
                "This 'From' number has exceeded the maximum number of queued messages",
            );
        }
        _ => {}
    }
    s.next += 1;
    let sid = format!("SM{:032x}", s.next);
    let maybe = fault.is_some();
    s.sent.push(Sent {
        sid: sid.clone(),
        dispatch,
        leg,
        life,
        maybe,
    });
    if maybe {
        return twilio_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            "Internal Server Error",
        );
    }
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "sid": sid,
            "status": "queued",
            "to": get("To"),
            "from": get("From"),
            "body": get("Body"),
            "account_sid": ACCOUNT,
        })),
    )
        .into_response()
}

async fn start_fake(life: Arc<AtomicU64>, seed: u64) -> (String, Arc<FakeTwilio>) {
    let fake = Arc::new(FakeTwilio {
        state: Mutex::new(Fake {
            rng: seed | 1,
            ..Fake::default()
        }),
        faulty: AtomicBool::new(true),
        life,
    });
    let app = axum::Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Messages.json",
            post(create_message),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fake Twilio");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, fake)
}

fn spawn_server(db: &std::path::Path, port: u16, api: &str) -> Server {
    let url = format!("http://127.0.0.1:{port}");
    let log = db.with_extension(format!("{port}.log"));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .expect("log file");
    let child = Command::new(binary())
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("QDN_TWILIO_NUMBER", LINE)
        .env("RELAY_POLICY", db.with_extension("policy.toml"))
        .env("RELAY_SWEEP_INTERVAL", "100ms")
        .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("RELAY_DB", db)
        .env("RELAY_PUBLIC_URL", &url)
        .env("RELAY_DASHBOARD_TOKEN", DASH)
        .env("RELAY_DEV_FILE", db.with_extension("dev.json"))
        .env("TWILIO_ACCOUNT_SID", ACCOUNT)
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .env("TWILIO_API_BASE", api)
        .env("RUST_LOG", "warn")
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .expect("start qdn-relay");
    Server { child, url, log }
}

async fn wait_healthy(server: &Server) {
    let url = &server.url;
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client.get(format!("{url}/health")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not come back:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the traffic did, counted.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    accepted_texts: Mutex<BTreeSet<String>>,
    refused: AtomicU64,
    dashboard_actions: AtomicU64,
    callbacks: AtomicU64,
}

struct Traffic {
    url: String,
    client: reqwest::Client,
    counts: Counts,
}

impl Traffic {
    fn sign(&self, path_and_query: &str, params: &[(String, String)]) -> String {
        qdn_relay_twilio::SignatureValidator::new(qdn_relay_twilio::Secret::new(AUTH_TOKEN))
            .sign_form(&format!("{}{path_and_query}", self.url), params)
    }

    async fn form(&self, path_and_query: &str, pairs: &[(&str, &str)]) -> Option<u16> {
        let params: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let sig = self.sign(path_and_query, &params);
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        let res = self
            .client
            .post(format!("{}{path_and_query}", self.url))
            .header("X-Twilio-Signature", sig)
            .form(&params)
            .send()
            .await
            .ok()?;
        Some(res.status().as_u16())
    }

    /// A customer's text, retried up to three more times on a failed
    /// connection or a 5xx (Twilio with `#rc=3&rp=ct,5xx`).
    async fn text(&self, sid: &str, from: &str, body: &str) {
        for _ in 0..4 {
            let status = self
                .form(
                    "/sms/inbound",
                    &[
                        ("MessageSid", sid),
                        ("AccountSid", ACCOUNT),
                        ("From", from),
                        ("To", LINE),
                        ("Body", body),
                        ("NumMedia", "0"),
                    ],
                )
                .await;
            match status {
                Some(s) if (200..300).contains(&s) => {
                    self.counts
                        .accepted_texts
                        .lock()
                        .expect("counts")
                        .insert(sid.to_owned());
                    return;
                }
                Some(s) if s < 500 => {
                    self.counts.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(150)).await,
            }
        }
    }

    async fn callback(&self, sent: &Sent, status: &str, code: Option<&str>) {
        let path = format!("/sms/status?dispatch={}&leg={}", sent.dispatch, sent.leg);
        let mut p = vec![
            ("MessageSid", sent.sid.as_str()),
            ("AccountSid", ACCOUNT),
            ("MessageStatus", status),
        ];
        if let Some(c) = code {
            p.push(("ErrorCode", c));
        }
        self.counts.callbacks.fetch_add(1, Ordering::Relaxed);
        let _ = self.form(&path, &p).await;
    }

    async fn dashboard(&self, id: &str, action: &str, body: Value) {
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
        self.counts
            .dashboard_actions
            .fetch_add(1, Ordering::Relaxed);
        let _ = self
            .client
            .post(format!("{}/sms/dispatches/{id}/{action}", self.url))
            .bearer_auth(DASH)
            .json(&body)
            .send()
            .await;
    }

    async fn status(&self, key: &str) -> Option<Value> {
        let res = self
            .client
            .get(format!("{}/sms/dispatch-status/{key}", self.url))
            .bearer_auth(DASH)
            .send()
            .await
            .ok()?;
        if res.status() == 200 {
            res.json().await.ok()
        } else {
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_soak_loses_nothing_and_doubles_nothing() {
    let secs = env_u64("QDN_SOAK_SECS", 20);
    let kill_every = Duration::from_millis(env_u64("QDN_SOAK_KILL_EVERY_MS", 3000));
    let seed = env_u64("QDN_SOAK_SEED", 0x5eed_2026);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("relay.db");
    let life = Arc::new(AtomicU64::new(0));
    let (api, fake) = start_fake(life.clone(), seed).await;
    let port = free_port();
    // Two levels of 2 s; limits far above the soak's rate, so every text
    // is sent (the defaults of the RELAY_CHAIN form would digest them).
    std::fs::write(
        db.with_extension("policy.toml"),
        format!(
            "timeout = \"2s\"\n\
             [throttle]\nper_destination = [\"10000/1m\"]\n\
             [[levels]]\ntargets = [\"{PRIMARY}\"]\n\
             [[levels]]\ntargets = [\"{BACKUP}\"]\n"
        ),
    )
    .expect("policy file");
    let mut server = spawn_server(&db, port, &api);
    wait_healthy(&server).await;
    let traffic = Arc::new(Traffic {
        url: server.url.clone(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        counts: Counts::default(),
    });
    let until = Instant::now() + Duration::from_secs(secs);
    let next_sid = Arc::new(AtomicU64::new(1));

    // Customers texting: new dispatches, follow-ups, duplicates.
    let mut tasks = Vec::new();
    for worker in 0..4u64 {
        let t = traffic.clone();
        let next_sid = next_sid.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = seed ^ (worker + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            while Instant::now() < until {
                let n = next_sid.fetch_add(1, Ordering::Relaxed);
                let sid = format!("SM{:08x}{n:024x}", std::process::id());
                let customer = format!("+1619555{:04}", 2000 + rand(&mut rng) % 40);
                t.text(&sid, &customer, &format!("soak text {n}")).await;
                if rand(&mut rng).is_multiple_of(10) {
                    // Twilio delivering the same webhook twice.
                    t.text(&sid, &customer, &format!("soak text {n}")).await;
                }
                tokio::time::sleep(Duration::from_millis(20 + rand(&mut rng) % 60)).await;
            }
        }));
    }
    // Status callbacks for what the fake sent: out of order, some twice.
    {
        let t = traffic.clone();
        let fake = fake.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = seed ^ 0xca11_bac4;
            let mut done = 0usize;
            while Instant::now() < until {
                let batch: Vec<Sent> = fake.lock().sent[done..].to_vec();
                done += batch.len();
                for s in batch.iter().rev() {
                    let (status, code) = match rand(&mut rng) % 10 {
                        0 => ("undelivered", Some("30006")),
                        1 => ("failed", Some("30003")),
                        _ => ("delivered", None),
                    };
                    t.callback(s, status, code).await;
                    if rand(&mut rng).is_multiple_of(4) {
                        t.callback(s, "sent", None).await;
                    }
                    if rand(&mut rng).is_multiple_of(5) {
                        t.callback(s, status, code).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    // The dashboard: acks, replies and closes on dispatches texts opened.
    {
        let t = traffic.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = seed ^ 0xda5b_0a4d;
            while Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let picked = {
                    let accepted = t.counts.accepted_texts.lock().expect("counts");
                    if accepted.is_empty() {
                        continue;
                    }
                    let i = (rand(&mut rng) as usize) % accepted.len();
                    accepted.iter().nth(i).cloned()
                };
                let Some(sid) = picked else { continue };
                let Some(v) = t.status(&sid).await else {
                    continue;
                };
                let Some(id) = v["dispatch_id"].as_str() else {
                    continue;
                };
                match rand(&mut rng) % 3 {
                    0 => t.dashboard(id, "ack", json!({"by": "soak"})).await,
                    1 => {
                        t.dashboard(id, "reply", json!({"by": "soak", "body": "on our way"}))
                            .await;
                    }
                    _ => t.dashboard(id, "close", json!({"by": "soak"})).await,
                }
            }
        }));
    }
    // SIGKILL every few seconds, restarted on the same file and port.
    let mut kills = 0u64;
    while Instant::now() + kill_every < until {
        tokio::time::sleep(kill_every).await;
        server.kill9();
        kills += 1;
        life.fetch_add(1, Ordering::SeqCst);
        server = spawn_server(&db, port, &api);
        wait_healthy(&server).await;
    }
    for t in tasks {
        t.await.expect("traffic task");
    }

    // Quiet: no more faults, one clean life, time for every due deadline.
    fake.faulty.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(6)).await;

    // ---- the audit, from outside ----------------------------------------
    let accepted: Vec<String> = traffic
        .counts
        .accepted_texts
        .lock()
        .expect("counts")
        .iter()
        .cloned()
        .collect();
    let mut lost = Vec::new();
    let mut dispatches: BTreeMap<String, Value> = BTreeMap::new();
    for sid in &accepted {
        match traffic.status(sid).await {
            Some(v) => {
                let in_thread = v["thread"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|e| e["sid"] == sid.as_str()));
                if !in_thread {
                    lost.push(sid.clone());
                }
                if let Some(id) = v["dispatch_id"].as_str() {
                    dispatches.insert(id.to_owned(), v);
                }
            }
            None => lost.push(sid.clone()),
        }
    }
    // Fresh copies of every dispatch (the one above may predate a later
    // text of the same dispatch).
    for (id, v) in dispatches.iter_mut() {
        if let Some(fresh) = traffic.status(id).await {
            *v = fresh;
        }
    }

    let sent = fake.lock().sent.clone();
    let mut by_leg: BTreeMap<(String, u32), Vec<&Sent>> = BTreeMap::new();
    for s in &sent {
        by_leg
            .entry((s.dispatch.clone(), s.leg))
            .or_default()
            .push(s);
    }
    let mut doubled = Vec::new();
    let mut resent_after_kill = 0usize;
    let mut maybe_resent = Vec::new();
    for (key, sends) in &by_leg {
        if sends.len() < 2 {
            continue;
        }
        if sends[0].maybe {
            maybe_resent.push(key.clone());
        } else if sends.windows(2).all(|w| w[0].life < w[1].life) {
            resent_after_kill += sends.len() - 1;
        } else {
            doubled.push(key.clone());
        }
    }
    let maybe_sent = sent.iter().filter(|s| s.maybe).count();
    assert_eq!(
        Some(&(maybe_sent as u64)),
        fake.lock().faults.get("500-after-send").or(Some(&0)),
        "every maybe-sent text is a 500 after sending"
    );

    let mut twice_fired = Vec::new();
    let mut stuck = Vec::new();
    for (id, v) in &dispatches {
        let legs = v["legs"].as_array().cloned().unwrap_or_default();
        let mut forwards: BTreeMap<(String, String), u32> = BTreeMap::new();
        for l in &legs {
            if l["purpose"]["kind"] == "forward" || l["purpose"].get("forward").is_some() {
                let key = (l["purpose"].to_string(), l["to"].to_string());
                *forwards.entry(key).or_default() += 1;
            }
        }
        if forwards.values().any(|&c| c > 1) {
            twice_fired.push(format!("{id}: forwards {forwards:?}"));
        }
        let mut escalations: BTreeMap<String, u32> = BTreeMap::new();
        for e in v["events"].as_array().into_iter().flatten() {
            if e["kind"] == "escalated" || e["type"] == "escalated" {
                let key = format!("{}/{}", e["round"], e["from_level"]);
                *escalations.entry(key).or_default() += 1;
            }
        }
        if escalations.values().any(|&c| c > 1) {
            twice_fired.push(format!("{id}: escalations {escalations:?}"));
        }
        let open = v["state"] == "open";
        let waiting = !v["next_deadline"].is_null() || !v["holding_until"].is_null();
        if open && !waiting {
            stuck.push(id.clone());
        }
    }
    let faults = fake.lock().faults.clone();
    println!(
        "soak: {secs} s, requests {}, texts accepted {}, refused {}, callbacks {}, dashboard actions {}, \
         kills {kills}, provider faults {faults:?}, sends {}, maybe sent {maybe_sent}, \
         resent after a kill (outbox window) {resent_after_kill}, dispatches {}, \
         lost {}, doubled {}, maybe-sent resent {}, fired twice {}, stuck {}",
        traffic.counts.requests.load(Ordering::Relaxed),
        accepted.len(),
        traffic.counts.refused.load(Ordering::Relaxed),
        traffic.counts.callbacks.load(Ordering::Relaxed),
        traffic.counts.dashboard_actions.load(Ordering::Relaxed),
        sent.len(),
        dispatches.len(),
        lost.len(),
        doubled.len(),
        maybe_resent.len(),
        twice_fired.len(),
        stuck.len(),
    );
    let logs = server.logs();
    assert!(kills > 0 || secs < 4, "the soak killed nothing");
    assert!(!accepted.is_empty(), "no text was accepted:\n{logs}");
    assert!(
        lost.is_empty(),
        "texts answered 2xx but not in a dispatch: {lost:?}"
    );
    assert!(
        doubled.is_empty(),
        "legs sent twice in one life: {doubled:?}"
    );
    assert!(
        maybe_resent.is_empty(),
        "maybe-sent legs sent again: {maybe_resent:?}"
    );
    assert!(
        twice_fired.is_empty(),
        "deadlines fired twice: {twice_fired:?}"
    );
    assert!(stuck.is_empty(), "dispatches stuck: {stuck:?}");
}
