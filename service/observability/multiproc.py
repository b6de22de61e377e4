"""prometheus-client's multiprocess mode under gunicorn, without importing prometheus_client
before it is configured (the client picks its value store when first imported).

`toh serve` (the gunicorn master) calls `prepare(path)` before it builds the application, so
every worker it forks writes its metrics as files under `path`; gunicorn's `child_exit` hook
calls `mark_dead(pid)`. See https://prometheus.github.io/client_python/multiprocess/.
"""
from __future__ import annotations

import os
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The folder of the multiprocess mode, or None in single-process mode."""
    return os.environ.get(ENV) or None


def prepare(path: str | None) -> str:
    """Make `path` (None: a new temporary folder) the multiprocess folder of this process and
    its children, emptied of the `*.db` files of earlier runs (their counters would add up);
    returns the folder. Raises OSError if it cannot be made."""
    folder = path or tempfile.mkdtemp(prefix="toh-metrics-")
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.remove(os.path.join(folder, name))
    os.environ[ENV] = folder
    return folder


def mark_dead(pid: int) -> None:
    """Forget the live gauges of an exited worker process (gunicorn's child_exit hook)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(pid)
