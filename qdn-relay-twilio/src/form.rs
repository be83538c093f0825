//! `application/x-www-form-urlencoded` bodies, as Twilio posts them.

/// A decoded form body: every `name=value` pair in the order it came,
/// repeated names included.
///
/// Decoding follows the URL Standard (`+` is a space, `%XX` a byte; bytes
/// that are not UTF-8 become U+FFFD, as in every web framework). The pairs
/// are exactly what [`crate::SignatureValidator::validate_form`] needs.
///
/// ```
/// use qdn_relay_twilio::Form;
/// let f = Form::parse(b"Body=a+b%26c&MediaUrl0=x&MediaUrl0=y");
/// assert_eq!(f.get("Body"), Some("a b&c"));
/// assert_eq!(f.get_all("MediaUrl0").collect::<Vec<_>>(), ["x", "y"]);
/// assert_eq!(f.len(), 3);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// Decodes a form body.
    pub fn parse(body: &[u8]) -> Self {
        Self {
            pairs: form_urlencoded::parse(body).into_owned().collect(),
        }
    }

    /// A form made of these pairs (already decoded).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            pairs: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The pairs, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The pairs, in order, by value.
    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.pairs
    }

    /// How many pairs there are.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Appends a pair.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.pairs.push((name.into(), value.into()));
    }

    /// Encodes the pairs as a form body (spaces as `+`, as Twilio sends
    /// them).
    pub fn encode(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.pairs {
            s.append_pair(k, v);
        }
        s.finish()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Form {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_pairs(iter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_repeats_and_empty_values() {
        let f = Form::parse(b"b=2&a=1&b=3&empty=&novalue&&c=%E2%9C%93+%2B");
        assert_eq!(
            f.pairs(),
            [
                ("b".into(), "2".into()),
                ("a".into(), "1".into()),
                ("b".into(), "3".into()),
                ("empty".into(), String::new()),
                ("novalue".into(), String::new()),
                ("c".into(), "✓ +".into()),
            ]
        );
        assert_eq!(f.get("b"), Some("2"));
        assert_eq!(f.get("missing"), None);
    }

    #[test]
    fn encode_round_trips() {
        let f = Form::from_pairs([("Body", "a&b=c + d é 😀"), ("To", "+1555")]);
        assert_eq!(Form::parse(f.encode().as_bytes()), f);
        assert!(f.encode().starts_with("Body=a%26b%3Dc+%2B+d"));
    }

    #[test]
    fn invalid_utf8_becomes_replacement_chars() {
        let f = Form::parse(b"x=%FF");
        assert_eq!(f.get("x"), Some("\u{FFFD}"));
    }
}
