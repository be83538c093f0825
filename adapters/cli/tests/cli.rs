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
