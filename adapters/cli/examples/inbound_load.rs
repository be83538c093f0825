//! Sends distinct, correctly signed inbound texts to one or more relay
//! servers, round-robin, a fixed number in flight, and prints the rate:
//! the load of `scripts/bench-servers` (several servers on one table).
//!
//! Every text comes from its own number with its own MessageSid, so each
//! opens a new dispatch. Every server must share `--public-url` as its
//! `RELAY_PUBLIC_URL` (the balancer's URL, which Twilio signs), so one
//! signature is good on any of them.
//!
//! ```text
//! cargo run --release -p qdn-relay-cli --example inbound_load -- \
//!     --url http://127.0.0.1:8080 --url http://127.0.0.1:8081 \
//!     --public-url https://relay.example.com --token <auth token> \
//!     --line +16195550000 --texts 2000 --concurrency 16
//! ```
//!
//! Prints one line, `RESULT texts=<n> seconds=<s> rate=<texts/s>`, and
//! exits 1 if any text was not answered 200.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::Parser;
use qdn_relay_twilio::{Secret, SignatureValidator};

/// Send signed inbound texts to relay servers, round-robin.
#[derive(Parser, Debug)]
struct Args {
    /// A server's base URL (repeat for several).
    #[arg(long, required = true)]
    url: Vec<String>,
    /// The public base URL every server checks signatures against.
    #[arg(long)]
    public_url: String,
    /// The Auth Token the servers check signatures with.
    #[arg(long)]
    token: String,
    /// The business line.
    #[arg(long)]
    line: String,
    /// How many texts.
    #[arg(long, default_value_t = 2000)]
    texts: u64,
    /// How many in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: u64,
    /// Where the numbering starts (a different range for a warm-up).
    #[arg(long, default_value_t = 0)]
    first: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Arc::new(Args::parse());
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let signer = Arc::new(SignatureValidator::new(Secret::new(a.token.clone())));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (a, next, failed, client, signer) = (
            a.clone(),
            next.clone(),
            failed.clone(),
            client.clone(),
            signer.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= a.texts {
                    return;
                }
                let n = a.first + i;
                let params: Vec<(String, String)> = vec![
                    (
                        "MessageSid".into(),
                        format!("SM{:032x}", 0xbe00_0000_0000 + n),
                    ),
                    ("AccountSid".into(), format!("AC{:032x}", 1)),
                    ("From".into(), format!("+1619{:07}", 3_000_000 + n)),
                    ("To".into(), a.line.clone()),
                    ("Body".into(), format!("load text {n}")),
                    ("NumMedia".into(), "0".into()),
                ];
                let public = format!("{}/sms/inbound", a.public_url.trim_end_matches('/'));
                let signature = signer.sign_form(&public, &params);
                let server = &a.url[(i % a.url.len() as u64) as usize];
                let ok = client
                    .post(format!("{}/sms/inbound", server.trim_end_matches('/')))
                    .header("X-Twilio-Signature", signature)
                    .form(&params)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 200);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "RESULT texts={} seconds={secs:.2} rate={:.1} failed={failed}",
        a.texts,
        a.texts as f64 / secs
    );
    if failed > 0 {
        anyhow::bail!("{failed} texts were not answered 200");
    }
    Ok(())
}
