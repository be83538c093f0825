//! Where a customer's text spends its time below the HTTP layer: drives
//! `Relay::inbound` on a file-backed `SqliteStore` (as `qdn-relay serve`
//! does: the same store keeps the opt-outs; a no-op provider) and counts
//! and times every store call with `qdn_relay_core::testing::CountingStore`
//! (the opt-out check before each send is not counted).
//!
//! 1. Opens `--open` dispatches (one text each from distinct customers).
//! 2. Sends `--texts` more from `--concurrency` tasks at once and reports
//!    texts per second, the process's CPU time per text, and per store
//!    method: calls per text, how many found something, and the mean wall
//!    time per call (queueing for the writer included).
//! 3. Times each store operation alone, sequentially, on the filled store
//!    (wall and process CPU per call), an empty `spawn_blocking` round trip,
//!    and the JSON (de)serialisation of a dispatch.
//!
//! The database goes in a temporary directory under `TMPDIR`.
//!
//! ```text
//! cargo run --release -p qdn-relay-cli --example inbound_cost -- --open 5000 --texts 3000
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use qdn_relay_core::testing::CountingStore;
use qdn_relay_core::{Dispatch, ListFilter, PhoneNumber, Policy, Relay, Store, SystemClock};
use qdn_relay_sqlite::{SqliteOptions, SqliteStore};

mod common;
use common::{LINE, NoopProvider, cpu_seconds, runtime, text};

/// Count and time the store calls of `Relay::inbound` on SQLite.
#[derive(Parser, Debug)]
struct Args {
    /// Open dispatches before measuring.
    #[arg(long, default_value_t = 5000)]
    open: u64,
    /// Texts measured.
    #[arg(long, default_value_t = 3000)]
    texts: u64,
    /// Texts in flight at once (like the HTTP benchmark's connections).
    #[arg(long, default_value_t = 32)]
    concurrency: u64,
    /// Read-only connections of the store (0: reads share the writer's).
    #[arg(long, default_value_t = SqliteOptions::default().readers)]
    readers: usize,
    /// Calls per operation in the per-operation timings.
    #[arg(long, default_value_t = 5000)]
    ops: u32,
}

/// Runs `op(i)` `n` times in a row; prints wall and CPU microseconds per call.
async fn time_op<F, Fut>(name: &str, n: u32, mut op: F)
where
    F: FnMut(u32) -> Fut,
    Fut: Future,
{
    let cpu = cpu_seconds();
    let t = Instant::now();
    for i in 0..n {
        black_box(op(i).await);
    }
    println!(
        "  {name:<32} {:>7.1} us wall {:>7.1} us CPU",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n),
        (cpu_seconds() - cpu) * 1e6 / f64::from(n)
    );
}

fn main() {
    let a = Args::parse();
    let rt = runtime();
    rt.block_on(run(a));
}

async fn run(a: Args) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let inner = SqliteStore::open_with(
        dir.path().join("relay.db"),
        SqliteOptions::default().readers(a.readers),
    )
    .await
    .expect("the store opens");
    let store = Arc::new(CountingStore::new(inner));
    let chain: Vec<PhoneNumber> = ["+14155550101", "+14155550102"]
        .iter()
        .map(|n| n.parse().expect("an E.164 number"))
        .collect();
    let policy = Policy::chain(&chain, Duration::from_secs(3600)).expect("a valid policy");
    let relay = Arc::new(
        Relay::builder(
            Arc::clone(&store),
            Arc::new(NoopProvider(AtomicU64::new(0))),
            Arc::new(SystemClock),
        )
        .line(LINE.parse().expect("an E.164 number"), policy)
        .opt_outs(Arc::new(store.inner().clone()))
        .build(),
    );

    let t = Instant::now();
    for i in 0..a.open {
        relay.inbound(text(i)).await.expect("the text is accepted");
    }
    println!(
        "opened {} dispatches in {:.1} s (one at a time)",
        a.open,
        t.elapsed().as_secs_f64()
    );

    store.reset();
    let next = Arc::new(AtomicU64::new(a.open));
    let end = a.open + a.texts;
    let cpu = cpu_seconds();
    let t = Instant::now();
    let tasks: Vec<_> = (0..a.concurrency.max(1))
        .map(|_| {
            let relay = Arc::clone(&relay);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    relay.inbound(text(i)).await.expect("the text is accepted");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a sender task finishes");
    }
    let wall = t.elapsed().as_secs_f64();
    let texts = a.texts as f64;
    println!(
        "{} texts from new customers, {} at once: {:.0} texts/s, {:.0} us CPU per text",
        a.texts,
        a.concurrency,
        texts / wall,
        (cpu_seconds() - cpu) * 1e6 / texts
    );
    let mut calls = 0;
    for (name, s) in store.stats() {
        calls += s.calls;
        println!(
            "  {name:<20} {:>5.2} calls/text {:>5.1}% found {:>9.1} us wall per call (queueing included)",
            s.calls as f64 / texts,
            100.0 * s.found as f64 / s.calls.max(1) as f64,
            s.time.as_secs_f64() * 1e6 / s.calls.max(1) as f64
        );
    }
    println!("  store calls per text: {:.2}", calls as f64 / texts);

    println!("each operation alone, one at a time, on the filled store:");
    let st = store.inner();
    let open = st
        .list(ListFilter::Open, 500)
        .await
        .expect("the store lists");
    assert!(!open.is_empty(), "--open or --texts must open dispatches");
    let pick = |i: u32| &open[i as usize % open.len()];
    let n = a.ops.max(1);
    time_op("spawn_blocking (empty)", n, |_| {
        tokio::task::spawn_blocking(|| ())
    })
    .await;
    time_op("open_by_tag (taken)", n, |i| st.open_by_tag(pick(i).tag())).await;
    time_op("get", n, |i| st.get(pick(i).id())).await;
    time_op("by_inbound_sid (none)", n, |i| {
        let t = text(u64::from(i) + 8_000_000);
        async move { st.by_inbound_sid(&t.sid).await }
    })
    .await;
    time_op("open_for_customer (none)", n, |i| {
        st.open_for_customer(
            LINE.parse().expect("an E.164 number"),
            text(u64::from(i) + 8_000_000).from,
        )
    })
    .await;
    time_op("open_for_dispatcher (none)", n, |i| {
        st.open_for_dispatcher(text(u64::from(i) + 8_000_000).from, 1)
    })
    .await;
    let mut d = open[0].clone();
    let cpu = cpu_seconds();
    let t = Instant::now();
    for _ in 0..n {
        let v = d.version();
        d.set_version(v + 1);
        st.save(&d, v).await.expect("the save succeeds");
    }
    println!(
        "  {:<32} {:>7.1} us wall {:>7.1} us CPU",
        "save (update)",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n),
        (cpu_seconds() - cpu) * 1e6 / f64::from(n)
    );
    let json = serde_json::to_string(&d).expect("a dispatch serialises");
    let t = Instant::now();
    for _ in 0..n {
        black_box(serde_json::to_string(black_box(&d)).expect("a dispatch serialises"));
    }
    let ser = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let t = Instant::now();
    for _ in 0..n {
        black_box(serde_json::from_str::<Dispatch>(black_box(&json)).expect("a record parses"));
    }
    println!(
        "  dispatch record: {} bytes of JSON, serialise {ser:.1} us, parse {:.1} us",
        json.len(),
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    );
}
