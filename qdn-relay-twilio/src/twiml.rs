//! TwiML answers to Twilio's webhooks.

use qdn_relay_core::fit_body;

const XML_DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// The empty TwiML answer: Twilio does nothing more with the message.
/// Served as `text/xml` (or `application/xml`).
///
/// ```
/// assert_eq!(
///     qdn_relay_twilio::twiml_empty(),
///     r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#
/// );
/// ```
pub fn twiml_empty() -> String {
    format!("{XML_DECL}<Response/>")
}

/// A TwiML answer that texts `body` back to the sender.
///
/// The body is cut to Twilio's 1,600 characters with
/// [`qdn_relay_core::fit_body`], XML-escaped (`&`, `<`, `>`, `"`, `'`),
/// and characters XML 1.0 cannot carry (control characters other than tab,
/// line feed and carriage return) are dropped.
///
/// ```
/// assert_eq!(
///     qdn_relay_twilio::twiml_message("Got it <3 & thanks"),
///     r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message>Got it &lt;3 &amp; thanks</Message></Response>"#
/// );
/// ```
pub fn twiml_message(body: &str) -> String {
    let body = fit_body(body);
    let mut out = String::with_capacity(body.len() + 80);
    out.push_str(XML_DECL);
    out.push_str("<Response><Message>");
    xml_escape_into(&body, &mut out);
    out.push_str("</Message></Response>");
    out
}

fn xml_escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_drops_what_xml_cannot_hold() {
        let t = twiml_message("a\"b'c>d\u{0}e\u{1b}f\ng\u{FFFF} é 😀");
        assert_eq!(
            t,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>\
             a&quot;b&apos;c&gt;def\ng é 😀</Message></Response>"
        );
    }

    #[test]
    fn long_bodies_are_cut_to_1600_chars() {
        let t = twiml_message(&"é".repeat(2000));
        let inner = t
            .strip_prefix(XML_DECL)
            .and_then(|t| t.strip_prefix("<Response><Message>"))
            .and_then(|t| t.strip_suffix("</Message></Response>"))
            .unwrap();
        assert_eq!(inner.chars().count(), 1600);
        assert!(inner.ends_with("..."));
    }
}
