//! Creating the table: [`create_table`] and [`wait_until_active`].

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::AsyncSleep as _;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType,
    Projection, ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TableStatus, TimeToLiveSpecification,
};

use crate::config::{DynamoConfig, IndexNames};
use crate::error::{TableError, table_sdk};

/// How long [`create_table`] waits for the new table to become active.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(300);

/// Creates the store's table as [`DynamoConfig`] describes it, waits until
/// it and its indexes are active, and turns on time to live.
///
/// - Key: the string attributes [`DynamoConfig::partition_key`] (hash) and
///   [`DynamoConfig::sort_key`] (range).
/// - Global secondary indexes [`DynamoConfig::due_index`] and
///   [`DynamoConfig::list_index`], each keyed by two string attributes and
///   projecting keys only.
/// - On-demand billing (`PAY_PER_REQUEST`).
/// - A DynamoDB stream of new and old images: the change feed servers
///   sharing the table follow to show each other's events
///   (`ChangeFeed`, feature `changes`).
/// - Time to live on [`DynamoConfig::ttl_attribute`] (epoch seconds), set
///   on closed and failed dispatches and their lookup items
///   [`DynamoConfig::retention`] after they stopped being open.
///
/// Fails with [`TableError::AlreadyExists`] (and changes nothing) if the
/// table exists, and with [`TableError::Config`] (sending nothing) if
/// [`DynamoConfig::validate`] refuses the configuration.
pub async fn create_table(client: &Client, config: &DynamoConfig) -> Result<(), TableError> {
    config.validate()?;
    let string_attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    let gsi = |names: &IndexNames| -> Result<GlobalSecondaryIndex, TableError> {
        Ok(GlobalSecondaryIndex::builder()
            .index_name(&names.name)
            .key_schema(key(&names.partition_key, KeyType::Hash)?)
            .key_schema(key(&names.sort_key, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::KeysOnly)
                    .build(),
            )
            .build()?)
    };
    let result = client
        .create_table()
        .table_name(&config.table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attr(&config.partition_key)?)
        .attribute_definitions(string_attr(&config.sort_key)?)
        .attribute_definitions(string_attr(&config.due_index.partition_key)?)
        .attribute_definitions(string_attr(&config.due_index.sort_key)?)
        .attribute_definitions(string_attr(&config.list_index.partition_key)?)
        .attribute_definitions(string_attr(&config.list_index.sort_key)?)
        .key_schema(key(&config.partition_key, KeyType::Hash)?)
        .key_schema(key(&config.sort_key, KeyType::Range)?)
        .global_secondary_indexes(gsi(&config.due_index)?)
        .global_secondary_indexes(gsi(&config.list_index)?)
        // The change feed of servers sharing the table (feature
        // `changes`): each server's live events show every server's work.
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()?,
        )
        .send()
        .await;
    match result {
        Ok(_) => {}
        Err(SdkError::ServiceError(ctx))
            if matches!(ctx.err(), CreateTableError::ResourceInUseException(_)) =>
        {
            return Err(TableError::AlreadyExists(config.table.clone()));
        }
        Err(e) => return Err(table_sdk(e)),
    }
    wait_until_active(client, &config.table, CREATE_TIMEOUT).await?;
    client
        .update_time_to_live()
        .table_name(&config.table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(&config.ttl_attribute)
                .enabled(true)
                .build()?,
        )
        .send()
        .await
        .map_err(table_sdk)?;
    Ok(())
}

/// Waits until the table and every global secondary index of it are
/// `ACTIVE`, polling `DescribeTable` (every 250 ms at first, then every
/// 2 s), for at most `timeout`.
pub async fn wait_until_active(
    client: &Client,
    table: &str,
    timeout: Duration,
) -> Result<(), TableError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        let status = match client.describe_table().table_name(table).send().await {
            Ok(out) => {
                let t = out.table;
                let table_status = t.as_ref().and_then(|t| t.table_status.clone());
                let indexes_active = t
                    .as_ref()
                    .map(|t| t.global_secondary_indexes())
                    .unwrap_or_default()
                    .iter()
                    .all(|i| {
                        i.index_status
                            .as_ref()
                            .is_none_or(|s| *s == IndexStatus::Active)
                    });
                if table_status == Some(TableStatus::Active) && indexes_active {
                    return Ok(());
                }
                table_status.map_or_else(|| "unknown".to_owned(), |s| s.as_str().to_owned())
            }
            Err(SdkError::ServiceError(ctx))
                if matches!(ctx.err(), DescribeTableError::ResourceNotFoundException(_)) =>
            {
                return Err(TableError::NotFound(table.to_owned()));
            }
            Err(e) => return Err(table_sdk(e)),
        };
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(TableError::NotActive {
                table: table.to_owned(),
                waited,
                status,
            });
        }
        let Some(sleep) = client.config().sleep_impl() else {
            return Err(TableError::Sdk(
                "the client has no async sleep implementation to wait with".into(),
            ));
        };
        sleep.sleep(delay.min(timeout - waited)).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
