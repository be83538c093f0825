//! Errors: the mapping of the SDK's errors onto the port's [`StoreError`],
//! the reading of a cancelled transaction, and [`TableError`] for
//! create-table.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::CancellationReason;
use qdn_relay_core::{ProviderMessageId, StoreError, Tag};

/// Why [`create_table`](crate::create_table) or
/// [`wait_until_active`](crate::wait_until_active) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// The table exists already (nothing was changed).
    #[error("table {0} already exists")]
    AlreadyExists(String),
    /// The table does not exist.
    #[error("table {0} does not exist")]
    NotFound(String),
    /// The table or one of its indexes did not become active in time.
    #[error("table {table} is not active after {waited:?} (status {status})")]
    NotActive {
        /// The table.
        table: String,
        /// How long we waited.
        waited: std::time::Duration,
        /// The last status seen.
        status: String,
    },
    /// The request could not be built (a bug or an invalid name).
    #[error("cannot build the request: {0}")]
    Build(#[from] aws_sdk_dynamodb::error::BuildError),
    /// DynamoDB refused or failed the call.
    #[error("dynamodb: {0}")]
    Sdk(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The configuration is not usable (nothing was sent).
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
}

/// Why a save was refused before it reached DynamoDB.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveError {
    /// The dispatch item would exceed DynamoDB's 400 KB item limit even
    /// with its record compressed.
    #[error("dispatch item of about {size} bytes exceeds DynamoDB's 400 KB item limit")]
    ItemTooLarge {
        /// The estimated size.
        size: usize,
    },
    /// The save needs more index changes than one transaction may hold
    /// (more than 100 actions that cannot be written beforehand).
    #[error("the save needs {actions} transaction actions; at most 100 fit one transaction")]
    TooManyActions {
        /// How many it needs.
        actions: usize,
    },
    /// A request could not be built.
    #[error("cannot build the request: {0}")]
    Build(#[from] aws_sdk_dynamodb::error::BuildError),
}

/// A service error, shown with DynamoDB's code and message.
#[derive(Debug)]
pub(crate) struct ServiceError(pub(crate) aws_sdk_dynamodb::Error);

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use aws_sdk_dynamodb::error::ProvideErrorMetadata as _;
        write!(f, "dynamodb {}", self.0.code().unwrap_or("error"))?;
        match self.0.message() {
            Some(m) => write!(f, ": {m}"),
            None => write!(f, ": {}", self.0),
        }
    }
}

impl std::error::Error for ServiceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether a service error is worth retrying: throttling, a transaction in
/// the way, an internal error.
pub(crate) fn retryable_service(e: &aws_sdk_dynamodb::Error) -> bool {
    use aws_sdk_dynamodb::Error as E;
    matches!(
        e,
        E::ProvisionedThroughputExceededException(_)
            | E::RequestLimitExceeded(_)
            | E::ThrottlingException(_)
            | E::TransactionConflictException(_)
            | E::TransactionInProgressException(_)
            | E::ReplicatedWriteConflictException(_)
            | E::InternalServerError(_)
    )
}

/// Maps any SDK error onto the port's: network failures, timeouts,
/// unreadable responses, throttling and server errors are retryable;
/// everything else (validation, a missing table, bad credentials) is not.
pub(crate) fn map_sdk<E>(e: SdkError<E>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    aws_sdk_dynamodb::Error: From<E>,
{
    let (retryable, source): (bool, Box<dyn std::error::Error + Send + Sync>) = match e {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status();
            let e = aws_sdk_dynamodb::Error::from(ctx.into_err());
            let retryable =
                status.is_server_error() || status.as_u16() == 429 || retryable_service(&e);
            (retryable, Box::new(ServiceError(e)))
        }
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => (true, Box::new(e)),
        SdkError::DispatchFailure(ref f) => {
            let retryable = f.is_io() || f.is_timeout() || (f.is_other() && f.as_other().is_some());
            (retryable, Box::new(e))
        }
        other => (false, Box::new(other)),
    };
    StoreError::Backend { retryable, source }
}

