"""The service's Prometheus metrics (prometheus-client), in one place.

Metrics are module-level objects on prometheus-client's default registry. Under `toh serve`
gunicorn runs several worker processes, so the client runs in its multiprocess mode: `toh serve`
sets PROMETHEUS_MULTIPROC_DIR (from TOH_METRICS_DIR, or a fresh temporary folder) *before*
anything imports prometheus_client, every process writes its values to files there, gunicorn's
`child_exit` hook calls `multiproc.mark_dead` for a worker that exits, and `exposition()` merges the files
of all processes (https://prometheus.github.io/client_python/multiprocess/). Without the variable
(tests, `toh worker`) the values live in this process and the default registry is exposed.

Labels are bounded on purpose (a client cannot mint label values): the resource type is an R4
type or "other", the interaction one of a fixed set, the flag code one of the TOH CodeSystem's.

Outbox and delivery metrics (issue 14, built at the same time as this module): the outbox calls
`outbox_metrics()` once and then `observe_queue(depth, oldest_age_seconds)` and
`attempt(channel, outcome)`; or registers a `add_scrape_probe(probe)` that measures the queue from
the database each time /metrics is scraped (exact across hosts; preferred).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)
from prometheus_client import multiprocess

from service.fhir.r4_types import R4_RESOURCE_TYPES
from service.observability.multiproc import multiprocess_dir

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
# seconds; FHIR reads are milliseconds, searches and transactions up to the statement timeout (30 s)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SWEEP_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)

REQUESTS = Counter("toh_http_requests", "HTTP requests answered, by FHIR interaction, resource type and status",
                   ("interaction", "type", "status"))
LATENCY = Histogram("toh_http_request_duration_seconds",
                    "Time from the request's arrival in the application to its answer, commit included (seconds)",
                    ("interaction", "type"), buckets=LATENCY_BUCKETS)
SWEEP_DURATION = Histogram("toh_sweep_duration_seconds", "Duration of one sweep of the due work (seconds)",
                           buckets=SWEEP_BUCKETS)
SWEEP_ITEMS_DUE = Gauge("toh_sweep_items_due", "Items the latest sweep found due (handled + failed + deferred)",
                        multiprocess_mode="livemostrecent")
SWEEP_ITEMS = Counter("toh_sweep_items", "Due items swept, by outcome (handled, failed, deferred)", ("outcome",))
FLAGS_RAISED = Counter("toh_flags_raised", "Flags the clinical rules raised (created), by TOH code", ("code",))

ScrapeProbe = Callable[[Any], None]   # called with the service's Database before each scrape
_probes: list[ScrapeProbe] = []


def resource_type_label(name: str | None) -> str:
    """The `type` label: an R4 resource type, "-" for none, "other" for anything else."""
    if not name:
        return "-"
    return name if name in R4_RESOURCE_TYPES else "other"


def observe_request(interaction: str, res_type: str | None, status: int, seconds: float) -> None:
    """Count one answered request and its latency (seconds)."""
    kind = resource_type_label(res_type)
    REQUESTS.labels(interaction, kind, str(status)).inc()
    LATENCY.labels(interaction, kind).observe(seconds)


def observe_sweep(seconds: float, handled: int, failed: int, deferred: int) -> None:
    """Record one sweep: its duration (seconds) and its items by outcome."""
    SWEEP_DURATION.observe(seconds)
    SWEEP_ITEMS_DUE.set(handled + failed + deferred)
    for outcome, count in (("handled", handled), ("failed", failed), ("deferred", deferred)):
        if count:
            SWEEP_ITEMS.labels(outcome).inc(count)


def observe_flags_raised(codes: Iterable[str], known: frozenset[str]) -> None:
    """Count flags raised by code; a code outside `known` (the TOH CodeSystem) counts as "other"."""
    for code in codes:
        FLAGS_RAISED.labels(code if code in known else "other").inc()


@dataclass(frozen=True)
class OutboxMetrics:
    """The outbox's metrics (issue 14): queue depth, age of the oldest item, delivery attempts."""

    depth: Gauge
    oldest_age: Gauge
    attempts: Counter

    def observe_queue(self, depth: int, oldest_age_seconds: float) -> None:
        """The items waiting for delivery and the age of the oldest (seconds; 0 when empty)."""
        self.depth.set(depth)
        self.oldest_age.set(oldest_age_seconds)

    def attempt(self, channel: str, outcome: str) -> None:
        """Count one delivery attempt. `channel` and `outcome` must come from small fixed sets
        (e.g. "email"/"webhook" and "delivered"/"retry"/"failed"), never from data."""
        self.attempts.labels(channel, outcome).inc()


@lru_cache(maxsize=1)
def outbox_metrics() -> OutboxMetrics:
    """Register (once per process) and return the outbox's metrics."""
    return OutboxMetrics(
        depth=Gauge("toh_outbox_depth", "Outbox items waiting for delivery", multiprocess_mode="livemostrecent"),
        oldest_age=Gauge("toh_outbox_oldest_age_seconds", "Age of the oldest undelivered outbox item (seconds)",
                         multiprocess_mode="livemostrecent"),
        attempts=Counter("toh_delivery_attempts", "Delivery attempts of outbox items, by channel and outcome",
                         ("channel", "outcome")))


def add_scrape_probe(probe: ScrapeProbe) -> None:
    """Run `probe(database)` before each /metrics scrape (e.g. to measure the outbox queue); a
    probe that raises is logged and skipped."""
    if probe not in _probes:
        _probes.append(probe)


def run_probes(database: Any) -> None:
    """Run the scrape probes (the /metrics view calls this)."""
    for probe in list(_probes):
        try:
            probe(database)
        except Exception:  # noqa: BLE001 - a broken probe must not hide the other metrics
            log.exception("metrics probe %s failed", getattr(probe, "__name__", probe))


def exposition() -> bytes:
    """The metrics in Prometheus' text format: every process's in multiprocess mode."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
