#!/usr/bin/env python3
"""Launch moto's standalone server (SQS, DynamoDB, ... on one port) for tests and demos.

Prints exactly one line, ``http://HOST:PORT``, to stdout once the server answers
requests, then serves until SIGTERM/SIGINT (or stdin EOF with --exit-on-stdin-eof).

Differences from ``moto_server`` (moto.server.main):
  * port 0 by default: the OS picks a free port, so parallel test runs never collide;
  * TCP_NODELAY on every accepted socket: werkzeug sends a response's headers and
    body in separate send() calls, and with Nagle's algorithm the body may wait for
    the client's delayed ACK (up to ~40 ms on Linux). Werkzeug 3.1 closes every
    connection after one response, which mostly hides this (measured: no
    difference here), but a keep-alive server would not; --no-tcp-nodelay compares;
  * no per-request access log; errors still go to stderr;
  * the SQS and DynamoDB backends are loaded before the URL is printed, so the first
    request of a test does not pay moto's lazy import (about a second);
  * --exit-on-stdin-eof: a parent that holds our stdin as a pipe takes us with it
    when it dies, even by SIGKILL;
  * moto's SQS made linear in the queue's depth (see speed_up_moto; --no-speedups
    compares): answers are unchanged, only how long they take;
  * adding and deleting a queue's messages made atomic (see serialize_queue_changes):
    unpatched, a send racing a delete was acknowledged and lost.

Requires ``pip install 'moto[server]'`` (moto 5.x), see scripts/setup.sh.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import sys
import threading
import time


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to bind (default 0: a free port)")
    p.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="exit when stdin reaches EOF (run as a child with stdin=PIPE)",
    )
    p.add_argument(
        "--no-tcp-nodelay",
        action="store_true",
        help="leave Nagle's algorithm on (only to measure the difference)",
    )
    p.add_argument(
        "--no-warmup",
        action="store_true",
        help="print the URL without first loading the SQS and DynamoDB backends",
    )
    p.add_argument(
        "--no-speedups",
        action="store_true",
        help="run moto's SQS unpatched (only to measure the difference)",
    )
    p.add_argument(
        "--no-serialize",
        action="store_true",
        help="leave moto's queue changes unlocked (only to measure the difference)",
    )
    return p.parse_args(argv)


def speed_up_moto() -> None:
    """Take two quadratic costs out of moto's SQS, keeping every answer the same.

    Profiled (cProfile, moto 5.2): ``ReceiveMessage`` called
    ``is_message_valid_based_on_retention_period`` for each message it returns,
    which built the queue's whole attribute dict, whose approximate counts walk
    every message of the queue, and each ``Message.visible`` read the clock
    through ``unix_time()``, which does datetime arithmetic. At a depth of 500 a
    receive of 10 took about 200 ms and a batch send of 10 about 70 ms, so
    tests that keep a few hundred messages queued were bound by moto's CPU.

    * ``unix_time()`` without an argument is the current POSIX time: returned from
      ``time.time()`` (same value, no datetime objects).
    * the retention check reads the queue's retention period itself instead of
      every attribute of the queue (the same number ``GetQueueAttributes``
      returns for ``MessageRetentionPeriod``).
    """
    import moto.core.utils as core_utils
    import moto.sqs.models as sqs_models

    slow_unix_time = core_utils.unix_time

    def unix_time(dt=None):  # type: ignore[no-untyped-def]
        return time.time() if dt is None else slow_unix_time(dt)

    def unix_time_millis(dt=None):  # type: ignore[no-untyped-def]
        return unix_time(dt) * 1000.0

    for module in (core_utils, sqs_models):
        if getattr(module, "unix_time", None) is slow_unix_time:
            module.unix_time = unix_time
        if hasattr(module, "unix_time_millis"):
            module.unix_time_millis = unix_time_millis

    def is_message_valid_based_on_retention_period(self, queue_name, message):  # type: ignore[no-untyped-def]
        queue = self.get_queue(queue_name)
        retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
        return retain_until > unix_time()

    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = (
        is_message_valid_based_on_retention_period
    )


def serialize_queue_changes() -> None:
    """Make moto's SQS queue changes atomic: it lost sent messages under load.

    ``Queue.delete_message`` rebuilds the queue's message list and then assigns
    it, with no lock; moto's server runs each request on its own thread, so a
    ``SendMessage`` appending to the old list between the rebuild and the
    assignment is lost (SQS answered it with a message id, and no receive ever
    returns it), and two deletes racing put one deleted message back. Seen in
    the kill -9 fault test: 3 of 1,000 sent messages never delivered, the
    queue empty at the end. SQS itself stores an acknowledged send durably, so
    the tests need a server that does. One lock around adding and deleting.
    """
    import moto.sqs.models as sqs_models

    lock = threading.RLock()
    queue = sqs_models.Queue
    for name in ("add_message", "delete_message"):
        original = getattr(queue, name)

        def locked(self, *a, __original=original, **kw):  # type: ignore[no-untyped-def]
            with lock:
                return __original(self, *a, **kw)

        setattr(queue, name, locked)


def probe(host: str, port: int, warmup: bool, deadline: float) -> None:
    """Return once the server answers HTTP; with warmup, touch SQS and DynamoDB."""
    auth = (
        "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/{svc}/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=0"
    )
    requests = [("GET", "/moto-api/", None, {})]
    if warmup:
        requests += [
            (
                "POST",
                "/",
                "Action=ListQueues&Version=2012-11-05",
                {
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Authorization": auth.format(svc="sqs"),
                },
            ),
            (
                "POST",
                "/",
                "{}",
                {
                    "Content-Type": "application/x-amz-json-1.0",
                    "X-Amz-Target": "DynamoDB_20120810.ListTables",
                    "Authorization": auth.format(svc="dynamodb"),
                },
            ),
        ]
    last_err: Exception | None = None
    while time.monotonic() < deadline:
        try:
            for method, path, body, headers in requests:
                conn = http.client.HTTPConnection(host, port, timeout=30)
                try:
                    conn.request(method, path, body=body, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status >= 500:
                        raise RuntimeError(f"{method} {path}: HTTP {resp.status}")
                finally:
                    conn.close()
            return
        except (OSError, RuntimeError, http.client.HTTPException) as e:
            last_err = e
            time.sleep(0.05)
    raise SystemExit(f"moto_server: server did not answer in time: {last_err}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    # Anything a library prints must not corrupt the one-line stdout protocol.
    url_out = sys.stdout
    sys.stdout = sys.stderr

    try:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            create_backend_app,
        )
        from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler
    except ImportError as e:
        print(f"moto_server: {e}; install with: pip install 'moto[server]'", file=sys.stderr)
        return 2

    if not args.no_serialize:
        serialize_queue_changes()
    if not args.no_speedups:
        speed_up_moto()
    nodelay = not args.no_tcp_nodelay

    class QuietHandler(WSGIRequestHandler):
        # socketserver.StreamRequestHandler.setup() sets TCP_NODELAY on the
        # accepted socket when this is true.
        disable_nagle_algorithm = nodelay

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass  # no access log; log_error (stderr) is kept

    class Server(ThreadedWSGIServer):
        daemon_threads = True  # a pending 20 s long poll must not hold up exit
        request_queue_size = 1024

    app = DomainDispatcherApplication(create_backend_app)
    server = Server(args.host, args.port, app, handler=QuietHandler)
    port = server.socket.getsockname()[1]
    # moto builds some URLs (e.g. SNS -> SQS) from MOTO_PORT.
    os.environ.setdefault("MOTO_PORT", str(port))

    stop = threading.Event()
    serve = threading.Thread(target=server.serve_forever, name="moto-serve", daemon=True)
    serve.start()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if args.exit_on_stdin_eof:

        def watch_stdin() -> None:
            try:
                while sys.stdin.buffer.read1(65536):
                    pass
            except (OSError, ValueError):
                pass
            stop.set()

        threading.Thread(target=watch_stdin, name="stdin-eof", daemon=True).start()

    probe("127.0.0.1" if args.host in ("0.0.0.0", "") else args.host, port,
          not args.no_warmup, time.monotonic() + 60)

    shown_host = args.host if args.host not in ("0.0.0.0", "") else "127.0.0.1"
    if ":" in shown_host:
        shown_host = f"[{shown_host}]"
    try:
        url_out.write(f"http://{shown_host}:{port}\n")
        url_out.flush()
    except BrokenPipeError:
        pass  # the reader went away; keep serving until told otherwise

    while not stop.wait(1.0):
        pass

    # No server.shutdown(): it waits up to a poll interval, and the handler threads
    # (long polls) are daemons anyway. Close the listener and leave at once.
    try:
        server.socket.close()
    except OSError:
        pass
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
