//! The `qdn-relay` binary from the outside: its commands, their errors.

use std::process::Command;

fn qdn_relay() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qdn-relay"));
    c.env_remove("RELAY_DASHBOARD_TOKEN")
        .env_remove("TWILIO_AUTH_TOKEN")
        .env_remove("RELAY_URL");
    c
}

fn run(c: &mut Command) -> (bool, String) {
    let out = c.output().expect("run qdn-relay");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn help_lists_every_command() {
    let (ok, text) = run(qdn_relay().arg("--help"));
    assert!(ok, "{text}");
    for cmd in ["serve", "inject", "status", "policy"] {
        assert!(text.contains(cmd), "{cmd} missing from --help:\n{text}");
    }
}

#[test]
fn policy_check_previews_the_example_file() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/policy.toml");
    let (ok, text) = run(qdn_relay().args(["policy", "check", file, "--days", "2"]));
    assert!(ok, "{text}");
    assert!(text.contains("valid"), "{text}");
    assert!(text.contains("On duty"), "{text}");
}

#[test]
fn policy_check_names_the_line_of_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "time_zone = \"America/Los_Angeles\"\n\n[[levels]]\ntargets = [\"+16195550101\"]\ntimeout = \"soon\"\n",
    )
    .expect("write");
    let (ok, text) = run(qdn_relay().args(["policy", "check"]).arg(&path));
    assert!(!ok, "an invalid policy must fail:\n{text}");
    assert!(text.contains(":5:"), "the error names line 5:\n{text}");
    assert!(
        text.contains("timeout"),
        "the error names the field:\n{text}"
    );
}

#[test]
fn inject_and_status_without_a_server_fail_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = dir.path().join("missing-dev.json");
    let (ok, text) = run(qdn_relay()
        .args(["inject", "text", "--body", "hi", "--dev-file"])
        .arg(&dev));
    assert!(!ok);
    assert!(text.contains("TWILIO_AUTH_TOKEN"), "{text}");
    let (ok, text) = run(qdn_relay().args(["status", "K7", "--dev-file"]).arg(&dev));
    assert!(!ok);
    assert!(text.contains("RELAY_DASHBOARD_TOKEN"), "{text}");
    let (ok, text) = run(qdn_relay()
        .args([
            "inject",
            "text",
            "--body",
            "hi",
            "--to",
            "+16195550000",
            "--url",
            "http://127.0.0.1:9",
            "--dev-file",
        ])
        .arg(&dev)
        .env("TWILIO_AUTH_TOKEN", "x"));
    assert!(!ok);
    assert!(text.contains("cannot reach the relay"), "{text}");
}

// ----- a real server through a cascade, then its metrics -------------------

/// A GET over a plain socket: the status line and the body.
fn get(addr: &str, path: &str, bearer: Option<&str>) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// The values of the series `name` whose labels include every pair given.
fn matching<'a>(
    text: &'a str,
    name: &'a str,
    labels: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = f64> + 'a {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(move |l| {
            let (key, _) = l.rsplit_once(' ').unwrap_or((l, ""));
            let (n, rest) = key.split_once('{').unwrap_or((key, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
}

/// The value of the series `name` whose labels include every pair given
/// (`None` when there is no such series).
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    matching(text, name, labels).next()
}

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls (a bounded wait for the server to get there, not a measurement).
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..400 {
        if ready() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("gave up waiting for {what}");
}

