//! Writes distinct, correctly signed inbound webhooks for the HTTP load
//! benchmark (`scripts/bench-http`), and the `wrk` Lua scripts that replay
//! them.
//!
//! Into `--out` it writes:
//!
//! - `inbound.tsv`: one request a line, `<X-Twilio-Signature>\t<form body>`.
//!   Request `i` is a customer text from its own number (`+1619` and seven
//!   digits counting up from `2000000 + first + i`) with its own MessageSid,
//!   so every request opens a new dispatch and none is an idempotent repeat.
//! - `inbound.lua`: for `wrk -s inbound.lua <url> -- inbound.tsv <threads>`.
//!   Thread `k` of `T` takes lines `k, k + T, k + 2T, ...`, formats them
//!   once in `init`, and sends them in order from `request()`, so no two
//!   requests of a run share a MessageSid. A thread that runs out starts
//!   over; `done()` reports how many requests repeated (0 unless `--count`
//!   was too small for the run).
//! - `report.lua`: only the `done()` summary, for a plain GET run (the
//!   baseline) so both runs print the same `RESULT` line.
//!
//! ```text
//! cargo run --release -p qdn-relay-cli --example presign -- \
//!     --url http://127.0.0.1:8080 --token <auth token> --line +16195550000 \
//!     --count 200000 --out /tmp/bench
//! ```

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::PathBuf;

use clap::Parser;
use qdn_relay_core::PhoneNumber;
use qdn_relay_twilio::{Form, Secret, SignatureValidator};

/// Write pre-signed inbound webhooks and the wrk scripts that send them.
#[derive(Parser, Debug)]
struct Args {
    /// The relay's public base URL (its RELAY_PUBLIC_URL): what Twilio signs.
    #[arg(long)]
    url: String,
    /// The Auth Token the relay checks signatures with.
    #[arg(long)]
    token: String,
    /// The business line (the relay's QDN_TWILIO_NUMBER).
    #[arg(long)]
    line: String,
    /// How many distinct requests to write.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Where the numbering starts (use a different range for a warm-up).
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// The directory to write into (created if needed).
    #[arg(long)]
    out: PathBuf,
}

/// The `done()` callback both scripts share: one machine-readable line.
/// Latencies are in microseconds.
const REPORT: &str = r#"
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local sent, repeated = 0, 0
  for _, t in ipairs(threads) do
    sent = sent + (t:get("sent") or 0)
    repeated = repeated + (t:get("repeated") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "non2xx=%d connect=%d read=%d write=%d timeout=%d sent=%d repeated=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout, sent, repeated))
end
"#;

/// Per-thread request replay (runs in each wrk thread's own Lua state).
const INBOUND: &str = r#"
local reqs = {}
local held = 0
local cursor = 0
sent = 0
repeated = 0

function init(args)
  local path = args[1]
  local nthreads = tonumber(args[2])
  assert(path and nthreads, "usage: wrk -s inbound.lua <url> -- inbound.tsv <threads>")
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == id then
      local tab = line:find("\t", 1, true)
      local headers = {
        ["Content-Type"] = "application/x-www-form-urlencoded",
        ["X-Twilio-Signature"] = line:sub(1, tab - 1),
      }
      held = held + 1
      reqs[held] = wrk.format("POST", "/sms/inbound", headers, line:sub(tab + 1))
    end
    i = i + 1
  end
  assert(held > 0, "no requests for thread " .. id)
end

function request()
  cursor = cursor + 1
  if cursor > held then
    cursor = 1
  end
  sent = sent + 1
  if sent > held then
    repeated = repeated + 1
  end
  return reqs[cursor]
end
"#;

fn main() {
    let a = Args::parse();
    let line: PhoneNumber = a.line.parse().expect("--line is an E.164 number");
    let base = a.url.trim_end_matches('/');
    let signed_url = format!("{base}/sms/inbound");
    let signer = SignatureValidator::new(Secret::new(a.token.clone()));
    assert!(
        2_000_000 + a.first + a.count <= 10_000_000,
        "--first + --count must stay under 8,000,000 (seven-digit customer numbers)"
    );

    std::fs::create_dir_all(&a.out).expect("--out can be created");
    let tsv = a.out.join("inbound.tsv");
    let mut w = BufWriter::new(File::create(&tsv).expect("inbound.tsv can be created"));
    let account = format!("AC{:032x}", 0xbe0c_u128);
    for i in a.first..a.first + a.count {
        let form = Form::from_pairs([
            (
                "MessageSid",
                format!("SM{:032x}", 0x5eed_0000_0000_u128 + u128::from(i)),
            ),
            ("AccountSid", account.clone()),
            ("From", format!("+1619{}", 2_000_000 + i)),
            ("To", line.to_string()),
            (
                "Body",
                format!(
                    "Need a 20-yard dumpster at {} Harbor Dr tomorrow 7am",
                    100 + i % 9000
                ),
            ),
            ("NumMedia", "0".to_owned()),
        ]);
        let signature = signer.sign_form(&signed_url, form.pairs());
        writeln!(w, "{signature}\t{}", form.encode()).expect("inbound.tsv is writable");
    }
    w.flush().expect("inbound.tsv is writable");

    std::fs::write(a.out.join("inbound.lua"), format!("{REPORT}{INBOUND}"))
        .expect("inbound.lua is writable");
    std::fs::write(a.out.join("report.lua"), REPORT).expect("report.lua is writable");
    eprintln!(
        "wrote {} signed inbound webhooks for {signed_url} to {}",
        a.count,
        tsv.display()
    );
}
