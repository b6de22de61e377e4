"""Export and restore: FHIR Bulk Data export jobs, `toh export` and `toh import`.

NDJSON files (https://hl7.org/fhir/uv/bulkdata/export.html#bulk-data-output-file-request): one
file per resource type, `<Type>.ndjson`, one resource per line, exactly the JSON the store
serves (meta.versionId and meta.lastUpdated included).

Bulk Data jobs: the kick-off (service.api.bulk_export) writes a pending row in export_jobs
(service.store.bulk) and starts a thread that runs it at once; the scheduler's tick (every
`toh serve` worker, `toh worker`) also runs pending jobs and takes over any whose lease ran
out, so the row, not the thread, is the source of truth: any host may run a job, each job runs
once at a time, and a process killed mid-export costs a lease (5 minutes), not the job. A job
reads one consistent snapshot (its transactionTime), writes its files under
`TOH_EXPORT_DIR/<job>/` (a temporary name, renamed when whole), renews its lease as it goes,
and stops at once, its files removed, when cancelled (DELETE) or when the process is stopping
(the job is then given back, pending). Files expire `TOH_EXPORT_EXPIRY_HOURS` after the job
completes; the tick deletes them and forgets the job.

`toh export --out DIR [--history]` writes the same files for every type (with --history every
version, oldest first, and `_versions.ndjson`: one line per version with its lastUpdated to the
microsecond, method and whether it is a deletion), `manifest.json` (the Bulk Data manifest, with
relative URLs), and `_service/<table>.ndjson`, the rows of the service's own tables (the audit
trail, follow-up bookkeeping, reminders), so that `toh import DIR` restores the database as it
was: ids, versions, lastUpdated, search index, Flags, plans and the sweep's due work.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

from service.clock import Clock
from service.fhir import resources as fhir
from service.fhir.errors import FhirError
from service.store import Database
from service.store.bulk import (ExportJob, ExportJobs, VersionRow, all_versions, count_stored, current_resources,
                                restore_rows, service_tables, stored_types, table_rows)
from service.store.repository import format_instant

log = logging.getLogger(__name__)

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
VERSIONS_FILE = "_versions.ndjson"
SERVICE_FOLDER = "_service"
RENEW_EVERY = 1000            # lines written between lease renewals (and cancellation checks)

# Set when the process is stopping (service.scheduling.stop_background): a running job is given back.
STOPPING = threading.Event()
_threads: list[threading.Thread] = []
_threads_lock = threading.Lock()

Compartments = Callable[[Sequence[str] | None], Any]   # patient ids (None: every patient) -> SQL condition


class ImportRefused(Exception):
    """`toh import` will not restore: the database is not empty, or a file is malformed
    (which file and line). Nothing was written."""


@dataclass(frozen=True)
class Written:
    """One output file: its type, name and number of resources (lines)."""

    res_type: str
    name: str
    count: int


class Stopped(Exception):
    """The job was cancelled, taken over, or the process is stopping."""


def _write_lines(path: Path, lines: Iterable[str], every: Callable[[int], None] | None = None) -> int:
    """Write lines to path (via path.part, renamed when whole); returns how many."""
    part = path.with_name(path.name + ".part")
    count = 0
    with open(part, "w", encoding="utf-8") as out:
        for line in lines:
            out.write(line)
            out.write("\n")
            count += 1
            if every is not None and count % RENEW_EVERY == 0:
                every(count)
    if count:
        os.replace(part, path)
    else:
        part.unlink()
    return count


def _manifest(transaction_time: datetime, request: str, written: list[Written], url: Callable[[str], str],
              **extension: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "transactionTime": format_instant(transaction_time), "request": request, "requiresAccessToken": True,
        "output": [{"type": w.res_type, "url": url(w.name), "count": w.count} for w in written], "error": []}
    if extension:
        manifest["extension"] = extension
    return manifest


class BulkExporter:
    """Runs export jobs of one database into a folder (see module docstring)."""

    def __init__(self, database: Database, folder: Path, compartments: Compartments, *, expiry: timedelta,
                 clock: Clock) -> None:
        self.database = database
        self.folder = folder
        self.compartments = compartments
        self.expiry = expiry
        self.clock = clock

    def job_folder(self, job_id: str) -> Path:
        return self.folder / job_id

    def start(self, job_id: str) -> None:
        """Run a job in a thread of this process now (the tick would run it otherwise)."""
        thread = threading.Thread(target=self.run_pending, kwargs={"job_id": job_id},
                                  name=f"toh-export-{job_id[:8]}", daemon=True)
        with _threads_lock:
            _threads[:] = [t for t in _threads if t.is_alive()] + [thread]
        thread.start()

    def run_pending(self, job_id: str | None = None, stop: Callable[[], bool] | None = None) -> int:
        """Claim and run jobs (the named one only, if given) until none is free or stop says
        so (default: the process is stopping); returns how many completed. A job's failure is
        recorded on it, never raised."""
        stop = stop or (lambda: STOPPING.is_set())
        done = 0
        while not stop():
            with self.database.unit_of_work() as uow:
                job = ExportJobs(uow.conn, self.database.dialect).claim(self.clock.now(), job_id)
                uow.conn.commit()
                uow.committed = True
            if job is None:
                return done
            done += self._run(job, stop)
            if job_id is not None:
                return done
        return done

    def _run(self, job: ExportJob, stop: Callable[[], bool]) -> int:
        folder = self.job_folder(job.id)
        shutil.rmtree(folder, ignore_errors=True)      # a previous holder's leftovers
        folder.mkdir(parents=True, exist_ok=True)
        try:
            manifest = self._export(job, folder, stop)
        except Stopped:
            shutil.rmtree(folder, ignore_errors=True)
            if stop():
                self._short(lambda jobs: jobs.release(job.id))
            return 0
        except Exception as exc:  # noqa: BLE001 - recorded on the job; the client sees it in the status
            log.exception("export %s failed", job.id)
            shutil.rmtree(folder, ignore_errors=True)
            now = self.clock.now()
            self._short(lambda jobs: jobs.fail(job.id, f"{type(exc).__name__}: {exc}", now, now + self.expiry))
            return 0
        now = self.clock.now()
        if not self._short(lambda jobs: jobs.complete(job.id, manifest, now, now + self.expiry)):
            shutil.rmtree(folder, ignore_errors=True)    # cancelled while it was being finished
            return 0
        return 1

    def _short(self, action: Callable[[ExportJobs], Any]) -> Any:
        with self.database.unit_of_work() as uow:
            result = action(ExportJobs(uow.conn, self.database.dialect))
            uow.conn.commit()
            uow.committed = True
        return result

    def _export(self, job: ExportJob, folder: Path, stop: Callable[[], bool]) -> dict[str, Any]:
        params = job.params
        since = datetime.fromisoformat(params["since"]) if params.get("since") else None
        compartment = None if params["level"] == "system" else self.compartments(params.get("patients"))
        written: list[Written] = []
        with self.database.snapshot() as conn:
            transaction_time = self.clock.now()
            types = params.get("types") or stored_types(conn)
            if params["level"] != "system":
                allowed = set(params["compartment_types"])
                types = [t for t in types if t in allowed]
            for n, res_type in enumerate(types):
                def renew(count: int, res_type: str = res_type, n: int = n) -> None:
                    progress = f"{n} of {len(types)} types done; {res_type}: {count} resources"
                    if stop() or not self._short(lambda jobs: jobs.renew(job.id, self.clock.now(), progress)):
                        raise Stopped()
                renew(0)
                count = _write_lines(folder / f"{res_type}.ndjson",
                                     current_resources(conn, res_type, since=since, in_compartment=compartment),
                                     renew)
                if count:
                    written.append(Written(res_type, f"{res_type}.ndjson", count))
        return _manifest(transaction_time, job.request, written, lambda name: f"{params['base']}/$export-file/{job.id}/{name}")

    def expire(self) -> int:
        """Delete the files of expired, failed and cancelled jobs and forget them; how many."""
        now = self.clock.now()
        with self.database.unit_of_work() as uow:
            jobs = ExportJobs(uow.conn, self.database.dialect)
            gone = jobs.expired(now)
            for job_id in gone:
                shutil.rmtree(self.job_folder(job_id), ignore_errors=True)
            jobs.forget(gone)
            uow.conn.commit()
            uow.committed = True
        return len(gone)


def stop_exports(timeout: float = 10.0) -> None:
    """The process is stopping: running jobs give themselves back (pending) and this waits for
    their threads, at most timeout seconds each."""
    STOPPING.set()
    with _threads_lock:
        threads = list(_threads)
    for thread in threads:
        thread.join(timeout)


# -- toh export / toh import -----------------------------------------------------------------

def export_to_folder(database: Database, out: Path, *, history: bool, clock: Clock, request: str) -> dict[str, Any]:
    """Write every resource (with history: every version) and the service's tables under out
    (see module docstring); returns the manifest. Raises FileExistsError if out holds files."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    (out / SERVICE_FOLDER).mkdir(parents=True, exist_ok=True)
    written: list[Written] = []
    with database.snapshot() as conn:
        transaction_time = clock.now()
        if history:
            versions_out = open(out / VERSIONS_FILE, "w", encoding="utf-8")
        try:
            for res_type in stored_types(conn, history=history):
                if history:
                    lines = _with_version_index(all_versions(conn, res_type), versions_out)
                else:
                    lines = current_resources(conn, res_type)
                count = _write_lines(out / f"{res_type}.ndjson", lines)
                if count:
                    written.append(Written(res_type, f"{res_type}.ndjson", count))
        finally:
            if history:
                versions_out.close()
        for table in service_tables():
            _write_lines(out / SERVICE_FOLDER / f"{table.name}.ndjson",
                         (json.dumps(row, separators=(",", ":"), ensure_ascii=False) for row in table_rows(conn, table)))
    manifest = _manifest(transaction_time, request, written, lambda name: name, history=history,
                         schemaRevision=database.schema_revision())
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def _with_version_index(versions: Iterator[VersionRow], index: IO[str]) -> Iterator[str]:
    """The content of each version that is not a deletion, writing every version's line to index."""
    for v in versions:
        index.write(json.dumps({"resourceType": v.res_type, "id": v.res_id, "versionId": v.version,
                                "lastUpdated": v.last_updated.isoformat(), "method": v.method,
                                "deleted": v.deleted}, separators=(",", ":")) + "\n")
        if not v.deleted:
            yield str(v.content)


