//! What the store examples share: the line, a provider that sends
//! nothing, the runtime, the process's CPU time and a new customer's text.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use qdn_relay_core::{InboundText, OutboundMessage, SendError, SendReceipt, SmsProvider};

pub const LINE: &str = "+16195550000";

/// Sends nothing and answers a made-up sid at once.
pub struct NoopProvider(pub AtomicU64);

#[async_trait]
impl SmsProvider for NoopProvider {
    async fn send(&self, _msg: &OutboundMessage) -> Result<SendReceipt, SendError> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        let sid = format!("SM{n:032x}")
            .parse()
            .expect("SM and 32 hex digits is a sid");
        Ok(SendReceipt::new(sid))
    }

    fn name(&self) -> &str {
        "no-op"
    }
}

/// A multi-threaded Tokio runtime, as the server runs on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime starts")
}

/// This process's user + system CPU time, in seconds.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat is readable");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .expect("stat has a command in parentheses")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields[i]
            .parse::<f64>()
            .expect("utime and stime are numbers")
    };
    // Fields 14 and 15 of proc(5), counted after the command; 100 ticks a
    // second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Customer text `i`: its own sender and MessageSid.
pub fn text(i: u64) -> InboundText {
    InboundText {
        sid: format!("SM{:032x}", 0xc057_0000_0000_u128 + u128::from(i))
            .parse()
            .expect("SM and 32 hex digits is a sid"),
        from: format!("+1619{}", 2_000_000 + i)
            .parse()
            .expect("an E.164 number"),
        to: LINE.parse().expect("an E.164 number"),
        body: "Need a 20-yard dumpster at 100 Harbor Dr tomorrow 7am".to_owned(),
        media: Vec::new(),
    }
}
