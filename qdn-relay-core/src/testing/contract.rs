//! The [`Store`] contract suite: every store adapter runs it against
//! itself.
//!
//! Each case is an `async fn(&S)` taking a fresh, empty store. The
//! [`store_contract_tests!`](crate::store_contract_tests) macro turns the
//! whole suite into one `#[tokio::test]` per case:
//!
//! ```ignore
//! qdn_relay_core::store_contract_tests!(async { MyStore::connect_fresh().await });
//! ```
//!
//! Cases panic with a message naming the broken rule.

use std::sync::Arc;
use std::time::Duration;

use crate::dispatch::{Dispatch, HIGH_BYTES, HIGH_ENTRIES, HistoryPage};
use crate::event::Effect;
use crate::input::{
    DashboardAction, DeliveryReport, DeliveryStatus, InboundText, Input, RouteReason,
};
use crate::policy::Policy;
use crate::ports::{ConflictReason, InboundLookup, ListFilter, Store, StoreError};
use crate::record::State;
use crate::types::{DispatchId, JobId, PhoneNumber, ProviderMessageId, Tag, Timestamp};

/// The names of every case, in order (what the macro generates).
pub const CASES: &[&str] = &[
    "save_new_then_get",
    "save_requires_version_plus_one",
    "create_twice_conflicts",
    "stale_version_conflicts_and_changes_nothing",
    "lookup_by_inbound_sid",
    "lookup_by_leg_sid",
    "open_for_customer_only_while_open",
    "one_open_dispatch_per_customer_and_line",
    "tag_unique_among_open_only",
    "inbound_sid_unique",
    "open_for_dispatcher_most_recent_first",
    "due_in_order_with_limit",
    "list_newest_first",
    "missing_lookups_are_none",
    "round_trip_preserves_everything",
    "by_job_newest_first_and_follows_links",
    "first_free_tag_skips_open_tags_only",
    "inbound_lookup_agrees_with_the_single_lookups",
    "moved_entries_keep_their_lookups_and_pages",
];

const T0: i64 = 1_767_603_600_000;

fn n(s: &str) -> PhoneNumber {
    s.parse().unwrap_or_else(|e| panic!("test number {s}: {e}"))
}

fn sid(s: &str) -> ProviderMessageId {
    s.parse().unwrap_or_else(|e| panic!("test sid {s}: {e}"))
}

const LINE: &str = "+16195550000";
const PRIMARY: &str = "+16195550101";
const BACKUP: &str = "+18583354807";