@dataclass
class ImportReport:
    """What `toh import` restored: versions per type, and rows per service table."""

    versions: dict[str, int]
    rows: dict[str, int]


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\n")
            if line.strip():
                yield number, line


def _resource_line(path: Path, number: int, line: str, res_type: str) -> dict[str, Any]:
    """A line of <Type>.ndjson, checked: JSON, of that type, with an id, versionId and lastUpdated,
    valid R4. Raises ImportRefused naming the file and line."""
    where = f"{path.name} line {number}"
    try:
        resource = json.loads(line)
    except ValueError as exc:
        raise ImportRefused(f"{where}: not JSON ({exc})") from exc
    if not isinstance(resource, dict) or resource.get("resourceType") != res_type:
        raise ImportRefused(f"{where}: not a {res_type}")
    meta = resource.get("meta") or {}
    if not isinstance(resource.get("id"), str) or not str(meta.get("versionId", "")).isdigit() \
            or not isinstance(meta.get("lastUpdated"), str):
        raise ImportRefused(f"{where}: a resource needs its id, meta.versionId and meta.lastUpdated")
    try:
        fhir.check_id(resource["id"])
        fhir.validate(resource, res_type)
    except FhirError as exc:
        raise ImportRefused(f"{where}: {exc.diagnostics}") from exc
    return resource


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"no time zone in {text!r}")
    return moment


