//! Twilio error codes, classified once for REST answers and status
//! callbacks alike. The table is in the crate documentation.

use qdn_relay_core::{ErrorClass, SendErrorKind};

/// How the relay treats a Twilio error code, wherever it comes from (a REST
/// error body or a status callback's `ErrorCode`).
///
/// Codes not in the table are [`ErrorClass::Unknown`]: the relay moves on
/// to the next level but does not retry the same number. See the crate
/// documentation for the table and why each code is where it is.
///
/// ```
/// use qdn_relay_core::ErrorClass;
/// use qdn_relay_twilio::classify;
/// assert_eq!(classify(30003), ErrorClass::RetryLater);
/// assert_eq!(classify(21211), ErrorClass::Unreachable);
/// assert_eq!(classify(21610), ErrorClass::OptedOut);
/// assert_eq!(classify(30007), ErrorClass::Carrier);
/// assert_eq!(classify(20003), ErrorClass::Config);
/// assert_eq!(classify(12345), ErrorClass::Unknown);
/// ```
pub fn classify(code: u32) -> ErrorClass {
    match code {
        // Transient: the same number may work later.
        20429 // Too Many Requests
        | 30001 // Queue overflow
        | 30003 // Unreachable destination handset (off, no signal)
        | 30008 // Unknown error (Twilio: try resending)
        | 30009 // Missing segment
        | 30022 // US A2P 10DLC rate limits exceeded
        | 30023 // US A2P 10DLC daily message cap reached
        | 30036 // Validity period expired (waited in Twilio's queue too long)
        | 30410 // Provider timeout
        | 63017 // Rate limit exceeded (the account's combined rate)
        | 63038 // Account exceeded the daily messages limit
        => ErrorClass::RetryLater,

        // This number cannot receive our texts.
        21211 // Invalid 'To' phone number
        | 21608 // 'To' not verified (trial account)
        | 21612 // 'To' not reachable via SMS from this sender
        | 21614 // 'To' is not a mobile (SMS-capable) number
        | 30004 // Message blocked by the recipient or carrier
        | 30005 // Unknown or inactive destination handset
        | 30006 // Landline or unreachable carrier
        => ErrorClass::Unreachable,

        // The recipient opted out of this sender: not texted again by any
        // dispatch until they opt back in.
        21610 // Attempt to send to unsubscribed recipient (replied STOP)
        => ErrorClass::OptedOut,

        // Twilio itself cannot send from this number now: the sending
        // number is filtered or unregistered, or its queue is full
        // (throttling past any useful bound). Carrier-wide: the same text
        // goes through the line's next carrier, and the recipient is not
        // to blame.
        30007 // Message filtered (the carrier filters the sending number)
        | 30034 // US A2P 10DLC: unregistered number
        | 21611 // This 'From' number's queue is full (over 10 hours of texts)
        => ErrorClass::Carrier,

        // The relay's configuration is wrong: nothing works until fixed.
        20003 // Authentication failed
        | 20005 // Account not active
        | 20008 // Test credentials cannot do this
        | 20404 // Resource not found (the account path: wrong Account SID)
        | 21212 // Invalid 'From' phone number
        | 21408 // Permission to send to this region is not enabled (the account's geo permissions)
        | 21603 // 'From' is required
        | 21606 // 'From' is not a message-capable number of this account
        | 21609 // Invalid StatusCallback URL (RELAY_PUBLIC_URL)
        | 30002 // Account suspended
        | 30010 // Message price exceeds max price
        | 30032 // Toll-free number not verified
        => ErrorClass::Config,

        _ => ErrorClass::Unknown,
    }
}

/// What a Twilio error code means, in a few words, for people (the
/// console's timeline): `None` for a code this table does not know.
///
/// ```
/// assert_eq!(qdn_relay_twilio::describe(30006), Some("landline or unreachable carrier"));
/// assert_eq!(qdn_relay_twilio::describe(12345), None);
/// ```
pub fn describe(code: u32) -> Option<&'static str> {
    Some(match code {
        20003 => "authentication failed",
        20005 => "account not active",
        20008 => "test credentials cannot send",
        20404 => "wrong Account SID",
        20429 => "too many requests",
        21211 => "invalid phone number",
        21212 => "invalid sending number",
        21408 => "sending to this region is not enabled",
        21603 => "no sending number",
        21606 => "the sending number cannot text",
        21608 => "number not verified (trial account)",
        21609 => "invalid status callback URL",
        21610 => "the recipient opted out (replied STOP)",
        21611 => "the sending number's queue is full",
        21612 => "not reachable by SMS from this number",
        21614 => "not a mobile number",
        30001 => "queue overflow",
        30002 => "account suspended",
        30003 => "handset off or out of signal",
        30004 => "blocked by the recipient or carrier",
        30005 => "unknown or inactive handset",
        30006 => "landline or unreachable carrier",
        30007 => "filtered by the carrier",
        30008 => "unknown carrier error",
        30009 => "missing segment",
        30010 => "price exceeds the maximum",
        30022 => "10DLC rate limit exceeded",
        30023 => "10DLC daily cap reached",
        30032 => "toll-free number not verified",
        30034 => "10DLC: unregistered number",
        30036 => "expired in the queue",
        30410 => "carrier timeout",
        63017 => "account rate limit exceeded",
        63038 => "daily message limit reached",
        _ => return None,
    })
}

