"""The clock's tick: APScheduler (3.x) calls the sweep every TOH_SWEEP_INTERVAL_SECONDS and
delivers due notifications every TOH_DELIVERY_INTERVAL_SECONDS.

APScheduler is only the tick. Its job stores are not shared safely between processes and it
drops runs missed by more than misfire_grace_time, so it keeps no state: jobs are listed here as
data with stable ids (re-registering at start-up is harmless), run in memory, and every run asks
the database what is due (workflows.sweep), so several processes (each `toh serve` worker, a
`toh worker`) may tick at once and a missed tick only delays work to the next one.
"""
from __future__ import annotations

import logging
import random
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from service.observability import metrics
from service.workflows.delivery import deliver
from service.workflows.bulk_export import stop_exports
from service.workflows.sweep import sweep

if TYPE_CHECKING:
    from service.api.context import Services

log = logging.getLogger(__name__)

# Set when this process is stopping: a sweep in progress finishes the item in hand and claims no more.
_stopping = threading.Event()
_running: list[BackgroundScheduler] = []


@dataclass(frozen=True)
class Job:
    """A periodic job: a stable id and one call into workflows."""

    id: str
    run: Callable[[Services], None]
    interval: Callable[[Services], int]


def run_sweep(services: Services) -> None:
    """One sweep as of the services' clock; logs what it did and records its metrics."""
    started = time.perf_counter()
    report = sweep(services.database, services.clock.now(), stop=_stopping.is_set)
    metrics.observe_sweep(time.perf_counter() - started, len(report.handled), len(report.failed), report.deferred)
    if report.handled or report.failed:
        for line in report.lines():
            log.info("%s", line)


def run_delivery(services: Services) -> None:
    """One delivery pass of the outbox as of the services' clock; logs what it did."""
    report = deliver(services.database, services.channels, services.clock.now())
    if report.attempts:
        for line in report.lines():
            log.info("%s", line)


def run_exports(services: Services) -> None:
    """Run the Bulk Data export jobs that are pending or whose holder died, then delete the
    files of expired jobs (service.workflows.bulk_export)."""
    done = services.exporter.run_pending(stop=_stopping.is_set)
    expired = services.exporter.expire()
    if done or expired:
        log.info("bulk export: %s jobs completed, %s expired jobs deleted", done, expired)


JOBS = (Job("toh-sweep", run_sweep, lambda s: s.settings.sweep_interval_seconds),
        Job("toh-deliver", run_delivery, lambda s: s.settings.delivery_interval_seconds),
        Job("toh-bulk-export", run_exports, lambda s: s.settings.sweep_interval_seconds))


def _configure(scheduler: Any, services: Services, first_run: float) -> Any:
    for job in JOBS:
        interval = max(1, job.interval(services))
        scheduler.add_job(job.run, "interval", seconds=interval, args=[services], id=job.id,
                          replace_existing=True, max_instances=1, coalesce=True,
                          misfire_grace_time=interval, jitter=interval / 10,
                          next_run_time=datetime.now(timezone.utc) + timedelta(seconds=min(first_run, interval)))
    return scheduler


def start_background(services: Services) -> BackgroundScheduler:
    """Start the tick in a daemon thread of this process (a `toh serve` worker). The first run
    comes a random part of an interval after start, so workers started together do not tick
    together and a booting worker answers its first requests first."""
    scheduler = BackgroundScheduler(daemon=True, timezone="UTC")
    interval = max(1, services.settings.sweep_interval_seconds)
    _configure(scheduler, services, first_run=random.uniform(interval / 2, interval))
    scheduler.start()
    _running.append(scheduler)
    return scheduler


def stop_background() -> None:
    """Stop this process's ticks (gunicorn's worker_exit, on SIGTERM): no new tick starts, a
    sweep in progress finishes the item in hand (its own transaction) and claims no more, and
    this returns once it has. What was not reached stays due for the next process."""
    _stopping.set()
    stop_exports()                 # export threads started by kick-offs give their jobs back
    while _running:
        scheduler = _running.pop()
        if scheduler.running:      # one already shut down (by its owner) has nothing to wait for
            scheduler.shutdown(wait=True)


def run_blocking(services: Services) -> None:
    """Run the tick in this process until SIGTERM or SIGINT (`toh worker`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scheduler = BlockingScheduler(timezone="UTC")

    once = threading.Lock()

    def shut_down() -> None:
        with once:
            if scheduler.running:           # not again on a second signal
                scheduler.shutdown(wait=False)  # the executor's thread is joined before the process exits

    def stop(_signum: int, _frame: Any) -> None:
        _stopping.set()                 # the sweep in progress stops after its item in hand
        # Not in the handler: the signal may land while this (main) thread hands out jobs under
        # the scheduler's lock, and a shutdown from there would empty the job store under it
        # (JobLookupError). From a thread of its own it waits for that lock.
        threading.Thread(target=shut_down, name="toh-worker-stop").start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _configure(scheduler, services, first_run=0.5)
    log.info("toh worker: sweeping every %ss", services.settings.sweep_interval_seconds)
    scheduler.start()
