//! The relay's settings from environment variables, shared by every way of
//! running it (the `qdn-relay` server, the Lambda functions, a host
//! application), so the same variables mean the same thing everywhere.

use std::path::PathBuf;
use std::time::Duration;

use qdn_relay_core::{
    DEFAULT_ACK_TIMEOUT, DEFAULT_SUPPRESS_REPEATS, PhoneNumber, Policy, parse_duration,
};
use qdn_relay_twilio::{Secret, SignatureValidator};

use crate::HttpConfig;

/// A setting that is missing or invalid, naming its variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct SettingsError {
    /// The environment variable.
    pub var: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError {
        var,
        message: message.into(),
    }
}

/// Everything the relay needs from its environment:
///
/// | variable | meaning |
/// |---|---|
/// | `QDN_TWILIO_NUMBER` | the business line (required) |
/// | `RELAY_POLICY` | a policy file (TOML); wins over `RELAY_CHAIN` |
/// | `RELAY_CHAIN` | comma-separated E.164 numbers, primary first (required without `RELAY_POLICY`) |
/// | `RELAY_ACK_TIMEOUT` | each level's time to acknowledge (default `15m`; `RELAY_CHAIN` only) |
/// | `RELAY_PUBLIC_URL` | the URL Twilio calls |
/// | `RELAY_DASHBOARD_TOKEN` | the dashboard's bearer token |
/// | `RELAY_CORS_ORIGINS` | comma-separated allowed origins |
/// | `TWILIO_ACCOUNT_SID` | unset: dry-run |
/// | `TWILIO_AUTH_TOKEN`, `TWILIO_AUTH_TOKEN_SECONDARY` | webhook signatures |
///
/// Empty values count as unset. `RELAY_POLICY` is read when the settings
/// are (a dispatch keeps the policy it opened with, so a changed file
/// applies to new dispatches after a restart). The `RELAY_CHAIN` form
/// suppresses identical repeated texts within
/// [`DEFAULT_SUPPRESS_REPEATS`], like a policy file that does not say.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The business line.
    pub line: PhoneNumber,
    /// The chain, primary first (with a policy file: every target, in
    /// level order).
    pub chain: Vec<PhoneNumber>,
    /// Each level's timeout (with a policy file: the shortest).
    pub ack_timeout: Duration,
    /// The escalation policy: from `RELAY_POLICY`, else from the chain and
    /// timeout.
    pub policy: Policy,
    /// The policy file, if the policy came from one.
    pub policy_file: Option<PathBuf>,
    /// The HTTP surface's settings.
    pub http: HttpConfig,
    /// Whether no Twilio account is configured (sends are only recorded).
    pub dry_run: bool,
    /// The Auth Token webhooks are signed with, if set.
    pub auth_token: Option<Secret>,
    /// A second accepted token while rotating.
    pub auth_token_secondary: Option<Secret>,
}