/// How the REST client reports a Twilio error answer: from the HTTP status
/// and the error body's `code`, through [`classify`].
///
/// - 429 or code 20429: [`SendErrorKind::Retryable`] (nothing was sent).
/// - 503: [`SendErrorKind::CarrierDown`] (Twilio is unavailable and
///   accepted nothing: the same text goes through the line's next carrier).
/// - any other 5xx: [`SendErrorKind::MaybeSent`], whatever the code (the
///   request got there; Twilio may have queued it: never sent again).
/// - 3xx: [`SendErrorKind::Config`] (the API base URL points somewhere
///   that redirects; Twilio's API never does).
/// - a classified code: `RetryLater` → `Retryable`, `Carrier` →
///   `CarrierDown`, `Unreachable`, `OptedOut`, `Filtered` and `Config` as
///   themselves (`Config` and `CarrierDown` are carrier-wide: see
///   [`SendErrorKind::is_carrier_wide`]).
/// - 401, 403 and 404 without a classified code: `Config` (wrong
///   credentials, permissions, Account SID or base URL: the only path the
///   client calls is the account's `Messages.json`).
/// - any other 4xx: [`SendErrorKind::Rejected`].
///
/// ```
/// use qdn_relay_core::SendErrorKind;
/// use qdn_relay_twilio::send_error_kind;
/// assert_eq!(send_error_kind(400, Some(21211)), SendErrorKind::Unreachable);
/// assert_eq!(send_error_kind(400, Some(21610)), SendErrorKind::OptedOut);
/// assert_eq!(send_error_kind(503, None), SendErrorKind::CarrierDown);
/// assert_eq!(send_error_kind(500, None), SendErrorKind::MaybeSent);
/// assert_eq!(send_error_kind(400, Some(30007)), SendErrorKind::CarrierDown);
/// assert_eq!(send_error_kind(401, Some(20003)), SendErrorKind::Config);
/// assert_eq!(send_error_kind(400, Some(21617)), SendErrorKind::Rejected);
/// ```
pub fn send_error_kind(http_status: u16, code: Option<u32>) -> SendErrorKind {
    if http_status == 503 {
        return SendErrorKind::CarrierDown;
    }
    if http_status >= 500 {
        return SendErrorKind::MaybeSent;
    }
    if http_status == 429 || code == Some(20429) {
        return SendErrorKind::Retryable;
    }
    if (300..400).contains(&http_status) {
        return SendErrorKind::Config;
    }
    match code.map(classify) {
        Some(ErrorClass::RetryLater) => SendErrorKind::Retryable,
        Some(ErrorClass::Unreachable) => SendErrorKind::Unreachable,
        Some(ErrorClass::OptedOut) => SendErrorKind::OptedOut,
        Some(ErrorClass::Filtered) => SendErrorKind::Filtered,
        Some(ErrorClass::Config) => SendErrorKind::Config,
        Some(ErrorClass::Carrier) => SendErrorKind::CarrierDown,
        _ if matches!(http_status, 401 | 403 | 404) => SendErrorKind::Config,
        _ => SendErrorKind::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_the_brief() {
        for c in [30003, 20429, 30001, 30008, 30036, 63017, 63038] {
            assert_eq!(classify(c), ErrorClass::RetryLater, "{c}");
        }
        for c in [21211, 21614, 30006, 30005] {
            assert_eq!(classify(c), ErrorClass::Unreachable, "{c}");
        }
        assert_eq!(classify(21610), ErrorClass::OptedOut);
        // The sending number or Twilio itself: carrier-wide.
        for c in [30007, 30034, 21611] {
            assert_eq!(classify(c), ErrorClass::Carrier, "{c}");
            assert!(classify(c).is_carrier_wide(), "{c}");
        }
        // 21408 is the account's geo permissions, not the recipient.
        for c in [20003, 21606, 21212, 20404, 21408, 21609] {
            assert_eq!(classify(c), ErrorClass::Config, "{c}");
        }
        for c in [0, 1, 21617, 99999, u32::MAX] {
            assert_eq!(classify(c), ErrorClass::Unknown, "{c}");
        }
    }

    #[test]
    fn every_classified_code_is_described() {
        for c in 0..100_000 {
            if classify(c) != ErrorClass::Unknown {
                assert!(describe(c).is_some(), "{c} is classified but not described");
            }
        }
    }

    #[test]
    fn rest_answers() {
        use SendErrorKind::*;
        let cases = [
            (429, None, Retryable),
            (429, Some(20429), Retryable),
            (400, Some(20429), Retryable),
            (400, Some(30001), Retryable),
            (400, Some(21611), CarrierDown),
            (429, Some(63038), Retryable),
            (400, Some(21408), Config),
            (400, Some(21609), Config),
            (500, None, MaybeSent),
            (502, Some(21211), MaybeSent),
            (503, Some(20429), CarrierDown),
            (503, None, CarrierDown),
            (504, None, MaybeSent),
            (400, Some(21211), Unreachable),
            (400, Some(21610), OptedOut),
            (400, Some(30007), CarrierDown),
            (400, Some(30034), CarrierDown),
            (401, Some(20003), Config),
            (401, None, Config),
            (403, None, Config),
            (404, Some(20404), Config),
            (404, None, Config),
            (400, Some(21606), Config),
            (301, None, Config),
            (400, Some(21617), Rejected),
            (400, None, Rejected),
            (422, None, Rejected),
        ];
        for (status, code, kind) in cases {
            assert_eq!(send_error_kind(status, code), kind, "{status} {code:?}");
        }
    }
}
