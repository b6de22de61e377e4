"""The audit journal of a SQLite database file: the AuditEvents of reads, searches and refusals
appended to a file beside the database before the answer leaves, and moved into the
audit_events table in batches.

Why: on SQLite, a read's AuditEvent committed in a transaction of its own before the answer
cost more than the rest of the read (bench/RESULTS.md, "What each part of a read costs"): the
INSERT and COMMIT under the one write lock, writers of two workers taking turns, and every
commit emptying the page cache of every other pooled connection, which then read their pages
again (SQLite's pager resets its cache when the WAL changed since its last transaction). An
append to this journal is one write(2), as durable as that commit was: SQLite in WAL mode with
`synchronous=NORMAL` keeps a commit through a SIGKILL but not through a power loss, and so does
a write(2) that has returned (the page cache of the kernel holds it); with TOH_AUDIT_FSYNC the
append is followed by fdatasync(2), as the commit then was by an fsync of the WAL.

The file (`<database file>-audit`) holds one record per line: the JSON array of the audit row's
values as the driver binds them (service.store.audit.events_insert), between two newlines, so a
record torn by a process killed in the middle of its write(2) spoils one line, never the next
record. Its request was never answered: the drain logs and skips it.

Locks (flock(2) on one open file description each, so threads of one process exclude each
other as processes do). An appender holds the journal shared for its one write(2), having
checked that its descriptor is still the file at the journal's path. A drain first seals the
journal: once it holds it exclusively (the appends in progress over) it renames it to a sealed
part (`<journal>.sealed.<ns>.<pid>`), and the next append finds its descriptor no longer at the
path and opens a new journal. The drain then inserts each sealed part's records in one
transaction and removes the part: appends never wait for the database. One drain at a time
(an exclusive flock on `<journal>.drain`); a part a killed drain left is the next drain's.

A drain killed after its commit and before removing the part leaves records already in the
table: the next drain inserts them again with ``ON CONFLICT (id) DO NOTHING`` and compares what
the table holds under each id with the record (a different AuditEvent under an id already taken
is kept in `<journal>.rejected` and logged as an error, never dropped in silence).

Who drains: the append that finds the journal past DRAIN_BYTES, or not drained by this process
for DRAIN_SECONDS, starts a drain in a background thread (Database.append_audit); every reader
of the audit_events table drains before it reads (Database.settle_audit: the AuditEvent read and
search, snapshots for export, an import's emptiness check); and Database.dispose (a worker
leaving) and the application's start (what a killed process left).
"""
from __future__ import annotations

import fcntl
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

log = logging.getLogger(__name__)

# A drain's fixed costs (a transaction, a WAL commit, the other connections' page caches emptied)
# are worth sharing among many rows: at most one a second per process, or every 4 MiB (about
# 2,500 reads' AuditEvents).
DRAIN_BYTES = 4 * 1024 * 1024
DRAIN_SECONDS = 1.0

Record = tuple[Any, ...]
# Inserts records in one transaction, committed on return; returns the records whose id the
# table already held with other values (the rest are in the table). Raises what the database raises.
Inserter = Callable[[list[Record]], list[Record]]


def encode(records: Sequence[Sequence[Any]]) -> bytes:
    """The journal's bytes for records (tuples of str, int or None: the driver's parameters)."""
    return b"".join(b"\n" + orjson.dumps(list(record)) + b"\n" for record in records)


def decode(data: bytes, width: int) -> tuple[list[Record], int]:
    """(the records in data, in order; how many lines were torn): a line that is not a JSON
    array of width values is a torn record."""
    records: list[Record] = []
    torn = 0
    for line in data.split(b"\n"):
        if not line:
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            torn += 1
            continue
        if isinstance(value, list) and len(value) == width:
            records.append(tuple(value))
        else:
            torn += 1
    return records, torn


