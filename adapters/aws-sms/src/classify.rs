//! The one table from what AWS answered to what the relay does: a
//! [`Failure`] read from an error answer ([`Failure::from_answer`]) or a
//! transport error ([`Failure::from_transport`]), and each failure's row
//! ([`Failure::row`]): the core's [`SendErrorKind`], its [`Scope`], and
//! whether the client retries it itself.

use qdn_relay_core::SendErrorKind;
use qdn_relay_transport::TransportErrorKind;
use qdn_relay_transport::aws::ErrorAnswer;

/// Whose problem a failure is: what a failover between carriers needs.
///
/// The core's [`SendErrorKind`] says what happened to the text (nothing
/// sent, maybe sent, refused for this number); the scope says what else it
/// says about the carrier: a [`Scope::Carrier`] failure will repeat for
/// every text sent through this carrier until the service recovers or an
/// operator acts, so the same text may go through another carrier at once,
/// and the number is never to blame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// This destination through this carrier: the number, or its country
    /// (blocked, opted out, not a valid number). Other recipients are not
    /// affected.
    Recipient,
    /// This text: its body or a parameter of this one request.
    Message,
    /// Every send through this carrier: the service (throttling, quota,
    /// outage), the account or its configuration (credentials, the
    /// origination identity, the configuration set).
    Carrier,
}

