//! X-Twilio-Signature against the known answers of Twilio's Python helper
//! library, and one-byte changes that must fail.

use qdn_relay_twilio::{Algorithm, Form, Payload, Secret, SignatureError, SignatureValidator};
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    twilio_python_version: String,
    vectors: Vec<Vector>,
}

#[derive(Deserialize, Clone)]
struct Vector {
    name: String,
    kind: String,
    token: String,
    signed_url: String,
    algorithm: String,
    url: String,
    body: String,
    params: Vec<(String, String)>,
    signature: String,
}

fn vectors() -> Vec<Vector> {
    let file: File = serde_json::from_str(include_str!("../vectors/signatures.json"))
        .expect("tests/vectors/signatures.json is valid");
    assert!(!file.twilio_python_version.is_empty());
    assert!(file.vectors.len() >= 20, "{} vectors", file.vectors.len());
    file.vectors
}

impl Vector {
    fn algorithm(&self) -> Algorithm {
        Algorithm::from_settings_header(Some(&format!("key=k,algorithm={}", self.algorithm)))
            .expect("known algorithm")
    }

    /// Validates as a server does: parse the raw body (form) or hash it
    /// (JSON), then check the signature.
    fn check(
        &self,
        v: &SignatureValidator,
        url: &str,
        body: &[u8],
        sig: &str,
    ) -> Result<(), SignatureError> {
        match self.kind.as_str() {
            "form" => {
                let form = Form::parse(body);
                v.validate(
                    self.algorithm(),
                    url,
                    Payload::Form(form.pairs()),
                    Some(sig),
                )
            }
            "json" => v.validate(self.algorithm(), url, Payload::Body(body), Some(sig)),
            k => panic!("unknown kind {k}"),
        }
    }

    fn validator(&self) -> SignatureValidator {
        SignatureValidator::new(Secret::new(self.token.clone()))
    }
}

/// Changes one ASCII letter or digit to another of its kind.
fn bump(b: u8) -> Option<u8> {
    match b {
        b'a'..=b'y' | b'A'..=b'Y' | b'0'..=b'8' => Some(b + 1),
        b'z' => Some(b'a'),
        b'Z' => Some(b'A'),
        b'9' => Some(b'0'),
        _ => None,
    }
}

/// The byte range of the URL's port digits, if it has a port.
fn port_span(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://")? + 3;
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let colon = url[start..end].rfind(':')? + start;
    Some(colon + 1..end)
}

#[test]
fn every_vector_validates() {
    for vec in vectors() {
        let v = vec.validator();
        if vec.kind == "form" {
            assert_eq!(
                Form::parse(vec.body.as_bytes()).into_pairs(),
                vec.params,
                "{}: the body decodes to the params Twilio signed",
                vec.name
            );
        }
        assert_eq!(
            vec.check(&v, &vec.url, vec.body.as_bytes(), &vec.signature),
            Ok(()),
            "{}",
            vec.name
        );
    }
}

#[test]
fn form_params_validate_in_any_order() {
    for vec in vectors().into_iter().filter(|v| v.kind == "form") {
        let mut params = vec.params.clone();
        params.reverse();
        let r = vec.validator().validate(
            vec.algorithm(),
            &vec.url,
            Payload::Form(&params),
            Some(&vec.signature),
        );
        assert_eq!(r, Ok(()), "{}", vec.name);
    }
}

#[test]
fn changing_one_byte_of_the_url_fails() {
    for vec in vectors() {
        let v = vec.validator();
        let url = vec.url.as_bytes();
        // When Twilio signed the URL without the port the server sees, the
        // port is not covered (Twilio's libraries try the URL without it).
        let port = port_span(&vec.url).filter(|_| port_span(&vec.signed_url).is_none());
        let mut tried = 0;
        for i in 0..url.len() {
            if port.as_ref().is_some_and(|p| p.contains(&i)) {
                continue;
            }
            let Some(b) = bump(url[i]) else { continue };
            let mut changed = url.to_vec();
            changed[i] = b;
            let changed = String::from_utf8(changed).expect("ASCII change");
            let r = vec.check(&v, &changed, vec.body.as_bytes(), &vec.signature);
            assert!(r.is_err(), "{}: URL {changed} validated", vec.name);
            tried += 1;
        }
        assert!(tried > 10, "{}", vec.name);
    }
}

#[test]
fn changing_one_byte_of_the_body_fails() {
    for vec in vectors() {
        let v = vec.validator();
        let body = vec.body.as_bytes();
        for i in 0..body.len() {
            let Some(b) = bump(body[i]) else { continue };
            let mut changed = body.to_vec();
            changed[i] = b;
            let r = vec.check(&v, &vec.url, &changed, &vec.signature);
            assert!(r.is_err(), "{}: body byte {i} changed validated", vec.name);
            if vec.kind == "json" {
                assert_eq!(r, Err(SignatureError::BodyHashMismatch), "{}", vec.name);
            }
        }
        // One more byte, at the end, too.
        let mut longer = body.to_vec();
        longer.extend_from_slice(if vec.kind == "form" { b"&x=1" } else { b" " });
        assert!(
            vec.check(&v, &vec.url, &longer, &vec.signature).is_err(),
            "{}",
            vec.name
        );
    }
}

