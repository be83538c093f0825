//! The design itself: round trips, the sharded due index, the 100-action
//! limit, time to live.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use qdn_relay_core::testing::contract::fixture;
use qdn_relay_core::{
    DashboardAction, Dispatch, InboundText, Input, JobId, ListFilter, MemoryStore, Store, Timestamp,
};

use crate::common::{dispatch_item, fresh, fresh_with, raw_item, sid, twin};

/// A dispatch (version 1, unsaved) whose customer sent `texts` texts in
/// all, each `body_len` characters long.
fn chatty(n_id: u128, tag: &str, customer: &str, texts: usize, body_len: usize) -> Dispatch {
    let mut d = fixture(n_id, tag, customer, &format!("SMc{n_id}x0"), 0);
    for i in 1..texts {
        let body: String = (0..body_len)
            .map(|j| char::from(b'a' + ((i * 7 + j * 13 + j / 5) % 26) as u8))
            .collect();
        let text = InboundText {
            sid: sid(&format!("SMc{n_id}x{i}")),
            from: d.customer(),
            to: d.line(),
            body,
            media: vec![],
        };
        d.handle(
            d.opened_at().plus(Duration::from_millis(i as u64)),
            Input::CustomerText(text),
        )
        .unwrap_or_else(|e| panic!("text {i}: {e}"));
    }
    d.set_version(1);
    d
}

fn step(d: &mut Dispatch, input: Input) -> u64 {
    let expected = d.version();
    let at = d.updated_at().plus(Duration::from_secs(1));
    d.handle(at, input).unwrap_or_else(|e| panic!("{e}"));
    d.set_version(expected + 1);
    expected
}

#[tokio::test]
async fn a_large_record_is_compressed_and_reads_back_equal() {
    let s = fresh().await;
    let d = chatty(1, "K7", "+16195550100", 60, 1000);
    assert!(
        serde_json::to_string(&d).map_or(0, |j| j.len()) > 32 * 1024,
        "the fixture must pass the compression threshold"
    );
    s.save(&d, 0).await.unwrap_or_else(|e| panic!("{e}"));
    let item = dispatch_item(&s, d.id()).await;
    assert!(
        matches!(item.get("rec"), Some(AttributeValue::B(_))),
        "a record over 32 KiB is stored compressed"
    );
    let got = s.get(d.id()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.as_ref(), Some(&d));
    // A small one stays readable JSON.
    let small = fixture(2, "B2", "+16195550111", "SMsmall", 0);
    s.save(&small, 0).await.unwrap_or_else(|e| panic!("{e}"));
    let item = dispatch_item(&s, small.id()).await;
    assert!(matches!(item.get("rec"), Some(AttributeValue::S(_))));
}

/// Due entries spread over the shards come back in one global order, the
/// same as the reference store's, for every `now` and `limit`.
#[tokio::test]
async fn due_merges_every_shard_in_global_order() {
    let s = fresh_with(|c| c.shards(4)).await;
    let reference = MemoryStore::new();
    let mut shards = HashSet::new();
    for i in 0..24u128 {
        // Deadlines 900 s after opening, openings spread out of id order.
        let at = ((i * 37) % 24) as i64 * 30;
        let d = fixture(
            i + 1,
            &format!("A{}", i + 1),
            &format!("+161955503{i:02}"),
            &format!("SMdue{i}"),
            at,
        );
        s.save(&d, 0).await.unwrap_or_else(|e| panic!("{e}"));
        reference
            .save(&d, 0)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let item = dispatch_item(&s, d.id()).await;
        if let Some(AttributeValue::S(pk)) = item.get("due_pk") {
            shards.insert(pk.clone());
        }
    }
    assert!(
        shards.len() >= 3,
        "24 dispatches should land in most of 4 shards: {shards:?}"
    );
    let first = reference
        .next_deadline()
        .unwrap_or_else(|| panic!("fixtures have deadlines"));
    for (secs, limit) in [
        (-1i64, 10usize),
        (0, 10),
        (200, 3),
        (400, 50),
        (10_000, 7),
        (10_000, 24),
    ] {
        let now = Timestamp::from_millis(first.as_millis() + secs * 1000);
        let got = s.due(now, limit).await.unwrap_or_else(|e| panic!("{e}"));
        let want = reference
            .due(now, limit)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, want, "due({now}, {limit})");
    }
}