/// What went wrong with a send, read from AWS's answer.
///
/// | failure | AWS answer | core kind | scope | retried by the client |
/// |---|---|---|---|---|
/// | `Throttled` | `ThrottlingException` (and the generic throttling codes), HTTP 429 | `Retryable` | carrier | yes, with backoff, within the budget |
/// | `QuotaExceeded` | `ServiceQuotaExceededException` (e.g. `MONTHLY_SPEND_LIMIT_REACHED_FOR_TEXT`) | `CarrierDown` | carrier | no |
/// | `NotSent` | no connection could be made | `CarrierDown` | carrier | yes |
/// | `ServiceFault` | `InternalServerException`, `ServiceUnavailable`, any 5xx | `MaybeSent` | carrier | no |
/// | `NoAnswer` | the call timed out or broke after the request was written | `MaybeSent` | carrier | no |
/// | `MalformedAnswer` | a 2xx without a `MessageId` | `MaybeSent` | carrier | no |
/// | `OptedOut` | `ConflictException` `DESTINATION_PHONE_NUMBER_OPTED_OUT` | `OptedOut` | recipient | no |
/// | `DestinationBlocked` | `ConflictException` `DESTINATION_PHONE_NUMBER_NOT_VERIFIED`, `DESTINATION_PHONE_NUMBER_BLOCKED_BY_PROTECT_NUMBER_OVERRIDE`, `DESTINATION_COUNTRY_BLOCKED_BY_PROTECT_CONFIGURATION`; `ValidationException` `DESTINATION_COUNTRY_BLOCKED`, `COUNTRY_NOT_ENABLED`, `INTERNATIONAL_SENDING_NOT_SUPPORTED` | `Unreachable` | recipient | no |
/// | `InvalidDestination` | `ValidationException` naming the `DestinationPhoneNumber` field | `Unreachable` | recipient | no |
/// | `DestinationConfig` | `ValidationException` `INVALID_IDENTITY_FOR_DESTINATION_COUNTRY`, `SENDER_ID_NOT_REGISTERED`, `SENDER_ID_NOT_SUPPORTED`, `SENDER_ID_REQUIRES_REGISTRATION`, `PRICE_OVER_THRESHOLD`, `COUNTRY_CODE_MISMATCH` | `Rejected` | recipient | no |
/// | `InvalidMessage` | `ValidationException` `MAXIMUM_SIZE_EXCEEDED`, or naming another field of the text (`MessageBody`, `TimeToLive`, `Context`); an empty body (refused before sending) | `Rejected` | message | no |
/// | `AccessDenied` | `AccessDeniedException` (`INSUFFICIENT_ACCOUNT_REPUTATION`, `ACCOUNT_DISABLED`, IAM), credential and signature errors (`UnrecognizedClientException`, `InvalidSignatureException`, `ExpiredTokenException`, …), HTTP 401 / 403; no credentials to sign with | `Config` | carrier | no |
/// | `ResourceNotFound` | `ResourceNotFoundException` (the origination identity, pool, configuration set, account) | `Config` | carrier | no |
/// | `Misconfigured` | the request could not be built or signed (the endpoint); `ConflictException` with any other reason (`NO_ORIGINATION_IDENTITIES_FOUND`, `RESOURCE_NOT_ACTIVE`, `MESSAGE_TYPE_MISMATCH`, `NUMBER_CAPABILITIES_MISMATCH`, …); `ValidationException` `CHANNEL_NOT_ENABLED`, `RESOURCE_NOT_ACCESSIBLE`, `INVALID_ARN`, or naming `OriginationIdentity`, `ConfigurationSetName`, `MessageType`, `Keyword` or `ProtectConfigurationId`; a redirect or a 404 without an AWS error | `Config` | carrier | no |
/// | `Rejected` | any other 4xx (any other `ValidationException` reason, `OTHER`, an unknown code) | `Rejected` | message | no |
///
/// Why 5xx is `MaybeSent`: the core's contract allows `Retryable` and
/// `CarrierDown` only where the provider guarantees nothing was sent, and
/// a fault answer does not; so a failover never sends the text through
/// another carrier (it could arrive twice): the level's timeout covers it.
/// Its scope is still the carrier's.
///
/// The core acts on the kind: `CarrierDown` and `Config` are carrier-wide
/// ([`SendErrorKind::is_carrier_wide`]: the line's next carrier sends the
/// same text at once, this one cools off, the recipient is not to blame);
/// throttling stays `Retryable` (the next carrier is tried; a
/// `Retry-After` past the failover's bound degrades this one). The
/// destination-country failures are `Rejected`: this text to this
/// country through this carrier, neither the recipient's fault nor the
/// whole carrier's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// Too many requests: rate exceeded.
    Throttled,
    /// A service quota (a monthly spend limit) is used up.
    QuotaExceeded,
    /// Nothing went out: no connection could be made.
    NotSent,
    /// The service answered with a fault (5xx).
    ServiceFault,
    /// No answer in time, or the connection broke, after the request was
    /// written.
    NoAnswer,
    /// A success answer without a message id.
    MalformedAnswer,
    /// The recipient opted out of texts from this account.
    OptedOut,
    /// Texts to this recipient (or its country) are blocked for this
    /// account: blocked countries, protect configuration, an unverified
    /// destination in the sandbox.
    DestinationBlocked,
    /// The destination is not a valid phone number.
    InvalidDestination,
    /// Sending to this destination needs configuration the account lacks
    /// (a registered sender id, an identity allowed there, a price limit).
    DestinationConfig,
    /// This text was refused (its body or one of its parameters).
    InvalidMessage,
    /// Not authorized: IAM, credentials, signature, or the account's
    /// standing.
    AccessDenied,
    /// The origination identity, pool or configuration set does not exist.
    ResourceNotFound,
    /// The account's configuration does not allow the send (the
    /// origination identity's state or capabilities, the channel, the
    /// endpoint).
    Misconfigured,
    /// Anything else refused.
    Rejected,
}

/// The generic throttling codes of AWS JSON services.
const THROTTLING: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
];

/// Codes of a service fault.
const FAULTS: &[&str] = &[
    "InternalServerException",
    "InternalServerError",
    "InternalFailure",
    "InternalServiceError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];

/// Codes of refused credentials or signatures.
const NOT_AUTHORIZED: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "NotAuthorized",
];

/// `ValidationException` fields that are the account's configuration
/// rather than this text.
const CONFIG_FIELDS: &[&str] = &[
    "OriginationIdentity",
    "ConfigurationSetName",
    "MessageType",
    "Keyword",
    "ProtectConfigurationId",
];

