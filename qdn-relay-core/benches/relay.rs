//! Benchmarks of the relay core. `BENCHMARKS.md` at the workspace root has
//! the numbers, the targets and how to read them.
//!
//! - `transition/*`: one [`Dispatch::open`] or [`Dispatch::handle`] per input
//!   kind, on the pure state machine. Each iteration gets its own copy of a
//!   prepared dispatch and input from an untimed setup
//!   ([`Criterion`]'s `iter_batched`), so cloning is not measured; what a
//!   clone costs is measured on its own as `transition/clone_dispatch`.
//! - `sweep/<store>/*`: the due query and a whole [`Relay::sweep_at`] firing
//!   1,000 due level timeouts in a [`MemoryStore`], each escalating and
//!   sending through a [`RecordingProvider`]. Two stores: every open
//!   dispatch the tag space admits (239,976), and 1,000,000 dispatches in the
//!   due index (see [`build_store`] for why not 1,000,000 open ones).
//! - `memory/*`: resident memory per typical open dispatch in a
//!   [`MemoryStore`], indexes included, printed once; the timed part is a
//!   load of one such dispatch from the store.
//!
//! Run with `cargo bench -p qdn-relay-core --features testing --bench relay`
//! (add `-- transition`, `-- sweep` or `-- memory` for one group). Under
//! `cargo test --benches` every benchmark runs once on small stores.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkGroup, Criterion, SamplingMode, measurement::WallTime};
use qdn_relay_core::testing::RecordingProvider;
use qdn_relay_core::{
    DashboardAction, DeliveryReport, DeliveryStatus, Dispatch, DispatchId, Effect, InboundText,
    Input, ManualClock, MemoryStore, OUTBOX_GRACE, PhoneNumber, Policy, ProviderMessageId, Relay,
    RouteReason, SendError, SendErrorKind, State, Store, SweepReport, Tag, Timestamp,
};
use tokio::runtime::Runtime;

/// 2026-01-05T09:00:00Z.
const T0: Timestamp = Timestamp::from_millis(1_767_603_600_000);
/// Each level's ack timeout.
const TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// A typical customer text (about 60 characters).
const BODY: &str = "Hi, our AC died overnight at 4410 Park Blvd. Can someone come?";
/// Tags are a letter (24 of them) and a number from 1 to 9999, unique among
/// open dispatches: no store can hold more open dispatches than this.
/// Every tag: one letter and a number (239,976), then two letters and a
/// number (5,759,424 more).
const TAG_SPACE: usize = 24 * 9999 + 24 * 24 * 9999;
/// The one-letter tags.
const SHORT_TAGS: usize = 24 * 9999;
const TAG_LETTERS: &[u8; 24] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";

/// Sizes of the stores; smaller when the benchmarks only run once as tests.
struct Sizes {
    /// Dispatches in the large store.
    total: usize,
    /// Open dispatches in either store.
    open: usize,
    /// Due dispatches in either store.
    due: usize,
    /// Store sizes (typical open dispatches) for the memory measurement.
    memory: &'static [usize],
}