/// Maps an SDK error for create-table.
pub(crate) fn table_sdk<E>(e: SdkError<E>) -> TableError
where
    E: std::error::Error + Send + Sync + 'static,
    aws_sdk_dynamodb::Error: From<E>,
{
    match e {
        SdkError::ServiceError(ctx) => TableError::Sdk(Box::new(ServiceError(
            aws_sdk_dynamodb::Error::from(ctx.into_err()),
        ))),
        other => TableError::Sdk(Box::new(other)),
    }
}

// ---------------------------------------------------------------------------
// Cancelled transactions

/// The codes DynamoDB puts in a `TransactionCanceledException`'s
/// `CancellationReasons`, one per action in request order.
pub(crate) mod code {
    /// The action's condition did not hold.
    pub(crate) const CONDITIONAL_CHECK_FAILED: &str = "ConditionalCheckFailed";
    /// Another transaction was writing the item.
    pub(crate) const TRANSACTION_CONFLICT: &str = "TransactionConflict";
    /// Throttled (on-demand tables).
    pub(crate) const THROTTLING_ERROR: &str = "ThrottlingError";
    /// Throttled (provisioned tables).
    pub(crate) const PROVISIONED_THROUGHPUT_EXCEEDED: &str = "ProvisionedThroughputExceeded";
}

/// What one action of a transaction guards, so a failed condition can be
/// told apart by its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Guard {
    /// The dispatch item: its version (or absence, on create).
    Version,
    /// The (line, customer) open item.
    OpenCustomer,
    /// The tag item.
    Tag(Tag),
    /// An inbound sid's claim.
    InboundSid(ProviderMessageId),
    /// An item written without a uniqueness rule.
    Index,
}

impl Guard {
    /// Which failure wins when several conditions failed: the order the
    /// reference store checks them in.
    fn rank(&self) -> u8 {
        match self {
            Guard::Version => 0,
            Guard::OpenCustomer => 1,
            Guard::Tag(_) => 2,
            Guard::InboundSid(_) => 3,
            Guard::Index => 4,
        }
    }
}

/// How a cancelled transaction reads.
#[derive(Debug)]
pub(crate) enum Cancelled {
    /// A condition failed: the first by rank, and for the dispatch item the
    /// version DynamoDB returned with it (if any).
    Condition {
        guard: Guard,
        found: Option<Option<u64>>,
    },
    /// Another transaction held an item; trying again may pass.
    Conflict,
    /// Throttled.
    Throttled,
    /// Anything else (a validation error): not retryable.
    Other,
}