fn policy() -> Arc<Policy> {
    Arc::new(
        Policy::simple(n(PRIMARY), n(BACKUP), Duration::from_secs(900))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// A fresh dispatch (version 1, ready for `save(&d, 0)`) opened at `t0 +
/// at_s` seconds by `customer` with inbound sid `in_sid` and tag `tag`.
pub fn fixture(n_id: u128, tag: &str, customer: &str, in_sid: &str, at_s: i64) -> Dispatch {
    let now = Timestamp::from_millis(T0 + at_s * 1000);
    let text = InboundText {
        sid: sid(in_sid),
        from: n(customer),
        to: n(LINE),
        body: format!("hello from {customer}"),
        media: vec![],
    };
    let tag: Tag = tag.parse().unwrap_or_else(|e| panic!("{e}"));
    let (mut d, _) = Dispatch::open(DispatchId::new(now, n_id), tag, policy(), text, now)
        .unwrap_or_else(|e| panic!("{e}"));
    d.set_version(1);
    d
}

/// Applies `input` to a loaded dispatch and bumps its version for saving.
fn step(d: &mut Dispatch, at_s: i64, input: Input) -> (u64, Vec<Effect>) {
    let expected = d.version();
    let fx = d
        .handle(Timestamp::from_millis(T0 + at_s * 1000), input)
        .unwrap_or_else(|e| panic!("fixture input refused: {e}"));
    d.set_version(expected + 1);
    (expected, fx)
}

/// Applies `input` to a dispatch not saved yet (its version stays 1).
fn prepare(d: &mut Dispatch, at_s: i64, input: Input) {
    let fx = d
        .handle(Timestamp::from_millis(T0 + at_s * 1000), input)
        .unwrap_or_else(|e| panic!("fixture input refused: {e}"));
    assert!(!fx.is_empty(), "the fixture input changed nothing");
}

/// Gives every pending leg a provider sid `SMleg<id>-<leg>`.
fn accept_all(d: &mut Dispatch, at_s: i64) -> u64 {
    let expected = d.version();
    let pending: Vec<u32> = d
        .legs()
        .iter()
        .filter(|l| l.sid.is_none())
        .map(|l| l.index)
        .collect();
    for leg in pending {
        let s = sid(&format!("SMleg{}-{leg}", d.id().as_u128() & 0xffff_ffff));
        d.handle(
            Timestamp::from_millis(T0 + at_s * 1000),
            Input::SendOutcome {
                leg,
                result: Ok(s.into()),
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    d.set_version(expected + 1);
    expected
}

async fn must_save<S: Store + ?Sized>(s: &S, d: &Dispatch, expected: u64) {
    if let Err(e) = s.save(d, expected).await {
        panic!(
            "save of {} at expected version {expected} failed: {e}",
            d.id()
        );
    }
}

async fn must_get<S: Store + ?Sized>(s: &S, id: DispatchId) -> Dispatch {
    match s.get(id).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("dispatch {id} was saved but get returned None"),
        Err(e) => panic!("get {id} failed: {e}"),
    }
}

fn assert_conflict(r: Result<(), StoreError>, what: &str) -> ConflictReason {
    match r {
        Err(StoreError::Conflict { reason, .. }) => reason,
        Err(e) => panic!("{what}: expected StoreError::Conflict, got {e}"),
        Ok(()) => panic!("{what}: expected StoreError::Conflict, but the save succeeded"),
    }
}

/// A new dispatch saved with expected 0 reads back equal, at version 1.
pub async fn save_new_then_get<S: Store + ?Sized>(s: &S) {
    let d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    must_save(s, &d, 0).await;
    let got = must_get(s, d.id()).await;
    assert_eq!(got, d, "get must return exactly what was saved");
    assert_eq!(got.version(), 1);
}

/// `save` refuses a dispatch whose version is not `expected + 1`.
pub async fn save_requires_version_plus_one<S: Store + ?Sized>(s: &S) {
    let mut d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    d.set_version(5);
    match s.save(&d, 0).await {
        Err(StoreError::Invalid { .. }) => {}
        other => panic!("version 5 saved with expected 0 must be Invalid, got {other:?}"),
    }
    assert!(
        s.get(d.id()).await.map(|o| o.is_none()).unwrap_or(false),
        "an invalid save must store nothing"
    );
}

/// Creating the same id twice conflicts.
pub async fn create_twice_conflicts<S: Store + ?Sized>(s: &S) {
    let d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    must_save(s, &d, 0).await;
    let reason = assert_conflict(s.save(&d, 0).await, "second create of the same id");
    assert!(
        matches!(
            reason,
            ConflictReason::Version {
                expected: 0,
                found: Some(1)
            }
        ),
        "reason should be a version conflict, got {reason:?}"
    );
}

/// Saving against a stale version conflicts and leaves the stored record
/// and every index untouched.
pub async fn stale_version_conflicts_and_changes_nothing<S: Store + ?Sized>(s: &S) {
    let d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    must_save(s, &d, 0).await;
    let mut a = must_get(s, d.id()).await;
    let mut b = a.clone();
    let (ea, _) = step(
        &mut a,
        10,
        Input::Dashboard(DashboardAction::Ack { by: "ann".into() }),
    );
    must_save(s, &a, ea).await;
    let (eb, _) = step(
        &mut b,
        11,
        Input::Dashboard(DashboardAction::Close { by: "bob".into() }),
    );
    let reason = assert_conflict(s.save(&b, eb).await, "save at a stale version");
    assert!(
        matches!(
            reason,
            ConflictReason::Version {
                expected: 1,
                found: Some(2)
            }
        ),
        "{reason:?}"
    );
    let stored = must_get(s, d.id()).await;
    assert_eq!(stored, a, "the losing save must change nothing");
    assert_eq!(stored.state(), State::Acked);
    let open = s
        .open_for_customer(d.line(), d.customer())
        .await
        .ok()
        .flatten();
    assert_eq!(
        open.map(|o| o.id()),
        Some(d.id()),
        "the loser's close must not reach the indexes"
    );
}

/// Every inbound message id of a dispatch finds it, including later texts.
pub async fn lookup_by_inbound_sid<S: Store + ?Sized>(s: &S) {
    let mut d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    must_save(s, &d, 0).await;
    let text = InboundText {
        sid: sid("SMin2"),
        from: d.customer(),
        to: d.line(),
        body: "again".into(),
        media: vec![],
    };
    let (e, _) = step(&mut d, 5, Input::CustomerText(text));
    must_save(s, &d, e).await;
    for k in ["SMin1", "SMin2"] {
        let got = s
            .by_inbound_sid(&sid(k))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            got.map(|g| g.version()),
            Some(2),
            "by_inbound_sid({k}) must return the latest version"
        );
    }
}

/// Provider ids of outbound legs find their dispatch once recorded.
pub async fn lookup_by_leg_sid<S: Store + ?Sized>(s: &S) {
    let mut d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    must_save(s, &d, 0).await;
    let e = accept_all(&mut d, 1);
    must_save(s, &d, e).await;
    let leg_sid = d.legs()[0]
        .sid
        .clone()
        .unwrap_or_else(|| panic!("leg has a sid"));
    let got = s
        .by_leg_sid(&leg_sid)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.map(|g| g.id()), Some(d.id()));
}

/// The (line, customer) index only holds open dispatches.
pub async fn open_for_customer_only_while_open<S: Store + ?Sized>(s: &S) {
    let mut d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    must_save(s, &d, 0).await;
    let got = s
        .open_for_customer(d.line(), d.customer())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.map(|g| g.id()), Some(d.id()));
    let (e, _) = step(
        &mut d,
        5,
        Input::Dashboard(DashboardAction::Close { by: "ann".into() }),
    );
    must_save(s, &d, e).await;
    let got = s
        .open_for_customer(d.line(), d.customer())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(got.is_none(), "a closed dispatch is not open");
    // ... and the customer may open a new one.
    let d2 = fixture(2, "K8", "+16195550100", "SMin2", 10);
    must_save(s, &d2, 0).await;
    let got = s
        .open_for_customer(d.line(), d.customer())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.map(|g| g.id()), Some(d2.id()));
}

