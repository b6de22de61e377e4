"""gunicorn's configuration for this service, as `toh serve` applies it (it reads no other
gunicorn config file). Each choice and why:

- worker_class: our gthread worker (service.gunicorn_worker): threads, so a request waiting on
  PostgreSQL does not hold a whole process, gunicorn's own errors as OperationOutcomes, the
  routine R4 models built before the first request, and the application's start-up objects
  frozen out of the garbage collector's sight (gc.freeze).
- workers (TOH_WORKERS, default 2) x threads (TOH_THREADS, default 4): the work is CPU in Python
  (JSON, validation, the search index) plus waits on the database. One worker per core, up to
  two, is the measured sweet spot (docs/deployment.md, "Throughput"); threads cover the waits.
  Each worker holds its own connection pool (SQLAlchemy's default 5 + 10 overflow): keep
  instances x workers x (threads + 1) under PostgreSQL's max_connections.
- timeout (TOH_WORKER_TIMEOUT, default 60 s): a worker silent this long is killed and replaced.
  It is above TOH_STATEMENT_TIMEOUT (30 s), so a slow statement is stopped by PostgreSQL (an
  OperationOutcome) before gunicorn kills the process under it.
- graceful_timeout (TOH_GRACEFUL_TIMEOUT, default 30 s): on SIGTERM the master stops accepting,
  workers finish the requests in flight for up to this long, then are killed. A request's
  writes are one transaction, so a kill past it loses the uncommitted request, never half of it.
  Container stop periods must be longer (docker-compose.yml: stop_grace_period 40s).
- keepalive (65 s): longer than the idle timeout of the usual load balancers (60 s), so the
  balancer, not gunicorn, closes idle connections and never sends on one gunicorn just closed.
  Idle keep-alive connections wait in gthread's poller, not in a thread.
- max_requests = 0: workers are not recycled; each holds the guide and the search parameter
  registry, costly to rebuild, and nothing in it leaks by request.
- worker_tmp_dir: /dev/shm when it exists; the heartbeat file on a container's overlay
  filesystem can stall and get healthy workers killed (gunicorn's FAQ).
- limit_request_line 8190: gunicorn's largest; FHIR search URLs are long.
- worker_exit: in a worker leaving after SIGTERM (its requests in flight finished), stops the
  sweep's tick, which finishes the item in hand and claims no other, and drains the audit
  journal (SQLite) as it closes the database.
- child_exit: tells prometheus-client's multiprocess mode that a worker is gone.
- logconfig_dict: gunicorn's error and access logs as JSON lines like the application's.
- logger_class (AccessLogOnRequest): the access log only with `--access-log`. gunicorn's own
  logger writes an access line for every request whenever a logconfig_dict is given, whatever
  `accesslog` says; building and formatting that line took about a tenth of a worker's time on
  a read by id (bench/bench_read_http.py).
"""
from __future__ import annotations

import os
from typing import Any

from gunicorn.glogging import Logger

from service.config import Settings
from service.observability import logs, multiproc

KEEPALIVE_SECONDS = 65
# the path without its query (a search's values can be PHI), and the request id
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms request=%({x-request-id}o)s'


class AccessLogOnRequest(Logger):  # type: ignore[misc]
    """gunicorn's logger, writing the access log only when `accesslog` is set (`toh serve
    --access-log`), not whenever a logconfig_dict is."""

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """The access line of one request, if the access log is on."""
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)


def child_exit(_server: Any, worker: Any) -> None:
    """gunicorn hook, in the master, after a worker exited: drop its live gauges."""
    multiproc.mark_dead(worker.pid)


def worker_exit(_server: Any, worker: Any) -> None:
    """gunicorn hook, in the worker leaving after SIGTERM (its requests in flight finished):
    stop the sweep's tick, which finishes the item in hand and claims no other; then move the
    audit journal's rows into the table (Database.dispose; SQLite file only)."""
    from service.scheduling import stop_background
    stop_background()
    services = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("toh")
    if services is not None:
        services.database.dispose()


def options(settings: Settings, *, access_log: bool = False) -> dict[str, Any]:
    """gunicorn's settings for `toh serve` (names as in gunicorn's documentation)."""
    return {
        "bind": f"{settings.host}:{settings.port}",
        "workers": settings.workers,
        "worker_class": "service.gunicorn_worker.OutcomeThreadWorker",
        "threads": settings.threads,
        "timeout": settings.worker_timeout,
        "graceful_timeout": settings.graceful_timeout,
        "worker_exit": worker_exit,
        "keepalive": KEEPALIVE_SECONDS,
        "max_requests": 0,
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        "limit_request_line": 8190,
        "accesslog": "-" if access_log else None,
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "logconfig_dict": logs.gunicorn_logconfig(settings.log_format, settings.log_level),
        "logger_class": "service.gunicorn_config.AccessLogOnRequest",
        "child_exit": child_exit,
    }