/// How a failed `TransactWriteItems` reads: a `TransactionCanceledException`
/// read against the guards of the transaction's actions (same order), or
/// `None` for any other failure (a transport error, another service error),
/// which [`map_sdk`] maps.
pub(crate) fn cancellation<R>(
    err: &SdkError<TransactWriteItemsError, R>,
    guards: &[Guard],
) -> Option<Cancelled> {
    match err {
        SdkError::ServiceError(ctx) => match ctx.err() {
            TransactWriteItemsError::TransactionCanceledException(e) => {
                Some(read_cancellation(e.cancellation_reasons(), guards))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Reads a transaction's cancellation reasons against the guards of its
/// actions (same order).
fn read_cancellation(reasons: &[CancellationReason], guards: &[Guard]) -> Cancelled {
    let mut failed: Option<(&Guard, &CancellationReason)> = None;
    let (mut conflict, mut throttled, mut other) = (false, false, false);
    for (reason, guard) in reasons.iter().zip(guards) {
        match reason.code() {
            Some(code::CONDITIONAL_CHECK_FAILED) => {
                if failed.is_none_or(|(g, _)| guard.rank() < g.rank()) {
                    failed = Some((guard, reason));
                }
            }
            Some(code::TRANSACTION_CONFLICT) => conflict = true,
            Some(code::THROTTLING_ERROR | code::PROVISIONED_THROUGHPUT_EXCEEDED) => {
                throttled = true
            }
            None | Some("None") => {}
            Some(_) => other = true,
        }
    }
    if let Some((guard, reason)) = failed {
        let found = (*guard == Guard::Version).then(|| {
            reason
                .item()
                .and_then(|item| crate::item::number(item, crate::item::VERSION))
        });
        return Cancelled::Condition {
            guard: guard.clone(),
            found,
        };
    }
    if other {
        Cancelled::Other
    } else if throttled {
        Cancelled::Throttled
    } else if conflict {
        Cancelled::Conflict
    } else {
        Cancelled::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;

    fn reason(code: &str) -> CancellationReason {
        CancellationReason::builder().code(code).build()
    }

    fn sid(s: &str) -> ProviderMessageId {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_failed_action_names_the_conflict() {
        let tag: Tag = "K7".parse().unwrap_or_else(|e| panic!("{e}"));
        let guards = [
            Guard::Version,
            Guard::OpenCustomer,
            Guard::Tag(tag),
            Guard::InboundSid(sid("SM1")),
        ];
        let cases: [(usize, Guard); 4] = [
            (0, Guard::Version),
            (1, Guard::OpenCustomer),
            (2, Guard::Tag(tag)),
            (3, Guard::InboundSid(sid("SM1"))),
        ];
        for (at, want) in cases {
            let reasons: Vec<_> = (0..4)
                .map(|i| {
                    reason(if i == at {
                        "ConditionalCheckFailed"
                    } else {
                        "None"
                    })
                })
                .collect();
            match read_cancellation(&reasons, &guards) {
                Cancelled::Condition { guard, .. } => assert_eq!(guard, want),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_version_wins_over_uniqueness_and_carries_the_found_version() {
        let guards = [Guard::InboundSid(sid("SM1")), Guard::Version];
        let reasons = [
            reason("ConditionalCheckFailed"),
            CancellationReason::builder()
                .code("ConditionalCheckFailed")
                .item("version", AttributeValue::N("7".into()))
                .build(),
        ];
        match read_cancellation(&reasons, &guards) {
            Cancelled::Condition { guard, found } => {
                assert_eq!(guard, Guard::Version);
                assert_eq!(found, Some(Some(7)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn conflicts_throttles_and_validation_errors() {
        let guards = [Guard::Version, Guard::Index];
        assert!(matches!(
            read_cancellation(&[reason("None"), reason("TransactionConflict")], &guards),
            Cancelled::Conflict
        ));
        assert!(matches!(
            read_cancellation(&[reason("ThrottlingError"), reason("None")], &guards),
            Cancelled::Throttled
        ));
        assert!(matches!(
            read_cancellation(
                &[reason("ProvisionedThroughputExceeded"), reason("None")],
                &guards
            ),
            Cancelled::Throttled
        ));
        assert!(matches!(
            read_cancellation(&[reason("ValidationError"), reason("None")], &guards),
            Cancelled::Other
        ));
    }

    #[test]
    fn throttling_service_errors_are_retryable() {
        use aws_sdk_dynamodb::Error as E;
        use aws_sdk_dynamodb::types::error::{
            ConditionalCheckFailedException, ProvisionedThroughputExceededException,
            RequestLimitExceeded, ResourceNotFoundException, ThrottlingException,
            TransactionConflictException,
        };
        for e in [
            E::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder().build(),
            ),
            E::RequestLimitExceeded(RequestLimitExceeded::builder().build()),
            E::ThrottlingException(ThrottlingException::builder().build()),
            E::TransactionConflictException(TransactionConflictException::builder().build()),
        ] {
            assert!(retryable_service(&e), "{e:?}");
        }
        for e in [
            E::ResourceNotFoundException(ResourceNotFoundException::builder().build()),
            E::ConditionalCheckFailedException(ConditionalCheckFailedException::builder().build()),
        ] {
            assert!(!retryable_service(&e), "{e:?}");
        }
    }
}
