//! Secrets by reference: an environment variable whose value is
//! `ssm:<parameter>` or `secretsmanager:<secret>[#<json key>]` is replaced,
//! once at init, by the value it points to.
//!
//! | value | read with |
//! |---|---|
//! | `ssm:/qdn/twilio-auth-token` | SSM `GetParameter` (name or ARN), decrypted (`SecureString`) |
//! | `secretsmanager:qdn/twilio` | Secrets Manager `GetSecretValue` (name or ARN): the whole `SecretString` |
//! | `secretsmanager:qdn/twilio#auth_token` | the same, then the string under `auth_token` in its JSON object |
//!
//! Every reference is read once even when several variables name it.
//! Values never reach a log or an error message: errors name the variable
//! and the reference only.
//!
//! [`resolve`] does the work against any [`SecretFetcher`]; the AWS one
//! (`AwsSecretFetcher`, feature `secrets`) reads SSM Parameter Store and
//! Secrets Manager: two JSON POSTs signed with SigV4 (`qdn_relay_transport::aws`) over
//! the functions' HTTP client, rather than two SDK clients (1.4 MB of
//! binary). Without the feature a reference is an error at init rather
//! than a literal secret.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// An SSM parameter (name or ARN), read with decryption.
    Ssm(String),
    /// A Secrets Manager secret (name or ARN), optionally one key of its
    /// JSON object.
    SecretsManager {
        /// The secret's name or ARN.
        id: String,
        /// The key to take from the secret's JSON object.
        key: Option<String>,
    },
}

impl SecretRef {
    /// `None` if `value` is not a reference at all (a plain value);
    /// otherwise the reference, or why it is malformed.
    pub fn parse(value: &str) -> Option<Result<Self, String>> {
        let v = value.trim();
        if let Some(name) = v.strip_prefix("ssm:") {
            let name = name.trim();
            return Some(if name.is_empty() || name.contains(char::is_whitespace) {
                Err("expected ssm:<parameter name or ARN>".to_owned())
            } else {
                Ok(SecretRef::Ssm(name.to_owned()))
            });
        }
        if let Some(rest) = v.strip_prefix("secretsmanager:") {
            let (id, key) = match rest.split_once('#') {
                Some((id, key)) => (id.trim(), Some(key.trim())),
                None => (rest.trim(), None),
            };
            return Some(
                if id.is_empty()
                    || id.contains(char::is_whitespace)
                    || key.is_some_and(str::is_empty)
                {
                    Err("expected secretsmanager:<secret name or ARN>[#<json key>]".to_owned())
                } else {
                    Ok(SecretRef::SecretsManager {
                        id: id.to_owned(),
                        key: key.map(str::to_owned),
                    })
                },
            );
        }
        None
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Ssm(name) => write!(f, "ssm:{name}"),
            SecretRef::SecretsManager { id, key: None } => write!(f, "secretsmanager:{id}"),
            SecretRef::SecretsManager { id, key: Some(k) } => {
                write!(f, "secretsmanager:{id}#{k}")
            }
        }
    }
}

/// Why one read failed. The message must never hold the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

/// Reads secrets by name. Implemented for AWS by [`AwsSecretFetcher`];
/// tests use a map.
#[async_trait]
pub trait SecretFetcher: Send + Sync {
    /// The decrypted value of an SSM parameter (name or ARN).
    async fn parameter(&self, name: &str) -> Result<String, FetchError>;
    /// The `SecretString` of a Secrets Manager secret (name or ARN).
    async fn secret(&self, id: &str) -> Result<String, FetchError>;
}

/// A reference that could not be resolved, naming the variable (never the
/// value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The value starts like a reference but is not a valid one.
    #[error("{var}: {message}")]
    Malformed {
        /// The variable.
        var: String,
        /// What is wrong.
        message: String,
    },
    /// Reading the reference failed.
    #[error("{var}: could not read {reference}: {message}")]
    Fetch {
        /// The variable.
        var: String,
        /// The reference (`ssm:/…`), not the value.
        reference: String,
        /// Why, from the service.
        message: String,
    },
    /// The secret is not a JSON object with that key holding a string.
    #[error("{var}: {reference}: the secret is not a JSON object with a string under {key:?}")]
    MissingKey {
        /// The variable.
        var: String,
        /// The reference.
        reference: String,
        /// The key asked for.
        key: String,
    },
    /// The build has no fetcher (feature `secrets` off).
    #[error(
        "{var} is a reference ({reference}) but this build cannot read secrets (cargo feature `secrets`)"
    )]
    Unsupported {
        /// The variable.
        var: String,
        /// The reference.
        reference: String,
    },
}