class AuditJournal:
    """The journal file at path (created on first use, mode 0600). fsync: fdatasync after each
    append, fsync of the folder after a rename or removal (TOH_AUDIT_FSYNC). width: the number
    of values of a record."""

    def __init__(self, path: str, width: int, fsync: bool = False) -> None:
        self.path = path
        self.width = width
        self.fsync = fsync
        self.folder = os.path.dirname(os.path.abspath(path))
        self._sealed_prefix = os.path.basename(path) + ".sealed."
        self._pid = -1
        self._fd = -1
        self._lock = threading.Lock()      # appenders of this process: one write at a time on the one fd
        self._drained_at = time.monotonic()

    def _open(self) -> int:
        """This process's descriptor of the journal at path, opened (created) if it has none, or
        if it was opened in another process (a descriptor inherited over fork shares its flock
        with the parent)."""
        if self._pid != os.getpid() or self._fd < 0:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd

    def _is_current(self, fd: int) -> bool:
        """Whether fd is the file at path (not one a drain has sealed since it was opened)."""
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_ino, here.st_dev) == (mine.st_ino, mine.st_dev)

    def append(self, data: bytes) -> bool:
        """Append data (encode's bytes) durably (see the module docstring); returns whether the
        journal is due a drain (DRAIN_BYTES or DRAIN_SECONDS). Raises OSError (the folder read-only,
        the disk full): nothing of data is then to be counted on."""
        with self._lock:
            while True:
                fd = self._open()
                fcntl.flock(fd, fcntl.LOCK_SH)   # no drain seals the file while this is held
                try:
                    if self._is_current(fd):
                        written = os.write(fd, data)
                        while written < len(data):   # a short write (a signal, the disk filling): the rest
                            written += os.write(fd, data[written:])
                        if self.fsync:
                            os.fdatasync(fd)
                        size = os.lseek(fd, 0, os.SEEK_CUR)
                        break
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)   # sealed by a drain: append to the new journal at path
                self._fd = -1
        return size >= DRAIN_BYTES or time.monotonic() - self._drained_at >= DRAIN_SECONDS

    def _sync_folder(self) -> None:
        if self.fsync:
            fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _seal(self) -> None:
        """Rename the journal at path to a sealed part (`<path>.sealed.<ns>.<pid>`) once the
        appends in progress are over, unless it is empty; appends go to a new journal from then on."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)   # waits for the appends in progress (one write(2) each)
            mine = os.fstat(fd)
            if stat.S_ISREG(mine.st_mode) and mine.st_size > 0 and self._is_current(fd):
                os.rename(self.path, os.path.join(self.folder,
                                                  f"{self._sealed_prefix}{time.time_ns():020d}.{os.getpid()}"))
                self._sync_folder()
        finally:
            os.close(fd)   # releases the lock

    def drain(self, insert: Inserter, *, wait: bool = True) -> int:
        """Seal the journal, then move every sealed part's records into the table with insert (one
        transaction a part, oldest first), removing each part once committed; returns how many
        records were moved, or -1 when wait is False and another drain is running. Raises what
        insert raises (that part and the later ones then kept for the next drain) and OSError."""
        self._drained_at = time.monotonic()   # an attempt counts: DRAIN_SECONDS from now
        if not os.path.exists(self.path) and not self._sealed_parts():
            return 0   # nothing was ever appended, or all of it was moved
        lock = os.open(f"{self.path}.drain", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return -1
            self._seal()
            return sum(self._move(part, insert) for part in self._sealed_parts())
        finally:
            os.close(lock)   # releases the lock

    def _sealed_parts(self) -> list[str]:
        """The paths of the sealed parts waiting to be moved, oldest first."""
        return [os.path.join(self.folder, name) for name in sorted(
            entry.name for entry in os.scandir(self.folder)
            if entry.name.startswith(self._sealed_prefix) and entry.is_file())]

    def _move(self, part: str, insert: Inserter) -> int:
        """Insert one sealed part's records, then remove it; returns how many it held."""
        with open(part, "rb") as handle:
            data = handle.read()
        records, torn = decode(data, self.width)
        if torn:
            log.warning("the audit journal %s held %d torn record(s): a process killed while appending "
                        "(their requests were never answered)", part, torn)
        if records:
            conflicting = insert(records)
            if conflicting:
                with open(f"{self.path}.rejected", "ab") as rejected:
                    rejected.write(encode(conflicting))
                    rejected.flush()
                    os.fsync(rejected.fileno())
                log.error("%d audit record(s) of %s carry the id of another AuditEvent already recorded; "
                          "kept in %s.rejected", len(conflicting), part, self.path)
        os.unlink(part)
        self._sync_folder()
        return len(records)

    def close(self) -> None:
        """Close this process's append descriptor."""
        with self._lock:
            if self._pid == os.getpid() and self._fd >= 0:
                os.close(self._fd)
            self._pid, self._fd = -1, -1
