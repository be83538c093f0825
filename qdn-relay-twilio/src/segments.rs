//! How many SMS segments a body takes, and in which encoding.

/// How a body is encoded on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// The GSM 03.38 7-bit default alphabet (with its extension table):
    /// 160 septets in one segment, 153 per segment when split.
    Gsm7,
    /// UCS-2 (UTF-16): 70 code units in one segment, 67 per segment when
    /// split. Used as soon as one character is not in GSM-7.
    Ucs2,
}

/// The segment count of a body. See [`segments`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentInfo {
    /// The encoding the body needs.
    pub encoding: Encoding,
    /// How many segments it is sent in (at least 1: an empty body is one
    /// empty segment).
    pub segments: usize,
    /// Its length in characters (Unicode scalar values), the unit of
    /// Twilio's 1,600-character limit.
    pub chars: usize,
    /// Its length in the encoding's units: septets for GSM-7 (an extension
    /// character counts 2), UTF-16 code units for UCS-2.
    pub units: usize,
}

/// GSM 03.38 basic character set (escape excluded).
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// GSM 03.38 extension table: each takes an escape septet and its own.
const GSM_EXTENSION: &str = "\u{000C}^{}\\[~]|€";

/// Septets a character takes in GSM-7, or `None` if it is not in GSM-7.
pub fn gsm7_septets(c: char) -> Option<usize> {
    if GSM_BASIC.contains(c) {
        Some(1)
    } else if GSM_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// Packs characters of `cost` units into segments of `per_segment` units
/// without splitting a character (an escape sequence or a surrogate pair)
/// across two segments.
fn pack(costs: impl Iterator<Item = usize>, per_segment: usize) -> usize {
    let mut segments = 1;
    let mut used = 0;
    for c in costs {
        if used + c > per_segment {
            segments += 1;
            used = 0;
        }
        used += c;
    }
    segments
}

/// The encoding, segment count and length of an SMS body, as carriers
/// split it: GSM-7 if every character is in the GSM 03.38 alphabet or its
/// extension table (extension characters count 2 septets), else UCS-2
/// counting UTF-16 code units. One segment holds 160 septets or 70 code
/// units; a split message 153 or 67 per segment (the rest is the
/// concatenation header), and a character is never split across segments.
///
/// Twilio's "smart encoding" (replacing curly quotes and the like with GSM
/// characters) is not applied: this counts the body as given.
///
/// ```
/// use qdn_relay_twilio::{segments, Encoding};
/// let s = segments("On my way");
/// assert_eq!((s.encoding, s.segments), (Encoding::Gsm7, 1));
/// let s = segments(&"x".repeat(161));
/// assert_eq!(s.segments, 2);
/// let s = segments("On my way 🚗");
/// assert_eq!((s.encoding, s.units), (Encoding::Ucs2, 12));
/// ```
pub fn segments(body: &str) -> SegmentInfo {
    let chars = body.chars().count();
    let gsm: Option<Vec<usize>> = body.chars().map(gsm7_septets).collect();
    let (encoding, costs, single, multi) = match gsm {
        Some(costs) => (Encoding::Gsm7, costs, 160, 153),
        None => (
            Encoding::Ucs2,
            body.chars().map(char::len_utf16).collect(),
            70,
            67,
        ),
    };
    let units: usize = costs.iter().sum();
    let segments = if units <= single {
        1
    } else {
        pack(costs.into_iter(), multi)
    };
    SegmentInfo {
        encoding,
        segments,
        chars,
        units,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_limits() {
        let s = segments("");
        assert_eq!(
            (s.encoding, s.segments, s.chars, s.units),
            (Encoding::Gsm7, 1, 0, 0)
        );
        assert_eq!(segments(&"a".repeat(160)).segments, 1);
        assert_eq!(segments(&"a".repeat(161)).segments, 2);
        assert_eq!(segments(&"a".repeat(306)).segments, 2);
        assert_eq!(segments(&"a".repeat(307)).segments, 3);
        assert_eq!(segments(&"a".repeat(1530)).segments, 10);
        let all_basic = segments(GSM_BASIC);
        assert_eq!(all_basic.encoding, Encoding::Gsm7);
        assert_eq!(all_basic.units, GSM_BASIC.chars().count());
        assert_eq!(GSM_BASIC.chars().count(), 127);
    }

    #[test]
    fn extension_characters_count_two() {
        let s = segments("€");
        assert_eq!((s.encoding, s.chars, s.units), (Encoding::Gsm7, 1, 2));
        assert_eq!(segments(&"€".repeat(80)).segments, 1);
        assert_eq!(segments(&"€".repeat(81)).segments, 2);
        // 152 septets then one escape sequence: it does not fit the first
        // segment's last septet, so it starts the second.
        let body = format!("{}{}{}", "a".repeat(152), "{", "a".repeat(10));
        let s = segments(&body);
        assert_eq!(s.units, 164);
        assert_eq!(s.segments, 2);
        let body = format!("{}{}", "a".repeat(152), "{".repeat(77));
        assert_eq!(segments(&body).units, 306);
        assert_eq!(segments(&body).segments, 3);
    }

    #[test]
    fn ucs2_counts_utf16_units() {
        // é and Ç are in GSM-7, ç is not.
        assert_eq!(segments("é Ç").encoding, Encoding::Gsm7);
        assert_eq!(segments("é ç").encoding, Encoding::Ucs2);
        assert_eq!(segments(&"ж".repeat(70)).segments, 1);
        assert_eq!(segments(&"ж".repeat(71)).segments, 2);
        assert_eq!(segments(&"ж".repeat(134)).segments, 2);
        assert_eq!(segments(&"ж".repeat(135)).segments, 3);
        let s = segments(&"😀".repeat(35));
        assert_eq!((s.chars, s.units, s.segments), (35, 70, 1));
        // 66 units then a surrogate pair: the pair moves to segment 2.
        let body = format!("{}😀", "ж".repeat(66));
        let s = segments(&format!("{body}{}", "ж".repeat(10)));
        assert_eq!(s.units, 78);
        assert_eq!(s.segments, 2);
        let body = format!("{}{}", "ж".repeat(66), "😀".repeat(34));
        assert_eq!(segments(&body).units, 134);
        assert_eq!(segments(&body).segments, 3);
    }
}