impl Failure {
    /// The failure an error answer means (see the table on [`Failure`]).
    pub fn from_answer(answer: &ErrorAnswer) -> Self {
        let reason = answer.field("Reason").unwrap_or_default();
        match answer.code.as_deref() {
            Some(c) if THROTTLING.contains(&c) => Failure::Throttled,
            Some("ServiceQuotaExceededException") => Failure::QuotaExceeded,
            Some(c) if FAULTS.contains(&c) => Failure::ServiceFault,
            Some(c) if NOT_AUTHORIZED.contains(&c) => Failure::AccessDenied,
            Some("ResourceNotFoundException") => Failure::ResourceNotFound,
            Some("ConflictException") => match reason {
                "DESTINATION_PHONE_NUMBER_OPTED_OUT" => Failure::OptedOut,
                "DESTINATION_PHONE_NUMBER_NOT_VERIFIED"
                | "DESTINATION_PHONE_NUMBER_BLOCKED_BY_PROTECT_NUMBER_OVERRIDE"
                | "DESTINATION_COUNTRY_BLOCKED_BY_PROTECT_CONFIGURATION" => {
                    Failure::DestinationBlocked
                }
                _ => Failure::Misconfigured,
            },
            Some("ValidationException") => match reason {
                "DESTINATION_COUNTRY_BLOCKED"
                | "COUNTRY_NOT_ENABLED"
                | "INTERNATIONAL_SENDING_NOT_SUPPORTED" => Failure::DestinationBlocked,
                "INVALID_IDENTITY_FOR_DESTINATION_COUNTRY"
                | "SENDER_ID_NOT_REGISTERED"
                | "SENDER_ID_NOT_SUPPORTED"
                | "SENDER_ID_REQUIRES_REGISTRATION"
                | "PRICE_OVER_THRESHOLD"
                | "COUNTRY_CODE_MISMATCH" => Failure::DestinationConfig,
                "MAXIMUM_SIZE_EXCEEDED" => Failure::InvalidMessage,
                "CHANNEL_NOT_ENABLED" | "RESOURCE_NOT_ACCESSIBLE" | "INVALID_ARN" => {
                    Failure::Misconfigured
                }
                _ => Self::from_fields(answer),
            },
            _ => Self::from_status(answer.status),
        }
    }

