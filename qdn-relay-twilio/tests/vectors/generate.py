#!/usr/bin/env python3
"""Known-answer vectors for X-Twilio-Signature, made by Twilio's own Python
helper library (`twilio.request_validator.RequestValidator`).

Run with a venv that has `twilio` installed:

    python3 -m venv venv && venv/bin/pip install twilio
    venv/bin/python qdn-relay-twilio/tests/vectors/generate.py

It rewrites `signatures.json` beside this file. Every vector is checked
here first: Twilio's validator accepts it as the server sees it, and
rejects it once the body is changed.

Fields of a vector:
- name: what it covers
- kind: "form" (x-www-form-urlencoded) or "json" (bodySHA256 in the URL)
- token: the Auth Token
- algorithm: HMAC_SHA1 or HMAC_SHA256
- signed_url: the URL Twilio signed (informational)
- url: the URL the server sees and validates against
- body: the raw request body
- params: the decoded form parameters, in body order (form only)
- signature: the X-Twilio-Signature header
"""

import hashlib
import json
import os
import sys
from urllib.parse import parse_qsl, quote, urlencode

import twilio
from twilio.request_validator import RequestValidator

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "d5b8c0f4a7e2419db3a6f1c9e8d7b2a4"
AC = "AC0123456789abcdef0123456789abcdef"
SM = "SM7c1a0e5e9b3f4d2a8c6b1f0e9d8c7b6a"


class MultiDict:
    """The smallest multi-valued mapping RequestValidator accepts (it calls
    `getall`, as for Flask's/werkzeug's MultiDict)."""

    def __init__(self, pairs):
        self.pairs = list(pairs)

    def __iter__(self):
        return iter(k for k, _ in self.pairs)

    def __bool__(self):
        return bool(self.pairs)

    def getall(self, name):
        return [v for k, v in self.pairs if k == name]


def inbound(**extra):
    fields = {
        "ToCountry": "US",
        "ToState": "CA",
        "SmsMessageSid": SM,
        "NumMedia": "0",
        "ToCity": "SAN DIEGO",
        "FromZip": "92101",
        "SmsSid": SM,
        "FromState": "CA",
        "SmsStatus": "received",
        "FromCity": "SAN DIEGO",
        "Body": "Flat tire on I-5",
        "FromCountry": "US",
        "To": "+18583354807",
        "ToZip": "92109",
        "NumSegments": "1",
        "MessageSid": SM,
        "AccountSid": AC,
        "From": "+16195550100",
        "ApiVersion": "2010-04-01",
    }
    fields.update(extra)
    return list(fields.items())


vectors = []


def form(name, signed_url, pairs, url=None, quote_via=None, token=TOKEN, algorithm="HMAC_SHA1"):
    url = url or signed_url
    if quote_via is None:
        body = urlencode(pairs)
    else:
        body = urlencode(pairs, quote_via=quote_via)
    # What a server decodes from the body, as Twilio's validator expects it.
    params = parse_qsl(body, keep_blank_values=True)
    assert params == [(k, v) for k, v in pairs], (name, params)
    v = RequestValidator(token)
    sig = v.compute_signature(signed_url, MultiDict(params), algorithm)
    assert v.validate(url, MultiDict(params), sig, algorithm), name
    if params:
        changed = [(k, v2 + "x") for k, v2 in params]
        assert not v.validate(url, MultiDict(changed), sig, algorithm), name
    vectors.append(
        {
            "name": name,
            "kind": "form",
            "token": token,
            "algorithm": algorithm,
            "signed_url": signed_url,
            "url": url,
            "body": body,
            "params": [[k, v2] for k, v2 in params],
            "signature": sig,
        }
    )


def json_body(name, base_url, body, url_port_variant=None, token=TOKEN):
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    sep = "&" if "?" in base_url else "?"
    signed_url = f"{base_url}{sep}bodySHA256={digest}"
    url = signed_url if url_port_variant is None else url_port_variant(signed_url)
    v = RequestValidator(token)
    sig = v.compute_signature(signed_url, {})
    assert v.validate(url, body, sig), name
    assert not v.validate(url, body + " ", sig), name
    vectors.append(
        {
            "name": name,
            "kind": "json",
            "token": token,
            "algorithm": "HMAC_SHA1",
            "signed_url": signed_url,
            "url": url,
            "body": body,
            "params": [],
            "signature": sig,
        }
    )