/// A second open dispatch for the same customer and line conflicts.
pub async fn one_open_dispatch_per_customer_and_line<S: Store + ?Sized>(s: &S) {
    must_save(s, &fixture(1, "K7", "+16195550100", "SMin1", 0), 0).await;
    let other = fixture(2, "B3", "+16195550100", "SMin2", 1);
    let reason = assert_conflict(
        s.save(&other, 0).await,
        "second open dispatch for one customer",
    );
    assert_eq!(reason, ConflictReason::OpenCustomer);
    assert!(
        s.get(other.id())
            .await
            .map(|o| o.is_none())
            .unwrap_or(false),
        "the conflicting dispatch must not be stored"
    );
}

/// Tags are unique among open dispatches and free again once closed.
pub async fn tag_unique_among_open_only<S: Store + ?Sized>(s: &S) {
    let mut d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    must_save(s, &d, 0).await;
    let clash = fixture(2, "K7", "+16195550111", "SMin2", 1);
    let reason = assert_conflict(s.save(&clash, 0).await, "second open dispatch with tag K7");
    assert!(matches!(reason, ConflictReason::Tag(_)), "{reason:?}");
    let got = s
        .open_by_tag("K7".parse().unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.map(|g| g.id()), Some(d.id()));
    let (e, _) = step(
        &mut d,
        5,
        Input::Dashboard(DashboardAction::Close { by: "ann".into() }),
    );
    must_save(s, &d, e).await;
    must_save(s, &clash, 0).await;
    let got = s
        .open_by_tag("K7".parse().unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        got.map(|g| g.id()),
        Some(clash.id()),
        "the tag is free once the first dispatch closed"
    );
}

/// An inbound message id belongs to one dispatch only.
pub async fn inbound_sid_unique<S: Store + ?Sized>(s: &S) {
    must_save(s, &fixture(1, "K7", "+16195550100", "SMin1", 0), 0).await;
    let dup = fixture(2, "B3", "+16195550111", "SMin1", 1);
    let reason = assert_conflict(s.save(&dup, 0).await, "second dispatch with inbound SMin1");
    assert!(
        matches!(reason, ConflictReason::InboundSid(_)),
        "{reason:?}"
    );
}

