//! The change feed (feature `changes`) on the emulator's stream, and the
//! due query's first shard (`DynamoStore::due_start`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qdn_relay_core::testing::contract::fixture;
use qdn_relay_core::testing::{RecordingProvider, RecordingSink};
use qdn_relay_core::{
    DashboardAction, InboundText, ManualClock, Outcome, PhoneNumber, Policy, Relay, RelayEvent,
    Store, Timestamp,
};
use qdn_relay_dynamo::{ChangeFeedError, DynamoConfig, DynamoStore, create_table};
use qdn_relay_transport::ReqwestTransport;

use crate::common::{client, endpoint, fresh, fresh_with, sid, twin, unique_table};

fn n(s: &str) -> PhoneNumber {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn transport() -> Arc<ReqwestTransport> {
    Arc::new(ReqwestTransport::new(Duration::from_secs(3)).unwrap_or_else(|e| panic!("{e}")))
}

/// The emulator serves DynamoDB and its streams on one address.
fn lookup(k: &str) -> Option<String> {
    (k == "AWS_ENDPOINT_URL_DYNAMODB").then(endpoint)
}

/// The configuration the tests' clients are built from.
async fn sdk() -> qdn_relay_dynamo::SdkConfig {
    use aws_sdk_dynamodb::config::{Credentials, Region};
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "qdn-tests"))
        .load()
        .await
}

/// Two relays (two processes) on one table; a feed on it publishes every
/// event both of them kept, once each, in each dispatch's order, and
/// nothing from before it started.
#[tokio::test(flavor = "multi_thread")]
async fn the_feed_publishes_every_processs_events_once_in_order() {
    let store = fresh().await;
    let other = twin(&store).await;
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_767_603_600_000)));
    let provider = Arc::new(RecordingProvider::with_clock(clock.clone()));
    let policy = || {
        Policy::simple(
            n("+16195550101"),
            n("+18583354807"),
            Duration::from_secs(900),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let local = Arc::new(RecordingSink::new());
    let relay = |s: DynamoStore, seed: u64| {
        Relay::builder(Arc::new(s), provider.clone(), clock.clone())
            .line(n("+16195550000"), policy())
            .sink(local.clone())
            .seed(seed)
            .build()
    };
    let (a, b) = (relay(store.clone(), 1), relay(other, 2));
    let text = |i: u32, from: &str| InboundText {
        sid: sid(&format!("SM{i:032x}")),
        from: n(from),
        to: n("+16195550000"),
        body: format!("text {i}"),
        media: Vec::new(),
    };
    // Before the feed: not published by it.
    let Outcome::Opened(before) = a.inbound(text(1, "+16195550300")).await.expect("text") else {
        panic!("opened")
    };
    let feed = store
        .change_feed(&sdk().await, transport(), lookup)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .poll_every(Duration::from_millis(50));
    let heard = Arc::new(RecordingSink::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(feed.run(heard.clone(), async {
        let _ = stopped.await;
    }));
    let skip = local.events().len();

    // After: texts through A and B, an ack through B of A's dispatch, a
    // close through A.
    let Outcome::Opened(x) = a.inbound(text(2, "+16195550301")).await.expect("text") else {
        panic!("opened")
    };
    let Outcome::Opened(y) = b.inbound(text(3, "+16195550302")).await.expect("text") else {
        panic!("opened")
    };
    b.inbound(text(4, "+16195550301"))
        .await
        .expect("a second text");
    b.dashboard(x, DashboardAction::Ack { by: "ops".into() })
        .await
        .expect("ack");
    a.dashboard(y, DashboardAction::Close { by: "ops".into() })
        .await
        .expect("close");
    // A long conversation: its oldest entries and events move out into
    // history pages (items in the dispatch's partition, in the stream too),
    // and every event still comes once.
    for i in 5..165 {
        a.inbound(text(i, "+16195550301"))
            .await
            .expect("a later text");
    }
    let long = store.get(x).await.expect("get").expect("x");
    assert!(
        long.history().events > 0 && long.history().pages > 0,
        "events moved out"
    );
    let expected: Vec<RelayEvent> = local.events()[skip..].to_vec();
    assert!(!expected.is_empty());

    let deadline = Instant::now() + Duration::from_secs(20);
    while heard.events().len() < expected.len() {
        assert!(
            Instant::now() < deadline,
            "the feed published {} of {} events",
            heard.events().len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A moment more: nothing extra arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(());
    running.await.expect("the feed stops");
    let got = heard.events();
    assert!(
        !got.iter().any(|e| e.dispatch == before),
        "nothing from before the feed started"
    );
    for d in [x, y] {
        let of = |v: &[RelayEvent]| {
            v.iter()
                .filter(|e| e.dispatch == d)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            of(&got),
            of(&expected),
            "dispatch {d}: every event once, in order"
        );
    }
    assert_eq!(got.len(), expected.len());
}

#[tokio::test]
async fn a_table_without_a_stream_is_refused_with_how_to_turn_it_on() {
    let client = client().await;
    let config = DynamoConfig::new(unique_table());
    create_table(&client, &config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    client
        .update_table()
        .table_name(&config.table)
        .stream_specification(
            aws_sdk_dynamodb::types::StreamSpecification::builder()
                .stream_enabled(false)
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let store = DynamoStore::new(client, config.clone());
    let err = store
        .change_feed(&sdk().await, transport(), lookup)
        .await
        .expect_err("no stream");
    assert!(matches!(err, ChangeFeedError::NoStream { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&config.table) && msg.contains("NEW_AND_OLD_IMAGES"),
        "{msg}"
    );
}

/// With a first shard, the due query fills its answer from that shard on:
/// processes starting at different shards take different dispatches from
/// a backlog, each answer earliest first, and together they cover it.
#[tokio::test]
async fn due_start_spreads_a_backlog_over_processes() {
    let store = fresh_with(|c| c.shards(4)).await;
    let customers: Vec<String> = (0..16).map(|i| format!("+161955503{i:02}")).collect();
    for (i, c) in customers.iter().enumerate() {
        let tag = format!("Q{}", i + 1);
        let d = fixture(100 + i as u128, &tag, c, &format!("SMdue{i}"), i as i64);
        store.save(&d, 0).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let far = Timestamp::from_millis(i64::MAX / 4);
    let all = store.due(far, 100).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.len(), 16);
    let mut answers = Vec::new();
    for start in 0..4u16 {
        let s = twin(&store).await.due_start(start);
        let everything = s.due(far, 100).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(everything, all, "with room for all, the same answer");
        let some = s.due(far, 3).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(some.len(), 3);
        assert!(some.windows(2).all(|w| w[0].deadline <= w[1].deadline));
        answers.push(some);
    }
    let distinct: BTreeSet<_> = answers
        .iter()
        .map(|a| a.iter().map(|d| d.id).collect::<Vec<_>>())
        .collect();
    assert!(
        distinct.len() > 1,
        "different first shards, different answers: {answers:?}"
    );
    // Without a first shard: the earliest of the whole table.
    let earliest = store.due(far, 3).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(earliest, all[..3]);
}
