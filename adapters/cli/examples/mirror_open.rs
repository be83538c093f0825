//! The server's store with many open dispatches: fills a SQLite file owned
//! by a `MirroredStore` (as `qdn-relay serve` runs it, mimalloc included)
//! with `--open` dispatches through `Relay::inbound` (one text each from a
//! distinct customer, a no-op provider), then, in a fresh process, times
//! opening the file (every dispatch loaded into memory) and the resident
//! memory it adds per open dispatch, and compares the latency of new texts
//! on the full store with the same on a store that starts empty.
//!
//! ```text
//! cargo run --release -p qdn-relay-cli --example mirror_open -- --open 1000000
//! ```
//!
//! The files go in a temporary directory under `TMPDIR` (about 1.5 kB of
//! disk per dispatch).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use qdn_relay_core::{PhoneNumber, Policy, Relay, SystemClock};
use qdn_relay_sqlite::MirroredStore;

mod common;
use common::{LINE, NoopProvider, cpu_seconds, runtime, text};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Open time, memory and latency of the mirrored SQLite store when full.
#[derive(Parser, Debug)]
struct Args {
    /// Open dispatches to fill the file with.
    #[arg(long, default_value_t = 1_000_000)]
    open: u64,
    /// Texts timed one by one (each from a new customer) on each store.
    #[arg(long, default_value_t = 20_000)]
    probe: u64,
    /// Texts in flight at once, filling and probing.
    #[arg(long, default_value_t = 32)]
    concurrency: u64,
    /// (internal) Open this file in this process and probe it.
    #[arg(long, hide = true)]
    reopen: Option<PathBuf>,
}

/// This process's resident memory, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn relay(store: Arc<MirroredStore>) -> Arc<Relay<MirroredStore, NoopProvider, SystemClock>> {
    let chain: Vec<PhoneNumber> = ["+14155550101", "+14155550102"]
        .iter()
        .map(|n| n.parse().expect("an E.164 number"))
        .collect();
    let policy = Policy::chain(&chain, Duration::from_secs(3600)).expect("a valid policy");
    Arc::new(
        Relay::builder(
            Arc::clone(&store),
            Arc::new(NoopProvider(AtomicU64::new(0))),
            Arc::new(SystemClock),
        )
        .line(LINE.parse().expect("an E.164 number"), policy)
        .opt_outs(store)
        .build(),
    )
}

/// Sends texts `first..first + n` from `concurrency` tasks; returns each
/// text's latency (when `timed`) and the CPU seconds used.
async fn send(
    relay: &Arc<Relay<MirroredStore, NoopProvider, SystemClock>>,
    first: u64,
    n: u64,
    concurrency: u64,
    timed: bool,
) -> (Vec<Duration>, f64) {
    let next = Arc::new(AtomicU64::new(first));
    let end = first + n;
    let cpu = cpu_seconds();
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let relay = Arc::clone(relay);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut took = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break took;
                    }
                    let t = Instant::now();
                    relay.inbound(text(i)).await.expect("the text is accepted");
                    if timed {
                        took.push(t.elapsed());
                    }
                }
            })
        })
        .collect();
    let mut took = Vec::new();
    for task in tasks {
        took.extend(task.await.expect("a sender task finishes"));
    }
    (took, cpu_seconds() - cpu)
}

fn percentiles(mut took: Vec<Duration>) -> String {
    took.sort();
    let at = |q: f64| {
        let i = ((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1));
        took.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    )
}

async fn probe(store: Arc<MirroredStore>, a: &Args, first: u64, label: &str) {
    let relay = relay(store);
    let (took, cpu) = send(&relay, first, a.probe, a.concurrency, true).await;
    println!(
        "{label}: {} texts, {} at once: {}; {:.0} us CPU per text",
        a.probe,
        a.concurrency,
        percentiles(took),
        cpu * 1e6 / a.probe as f64
    );
}

fn main() {
    let a = Args::parse();
    let rt = runtime();
    match a.reopen.clone() {
        Some(path) => rt.block_on(reopen(&path, &a)),
        None => rt.block_on(run(&a)),
    }
}

/// In a fresh process: open the full file, then probe it.
async fn reopen(path: &Path, a: &Args) {
    let before = rss();
    let t = Instant::now();
    let store = Arc::new(MirroredStore::open(path).await.expect("the file opens"));
    let took = t.elapsed();
    let added = rss().saturating_sub(before);
    let n = store.len() as u64;
    println!(
        "opened {n} dispatches in {:.1} s; resident memory +{:.0} MiB, {} B per dispatch",
        took.as_secs_f64(),
        added as f64 / (1024.0 * 1024.0),
        added / n.max(1)
    );
    probe(store, a, 10_000_000, "on the full store").await;
}

async fn run(a: &Args) {
    let dir = tempfile::tempdir().expect("a temporary directory");

    let empty = Arc::new(
        MirroredStore::open(dir.path().join("empty.db"))
            .await
            .expect("the store opens"),
    );
    probe(empty, a, 20_000_000, "on a store that starts empty").await;

    let path = dir.path().join("full.db");
    let store = Arc::new(MirroredStore::open(&path).await.expect("the store opens"));
    let t = Instant::now();
    let (_, cpu) = send(&relay(Arc::clone(&store)), 0, a.open, 64, false).await;
    println!(
        "filled: {} dispatches in {:.1} s ({:.0} texts/s, {:.0} us CPU per text)",
        a.open,
        t.elapsed().as_secs_f64(),
        a.open as f64 / t.elapsed().as_secs_f64(),
        cpu * 1e6 / a.open as f64
    );
    drop(store);
    // The mirror's lock went with it: the file is free for another process.
    let status = std::process::Command::new(std::env::current_exe().expect("this example"))
        .arg("--reopen")
        .arg(&path)
        .args(["--probe", &a.probe.to_string()])
        .args(["--concurrency", &a.concurrency.to_string()])
        .status()
        .expect("the example runs again");
    assert!(status.success(), "reopening the full file failed");
}
