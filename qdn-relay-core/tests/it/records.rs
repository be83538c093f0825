//! Records stores keep: a dispatch saved by an earlier version of the relay
//! still loads, reads the same and fires on time.
//!
//! `records/written_before_the_timer_table.json` is a dispatch as the relay
//! saved it before the timer table and the opted-out error class: one
//! folded `deadline`, and a forward refused with Twilio's 21610 recorded as
//! class `unreachable` (the number is in `opted_out` too). Its state: the
//! primary opted out, the backup texted, a follow-up to the backup waiting
//! for a retry at 09:01:05.194, the level's deadline at 09:15, the job
//! system in sync.

use qdn_relay_core::{
    DeliveryStatus, Dispatch, Effect, ErrorClass, MemoryStore, PhoneNumber, Store, Timestamp,
};

const BEFORE_THE_TIMER_TABLE: &str = include_str!("records/written_before_the_timer_table.json");

fn t(s: &str) -> Timestamp {
    s.parse().expect("a timestamp")
}

fn n(s: &str) -> PhoneNumber {
    s.parse().expect("a number")
}

#[test]
fn a_record_written_before_the_timer_table_reads_the_same() {
    let d: Dispatch = serde_json::from_str(BEFORE_THE_TIMER_TABLE).expect("it loads");
    assert_eq!(d.next_deadline(), Some(t("2026-01-05T09:01:05.194Z")));
    assert_eq!(d.level_deadline(), Some(t("2026-01-05T09:15:00Z")));
    let primary = n("+16195550101");
    assert_eq!(d.opted_out(), [primary]);
    assert_eq!(d.unreachable(), [primary]);
    let refused = &d.legs()[0];
    assert_eq!(refused.status, DeliveryStatus::Failed);
    assert_eq!(
        (refused.error_code, refused.error_class),
        (Some(21610), Some(ErrorClass::Unreachable))
    );
    assert_eq!(d.events().len(), 11);
    assert!(
        d.job_sync()
            .is_some_and(|j| j.resolved && j.retry_at.is_none())
    );
    assert_eq!(d.status().job_sync.map(|j| j.owed), Some(0));

    // Saved again, it is written in today's shape and reads back equal.
    let json = serde_json::to_value(&d).expect("serialises");
    assert!(json.get("deadline").is_none());
    assert_eq!(
        json.get("outbox_at").and_then(|v| v.as_str()),
        Some("2026-01-05T09:01:05.194Z")
    );
    let again: Dispatch = serde_json::from_value(json).expect("loads");
    assert_eq!(again, d);
}

#[tokio::test]
async fn a_record_written_before_the_timer_table_fires_on_time() {
    let d: Dispatch = serde_json::from_str(BEFORE_THE_TIMER_TABLE).expect("it loads");
    let store = MemoryStore::new();
    let mut first = d.clone();
    first.set_version(1);
    store.save(&first, 0).await.expect("saved");
    let due = store
        .due(t("2026-01-05T09:01:05.194Z"), 10)
        .await
        .expect("due");
    assert_eq!(due.len(), 1, "due when it was due before");

    let mut d = store.get(d.id()).await.expect("get").expect("found");
    let early = d
        .handle(
            t("2026-01-05T09:01:05.193Z"),
            qdn_relay_core::Input::Timeout,
        )
        .expect("a timeout");
    assert!(early.is_empty(), "nothing due a millisecond early");
    let fx = d
        .handle(
            t("2026-01-05T09:01:05.194Z"),
            qdn_relay_core::Input::Timeout,
        )
        .expect("a timeout");
    let sent: Vec<u32> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Send(m) => Some(m.leg),
            _ => None,
        })
        .collect();
    assert_eq!(sent, [2], "the follow-up is sent again");
    assert_eq!(
        d.next_deadline(),
        Some(t("2026-01-05T09:02:05.194Z")),
        "its next retry, before the level's deadline"
    );
}
