//! `qdn-relay dynamo ...`: administration of the DynamoDB store (cargo
//! feature `dynamo`, off by default so the default build skips the AWS
//! SDK).
//!
//! ```text
//! RELAY_DYNAMO_TABLE=qdn-relay qdn-relay dynamo create-table
//! AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:8000 qdn-relay dynamo create-table --table relay --if-not-exists
//! ```
//!
//! The client is configured from the standard AWS environment: region,
//! credentials and profiles, and an endpoint override
//! (`AWS_ENDPOINT_URL_DYNAMODB`, or `AWS_ENDPOINT_URL`) for local
//! emulators.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use qdn_relay_dynamo::{Client, DynamoConfig, TableError};

#[derive(Args, Debug)]
pub struct DynamoArgs {
    #[command(subcommand)]
    command: DynamoCommand,
}

#[derive(Subcommand, Debug)]
enum DynamoCommand {
    /// Create the store's table (key schema, the `due` and `list` indexes,
    /// on-demand billing, time to live on `expires_at`) and wait until it
    /// is active.
    CreateTable(CreateTableArgs),
}

#[derive(Args, Debug)]
struct CreateTableArgs {
    /// The table's name.
    #[arg(long, env = "RELAY_DYNAMO_TABLE")]
    table: String,
    /// Succeed without changes if the table exists already.
    #[arg(long)]
    if_not_exists: bool,
}

pub async fn run(args: DynamoArgs) -> anyhow::Result<()> {
    match args.command {
        DynamoCommand::CreateTable(a) => {
            let client = qdn_relay_dynamo::client_from_env().await;
            let line = create_table(&client, &DynamoConfig::new(&a.table), a.if_not_exists).await?;
            println!("{line}");
            Ok(())
        }
    }
}

/// Creates the table; returns what to tell the user.
async fn create_table(
    client: &Client,
    config: &DynamoConfig,
    if_not_exists: bool,
) -> anyhow::Result<String> {
    match qdn_relay_dynamo::create_table(client, config).await {
        Ok(()) => Ok(format!(
            "created table {} (indexes {} and {}, on-demand billing, time to live on {})",
            config.table, config.due_index.name, config.list_index.name, config.ttl_attribute
        )),
        Err(TableError::AlreadyExists(t)) if if_not_exists => {
            Ok(format!("table {t} exists already; nothing changed"))
        }
        Err(TableError::AlreadyExists(t)) => {
            anyhow::bail!("table {t} already exists (--if-not-exists accepts an existing table)")
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot create table {} (region and credentials come from the AWS \
                 environment, e.g. AWS_REGION, AWS_PROFILE; an emulator's address from \
                 AWS_ENDPOINT_URL_DYNAMODB)",
                config.table
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use qdn_relay_dynamo::sdk;

    #[test]
    fn parses_the_subcommand() {
        let cli = crate::Cli::try_parse_from([
            "qdn-relay",
            "dynamo",
            "create-table",
            "--table",
            "t1",
            "--if-not-exists",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let crate::Command::Dynamo(args) = cli.command else {
            panic!("not the dynamo command");
        };
        let DynamoCommand::CreateTable(a) = args.command;
        assert_eq!(a.table, "t1");
        assert!(a.if_not_exists);
    }

    /// Against the emulator `./scripts/test` starts.
    #[tokio::test]
    async fn creates_a_table_once() {
        let url = std::env::var("QDN_TEST_DYNAMO_URL").unwrap_or_else(|_| {
            panic!("QDN_TEST_DYNAMO_URL is not set: run ./scripts/test, which starts a DynamoDB emulator")
        });
        let client = Client::from_conf(
            sdk::Config::builder()
                .behavior_version(sdk::config::BehaviorVersion::latest())
                .endpoint_url(url)
                .region(sdk::config::Region::new("us-east-1"))
                .credentials_provider(sdk::config::Credentials::new(
                    "test", "test", None, None, "cli-test",
                ))
                .build(),
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let config = DynamoConfig::new(format!("qdn-cli-{}-{nanos}", std::process::id()));
        let first = create_table(&client, &config, false)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(first.starts_with("created table"), "{first}");
        let again = create_table(&client, &config, true)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(again.contains("exists already"), "{again}");
        let err = create_table(&client, &config, false)
            .await
            .err()
            .unwrap_or_else(|| panic!("a second create without --if-not-exists must fail"));
        assert!(format!("{err:#}").contains("already exists"), "{err:#}");
    }
}
