//! Error mapping: which failure becomes which `StoreError`.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use qdn_relay_core::testing::contract::fixture;
use qdn_relay_core::{
    ConflictReason, DashboardAction, DispatchId, InboundText, Input, Store, StoreError, Timestamp,
};
use qdn_relay_dynamo::{DynamoConfig, DynamoStore, SaveError, TableError, create_table};

use crate::common::{client, client_for, fresh, sid, twin};

fn conflict(r: Result<(), StoreError>) -> ConflictReason {
    match r {
        Err(StoreError::Conflict { reason, .. }) => reason,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// When several uniqueness rules break at once, the reason is the one the
/// reference store would name first.
#[tokio::test]
async fn the_first_broken_rule_names_the_conflict() {
    let s = fresh().await;
    s.save(&fixture(1, "K7", "+16195550100", "SMin1", 0), 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Same customer, tag and sid: the customer's open dispatch wins.
    let all = fixture(2, "K7", "+16195550100", "SMin1", 1);
    assert_eq!(
        conflict(s.save(&all, 0).await),
        ConflictReason::OpenCustomer
    );
    // Same tag and sid.
    let tag_and_sid = fixture(3, "K7", "+16195550111", "SMin1", 1);
    assert!(matches!(
        conflict(s.save(&tag_and_sid, 0).await),
        ConflictReason::Tag(t) if t.to_string() == "K7"
    ));
    // The sid alone.
    let only_sid = fixture(4, "B3", "+16195550122", "SMin1", 1);
    assert_eq!(
        conflict(s.save(&only_sid, 0).await),
        ConflictReason::InboundSid(sid("SMin1"))
    );
    for id in [all.id(), tag_and_sid.id(), only_sid.id()] {
        assert!(
            s.get(id).await.unwrap_or_else(|e| panic!("{e}")).is_none(),
            "a refused create stores nothing"
        );
    }
    // An existing id, whatever else matches.
    let again = fixture(1, "K7", "+16195550100", "SMin1", 0);
    assert_eq!(
        conflict(s.save(&again, 0).await),
        ConflictReason::Version {
            expected: 0,
            found: Some(1)
        }
    );
}

/// A stale save conflicts whether the store finds out before the
/// transaction (it reads the stored version) or from the transaction's
/// cancellation (it had remembered the version it loaded).
#[tokio::test]
async fn a_stale_save_is_a_version_conflict_on_both_paths() {
    let s = fresh().await;
    let d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    s.save(&d, 0).await.unwrap_or_else(|e| panic!("{e}"));
    let other = twin(&s).await;
    let third = twin(&s).await;
    // Both load version 1.
    let mut mine = other
        .get(d.id())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("saved"));
    let mut winner = mine.clone();
    winner
        .handle(
            winner.opened_at(),
            Input::Dashboard(DashboardAction::Ack { by: "ann".into() }),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    winner.set_version(2);
    s.save(&winner, 1).await.unwrap_or_else(|e| panic!("{e}"));
    mine.handle(
        mine.opened_at(),
        Input::Dashboard(DashboardAction::Close { by: "bob".into() }),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    mine.set_version(2);
    let want = ConflictReason::Version {
        expected: 1,
        found: Some(2),
    };
    // `other` remembers version 1 from its load: the transaction decides.
    assert_eq!(conflict(other.save(&mine, 1).await), want);
    // `third` never loaded it: its read of the stored version decides.
    assert_eq!(conflict(third.save(&mine, 1).await), want);
    // An update of a dispatch that does not exist.
    let ghost = {
        let mut g = fixture(9, "Z9", "+16195550199", "SMghost", 0);
        g.set_version(4);
        g
    };
    assert_eq!(
        conflict(s.save(&ghost, 3).await),
        ConflictReason::Version {
            expected: 3,
            found: None
        }
    );
    assert_eq!(
        s.get(d.id()).await.unwrap_or_else(|e| panic!("{e}")),
        Some(winner)
    );
}

#[tokio::test]
async fn a_missing_table_is_a_permanent_backend_error() {
    let s = DynamoStore::new(client().await, DynamoConfig::new("qdn-no-such-table"));
    let id = DispatchId::new(Timestamp::from_millis(1_767_603_600_000), 1);
    match s.get(id).await {
        Err(StoreError::Backend {
            retryable: false, ..
        }) => {}
        other => panic!("a missing table must be a non-retryable backend error, got {other:?}"),
    }
    let d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    assert!(matches!(
        s.save(&d, 0).await,
        Err(StoreError::Backend {
            retryable: false,
            ..
        })
    ));
}

#[tokio::test]
async fn an_unreachable_endpoint_is_retryable() {
    // A port nothing listens on: connection refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    drop(listener);
    let c = client_for(&format!("http://127.0.0.1:{port}")).await;
    let c = aws_sdk_dynamodb::Client::from_conf(
        c.config()
            .to_builder()
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .build(),
    );
    let s = DynamoStore::new(c, DynamoConfig::new("qdn-anything"));
    let id = DispatchId::new(Timestamp::from_millis(1_767_603_600_000), 1);
    match s.get(id).await {
        Err(StoreError::Backend {
            retryable: true, ..
        }) => {}
        other => panic!("a refused connection must be retryable, got {other:?}"),
    }
}

#[tokio::test]
async fn an_undecodable_record_is_corrupt() {
    let s = fresh().await;
    let d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    s.save(&d, 0).await.unwrap_or_else(|e| panic!("{e}"));
    let c = s.config();
    let p = &c.key_prefix;
    for rec in [
        AttributeValue::S("{not json".into()),
        AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![9, 0, 0, 0, 1])),
        AttributeValue::N("1".into()),
    ] {
        s.client()
            .update_item()
            .table_name(&c.table)
            .key(
                &c.partition_key,
                AttributeValue::S(format!("{p}D#{}", d.id())),
            )
            .key(&c.sort_key, AttributeValue::S(format!("{p}D")))
            .update_expression("SET rec = :r")
            .expression_attribute_values(":r", rec)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(
            matches!(s.get(d.id()).await, Err(StoreError::Corrupt(_))),
            "get must report a corrupt record"
        );
        assert!(
            matches!(
                s.by_inbound_sid(&sid("SMin1")).await,
                Err(StoreError::Corrupt(_))
            ),
            "so must a lookup"
        );
    }
}

/// A dispatch whose item would pass 400 KB even compressed is refused
/// before anything is sent, as a permanent error.
#[tokio::test]
async fn an_item_over_400_kb_is_refused_before_sending() {
    let s = fresh().await;
    let mut d = fixture(1, "K7", "+16195550100", "SMin1", 0);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for i in 0..320 {
        // Text that LZ4 cannot shrink much.
        let body: String = (0..1500)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                        [(x % 62) as usize],
                )
            })
            .collect();
        let text = InboundText {
            sid: sid(&format!("SMbig{i}")),
            from: d.customer(),
            to: d.line(),
            body,
            media: vec![],
        };
        d.handle(
            d.opened_at().plus(Duration::from_millis(i)),
            Input::CustomerText(text),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    d.set_version(1);
    match s.save(&d, 0).await {
        Err(StoreError::Backend {
            retryable: false,
            source,
        }) => assert!(
            matches!(
                source.downcast_ref::<SaveError>(),
                Some(SaveError::ItemTooLarge { .. })
            ),
            "{source}"
        ),
        other => panic!("expected ItemTooLarge, got {other:?}"),
    }
    assert!(
        s.get(d.id())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );
}

#[tokio::test]
async fn creating_an_existing_table_changes_nothing() {
    let s = fresh().await;
    match create_table(s.client(), s.config()).await {
        Err(TableError::AlreadyExists(t)) => assert_eq!(t, s.config().table),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let ttl = s
        .client()
        .describe_time_to_live()
        .table_name(&s.config().table)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let desc = ttl
        .time_to_live_description
        .unwrap_or_else(|| panic!("no ttl description"));
    assert_eq!(desc.attribute_name(), Some("expires_at"));
    assert_eq!(
        desc.time_to_live_status(),
        Some(&aws_sdk_dynamodb::types::TimeToLiveStatus::Enabled)
    );
}

/// A configuration that could collide with an application's items or
/// break the store's own keys is refused before any request: by
/// `try_new`, by `create_table`, and, for a store built with `new`, by
/// every call (non-retryable), opt-outs and rate limits included.
#[tokio::test]
async fn an_unusable_configuration_fails_before_any_request() {
    use qdn_relay_core::{OptOuts, RateKey, RateLimiter};
    use qdn_relay_dynamo::{ConfigError, IndexNames};

    let bad = DynamoConfig::new("qdn-anything")
        .keys("PK", "SK")
        .due_index(IndexNames::new("GSI1", "GSI1PK", "SK"));
    let Err(e) = DynamoStore::try_new(client().await, bad.clone()) else {
        panic!("try_new must refuse an index key that is a table key");
    };
    assert!(matches!(e, ConfigError::SameAttribute { .. }), "{e:?}");
    match create_table(&client().await, &DynamoConfig::new("qdn-x").key_prefix("")).await {
        Err(TableError::Config(ConfigError::EmptyPrefix)) => {}
        other => panic!("create_table must refuse an empty prefix, got {other:?}"),
    }

    // Nothing listens at this address: a request would be a retryable
    // connection failure, not the configuration error.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    drop(listener);
    let s = DynamoStore::new(client_for(&format!("http://127.0.0.1:{port}")).await, bad);
    let id = DispatchId::new(Timestamp::from_millis(1_767_603_600_000), 1);
    let permanent = |r: Result<(), StoreError>, what: &str| match r {
        Err(StoreError::Backend {
            retryable: false,
            source,
        }) => assert!(
            source.to_string().contains("\"SK\""),
            "{what}: the error names the attribute: {source}"
        ),
        other => panic!("{what}: expected the configuration error, got {other:?}"),
    };
    permanent(s.get(id).await.map(drop), "get");
    permanent(
        s.save(&fixture(1, "K7", "+16195550100", "SMin1", 0), 0)
            .await,
        "save",
    );
    permanent(
        s.by_inbound_sid(&sid("SMin1")).await.map(drop),
        "by_inbound_sid",
    );
    permanent(s.due(Timestamp::from_millis(0), 5).await.map(drop), "due");
    permanent(
        s.list(qdn_relay_core::ListFilter::All, 5).await.map(drop),
        "list",
    );
    let job = "j".parse().unwrap_or_else(|e| panic!("{e}"));
    permanent(s.by_job(&job, 5).await.map(drop), "by_job");
    let number = "+16195550100".parse().unwrap_or_else(|e| panic!("{e}"));
    let safety = |r: Result<(), qdn_relay_core::SafetyError>, what: &str| {
        let e = r.expect_err(what).to_string();
        assert!(e.contains("\"SK\""), "{what}: {e}");
    };
    safety(s.is_opted_out(number).await.map(drop), "is_opted_out");
    safety(
        s.opt_out(number, Timestamp::from_millis(0)).await,
        "opt_out",
    );
    safety(
        s.acquire(
            Timestamp::from_millis(0),
            &[(RateKey::Line(number), vec![])],
        )
        .await
        .map(drop),
        "acquire",
    );
}