impl Sizes {
    fn get() -> Sizes {
        // What criterion does: `--bench` (cargo bench) measures; without it
        // (cargo test --benches) or with `--test`, every benchmark runs once.
        let args: Vec<String> = std::env::args().collect();
        let measuring = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
        if measuring {
            Sizes {
                total: 1_000_000,
                open: 1_000_000,
                due: 1_000,
                // Just below and just after the point where every hash index
                // doubles (14,336 entries), a table near its fullest (100,000
                // of 114,688) and the whole tag space (just past a doubling).
                memory: &[14_000, 15_000, 100_000, SHORT_TAGS],
            }
        } else {
            Sizes {
                total: 3_000,
                open: 1_000,
                due: 100,
                memory: &[1_000],
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Fixture

/// A business line with a primary and a backup, 15 minutes each.
struct Fixture {
    line: PhoneNumber,
    primary: PhoneNumber,
    policy: Arc<Policy>,
}

impl Fixture {
    fn new() -> Fixture {
        let primary = phone("+16195550101");
        let backup = phone("+16195550102");
        let policy = Policy::simple(primary, backup, TIMEOUT).expect("a valid policy");
        Fixture {
            line: phone("+16195550100"),
            primary,
            policy: Arc::new(policy),
        }
    }

    /// Customer number `i` (distinct for every `i` below 10^9).
    fn customer(&self, i: u64) -> PhoneNumber {
        PhoneNumber::from_u64(18_580_000_000 + i).expect("an 11-digit number")
    }

    /// The `n`-th text of customer `i`.
    fn customer_text(&self, i: u64, n: u64) -> InboundText {
        InboundText {
            sid: sid('a', (n << 40) | i),
            from: self.customer(i),
            to: self.line,
            body: BODY.to_owned(),
            media: Vec::new(),
        }
    }

    /// A text from the primary dispatcher.
    fn dispatcher_text(&self, i: u64, body: &str) -> Input {
        Input::DispatcherText {
            text: InboundText {
                sid: sid('c', i),
                from: self.primary,
                to: self.line,
                body: body.to_owned(),
                media: Vec::new(),
            },
            route: RouteReason::Only,
        }
    }

    /// Customer `i`'s first text opened a dispatch at `at`; the forward to
    /// the primary is still pending (the provider has not answered).
    fn opened(&self, i: u64, at: Timestamp) -> Dispatch {
        let (d, _) = Dispatch::open(
            DispatchId::new(at, u128::from(i)),
            tag(i as usize % TAG_SPACE),
            Arc::clone(&self.policy),
            self.customer_text(i, 0),
            at,
        )
        .expect("the first text opens a dispatch");
        d
    }

    /// The typical open dispatch: one customer text, forwarded to the
    /// primary, the send accepted; waiting for an ack until `at + TIMEOUT`.
    fn typical(&self, i: u64, at: Timestamp) -> Dispatch {
        let mut d = self.opened(i, at);
        let fx = d
            .handle(at, accepted(i))
            .expect("the provider accepted the forward");
        assert!(!fx.is_empty());
        d
    }
}

fn phone(s: &str) -> PhoneNumber {
    s.parse().expect("a valid phone number")
}

/// A provider message id shaped like Twilio's: `SM` and 32 hex digits
/// (`kind` keeps inbound and outbound ids apart).
fn sid(kind: char, n: u64) -> ProviderMessageId {
    format!("SM{kind}{n:031x}")
        .parse()
        .expect("a valid message id")
}

/// The `i`-th of the 239,976 tags.
fn tag(i: usize) -> Tag {
    let i = i % TAG_SPACE;
    if i < SHORT_TAGS {
        let letter = TAG_LETTERS[(i / 9999) % 24] as char;
        return format!("{letter}{}", i % 9999 + 1)
            .parse()
            .expect("a valid tag");
    }
    let j = i - SHORT_TAGS;
    let (pair, number) = (j / 9999, j % 9999 + 1);
    let first = TAG_LETTERS[pair / 24] as char;
    let second = TAG_LETTERS[pair % 24] as char;
    format!("{first}{second}{number}")
        .parse()
        .expect("a valid tag")
}

/// The provider accepted leg 0 of dispatch `i`.
fn accepted(i: u64) -> Input {
    Input::SendOutcome {
        leg: 0,
        result: Ok(sid('b', i).into()),
    }
}

fn after(d: Duration) -> Timestamp {
    T0.plus(d)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

fn count(fx: &[Effect]) -> (usize, usize) {
    let sends = fx.iter().filter(|e| matches!(e, Effect::Send(_))).count();
    (sends, fx.len() - sends)
}

// ---------------------------------------------------------------------------
// 1. One transition per input kind

fn transitions(c: &mut Criterion) {
    let f = Fixture::new();
    let opened = f.opened(1, T0);
    let typical = f.typical(1, T0);
    let mut g = c.benchmark_group("transition");

    {
        let id = DispatchId::new(T0, 1);
        let tag = tag(1);
        let (_, fx) = Dispatch::open(id, tag, Arc::clone(&f.policy), f.customer_text(1, 0), T0)
            .expect("opens");
        report("open", &fx);
        g.bench_function("open", |b| {
            b.iter_batched(
                || (Arc::clone(&f.policy), f.customer_text(1, 0)),
                |(policy, text)| Dispatch::open(id, tag, policy, text, T0),
                BatchSize::SmallInput,
            )
        });
    }

    let min = |m: u64| after(Duration::from_secs(60 * m));
    // (name, dispatch before, now, input, (sends, events) expected)
    let cases: Vec<Case<'_>> = vec![
        (
            "customer_text_join",
            &typical,
            min(1),
            Input::CustomerText(f.customer_text(1, 1)),
            (1, 1),
        ),
        (
            "dispatcher_reply",
            &typical,
            min(2),
            f.dispatcher_text(1, "On my way, there in 20 minutes."),
            (1, 3),
        ),
        (
            "dispatcher_command_ack",
            &typical,
            min(2),
            f.dispatcher_text(1, "ACK"),
            (0, 2),
        ),
        (
            "dashboard_ack",
            &typical,
            min(2),
            Input::Dashboard(DashboardAction::Ack {
                by: "ops".to_owned(),
            }),
            (0, 1),
        ),
        (
            "delivery_callback",
            &typical,
            min(1),
            Input::Delivery(DeliveryReport {
                sid: sid('b', 1),
                status: DeliveryStatus::Delivered,
                error: None,
            }),
            (0, 1),
        ),
        ("send_outcome_ok", &opened, T0, accepted(1), (0, 1)),
        (
            "send_outcome_err",
            &opened,
            T0,
            Input::SendOutcome {
                leg: 0,
                result: Err(
                    SendError::new(SendErrorKind::Retryable, "too many requests").with_code(20429),
                ),
            },
            (0, 1),
        ),
        (
            "timeout_escalates",
            &typical,
            after(TIMEOUT),
            Input::Timeout,
            (1, 2),
        ),
        ("timeout_not_due", &typical, min(5), Input::Timeout, (0, 0)),
    ];
    for (name, base, now, input, expected) in cases {
        let mut d = base.clone();
        let fx = d.handle(now, input.clone()).expect(name);
        assert_eq!(count(&fx), expected, "{name}: (sends, events)");
        report(name, &fx);
        bench_handle(&mut g, name, base, now, input);
    }

    // What the setup above pays, and what a store pays on every load.
    g.bench_function("clone_dispatch", |b| b.iter(|| black_box(&typical).clone()));
    g.finish();
}

/// A transition to benchmark: its name, the dispatch before, the time,
/// the input, and how many sends and events it must produce.
type Case<'a> = (&'static str, &'a Dispatch, Timestamp, Input, (usize, usize));

fn report(name: &str, fx: &[Effect]) {
    let (sends, events) = count(fx);
    eprintln!("transition/{name}: {sends} send(s), {events} event(s)");
}

fn bench_handle(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    base: &Dispatch,
    now: Timestamp,
    input: Input,
) {
    g.bench_function(name, |b| {
        b.iter_batched(
            || (base.clone(), input.clone()),
            |(mut d, input)| {
                let fx = d.handle(now, input);
                (d, fx)
            },
            BatchSize::SmallInput,
        )
    });
}

// ---------------------------------------------------------------------------
// 2. The sweep

/// A store with due dispatches, the relay over it, and how to put the due
/// dispatches back the way they were.
struct Loaded {
    rt: Runtime,
    store: Arc<MemoryStore>,
    provider: Arc<RecordingProvider>,
    relay: Relay<MemoryStore, RecordingProvider, ManualClock>,
    /// The due dispatches as first saved.
    due: Vec<Dispatch>,
    now: Timestamp,
}

/// Fills a store with `total` dispatches, all with a deadline:
///
/// - `due` typical open dispatches whose level timed out in the minute
///   before `now` (each one escalates to the backup when swept);
/// - `open - due` typical open dispatches whose deadlines are spread over
///   the 15 minutes after `now`;
/// - `total - open` filler dispatches that each keep a forward pending in
///   the outbox, deadlines spread over the day after `now`. They are closed,
///   because a store cannot hold more than 239,976 open dispatches: a tag
///   (a letter and 1 to 9999) must be unique among open dispatches. They
///   are in the due index, the id index and the inbound-id index like open
///   ones; the open-only indexes (by customer, by tag, by dispatcher) hold
///   the `open` ones only.
fn build_store(f: &Fixture, total: usize, open: usize, due: usize) -> Loaded {
    assert!(due <= open && open <= total && open <= TAG_SPACE);
    let started = Instant::now();
    let rt = runtime();
    let now = after(Duration::from_secs(24 * 3600));
    let store = Arc::new(MemoryStore::new());
    let mut due_saved = Vec::with_capacity(due);
    rt.block_on(async {
        for i in 0..total {
            let n = i as u64;
            let d = if i < due {
                // Deadlines in [now - 1 min, now].
                let late = Duration::from_millis(60_000 * n / due as u64);
                f.typical(n, minus(minus(now, TIMEOUT), late))
            } else if i < open {
                // Deadlines in (now, now + 15 min].
                let ahead = Duration::from_millis(1 + TIMEOUT.as_millis() as u64 * n / open as u64);
                f.typical(n, minus(now.plus(ahead), TIMEOUT))
            } else {
                // Deadlines in (now, now + 1 day].
                let ahead = Duration::from_millis(1 + 86_400_000 * n / total as u64);
                let at = minus(now.plus(ahead), OUTBOX_GRACE);
                let mut d = f.opened(n, at);
                d.handle(
                    at,
                    Input::Dashboard(DashboardAction::Close {
                        by: "ops".to_owned(),
                    }),
                )
                .expect("closes");
                d
            };
            let mut d = d;
            d.set_version(1);
            store.save(&d, 0).await.expect("saved");
            if i < due {
                due_saved.push(d);
            }
        }
    });
    let clock = Arc::new(ManualClock::new(now));
    let provider = Arc::new(RecordingProvider::new());
    let relay = Relay::builder(Arc::clone(&store), Arc::clone(&provider), clock)
        .line(f.line, (*f.policy).clone())
        .build();
    eprintln!(
        "sweep: filled a store with {total} dispatches ({open} open, {due} due) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Loaded {
        rt,
        store,
        provider,
        relay,
        due: due_saved,
        now,
    }
}

fn minus(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp::from_millis(t.as_millis() - d.as_millis() as i64)
}

impl Loaded {
    /// Puts every due dispatch back as it was first saved (with a newer
    /// version), and forgets what the provider recorded.
    fn restore(&self) {
        self.rt.block_on(async {
            for orig in &self.due {
                let cur = self
                    .store
                    .get(orig.id())
                    .await
                    .expect("loaded")
                    .expect("present")
                    .version();
                let mut d = orig.clone();
                d.set_version(cur + 1);
                self.store.save(&d, cur).await.expect("restored");
            }
        });
        self.provider.clear();
    }

    fn due_query(&self) -> usize {
        self.rt
            .block_on(self.store.due(self.now, self.due.len()))
            .expect("due query")
            .len()
    }
}

/// One whole sweep of the due dispatches. Never inlined, so an
/// instruction counter can count it alone
/// (`valgrind --tool=callgrind --toggle-collect='*sweep_once*'`).
#[inline(never)]
fn sweep_once(l: &Loaded) -> SweepReport {
    l.rt.block_on(l.relay.sweep_at(l.now))
}

fn sweeps(c: &mut Criterion) {
    let f = Fixture::new();
    let sizes = Sizes::get();
    let mut stores = vec![(format!("open_{}", sizes.open), sizes.open)];
    if sizes.total > sizes.open {
        stores.push((format!("total_{}", sizes.total), sizes.total));
    }
    for (name, total) in stores {
        let mut g = c.benchmark_group(format!("sweep/{name}"));
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(20)
            .measurement_time(Duration::from_secs(8));
        // Built on first use, so a filter that skips this group skips the
        // fill too.
        let mut loaded: Option<Loaded> = None;
        let get = |loaded: &mut Option<Loaded>| {
            if loaded.is_none() {
                *loaded = Some(build_store(&f, total, sizes.open, sizes.due));
            }
        };

        let id = format!("due_query_{}", sizes.due);
        g.bench_function(&id, |b| {
            get(&mut loaded);
            let l = loaded.as_ref().expect("built");
            assert_eq!(l.due_query(), sizes.due, "every due dispatch is found");
            b.iter(|| l.due_query())
        });

        let id = format!("sweep_{}_due", sizes.due);
        g.bench_function(&id, |b| {
            get(&mut loaded);
            let l = loaded.as_ref().expect("built");
            // Once untimed, to check what is measured.
            l.restore();
            let r = l.rt.block_on(l.relay.sweep_at(l.now));
            assert!(r.errors.is_empty(), "sweep errors: {:?}", r.errors);
            assert_eq!((r.fired, r.unchanged), (sizes.due, 0));
            assert_eq!(l.provider.sent().len(), sizes.due, "one send each");
            assert_eq!(l.due_query(), 0, "nothing due after the sweep");
            b.iter_batched(|| l.restore(), |()| sweep_once(l), BatchSize::PerIteration)
        });
        g.finish();
        drop(loaded);
    }
}

/// A provider that answers after `latency` (a real provider's round trip).
struct SlowProvider {
    latency: Duration,
    n: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl qdn_relay_core::SmsProvider for SlowProvider {
    async fn send(
        &self,
        _msg: &qdn_relay_core::OutboundMessage,
    ) -> Result<qdn_relay_core::SendReceipt, SendError> {
        tokio::time::sleep(self.latency).await;
        let n = self.n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(qdn_relay_core::SendReceipt::new(
            format!("SMslow{n:028}").parse().expect("a valid sid"),
        ))
    }
    fn name(&self) -> &str {
        "slow"
    }
}

/// A sweep of due escalations against a provider with a round trip of
/// 10 ms, one after another and with the default concurrency.
fn sweep_latency(c: &mut Criterion) {
    let f = Fixture::new();
    let due: u64 = if Sizes::get().due < 1000 { 20 } else { 100 };
    let latency = Duration::from_millis(10);
    let mut g = c.benchmark_group(format!("sweep_latency/{due}_due_10ms_provider"));
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    for concurrency in [1, qdn_relay_core::DEFAULT_SWEEP_CONCURRENCY] {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        g.bench_function(format!("concurrency_{concurrency}"), |b| {
            b.iter_batched(
                || {
                    let store = Arc::new(MemoryStore::new());
                    rt.block_on(async {
                        for i in 0..due {
                            let mut d = f.typical(i, T0);
                            d.set_version(1);
                            store.save(&d, 0).await.expect("saved");
                        }
                    });
                    let provider = Arc::new(SlowProvider {
                        latency,
                        n: 0.into(),
                    });
                    let clock = Arc::new(ManualClock::new(T0.plus(TIMEOUT)));
                    Relay::builder(store, provider, clock)
                        .line(f.line, (*f.policy).clone())
                        .sweep_concurrency(concurrency)
                        .build()
                },
                |relay| {
                    let r = rt.block_on(relay.sweep());
                    assert_eq!(r.fired as u64, due);
                    r
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// 3. Memory per open dispatch

/// This process's resident memory in bytes, where the OS tells it.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn memory(c: &mut Criterion) {
    let f = Fixture::new();
    let sizes = Sizes::get().memory;
    let mut g = c.benchmark_group("memory");
    let mut filled: Vec<(Runtime, MemoryStore, DispatchId)> = Vec::new();
    g.bench_function("load_typical_dispatch", |b| {
        if filled.is_empty() {
            // Every store stays alive until the end, so a later fill cannot
            // reuse memory an earlier one freed and look smaller.
            for (i, &n) in sizes.iter().enumerate() {
                filled.push(fill_typical(&f, n, i as u64 * 1_000_000));
            }
        }
        let (rt, s, id) = filled.last().expect("filled");
        b.iter(|| rt.block_on(s.get(*id)).expect("loaded"))
    });
    g.finish();
}

/// Saves `n` typical open dispatches (customers from `first`) in a new
/// store and prints the resident memory they added, per dispatch.
fn fill_typical(f: &Fixture, n: usize, first: u64) -> (Runtime, MemoryStore, DispatchId) {
    let rt = runtime();
    let store = MemoryStore::new();
    // Made before the measurement; the store keeps its own copies (as
    // compact as a clone makes them), and only those are measured.
    let made: Vec<Dispatch> = (first..first + n as u64)
        .map(|i| {
            let mut d = f.typical(i, T0.plus(Duration::from_millis(i)));
            d.set_version(1);
            d
        })
        .collect();
    let d = &made[0];
    assert_eq!(d.state(), State::Open);
    assert_eq!((d.thread().len(), d.legs().len()), (1, 1));
    let before = resident_bytes();
    rt.block_on(async {
        for d in &made {
            store.save(d, 0).await.expect("saved");
        }
    });
    let after = resident_bytes();
    let id = made[n / 2].id();
    drop(made);
    match (before, after) {
        (Some(b), Some(a)) => eprintln!(
            "memory: {n} typical open dispatches (one {}-char customer text, forwarded to the \
             primary, send accepted) added {:.1} MiB resident to a MemoryStore: {} bytes per \
             open dispatch, indexes and allocator overhead included (target 2048)",
            BODY.chars().count(),
            a.saturating_sub(b) as f64 / (1024.0 * 1024.0),
            a.saturating_sub(b) / n as u64
        ),
        _ => eprintln!("memory: resident memory is not readable on this system"),
    }
    (rt, store, id)
}

criterion::criterion_group!(benches, memory, transitions, sweeps, sweep_latency);
criterion::criterion_main!(benches);
