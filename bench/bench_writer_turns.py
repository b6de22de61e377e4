"""How long SQLite's write lock sits idle between writers, with and without writer turns
(service.store.writer_turns), in the same run.

    python bench/bench_writer_turns.py [--hold-ms 125] [--between-ms 110] [--transactions 16] [--rounds 2]

Two processes, each with an engine from service.store.db.make_engine on one SQLite file, do in a
loop what a gunicorn worker storing transaction Bundles does: work outside the write lock
(--between-ms of CPU: parsing, validation, the index rows prepared before the lock), then a write
transaction holding the lock for --hold-ms of CPU (the defaults are a 190-resource bundle on this
machine: bench/bench_ingest_steps.py). Printed for each mode: the wall time, the share of it the
lock was held (the rest it sat idle while a writer waited), and the time the writers waited.
Alternating the modes, --rounds times, keeps the machine's load out of the comparison.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from service.store.db import make_engine  # noqa: E402
from service.store.writer_turns import end_turn  # noqa: E402


def spin(seconds: float) -> None:
    """Use the CPU for that long (wall time), as the work of a request does."""
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        pass


def writer(url: str, turns: bool, hold: float, between: float, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    engine = make_engine(url, turns=turns)
    waited = 0.0
    for i in range(n):
        spin(between)
        with engine.connect() as conn:
            conn = conn.execution_options(toh_write=True)
            started = time.perf_counter()
            conn.begin()
            waited += time.perf_counter() - started
            conn.execute(text("INSERT INTO work (n) VALUES (:n)"), {"n": i})
            spin(hold)
            conn.commit()
            end_turn(conn.info)
    out.put(waited)


def run(turns: bool, hold: float, between: float, n: int) -> tuple[float, float]:
    """(wall seconds, seconds the writers waited) of 2 writers doing n transactions each."""
    url = f"sqlite:///{tempfile.mkdtemp(prefix='toh-turns-')}/turns.db"
    with make_engine(url).begin() as conn:
        conn.execute(text("CREATE TABLE work (n INTEGER)"))
    out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    writers = [multiprocessing.Process(target=writer, args=(url, turns, hold, between, n, out)) for _ in range(2)]
    started = time.perf_counter()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    return time.perf_counter() - started, out.get() + out.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hold-ms", type=float, default=125)
    parser.add_argument("--between-ms", type=float, default=110)
    parser.add_argument("--transactions", type=int, default=16, help="per writer")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    hold, between, n = args.hold_ms / 1000, args.between_ms / 1000, args.transactions
    for round_ in range(1, args.rounds + 1):
        for turns in (False, True):
            wall, waited = run(turns, hold, between, n)
            print(f"round {round_} {'writer turns      ' if turns else 'SQLite busy handler'}: {wall:6.2f} s, "
                  f"lock held {2 * n * hold / wall:4.0%} of it, writers waited {waited:5.2f} s", flush=True)


if __name__ == "__main__":
    main()
