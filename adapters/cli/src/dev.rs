//! The dev file: what a local (dry-run) server tells `inject` and `status`
//! about itself — its URL, the local signing token, the dashboard token,
//! the business line and the chain. Written with mode 0600.

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
    /// The token webhooks are signed with (a local development token unless
    /// `TWILIO_AUTH_TOKEN` was set).
    pub auth_token: String,
    /// The dashboard token, if the server has one it generated or was given.
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
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write as _;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                opts.mode(0o600);
            }
            let mut f = opts
                .open(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            f.write_all(&json)?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
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

/// A random token of 32 hex characters.
pub fn random_token() -> String {
    let mut rng = fastrand::Rng::new();
    (0..4).map(|_| format!("{:08x}", rng.u32(..))).collect()
}