/// More inbound texts than one transaction can hold still save, find
/// their dispatch, and the next save writes only what is new.
#[tokio::test]
async fn a_dispatch_with_more_texts_than_one_transaction_saves() {
    let s = fresh().await;
    let mut d = chatty(1, "K7", "+16195550100", 230, 20);
    // The texts this first save indexes: the record's and those it moved
    // out already (built unsaved, it carries their pages).
    let texts = d.inbound_sids().count()
        + d.unsaved_pages()
            .iter()
            .map(|p| p.inbound_sids().count())
            .sum::<usize>();
    assert!(texts > 2 * qdn_relay_dynamo::MAX_TRANSACTION_ACTIONS);
    assert!(d.history().thread > 0, "some moved out of the record");
    s.save(&d, 0)
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    for i in [0, 99, 100, 150, 229] {
        let got = s
            .by_inbound_sid(&sid(&format!("SMc1x{i}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.map(|g| g.id()), Some(d.id()), "text {i}");
    }
    // One more text, saved through a store that did not load the dispatch
    // (no cached index facts: it reads them first).
    let other = twin(&s).await;
    let text = InboundText {
        sid: sid("SMc1late"),
        from: d.customer(),
        to: d.line(),
        body: "one more".into(),
        media: vec![],
    };
    let e = step(&mut d, Input::CustomerText(text));
    other
        .save(&d, e)
        .await
        .unwrap_or_else(|e| panic!("update: {e}"));
    let got = s
        .by_inbound_sid(&sid("SMc1late"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.map(|g| g.version()), Some(2));
    // Closing stamps the time to live on all 231 lookup items, those of
    // the texts moved out of the record (x0) included.
    let e = step(
        &mut d,
        Input::Dashboard(DashboardAction::Close { by: "ann".into() }),
    );
    s.save(&d, e).await.unwrap_or_else(|e| panic!("close: {e}"));
    let p = &s.config().key_prefix;
    for i in ["x0", "x150", "late"] {
        let item = raw_item(&s, &format!("{p}IN#SMc1{i}"), &format!("{p}IN"))
            .await
            .unwrap_or_else(|| panic!("lookup item {i} exists"));
        assert!(
            matches!(item.get("expires_at"), Some(AttributeValue::N(_))),
            "lookup item {i} carries the time to live"
        );
    }
    let item = dispatch_item(&s, d.id()).await;
    let closed = d.closed_at().unwrap_or_else(|| panic!("closed"));
    assert_eq!(
        item.get("expires_at"),
        Some(&AttributeValue::N(
            (closed.as_millis() / 1000 + 90 * 24 * 3600).to_string()
        )),
        "the dispatch expires 90 days after it closed"
    );
    assert_eq!(
        item.contains_key("due_pk"),
        d.next_deadline().is_some(),
        "only a dispatch with a deadline is in the due index (here: unsent legs)"
    );
    let open = s
        .list(ListFilter::Open, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(open.is_empty());
    assert_eq!(
        s.get(d.id()).await.unwrap_or_else(|e| panic!("{e}")),
        Some(d)
    );
}

/// What the dispatch item records and which lookup items exist, through a
/// dispatch's life.
#[tokio::test]
async fn lookup_items_follow_the_dispatch() {
    let s = fresh().await;
    let mut d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    s.save(&d, 0).await.unwrap_or_else(|e| panic!("{e}"));
    let p = s.config().key_prefix.clone();
    let open_key = format!("{p}OPEN#{}#{}", d.line(), d.customer());
    let tag_key = format!("{p}TAG#K7");
    let primary = d.legs()[0].to;
    assert!(raw_item(&s, &open_key, &format!("{p}OPEN")).await.is_some());
    assert!(raw_item(&s, &tag_key, &format!("{p}TAG")).await.is_some());
    let notified = s
        .open_for_dispatcher(primary, 5)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(notified.len(), 1);
    let e = step(
        &mut d,
        Input::Dashboard(DashboardAction::Close { by: "ann".into() }),
    );
    s.save(&d, e).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(raw_item(&s, &open_key, &format!("{p}OPEN")).await.is_none());
    assert!(raw_item(&s, &tag_key, &format!("{p}TAG")).await.is_none());
    let notified = s
        .open_for_dispatcher(primary, 5)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(notified.is_empty());
    // The dispatch still answers by its inbound sid after closing.
    let got = s
        .by_inbound_sid(&sid("SMin1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.map(|g| g.version()), Some(2));
}

fn ttl_of(
    s: &qdn_relay_dynamo::DynamoStore,
    item: &HashMap<String, AttributeValue>,
) -> Option<i64> {
    match item.get(&s.config().ttl_attribute) {
        Some(AttributeValue::N(n)) => Some(n.parse().unwrap_or_else(|e| panic!("{n}: {e}"))),
        None => None,
        Some(other) => panic!("time to live is not a number: {other:?}"),
    }
}

/// The job item: written when the job id appears, moved when it changes
/// (by a process that did not load the dispatch, too), and stamped with
/// the dispatch's time to live once it is closed.
#[tokio::test]
async fn job_items_move_with_the_link_and_expire_with_the_dispatch() {
    let s = fresh().await;
    let other_process = twin(&s).await;
    let p = s.config().key_prefix.clone();
    let job = |j: &str| -> JobId { j.parse().unwrap_or_else(|e| panic!("{e}")) };
    let mut d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    let link = |j: &str, sync: bool| Input::LinkJob { job: job(j), sync };
    let at = d.opened_at();
    d.handle(at, link("dumpster #1042", false))
        .unwrap_or_else(|e| panic!("{e}"));
    s.save(&d, 0).await.unwrap_or_else(|e| panic!("{e}"));
    let first = (
        format!("{p}JOB#dumpster #1042"),
        format!("{p}JOB#{}", d.id()),
    );
    let it = raw_item(&s, &first.0, &first.1)
        .await
        .expect("the job item exists once the job id does");
    assert_eq!(
        ttl_of(&s, &it),
        None,
        "an open dispatch's job item does not expire"
    );

    let e = step(
        &mut d,
        Input::Dashboard(DashboardAction::Close { by: "ann".into() }),
    );
    s.save(&d, e).await.unwrap_or_else(|e| panic!("{e}"));
    let stamped = ttl_of(&s, &dispatch_item(&s, d.id()).await).expect("closed: expires");
    let it = raw_item(&s, &first.0, &first.1).await.expect("job item");
    assert_eq!(ttl_of(&s, &it), Some(stamped), "expires with its dispatch");

    // Re-linked by another process (no cached index facts).
    let expected = d.version();
    let at = d.updated_at().plus(Duration::from_secs(1));
    let fx = d
        .handle(at, link("other", true))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!fx.is_empty());
    d.set_version(expected + 1);
    other_process
        .save(&d, expected)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        raw_item(&s, &first.0, &first.1).await.is_none(),
        "the old job item is deleted in the same transaction"
    );
    let moved = raw_item(&s, &format!("{p}JOB#other"), &format!("{p}JOB#{}", d.id()))
        .await
        .expect("the new job item");
    assert_eq!(
        ttl_of(&s, &moved),
        ttl_of(&s, &dispatch_item(&s, d.id()).await)
    );
    let found = s
        .by_job(&job("other"), 5)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found, vec![d.clone()]);
    assert!(
        s.by_job(&job("dumpster #1042"), 5)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
    assert!(
        s.by_job(&job("other"), 0)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty()
    );
}
