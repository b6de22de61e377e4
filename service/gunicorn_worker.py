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
"""
from __future__ import annotations

import gc
import json
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker


def write_outcome_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Send gunicorn's error (status, reason phrase, message) as an OperationOutcome and close."""
    issue = {"severity": "error", "code": "invalid" if status_int < 500 else "exception",
             "diagnostics": f"{reason}: {mesg}" if mesg else reason}
    body = json.dumps({"resourceType": "OperationOutcome", "issue": [issue]}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/fhir+json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


class OutcomeThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, answering its own errors with OperationOutcomes."""

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
