//! The core's Store contract suite, each case on a table of its own.

mod default_design {
    qdn_relay_core::store_contract_tests!(async { crate::common::fresh().await });
}

/// The relay inside an application's table: other key and index names, a
/// longer prefix, fewer shards, no retention.
mod application_table {
    use qdn_relay_dynamo::IndexNames;

    qdn_relay_core::store_contract_tests!(async {
        crate::common::fresh_with(|c| {
            c.keys("PK", "SK")
                .key_prefix("app#relay#")
                .due_index(IndexNames::new("GSI1", "GSI1PK", "GSI1SK"))
                .list_index(IndexNames::new("GSI2", "GSI2PK", "GSI2SK"))
                .shards(3)
                .retention(None)
        })
        .await
    });
}

/// One shard and compression for every record: the edge values of both
/// knobs.
mod one_shard_all_compressed {
    qdn_relay_core::store_contract_tests!(async {
        crate::common::fresh_with(|c| c.shards(1).compress_above(0)).await
    });
}

/// A dispatch with 10,000 texts (saved every 100, so a save carries a
/// hundred texts' lookup items and several pages: more than one
/// transaction holds) keeps a small item and loses nothing; closing it
/// stamps its time to live on every page.
#[tokio::test]
async fn ten_thousand_texts_then_closed() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use qdn_relay_core::{DashboardAction, Input, Store};

    let s = crate::common::fresh().await;
    let mut d = qdn_relay_core::testing::contract::many_texts(&s, 10_000, 100).await;
    let expected = d.version();
    let fx = d
        .handle(
            d.updated_at(),
            Input::Dashboard(DashboardAction::Close { by: "ops".into() }),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!fx.is_empty(), "closed");
    d.set_version(expected + 1);
    s.save(&d, expected)
        .await
        .unwrap_or_else(|e| panic!("close: {e}"));
    let p = &s.config().key_prefix;
    let ttl = &s.config().ttl_attribute;
    let pages = d.history().pages;
    assert!(pages > 100, "{pages} pages");
    for seq in 0..pages {
        let it =
            crate::common::raw_item(&s, &format!("{p}D#{}", d.id()), &format!("{p}H#{seq:010}"))
                .await
                .unwrap_or_else(|| panic!("page {seq} is there"));
        assert!(
            matches!(it.get(ttl), Some(AttributeValue::N(_))),
            "page {seq} expires with its dispatch"
        );
    }
}
