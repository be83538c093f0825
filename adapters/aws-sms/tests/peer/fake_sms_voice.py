"""A fake AWS End User Messaging SMS endpoint (API pinpoint-sms-voice-v2) for
qdn-relay-aws-sms's integration tests.

Every request is checked against the service model botocore ships, with
botocore's own code:

- the JSON 1.0 protocol: POST /, Content-Type application/x-amz-json-1.0,
  X-Amz-Target PinpointSMSVoiceV2.<operation> (SendTextMessage only);
- SigV4: the Authorization header's shape, its credential scope (service
  sms-voice, the region, X-Amz-Date's day), and, for credentials a test
  registered, the signature itself, recomputed with botocore.auth.SigV4Auth
  over the headers the request says it signed;
- the body against the operation's input shape: botocore's ParamValidator
  (types, required members, unknown members, minimums), then the model's
  maximums, patterns and enums, which ParamValidator leaves out.

A valid send is recorded and answered with the output shape (a MessageId),
itself validated against the output shape. Error answers are built from the
operation's error shapes and validated against them before they are sent.

Control endpoints, under /_peer/ (loopback only, no auth):

- GET  /_peer/health
- POST /_peer/credentials {"access_key": ..., "secret_key": ...}: verify the
  signatures made with this key;
- POST /_peer/faults {"destination": "+1...", "error": "ThrottlingException",
  "reason": ..., "fields": [...], "resource_type": ..., "resource_id": ...,
  "message": ..., "status": 400, "body": "<raw answer instead>",
  "delay": seconds, "times": n}: how to answer sends to that destination
  (the first n of them, or all). "{token}" in a message is replaced by the
  request's session token (to test that clients scrub it). A fault with
  only a delay answers normally, late: the send is recorded (it was made);
- GET  /_peer/requests?destination=+1...: the valid requests to that
  destination, in order, with what they were answered;
- GET  /_peer/rejected: requests refused for their protocol, signature or
  body, with why.

Sends are keyed by destination so that parallel tests, each with destinations
of its own, share one server.

Usage: fake_sms_voice.py --port PORT [--host 127.0.0.1] [--region us-east-1]
"""

import argparse
import hmac
import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import botocore
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.validate import ParamValidator

SERVICE = "pinpoint-sms-voice-v2"
SESSION = botocore.session.get_session()
MODEL = SESSION.get_service_model(SERVICE)
# The model as shipped: its error shapes say which are faults (5xx).
RAW_SHAPES = SESSION.get_component("data_loader").load_service_model(SERVICE, "service-2")["shapes"]
SIGNING_NAME = MODEL.signing_name  # sms-voice
TARGET_PREFIX = MODEL.metadata["targetPrefix"]  # PinpointSMSVoiceV2
CONTENT_TYPE = "application/x-amz-json-%s" % MODEL.metadata["jsonVersion"]
OPERATIONS = {"SendTextMessage": MODEL.operation_model("SendTextMessage")}

AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[^/\s,]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/"
    r"(?P<service>[a-z0-9-]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
AMZ_DATE_RE = re.compile(r"^\d{8}T\d{6}Z$")

LOCK = threading.Lock()
STATE = {
    "credentials": {},  # access key -> secret key
    "faults": {},  # destination -> fault dict (with "left" when times is set)
    "requests": {},  # destination -> [record]
    "rejected": [],
}


class Refused(Exception):
    """A request the real service would refuse: (status, error shape, message, extra)."""

    def __init__(self, status, code, message, extra=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}


def model_constraints(value, shape, path, problems):
    """The model's max, pattern and enum, which ParamValidator does not check."""
    t = shape.type_name
    meta = shape.metadata
    if t == "string":
        if "max" in meta and len(value) > meta["max"]:
            problems.append("%s: longer than %s" % (path, meta["max"]))
        if "pattern" in meta and re.search(meta["pattern"], value) is None:
            problems.append("%s: does not match %s" % (path, meta["pattern"]))
        if shape.enum and value not in shape.enum:
            problems.append("%s: %r is not one of %s" % (path, value, shape.enum))
    elif t in ("integer", "long"):
        if "max" in meta and value > meta["max"]:
            problems.append("%s: more than %s" % (path, meta["max"]))
    elif t == "map":
        if "max" in meta and len(value) > meta["max"]:
            problems.append("%s: more than %s entries" % (path, meta["max"]))
        for k, v in value.items():
            model_constraints(k, shape.key, "%s key %r" % (path, k), problems)
            model_constraints(v, shape.value, "%s[%r]" % (path, k), problems)
    elif t == "list":
        for i, v in enumerate(value):
            model_constraints(v, shape.member, "%s[%d]" % (path, i), problems)
    elif t == "structure":
        for k, v in value.items():
            if k in shape.members:
                model_constraints(v, shape.members[k], "%s.%s" % (path, k), problems)


