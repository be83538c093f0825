//! End-to-end: the real `qdn-relay` binary on a free port, with Stoplight
//! Prism (mocking Twilio's official OpenAPI spec) as Twilio's REST API,
//! driven only over HTTP.
//!
//! `./scripts/test` starts Prism and exports `QDN_TEST_PRISM_URL`; the
//! binary is the workspace's `target/<profile>/qdn-relay` (or
//! `QDN_RELAY_BIN`). Prism never sends status callbacks: the tests post
//! them, signed, as Twilio would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qdn_relay_twilio::{Secret, SignatureValidator};
use serde_json::Value;

mod carriers;
mod container;
mod scale;
mod soak;

const AUTH_TOKEN: &str = "e2e-twilio-auth-token";
const DASH: &str = "e2e-dashboard-token-0123456789";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const LINE: &str = "+16195550000";
const CUSTOMER: &str = "+16195550100";
const PRIMARY: &str = "+16195550101";
const BACKUP: &str = "+18583354807";

fn prism_url() -> String {
    std::env::var("QDN_TEST_PRISM_URL").unwrap_or_else(|_| {
        panic!(
            "QDN_TEST_PRISM_URL is not set: run the suite with ./scripts/test, which starts Prism"
        )
    })
}

fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("QDN_RELAY_BIN") {
        return PathBuf::from(p);
    }
    // tests/e2e runs from target/<profile>/deps/e2e-<hash>: the binary is
    // two levels up.
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let bin = dir.join("qdn-relay");
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build -p qdn-relay-cli` or run ./scripts/test",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    async fn start(db: &Path, port: u16, ack_timeout: &str) -> Server {
        Self::start_with(db, port, ack_timeout, &prism_url(), &[]).await
    }

    /// Starts the binary with Twilio's REST API at `twilio_api` and `extra`
    /// variables on top of the common ones.
    async fn start_with(
        db: &Path,
        port: u16,
        ack_timeout: &str,
        twilio_api: &str,
        extra: &[(&str, String)],
    ) -> Server {
        let url = format!("http://127.0.0.1:{port}");
        let log = db.with_extension(format!("{port}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("QDN_TWILIO_NUMBER", LINE)
            .env("RELAY_CHAIN", format!("{PRIMARY},{BACKUP}"))
            .env("RELAY_ACK_TIMEOUT", ack_timeout)
            .env("RELAY_SWEEP_INTERVAL", "100ms")
            .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("RELAY_DB", db)
            .env("RELAY_PUBLIC_URL", &url)
            .env("RELAY_DASHBOARD_TOKEN", DASH)
            .env("RELAY_DEV_FILE", db.with_extension("dev.json"))
            .env("TWILIO_ACCOUNT_SID", ACCOUNT)
            .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
            .env("TWILIO_API_BASE", twilio_api)
            .env("RUST_LOG", "info")
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        let child = command.spawn().expect("start qdn-relay");
        let server = Server { child, url, log };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("{}/health", server.url)).send().await
                && r.status().is_success()
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "server did not start:\n{}",
                server.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no graceful shutdown:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    async fn post_form(&self, path: &str, pairs: &[(&str, &str)], sign: bool) -> (u16, String) {
        let params: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut req = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .form(&params);
        if sign {
            let sig = SignatureValidator::new(Secret::new(AUTH_TOKEN))
                .sign_form(&format!("{}{path}", self.url), &params);
            req = req.header("X-Twilio-Signature", sig);
        }
        let res = req.send().await.expect("request");
        (res.status().as_u16(), res.text().await.unwrap_or_default())
    }

    async fn text(&self, sid: &str, from: &str, body: &str) -> (u16, String) {
        self.post_form(
            "/sms/inbound",
            &[
                ("MessageSid", sid),
                ("AccountSid", ACCOUNT),
                ("From", from),
                ("To", LINE),
                ("Body", body),
                ("NumMedia", "0"),
            ],
            true,
        )
        .await
    }

    async fn callback(&self, sid: &str, status: &str, code: Option<&str>) -> (u16, String) {
        let mut p = vec![
            ("MessageSid", sid),
            ("AccountSid", ACCOUNT),
            ("MessageStatus", status),
        ];
        if let Some(c) = code {
            p.push(("ErrorCode", c));
        }
        self.post_form("/sms/status", &p, true).await
    }

    async fn status(&self, key: &str) -> Option<Value> {
        let res = reqwest::Client::new()
            .get(format!("{}/sms/dispatch-status/{key}", self.url))
            .bearer_auth(DASH)
            .send()
            .await
            .expect("status request");
        match res.status().as_u16() {
            404 => None,
            200 => Some(res.json().await.expect("status JSON")),
            other => panic!(
                "status answered {other}: {}",
                res.text().await.unwrap_or_default()
            ),
        }
    }

    /// Polls the status until `pred` holds (the sweeper runs on its own).
    async fn wait_for(&self, key: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(v) = self.status(key).await
                && pred(&v)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{:#?}\n{}",
                self.status(key).await,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sid(n: u32) -> String {
    format!("SM{:08x}{n:024x}", std::process::id())
}

fn legs_to<'a>(v: &'a Value, to: &str) -> Vec<&'a Value> {
    v["legs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["to"] == to)
        .collect()
}

fn accepted(leg: &Value) -> bool {
    leg["sid"]
        .as_str()
        .is_some_and(|s| s.starts_with("SM") || s.starts_with("MM"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_cascade_over_http_against_prism() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("relay.db");
    let server = Server::start(&db, free_port(), "2s").await;
    let first = sid(1);

    // Signed inbound → forwarded to the primary through Prism.
    let (code, body) = server
        .text(&first, CUSTOMER, "Need a dumpster Friday")
        .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("<Response/>"), "{body}");
    let v = server
        .wait_for(&first, "the forward to the primary", |v| {
            legs_to(v, PRIMARY).iter().any(|l| accepted(l))
        })
        .await;
    assert_eq!(v["final_status"], "delivered");
    assert!(v["forwarded_to_primary_at"].is_string());

    // The same MessageSid again: still one forward.
    let (code, _) = server
        .text(&first, CUSTOMER, "Need a dumpster Friday")
        .await;
    assert_eq!(code, 200);

    // No ack → the backup after the timeout.
    let v = server
        .wait_for(&first, "escalation to the backup", |v| {
            legs_to(v, BACKUP).iter().any(|l| accepted(l))
        })
        .await;
    assert_eq!(v["final_status"], "backup_triggered");
    assert_eq!(
        legs_to(&v, PRIMARY).len(),
        1,
        "one forward to the primary despite the retried webhook"
    );
    assert!(v["forwarded_to_backup_at"].is_string());

    // The backup replies → the customer gets it from the business line.
    let (code, body) = server.text(&sid(2), BACKUP, "On it, Friday 8am").await;
    assert_eq!(code, 200, "{body}");
    let v = server
        .wait_for(&first, "the reply to the customer", |v| {
            legs_to(v, CUSTOMER).iter().any(|l| accepted(l))
        })
        .await;
    assert_eq!(v["final_status"], "acked");
    assert_eq!(v["ack"]["by"]["id"], BACKUP);
    let reply = legs_to(&v, CUSTOMER)[0];
    assert_eq!(reply["body"], "On it, Friday 8am");
    assert_eq!(v["line"], LINE, "replies leave from the business line");
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_or_missing_signatures_are_403_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("relay.db"), free_port(), "1m").await;
    let s = sid(10);
    let pairs = [
        ("MessageSid", s.as_str()),
        ("AccountSid", ACCOUNT),
        ("From", CUSTOMER),
        ("To", LINE),
        ("Body", "hello"),
    ];
    let (code, body) = server.post_form("/sms/inbound", &pairs, false).await;
    assert_eq!(code, 403, "{body}");
    let params: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    let forged = SignatureValidator::new(Secret::new("not-the-token"))
        .sign_form(&format!("{}/sms/inbound", server.url), &params);
    let res = reqwest::Client::new()
        .post(format!("{}/sms/inbound", server.url))
        .header("X-Twilio-Signature", forged)
        .form(&params)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 403);
    assert!(server.status(&s).await.is_none(), "nothing stored");
    let list: Value = reqwest::Client::new()
        .get(format!("{}/sms/dispatches?status=all", server.url))
        .bearer_auth(DASH)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(list["dispatches"].as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_delivery_callback_reaches_the_backup_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("relay.db"), free_port(), "10m").await;
    let first = sid(20);
    server
        .text(&first, CUSTOMER, "Trailer blocking the dumpster")
        .await;
    let v = server
        .wait_for(&first, "the forward to the primary", |v| {
            legs_to(v, PRIMARY).iter().any(|l| accepted(l))
        })
        .await;
    let leg_sid = legs_to(&v, PRIMARY)[0]["sid"]
        .as_str()
        .expect("sid")
        .to_owned();
    let started = Instant::now();
    let (code, body) = server.callback(&leg_sid, "failed", Some("30006")).await;
    assert_eq!(code, 204, "{body}");
    let v = server
        .wait_for(&first, "the backup", |v| {
            legs_to(v, BACKUP).iter().any(|l| accepted(l))
        })
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "at once, not after the 10-minute timeout"
    );
    let primary = legs_to(&v, PRIMARY)[0];
    assert_eq!(
        (primary["status"].as_str(), primary["error_code"].as_u64()),
        (Some("failed"), Some(30006))
    );
    assert_eq!(v["unreachable"][0], PRIMARY);
    // The same callback again changes nothing.
    let version = v["version"].as_u64();
    server.callback(&leg_sid, "failed", Some("30006")).await;
    assert_eq!(
        server.status(&first).await.expect("status")["version"].as_u64(),
        version
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_cascade_and_restart_resumes_where_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("relay.db");
    let port = free_port();
    let mut server = Server::start(&db, port, "3s").await;
    let first = sid(30);
    server.text(&first, CUSTOMER, "Is anyone there?").await;
    let before = server
        .wait_for(&first, "the forward to the primary", |v| {
            legs_to(v, PRIMARY).iter().any(|l| accepted(l))
        })
        .await;
    server.kill9();
    // Down past the level's timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let server = Server::start(&db, port, "3s").await;
    let after = server
        .wait_for(&first, "the escalation after restart", |v| {
            legs_to(v, BACKUP).iter().any(|l| accepted(l))
        })
        .await;
    assert_eq!(
        after["dispatch_id"], before["dispatch_id"],
        "the same dispatch, not a new one"
    );
    assert_eq!(after["message_id"], first.as_str());
    assert_eq!(
        legs_to(&after, PRIMARY).len(),
        1,
        "the primary was not texted again"
    );
    assert_eq!(
        after["thread"].as_array().map(Vec::len),
        Some(1),
        "nothing lost, nothing doubled"
    );
    // A retried webhook after the restart is still a duplicate.
    server.text(&first, CUSTOMER, "Is anyone there?").await;
    let again = server.status(&first).await.expect("status");
    assert_eq!(again["thread"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("relay.db"), free_port(), "1m").await;
    let status = server.terminate();
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        server.logs()
    );
    assert!(server.logs().contains("shutting down"), "{}", server.logs());
}

#[test]
fn invalid_configuration_fails_at_start_naming_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |envs: &[(&str, &str)]| {
        let mut c = Command::new(binary());
        c.arg("serve")
            .env_clear()
            .env("RELAY_DB", dir.path().join("x.db"))
            .env("RELAY_DEV_FILE", dir.path().join("dev.json"))
            .env("RELAY_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().expect("run");
        assert!(!out.status.success(), "{envs:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&[("RELAY_CHAIN", PRIMARY)]).contains("QDN_TWILIO_NUMBER"));
    assert!(run(&[("QDN_TWILIO_NUMBER", LINE)]).contains("RELAY_CHAIN"));
    assert!(
        run(&[
            ("QDN_TWILIO_NUMBER", "6195550000"),
            ("RELAY_CHAIN", PRIMARY)
        ])
        .contains("QDN_TWILIO_NUMBER")
    );
    assert!(
        run(&[
            ("QDN_TWILIO_NUMBER", LINE),
            ("RELAY_CHAIN", PRIMARY),
            ("RELAY_ACK_TIMEOUT", "soon")
        ])
        .contains("RELAY_ACK_TIMEOUT")
    );
    assert!(
        run(&[
            ("QDN_TWILIO_NUMBER", LINE),
            ("RELAY_CHAIN", PRIMARY),
            ("RELAY_LISTEN", "nowhere")
        ])
        .contains("RELAY_LISTEN")
    );
    let err = run(&[
        ("QDN_TWILIO_NUMBER", LINE),
        ("RELAY_CHAIN", PRIMARY),
        ("TWILIO_ACCOUNT_SID", ACCOUNT),
    ]);
    assert!(err.contains("TWILIO_AUTH_TOKEN"), "{err}");
    // Sending for real without the URL Twilio calls: refused, naming it.
    let err = run(&[
        ("QDN_TWILIO_NUMBER", LINE),
        ("RELAY_CHAIN", PRIMARY),
        ("TWILIO_ACCOUNT_SID", ACCOUNT),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
    ]);
    assert!(err.contains("RELAY_PUBLIC_URL"), "{err}");
    let err = run(&[
        ("QDN_TWILIO_NUMBER", LINE),
        ("RELAY_CHAIN", PRIMARY),
        ("TWILIO_ACCOUNT_SID", "not-a-sid"),
        ("TWILIO_AUTH_TOKEN", "x"),
    ]);
    assert!(err.contains("TWILIO_ACCOUNT_SID"), "{err}");
    assert!(!err.contains("\"x\""), "secrets never printed: {err}");
}

/// Dry-run with a real Auth Token and dashboard token in the environment:
/// the dev file (0600) carries neither, and `inject` signs with the
/// environment's token instead.
#[tokio::test]
async fn the_dev_file_never_holds_a_configured_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let dev = dir.path().join("dev.json");
    let log = std::fs::File::create(dir.path().join("serve.log")).expect("log");
    let mut child = Command::new(binary())
        .args(["serve", "--dry-run"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("QDN_TWILIO_NUMBER", LINE)
        .env("RELAY_CHAIN", format!("{PRIMARY},{BACKUP}"))
        .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("RELAY_DB", dir.path().join("relay.db"))
        .env("RELAY_DEV_FILE", &dev)
        .env("RELAY_DASHBOARD_TOKEN", DASH)
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start qdn-relay");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dev.exists() {
        assert!(Instant::now() < deadline, "no dev file written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&dev).expect("dev file");
    assert!(!text.contains(AUTH_TOKEN), "{text}");
    assert!(!text.contains(DASH), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&dev).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // `inject` finds the server in the dev file and signs with the
    // environment's token, which the server checks.
    let out = Command::new(binary())
        .args(["inject", "text", "--from", CUSTOMER, "--body", "hello"])
        .env_clear()
        .env("RELAY_DEV_FILE", &dev)
        .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
        .output()
        .expect("inject");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `maintenance.json` through the binary's settings: 0600 with masked
/// numbers by default; `RELAY_MAINTENANCE_MODE` and
/// `RELAY_MAINTENANCE_NUMBERS` widen it on request; a mode that would lock
/// the relay out of its own file is refused at start, naming the variable.
#[tokio::test]
async fn maintenance_json_is_private_and_masked_unless_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (extra, mode, full) in [
        (vec![], 0o600, false),
        (
            vec![
                ("RELAY_MAINTENANCE_MODE", "640"),
                ("RELAY_MAINTENANCE_NUMBERS", "full"),
            ],
            0o640,
            true,
        ),
    ] {
        let run = dir.path().join(format!("{mode:o}"));
        std::fs::create_dir(&run).expect("dir");
        let port = free_port();
        let dev = run.join("dev.json");
        let snapshot = run.join("maintenance.json");
        let log = std::fs::File::create(run.join("serve.log")).expect("log");
        let mut c = Command::new(binary());
        c.args(["serve", "--dry-run"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("QDN_TWILIO_NUMBER", LINE)
            .env("RELAY_CHAIN", format!("{PRIMARY},{BACKUP}"))
            .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("RELAY_DB", run.join("relay.db"))
            .env("RELAY_DEV_FILE", &dev)
            .env("RELAY_MAINTENANCE_JSON", &snapshot)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in &extra {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("start qdn-relay");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dev.exists() {
            assert!(Instant::now() < deadline, "no dev file written");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let out = Command::new(binary())
            .args(["inject", "text", "--from", CUSTOMER, "--body", "hello"])
            .env_clear()
            .env("RELAY_DEV_FILE", &dev)
            .output()
            .expect("inject");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            let t = std::fs::read_to_string(&snapshot).unwrap_or_default();
            if t.contains("customer_phone") {
                break t;
            }
            assert!(
                Instant::now() < deadline,
                "no dispatch in maintenance.json: {t}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(text.contains(CUSTOMER), full, "{text}");
        assert_eq!(text.contains("•••"), !full, "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let m = std::fs::metadata(&snapshot)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(m & 0o777, mode);
        }
    }
    let out = Command::new(binary())
        .args(["serve", "--dry-run"])
        .env_clear()
        .env("QDN_TWILIO_NUMBER", LINE)
        .env("RELAY_CHAIN", PRIMARY)
        .env("RELAY_LISTEN", "127.0.0.1:0")
        .env("RELAY_DB", dir.path().join("x.db"))
        .env("RELAY_DEV_FILE", dir.path().join("x.json"))
        .env("RELAY_MAINTENANCE_JSON", dir.path().join("m.json"))
        .env("RELAY_MAINTENANCE_MODE", "044")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("RELAY_MAINTENANCE_MODE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