#[test]
fn changing_a_param_name_or_value_fails() {
    for vec in vectors().into_iter().filter(|v| v.kind == "form") {
        let v = vec.validator();
        for i in 0..vec.params.len() {
            for which in [0, 1] {
                let mut params = vec.params.clone();
                let s = if which == 0 {
                    &mut params[i].0
                } else {
                    &mut params[i].1
                };
                match s.pop() {
                    Some(c) if c != 'x' => s.push('x'),
                    Some(_) => s.push('y'),
                    None => s.push('x'),
                }
                let r = v.validate(
                    vec.algorithm(),
                    &vec.url,
                    Payload::Form(&params),
                    Some(&vec.signature),
                );
                assert_eq!(
                    r,
                    Err(SignatureError::Mismatch),
                    "{}: param {i} {} changed",
                    vec.name,
                    ["name", "value"][which]
                );
            }
        }
        // Dropping a parameter fails too. (Dropping one of two identical
        // pairs does not: Twilio's Python library counts them once.)
        if let Some((_, params)) = vec.params.split_last() {
            let r = v.validate(
                vec.algorithm(),
                &vec.url,
                Payload::Form(params),
                Some(&vec.signature),
            );
            assert_eq!(r, Err(SignatureError::Mismatch), "{}", vec.name);
        }
    }
}

#[test]
fn changing_the_signature_fails() {
    for vec in vectors() {
        let v = vec.validator();
        let sig = vec.signature.as_bytes();
        for i in 0..sig.len() {
            let Some(b) = bump(sig[i]) else { continue };
            let mut changed = sig.to_vec();
            changed[i] = b;
            let changed = String::from_utf8(changed).expect("ASCII");
            assert_eq!(
                vec.check(&v, &vec.url, vec.body.as_bytes(), &changed),
                Err(SignatureError::Mismatch),
                "{}",
                vec.name
            );
        }
        assert!(
            vec.check(&v, &vec.url, vec.body.as_bytes(), &vec.signature[1..])
                .is_err()
        );
    }
}

#[test]
fn secondary_token_validates_when_the_primary_is_wrong() {
    for vec in vectors() {
        let wrong = Secret::new("0000000000000000000000000000000f");
        let only_wrong = SignatureValidator::new(wrong.clone());
        assert_eq!(
            vec.check(&only_wrong, &vec.url, vec.body.as_bytes(), &vec.signature),
            Err(SignatureError::Mismatch),
            "{}",
            vec.name
        );
        let rotating =
            SignatureValidator::new(wrong).with_secondary(Secret::new(vec.token.clone()));
        assert_eq!(
            vec.check(&rotating, &vec.url, vec.body.as_bytes(), &vec.signature),
            Ok(()),
            "{}",
            vec.name
        );
        // And the other way round: the new token as primary, the old one
        // still accepted as secondary.
        let other = SignatureValidator::new(Secret::new(vec.token.clone()))
            .with_secondary(Secret::new("0000000000000000000000000000000f"));
        assert_eq!(
            vec.check(&other, &vec.url, vec.body.as_bytes(), &vec.signature),
            Ok(()),
            "{}",
            vec.name
        );
    }
}

#[test]
fn sha256_vectors_do_not_validate_as_sha1() {
    let mut seen = 0;
    for vec in vectors()
        .into_iter()
        .filter(|v| v.algorithm == "HMAC_SHA256")
    {
        let form = Form::parse(vec.body.as_bytes());
        let r = vec
            .validator()
            .validate_form(&vec.url, form.pairs(), Some(&vec.signature));
        assert_eq!(r, Err(SignatureError::Mismatch), "{}", vec.name);
        seen += 1;
    }
    assert!(seen > 0);
}

#[test]
fn signing_reproduces_the_vectors() {
    // The validator's own signer (used to post test webhooks) agrees with
    // Twilio's library for URLs signed as the server sees them.
    for vec in vectors()
        .into_iter()
        .filter(|v| v.kind == "form" && v.algorithm == "HMAC_SHA1")
    {
        let v = vec.validator();
        let params = Form::parse(vec.body.as_bytes());
        let signed = v.sign_form(&vec.url, params.pairs());
        assert_eq!(
            v.validate_form(&vec.url, params.pairs(), Some(&signed)),
            Ok(()),
            "{}",
            vec.name
        );
    }
}

#[test]
fn the_validator_never_shows_its_tokens() {
    let v = SignatureValidator::new(Secret::new("primary-t0ken"))
        .with_secondary(Secret::new("secondary-t0ken"));
    let shown = format!("{v:?}");
    assert!(!shown.contains("t0ken"), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
}
