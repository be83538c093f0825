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

moto also takes its rollback copy of the whole table once per item of a
transaction, so a transaction's cost grows with the table (seconds per
transaction once a table holds tens of thousands of items). With requests
one at a time, a copy of just the items the transaction names is the same
rollback: this keeps an undo log of those items (and of the table's stream
records) and restores them when the transaction is cancelled, instead.

    python moto_atomic.py -H 127.0.0.1 -p 5000
"""

import argparse
import copy
import os
import threading

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

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


class _KeepTables:
    """Stands for the `copy` module inside moto's DynamoDB backend: a deep
    copy of a table is the table itself (the undo log below restores what a
    cancelled transaction wrote); anything else is copied as before."""

    @staticmethod
    def deepcopy(x, memo=None):
        if isinstance(x, Table):
            return x
        return copy.deepcopy(x, memo)


_transact_write_items = dynamodb_models.DynamoDBBackend.transact_write_items


def _transact_with_undo_log(self, transact_items):
    undo = []
    streams = {}
    for entry in transact_items:
        try:
            op_type, op = next(iter(entry.items()))
            table = self.tables[op["TableName"]]
            attrs = op["Item"] if op_type == "Put" else op["Key"]
            h = DynamoType(attrs[table.hash_key_attr])
            r = DynamoType(attrs[table.range_key_attr]) if table.range_key_attr else None
        except Exception:
            continue  # moto refuses it itself, before writing anything
        undo.append((table, h, r, copy.deepcopy(table.get_item(h, r))))
        if table.stream_shard is not None:
            streams.setdefault(id(table), (table, len(table.stream_shard.items)))
    try:
        return _transact_write_items(self, transact_items)
    except Exception:
        for table, h, r, before in reversed(undo):
            if r is None:
                if before is None:
                    table.items.pop(h, None)
                else:
                    table.items[h] = before
            elif before is None:
                table.items[h].pop(r, None)
                if not table.items[h]:
                    table.items.pop(h, None)
            else:
                table.items[h][r] = before
        for table, n in streams.values():
            del table.stream_shard.items[n:]
        raise


dynamodb_models.copy = _KeepTables
dynamodb_models.DynamoDBBackend.transact_write_items = _transact_with_undo_log


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