/// `qdn-relay serve` (dry-run) takes a customer's text, its repeat and a
/// forged one; the primary does not answer within the 1 s timeout, the
/// backup is texted and acknowledges by text. `/metrics` then counts
/// exactly that, on the main listener (behind the dashboard bearer) and on
/// the metrics listener (without).
#[test]
fn a_cascade_on_a_real_server_shows_in_its_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = dir.path().join("dev.json");
    let log = dir.path().join("relay.log");
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr").to_string()
    };
    let primary = "+16195550101";
    let backup = "+16195550102";
    let child = qdn_relay()
        .args(["serve", "--dry-run"])
        .env("QDN_TWILIO_NUMBER", "+16195550000")
        .env("RELAY_CHAIN", format!("{primary},{backup}"))
        .env("RELAY_ACK_TIMEOUT", "1s")
        .env("RELAY_SWEEP_INTERVAL", "1h")
        .env("RELAY_LISTEN", "127.0.0.1:0")
        .env("RELAY_METRICS_LISTEN", &metrics_addr)
        .env("RELAY_DB", dir.path().join("relay.db"))
        .env("RELAY_DEV_FILE", &dev)
        .env("RUST_LOG", "info,qdn_relay_axum::serve=debug")
        .env_remove("TWILIO_ACCOUNT_SID")
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the server");
    let _server = Server(child);
    wait_for("the dev file", || dev.exists());
    let d: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&dev).expect("dev file")).expect("json");
    let url = d["url"].as_str().expect("url").to_owned();
    let addr = url.trim_start_matches("http://").to_owned();
    let bearer = d["dashboard_token"].as_str().expect("token").to_owned();
    let inject = |args: &[&str]| {
        let (ok, text) = run(qdn_relay()
            .arg("inject")
            .args(args)
            .arg("--dev-file")
            .arg(&dev));
        (ok, text)
    };
    let sid = "SM0123456789abcdef0123456789abcdef";
    let (ok, text) = inject(&["text", "--body", "bin on fire", "--sid", sid]);
    assert!(ok, "{text}");
    let (ok, text) = inject(&["text", "--body", "bin on fire", "--sid", sid]);
    assert!(ok, "the repeat is answered too: {text}");
    let (ok, _) = inject(&["text", "--body", "forged", "--auth-token", "not-the-token"]);
    assert!(!ok, "a forged signature is refused");

    let scrape = || get(&addr, "/metrics", Some(&bearer)).1;
    wait_for("the escalation", || {
        series(&scrape(), "qdn_relay_escalations_total", &[("level", "0")]) == Some(1.0)
    });
    let (ok, text) = inject(&["reply", "--from", backup, "--body", "ACK"]);
    assert!(ok, "{text}");
    wait_for("the ack", || {
        series(&scrape(), "qdn_relay_acks_total", &[]).is_some()
    });

    // What the server logged (every text the dry-run provider recorded,
    // every deadline the sweeper fired), read before the scrape.
    let logged = std::fs::read_to_string(&log).expect("log");
    let m = scrape();
    let count = |name: &str, labels: &[(&str, &str)]| series(&m, name, labels);
    let webhook = |route, result, reason| {
        count(
            "qdn_relay_webhooks_total",
            &[("route", route), ("result", result), ("reason", reason)],
        )
    };
    assert_eq!(webhook("inbound", "accepted", "ok"), Some(1.0), "{m}");
    assert_eq!(
        webhook("inbound", "accepted", "duplicate"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(webhook("inbound", "refused", "signature"), Some(1.0), "{m}");
    assert_eq!(webhook("reply", "accepted", "ok"), Some(1.0), "{m}");
    assert_eq!(
        count(
            "qdn_relay_webhook_latency_seconds_count",
            &[("route", "inbound")]
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(count("qdn_relay_dispatches_opened_total", &[]), Some(1.0));
    assert_eq!(
        count(
            "qdn_relay_escalations_total",
            &[("level", "0"), ("reason", "timeout")]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        count("qdn_relay_acks_total", &[("kind", "text"), ("level", "1")]),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        count("qdn_relay_time_to_ack_seconds_count", &[("kind", "text")]),
        Some(1.0),
        "{m}"
    );
    let sent = logged.matches("dry-run: text recorded").count();
    assert!(
        sent >= 2,
        "the primary and the backup were texted:\n{logged}"
    );
    // Every text counted, by purpose: the two forwards (the primary, then
    // the backup), and whatever notices and replies the cascade sent.
    let accepted: f64 = matching(
        &m,
        "qdn_relay_texts_total",
        &[("carrier", "dry-run"), ("outcome", "accepted")],
    )
    .sum();
    assert_eq!(accepted, sent as f64, "{m}");
    assert_eq!(
        count(
            "qdn_relay_texts_total",
            &[
                ("carrier", "dry-run"),
                ("purpose", "forward"),
                ("outcome", "accepted")
            ]
        ),
        Some(2.0),
        "{m}"
    );
    let fired = logged.matches("deadline fired").count();
    assert!(fired >= 1, "{logged}");
    assert_eq!(
        count("qdn_relay_escalation_lateness_seconds_count", &[]),
        Some(fired as f64),
        "{m}"
    );
    assert_eq!(
        count("qdn_relay_open_dispatches", &[("state", "acked")]),
        Some(1.0),
        "{m}"
    );
    assert_eq!(count("qdn_relay_holding_dispatches", &[]), Some(0.0));

    // The bearer guards the main listener; the metrics listener is open.
    let (status, _) = get(&addr, "/metrics", None);
    assert!(status.contains(" 401 "), "{status}");
    let (status, open) = get(&metrics_addr, "/metrics", None);
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(
        series(&open, "qdn_relay_dispatches_opened_total", &[]),
        Some(1.0)
    );
}
