//! Shared pieces of the client tests.

use std::io;
use std::sync::{Arc, Mutex};

use qdn_relay_twilio::{Credentials, Secret, TwilioClient, TwilioConfig};

pub use qdn_relay_twilio::testing::{
    AC, MESSAGES_PATH, SID, TOKEN, config, created, message, twilio_error,
};

pub const SK: &str = "SK00112233445566778899aabbccddeeff";
pub const MG: &str = "MG0123456789abcdef0123456789abcdef";
pub const API_SECRET: &str = "apisecret-9f8e7d6c5b4a39281706f5e4";

pub fn api_key_config(base: &str) -> TwilioConfig {
    let mut c = config(base);
    c.credentials = Credentials::ApiKey {
        key: SK.parse().expect("valid key sid"),
        secret: Secret::new(API_SECRET),
    };
    c
}

pub fn client(c: TwilioConfig) -> TwilioClient {
    TwilioClient::new(c).expect("valid config")
}

/// Asserts `text` shows neither secret (nor the basic-auth credentials
/// built from them).
pub fn assert_no_secret(what: &str, text: &str) {
    use base64::Engine as _;
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    for secret in [
        TOKEN.to_owned(),
        API_SECRET.to_owned(),
        b64(format!("{AC}:{TOKEN}")),
        b64(format!("{SK}:{API_SECRET}")),
    ] {
        assert!(!text.contains(&secret), "{what} contains a secret: {text}");
    }
}

/// Captures everything `tracing` logs, at every level, on this thread.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let sink = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
    }
}

impl io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
