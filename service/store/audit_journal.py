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
other as processes do). An appender holds the journal shared for its one write(2). A drain
first seals the journal: once it holds it exclusively (the appends in progress over) it copies
its bytes to a sealed part (`<journal>.sealed.<ns>.<pid>`, written under a temporary name, then
renamed) and empties the journal, which appends (O_APPEND) fill again from its start. The drain
then inserts each sealed part's records in one transaction and removes the part: appends wait
for a copy, never for the database. One drain at a time (an exclusive flock on
`<journal>.drain`); a part a killed drain left is the next drain's, a temporary copy is removed
(the journal still holds its bytes).

A drain killed after its commit and before removing the part, or after renaming the part and
before emptying the journal, leaves records twice: the next drain inserts them again with
``ON CONFLICT (id) DO NOTHING`` and compares what the table holds under each id with the record
(a different AuditEvent under an id already taken is kept in `<journal>.rejected` and logged as
an error, never dropped in silence).

Who drains: the append that finds its process has appended DRAIN_BYTES, or not tried a drain
for DRAIN_SECONDS, since its last drain starts a drain in a background thread (Database.append_audit); every reader
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
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import orjson

log = logging.getLogger(__name__)

# A drain's fixed costs (a transaction, a WAL commit, the other connections' page caches emptied)
# are worth sharing among many rows: at most one a second per process, or every 4 MiB (about
# 2,500 reads' AuditEvents).
DRAIN_BYTES = 4 * 1024 * 1024
DRAIN_SECONDS = 1.0
_TEMPORARY = ".tmp"   # a sealed part being written

Record = tuple[Any, ...]
# Inserts batches of records (read as it goes) in one transaction, committed on return; returns
# the records whose id the table already held with other values (the rest are in the table).
# Raises what the database raises.
Inserter = Callable[[Iterable[list[Record]]], list[Record]]
_CHUNK = 256 * 1024   # bytes of a sealed part read (and records inserted) at a time: a drain's memory


def encode(records: Sequence[Sequence[Any]]) -> bytes:
    """The journal's bytes for records (tuples of str, int or None: the driver's parameters)."""
    return b"".join(b"\n" + orjson.dumps(list(record)) + b"\n" for record in records)


def decode(data: bytes, width: int) -> tuple[list[Record], int]:
    """(the records in data, in order; how many lines were torn): a line that is not a JSON
    array of width values is a torn record."""
    return _decode_lines(data.split(b"\n"), width)


