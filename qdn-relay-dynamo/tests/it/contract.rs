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