    /// A `ValidationException` without a telling reason, by the fields it
    /// names.
    fn from_fields(answer: &ErrorAnswer) -> Self {
        let fields: Vec<&str> = answer
            .body
            .get("Fields")
            .and_then(serde_json::Value::as_array)
            .map(|fs| {
                fs.iter()
                    .filter_map(|f| f.get("Name").and_then(serde_json::Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let names = |set: &[&str]| {
            fields
                .iter()
                .any(|f| set.iter().any(|s| s.eq_ignore_ascii_case(f)))
        };
        if names(&["DestinationPhoneNumber"]) {
            Failure::InvalidDestination
        } else if names(CONFIG_FIELDS) {
            Failure::Misconfigured
        } else if fields.is_empty() {
            Failure::Rejected
        } else {
            Failure::InvalidMessage
        }
    }

    /// An answer without a known code, by its status.
    fn from_status(status: u16) -> Self {
        match status {
            429 => Failure::Throttled,
            500..=599 => Failure::ServiceFault,
            401 | 403 => Failure::AccessDenied,
            300..=399 | 404 => Failure::Misconfigured,
            _ => Failure::Rejected,
        }
    }

    /// The failure a transport error means: nothing sent when no
    /// connection was made; a configuration error when the request could
    /// not be built; maybe sent otherwise.
    pub fn from_transport(kind: TransportErrorKind) -> Self {
        match kind {
            TransportErrorKind::Connect => Failure::NotSent,
            TransportErrorKind::Request => Failure::Misconfigured,
            _ => Failure::NoAnswer,
        }
    }

    /// The failure's row of the table: the core's kind, the scope, and
    /// whether the client retries it itself.
    pub fn row(self) -> (SendErrorKind, Scope, bool) {
        use SendErrorKind::*;
        match self {
            Failure::Throttled => (Retryable, Scope::Carrier, true),
            Failure::QuotaExceeded => (CarrierDown, Scope::Carrier, false),
            Failure::NotSent => (CarrierDown, Scope::Carrier, true),
            Failure::ServiceFault => (MaybeSent, Scope::Carrier, false),
            Failure::NoAnswer => (MaybeSent, Scope::Carrier, false),
            Failure::MalformedAnswer => (MaybeSent, Scope::Carrier, false),
            Failure::OptedOut => (SendErrorKind::OptedOut, Scope::Recipient, false),
            Failure::DestinationBlocked => (Unreachable, Scope::Recipient, false),
            Failure::InvalidDestination => (Unreachable, Scope::Recipient, false),
            Failure::DestinationConfig => (Rejected, Scope::Recipient, false),
            Failure::InvalidMessage => (Rejected, Scope::Message, false),
            Failure::AccessDenied => (Config, Scope::Carrier, false),
            Failure::ResourceNotFound => (Config, Scope::Carrier, false),
            Failure::Misconfigured => (Config, Scope::Carrier, false),
            Failure::Rejected => (Rejected, Scope::Message, false),
        }
    }

    /// The core's kind.
    pub fn kind(self) -> SendErrorKind {
        self.row().0
    }

    /// Whose problem it is.
    pub fn scope(self) -> Scope {
        self.row().1
    }

    /// Whether every send through this carrier will fail alike: a
    /// failover should send the text through the next carrier, and the
    /// recipient is not to blame.
    pub fn carrier_wide(self) -> bool {
        self.scope() == Scope::Carrier
    }

    /// Whether the recipient opted out (kind [`SendErrorKind::OptedOut`]:
    /// the relay records the opt-out as it does Twilio's 21610).
    pub fn opted_out(self) -> bool {
        self == Failure::OptedOut
    }

    /// Whether the client retries it itself (within its time budget).
    pub fn retried_by_client(self) -> bool {
        self.row().2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: serde_json::Value) -> ErrorAnswer {
        ErrorAnswer::parse(status, &http::HeaderMap::new(), body.to_string().as_bytes())
    }

    fn error(code: &str, reason: Option<&str>) -> ErrorAnswer {
        let mut body = serde_json::json!({"__type": code, "Message": "m"});
        if let Some(r) = reason {
            body["Reason"] = r.into();
        }
        answer(400, body)
    }

    #[test]
    fn every_error_shape_of_the_model_is_classified() {
        use Failure::*;
        let cases = [
            ("ThrottlingException", None, Throttled),
            (
                "ServiceQuotaExceededException",
                Some("MONTHLY_SPEND_LIMIT_REACHED_FOR_TEXT"),
                QuotaExceeded,
            ),
            ("InternalServerException", None, ServiceFault),
            (
                "AccessDeniedException",
                Some("ACCOUNT_DISABLED"),
                AccessDenied,
            ),
            ("AccessDeniedException", None, AccessDenied),
            ("ResourceNotFoundException", None, ResourceNotFound),
            (
                "ConflictException",
                Some("DESTINATION_PHONE_NUMBER_OPTED_OUT"),
                OptedOut,
            ),
            (
                "ConflictException",
                Some("DESTINATION_PHONE_NUMBER_BLOCKED_BY_PROTECT_NUMBER_OVERRIDE"),
                DestinationBlocked,
            ),
            (
                "ConflictException",
                Some("NO_ORIGINATION_IDENTITIES_FOUND"),
                Misconfigured,
            ),
            (
                "ConflictException",
                Some("RESOURCE_NOT_ACTIVE"),
                Misconfigured,
            ),
            (
                "ValidationException",
                Some("DESTINATION_COUNTRY_BLOCKED"),
                DestinationBlocked,
            ),
            (
                "ValidationException",
                Some("INVALID_IDENTITY_FOR_DESTINATION_COUNTRY"),
                DestinationConfig,
            ),
            (
                "ValidationException",
                Some("MAXIMUM_SIZE_EXCEEDED"),
                InvalidMessage,
            ),
            (
                "ValidationException",
                Some("CHANNEL_NOT_ENABLED"),
                Misconfigured,
            ),
            ("ValidationException", Some("OTHER"), Rejected),
            ("ValidationException", None, Rejected),
            ("UnrecognizedClientException", None, AccessDenied),
            ("ExpiredTokenException", None, AccessDenied),
            ("SomethingNew", None, Rejected),
        ];
        for (code, reason, want) in cases {
            assert_eq!(
                Failure::from_answer(&error(code, reason)),
                want,
                "{code} {reason:?}"
            );
        }
    }

    #[test]
    fn validation_fields_decide_whose_problem_it_is() {
        let with = |name: &str| {
            answer(
                400,
                serde_json::json!({
                    "__type": "ValidationException",
                    "Message": "1 validation error",
                    "Reason": "FIELD_VALIDATION_FAILED",
                    "Fields": [{"Name": name, "Message": "bad"}],
                }),
            )
        };
        assert_eq!(
            Failure::from_answer(&with("DestinationPhoneNumber")),
            Failure::InvalidDestination
        );
        assert_eq!(
            Failure::from_answer(&with("originationIdentity")),
            Failure::Misconfigured
        );
        assert_eq!(
            Failure::from_answer(&with("MessageBody")),
            Failure::InvalidMessage
        );
    }

    #[test]
    fn answers_without_a_code_go_by_status() {
        let plain = |status| answer(status, serde_json::Value::Null);
        assert_eq!(Failure::from_answer(&plain(429)), Failure::Throttled);
        assert_eq!(Failure::from_answer(&plain(502)), Failure::ServiceFault);
        assert_eq!(Failure::from_answer(&plain(403)), Failure::AccessDenied);
        assert_eq!(Failure::from_answer(&plain(307)), Failure::Misconfigured);
        assert_eq!(Failure::from_answer(&plain(404)), Failure::Misconfigured);
        assert_eq!(Failure::from_answer(&plain(400)), Failure::Rejected);
        assert_eq!(
            Failure::from_transport(TransportErrorKind::Connect),
            Failure::NotSent
        );
        assert_eq!(
            Failure::from_transport(TransportErrorKind::Request),
            Failure::Misconfigured
        );
        assert_eq!(
            Failure::from_transport(TransportErrorKind::Timeout),
            Failure::NoAnswer
        );
        assert_eq!(
            Failure::from_transport(TransportErrorKind::Other),
            Failure::NoAnswer
        );
    }

    #[test]
    fn the_rows_keep_the_cores_contract() {
        use Failure::*;
        let all = [
            Throttled,
            QuotaExceeded,
            NotSent,
            ServiceFault,
            NoAnswer,
            MalformedAnswer,
            OptedOut,
            DestinationBlocked,
            InvalidDestination,
            DestinationConfig,
            InvalidMessage,
            AccessDenied,
            ResourceNotFound,
            Misconfigured,
            Rejected,
        ];
        for f in all {
            let (kind, scope, retried) = f.row();
            // Only what guarantees nothing was sent is retried.
            if retried {
                assert!(
                    matches!(kind, SendErrorKind::Retryable | SendErrorKind::CarrierDown),
                    "{f:?}"
                );
            }
            // Carrier-wide in the core only with the carrier's scope.
            if kind.is_carrier_wide() {
                assert_eq!(scope, Scope::Carrier, "{f:?}");
            }
            // An account or configuration problem never blames the number.
            if scope == Scope::Carrier {
                assert_ne!(kind, SendErrorKind::Unreachable, "{f:?}");
            }
            if matches!(kind, SendErrorKind::Unreachable | SendErrorKind::OptedOut) {
                assert_eq!(scope, Scope::Recipient, "{f:?}");
            }
            assert_eq!(f.opted_out(), kind == SendErrorKind::OptedOut, "{f:?}");
            assert_eq!(f.carrier_wide(), scope == Scope::Carrier);
        }
        assert!(OptedOut.opted_out() && !DestinationBlocked.opted_out());
    }
}
