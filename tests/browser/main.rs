//! The operator console in a real browser: headless Chromium over
//! WebDriver (`QDN_TEST_WEBDRIVER_URL`, a chromedriver on loopback that
//! `scripts/test` installs and starts) against the real `qdn-relay` binary
//! in dry-run, with texts and status callbacks injected by the binary's
//! own `inject` command. Screenshots (desktop and phone) are written to
//! `target/console-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const DASH: &str = "console-browser-token-0123456789";
const LINE: &str = "+16195550000";
const PRIMARY: &str = "+16195550101";
const BACKUP: &str = "+18583354807";
/// Long enough to act on a dispatch before it escalates by itself (on a
/// busy machine too), short enough to wait out once.
const ACK_TIMEOUT: Duration = Duration::from_secs(45);

fn target_dir() -> PathBuf {
    // tests run from target/<profile>/deps/browser-<hash>.
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors()
        .nth(3)
        .expect("the target directory")
        .to_path_buf()
}

fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("QDN_RELAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .join("qdn-relay");
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build -p qdn-relay-cli` or run ./scripts/test",
        bin.display()
    );
    bin
}

fn webdriver_url() -> String {
    std::env::var("QDN_TEST_WEBDRIVER_URL").expect(
        "QDN_TEST_WEBDRIVER_URL is not set: run ./scripts/test (it installs chromium and chromium-driver and starts chromedriver on loopback)",
    )
}

struct Server {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let url = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("serve.log")).expect("log");
        let child = Command::new(binary())
            .arg("serve")
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("QDN_TWILIO_NUMBER", LINE)
            .env("RELAY_CHAIN", format!("{PRIMARY},{BACKUP}"))
            .env("RELAY_ACK_TIMEOUT", format!("{}s", ACK_TIMEOUT.as_secs()))
            .env("RELAY_SWEEP_INTERVAL", "200ms")
            .env("RELAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("RELAY_DASHBOARD_TOKEN", DASH)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start qdn-relay");
        let server = Server {
            child,
            url,
            dir,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = server
                .http
                .get(format!("{}/health", server.url))
                .send()
                .await
                && r.status().is_success()
                && server.dir.path().join(".qdn-relay-dev.json").exists()
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not start:\n{}",
                server.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// `qdn-relay inject ...`, as a user would run it next to the server.
    fn inject(&self, args: &[&str]) {
        let out = Command::new(binary())
            .arg("inject")
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .output()
            .expect("run inject");
        assert!(
            out.status.success(),
            "inject {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The status JSON (the dashboard's bearer route).
    async fn status(&self, id: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/sms/dispatch-status/{id}", self.url))
            .bearer_auth(DASH)
            .send()
            .await
            .expect("status");
        assert!(r.status().is_success(), "status {id}: {}", r.status());
        r.json().await.expect("json")
    }
}

fn legs_to<'a>(status: &'a Value, to: &str) -> Vec<&'a Value> {
    status["legs"]
        .as_array()
        .expect("legs")
        .iter()
        .filter(|l| l["to"] == to)
        .collect()
}

async fn browser() -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--lang=en-US"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&webdriver_url())
        .await
        .expect("a WebDriver session (is chromedriver running?)")
}

/// Waits until `check` holds (the page is live: no fixed sleeps), failing
/// with `what` after a generous bound.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, Vec::new()).await.expect("script")
}

async fn screenshot(c: &Client, name: &str) {
    let dir = target_dir().join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(name), png).expect("write screenshot");
}

/// Nothing on the page is wider than the window.
async fn no_horizontal_scroll(c: &Client, page: &str) {
    let v = js(
        c,
        "return [document.documentElement.scrollWidth, window.innerWidth, \
         [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.tagName + '.' + e.className).slice(0, 5)];",
    )
    .await;
    let (scroll, inner) = (v[0].as_u64().expect("width"), v[1].as_u64().expect("width"));
    assert!(
        scroll <= inner,
        "{page}: the page scrolls sideways at {inner} px ({scroll} px wide; too wide: {})",
        v[2]
    );
}

/// Opens a dispatch's page from the list and returns its id.
async fn open_row(c: &Client, server: &Server, tag_of_customer: &str) -> String {
    let css = format!("li.row[data-customer=\"{tag_of_customer}\"] a");
    // The list is live: a refresh may replace the row between finding it
    // and clicking it, so find it again until a click lands.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = c
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(&css))
            .await
            .unwrap_or_else(|e| panic!("the row of {tag_of_customer}: {e}\n{}", server.logs()));
        match row.click().await {
            Ok(()) => break,
            Err(e) => assert!(Instant::now() < deadline, "clicking the row: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("#summary"))
        .await
        .expect("the dispatch page");
    js(c, "return document.body.dataset.dispatch;")
        .await
        .as_str()
        .expect("dispatch id")
        .to_owned()
}

/// Clicks `css`, finding it again if a live refresh replaced it first.
async fn click(c: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        match e.click().await {
            Ok(()) => return,
            Err(e) => assert!(Instant::now() < deadline, "clicking {css}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let server = Server::start().await;
    let c = browser().await;
    let console = format!("{}/console", server.url);

    // Not signed in: /console sends to the sign-in page; a wrong token is
    // refused and sets no cookie.
    c.goto(&console).await.expect("goto");
    c.wait()
        .for_element(Locator::Css("input[name=token]"))
        .await
        .expect("the sign-in page");
    assert!(
        c.current_url()
            .await
            .expect("url")
            .path()
            .ends_with("/console/sign-in")
    );
    c.find(Locator::Css("input[name=token]"))
        .await
        .expect("token field")
        .send_keys("not-the-token-at-all")
        .await
        .expect("type");
    click(&c, "form.stack button[type=submit]").await;
    until("the refusal", || async {
        text_of(&c, "p.error")
            .await
            .contains("not the dashboard token")
    })
    .await;
    assert!(
        c.get_all_cookies().await.expect("cookies").is_empty(),
        "a wrong token sets no cookie"
    );

    // The right token.
    c.find(Locator::Css("input[name=token]"))
        .await
        .expect("token field")
        .send_keys(DASH)
        .await
        .expect("type");
    c.find(Locator::Css("input[name=name]"))
        .await
        .expect("name field")
        .send_keys("ana")
        .await
        .expect("type");
    click(&c, "form.stack button[type=submit]").await;
    c.wait()
        .for_element(Locator::Css("#list"))
        .await
        .expect("the dispatches");
    let cookies = c.get_all_cookies().await.expect("cookies");
    assert_eq!(cookies.len(), 1);
    assert_eq!(cookies[0].http_only(), Some(true));
    assert_ne!(cookies[0].value(), DASH, "the cookie is not the token");
    until("the live stream", || async {
        js(&c, "return document.body.dataset.stream === 'open';").await == json!(true)
    })
    .await;

    // A customer's text appears without a reload.
    js(&c, "window.__sameDocument = 1; return 1;").await;
    let injected = Instant::now();
    server.inject(&[
        "text",
        "--from",
        "+16195550100",
        "--body",
        "Need a 10-yard dumpster Friday",
    ]);
    until("the new row", || async {
        text_of(&c, "#list")
            .await
            .contains("Need a 10-yard dumpster Friday")
    })
    .await;
    assert_eq!(
        js(&c, "return window.__sameDocument;").await,
        json!(1),
        "no reload"
    );
    screenshot(&c, "console-desktop-list.png").await;

    // Its page: the countdown counts.
    let a = open_row(&c, &server, "+16195550100").await;
    let first = text_of(&c, "#summary .countdown").await;
    assert!(first.starts_with("backup in "), "{first}");
    until("the countdown to count", || async {
        let now = text_of(&c, "#summary .countdown").await;
        now.starts_with("backup in ") && now != first
    })
    .await;

    // Ack: acknowledged by the operator; the backup is never texted.
    click(&c, "button[value=ack]").await;
    until("the ack", || async {
        text_of(&c, "p.done").await.contains("Acknowledged")
    })
    .await;
    let s = server.status(&a).await;
    assert_eq!(s["final_status"], "acked");
    assert_eq!(s["ack"]["by"], json!({"kind": "operator", "id": "ana"}));
    let opened = s["opened_at"].as_str().expect("opened_at").to_owned();
    // Wait out the level's timeout (it started when the text came in) and
    // a few sweeps, then check.
    while injected.elapsed() < ACK_TIMEOUT + Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let s = server.status(&a).await;
    assert!(
        legs_to(&s, BACKUP).is_empty(),
        "the backup was never texted: {s}"
    );
    assert_eq!(s["opened_at"], opened.as_str());

    // Reply to the customer from the page.
    c.goto(&console).await.expect("goto");
    server.inject(&[
        "text",
        "--from",
        "+16195550122",
        "--body",
        "Is the gate code still 1234?",
    ]);
    let b = open_row(&c, &server, "+16195550122").await;
    c.find(Locator::Css("textarea[name=body]"))
        .await
        .expect("reply box")
        .send_keys("Yes, 1234. See you at 8.")
        .await
        .expect("type");
    click(&c, "button[value=reply]").await;
    until("the reply in the timeline", || async {
        text_of(&c, "#timeline")
            .await
            .contains("Reply to the customer")
    })
    .await;
    let s = server.status(&b).await;
    let replies = legs_to(&s, "+16195550122");
    assert_eq!(replies.len(), 1, "{s}");
    assert_eq!(replies[0]["body"], "Yes, 1234. See you at 8.");
    assert_eq!(s["line"], LINE, "sent from the business line");

    // Escalate now texts the backup at once; a delivered callback turns
    // its badge live; Close.
    c.goto(&console).await.expect("goto");
    server.inject(&[
        "text",
        "--from",
        "+16195550133",
        "--body",
        "Dumpster overflowing",
    ]);
    let cc = open_row(&c, &server, "+16195550133").await;
    click(&c, "button[value=escalate]").await;
    until("the escalation", || async {
        text_of(&c, "p.done").await.contains("Escalated")
    })
    .await;
    let s = server.status(&cc).await;
    let to_backup = legs_to(&s, BACKUP);
    assert_eq!(to_backup.len(), 1, "the backup was texted at once: {s}");
    assert_eq!(s["final_status"], "backup_triggered");
    let leg = to_backup[0]["index"].as_u64().expect("leg index");
    let sid = to_backup[0]["sid"]
        .as_str()
        .expect("the leg's sid")
        .to_owned();
    let badge = format!("li.leg[data-leg=\"{leg}\"] .status");
    js(&c, "window.__sameDocument = 2; return 1;").await;
    until("the live stream", || async {
        js(&c, "return document.body.dataset.stream === 'open';").await == json!(true)
    })
    .await;
    server.inject(&["status", "--sid", &sid, "--status", "delivered"]);
    until("the delivered badge", || async {
        text_of(&c, &badge).await == "delivered"
    })
    .await;
    assert_eq!(
        js(&c, "return window.__sameDocument;").await,
        json!(2),
        "no reload"
    );
    screenshot(&c, "console-desktop-dispatch.png").await;
    click(&c, "button[value=close]").await;
    until("closed", || async {
        text_of(&c, "#summary .state").await == "closed"
    })
    .await;
    assert_eq!(server.status(&cc).await["state"], "closed");

    // A phone: 390 x 844, nothing scrolls sideways.
    c.set_window_size(390, 844).await.expect("resize");
    for path in [
        "".to_owned(),
        format!("/dispatches/{cc}"),
        format!("/dispatches/{b}"),
        "/on-call".to_owned(),
        "/sign-in".to_owned(),
    ] {
        c.goto(&format!("{console}{path}")).await.expect("goto");
        c.wait()
            .for_element(Locator::Css("main"))
            .await
            .expect("a page");
        no_horizontal_scroll(&c, &path).await;
        if path.is_empty() {
            screenshot(&c, "console-phone-list.png").await;
        }
        if path == format!("/dispatches/{cc}") {
            screenshot(&c, "console-phone-dispatch.png").await;
        }
    }
    c.close().await.expect("close the browser");
}