BASE = "https://relay.example.com/sms/inbound"

form("twilio docs example", "https://mycompany.com/myapp.php?foo=1&bar=2",
     [("CallSid", "CA1234567890ABCDE"), ("Caller", "+12349013030"), ("Digits", "1234"),
      ("From", "+12349013030"), ("To", "+18005551212")], token="12345")
form("inbound message, every field Twilio sends", BASE, inbound())
form("body with & = + and spaces", BASE,
     inbound(Body="a&b=c + d  e&&==++ 100% sure?"))
form("body with non-ASCII", BASE,
     inbound(Body="Señor, la grúa está en camino. 中文 Ελληνικά ß"))
form("body with emoji", BASE,
     inbound(Body="On my way 🚗💨 👍🏽 👨‍👩‍👧"))
form("body with newlines and tabs", BASE,
     inbound(Body="line 1\nline 2\r\n\ttabbed"))
form("spaces encoded as %20 instead of +", BASE,
     inbound(Body="a b + c"), quote_via=quote)
form("query string in the URL", BASE + "?line=main&note=a%20b&x=1+2",
     inbound())
form("non-default port, signed with it", "https://relay.example.com:8443/sms/inbound",
     inbound())
form("non-default port, signed without it",
     "https://relay.example.com/sms/inbound",
     inbound(), url="https://relay.example.com:8443/sms/inbound")
form("default https port present in the server URL, absent when signed",
     BASE, inbound(), url="https://relay.example.com:443/sms/inbound")
form("default https port absent in the server URL, present when signed",
     "https://relay.example.com:443/sms/inbound", inbound(), url=BASE)
form("default http port present in the server URL, absent when signed",
     "http://127.0.0.1/sms/status", [("MessageSid", SM), ("MessageStatus", "delivered")],
     url="http://127.0.0.1:80/sms/status")
form("default http port absent in the server URL, present when signed",
     "http://127.0.0.1:80/sms/status", [("MessageSid", SM), ("MessageStatus", "delivered")],
     url="http://127.0.0.1/sms/status")
form("query string and default port", "https://relay.example.com:443/sms/inbound?stage=prod",
     inbound(), url="https://relay.example.com/sms/inbound?stage=prod")
form("repeated keys, values out of order", BASE,
     [("MediaUrl", "https://b.example/2"), ("Body", "two pictures"),
      ("MediaUrl", "https://a.example/1"), ("MediaUrl", "https://c.example/0")])
form("repeated keys with an identical pair", BASE,
     [("Tag", "b"), ("Tag", "a"), ("Tag", "b"), ("Body", "dup")])
form("empty values", BASE, [("Body", ""), ("MediaUrl0", ""), ("From", "+16195550100")])
form("empty body", BASE, [])
form("empty body, default port added", BASE, [], url="https://relay.example.com:443/sms/inbound")
form("status callback", "https://relay.example.com/sms/status",
     [("SmsSid", SM), ("SmsStatus", "undelivered"), ("MessageStatus", "undelivered"),
      ("To", "+16195550100"), ("MessageSid", SM), ("AccountSid", AC),
      ("From", "+18583354807"), ("ApiVersion", "2010-04-01"), ("ErrorCode", "30003")])
form("HMAC-SHA256 signature (shared key)", BASE, inbound(), token="shared-key-secret",
     algorithm="HMAC_SHA256")

json_body("JSON body with bodySHA256", "https://relay.example.com/sms/reply",
          json.dumps({"dispatch": "K7", "body": "On my way & 10 min 🚗"}, ensure_ascii=False))
json_body("JSON body, URL with a query string", "https://relay.example.com/sms/reply?src=dash",
          '{"body":"a=b&c"}')
json_body("JSON body, default port added by the server", "https://relay.example.com/sms/reply",
          '{"ack":true}',
          url_port_variant=lambda u: u.replace("relay.example.com/", "relay.example.com:443/"))
json_body("JSON body, empty object", "https://relay.example.com:8443/sms/reply", "{}")

out = {
    "generator": "tests/vectors/generate.py",
    "twilio_python_version": twilio.__version__,
    "vectors": vectors,
}
path = os.path.join(HERE, "signatures.json")
with open(path, "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, indent=2)
    f.write("\n")
print(f"wrote {len(vectors)} vectors to {path}", file=sys.stderr)