/// A dispatcher's open dispatches come most recently notified first,
/// limited, without closed ones.
pub async fn open_for_dispatcher_most_recent_first<S: Store + ?Sized>(s: &S) {
    let a = fixture(1, "A1", "+16195550100", "SMin1", 0);
    let b = fixture(2, "B2", "+16195550111", "SMin2", 60);
    let mut c = fixture(3, "C3", "+16195550122", "SMin3", 120);
    for d in [&a, &b, &c] {
        must_save(s, d, 0).await;
    }
    let got = s
        .open_for_dispatcher(n(PRIMARY), 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<DispatchId> = got.iter().map(Dispatch::id).collect();
    assert_eq!(
        ids,
        vec![c.id(), b.id(), a.id()],
        "most recently notified first"
    );
    let got = s
        .open_for_dispatcher(n(PRIMARY), 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.len(), 2, "limit applies");
    let (e, _) = step(
        &mut c,
        130,
        Input::Dashboard(DashboardAction::Close { by: "ann".into() }),
    );
    must_save(s, &c, e).await;
    let got = s
        .open_for_dispatcher(n(PRIMARY), 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        got.iter().map(Dispatch::id).collect::<Vec<_>>(),
        vec![b.id(), a.id()]
    );
    let none = s
        .open_for_dispatcher(n(BACKUP), 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(none.is_empty(), "the backup was not texted yet");
}

/// The due query: only deadlines `<= now`, earliest first, limited; a
/// closed dispatch with nothing pending is never due.
pub async fn due_in_order_with_limit<S: Store + ?Sized>(s: &S) {
    // Deadlines: the level timeout (900 s) or a pending send (60 s) — accept
    // sends so only the level timeouts remain.
    let mut ds = Vec::new();
    for (i, at) in [(1u128, 300i64), (2, 0), (3, 600)] {
        let mut d = fixture(
            i,
            ["A1", "B2", "C3"][i as usize - 1],
            &format!("+1619555020{i}"),
            &format!("SMin{i}"),
            at,
        );
        must_save(s, &d, 0).await;
        let e = accept_all(&mut d, at + 1);
        must_save(s, &d, e).await;
        ds.push(d);
    }
    let t = |secs: i64| Timestamp::from_millis(T0 + secs * 1000);
    let due = s.due(t(899), 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        due.is_empty(),
        "nothing is due before the first timeout: {due:?}"
    );
    let due = s
        .due(t(900 + 600), 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<DispatchId> = due.iter().map(|d| d.id).collect();
    assert_eq!(
        ids,
        vec![ds[1].id(), ds[0].id(), ds[2].id()],
        "earliest deadline first"
    );
    assert!(due.windows(2).all(|w| w[0].deadline <= w[1].deadline));
    assert_eq!(due[0].deadline, t(900));
    let due = s
        .due(t(900 + 600), 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(due.len(), 2, "limit applies");
    // Closing removes the deadline.
    let mut first = must_get(s, ds[1].id()).await;
    let (e, _) = step(
        &mut first,
        10,
        Input::Dashboard(DashboardAction::Close { by: "ann".into() }),
    );
    must_save(s, &first, e).await;
    let due = s.due(t(10_000), 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !due.iter().any(|d| d.id == first.id()),
        "a closed dispatch is not due"
    );
    assert_eq!(due.len(), 2);
}

/// Listing: newest first, open filter, limit.
pub async fn list_newest_first<S: Store + ?Sized>(s: &S) {
    let a = fixture(1, "A1", "+16195550100", "SMin1", 0);
    let mut b = fixture(2, "B2", "+16195550111", "SMin2", 60);
    let c = fixture(3, "C3", "+16195550122", "SMin3", 120);
    for d in [&a, &b, &c] {
        must_save(s, d, 0).await;
    }
    let (e, _) = step(
        &mut b,
        70,
        Input::Dashboard(DashboardAction::Close { by: "ann".into() }),
    );
    must_save(s, &b, e).await;
    let all = s
        .list(ListFilter::All, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        all.iter().map(Dispatch::id).collect::<Vec<_>>(),
        vec![c.id(), b.id(), a.id()]
    );
    let open = s
        .list(ListFilter::Open, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        open.iter().map(Dispatch::id).collect::<Vec<_>>(),
        vec![c.id(), a.id()]
    );
    let one = s
        .list(ListFilter::All, 1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(one.len(), 1);
}

/// Lookups that match nothing are `None` or empty, not errors.
pub async fn missing_lookups_are_none<S: Store + ?Sized>(s: &S) {
    let id = DispatchId::new(Timestamp::from_millis(T0), 99);
    assert!(matches!(s.get(id).await, Ok(None)));
    assert!(matches!(s.by_inbound_sid(&sid("SMnope")).await, Ok(None)));
    assert!(matches!(s.by_leg_sid(&sid("SMnope")).await, Ok(None)));
    assert!(matches!(
        s.open_for_customer(n(LINE), n("+16195550100")).await,
        Ok(None)
    ));
    assert!(matches!(
        s.open_by_tag("Z9".parse().unwrap_or_else(|e| panic!("{e}")))
            .await,
        Ok(None)
    ));
    assert!(matches!(s.open_for_dispatcher(n(PRIMARY), 5).await, Ok(v) if v.is_empty()));
    assert!(matches!(s.due(Timestamp::from_millis(i64::MAX / 2), 5).await, Ok(v) if v.is_empty()));
    assert!(matches!(s.list(ListFilter::All, 5).await, Ok(v) if v.is_empty()));
}

/// A dispatch with every kind of content reads back equal.
pub async fn round_trip_preserves_everything<S: Store + ?Sized>(s: &S) {
    let mut d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    let job_42 = Input::LinkJob {
        job: job("job-42"),
        sync: false,
    };
    prepare(&mut d, 0, job_42);
    prepare(&mut d, 0, Input::EnableJobSync);
    must_save(s, &d, 0).await;
    let e = accept_all(&mut d, 1);
    must_save(s, &d, e).await;
    let (e, _) = step(&mut d, 901, Input::Timeout);
    must_save(s, &d, e).await;
    let text = InboundText {
        sid: sid("SMreply1"),
        from: n(BACKUP),
        to: n(LINE),
        body: "On my way — 10 min 🚛 & \"quotes\"".into(),
        media: vec![crate::input::Media {
            url: "https://example.com/m/1".into(),
            content_type: Some("image/jpeg".into()),
        }],
    };
    let (e, _) = step(
        &mut d,
        950,
        Input::DispatcherText {
            text,
            route: crate::input::RouteReason::Only,
        },
    );
    must_save(s, &d, e).await;
    let got = must_get(s, d.id()).await;
    assert_eq!(got, d, "every field must survive the store");
    assert_eq!(got.job_id(), Some(&job("job-42")));
    assert!(
        got.job_sync().is_some(),
        "the job sync cursor must survive the store"
    );
}

fn job(s: &str) -> JobId {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

async fn ids_by_job<S: Store + ?Sized>(s: &S, j: &str, limit: usize) -> Vec<DispatchId> {
    match s.by_job(&job(j), limit).await {
        Ok(v) => v.iter().map(Dispatch::id).collect(),
        Err(e) => panic!("by_job({j}) failed: {e}"),
    }
}

/// `by_job` returns a job's dispatches newest first, open or closed, with
/// a limit, and follows a job id that appears or changes on a later save.
pub async fn by_job_newest_first_and_follows_links<S: Store + ?Sized>(s: &S) {
    let mut a1 = fixture(1, "K7", "+16195550100", "SMin1", 0);
    let link = |j: &str, sync: bool| Input::LinkJob { job: job(j), sync };
    prepare(&mut a1, 0, link("dumpster #1042", false));
    must_save(s, &a1, 0).await;
    let mut a2 = fixture(2, "B8", "+16195550111", "SMin2", 10);
    must_save(s, &a2, 0).await;
    let mut b1 = fixture(3, "C9", "+16195550122", "SMin3", 20);
    prepare(&mut b1, 20, link("other", false));
    must_save(s, &b1, 0).await;
    assert_eq!(ids_by_job(s, "dumpster #1042", 10).await, vec![a1.id()]);

    // a2 is linked after it was first saved.
    let (expected, fx) = step(&mut a2, 30, link("dumpster #1042", true));
    assert!(!fx.is_empty());
    must_save(s, &a2, expected).await;
    assert_eq!(
        ids_by_job(s, "dumpster #1042", 10).await,
        vec![a2.id(), a1.id()],
        "newest first, including a job id set on a later save"
    );
    assert_eq!(ids_by_job(s, "dumpster #1042", 1).await, vec![a2.id()]);

    // Closed dispatches stay listed under their job.
    let (e, _) = step(
        &mut a1,
        40,
        Input::Dashboard(DashboardAction::Close { by: "ops".into() }),
    );
    must_save(s, &a1, e).await;
    assert_eq!(
        ids_by_job(s, "dumpster #1042", 10).await,
        vec![a2.id(), a1.id()],
        "a closed dispatch is still its job's"
    );

    // Re-linking moves it.
    let (expected, fx) = step(&mut a2, 50, link("other", false));
    assert!(!fx.is_empty());
    must_save(s, &a2, expected).await;
    assert_eq!(ids_by_job(s, "dumpster #1042", 10).await, vec![a1.id()]);
    assert_eq!(ids_by_job(s, "other", 10).await, vec![b1.id(), a2.id()]);
    assert!(ids_by_job(s, "nobody", 10).await.is_empty());
}

/// `first_free_tag` returns the first candidate, in the order given, that
/// no open dispatch holds; a closed dispatch's tag is free again.
pub async fn first_free_tag_skips_open_tags_only<S: Store + ?Sized>(s: &S) {
    let tag = |t: &str| -> Tag { t.parse().unwrap_or_else(|e| panic!("{e}")) };
    let free = |r: Result<Option<Tag>, StoreError>| {
        r.unwrap_or_else(|e| panic!("first_free_tag failed: {e}"))
    };
    assert_eq!(free(s.first_free_tag(&[]).await), None, "no candidates");
    assert_eq!(
        free(s.first_free_tag(&[tag("K7"), tag("B8")]).await),
        Some(tag("K7")),
        "an empty store holds no tag"
    );
    must_save(s, &fixture(1, "K7", "+16195550100", "SMin1", 0), 0).await;
    let mut b8 = fixture(2, "B8", "+16195550111", "SMin2", 1);
    must_save(s, &b8, 0).await;
    assert_eq!(
        free(
            s.first_free_tag(&[tag("K7"), tag("B8"), tag("C9"), tag("D2")])
                .await
        ),
        Some(tag("C9")),
        "the first candidate no open dispatch holds, in the order given"
    );
    assert_eq!(
        free(s.first_free_tag(&[tag("B8"), tag("K7"), tag("B8")]).await),
        None,
        "every candidate is held"
    );
    let (e, _) = step(
        &mut b8,
        5,
        Input::Dashboard(DashboardAction::Close { by: "ann".into() }),
    );
    must_save(s, &b8, e).await;
    assert_eq!(
        free(s.first_free_tag(&[tag("K7"), tag("B8"), tag("C9")]).await),
        Some(tag("B8")),
        "a closed dispatch's tag is free"
    );
}

/// Asks `inbound_lookup` and checks it against the three lookups it
/// stands for.
async fn lookup<S: Store + ?Sized>(s: &S, from: &str, in_sid: &str) -> InboundLookup {
    let (line, from, in_sid) = (n(LINE), n(from), sid(in_sid));
    let got = s
        .inbound_lookup(line, from, &in_sid)
        .await
        .unwrap_or_else(|e| panic!("inbound_lookup failed: {e}"));
    let single = InboundLookup {
        notified: !s
            .open_for_dispatcher(from, 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty(),
        repeated: s
            .by_inbound_sid(&in_sid)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        open: s
            .open_for_customer(line, from)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    };
    assert_eq!(got, single, "inbound_lookup({from}, {in_sid}) must agree");
    got
}

/// `inbound_lookup` answers what `open_for_dispatcher`, `by_inbound_sid`
/// and `open_for_customer` would, open or closed.
pub async fn inbound_lookup_agrees_with_the_single_lookups<S: Store + ?Sized>(s: &S) {
    let customer = "+16195550100";
    let mut d = fixture(1, "K7", customer, "SMin1", 0);
    must_save(s, &d, 0).await;
    let ids = |l: &InboundLookup| {
        (
            l.notified,
            l.repeated.as_ref().map(Dispatch::id),
            l.open.as_ref().map(Dispatch::id),
        )
    };
    assert_eq!(
        ids(&lookup(s, customer, "SMin1").await),
        (false, Some(d.id()), Some(d.id())),
        "a repeated text from the customer"
    );
    assert_eq!(
        ids(&lookup(s, customer, "SMnew").await),
        (false, None, Some(d.id())),
        "a new text from the customer"
    );
    assert_eq!(
        ids(&lookup(s, PRIMARY, "SMnew").await),
        (true, None, None),
        "a text from the dispatcher the dispatch was forwarded to"
    );
    assert_eq!(
        ids(&lookup(s, "+16195550111", "SMother").await),
        (false, None, None),
        "a stranger"
    );
    let (e, _) = step(
        &mut d,
        5,
        Input::Dashboard(DashboardAction::Close { by: "ann".into() }),
    );
    must_save(s, &d, e).await;
    assert_eq!(
        ids(&lookup(s, customer, "SMin1").await),
        (false, Some(d.id()), None),
        "closed: the message id is still its, the customer has no open one"
    );
    assert_eq!(
        ids(&lookup(s, PRIMARY, "SMnew").await),
        (false, None, None),
        "closed: the dispatcher has no open dispatch"
    );
}

/// A long conversation on dispatch `d` (opened by [`fixture`], unsaved),
/// saved every `save_every` texts: the primary replies to the first text
/// (an ack) and to every tenth after it, every leg is accepted and
/// delivered. Returns the inbound ids in order, and the provider ids of
/// the legs.
async fn converse<S: Store + ?Sized>(
    s: &S,
    d: &mut Dispatch,
    texts: usize,
    save_every: usize,
) -> (Vec<ProviderMessageId>, Vec<ProviderMessageId>) {
    let mut inbound = vec![sid("SMin1")];
    let mut leg_sids = Vec::new();
    let mut expected = 0;
    let mut at = 0;
    let text = |sid: ProviderMessageId, from: &str, body: String| InboundText {
        sid,
        from: n(from),
        to: n(LINE),
        body,
        media: vec![],
    };
    for i in 1..texts {
        at += 1;
        let t = |d: &mut Dispatch, at: i64, input: Input| {
            d.handle(Timestamp::from_millis(T0 + at * 1000), input)
                .unwrap_or_else(|e| panic!("text {i}: {e}"));
        };
        // Accept and deliver what is pending.
        let pending: Vec<u32> = d
            .legs()
            .iter()
            .filter(|l| l.sid.is_none() && l.status == DeliveryStatus::Pending)
            .map(|l| l.index)
            .collect();
        for leg in pending {
            let ls = sid(&format!("SMleg{leg}"));
            t(
                d,
                at,
                Input::SendOutcome {
                    leg,
                    result: Ok(ls.clone().into()),
                },
            );
            t(
                d,
                at,
                Input::Delivery(DeliveryReport {
                    sid: ls.clone(),
                    status: DeliveryStatus::Delivered,
                    error: None,
                }),
            );
            leg_sids.push(ls);
        }
        let in_sid = sid(&format!("SMin{}", i + 1));
        if i % 10 == 1 {
            let body = format!("on it, reply {i}");
            t(
                d,
                at,
                Input::DispatcherText {
                    text: text(in_sid.clone(), PRIMARY, body),
                    route: RouteReason::Only,
                },
            );
        } else {
            let body = format!("text {i}: the sink is still leaking, please come");
            t(
                d,
                at,
                Input::CustomerText(text(in_sid.clone(), CUSTOMER_LONG, body)),
            );
        }
        inbound.push(in_sid);
        if i % save_every == 0 || i + 1 == texts {
            d.set_version(expected + 1);
            must_save(s, d, expected).await;
            d.pages_saved();
            expected += 1;
        }
    }
    (inbound, leg_sids)
}

/// The customer of [`converse`].
const CUSTOMER_LONG: &str = "+16195550100";

/// Checks a dispatch saved by [`converse`]: its record stays small, every
/// text is in its whole status, in order, and the lookups of moved
/// entries still find it.
async fn check_conversation<S: Store + ?Sized>(
    s: &S,
    id: DispatchId,
    inbound: &[ProviderMessageId],
    leg_sids: &[ProviderMessageId],
) -> (Dispatch, Vec<HistoryPage>) {
    let got = must_get(s, id).await;
    let record = serde_json::to_string(&got).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        got.thread().len() <= HIGH_ENTRIES && got.legs().len() <= HIGH_ENTRIES,
        "the record keeps at most {HIGH_ENTRIES} entries: {} texts, {} legs",
        got.thread().len(),
        got.legs().len()
    );
    assert!(
        record.len() < 2 * HIGH_BYTES + 64 * 1024,
        "the record stays small: {} bytes",
        record.len()
    );
    let pages = s
        .history(id)
        .await
        .unwrap_or_else(|e| panic!("history of {id}: {e}"));
    assert_eq!(
        pages.len(),
        got.history().pages as usize,
        "every page is kept"
    );
    for (i, p) in pages.iter().enumerate() {
        assert_eq!(p.seq as usize, i, "pages come by seq");
    }
    let status = got.status_with(&pages);
    assert_eq!((status.thread_from, status.legs_from), (0, 0), "whole");
    let sids: Vec<&ProviderMessageId> = status
        .thread
        .iter()
        .filter_map(|e| e.sid.as_ref())
        .collect();
    assert_eq!(sids.len(), inbound.len(), "every text is in the status");
    assert!(sids.iter().zip(inbound).all(|(a, b)| *a == b), "in order");
    for (i, l) in status.legs.iter().enumerate() {
        assert_eq!(l.index as usize, i, "every leg, in order");
    }
    for sid in [
        inbound.first(),
        inbound.get(inbound.len() / 2),
        inbound.last(),
    ]
    .into_iter()
    .flatten()
    {
        let found = s
            .by_inbound_sid(sid)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            found.map(|d| d.id()),
            Some(id),
            "a moved text still finds {id}: {sid}"
        );
    }
    for sid in [leg_sids.first(), leg_sids.last()].into_iter().flatten() {
        let found = s.by_leg_sid(sid).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            found.map(|d| d.id()),
            Some(id),
            "a moved leg still finds {id}: {sid}"
        );
    }
    (got, pages)
}

/// A conversation longer than a record keeps: the oldest entries move out
/// into pages that `history` returns, in order; moved message ids still
/// find the dispatch, and another dispatch cannot take one; a late report
/// for a moved leg changes nothing.
pub async fn moved_entries_keep_their_lookups_and_pages<S: Store + ?Sized>(s: &S) {
    let mut d = fixture(1, "K7", CUSTOMER_LONG, "SMin1", 0);
    d.set_version(0);
    let (inbound, legs) = converse(s, &mut d, 150, 1).await;
    let (mut got, _) = check_conversation(s, d.id(), &inbound, &legs).await;
    assert!(
        got.history().thread > 0 && got.history().legs > 0,
        "entries moved"
    );
    assert_eq!(
        s.history(DispatchId::from_u128(999))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Vec::new(),
        "an unknown dispatch has no history"
    );
    let clash = fixture(2, "B3", "+16195550111", inbound[1].as_str(), 400);
    let reason = assert_conflict(s.save(&clash, 0).await, "a moved inbound id taken again");
    assert_eq!(reason, ConflictReason::InboundSid(inbound[1].clone()));
    let fx = got
        .handle(
            Timestamp::from_millis(T0 + 500_000),
            Input::Delivery(DeliveryReport {
                sid: legs[0].clone(),
                status: DeliveryStatus::Failed,
                error: None,
            }),
        )
        .unwrap_or_else(|e| panic!("a late report for a moved leg: {e}"));
    assert!(
        fx.is_empty(),
        "a late report for a moved leg changes nothing"
    );

    // A batch of changes saved at once moves texts never saved before:
    // their ids are still checked.
    let mut batch = fixture(3, "Q9", "+16195550122", "SMbatch0", 600);
    for i in 1..120 {
        let sid = if i == 3 {
            inbound[5].clone()
        } else {
            sid(&format!("SMbatch{i}"))
        };
        let text = InboundText {
            sid,
            from: n("+16195550122"),
            to: n(LINE),
            body: format!("batch {i}"),
            media: vec![],
        };
        prepare(&mut batch, 600 + i, Input::CustomerText(text));
    }
    assert!(
        batch
            .unsaved_pages()
            .iter()
            .any(|p| p.inbound_sids().any(|s| *s == inbound[5])),
        "the clashing text moved out before the save"
    );
    let reason = assert_conflict(s.save(&batch, 0).await, "a batch moving a taken id");
    assert_eq!(reason, ConflictReason::InboundSid(inbound[5].clone()));
}

/// [`moved_entries_keep_their_lookups_and_pages`] at scale: a dispatch
/// with `texts` texts (10,000 for the issue's check), saved every
/// `save_every` texts, keeps a small record and loses nothing. Returns it
/// as stored.
pub async fn many_texts<S: Store + ?Sized>(s: &S, texts: usize, save_every: usize) -> Dispatch {
    let mut d = fixture(1, "K7", CUSTOMER_LONG, "SMin1", 0);
    d.set_version(0);
    let (inbound, legs) = converse(s, &mut d, texts, save_every).await;
    check_conversation(s, d.id(), &inbound, &legs).await.0
}

/// Runs every case against fresh stores from `make` (for stores that
/// prefer one test over many).
pub async fn run_all<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = S>,
{
    save_new_then_get(&make().await).await;
    save_requires_version_plus_one(&make().await).await;
    create_twice_conflicts(&make().await).await;
    stale_version_conflicts_and_changes_nothing(&make().await).await;
    lookup_by_inbound_sid(&make().await).await;
    lookup_by_leg_sid(&make().await).await;
    open_for_customer_only_while_open(&make().await).await;
    one_open_dispatch_per_customer_and_line(&make().await).await;
    tag_unique_among_open_only(&make().await).await;
    inbound_sid_unique(&make().await).await;
    open_for_dispatcher_most_recent_first(&make().await).await;
    due_in_order_with_limit(&make().await).await;
    list_newest_first(&make().await).await;
    missing_lookups_are_none(&make().await).await;
    round_trip_preserves_everything(&make().await).await;
    by_job_newest_first_and_follows_links(&make().await).await;
    first_free_tag_skips_open_tags_only(&make().await).await;
    inbound_lookup_agrees_with_the_single_lookups(&make().await).await;
    moved_entries_keep_their_lookups_and_pages(&make().await).await;
}

/// Generates one `#[tokio::test]` per contract case. `$make` is an
/// expression evaluating to a future of a fresh, empty store; the calling
/// crate needs `tokio` with `macros` and `rt` as a dev-dependency.
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::store_contract_tests!(@cases $make;
            save_new_then_get,
            save_requires_version_plus_one,
            create_twice_conflicts,
            stale_version_conflicts_and_changes_nothing,
            lookup_by_inbound_sid,
            lookup_by_leg_sid,
            open_for_customer_only_while_open,
            one_open_dispatch_per_customer_and_line,
            tag_unique_among_open_only,
            inbound_sid_unique,
            open_for_dispatcher_most_recent_first,
            due_in_order_with_limit,
            list_newest_first,
            missing_lookups_are_none,
            round_trip_preserves_everything,
            by_job_newest_first_and_follows_links,
            first_free_tag_skips_open_tags_only,
            inbound_lookup_agrees_with_the_single_lookups,
            moved_entries_keep_their_lookups_and_pages
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let store = $make.await;
                $crate::testing::contract::$case(&store).await;
            }
        )*
    };
}