def _chains(folder: Path, res_type: str, index: Iterator[dict[str, Any]] | None) -> Iterator[list[VersionRow]]:
    """The version chains of one type's file: with the history index, each resource's versions
    (the index gives deletions, methods and exact instants); without it, one version per line."""
    path = folder / f"{res_type}.ndjson"
    contents = _lines(path) if path.exists() else iter(())
    if index is None:
        for number, line in contents:
            resource = _resource_line(path, number, line, res_type)
            version = int(resource["meta"]["versionId"])
            yield [VersionRow(res_type, resource["id"], version, _instant(resource["meta"]["lastUpdated"]),
                              "POST" if version == 1 else "PUT", False, line)]
        return
    chain: list[VersionRow] = []
    for entry in index:
        content = None
        if not entry["deleted"]:
            number, line = next(contents, (0, ""))
            resource = _resource_line(path, number, line, res_type)
            if (resource["id"], int(resource["meta"]["versionId"])) != (entry["id"], entry["versionId"]):
                raise ImportRefused(f"{path.name} line {number}: expected {res_type}/{entry['id']} "
                                    f"version {entry['versionId']} ({VERSIONS_FILE})")
            content = line
        row = VersionRow(res_type, entry["id"], int(entry["versionId"]), _instant(entry["lastUpdated"]),
                         str(entry["method"]), bool(entry["deleted"]), content)
        if chain and chain[-1].res_id != row.res_id:
            yield chain
            chain = []
        if row.version != (chain[-1].version + 1 if chain else 1):
            raise ImportRefused(f"{VERSIONS_FILE}: {res_type}/{row.res_id} version {row.version} out of order")
        chain.append(row)
    if chain:
        yield chain
    leftover = next(contents, None)
    if leftover is not None:
        raise ImportRefused(f"{path.name} line {leftover[0]}: not in {VERSIONS_FILE}")


