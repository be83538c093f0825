//! The built binaries (`qdn-relay-http`, `qdn-relay-tick`) against
//! cargo-lambda's Lambda Runtime API emulator, with moto as DynamoDB,
//! through a whole cascade: a customer's text (HTTP function, named
//! stage), the ack timeout passing, a tick (tick function) escalating to
//! the backup, the escalation in the status route, the backup's ack and
//! reply.
//!
//! Peers (`./scripts/test` provides both and exports their addresses):
//! - `QDN_TEST_CARGO_LAMBDA`: the `cargo-lambda` executable; the test
//!   starts `cargo lambda watch --only-lambda-apis` on a free port and
//!   invokes functions through its invoke endpoint.
//! - `QDN_TEST_DYNAMO_URL`: moto in server mode; the test creates a table
//!   of its own with the store's `create_table`.
//!
//! Without them the test fails, saying what is missing.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qdn_relay_twilio::{Secret, SignatureValidator};
use serde_json::{Value, json};

use crate::fixtures::{self, AUTH_TOKEN, BACKUP, CUSTOMER, DASH, DOMAIN, LINE, PRIMARY};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

fn required_env(var: &str, what: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{var} is not set: this test needs {what}. Run the suite with ./scripts/test, which installs and starts it."
        ),
    }
}

fn binary(name: &str, built: Option<&'static str>) -> PathBuf {
    let path = built.map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "the {name} binary was not built for this test: build the tests with the `dynamo` feature (the default)"
        )
    });
    assert!(path.exists(), "{} does not exist", path.display());
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed (and reaped) when dropped, with its log.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn logs(&self) -> String {
        format!(
            "--- {} log ---\n{}",
            self.name,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.logs());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cascade {
    emulator: Proc,
    functions: Vec<Proc>,
    port: u16,
    client: reqwest::Client,
    sids: u32,
}

impl Cascade {
    fn logs(&self) -> String {
        let mut s = self.emulator.logs();
        for f in &self.functions {
            s.push('\n');
            s.push_str(&f.logs());
        }
        s
    }

    /// Invokes a function through the emulator: its response payload.
    async fn invoke(&mut self, function: &str, event: &Value) -> Value {
        for f in &mut self.functions {
            f.assert_running();
        }
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{function}/invocations",
            self.port
        );
        let res = self
            .client
            .post(&url)
            .json(event)
            .send()
            .await
            .unwrap_or_else(|e| panic!("invoking {function}: {e}\n{}", self.logs()));
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "{function} answered {status} with no JSON ({e}): {text}\n{}",
                self.logs()
            )
        })
    }

    /// A text to the business line, signed as Twilio signs it for the
    /// stage URL, through the HTTP function: the API Gateway response.
    async fn text(&mut self, from: &str, body: &str) -> Value {
        self.sids += 1;
        let sid = format!("SM{:032x}", 0xe2e0_0000_u64 + u64::from(self.sids));
        let params: Vec<(String, String)> = [
            ("ToCountry", "US"),
            ("SmsMessageSid", &sid),
            ("NumMedia", "0"),
            ("SmsSid", &sid),
            ("SmsStatus", "received"),
            ("Body", body),
            ("To", LINE),
            ("NumSegments", "1"),
            ("MessageSid", &sid),
            ("AccountSid", ACCOUNT),
            ("From", from),
            ("ApiVersion", "2010-04-01"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let signature = SignatureValidator::new(Secret::new(AUTH_TOKEN))
            .sign_form(&format!("https://{DOMAIN}/prod/sms/inbound"), &params);
        let event = fixtures::with_signature(
            &fixtures::with_form(&fixtures::load("apigw-v2-inbound-stage.json"), &params),
            &signature,
        );
        self.invoke("qdn-relay-http", &event).await
    }

    /// The dashboard's status of a dispatch, through the HTTP function on
    /// the `prod` stage.
    async fn status(&mut self, key: &str) -> Value {
        let mut event = fixtures::load("apigw-v2-dispatch-status.json");
        let path = format!("/prod/sms/dispatch-status/{key}");
        event["rawPath"] = path.clone().into();
        event["requestContext"]["http"]["path"] = path.into();
        event["requestContext"]["stage"] = "prod".into();
        event["pathParameters"]["job_id"] = key.into();
        let resp = self.invoke("qdn-relay-http", &event).await;
        assert_eq!(resp["statusCode"], 200, "status of {key}: {resp}");
        serde_json::from_str(resp["body"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("status JSON: {e}: {resp}"))
    }

    async fn tick(&mut self) -> Value {
        self.invoke(
            "qdn-relay-tick",
            &fixtures::load("eventbridge-scheduled.json"),
        )
        .await
    }
}

async fn create_table(url: &str, table: &str) {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "qdn-tests"))
        .build();
    let client = qdn_relay_dynamo::Client::from_conf(config);
    qdn_relay_dynamo::create_table(&client, &qdn_relay_dynamo::DynamoConfig::new(table))
        .await
        .unwrap_or_else(|e| panic!("creating table {table} on {url}: {e}"));
}

