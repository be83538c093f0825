//! The texts the relay writes: the forward's header (`[QDN #K7]
//! +16195550100`), the forward of one or several customer texts, media as
//! links. Written into one pre-sized buffer each (no `format!` on the
//! forward's path) and fitted to the body limit.

use super::Dispatch;
use crate::input::{Media, fit_body};
use crate::record::ThreadEntry;

impl Dispatch {
    /// Writes `[QDN #K7] +16195550100` into `out` (no `format!`: this is on
    /// every forward's path).
    pub(super) fn push_header(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.push('[');
        out.push_str(self.policy.label());
        out.push_str(" #");
        let _ = write!(out, "{}", self.tag);
        out.push_str("] +");
        out.push_str(itoa_u64(self.customer.as_u64()).as_str());
    }

    pub(super) fn forward_text(&self, body: &str, media: &[Media]) -> String {
        let media_len: usize = media.iter().map(|m| m.url.len() + 1).sum();
        let mut out =
            String::with_capacity(40 + self.policy.label().len() + body.len() + media_len + 10);
        self.push_header(&mut out);
        out.push_str(": ");
        if body.trim().is_empty() && media.is_empty() {
            out.push_str("(no text)");
        } else {
            push_with_media(&mut out, body, media);
        }
        fit_owned(out)
    }

    /// What an escalation step sends: every customer text so far.
    pub(super) fn escalation_body(&self) -> String {
        let texts: Vec<&ThreadEntry> = self
            .thread
            .iter()
            .filter(|e| self.is_customer_text(e))
            .collect();
        // Texts that moved out of the record are counted, not repeated.
        let moved = self.history().customer_texts as usize;
        match (texts.as_slice(), moved) {
            ([one], 0) => self.forward_text(&one.body, &one.media),
            (many, _) => {
                let mut out = String::with_capacity(
                    64 + many.iter().map(|e| e.body.len() + 3).sum::<usize>(),
                );
                self.push_header(&mut out);
                if moved == 0 {
                    out.push_str(&format!(" ({} texts): ", many.len()));
                } else {
                    out.push_str(&format!(
                        " ({} texts; the last {}): ",
                        many.len() + moved,
                        many.len()
                    ));
                }
                for (i, e) in many.iter().enumerate() {
                    if i > 0 {
                        out.push_str(" / ");
                    }
                    push_with_media(&mut out, &e.body, &e.media);
                }
                fit_owned(out)
            }
        }
    }
}

pub(super) fn with_media(body: &str, media: &[Media]) -> String {
    let mut out = String::with_capacity(
        body.len() + media.iter().map(|m| m.url.len() + 1).sum::<usize>() + 10,
    );
    push_with_media(&mut out, body, media);
    out
}

/// Appends `body`, then `[media: url url]` if there is media.
fn push_with_media(out: &mut String, body: &str, media: &[Media]) {
    let has_body = !body.trim().is_empty();
    if has_body || media.is_empty() {
        out.push_str(body);
    }
    if media.is_empty() {
        return;
    }
    out.push_str(if has_body { " [media:" } else { "[media:" });
    for m in media {
        out.push(' ');
        out.push_str(&m.url);
    }
    out.push(']');
}

/// Fits an owned body within [`crate::MAX_BODY_CHARS`] without copying it
/// when it already fits (bytes ≥ characters).
fn fit_owned(s: String) -> String {
    if s.len() <= crate::MAX_BODY_CHARS {
        s
    } else {
        fit_body(&s)
    }
}

/// A `u64` in decimal, on the stack.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    pub(super) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).unwrap_or("")
    }
}

fn itoa_u64(mut n: u64) -> Digits {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    Digits { buf, start: i }
}