def validate(params, shape):
    """Problems with params against shape: botocore's validator, then the rest."""
    report = ParamValidator().validate(params, shape)
    problems = []
    if report.has_errors():
        problems.append(report.generate_report())
    else:
        model_constraints(params, shape, shape.name, problems)
    return problems


def error_shape(op, code):
    for s in op.error_shapes:
        if s.name == code:
            return s
    return None


def error_answer(op, code, message, extra):
    """An error answer built from the operation's error shape, validated."""
    shape = error_shape(op, code)
    body = {"Message": message}
    body.update(extra)
    if shape is not None:
        problems = validate(body, shape)
        if problems:
            raise ValueError("the %s answer is not valid: %s" % (code, "; ".join(problems)))
    body["__type"] = code
    return body


def check_signature(handler, body):
    """The SigV4 header's shape and scope, and the signature when the key is known."""
    headers = handler.headers
    auth = headers.get("Authorization")
    if not auth:
        raise Refused(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    m = AUTH_RE.match(auth)
    if not m:
        raise Refused(403, "IncompleteSignatureException", "Authorization header malformed: %s" % auth[:60])
    amz_date = headers.get("X-Amz-Date", "")
    if not AMZ_DATE_RE.match(amz_date):
        raise Refused(403, "IncompleteSignatureException", "X-Amz-Date missing or malformed")
    if m["date"] != amz_date[:8]:
        raise Refused(403, "InvalidSignatureException", "credential scope date is not X-Amz-Date's")
    if m["service"] != SIGNING_NAME:
        raise Refused(403, "InvalidSignatureException", "credential scope service %s, expected %s" % (m["service"], SIGNING_NAME))
    if m["region"] != handler.server.region:
        raise Refused(403, "InvalidSignatureException", "credential scope region %s, expected %s" % (m["region"], handler.server.region))
    signed = m["signed"].split(";")
    for required in ("host", "x-amz-date", "x-amz-target", "content-type"):
        if required not in signed:
            raise Refused(403, "InvalidSignatureException", "%s is not signed" % required)
    if headers.get("X-Amz-Security-Token") and "x-amz-security-token" not in signed:
        raise Refused(403, "InvalidSignatureException", "x-amz-security-token is not signed")
    with LOCK:
        secret = STATE["credentials"].get(m["akid"])
    if secret is None:
        # Unknown key: the shape and scope are all that can be checked.
        return m, False
    request = AWSRequest(
        method="POST",
        url="http://%s%s" % (headers.get("Host", ""), handler.path),
        data=body,
        headers={name: headers.get(name) for name in signed},
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(
        Credentials(m["akid"], secret, headers.get("X-Amz-Security-Token")),
        SIGNING_NAME,
        m["region"],
    )
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, m["signature"]):
        raise Refused(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        )
    return m, True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeSmsVoice/1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), fmt % args))

    def answer(self, status, body, content_type="application/x-amz-json-1.0"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    # --- control ---------------------------------------------------------

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/_peer/health":
            return self.answer(200, {"ok": True, "botocore": botocore.__version__}, "application/json")
        if url.path == "/_peer/requests":
            dest = parse_qs(url.query).get("destination", [""])[0]
            with LOCK:
                records = list(STATE["requests"].get(dest, []))
            return self.answer(200, records, "application/json")
        if url.path == "/_peer/rejected":
            with LOCK:
                rejected = list(STATE["rejected"])
            return self.answer(200, rejected, "application/json")
        return self.answer(404, {"message": "no such peer endpoint"}, "application/json")

    def control_post(self, path, body):
        try:
            spec = json.loads(body or b"{}")
        except ValueError as e:
            return self.answer(400, {"message": "not JSON: %s" % e}, "application/json")
        if path == "/_peer/credentials":
            with LOCK:
                STATE["credentials"][spec["access_key"]] = spec["secret_key"]
            return self.answer(200, {"ok": True}, "application/json")
        if path == "/_peer/faults":
            dest = spec.get("destination")
            if not dest:
                return self.answer(400, {"message": "a fault needs a destination"}, "application/json")
            code = spec.get("error")
            if code is not None and spec.get("body") is None:
                # A fault the model cannot express is a bug in the test.
                try:
                    error_answer(OPERATIONS["SendTextMessage"], code, "check", fault_extra(spec))
                except ValueError as e:
                    return self.answer(400, {"message": str(e)}, "application/json")
                if error_shape(OPERATIONS["SendTextMessage"], code) is None and code not in GENERIC_ERRORS:
                    return self.answer(400, {"message": "%s is not an error of SendTextMessage" % code}, "application/json")
            if spec.get("times") is not None:
                spec["left"] = int(spec["times"])
            with LOCK:
                STATE["faults"][dest] = spec
            return self.answer(200, {"ok": True}, "application/json")
        return self.answer(404, {"message": "no such peer endpoint"}, "application/json")

    # --- the service -----------------------------------------------------

    def do_POST(self):
        body = self.read_body()
        path = urlsplit(self.path).path
        if path.startswith("/_peer/"):
            return self.control_post(path, body)
        try:
            self.service(path, body)
        except Refused as r:
            with LOCK:
                STATE["rejected"].append(
                    {"target": self.headers.get("X-Amz-Target"), "error": r.code, "why": r.message}
                )
            sys.stderr.write("refused: %s: %s\n" % (r.code, r.message))
            payload = {"__type": r.code, "message": r.message}
            payload.update(r.extra)
            self.answer(r.status, payload)

    def service(self, path, body):
        if path != "/":
            raise Refused(404, "UnknownOperationException", "no such path %s" % path)
        if self.headers.get("Content-Type") != CONTENT_TYPE:
            raise Refused(400, "SerializationException", "Content-Type must be %s" % CONTENT_TYPE)
        target = self.headers.get("X-Amz-Target", "")
        prefix, _, name = target.partition(".")
        if prefix != TARGET_PREFIX or name not in OPERATIONS:
            raise Refused(400, "UnknownOperationException", "unknown operation %r" % target)
        op = OPERATIONS[name]
        scope, verified = check_signature(self, body)
        try:
            params = json.loads(body)
        except ValueError as e:
            raise Refused(400, "SerializationException", "the body is not JSON: %s" % e)
        if not isinstance(params, dict):
            raise Refused(400, "SerializationException", "the body is not a JSON object")
        problems = validate(params, op.input_shape)
        if problems:
            raise Refused(
                400,
                "ValidationException",
                "; ".join(problems),
                {"Reason": "FIELD_VALIDATION_FAILED", "Fields": []},
            )
        dest = params["DestinationPhoneNumber"]
        record = {
            "operation": name,
            "body": params,
            "access_key": scope["akid"],
            "region": scope["region"],
            "signed_headers": scope["signed"].split(";"),
            "signature_verified": verified,
            "session_token": self.headers.get("X-Amz-Security-Token") is not None,
            "user_agent": self.headers.get("User-Agent"),
            "at": time.time(),
        }
        with LOCK:
            fault = STATE["faults"].get(dest)
            if fault is not None and fault.get("left") is not None:
                if fault["left"] <= 0:
                    fault = None
                else:
                    fault["left"] -= 1
            STATE["requests"].setdefault(dest, []).append(record)
        if fault is not None and fault.get("delay"):
            time.sleep(float(fault["delay"]))
        if fault is not None and (fault.get("error") or fault.get("body") is not None):
            status = int(fault.get("status") or error_status(op, fault.get("error")))
            if fault.get("body") is not None:
                record["answer"] = {"status": status, "raw": True}
                return self.answer(status, fault["body"].encode(), "text/html")
            message = (fault.get("message") or "injected %s" % fault["error"]).replace(
                "{token}", self.headers.get("X-Amz-Security-Token", "")
            )
            answer = error_answer(op, fault["error"], message, fault_extra(fault))
            record["answer"] = {"status": status, "error": fault["error"]}
            return self.answer(status, answer)
        result = {}
        for member, shape in op.output_shape.members.items():
            if member == "MessageId":
                result[member] = str(uuid.uuid4())
        problems = validate(result, op.output_shape)
        if problems:
            raise Refused(500, "InternalServerException", "; ".join(problems))
        record["answer"] = {"status": 200, "MessageId": result["MessageId"]}
        self.answer(200, result)


# Errors every AWS JSON service may answer, outside the operation's own.
GENERIC_ERRORS = {"ServiceUnavailable", "UnrecognizedClientException", "ExpiredTokenException"}


def fault_extra(spec):
    extra = {}
    if spec.get("reason") is not None:
        extra["Reason"] = spec["reason"]
    if spec.get("fields") is not None:
        extra["Fields"] = spec["fields"]
    if spec.get("resource_type") is not None:
        extra["ResourceType"] = spec["resource_type"]
    if spec.get("resource_id") is not None:
        extra["ResourceId"] = spec["resource_id"]
    return extra


def error_status(op, code):
    if error_shape(op, code) is not None and RAW_SHAPES[code].get("fault"):
        return 500
    if code == "ServiceUnavailable":
        return 503
    return 400


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--region", default="us-east-1")
    args = p.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    server.region = args.region
    print(
        "fake %s (botocore %s, model %s) on http://%s:%d, region %s"
        % (SERVICE, botocore.__version__, MODEL.api_version, args.host, server.server_port, args.region),
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
