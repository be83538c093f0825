//! Several real `qdn-relay serve` processes on one DynamoDB table (moto,
//! started by `./scripts/test`, which exports `QDN_TEST_DYNAMO_URL`), the
//! webhooks spread over them round-robin, Twilio's Messages API faked in
//! this process so that every send is counted, and which server sent it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::{
    ACCOUNT, AUTH_TOKEN, BACKUP, DASH, LINE, PRIMARY, Server, accepted, binary, free_port, legs_to,
    sid,
};

fn moto_url() -> String {
    std::env::var("QDN_TEST_DYNAMO_URL").unwrap_or_else(|_| {
        panic!("QDN_TEST_DYNAMO_URL is not set: run ./scripts/test, which starts a DynamoDB emulator (moto)")
    })
}

/// A proxy in front of the emulator that lets one request through at a
/// time. moto serves each request on a thread of its own and does not
/// isolate transactions (a cancelled one restores the table as it was
/// when it started, undoing what others committed meanwhile), where
/// DynamoDB runs each request atomically: the servers' requests still
/// interleave freely between one another, which is the race under test.
///
/// While `down` is set, the proxy closes every connection at once, as an
/// unreachable DynamoDB would look.
async fn one_at_a_time(upstream: String, down: Arc<AtomicBool>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let addr = listener.local_addr().expect("proxy address");
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            if down.load(Ordering::SeqCst) {
                drop(client);
                continue;
            }
            let (gate, upstream) = (gate.clone(), upstream.clone());
            tokio::spawn(async move {
                // One request: the head, then Content-Length bytes.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match client.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    match client.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                // Forwarded with `Connection: close`, so the answer ends
                // with the connection.
                let mut forwarded: Vec<u8> = head
                    .split("\r\n")
                    .filter(|l| !l.to_ascii_lowercase().starts_with("connection:") && !l.is_empty())
                    .flat_map(|l| [l, "\r\n"])
                    .collect::<String>()
                    .into_bytes();
                forwarded.extend_from_slice(b"Connection: close\r\n\r\n");
                forwarded.extend_from_slice(&buf[head_end..head_end + length]);
                let answer = {
                    let _turn = gate.lock().await;
                    let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    if up.write_all(&forwarded).await.is_err() {
                        return;
                    }
                    let mut answer = Vec::new();
                    if up.read_to_end(&mut answer).await.is_err() {
                        return;
                    }
                    answer
                };
                let _ = client.write_all(&with_close(&answer)).await;
                let _ = client.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// An HTTP answer with `Connection: close` as its only connection
/// header: the client must not reuse a connection the proxy closes.
fn with_close(answer: &[u8]) -> Vec<u8> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return answer.to_vec();
    };
    let head = String::from_utf8_lossy(&answer[..end]);
    let mut out: String = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .flat_map(|l| [l, "\r\n"])
        .collect();
    out.push_str("Connection: close\r\n\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&answer[end + 4..]);
    out
}

/// The AWS environment of a process talking to the emulator at `url`.
fn aws_env_at(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_DYNAMODB", url.to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// The AWS environment of a process talking to the emulator directly.
fn aws_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_DYNAMODB", moto_url()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

/// A fresh table, created by the binary itself (`dynamo create-table`).
fn create_table(name: &str) {
    let out = std::process::Command::new(binary())
        .args(["dynamo", "create-table", "--table", name])
        .env_clear()
        .envs(aws_env())
        .output()
        .expect("run create-table");
    assert!(
        out.status.success(),
        "create-table failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn table_name(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("qdn-e2e-{what}-{}-{nanos}", std::process::id())
}

/// One request the fake Twilio took.
#[derive(Debug, Clone)]
struct Sent {
    /// Which server sent it (the path prefix of its `TWILIO_API_BASE`).
    server: String,
    to: String,
    body: String,
    /// The sid the fake answered with.
    sid: String,
}

/// Twilio's Messages API: answers each send with a fresh sid after
/// `delay`, and records it.
#[derive(Clone)]
struct FakeTwilio {
    sent: Arc<Mutex<Vec<Sent>>>,
    delay: Duration,
    /// A server whose sends are answered after `slow_delay` instead.
    slow: Option<(&'static str, Duration)>,
}

impl Respond for FakeTwilio {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form: HashMap<String, String> = form_urlencoded_pairs(&request.body);
        let server = request
            .url
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let sid = format!("SM{:032x}", sent.len() + 1);
        sent.push(Sent {
            server,
            to: form.get("To").cloned().unwrap_or_default(),
            body: form.get("Body").cloned().unwrap_or_default(),
            sid: sid.clone(),
        });
        let delay = match self.slow {
            Some((name, d)) if sent.last().is_some_and(|s| s.server == name) => d,
            _ => self.delay,
        };
        ResponseTemplate::new(201)
            .set_delay(delay)
            .set_body_json(serde_json::json!({
                "sid": sid, "status": "queued", "num_segments": "1",
                "account_sid": ACCOUNT,
            }))
    }
}

fn form_urlencoded_pairs(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

async fn fake_twilio(delay: Duration) -> (MockServer, FakeTwilio) {
    fake_twilio_with(delay, None).await
}

async fn fake_twilio_with(
    delay: Duration,
    slow: Option<(&'static str, Duration)>,
) -> (MockServer, FakeTwilio) {
    let server = MockServer::start().await;
    let fake = FakeTwilio {
        sent: Arc::default(),
        delay,
        slow,
    };
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/[a-z0-9]+/2010-04-01/Accounts/AC[0-9a-f]{32}/Messages\.json$",
        ))
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    (server, fake)
}

impl FakeTwilio {
    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// The forwards of `customer`'s texts to `to`.
    fn forwards(&self, customer: &str, to: &str) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.to == to && s.body.contains(customer))
            .collect()
    }
}

/// A server named `name` (`a`, `b`, ...) on `table`, sending to the fake
/// Twilio under `/<name>/`.
async fn start(
    name: &str,
    table: &str,
    dynamo: &str,
    twilio: &MockServer,
    ack_timeout: &str,
) -> Server {
    let dir = std::env::temp_dir();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log = dir.join(format!("{table}-{name}.log"));
    let out = std::fs::File::create(&log).expect("log file");
    let child = std::process::Command::new(binary())
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(aws_env_at(dynamo))
        .env("RELAY_DYNAMO_TABLE", table)
        .env("QDN_TWILIO_NUMBER", LINE)
        .env("RELAY_CHAIN", format!("{PRIMARY},{BACKUP}"))
        .env("RELAY_ACK_TIMEOUT", ack_timeout)
        .env("RELAY_SWEEP_INTERVAL", "300ms")
        .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("RELAY_PUBLIC_URL", &url)
        .env("RELAY_DASHBOARD_TOKEN", DASH)
        .env(
            "RELAY_DEV_FILE",
            dir.join(format!("{table}-{name}.dev.json")),
        )
        .env("TWILIO_ACCOUNT_SID", ACCOUNT)
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .env("TWILIO_API_BASE", format!("{}/{name}", twilio.uri()))
        .env("RUST_LOG", "info")
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("start qdn-relay");
    let server = Server { child, url, log };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{}/health", server.url)).send().await
            && r.status().is_success()
        {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "server {name} did not start:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a server's event stream into a string, in the background.
fn sse(server: &Server) -> Arc<Mutex<String>> {
    let seen = Arc::new(Mutex::new(String::new()));
    let url = format!("{}/sms/events?access_token={DASH}", server.url);
    let into = seen.clone();
    tokio::spawn(async move {
        let mut res = reqwest::Client::new()
            .get(url)
            .send()
            .await
            .expect("event stream");
        assert_eq!(res.status().as_u16(), 200);
        while let Ok(Some(chunk)) = res.chunk().await {
            into.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&String::from_utf8_lossy(&chunk));
        }
    });
    seen
}

/// Polls until `pred` holds of what `read` returns.
async fn eventually<T: std::fmt::Debug>(
    what: &str,
    secs: u64,
    mut read: impl AsyncFnMut() -> T,
    pred: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = read().await;
        if pred(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {v:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A signed inbound text to the server at `url`; `None` when the server
/// did not answer (it died).
async fn try_text(url: &str, sid: &str, from: &str, body: &str) -> Option<(u16, String)> {
    let params: Vec<(String, String)> = [
        ("MessageSid", sid),
        ("AccountSid", ACCOUNT),
        ("From", from),
        ("To", LINE),
        ("Body", body),
        ("NumMedia", "0"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let target = format!("{url}/sms/inbound");
    let signature =
        qdn_relay_twilio::SignatureValidator::new(qdn_relay_twilio::Secret::new(AUTH_TOKEN))
            .sign_form(&target, &params);
    let res = reqwest::Client::new()
        .post(target)
        .header("X-Twilio-Signature", signature)
        .form(&params)
        .send()
        .await
        .ok()?;
    let code = res.status().as_u16();
    Some((code, res.text().await.ok()?))
}

fn customer(i: usize) -> String {
    format!("+1619555{:04}", 2000 + i)
}

/// Three servers, one table: every text forwarded once, every timeout
/// escalated once, an ack through one server stops the escalation the
/// others would fire, and each server's event stream shows the others'
/// work.
#[tokio::test(flavor = "multi_thread")]
async fn three_servers_on_one_table_forward_and_escalate_each_text_once() {
    let table = table_name("three");
    create_table(&table);
    let (twilio, fake) = fake_twilio(Duration::ZERO).await;
    let dynamo = one_at_a_time(moto_url(), Arc::default()).await;
    let servers = [
        start("a", &table, &dynamo, &twilio, "4s").await,
        start("b", &table, &dynamo, &twilio, "4s").await,
        start("c", &table, &dynamo, &twilio, "4s").await,
    ];
    let on_b = sse(&servers[1]);
    // Give the event stream a moment to subscribe (it reports what happens
    // from its start).
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Customer 0 texts through B; the dispatch is acked through A as soon
    // as its forward is out: no server escalates it.
    let first = sid(100);
    let (code, text) = servers[1]
        .text(&first, &customer(0), "Dumpster request 0")
        .await;
    assert_eq!(code, 200, "{text}");
    let v = servers[1]
        .wait_for(&first, "the first forward", |v| {
            legs_to(v, PRIMARY).iter().any(|l| accepted(l))
        })
        .await;
    let id = v["dispatch_id"].as_str().expect("dispatch id").to_owned();
    let res = reqwest::Client::new()
        .post(format!("{}/sms/dispatches/{id}/ack", servers[0].url))
        .bearer_auth(DASH)
        .json(&serde_json::json!({"by": "ops"}))
        .send()
        .await
        .expect("ack");
    let code = res.status().as_u16();
    assert_eq!(code, 200, "{}", res.text().await.unwrap_or_default());

    // Eleven more customers, their texts round-robin; each text's webhook
    // retried on the next server (Twilio retries; a balancer spreads).
    const N: usize = 12;
    for i in 1..N {
        let s = sid(100 + i as u32);
        let body = format!("Dumpster request {i}");
        let (code, text) = servers[i % 3].text(&s, &customer(i), &body).await;
        assert_eq!(code, 200, "{text}");
        let (code, _) = servers[(i + 1) % 3].text(&s, &customer(i), &body).await;
        assert_eq!(code, 200);
    }

    // Every other dispatch runs its whole chain: primary, backup, failed.
    for i in 1..N {
        let s = sid(100 + i as u32);
        servers[(i + 2) % 3]
            .wait_for(&s, "the chain to run out", |v| {
                v["final_status"] == "failed"
            })
            .await;
    }
    // Past the last timeout of any dispatch, with every server sweeping.
    tokio::time::sleep(Duration::from_secs(1)).await;

    for i in 0..N {
        let c = customer(i);
        assert_eq!(
            fake.forwards(&c, PRIMARY).len(),
            1,
            "customer {c}'s text forwarded to the primary once: {:#?}",
            fake.forwards(&c, PRIMARY)
        );
        let to_backup = fake.forwards(&c, BACKUP).len();
        if i == 0 {
            assert_eq!(to_backup, 0, "the ack through A stopped the escalation");
        } else {
            assert_eq!(to_backup, 1, "customer {c} escalated once");
        }
    }
    let acked = servers[1].status(&first).await.expect("status");
    assert_eq!(acked["final_status"], "acked");
    assert!(legs_to(&acked, BACKUP).is_empty());
    let senders: std::collections::BTreeSet<String> =
        fake.sent().into_iter().map(|s| s.server).collect();
    assert!(
        senders.len() > 1,
        "the work was shared between servers: {senders:?}"
    );

    // B's event stream shows what A did (the ack) and every dispatch
    // opened on A and C.
    let seen = eventually(
        "B's event stream to show A's ack",
        10,
        async || on_b.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        |s: &String| s.contains("event: acked") && s.contains(&id),
    )
    .await;
    for i in 0..N {
        let s = sid(100 + i as u32);
        let d = servers[1].status(&s).await.expect("status");
        let did = d["dispatch_id"].as_str().expect("id");
        assert!(
            seen.contains(did),
            "B's stream shows dispatch {did} (opened through server {})",
            if i == 0 { "b" } else { ["a", "b", "c"][i % 3] }
        );
    }
}

/// Two servers under load, one killed with SIGKILL while Twilio holds
/// several of its sends (of texts it had answered: a server answers once a
/// text is durable): the other carries on; every text a server
/// accepted, or whose webhook was retried on the survivor, is forwarded
/// (what the dead server left in its outbox, after the outbox's grace);
/// a text goes out twice only when the dead server had sent it and died
/// before recording Twilio's answer (the outbox's documented window), and
/// then the dispatch records the survivor's send.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_one_server_under_load_loses_nothing_accepted() {
    let table = table_name("kill");
    create_table(&table);
    // Twilio answers A's sends slowly, so some are in flight when it dies.
    let (twilio, fake) =
        fake_twilio_with(Duration::ZERO, Some(("a", Duration::from_millis(1500)))).await;
    let dynamo = one_at_a_time(moto_url(), Arc::default()).await;
    let mut a = start("a", &table, &dynamo, &twilio, "10m").await;
    let b = start("b", &table, &dynamo, &twilio, "10m").await;

    let send_all = |range: std::ops::Range<usize>| {
        range
            .map(|i| {
                let s = sid(200 + i as u32);
                let url = if i % 2 == 0 {
                    a.url.clone()
                } else {
                    b.url.clone()
                };
                let c = customer(100 + i);
                tokio::spawn(async move {
                    let r = try_text(&url, &s, &c, &format!("Load {i}")).await;
                    (s, c, r, i % 2 == 0)
                })
            })
            .collect::<Vec<_>>()
    };
    // A first wave both servers finish; a second in which A dies once
    // Twilio holds three of its sends.
    let mut waves = Vec::new();
    for h in send_all(0..8) {
        waves.push(h.await.expect("task"));
    }
    let sent_before = fake.sent().iter().filter(|s| s.server == "a").count();
    let second = send_all(8..24);
    eventually(
        "three of A's second-wave sends in flight",
        60,
        async || fake.sent().iter().filter(|s| s.server == "a").count(),
        |n| *n >= sent_before + 3,
    )
    .await;
    a.kill9();
    for h in second {
        waves.push(h.await.expect("task"));
    }
    let mut retried = 0;
    let mut texts = Vec::new();
    for (s, c, r, to_a) in waves {
        match r {
            Some((200, _)) => {}
            _ => {
                // A died under this webhook: Twilio (or the balancer)
                // tries again, on B.
                retried += 1;
                let (code, body) = b.text(&s, &c, "retried").await;
                assert_eq!(code, 200, "{body}");
            }
        }
        texts.push((s, c, to_a));
    }
    // A answers a text once it is durable and sends after the answer, so
    // when it dies the texts it was still sending (Twilio held three of
    // them; others had not reached Twilio yet) were already answered 200:
    // B must send them from A's outbox (checked below). A webhook A had
    // not answered is retried on B above.

    // B forwards every text: its own, A's finished ones, and what A left
    // in its outbox (after the outbox's grace period).
    let mut picked_up = 0;
    let mut taken_over = 0;
    for (s, c, to_a) in &texts {
        let v = eventually(
            "every accepted text forwarded",
            150,
            async || b.status(s).await,
            |v: &Option<Value>| {
                v.as_ref()
                    .is_some_and(|v| legs_to(v, PRIMARY).iter().any(|l| accepted(l)))
            },
        )
        .await
        .expect("status");
        let sends = fake.forwards(c, PRIMARY);
        let recorded: Vec<&str> = legs_to(&v, PRIMARY)
            .iter()
            .filter_map(|l| l["sid"].as_str())
            .collect();
        assert_eq!(recorded.len(), 1, "one leg to the primary: {v:#}");
        if *to_a && sends.last().is_some_and(|l| l.server == "b") {
            // Sent to A, forwarded by B: what A left in its outbox.
            taken_over += 1;
        }
        match sends.as_slice() {
            [once] => assert_eq!(recorded, [once.sid.as_str()]),
            [first, again] => {
                // A's send, whose answer A never recorded, then B's.
                picked_up += 1;
                assert_eq!((first.server.as_str(), again.server.as_str()), ("a", "b"));
                assert_eq!(recorded, [again.sid.as_str()], "{sends:#?}");
            }
            other => panic!("{c}: sent {} times: {other:#?}", other.len()),
        }
    }
    assert!(
        taken_over >= 1,
        "B sent what A left in its outbox: {:#?}",
        fake.sent()
    );
    eprintln!(
        "kill -9 under load: {} texts, {retried} webhooks retried on B, {taken_over} of A's forwarded by B from its outbox ({picked_up} of them sent by A too, its answer never recorded), {} sends",
        texts.len(),
        fake.sent().len()
    );
}

/// `/health` says whether the server can reach its table: 503 while the
/// table is unreachable (a balancer then sends it no webhooks), 200 again
/// once it is back; SIGTERM still drains and exits cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn health_follows_the_table_and_sigterm_drains() {
    let table = table_name("health");
    create_table(&table);
    let (twilio, _fake) = fake_twilio(Duration::ZERO).await;
    let down = Arc::new(AtomicBool::new(false));
    let dynamo = one_at_a_time(moto_url(), down.clone()).await;
    let mut server = start("a", &table, &dynamo, &twilio, "10m").await;
    let health = async |s: &Server| {
        reqwest::Client::new()
            .get(format!("{}/health", s.url))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(health(&server).await, 200);
    down.store(true, Ordering::SeqCst);
    eventually(
        "503 while the table is unreachable",
        30,
        async || health(&server).await,
        |c| *c == 503,
    )
    .await;
    down.store(false, Ordering::SeqCst);
    eventually(
        "200 once it is back",
        30,
        async || health(&server).await,
        |c| *c == 200,
    )
    .await;
    let status = server.terminate();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        server.logs()
    );
    assert!(server.logs().contains("shutting down"), "{}", server.logs());
}

/// A table that does not exist stops the server at its start, naming the
/// variable and the table.
#[test]
fn a_missing_table_stops_the_server_at_start() {
    let out = std::process::Command::new(binary())
        .arg("serve")
        .env_clear()
        .envs(aws_env())
        .env("RELAY_DYNAMO_TABLE", "qdn-e2e-no-such-table")
        .env("QDN_TWILIO_NUMBER", LINE)
        .env("RELAY_CHAIN", PRIMARY)
        .env("RELAY_LISTEN", "127.0.0.1:0")
        .env(
            "RELAY_DEV_FILE",
            std::env::temp_dir().join("qdn-e2e-missing.dev.json"),
        )
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("RELAY_DYNAMO_TABLE") && err.contains("qdn-e2e-no-such-table"),
        "{err}"
    );
}
