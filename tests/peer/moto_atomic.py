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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    # moto builds some answers (queue URLs, for one) from this, as its own
    # `moto_server` does.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        OneDynamoRequestAtATime(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
