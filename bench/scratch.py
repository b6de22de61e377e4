"""Scratch databases and servers shared by the benchmarks and the reliability suite.

- ``scratch_database(kind, workdir)``: a fresh SQLite file, or a fresh PostgreSQL database on
  the machine's server (``$TOH_BENCH_PG_URL``, default postgres@127.0.0.1:5432), dropped after.
- ``PostgresCluster``: a PostgreSQL cluster of our own (initdb into a temporary folder,
  ``pg_ctl`` on a free port) that a test may stop and restart without touching the machine's
  shared server. Run as root, the cluster's commands run as the ``postgres`` user.
- ``Gunicorn``: an application under gunicorn on a free loopback port, ready once every worker
  answers ``/healthz``; its processes (master and workers) and their resident memory.
- ``free_port()``, ``load()``: a free TCP port on loopback; the load average as text.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType

import requests

from tests import databases

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("TOH_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def load() -> str:
    """The load average as 'load average 1.00 2.00 3.00'."""
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scratch_postgres(admin_url: str = PG_ADMIN) -> AbstractContextManager[str]:
    """A new, empty PostgreSQL database on the server of admin_url; yields its URL and drops it
    afterwards (the test suite's helper, tests.databases.scratch_postgres)."""
    return databases.scratch_postgres("toh_bench", admin_url=admin_url)


@contextmanager
def scratch_database(kind: str, workdir: Path | None = None) -> Iterator[str]:
    """A fresh database URL of that kind ("sqlite", or "postgresql"/"postgres"), removed
    afterwards. SQLite files go to workdir (default: a new temporary folder)."""
    if kind == "sqlite":
        folder = workdir or Path(tempfile.mkdtemp(prefix="toh-scratch-"))
        try:
            yield f"sqlite:///{folder / uuid.uuid4().hex}.db"
        finally:
            if workdir is None:
                shutil.rmtree(folder, ignore_errors=True)
        return
    if kind not in ("postgresql", "postgres"):
        raise ValueError(f"unknown database kind {kind!r}")
    with scratch_postgres() as url:
        yield url


def _pg_bin(name: str) -> str:
    """The path of a PostgreSQL server program (initdb, pg_ctl): on PATH, or Debian's folder."""
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    raise FileNotFoundError(f"{name} not found (install the PostgreSQL server, e.g. apt-get install postgresql)")


class PostgresCluster:
    """A PostgreSQL cluster of our own in a temporary folder, on a free loopback port.

    ``url`` is the SQLAlchemy URL of its ``postgres`` database (trust authentication on
    loopback). ``stop()``, ``start()`` and ``restart()`` control it; ``close()`` stops it and
    removes the folder. Raises FileNotFoundError when the server programs are missing and
    subprocess.CalledProcessError when initdb or pg_ctl fails.
    """

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="toh-pgcluster-"))
        self.data = self.folder / "data"
        self.logfile = self.folder / "postgres.log"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0    # initdb refuses to run as root
        if self._as_postgres:
            shutil.chown(self.folder, user="postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                  "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.folder}'\n"
                       "fsync = on\nmax_connections = 100\nshared_buffers = 64MB\n")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        subprocess.run(prefix + list(command), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=120)

    def start(self) -> None:
        """Start the server and wait until it takes connections."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (mode fast: roll back open transactions and disconnect; immediate: abort)."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass   # already stopped
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def rss_kib(pid: int) -> int:
    """The resident set size of a process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The direct children of a process (Linux /proc)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


class Gunicorn:
    """A WSGI app (``module:factory()``) or ``toh serve`` on a free loopback port, in its own
    process group, ready once /healthz answers from every worker.

    command: the argv to run, with ``{port}`` replaced; env: extra environment. ``base`` is
    ``http://127.0.0.1:PORT``. ``kill()`` SIGKILLs the whole group (master and workers at
    once, as a crash of the machine's process would); ``stop()`` terminates it gently.
    """

    def __init__(self, command: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT,
                 log: Path | None = None, workers: int = 2, boot_seconds: float = 180) -> None:
        ensure_secret()
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = log or Path(tempfile.gettempdir()) / f"toh-gunicorn-{self.port}.log"
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen([part.replace("{port}", str(self.port)) for part in command],
                                        cwd=cwd, env={**os.environ, **(env or {})}, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + boot_seconds
        while True:
            if self.process.poll() is not None:
                self._log.close()
                raise RuntimeError(f"{command} exited while starting: {self.log_path.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.base}/healthz", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{command} did not answer /healthz; see {self.log_path}")
            time.sleep(0.2)
        for _ in range(2 * workers):   # the first answer may come from one worker only
            requests.get(f"{self.base}/healthz", timeout=60)

    @classmethod
    def app(cls, app: str, env: dict[str, str] | None = None, workers: int = 2, threads: int = 4) -> Gunicorn:
        """gunicorn on a WSGI app spec with the same worker set-up as `toh serve` (its threaded
        worker class, service.gunicorn_worker.OutcomeThreadWorker)."""
        binary = Path(sys.executable).with_name("gunicorn")
        return cls([str(binary), "-w", str(workers), "--threads", str(threads),
                    "-k", "service.gunicorn_worker.OutcomeThreadWorker",
                    "-b", "127.0.0.1:{port}", "--timeout", "300", app], env=env, workers=workers)

    @classmethod
    def toh_serve(cls, database_url: str, cwd: Path, workers: int = 2, env: dict[str, str] | None = None,
                  extra: tuple[str, ...] = ()) -> Gunicorn:
        """`toh serve` over database_url, run in cwd (its data folder)."""
        toh = Path(sys.executable).with_name("toh")
        return cls([str(toh), "serve", "--port", "{port}", "--workers", str(workers), *extra],
                   env={"TOH_DATABASE_URL": database_url, **(env or {})}, cwd=cwd, workers=workers,
                   log=cwd / "server.log")

    def worker_pids(self) -> list[int]:
        return children(self.process.pid)

    def rss_kib(self) -> dict[int, int]:
        """{worker pid: resident KiB} of the live workers."""
        return {pid: rss_kib(pid) for pid in self.worker_pids()}

    def kill(self) -> None:
        """SIGKILL the master and every worker at once."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        try:   # workers left behind by a master that died first
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()

    def __enter__(self) -> Gunicorn:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class PeakRss:
    """Samples the workers' resident memory of a Gunicorn every `interval` seconds while in a
    ``with`` block; ``peak_mib`` is the largest of any one worker (MiB)."""

    def __init__(self, server: Gunicorn, interval: float = 0.2) -> None:
        import threading
        self.server = server
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max([self.peak_kib, *self.server.rss_kib().values()])
            self._stop.wait(self.interval)

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()


def ensure_secret() -> None:
    """Give this process (and so the servers it starts) a random TOH_JWT_SECRET if it has none."""
    import secrets
    os.environ.setdefault("TOH_JWT_SECRET", secrets.token_urlsafe(48))


def bench_token() -> str:
    """A system/*.cruds bearer token that servers started from this process accept: sets a
    random TOH_JWT_SECRET in this process's environment (inherited by the servers) if unset."""
    from service.config import Settings
    from service.security import issue_token
    ensure_secret()
    return issue_token(Settings.from_env().token_settings(), subject="bench", scopes=["system/*.cruds"],
                       ttl_seconds=24 * 3600)
