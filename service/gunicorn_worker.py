"""The gunicorn worker `toh serve` runs: gunicorn's threaded worker whose own error answers
(a malformed request line or header, a request line over the limit, an unsupported transfer
coding...) are OperationOutcomes like every other error of the service, not HTML pages.

gunicorn answers those before the application sees the request, through
``gunicorn.util.write_error``; the worker replaces it in its own process when it starts.

Once the application is loaded, and before it accepts a connection, the worker builds the R4
models of routine content (service.fhir.resources.warm_models: a worker's first bundle had paid
about 0.35 s for them), then hands everything it built (the R4 models, the guide,
the search parameter registry: about 210,000 objects the collector tracks, which live as long
as the process) to ``gc.freeze()``. The cyclic garbage collector then no longer walks them at
each full collection, which had taken about 14% of a worker's time while it stored transaction
bundles (issue 11; `python bench/bench_ingest.py` prints the collector's share). See the gc
module's documentation of ``gc.freeze``.

A worker already busy with a request lets an idle worker take a new connection first. Every
worker waits on the one listening socket, and gunicorn's threaded worker accepts whenever it is
woken, busy or not; a connection then stays with the worker that accepted it. Two bundles (or two
keep-alive clients) could so land in one process and share its one interpreter lock while the
other worker sat idle (seen here: a third of the bundles of bench/bench_ingest.py accepted by a
busy worker, each then taking about twice as long, one worker at 93% CPU and the other near 0%).
So a worker with a request in flight waits ACCEPT_HANDOFF_SECONDS before it accepts: an idle
worker, woken by the same connection, takes it meanwhile and the busy one finds nothing to
accept (EAGAIN, which gunicorn ignores). When every worker is busy, the connection is accepted
that much later, by whichever worker comes back first.
"""
from __future__ import annotations

import gc
import json
import time
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

# How long a worker with a request in flight leaves a new connection to an idle worker: enough for
# an idle worker, woken by the same connection, to accept it on a loaded 2-core machine (about
# 0.1 ms when the machine is quiet); small against a request that keeps a worker busy (a read
# takes 2-3 ms of CPU, a 190-resource bundle about 100 ms), and paid only when a busy worker
# accepts, so not on requests that arrive on a kept-alive connection.
ACCEPT_HANDOFF_SECONDS = 0.002


def write_outcome_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Send gunicorn's error (status, reason phrase, message) as an OperationOutcome and close."""
    issue = {"severity": "error", "code": "invalid" if status_int < 500 else "exception",
             "diagnostics": f"{reason}: {mesg}" if mesg else reason}
    body = json.dumps({"resourceType": "OperationOutcome", "issue": [issue]}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/fhir+json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


class OutcomeThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, answering its own errors with OperationOutcomes, and leaving a
    new connection to an idle worker while it has a request in flight."""

    # requests handed to the thread pool and not yet finished (read and written by the worker's
    # main thread only: gunicorn calls enqueue_req, accept and finish_request there)
    in_flight = 0

    def init_process(self) -> None:
        util.write_error = write_outcome_error
        super().init_process()

    def load_wsgi(self) -> None:
        """Load the application and build the routine R4 models, then freeze what was built out
        of the collector's sight."""
        super().load_wsgi()
        from service.fhir import resources   # not at import: gunicorn's master imports this module
        resources.warm_models()
        gc.collect()
        gc.freeze()

    def enqueue_req(self, conn: Any) -> None:
        """Hand a connection with a request to come to the thread pool (gunicorn's), counted in flight."""
        self.in_flight += 1
        super().enqueue_req(conn)

    def finish_request(self, conn: Any, fs: Any) -> None:
        """A request done (gunicorn's; it may hand a pipelined next request back at once)."""
        self.in_flight -= 1
        super().finish_request(conn, fs)

    def accept(self, listener: Any) -> None:
        """Accept a new connection (gunicorn's), after ACCEPT_HANDOFF_SECONDS when a request is
        in flight, so that an idle worker woken by the same connection takes it first; if one
        did, nothing is left to accept and gunicorn's accept returns on EAGAIN."""
        if self.in_flight:
            time.sleep(ACCEPT_HANDOFF_SECONDS)
        super().accept(listener)