fn wait_for_port(port: u16, emulator: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        emulator.assert_running();
        assert!(
            Instant::now() < deadline,
            "the emulator did not listen on {port}:\n{}",
            emulator.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cascade_through_the_built_functions() {
    let cargo_lambda = required_env(
        "QDN_TEST_CARGO_LAMBDA",
        "cargo-lambda (its Lambda Runtime API emulator)",
    );
    let dynamo = required_env("QDN_TEST_DYNAMO_URL", "a DynamoDB emulator (moto)");
    let http_bin = binary(
        "qdn-relay-http",
        option_env!("CARGO_BIN_EXE_qdn-relay-http"),
    );
    let tick_bin = binary(
        "qdn-relay-tick",
        option_env!("CARGO_BIN_EXE_qdn-relay-tick"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let table = format!(
        "qdn-lambda-it-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    create_table(&dynamo, &table).await;

    // The emulator: the Runtime API for both functions and the invoke
    // endpoint, nothing else.
    let port = free_port();
    let mut cmd = Command::new(&cargo_lambda);
    cmd.args(["lambda", "watch", "--only-lambda-apis", "--ignore-changes"])
        .args(["-A", "127.0.0.1", "-P", &port.to_string()])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    let mut emulator = Proc::spawn("emulator", cmd, dir.path());
    wait_for_port(port, &mut emulator);

    let spawn = |name: &str, bin: &Path| {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // What Lambda sets.
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt/{name}"),
            )
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL_DYNAMODB", &dynamo)
            // The relay's settings, as the template sets them (dry-run:
            // no TWILIO_ACCOUNT_SID).
            .env("QDN_TWILIO_NUMBER", LINE)
            .env("RELAY_CHAIN", format!("{PRIMARY},{BACKUP}"))
            .env("RELAY_ACK_TIMEOUT", format!("{}s", ACK_TIMEOUT.as_secs()))
            .env("RELAY_DYNAMO_TABLE", &table)
            .env("RELAY_DASHBOARD_TOKEN", DASH)
            .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
            .env("RUST_LOG", "info");
        Proc::spawn(name, cmd, dir.path())
    };
    let functions = vec![
        spawn("qdn-relay-http", &http_bin),
        spawn("qdn-relay-tick", &tick_bin),
    ];
    let mut c = Cascade {
        emulator,
        functions,
        port,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        sids: 0,
    };

    // 1. A customer texts the business line: forwarded to the primary.
    let resp = c.text(CUSTOMER, "No heat in unit 12, it is freezing").await;
    assert_eq!(resp["statusCode"], 200, "{resp}\n{}", c.logs());
    assert!(
        resp["body"]
            .as_str()
            .is_some_and(|b| b.contains("<Response")),
        "{resp}"
    );
    let first_sid = format!("SM{:032x}", 0xe2e0_0001_u64);
    let s = c.status(&first_sid).await;
    assert_eq!(s["final_status"], "delivered", "{s}");
    assert!(s["forwarded_to_primary_at"].is_string(), "{s}");
    assert!(s["forwarded_to_backup_at"].is_null(), "{s}");
    let legs_to = |s: &Value, to: &str| -> Vec<Value> {
        s["legs"]
            .as_array()
            .map(|l| l.iter().filter(|l| l["to"] == to).cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(legs_to(&s, PRIMARY).len(), 1, "{s}");

    // 2. A tick before the timeout does nothing.
    let r = c.tick().await;
    assert_eq!(r["fired"], 0, "{r}\n{}", c.logs());

    // 3. The timeout passes; the next tick escalates to the backup.
    tokio::time::sleep(ACK_TIMEOUT + Duration::from_millis(500)).await;
    let r = c.tick().await;
    assert_eq!(r["fired"], 1, "{r}\n{}", c.logs());
    let s = c.status(&first_sid).await;
    assert_eq!(s["final_status"], "backup_triggered", "{s}");
    assert!(s["forwarded_to_backup_at"].is_string(), "{s}");
    assert_eq!(legs_to(&s, BACKUP).len(), 1, "{s}");

    // 4. The backup acknowledges, then replies to the customer.
    let resp = c.text(BACKUP, "ACK").await;
    assert_eq!(resp["statusCode"], 200, "{resp}\n{}", c.logs());
    let s = c.status(&first_sid).await;
    assert_eq!(s["final_status"], "acked", "{s}");
    assert_eq!(
        s["ack"]["by"],
        json!({"kind": "phone", "id": BACKUP}),
        "{s}"
    );
    let resp = c.text(BACKUP, "On my way, 20 minutes").await;
    assert_eq!(resp["statusCode"], 200, "{resp}\n{}", c.logs());
    let s = c.status(&first_sid).await;
    let to_customer = legs_to(&s, CUSTOMER);
    assert!(
        to_customer
            .iter()
            .any(|l| l["body"].as_str().is_some_and(|b| b.contains("On my way"))),
        "the reply did not go to the customer: {s}"
    );

    // 5. Acked: later ticks escalate nothing.
    tokio::time::sleep(ACK_TIMEOUT + Duration::from_millis(500)).await;
    let r = c.tick().await;
    assert_eq!(r["fired"], 0, "{r}\n{}", c.logs());
    let s = c.status(&first_sid).await;
    assert_eq!(s["final_status"], "acked", "{s}");
    assert_eq!(legs_to(&s, PRIMARY).len(), 1, "{s}");
    assert_eq!(legs_to(&s, BACKUP).len(), 1, "{s}");
}