def _decode_lines(lines: list[bytes], width: int) -> tuple[list[Record], int]:
    records: list[Record] = []
    torn = 0
    for line in lines:
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
        self._fd = -1
        self._lock = threading.Lock()      # appenders of this process: one write at a time on the one fd
        self.background = threading.Lock()   # held by this process's background drain (Database)
        self._appended = 0                 # bytes this process appended since its last drain
        self._drained_at = time.monotonic()
        _JOURNALS.add(self)

    def _forget_parent(self) -> None:
        """In a forked child: its own descriptor and lock (a descriptor inherited over fork
        shares its flock with the parent; a lock held by another thread at the fork stays held)."""
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._lock = threading.Lock()
        self.background = threading.Lock()
        self._appended = 0

    def append(self, data: bytes) -> bool:
        """Append data (encode's bytes) durably (see the module docstring); returns whether the
        journal is due a drain (DRAIN_BYTES appended by this process, or DRAIN_SECONDS, since its
        last drain). Raises OSError (the folder read-only, the disk full): nothing of data is then
        to be counted on."""
        with self._lock:
            if self._fd < 0:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fd = self._fd
            fcntl.flock(fd, fcntl.LOCK_SH)   # no drain takes the journal's bytes while this is held
            try:
                written = os.write(fd, data)
                while written < len(data):   # a short write (a signal, the disk filling): the rest
                    written += os.write(fd, data[written:])
                if self.fsync:
                    os.fdatasync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._appended += len(data)
            appended = self._appended
        return appended >= DRAIN_BYTES or time.monotonic() - self._drained_at >= DRAIN_SECONDS

    def _sync(self, fd: int | None = None) -> None:
        """fsync fd (default: the folder, after a rename or removal), with TOH_AUDIT_FSYNC."""
        if not self.fsync:
            return
        own = fd is None
        fd = os.open(self.folder, os.O_RDONLY) if fd is None else fd
        try:
            os.fsync(fd)
        finally:
            if own:
                os.close(fd)

    def _seal(self) -> None:
        """Once the appends in progress are over, copy the journal's bytes to a sealed part
        (`<path>.sealed.<ns>.<pid>`, written under a temporary name and renamed into place),
        then empty the journal; appends wait meanwhile (a copy of at most a few MiB)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except (FileNotFoundError, IsADirectoryError):   # none yet; or not ours, so nothing appended to it
            return
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return
            fcntl.flock(fd, fcntl.LOCK_EX)   # waits for the appends in progress (one write(2) each)
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                return
            part = os.path.join(self.folder, f"{self._sealed_prefix}{time.time_ns():020d}.{os.getpid()}")
            out = os.open(f"{part}{_TEMPORARY}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                while chunk:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(out, view):]
                    chunk = os.read(fd, _CHUNK)
                self._sync(out)
            finally:
                os.close(out)
            os.rename(f"{part}{_TEMPORARY}", part)
            self._sync()
            os.ftruncate(fd, 0)   # a kill before this leaves the records twice: the drain skips the copies
            self._sync(fd)
        finally:
            os.close(fd)   # releases the lock

    def drain(self, insert: Inserter, *, wait: bool = True) -> int:
        """Seal the journal, then move every sealed part's records into the table with insert (one
        transaction a part, oldest first), removing each part once committed; returns how many
        records were moved, or -1 when wait is False and another drain is running. Raises what
        insert raises (that part and the later ones then kept for the next drain) and OSError."""
        self._drained_at = time.monotonic()   # an attempt counts: DRAIN_SECONDS from now
        self._appended = 0
        if not os.path.exists(self.path) and not self._sealed_parts():
            return 0   # nothing was ever appended, or all of it was moved
        lock = os.open(f"{self.path}.drain", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return -1
            for name in os.listdir(self.folder):   # the copies of a drain killed while it sealed
                if name.startswith(self._sealed_prefix) and name.endswith(_TEMPORARY):
                    os.unlink(os.path.join(self.folder, name))
            self._seal()
            return sum(self._move(part, insert) for part in self._sealed_parts())
        finally:
            os.close(lock)   # releases the lock

    def _sealed_parts(self) -> list[str]:
        """The paths of the sealed parts waiting to be moved, oldest first."""
        return [os.path.join(self.folder, name) for name in sorted(
            entry.name for entry in os.scandir(self.folder)
            if entry.name.startswith(self._sealed_prefix) and not entry.name.endswith(_TEMPORARY)
            and entry.is_file())]

    def _move(self, part: str, insert: Inserter) -> int:
        """Insert one sealed part's records, then remove it; returns how many it held."""
        counts = [0, 0]   # records, torn lines

        def batches(handle: Any) -> Iterator[list[Record]]:
            rest = b""
            while chunk := handle.read(_CHUNK):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()   # the start of a line the next chunk ends
                records, torn = _decode_lines(lines, self.width)
                counts[0] += len(records)
                counts[1] += torn
                if records:
                    yield records
            records, torn = _decode_lines([rest], self.width)
            counts[0] += len(records)
            counts[1] += torn
            if records:
                yield records

        with open(part, "rb") as handle:
            conflicting = insert(batches(handle))
        if counts[1]:
            log.warning("the audit journal %s held %d torn record(s): a process killed while appending "
                        "(their requests were never answered)", part, counts[1])
        if conflicting:
            with open(f"{self.path}.rejected", "ab") as rejected:
                rejected.write(encode(conflicting))
                rejected.flush()
                os.fsync(rejected.fileno())
            log.error("%d audit record(s) of %s carry the id of another AuditEvent already recorded; "
                      "kept in %s.rejected", len(conflicting), part, self.path)
        os.unlink(part)
        self._sync()
        return counts[0]

    def close(self) -> None:
        """Close this process's append descriptor."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = -1


_JOURNALS: weakref.WeakSet[AuditJournal] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for journal in list(_JOURNALS):
        journal._forget_parent()


os.register_at_fork(after_in_child=_after_fork_in_child)
