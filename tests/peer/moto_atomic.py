"""moto in server mode, with DynamoDB's atomicity.

moto's server answers requests on many threads, and its DynamoDB
`TransactWriteItems` is not atomic across them: it checks and applies the
items one by one, and a cancelled transaction restores a copy of the whole
table taken when it started, erasing what other requests wrote in between.
Real DynamoDB never does either. Tests that race writers (several relay
processes on one table) would then see lost writes that are the emulator's,
not the code's.

This runs the same moto application with every DynamoDB and DynamoDB
Streams request handled one at a time (requests to other services, such as
SSM or SQS, still run concurrently). Clients still send concurrently; the
server orders their requests, as DynamoDB orders conflicting writes.

    python moto_atomic.py -H 127.0.0.1 -p 5000
"""

import argparse
import io
import json
import os
import threading

from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


class OneDynamoRequestAtATime:
    """WSGI middleware: DynamoDB requests hold one lock for their whole
    handling (the answer's body included)."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith("DynamoDB"):
            return self.app(environ, start_response)
        with self.lock:
            # Materialise the body inside the lock: the handler's work may
            # be lazy until the body is read.
            return list(self.app(environ, start_response))


class RequestLog:
    """WSGI middleware: one JSON line per DynamoDB or SQS request (its
    target, the request's and the answer's sizes, for a transaction the
    size of each item it writes, whether a read is consistent), so a
    benchmark can price what a workload asked of the services."""

    def __init__(self, app, path):
        self.app = app
        self.out = open(path, "a", buffering=1)
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target:
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        answer = list(self.app(environ, start_response))
        entry = {"target": target, "request": len(body), "answer": sum(len(c) for c in answer)}
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            parsed = {}
        if target.endswith("TransactWriteItems"):
            entry["items"] = [
                len(json.dumps(next(iter(op.values())).get("Item", next(iter(op.values())).get("Key", {}))))
                for op in parsed.get("TransactItems", [])
            ]
        if parsed.get("ConsistentRead"):
            entry["consistent"] = True
        with self.lock:
            self.out.write(json.dumps(entry) + "\n")
        return answer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--log", help="append one JSON line per DynamoDB or SQS request here")
    args = parser.parse_args()
    # moto builds some answers (queue URLs, for one) from this, as its own
    # `moto_server` does.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = OneDynamoRequestAtATime(DomainDispatcherApplication(create_backend_app))
    if args.log:
        app = RequestLog(app, args.log)
    run_simple(
        args.host,
        args.port,
        app,
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