def import_from_folder(database: Database, folder: Path, batch: int = 500) -> ImportReport:
    """Restore what export_to_folder wrote into an empty database, in one transaction, through
    Repository.restore (so the search index is built); then the service's tables. Raises
    ImportRefused, writing nothing, if the database holds any resource or AuditEvent or a file
    is malformed."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.exists():
        raise ImportRefused(f"{folder} has no manifest.json: not written by `toh export`")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    history = bool((manifest.get("extension") or {}).get("history"))
    types = [o["type"] for o in manifest.get("output", [])]
    report = ImportReport({}, {})
    database.settle_audit()   # AuditEvents still in the audit journal count too
    with database.unit_of_work() as uow:
        stored, audited = count_stored(uow.conn)
        if stored or audited:
            raise ImportRefused(f"the database is not empty ({stored} resources, {audited} AuditEvents): "
                                "`toh import` restores into an empty one (made by `toh migrate`, before "
                                "`toh serve` installs the guide)")
        index_by_type = _index_by_type(folder / VERSIONS_FILE) if history else {}
        for res_type in sorted(set(types) | set(index_by_type)):
            index = iter(index_by_type.get(res_type, [])) if history else None
            pending: list[list[VersionRow]] = []
            count = 0
            for chain in _chains(folder, res_type, index):
                pending.append(chain)
                if len(pending) >= batch:
                    count += uow.repo.restore(pending)
                    pending = []
            count += uow.repo.restore(pending)
            report.versions[res_type] = count
        for table in service_tables():
            path = folder / SERVICE_FOLDER / f"{table.name}.ndjson"
            rows = [json.loads(line) for _, line in _lines(path)] if path.exists() else []
            try:
                restore_rows(uow.conn, database.dialect, table, rows)
            except ValueError as exc:
                raise ImportRefused(str(exc)) from exc
            report.rows[table.name] = len(rows)
        uow.commit()
    database.analyze()      # searches on the restored data plan with its statistics at once
    return report


def _index_by_type(path: Path) -> dict[str, list[dict[str, Any]]]:
    if not path.exists():
        raise ImportRefused(f"a history export needs {VERSIONS_FILE}")
    index: dict[str, list[dict[str, Any]]] = {}
    for number, line in _lines(path):
        try:
            entry = json.loads(line)
            index.setdefault(str(entry["resourceType"]), []).append(entry)
        except (ValueError, KeyError, TypeError) as exc:
            raise ImportRefused(f"{VERSIONS_FILE} line {number}: {exc}") from exc
    return index