/// Whether any of `names` in `vars` is a reference.
pub fn has_references(vars: &BTreeMap<String, String>, names: &[&str]) -> bool {
    names
        .iter()
        .filter_map(|n| vars.get(*n))
        .any(|v| SecretRef::parse(v).is_some())
}

/// Replaces every reference among the variables `names` of `vars` by the
/// value it points to, reading each secret once. Returns the names of the
/// variables it resolved, in order. On error nothing is replaced.
pub async fn resolve(
    vars: &mut BTreeMap<String, String>,
    names: &[&str],
    fetcher: Option<&dyn SecretFetcher>,
) -> Result<Vec<String>, SecretError> {
    let mut refs = Vec::new();
    for &name in names {
        let Some(value) = vars.get(name) else {
            continue;
        };
        match SecretRef::parse(value) {
            None => {}
            Some(Err(message)) => {
                return Err(SecretError::Malformed {
                    var: name.to_owned(),
                    message,
                });
            }
            Some(Ok(r)) => refs.push((name, r)),
        }
    }
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let Some(fetcher) = fetcher else {
        let (var, r) = &refs[0];
        return Err(SecretError::Unsupported {
            var: (*var).to_owned(),
            reference: r.to_string(),
        });
    };
    // One read per parameter or secret, whatever the key.
    let mut fetched: HashMap<(bool, String), String> = HashMap::new();
    let mut resolved = Vec::with_capacity(refs.len());
    for (var, r) in &refs {
        let (is_ssm, id) = match r {
            SecretRef::Ssm(name) => (true, name),
            SecretRef::SecretsManager { id, .. } => (false, id),
        };
        let cache_key = (is_ssm, id.clone());
        let raw = match fetched.get(&cache_key) {
            Some(v) => v.clone(),
            None => {
                let got = if is_ssm {
                    fetcher.parameter(id).await
                } else {
                    fetcher.secret(id).await
                };
                let v = got.map_err(|e| SecretError::Fetch {
                    var: (*var).to_owned(),
                    reference: r.to_string(),
                    message: e.0,
                })?;
                fetched.insert(cache_key, v.clone());
                v
            }
        };
        let value = match r {
            SecretRef::SecretsManager { key: Some(key), .. } => {
                let missing = || SecretError::MissingKey {
                    var: (*var).to_owned(),
                    reference: r.to_string(),
                    key: key.clone(),
                };
                let json: serde_json::Value = serde_json::from_str(&raw).map_err(|_| missing())?;
                json.get(key)
                    .and_then(serde_json::Value::as_str)
                    .ok_or_else(missing)?
                    .to_owned()
            }
            _ => raw,
        };
        resolved.push(((*var).to_owned(), value));
    }
    let names = resolved.iter().map(|(n, _)| n.clone()).collect();
    for (name, value) in resolved {
        vars.insert(name, value);
    }
    Ok(names)
}

