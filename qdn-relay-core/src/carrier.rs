//! The carrier layer's words: a line's numbers on each carrier
//! ([`CarrierNumber`], in the policy), the carrier and number a text went
//! through ([`Via`], on each leg), and a carrier passed over for a send
//! ([`CarrierSkip`], in events). Which carrier sends is decided by
//! [`crate::Failover`] by error class; the dispatch records what happened.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::input::SendErrorKind;
use crate::types::{PhoneNumber, Timestamp};

/// The longest carrier name a policy may use.
pub const MAX_CARRIER_NAME: usize = 32;

/// One of a line's numbers: the carrier it belongs to (a provider's
/// [`crate::SmsProvider::name`], such as `twilio` or `aws-sms`) and the
/// number texts go out from through it. A line's list is in order of
/// preference; texts to any of its numbers are the line's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CarrierNumber {
    /// The carrier's name.
    pub carrier: String,
    /// The line's number on that carrier.
    pub number: PhoneNumber,
}

impl fmt::Display for CarrierNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.carrier, self.number)
    }
}

/// The carrier a text went through and the number it was sent from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Via {
    /// The carrier's name.
    pub carrier: String,
    /// The number the recipient sees.
    pub from: PhoneNumber,
}

/// A carrier passed over for one send, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarrierSkip {
    /// The carrier's name.
    pub carrier: String,
    /// Why: the error it answered, or [`SendErrorKind::CarrierDown`]
    /// without a code when it was not tried because it is cooling off.
    pub kind: SendErrorKind,
    /// The carrier's error code, if it answered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u32>,
    /// Until when the carrier is degraded (new texts go to the next carrier
    /// first; the first text after this time probes it), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded_until: Option<Timestamp>,
}

/// Why a dispatch holds: every carrier that may send one of its texts
/// failed carrier-wide. The text waits and is retried with backoff; the
/// hold ends when a carrier sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarrierHold {
    /// Since when.
    pub since: Timestamp,
    /// The leg that could not be sent.
    pub leg: u32,
    /// The last carrier's error.
    pub kind: SendErrorKind,
    /// Its code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u32>,
}

/// Checks a line's carrier list: names 1 to [`MAX_CARRIER_NAME`] characters
/// of `a-z 0-9 - _`, each carrier and each number once.
pub(crate) fn check_carriers(list: &[CarrierNumber]) -> Result<(), String> {
    for (i, c) in list.iter().enumerate() {
        let ok = !c.carrier.is_empty()
            && c.carrier.len() <= MAX_CARRIER_NAME
            && c.carrier
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!(
                "carrier {:?}: a name is 1 to {MAX_CARRIER_NAME} of a-z, 0-9, '-', '_'",
                c.carrier
            ));
        }
        if list[..i].iter().any(|o| o.carrier == c.carrier) {
            return Err(format!("carrier {:?} is listed twice", c.carrier));
        }
        if list[..i].iter().any(|o| o.number == c.number) {
            return Err(format!("number {} is listed for two carriers", c.number));
        }
    }
    Ok(())
}
