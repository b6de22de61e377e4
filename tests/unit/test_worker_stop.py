"""`toh worker` stops cleanly on SIGTERM wherever its main loop is (service.scheduling.run_blocking).

Found by the delivery crash of issue 18 (tests/reliability/test_crash.py): a worker whose stderr
nobody read stalled while logging, a SIGTERM then landed while its main loop handed out jobs, and
the shutdown run inside the signal handler emptied the job store under that loop, which died on
JobLookupError (a traceback and exit status 1 instead of a clean stop)."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from service import scheduling


def test_sigterm_while_the_main_loop_hands_out_jobs_stops_the_worker_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduling, "_stopping", threading.Event())
    runs: list[float] = []

    def slow(_services: Any) -> None:              # still running at its next tick: "skipped"
        runs.append(time.monotonic())
        time.sleep(3)

    monkeypatch.setattr(scheduling, "JOBS", (scheduling.Job("probe", slow, lambda _s: 1),))

    skipped: list[str] = []

    class TermWhenSkipping(logging.Handler):
        """SIGTERM from inside the main loop's hand-out (it logs the skip under the scheduler's lock)."""

        def emit(self, record: logging.LogRecord) -> None:
            if "maximum number of running instances" in record.getMessage() and not skipped:
                skipped.append(record.getMessage())
                os.kill(os.getpid(), signal.SIGTERM)

    handler = TermWhenSkipping()
    logger = logging.getLogger("apscheduler.scheduler")
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    logger.addHandler(handler)
    watchdog = threading.Timer(30, os.kill, (os.getpid(), signal.SIGTERM))   # never hang the run
    watchdog.start()
    try:
        scheduling.run_blocking(SimpleNamespace(settings=SimpleNamespace(sweep_interval_seconds=1)))  # type: ignore[arg-type]
    finally:
        watchdog.cancel()
        logger.removeHandler(handler)
        for number, action in previous.items():
            signal.signal(number, action)
    assert skipped, "the job's next tick came after it had finished: the signal did not land mid hand-out"
    assert scheduling._stopping.is_set() and len(runs) == 1