#[cfg(feature = "secrets")]
mod aws;
#[cfg(feature = "secrets")]
pub use aws::{AwsSecretFetcher, Endpoints};

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Fake {
        params: HashMap<String, String>,
        secrets: HashMap<String, String>,
        calls: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl SecretFetcher for Fake {
        async fn parameter(&self, name: &str) -> Result<String, FetchError> {
            self.calls.lock().expect("lock").push(format!("ssm {name}"));
            self.params
                .get(name)
                .cloned()
                .ok_or_else(|| FetchError(format!("ParameterNotFound: {name}")))
        }
        async fn secret(&self, id: &str) -> Result<String, FetchError> {
            self.calls.lock().expect("lock").push(format!("sm {id}"));
            self.secrets
                .get(id)
                .cloned()
                .ok_or_else(|| FetchError(format!("ResourceNotFoundException: {id}")))
        }
    }

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const NAMES: &[&str] = &[
        "TWILIO_AUTH_TOKEN",
        "TWILIO_ACCOUNT_SID",
        "RELAY_DASHBOARD_TOKEN",
        "TWILIO_AUTH_TOKEN_SECONDARY",
    ];

    fn fake() -> Fake {
        Fake {
            params: [("/qdn/token".to_owned(), "tok-from-ssm".to_owned())].into(),
            secrets: [(
                "qdn/twilio".to_owned(),
                r#"{"sid":"AC123","auth":"tok-from-sm","n":5}"#.to_owned(),
            )]
            .into(),
            ..Fake::default()
        }
    }

    #[test]
    fn references_parse() {
        assert_eq!(SecretRef::parse("plain-token"), None);
        assert_eq!(
            SecretRef::parse(" ssm:/a/b "),
            Some(Ok(SecretRef::Ssm("/a/b".into())))
        );
        assert_eq!(
            SecretRef::parse("secretsmanager:arn:aws:secretsmanager:us-east-1:1:secret:x-AbC#k"),
            Some(Ok(SecretRef::SecretsManager {
                id: "arn:aws:secretsmanager:us-east-1:1:secret:x-AbC".into(),
                key: Some("k".into())
            }))
        );
        for bad in [
            "ssm:",
            "ssm: ",
            "secretsmanager:",
            "secretsmanager:x#",
            "ssm:/a b",
        ] {
            assert!(matches!(SecretRef::parse(bad), Some(Err(_))), "{bad}");
        }
        assert_eq!(
            SecretRef::parse("secretsmanager:x#k")
                .and_then(Result::ok)
                .map(|r| r.to_string()),
            Some("secretsmanager:x#k".into())
        );
    }

    #[tokio::test]
    async fn references_are_replaced_and_each_secret_read_once() {
        let f = fake();
        let mut v = vars(&[
            ("TWILIO_AUTH_TOKEN", "secretsmanager:qdn/twilio#auth"),
            ("TWILIO_ACCOUNT_SID", "secretsmanager:qdn/twilio#sid"),
            ("RELAY_DASHBOARD_TOKEN", "ssm:/qdn/token"),
            ("TWILIO_AUTH_TOKEN_SECONDARY", "literal"),
            ("OTHER", "ssm:/not/listed"),
        ]);
        let done = resolve(&mut v, NAMES, Some(&f)).await.expect("resolved");
        assert_eq!(
            done,
            [
                "TWILIO_AUTH_TOKEN",
                "TWILIO_ACCOUNT_SID",
                "RELAY_DASHBOARD_TOKEN"
            ]
        );
        assert_eq!(v["TWILIO_AUTH_TOKEN"], "tok-from-sm");
        assert_eq!(v["TWILIO_ACCOUNT_SID"], "AC123");
        assert_eq!(v["RELAY_DASHBOARD_TOKEN"], "tok-from-ssm");
        assert_eq!(v["TWILIO_AUTH_TOKEN_SECONDARY"], "literal");
        assert_eq!(v["OTHER"], "ssm:/not/listed", "only the listed variables");
        assert_eq!(
            *f.calls.lock().expect("lock"),
            ["sm qdn/twilio", "ssm /qdn/token"]
        );
    }

    #[tokio::test]
    async fn a_whole_secret_is_its_string() {
        let mut f = fake();
        f.secrets.insert("plain".into(), "s3cret".into());
        let mut v = vars(&[("TWILIO_AUTH_TOKEN", "secretsmanager:plain")]);
        resolve(&mut v, NAMES, Some(&f)).await.expect("resolved");
        assert_eq!(v["TWILIO_AUTH_TOKEN"], "s3cret");
    }

    #[tokio::test]
    async fn errors_name_the_variable_and_never_the_value() {
        let f = fake();
        let cases = [
            ("ssm:/missing", "could not read ssm:/missing"),
            ("secretsmanager:qdn/twilio#nope", "not a JSON object"),
            ("secretsmanager:qdn/twilio#n", "not a JSON object"),
            ("ssm:", "expected ssm:"),
        ];
        for (value, want) in cases {
            let mut v = vars(&[
                ("RELAY_DASHBOARD_TOKEN", "ssm:/qdn/token"),
                ("TWILIO_AUTH_TOKEN", value),
            ]);
            let before = v.clone();
            let e = resolve(&mut v, NAMES, Some(&f))
                .await
                .expect_err(value)
                .to_string();
            assert!(e.starts_with("TWILIO_AUTH_TOKEN"), "{e}");
            assert!(e.contains(want), "{e}");
            assert!(
                !e.contains("tok-from") && !e.contains("AC123"),
                "a secret leaked: {e}"
            );
            assert_eq!(v, before, "nothing replaced on error");
        }
    }

    #[tokio::test]
    async fn without_a_fetcher_a_reference_is_an_error_and_plain_values_pass() {
        let mut v = vars(&[("TWILIO_AUTH_TOKEN", "plain")]);
        assert!(!has_references(&v, NAMES));
        assert_eq!(resolve(&mut v, NAMES, None).await, Ok(vec![]));
        let mut v = vars(&[("TWILIO_AUTH_TOKEN", "ssm:/qdn/token")]);
        assert!(has_references(&v, NAMES));
        let e = resolve(&mut v, NAMES, None).await.expect_err("unsupported");
        assert!(matches!(e, SecretError::Unsupported { .. }), "{e}");
    }
}
