//! The dev file: what a local (dry-run) server tells `inject` and `status`
//! about itself — its URL, the local signing token, the dashboard token,
//! the business line and the chain. Written with mode 0600 through a
//! temporary file created exclusively (nothing planted at a name is
//! followed). It holds only tokens `serve` made for development: a real
//! `TWILIO_AUTH_TOKEN` or a configured `RELAY_DASHBOARD_TOKEN` is never
//! written to it.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Where `serve` writes it and `inject` / `status` look for it by default.
pub const DEFAULT_DEV_FILE: &str = ".qdn-relay-dev.json";

/// The dev file's contents.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct DevFile {
    /// The server's base URL.
    pub url: String,
    /// The local development token webhooks are signed with; `None` when
    /// the server checks them with `TWILIO_AUTH_TOKEN` (then `inject` takes
    /// it from the environment too).
    pub auth_token: Option<String>,
    /// The dashboard token the server generated, if it did.
    pub dashboard_token: Option<String>,
    /// The business line.
    pub line: String,
    /// The escalation chain, primary first.
    pub chain: Vec<String>,
    /// The public URL Twilio signs against, if set.
    pub public_url: Option<String>,
}

impl DevFile {
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", random_token()));
        let written = (|| -> anyhow::Result<()> {
            use std::io::Write as _;
            let mut opts = std::fs::OpenOptions::new();
            // create_new: fails on anything already at the name (a symlink
            // included) instead of following it.
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                opts.mode(0o600);
            }
            let mut f = opts
                .open(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    pub fn read(path: &Path) -> anyhow::Result<Option<DevFile>> {
        match std::fs::read(path) {
            Ok(b) => {
                Ok(Some(serde_json::from_slice(&b).with_context(|| {
                    format!("{} is not a dev file", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

/// A random token of 32 hex characters from the operating system's random
/// source.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    // The OS source failing is not something to run on without: a
    // predictable token would let anyone sign webhooks.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> DevFile {
        DevFile {
            url: "http://127.0.0.1:8080".into(),
            auth_token: Some(random_token()),
            dashboard_token: None,
            line: "+16195550000".into(),
            chain: vec!["+16195550101".into()],
            public_url: None,
        }
    }

    #[test]
    fn tokens_are_32_hex_characters_and_differ() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[cfg(unix)]
    #[test]
    fn written_0600_and_a_planted_symlink_is_replaced_not_followed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(DEFAULT_DEV_FILE);
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").expect("victim");
        std::os::unix::fs::symlink(&victim, &path).expect("symlink");
        file().write(&path).expect("write");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep me");
        let meta = std::fs::symlink_metadata(&path).expect("meta");
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let back = DevFile::read(&path).expect("read").expect("some");
        assert_eq!(back.line, "+16195550000");
        assert!(back.auth_token.is_some_and(|t| t.len() == 32));
        let leftovers = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0);
    }
}