impl RelaySettings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `lookup` (a variable's value, if set).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let number = |var: &'static str, s: &str| -> Result<PhoneNumber, SettingsError> {
            s.trim()
                .parse()
                .map_err(|e| err(var, format!("{s:?} is not a phone number: {e}")))
        };
        let line_s = get("QDN_TWILIO_NUMBER").ok_or_else(|| {
            err(
                "QDN_TWILIO_NUMBER",
                "required: the business line, e.g. +16195550000",
            )
        })?;
        let line = number("QDN_TWILIO_NUMBER", &line_s)?;
        if let Some(path) = get("RELAY_POLICY") {
            let (policy, chain, ack_timeout) = policy_file(&path, line)?;
            return Self::finish(
                &get,
                line,
                chain,
                ack_timeout,
                policy,
                Some(PathBuf::from(path)),
            );
        }
        let chain_s = get("RELAY_CHAIN").ok_or_else(|| {
            err("RELAY_CHAIN", "required: comma-separated E.164 numbers, primary first, e.g. +16195550101,+18583354807")
        })?;
        let chain = chain_s
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| number("RELAY_CHAIN", s))
            .collect::<Result<Vec<_>, _>>()?;
        if chain.contains(&line) {
            return Err(err(
                "RELAY_CHAIN",
                format!("must not contain the business line {line} (it would text itself)"),
            ));
        }
        let ack_timeout = match get("RELAY_ACK_TIMEOUT") {
            None => DEFAULT_ACK_TIMEOUT,
            Some(s) => parse_duration(&s).map_err(|e| err("RELAY_ACK_TIMEOUT", e.to_string()))?,
        };
        let policy = Policy::chain(&chain, ack_timeout)
            .and_then(|p| p.with_suppress_repeats(Some(DEFAULT_SUPPRESS_REPEATS)))
            .map_err(|e| {
                let var = if matches!(e, qdn_relay_core::PolicyError::BadTimeout { .. }) {
                    "RELAY_ACK_TIMEOUT"
                } else {
                    "RELAY_CHAIN"
                };
                err(var, e.to_string())
            })?;
        Self::finish(&get, line, chain, ack_timeout, policy, None)
    }

    /// The settings every policy source shares.
    fn finish(
        get: &dyn Fn(&str) -> Option<String>,
        line: PhoneNumber,
        chain: Vec<PhoneNumber>,
        ack_timeout: Duration,
        policy: Policy,
        policy_file: Option<PathBuf>,
    ) -> Result<Self, SettingsError> {
        let http = HttpConfig {
            public_url: get("RELAY_PUBLIC_URL"),
            dashboard_token: get("RELAY_DASHBOARD_TOKEN").map(Secret::new),
            cors_origins: get("RELAY_CORS_ORIGINS")
                .map(|s| {
                    s.split(',')
                        .map(|o| o.trim().to_owned())
                        .filter(|o| !o.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            ..HttpConfig::default()
        };
        // Checked here so a bad value names its variable at start.
        crate::AppState::check_http(&http).map_err(|e| {
            let var = match e {
                crate::ConfigError::PublicUrl(_) => "RELAY_PUBLIC_URL",
                crate::ConfigError::CorsOrigin(_) => "RELAY_CORS_ORIGINS",
                crate::ConfigError::WeakToken => "RELAY_DASHBOARD_TOKEN",
            };
            err(var, e.to_string())
        })?;
        Ok(Self {
            line,
            chain,
            ack_timeout,
            policy,
            policy_file,
            http,
            dry_run: get("TWILIO_ACCOUNT_SID").is_none(),
            auth_token: get("TWILIO_AUTH_TOKEN").map(Secret::new),
            auth_token_secondary: get("TWILIO_AUTH_TOKEN_SECONDARY").map(Secret::new),
        })
    }

    /// Replaces the policy with the one in `path` (a `--policy` flag wins
    /// over the environment). Errors name `RELAY_POLICY`, the file, the
    /// line and the field.
    pub fn with_policy_file(mut self, path: &str) -> Result<Self, SettingsError> {
        let (policy, chain, ack_timeout) = policy_file(path, self.line)?;
        self.policy = policy;
        self.chain = chain;
        self.ack_timeout = ack_timeout;
        self.policy_file = Some(PathBuf::from(path));
        Ok(self)
    }

    /// The webhook signature validator, if an Auth Token is set.
    pub fn validator(&self) -> Option<SignatureValidator> {
        let mut v = SignatureValidator::new(self.auth_token.clone()?);
        if let Some(s) = &self.auth_token_secondary {
            v = v.with_secondary(s.clone());
        }
        Some(v)
    }
}

/// Reads a policy file: the policy, every target in level order, and the
/// shortest level timeout.
fn policy_file(
    path: &str,
    line: PhoneNumber,
) -> Result<(Policy, Vec<PhoneNumber>, Duration), SettingsError> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| err("RELAY_POLICY", format!("cannot read {path}: {e}")))?;
    let policy =
        Policy::from_toml(&src).map_err(|e| err("RELAY_POLICY", format!("{path}: {e}")))?;
    if policy.is_target(line) {
        return Err(err(
            "RELAY_POLICY",
            format!("{path}: a level targets the business line {line} (it would text itself)"),
        ));
    }
    let mut chain: Vec<PhoneNumber> = Vec::new();
    for l in policy.levels() {
        for t in &l.targets {
            if !chain.contains(t) {
                chain.push(*t);
            }
        }
    }
    let ack_timeout = policy
        .levels()
        .iter()
        .map(|l| l.timeout)
        .min()
        .unwrap_or(DEFAULT_ACK_TIMEOUT);
    Ok((policy, chain, ack_timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<RelaySettings, SettingsError> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        RelaySettings::from_lookup(move |k| {
            owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn minimal_settings_are_dry_run_with_the_seed_policy() {
        let s = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550101, +18583354807"),
        ])
        .expect("valid");
        assert!(s.dry_run);
        assert_eq!(s.policy.levels().len(), 2);
        assert_eq!(s.ack_timeout, DEFAULT_ACK_TIMEOUT);
        assert!(s.validator().is_none());
    }

    #[test]
    fn every_error_names_its_variable() {
        let base = [
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550101"),
        ];
        let case = |extra: (&str, &str)| {
            let mut v: Vec<(&str, &str)> = base
                .iter()
                .copied()
                .filter(|(k, _)| *k != extra.0)
                .collect();
            v.push(extra);
            with(&v).expect_err("invalid").var
        };
        assert_eq!(
            with(&base[1..]).expect_err("missing").var,
            "QDN_TWILIO_NUMBER"
        );
        assert_eq!(with(&base[..1]).expect_err("missing").var, "RELAY_CHAIN");
        assert_eq!(
            case(("QDN_TWILIO_NUMBER", "6195550000")),
            "QDN_TWILIO_NUMBER"
        );
        assert_eq!(case(("RELAY_CHAIN", "+16195550101,nope")), "RELAY_CHAIN");
        assert_eq!(case(("RELAY_CHAIN", "+16195550000")), "RELAY_CHAIN");
        assert_eq!(case(("RELAY_ACK_TIMEOUT", "soon")), "RELAY_ACK_TIMEOUT");
        assert_eq!(case(("RELAY_ACK_TIMEOUT", "0s")), "RELAY_ACK_TIMEOUT");
        assert_eq!(
            case(("RELAY_PUBLIC_URL", "relay.example.com")),
            "RELAY_PUBLIC_URL"
        );
        assert_eq!(
            case(("RELAY_CORS_ORIGINS", "https://a.com/x")),
            "RELAY_CORS_ORIGINS"
        );
        assert_eq!(
            case(("RELAY_DASHBOARD_TOKEN", "short")),
            "RELAY_DASHBOARD_TOKEN"
        );
    }

    #[test]
    fn a_policy_file_wins_over_the_chain_and_its_errors_name_line_and_field() {
        let dir = tempfile::tempdir().expect("dir");
        let good = dir.path().join("policy.toml");
        std::fs::write(
            &good,
            "time_zone = \"America/Los_Angeles\"\n[[levels]]\ntargets = [\"+16195550101\"]\ntimeout = \"5m\"\nwindows = [\"mon-fri 07:00-19:00\"]\n[[levels]]\ntargets = [\"+18583354807\"]\n",
        )
        .expect("write");
        let path = good.to_str().expect("utf-8");
        let s = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550199"),
            ("RELAY_POLICY", path),
        ])
        .expect("valid");
        assert_eq!(s.policy.levels().len(), 2);
        assert!(s.policy.hours(0).is_some());
        assert_eq!(s.chain.len(), 2);
        assert_eq!(s.ack_timeout, Duration::from_secs(300));
        // Without RELAY_CHAIN too.
        let s = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_POLICY", path),
        ])
        .expect("valid");
        assert_eq!(s.policy_file.as_deref(), Some(good.as_path()));
        // An error names the variable, the file, the line and the field.
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "[[levels]]\ntargets = [\"+16195550101\"]\ntimeout = \"soon\"\n",
        )
        .expect("write");
        let e = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_POLICY", bad.to_str().expect("utf-8")),
        ])
        .expect_err("invalid");
        assert_eq!(e.var, "RELAY_POLICY");
        assert!(e.message.contains("line 3: levels[0].timeout"), "{e}");
        let e = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550101"),
            ("RELAY_POLICY", path),
        ])
        .expect_err("targets the line");
        assert_eq!(e.var, "RELAY_POLICY");
        // The chain form suppresses repeats by default.
        let s = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550101"),
        ])
        .expect("valid");
        assert_eq!(s.policy.suppress_repeats(), Some(DEFAULT_SUPPRESS_REPEATS));
    }

    #[test]
    fn secrets_do_not_print() {
        let s = with(&[
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550101"),
            ("TWILIO_AUTH_TOKEN", "super-secret-token"),
            ("RELAY_DASHBOARD_TOKEN", "dashboard-secret-0123456789"),
        ])
        .expect("valid");
        let dbg = format!("{s:?}");
        assert!(
            !dbg.contains("super-secret-token") && !dbg.contains("dashboard-secret"),
            "{dbg}"
        );
    }
}
