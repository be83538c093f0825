//! Twilio resource ids ("SIDs"): two letters naming the kind of resource,
//! then 32 hexadecimal digits.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a SID of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {prefix} followed by 32 hexadecimal digits (34 characters)")]
pub struct SidError {
    what: &'static str,
    prefix: &'static str,
}

fn check(s: &str, prefix: &'static str, what: &'static str) -> Result<(), SidError> {
    let ok = s.len() == 34
        && s.starts_with(prefix)
        && s.as_bytes()[2..].iter().all(u8::is_ascii_hexdigit);
    if ok {
        Ok(())
    } else {
        Err(SidError { what, prefix })
    }
}

macro_rules! sid_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Box<str>);

        impl $name {
            /// The SID as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = SidError;
            fn from_str(s: &str) -> Result<Self, SidError> {
                check(s, $prefix, $what)?;
                Ok(Self(s.into()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

sid_type!(
    /// A Twilio Account SID (`AC…`): names the account in REST paths and in
    /// every webhook.
    ///
    /// ```
    /// use qdn_relay_twilio::AccountSid;
    /// assert!("AC0123456789abcdef0123456789abcdef".parse::<AccountSid>().is_ok());
    /// assert!("SK0123456789abcdef0123456789abcdef".parse::<AccountSid>().is_err());
    /// ```
    AccountSid,
    "AC",
    "an Account SID"
);

sid_type!(
    /// A Messaging Service SID (`MG…`): sends from the service's sender pool
    /// instead of one `From` number.
    MessagingServiceSid,
    "MG",
    "a Messaging Service SID"
);

sid_type!(
    /// An API Key SID (`SK…`): the user name of API-key authentication.
    ApiKeySid,
    "SK",
    "an API Key SID"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_need_their_prefix_and_32_hex_digits() {
        let ok = "AC0123456789abcdef0123456789ABCDEF";
        assert_eq!(
            ok.parse::<AccountSid>().map(|s| s.to_string()),
            Ok(ok.into())
        );
        assert!(
            "AC0123456789abcdef0123456789abcde"
                .parse::<AccountSid>()
                .is_err()
        );
        assert!(
            "AC0123456789abcdef0123456789abcdeg"
                .parse::<AccountSid>()
                .is_err()
        );
        assert!(
            "MG0123456789abcdef0123456789abcdef"
                .parse::<MessagingServiceSid>()
                .is_ok()
        );
        assert!(
            "SK0123456789abcdef0123456789abcdef"
                .parse::<ApiKeySid>()
                .is_ok()
        );
        let err = "nope".parse::<ApiKeySid>().unwrap_err().to_string();
        assert_eq!(
            err,
            "an API Key SID must be SK followed by 32 hexadecimal digits (34 characters)"
        );
        // Multi-byte input of the right byte length must not panic.
        assert!(
            "ACé123456789abcdef0123456789abcde"
                .parse::<AccountSid>()
                .is_err()
        );
    }
}
