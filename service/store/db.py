"""Database engine, migrations and the unit of work: one transaction that every part of a
request (resources, search index, flags, later the outbox and audit) writes into."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import PoolProxiedConnection

from service.clock import Clock, SystemClock
from service.fhir.errors import ServiceUnavailable
from service.store.audit import COLUMNS, append_events, events_insert
from service.store.audit_journal import AuditJournal, encode
from service.store.writer_turns import begin_immediate, end_turn, writer_turns

if TYPE_CHECKING:
    from service.security import Principal
    from service.store.repository import (Change, Finder, Prepared, Repository, Sealer, StoredResource, Validator,
                                          WriteHook)

BeforeCommit = Callable[["UnitOfWork"], None]
# Runs after a unit of work committed (metrics, notifications to in-process listeners); it must
# not raise, and what it does is not part of the transaction.
AfterCommit = Callable[["UnitOfWork"], None]
# Handles one claimed row of due work (store.followup.DueItem) as of a moment; returns what it did.
DueHandler = Callable[["UnitOfWork", Any, Any], list[str]]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# SQLite checkpoints (copies the WAL's pages into the database file, then fsyncs it) by default
# in the commit that takes the WAL past 1,000 pages, while that writer still holds up the next:
# 10 of the 18 ms of a transaction Bundle's commit (issue 11). Writers here start a checkpoint
# after their commit instead, in a background thread, at most once a CHECKPOINT_INTERVAL per
# process (Database._checkpoint_after_write); SQLite's own automatic checkpoint stays as a backstop at
# WAL_AUTOCHECKPOINT_PAGES (about 40 MB of WAL). See https://www.sqlite.org/wal.html#ckpt.
WAL_AUTOCHECKPOINT_PAGES = 10_000
CHECKPOINT_INTERVAL = 1.0   # seconds
# SQLite's page cache per connection, in KiB (PRAGMA cache_size=-N). SQLite's default, 2 MiB,
# is smaller than the pages a transaction Bundle of a patient's history touches in the search
# index's B-trees, so pages were dropped and read again within the transaction, under the write
# lock: with 32 MiB, the index inserts cost a quarter less CPU (python bench/bench_ingest_steps.py,
# 0.103 against 0.078 ms a resource). The cache fills only with pages a connection reads, up to
# this size (https://www.sqlite.org/pragma.html#pragma_cache_size), and in WAL mode SQLite
# empties it when another connection has written since the connection's last transaction
# (pagerBeginReadTransaction in SQLite's pager.c): while others write, a pooled connection holds
# about what its own last transaction touched.
SQLITE_CACHE_KIB = 32_768
# The page cache of a connection while it drains the audit journal (Database._insert_journaled),
# SQLite's default: a drain writes new pages only, which nothing reads soon after, and with the
# pool's 32 MiB each connection that drained kept them (a worker under reads grew from 120 to
# 201 MB in a minute, against 138 MB flat with this cap: bench/RESULTS.md).
DRAIN_CACHE_KIB = 2_048
# How long a SQLite writer waits for the write lock (its turn, then SQLite's busy timeout) before
# the request fails with 'database is locked' (a 503 the client may retry).
SQLITE_BUSY_SECONDS = 30.0
# How often a connection asks again to turn a new SQLite file to WAL while another holds it (wal_mode).
WAL_MODE_POLL_SECONDS = 0.005

# PostgreSQL planner statistics (Database._statistics_after_write): every STATISTICS_CHECK_ROWS
# resources written by this process, the tables that changed by more than autovacuum's own
# analyze rule (ANALYZE_BASE rows + ANALYZE_SCALE of the table since its last ANALYZE; see
# https://www.postgresql.org/docs/15/routine-vacuuming.html#VACUUM-FOR-STATISTICS) are analyzed.
STATISTICS_CHECK_ROWS = 2_000
ANALYZE_BASE = 50
ANALYZE_SCALE = 0.1

# Database errors that are not the request's fault: unreachable, restarted, deadlock victim.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OperationalError,)
# PostgreSQL: up to this many audit rows are appended by one INSERT statement in autocommit
# (Database._commit_audit; a group commit gathers a few), more by a transaction of statements.
AUDIT_STATEMENT_ROWS = 500
# SQLite: an audit append of up to this many values (rows x columns) is one INSERT statement in
# autocommit, more a transaction of statements. SQLite before 3.32 took at most 999 parameters
# in one statement (SQLITE_MAX_VARIABLE_NUMBER, https://www.sqlite.org/limits.html#max_variable_number).
SQLITE_STATEMENT_VALUES = 999
_SYNCHRONOUS = "toh_sqlite_synchronous"   # in a SQLite connection's info: its PRAGMA synchronous, once changed
# The columns of a read by id (Database.read_current), in StoredResource's order after type and id.
_READ_COLUMNS = ("version", "last_updated", "deleted", "content")
_MIGRATION_LOCK_KEY = 0x70_48_00_01  # pg_advisory_lock key held while migrating

# PostgreSQL SQLSTATEs of a statement stopped for its cost: query_canceled (statement_timeout),
# statement_too_complex, program_limit_exceeded; SQLite's messages for the same.
_TOO_COSTLY_STATES = frozenset({"57014", "54001", "54000"})
_TOO_COSTLY_SQLITE = ("too large", "too many", "too complex", "too big")


def is_too_costly(exc: BaseException) -> bool:
    """Whether a database error means the statement asked too much (a statement timeout, an
    expression or parameter limit) rather than that the database is unavailable."""
    orig = getattr(exc, "orig", None)
    if orig is None:
        return False
    if getattr(orig, "sqlstate", None) in _TOO_COSTLY_STATES:
        return True
    return type(orig).__module__.startswith("sqlite3") and any(m in str(orig) for m in _TOO_COSTLY_SQLITE)


def _one_statement(sql: str, parameters: list[tuple[Any, ...]], relaxed: bool) -> tuple[str, list[Any]]:
    """sql (an INSERT of one row, VALUES with placeholders) as one INSERT of every row of
    parameters, and its parameters in one list. relaxed (PostgreSQL only): the statement also sets
    synchronous_commit off for its own transaction (set_config(..., true) in RETURNING, run
    before the commit at its end), which is what `SET LOCAL synchronous_commit = off` in a
    transaction of BEGIN, SET, INSERT and COMMIT did in four round trips to the server
    (https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADMIN-SET)."""
    head, _, group = sql.partition(" VALUES ")
    statement = f"{head} VALUES {', '.join([group] * len(parameters))}"
    if relaxed:
        statement += " RETURNING set_config('synchronous_commit', 'off', true)"
    return statement, [value for row in parameters for value in row]


def sqlite_synchronous(execute: Callable[[str], Any], info: dict[str, Any], relaxed: bool) -> None:
    """Set a SQLite connection's PRAGMA synchronous through execute (a cursor's or a
    Connection's; no transaction in progress): NORMAL for a relaxed audit append, FULL for
    every other transaction. The setting is the connection's and stays until changed, so it is
    recorded in info (the connection's info dict, emptied when the connection is replaced) and
    changed only when it differs: an audit append leaves it NORMAL and the connection's next
    other transaction (make_engine's begin listener) sets FULL again first, rather than two
    PRAGMA statements around every append. In WAL mode a commit under NORMAL is kept through a
    crash of the process (SIGKILL), not always through a power loss or an OS crash; FULL also
    syncs the WAL at each commit (https://www.sqlite.org/pragma.html#pragma_synchronous). A
    new connection is FULL (SQLite's default), which info's absence stands for."""
    wanted = "NORMAL" if relaxed else "FULL"
    if info.get(_SYNCHRONOUS, "FULL") != wanted:
        execute(f"PRAGMA synchronous={wanted}")
        info[_SYNCHRONOUS] = wanted


def wal_mode(cursor: Any, timeout: float) -> None:
    """Put the SQLite database of cursor (a sqlite3 cursor) in WAL mode, waiting up to timeout
    seconds while another connection holds a lock that forbids it.

    Turning a new database file to WAL needs its exclusive lock, and SQLite answers 'database is
    locked' at once, without its busy handler, while another connection holds the file's
    RESERVED lock: two gunicorn workers starting on a new file (one of them already creating the
    schema) failed to boot that way. See
    https://www.sqlite.org/wal.html#activating_and_configuring_wal_mode. Raises sqlite3's
    OperationalError if the lock is still held after timeout seconds, or on any other error."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(WAL_MODE_POLL_SECONDS)


def make_engine(url: str, echo: bool = False, statement_timeout: float = 0, turns: bool = True) -> Engine:
    """An engine for url; SQLite gets WAL, a busy timeout and explicit BEGIN control, and its
    writers take turns (service.store.writer_turns; turns=False: SQLite's busy handler alone, for
    bench/bench_writer_turns.py); PostgreSQL a statement_timeout of that many seconds on every
    connection (0: none)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        connect_args = {}
        if statement_timeout > 0:
            connect_args["options"] = f"-c statement_timeout={int(statement_timeout * 1000)}"
        return create_engine(url, echo=echo, pool_pre_ping=True, future=True, connect_args=connect_args)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, future=True,
                           connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False})
    writers = writer_turns(parsed, SQLITE_BUSY_SECONDS) if turns else None

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        wal_mode(cur, SQLITE_BUSY_SECONDS)
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        cur.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock up front, so two writers queue instead of failing
        # with 'database is locked' when a read lock would need upgrading.
        # Writers take turns first (service.store.writer_turns); the turn is given back once the
        # transaction ends (UnitOfWork, or when the connection returns to the pool at the latest).
        # An audit append may have left the connection's commits relaxed (sqlite_synchronous).
        sqlite_synchronous(conn.exec_driver_sql, conn.info, relaxed=False)
        if not conn.get_execution_options().get("toh_write"):
            conn.exec_driver_sql("BEGIN DEFERRED")
            return
        begin_immediate(writers, conn.info, conn.exec_driver_sql)

    @event.listens_for(engine, "checkin")
    @event.listens_for(engine, "invalidate")
    def _on_release(_dbapi_conn: Any, record: Any, *_exc: Any) -> None:
        if record is not None:
            end_turn(record.info)

    return engine


class SchemaTooNew(RuntimeError):
    """The database's schema is at an alembic revision this code does not know: a newer
    release migrated it. Serving it could misread or corrupt what that release wrote."""

    def __init__(self, revision: str, head: str) -> None:
        super().__init__(
            f"the database schema is at revision {revision!r}, which this version of the service does not "
            f"know (its newest is {head!r}): a newer release has migrated this database. Run that release "
            "(or newer), or restore a backup made before the upgrade; this one will not start on it.")
        self.revision, self.head = revision, head


class SchemaNotCurrent(RuntimeError):
    """The database's schema is older than this code's (or was never created): a one-off
    command (`toh sweep`, `toh deliver`, `toh export`...) would fail on a missing table or
    column half-way. `toh migrate` brings it up to date."""

    def __init__(self, revision: str | None, head: str) -> None:
        super().__init__(
            f"the database schema is at {revision or 'nothing (never migrated)'}, this version of the service "
            f"expects {head!r}: run `toh migrate` (with the same TOH_DATABASE_URL) first")
        self.revision, self.head = revision, head


def alembic_config(url: str) -> Any:
    """The alembic Config of our migrations for a database URL (no alembic.ini is read)."""
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def known_revisions() -> tuple[set[str], str]:
    """Every revision in migrations/versions/ and the head, e.g. ({"0001_resources", ...},
    "0006_audit_events"). Raises alembic's error if the scripts have several heads."""
    from alembic.script import ScriptDirectory
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    head = script.get_current_head()
    return {rev.revision for rev in script.walk_revisions()}, str(head)


def _current_revision(conn: Connection) -> str | None:
    """The revision in alembic_version (None: never migrated), read directly: alembic's
    MigrationContext would log two INFO lines on each call, and /readyz asks on every probe.
    Raises RuntimeError if the table holds several heads (our migrations have one)."""
    from sqlalchemy import inspect
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    if len(rows) > 1:
        raise RuntimeError(f"the database is at several alembic heads: {sorted(rows)}")
    return str(rows[0]) if rows else None


def _check_known(conn: Connection) -> None:
    current = _current_revision(conn)
    if current is None:
        return
    known, head = known_revisions()
    if current not in known:
        raise SchemaTooNew(current, head)


class UnitOfWork:
    """One database transaction. Rolled back unless commit() is called."""

    def __init__(self, conn: Connection, database: Database) -> None:
        self.conn = conn
        self.database = database
        self.clock = database.clock
        self._repo: Repository | None = None
        self.changes: list[Change] = []  # every write of this transaction, in order
        self.committed = False
        self.principal: Principal | None = None   # who is writing (None: the service itself)
        self.record_provenance = True             # False only for the guide's installation
        self.steps_started_at = 0                 # changes before this index were the caller's
        self.audit_events: list[dict[str, Any]] = []  # AuditEvents to append with this transaction
        self.notify = True                        # False: this transaction's writes notify no one

    @property
    def repo(self) -> Repository:
        """The resource repository bound to this transaction."""
        if self._repo is None:
            from service.store.repository import Repository
            db = self.database
            self._repo = Repository(self.conn, self.clock, db.hooks, db.dialect, db.validators, db.finder,
                                    journal=self.changes, read_only=db.read_only, prechecks=db.prechecks,
                                    sealers=db.sealers)
        return self._repo

    def commit(self) -> None:
        """Run the before-commit steps, then commit.

        Raises what a step raises, and ServiceUnavailable when the database gives up (it is
        unreachable, or chose this transaction as a deadlock victim): the client may retry.
        """
        try:
            if self._repo is not None:
                self._repo.flush()
            self.steps_started_at = len(self.changes)
            for step in self.database.before_commit:
                step(self)
            if self.audit_events:
                append_events(self.conn, self.audit_events)
            self.conn.commit()
            end_turn(self.conn.info)   # SQLite: the next writer's turn (service.store.writer_turns)
        except TRANSIENT_ERRORS as exc:
            raise ServiceUnavailable(f"The database could not commit the change; try again ({type(exc).__name__})") from exc
        self.committed = True
        for after in self.database.after_commit:
            try:
                after(self)
            except Exception:  # noqa: BLE001 - the change is committed; an observer's failure must not undo the answer
                log.exception("an after-commit step failed")


class Database:
    """The store: an engine plus the write hooks every unit of work runs."""

    def __init__(self, url: str, clock: Clock | None = None, echo: bool = False,
                 hooks: list[WriteHook] | None = None, statement_timeout: float = 0,
                 audit_fsync: bool = True, audit_journal: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo, statement_timeout=statement_timeout)
        self.dialect = self.engine.dialect.name
        self.clock: Clock = clock or SystemClock()
        self.hooks: list[WriteHook] = list(hooks or [])
        self.validators: list[Validator] = []
        self.prechecks: list[Validator] = []
        from service.store.repository import id_only_finder
        self.finder: Finder = id_only_finder
        self.before_commit: list[BeforeCommit] = []
        self.after_commit: list[AfterCommit] = []
        self.read_only: frozenset[tuple[str, str]] = frozenset()
        self.due_handlers: dict[str, DueHandler] = {}
        self.sealers: dict[str, Sealer] = {}
        self.audit_fsync = audit_fsync
        # SQLite file: the turns make_engine's writers take (the same lock file)
        self.writer_turns = writer_turns(self.engine.url, SQLITE_BUSY_SECONDS)
        database = self.engine.url.database
        self._checkpoints = self.dialect == "sqlite" and bool(database) and database != ":memory:"
        self._checkpointed_at = 0.0
        self._checkpointing = threading.Lock()
        self.checkpoint_thread: threading.Thread | None = None   # the last background checkpoint
        self._checkpoint_conn: tuple[int, sqlite3.Connection] | None = None   # (pid, connection)
        self.statistics_check_rows = STATISTICS_CHECK_ROWS if self.dialect == "postgresql" else 0
        self._written_since_check = 0
        self._analyzing = threading.Lock()
        self.statistics_thread: threading.Thread | None = None   # the last background ANALYZE
        from service.store.group_commit import GroupCommit
        self._audit_commits = GroupCommit(self._commit_audit)
        # SQLite file: the reads' AuditEvents appended to a journal beside it (service.store.audit_journal)
        self.audit_journal = AuditJournal(f"{database}-audit", len(COLUMNS), fsync=audit_fsync) \
            if self._checkpoints and audit_journal else None
        self._journal_failed = False
        self.drain_thread: threading.Thread | None = None   # the last background drain

    def add_hook(self, hook: WriteHook) -> None:
        """Register a hook that runs inside the transaction of every write."""
        self.hooks.append(hook)

    def add_validator(self, validator: Validator) -> None:
        """Register a check every written resource must pass (it raises a FhirError)."""
        self.validators.append(validator)

    def add_precheck(self, check: Validator) -> None:
        """Register a cheap check every written resource must pass before the model check
        (which costs more): e.g. the bound on the size of its search index. It raises a FhirError."""
        self.prechecks.append(check)

    def passes_prechecks(self, resource: dict[str, Any]) -> bool:
        """Whether resource passes the registered prechecks and R4 (repository.passes_prechecks):
        what can be checked before a unit of work takes its write lock."""
        from service.store.repository import passes_prechecks
        return passes_prechecks(self.prechecks, resource)

    def prepare_create(self, resource: dict[str, Any]) -> Prepared | None:
        """passes_prechecks, then what the write hooks prepare from a create's resource before a
        unit of work takes its write lock (repository.prepare_create, WriteHook): a Prepared
        for Repository.create, or None if a check fails."""
        from service.store.repository import prepare_create
        return prepare_create(self.prechecks, self.hooks, resource)

    def add_before_commit(self, step: BeforeCommit) -> None:
        """Register a step run in every unit of work just before it commits (it may write)."""
        self.before_commit.append(step)

    def add_after_commit(self, step: AfterCommit) -> None:
        """Register a step run after every unit of work that committed (it must not raise; errors
        are logged and swallowed)."""
        self.after_commit.append(step)

    def add_due_handler(self, kind: str, handler: DueHandler) -> None:
        """Register what the sweep does with due work of this kind (see workflows.sweep)."""
        self.due_handlers[kind] = handler

    def add_sealer(self, res_type: str, sealer: Sealer) -> None:
        """Register how resources of this type are sealed before they are stored (see Sealer)."""
        self.sealers[res_type] = sealer

    def set_read_only(self, keys: frozenset[tuple[str, str]]) -> None:
        """Make these (type, id) resources read-only to clients (the service may still write them)."""
        self.read_only = keys

    def set_finder(self, finder: Finder) -> None:
        """Set how conditional requests find matches (the search package provides one)."""
        self.finder = finder

    @contextlib.contextmanager
    def unit_of_work(self, write: bool = True) -> Iterator[UnitOfWork]:
        """A transaction as a context manager; rolls back unless uow.commit() was called.

        A read-only unit of work on PostgreSQL runs in autocommit: under READ COMMITTED each
        statement sees its own snapshot anyway, and it saves the BEGIN and ROLLBACK round
        trips on every read.
        """
        with self.engine.connect() as conn:
            if write:
                conn = conn.execution_options(toh_write=True)
            elif self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.begin()
            uow = UnitOfWork(conn, self)
            try:
                yield uow
            finally:
                if not uow.committed:
                    conn.rollback()
                    if not conn.invalidated:   # an invalidated connection's turn ended with it
                        end_turn(conn.info)
            if write and uow.committed:
                self._checkpoint_after_write()
        if write and uow.committed:
            self._statistics_after_write(len(uow.changes))

    @contextlib.contextmanager
    def statements(self) -> Iterator[PoolProxiedConnection]:
        """A pooled DB-API connection (SQLAlchemy's PoolProxiedConnection) in autocommit, for
        statements that each stand alone: a read by id (read_current), then the request's audit
        append on it (append_audit(via=)). No SQLAlchemy Connection, no BEGIN and no ROLLBACK: a
        single SELECT sees one committed state on its own (SQLite: its implicit transaction;
        PostgreSQL: the statement's snapshot), as it would inside a read-only unit of work.
        Returned to the pool (PostgreSQL: out of autocommit again) on exit. Raises
        OperationalError when no connection can be had."""
        fairy = self._raw_connection()
        sqlite = self.dialect == "sqlite"   # autocommit already (make_engine: we issue BEGIN ourselves)
        driver: Any = fairy.driver_connection
        try:
            if not sqlite:
                driver.autocommit = True
            yield fairy
        finally:
            if not sqlite and fairy.is_valid:
                with contextlib.suppress(Exception):
                    driver.autocommit = False
            fairy.close()

    def _raw_connection(self) -> PoolProxiedConnection:
        """A pooled DB-API connection; raises SQLAlchemy's DBAPIError (OperationalError) when
        none can be had (the database is away)."""
        dialect = self.engine.dialect
        try:
            return self.engine.raw_connection()
        except dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(None, None, exc, dialect.loaded_dbapi.Error, dialect=dialect) from exc

    def read_current(self, res_type: str, res_id: str, via: PoolProxiedConnection) -> StoredResource:
        """The current version of a resource, read by one SELECT through the driver's cursor on
        via (a connection from statements()); raises NotFound if never stored, Gone if deleted
        (as Repository.read), and SQLAlchemy's DBAPIError for a driver error (OperationalError
        when the database is away; the connection invalidated when the error says it is lost)."""
        from service.store.driver_insert import driver_select
        from service.store.repository import StoredResource, current_version
        from service.store.schema import resources
        select = driver_select(resources, self.engine.dialect, _READ_COLUMNS, ("res_type", "res_id"))
        cursor: Any = None
        try:
            cursor = via.cursor()
            row = select.row(cursor, (res_type, res_id))
        except self.engine.dialect.loaded_dbapi.Error as exc:
            raise self._driver_error(exc, select.sql, via, cursor) from exc
        finally:
            if cursor is not None:
                with contextlib.suppress(Exception):
                    cursor.close()
        found = None if row is None else StoredResource(res_type, res_id, *row)
        return current_version(found, res_type, res_id)

    def _driver_error(self, exc: Any, sql: str | None, fairy: Any, cursor: Any,
                      via: Connection | None = None) -> Exception:
        """A driver's error as SQLAlchemy's (DBAPIError.instance: OperationalError,
        IntegrityError...), the connection (via if given, else fairy) invalidated when the error
        says it is lost, as SQLAlchemy does."""
        dialect = self.engine.dialect
        lost = dialect.is_disconnect(exc, fairy.dbapi_connection, cursor)
        if lost:
            (via or fairy).invalidate(exc)
        return DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost,
                                   dialect=dialect)

    def _checkpoint_after_write(self) -> None:
        """On a SQLite file, after a write committed (the write lock is free again): a PASSIVE
        checkpoint if this process has not started one for CHECKPOINT_INTERVAL seconds, in a
        background thread (checkpoint_thread) on a connection of its own (_checkpointer), one at
        a time per process. PASSIVE waits for no reader or writer
        (https://www.sqlite.org/c3ref/wal_checkpoint_v2.html), and SQLite runs it without
        Python's GIL: the request that wrote answers at once instead of waiting for the copy and
        the fsync of the database file (15-28 ms each, one read in a thousand at about 27 ms
        where a read takes 0.5: bench/RESULTS.md). A failure is logged (SQLite's automatic
        checkpoint is the backstop). Other databases: nothing."""
        if not self._checkpoints or time.monotonic() - self._checkpointed_at < CHECKPOINT_INTERVAL:
            return
        if not self._checkpointing.acquire(blocking=False):
            return   # a checkpoint of this process is running
        self._checkpointed_at = time.monotonic()
        try:
            self.checkpoint_thread = threading.Thread(target=self._checkpoint_in_background,
                                                      name="toh-checkpoint", daemon=True)
            self.checkpoint_thread.start()
        except BaseException:
            self._checkpointing.release()
            raise

    def _checkpoint_in_background(self) -> None:
        try:
            self._checkpointer().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception:  # noqa: BLE001 - the commit stands; the next write or SQLite's own checkpoint will do it
            log.warning("the WAL checkpoint after a write failed", exc_info=True)
        finally:
            self._checkpointing.release()

    def _checkpointer(self) -> sqlite3.Connection:
        """This process's own connection for checkpoints (not the pool's: the requests' connections
        stay theirs), opened on first use in the process (a connection is never shared with a
        forked worker), closed by dispose(). Used by one checkpoint at a time."""
        opened = self._checkpoint_conn
        if opened is None or opened[0] != os.getpid():
            database = str(self.engine.url.database)
            opened = (os.getpid(), sqlite3.connect(database, timeout=SQLITE_BUSY_SECONDS, isolation_level=None,
                                                   check_same_thread=False))
            self._checkpoint_conn = opened
        return opened[1]

    def _statistics_after_write(self, written: int) -> None:
        """After a committed write of `written` resources: once this process has written
        statistics_check_rows of them since its last check (0: never), analyze the tables whose
        statistics are stale (analyze_stale) in a background thread (statistics_thread), one at a
        time per process, so that no request waits for an ANALYZE.

        Why the service does what autovacuum should: without statistics (autovacuum off, as on
        the benchmark machine, or behind during a long load) PostgreSQL takes a growing index
        table for nearly empty, and a transaction Bundle's If-None-Exist looked its record number
        up by scanning every earlier Patient's identifier rows (migration 0008 explains why
        statistics alone were not enough): loading `toh synth` bundles read 7,400 index entries a
        bundle at 12,000 resources and 82,000 at 77,000 (about 85 with statistics). A failure is
        logged and left to the next check (the write is committed)."""
        if self.statistics_check_rows <= 0:
            return
        self._written_since_check += written
        if self._written_since_check < self.statistics_check_rows:
            return
        if not self._analyzing.acquire(blocking=False):
            return   # an ANALYZE of this process is running
        self._written_since_check = 0
        self.statistics_thread = threading.Thread(target=self._analyze_in_background, name="toh-analyze",
                                                  daemon=True)
        self.statistics_thread.start()

    def _analyze_in_background(self) -> None:
        try:
            self.analyze_stale()
        except Exception:  # noqa: BLE001 - the writes are committed; the next check tries again
            log.warning("refreshing the planner statistics failed", exc_info=True)
        finally:
            self._analyzing.release()

    def analyze_stale(self) -> list[str]:
        """ANALYZE every table of the current schema that changed by more than ANALYZE_BASE rows
        plus ANALYZE_SCALE of its rows since its last ANALYZE (autovacuum's rule with its
        default settings; PostgreSQL's cumulative statistics, which may lag a second); returns
        their names. Tables autovacuum keeps up with are left alone. SQLite: nothing, []."""
        if self.dialect != "postgresql":
            return []
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            names = [str(name) for name in conn.execute(text(
                "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() "
                "AND n_mod_since_analyze > :base + :scale * greatest(n_live_tup, 0) ORDER BY relname"),
                {"base": ANALYZE_BASE, "scale": ANALYZE_SCALE}).scalars()]
            quote = conn.dialect.identifier_preparer.quote
            for name in names:
                conn.execute(text(f"ANALYZE {quote(name)}"))   # a catalog name, quoted
        if names:
            log.info("analyzed tables with stale planner statistics: %s", ", ".join(names))
        return names

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read-only connection that sees one consistent state of the database however long it
        reads (an export), the audit journal's rows moved into the table first (settle_audit):
        PostgreSQL REPEATABLE READ, READ ONLY; SQLite one read transaction (WAL keeps its
        snapshot). Rolled back at the end."""
        self.settle_audit()
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            conn.begin()
            try:
                conn.execute(text("SELECT count(*) FROM resources WHERE rid < 0"))  # the snapshot starts here
                yield conn
            finally:
                conn.rollback()

    def append_audit(self, rows: list[dict[str, Any]], via: Connection | PoolProxiedConnection | None = None) -> None:
        """Append audit rows (a read's, a search's, a refusal's), kept on return if this process
        dies (SIGKILL) the next instant.

        On a SQLite file they are appended to its audit journal (service.store.audit_journal: one
        write(2), no transaction), which settle_audit moves into the table before anything reads
        it; an append that finds the journal due a drain starts one in a background thread
        (_drain_in_background). A journal that cannot be written (OSError) sends the rows to the
        table instead, as on any other database: in a short transaction of their own, committed
        on return, visible to every reader.

        In the table, rows that threads of this process append at the same moment are committed
        together, in one transaction (service.store.group_commit): each call still returns only
        once its own rows are committed, and a row refused by the database (a duplicate id) fails
        only its own call. via: a connection of the calling thread with no transaction in progress (the
        request's, its own transaction over), to commit on instead of taking another from the
        pool (on PostgreSQL each checkout pings the server first); or a connection of statements().

        With audit_fsync off (Database.audit_fsync, setting TOH_AUDIT_FSYNC) the commit does not
        wait for the disk: SQLite commits with `PRAGMA synchronous=NORMAL` in WAL mode (the
        frames reach the disk with the next write's commit or checkpoint), PostgreSQL with
        synchronous_commit off for the append's own transaction (_one_statement; the WAL writer
        flushes within 3 x wal_writer_delay, 600 ms by default). A power loss, an OS crash or a crash of the
        PostgreSQL server itself may then lose the audit rows of the last moment; a write's own
        AuditEvent always commits with the write, durably. Raises what the driver raises
        (TRANSIENT_ERRORS when the database is away).
        See https://www.sqlite.org/pragma.html#pragma_synchronous and PostgreSQL's
        "Asynchronous Commit" (wal-async-commit)."""
        if not rows:
            return
        journal = self.audit_journal
        if journal is not None and not self._journal_failed:
            try:
                due = journal.append(encode(events_insert(self.engine.dialect, rows)[1]))
            except OSError:
                self._journal_failed = True   # this process appends to the table from now on
                log.warning("the audit journal %s cannot be written; AuditEvents go to the table directly",
                            journal.path, exc_info=True)
            else:
                if due:
                    self._drain_in_background()
                return
        self._audit_commits.submit(rows, via if via is not None and self._idle(via) else None)

    def _drain_in_background(self) -> None:
        """Drain the audit journal in a background thread (drain_thread), one at a time per
        process, so that no request waits for it; a failure is logged (the rows stay in the
        journal for the next drain)."""
        journal = self.audit_journal
        if journal is None or not journal.background.acquire(blocking=False):
            return   # a drain of this process is running

        def drain() -> None:
            try:
                self.settle_audit(wait=False)
            except Exception:  # noqa: BLE001 - kept in the journal; the next drain moves them
                log.warning("draining the audit journal failed", exc_info=True)
            finally:
                journal.background.release()

        try:
            self.drain_thread = threading.Thread(target=drain, name="toh-audit-drain", daemon=True)
            self.drain_thread.start()
        except BaseException:
            journal.background.release()
            raise

    def settle_audit(self, *, wait: bool = True) -> int:
        """Move the audit journal's rows (SQLite file: service.store.audit_journal) into the
        audit_events table, so that what reads the table next sees every AuditEvent appended
        before; returns how many rows moved (-1: wait False and another drain running; 0 on any
        other database). Raises SQLAlchemy's DBAPIError (OperationalError when the database is
        locked or away: TRANSIENT_ERRORS), the journal then kept as it was, and ServiceUnavailable
        when the journal cannot be read or emptied (OSError)."""
        journal = self.audit_journal
        if journal is None:
            return 0
        try:
            return journal.drain(self._insert_journaled, wait=wait)
        except OSError as exc:
            raise ServiceUnavailable(f"The audit journal cannot be read ({exc.strerror})") from exc

    @contextlib.contextmanager
    def _sqlite_transaction(self, fairy: Any, cursor: Any) -> Iterator[None]:
        """A SQLite write transaction through the DB-API cursor of a pooled connection in
        autocommit (make_engine: BEGIN is ours): BEGIN IMMEDIATE once the writer's turn is taken,
        COMMIT when the block ends, ROLLBACK if it raises; the turn given back either way."""
        begin_immediate(self.writer_turns, fairy.info, cursor.execute)
        try:
            yield
            cursor.execute("COMMIT")
        except BaseException:
            if fairy.driver_connection.in_transaction:
                fairy.driver_connection.rollback()
            raise
        finally:
            end_turn(fairy.info)

    def _insert_journaled(self, batches: Iterable[list[tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
        """Insert the audit journal's records (batches of the driver's parameters of
        service.store.audit's columns, read as they are inserted) in one transaction on SQLite,
        skipping an id already in the table (a drain killed before it emptied the journal:
        service.store.audit_journal); returns the records whose id the table holds with other
        values. Committed on return."""
        sql = events_insert(self.engine.dialect, [])[0] + " ON CONFLICT (id) DO NOTHING"
        fairy: Any = self._raw_connection()
        cursor: Any = None
        try:
            cursor = fairy.cursor()
            sqlite_synchronous(cursor.execute, fairy.info, not self.audit_fsync)
            cursor.execute(f"PRAGMA cache_size=-{DRAIN_CACHE_KIB}")   # back to SQLITE_CACHE_KIB below
            conflicting: list[tuple[Any, ...]] = []
            try:
                with self._sqlite_transaction(fairy, cursor):
                    for records in batches:
                        cursor.executemany(sql, records)
                        if cursor.rowcount < len(records):   # ids already taken: the same records, or others
                            by_id = {record[0]: record for record in records}
                            ids = list(by_id)
                            for start in range(0, len(ids), 500):
                                chunk = ids[start:start + 500]
                                cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM audit_events WHERE id IN "
                                               f"({', '.join('?' * len(chunk))})", chunk)
                                conflicting += [by_id[row[0]] for row in cursor.fetchall()
                                                if tuple(row) != by_id[row[0]]]
            finally:
                cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")   # what make_engine gives every connection
        except self.engine.dialect.loaded_dbapi.Error as exc:
            raise self._driver_error(exc, sql, fairy, cursor, None) from exc
        finally:
            if cursor is not None:
                with contextlib.suppress(Exception):
                    cursor.close()
            fairy.close()
        self._checkpoint_after_write()
        return conflicting

    def _idle(self, via: Connection | PoolProxiedConnection) -> bool:
        """Whether via is usable and has no transaction in progress."""
        if isinstance(via, Connection):
            return not via.closed and not via.invalidated and not via.in_transaction()
        if not via.is_valid:
            return False
        driver: Any = via.driver_connection
        return not driver.in_transaction if self.dialect == "sqlite" else bool(driver.autocommit)

    def _commit_audit(self, rows: list[dict[str, Any]], via: Connection | PoolProxiedConnection | None = None) -> None:
        """One transaction appending rows, committed on return (append_audit's durability).

        It runs on a pooled connection through the DB-API cursor itself (SQLite: one INSERT of
        every row in autocommit, its own transaction, once the connection's commits are relaxed:
        sqlite_synchronous; beyond SQLITE_STATEMENT_VALUES values BEGIN IMMEDIATE, INSERTs and
        COMMIT. PostgreSQL: one INSERT of every row in autocommit, its own
        transaction, relaxed by set_config in its RETURNING clause: _one_statement): SQLAlchemy's
        Connection, transaction and statement handling had cost several times the statements
        themselves (bench/RESULTS.md, "Where a read's time goes"). A
        driver error is raised as SQLAlchemy's (DBAPIError.instance: OperationalError,
        IntegrityError...), the connection invalidated when the error says it is lost, as
        SQLAlchemy does. via: a Connection (no transaction in progress), or a connection of
        statements(), to use instead of a pooled connection of its own."""
        dialect = self.engine.dialect
        sql, parameters = events_insert(dialect, rows)
        relaxed = not self.audit_fsync
        sqlite = self.dialect == "sqlite"
        fairy: Any = (via.connection if isinstance(via, Connection) else via) if via is not None \
            else self._raw_connection()
        cursor: Any = None
        autocommit: bool | None = None   # PostgreSQL: the connection's own setting, given back at the end
        # one INSERT of every row in autocommit, its own transaction, unless there are too many
        one = len(parameters) * len(parameters[0]) <= SQLITE_STATEMENT_VALUES if sqlite \
            else len(parameters) <= AUDIT_STATEMENT_ROWS
        try:
            if not sqlite and fairy.driver_connection.autocommit != one:
                autocommit = fairy.driver_connection.autocommit
                fairy.driver_connection.autocommit = one
            cursor = fairy.cursor()
            if sqlite:   # relaxed or not before the transaction, as SQLite requires; then the writer's turn
                sqlite_synchronous(cursor.execute, fairy.info, relaxed)
            try:
                if one:
                    if sqlite and self.writer_turns is not None:
                        self.writer_turns.take(fairy.info)
                    statement, values = _one_statement(sql, parameters, relaxed and not sqlite)
                    cursor.execute(statement, values)       # committed when it returns
                elif sqlite:
                    with self._sqlite_transaction(fairy, cursor):
                        cursor.executemany(sql, parameters)
                else:
                    try:
                        if relaxed:
                            cursor.execute("SET LOCAL synchronous_commit = off")
                        cursor.executemany(sql, parameters)
                        fairy.commit()
                    except BaseException:
                        with contextlib.suppress(Exception):
                            fairy.rollback()
                        raise
            finally:
                end_turn(fairy.info)   # SQLite's writer's turn, if taken
            self._checkpoint_after_write()   # SQLite file only
        except dialect.loaded_dbapi.Error as exc:
            raise self._driver_error(exc, sql, fairy, cursor, via if isinstance(via, Connection) else None) from exc
        finally:
            if cursor is not None:
                with contextlib.suppress(Exception):
                    cursor.close()
            if autocommit is not None and fairy.is_valid:
                with contextlib.suppress(Exception):
                    fairy.driver_connection.autocommit = autocommit
            if via is None:
                fairy.close()

    def analyze(self) -> None:
        """Refresh PostgreSQL's planner statistics (ANALYZE) after a bulk load, as autovacuum
        would within about a minute: with none, the planner takes freshly loaded index tables
        for empty and picks nested loops (the worklist's Task search went from 28 to 86 ms
        p50 on a clinic of 153 patients). SQLite: nothing (its planner needs no statistics)."""
        if self.dialect == "postgresql":
            with self.engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()

    def ping(self) -> None:
        """Run a trivial query; raises if the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to an alembic revision (default: the newest this code knows), once
        even if many workers start. Raises SchemaTooNew, changing nothing, when the database
        was migrated by a newer release (its revision is not in migrations/versions/)."""
        from alembic import command

        cfg = alembic_config(self.url)
        with self._migration_lock() as conn:
            _check_known(conn)
            conn.commit()   # the check's read ends here; alembic runs its own transaction
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def downgrade(self, revision: str) -> None:
        """Take the schema back to an older alembic revision ("base": no tables), running each
        migration's downgrade(); what a dropped table or column held is lost."""
        from alembic import command

        cfg = alembic_config(self.url)
        with self._migration_lock() as conn:
            _check_known(conn)
            conn.commit()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)

    def schema_revision(self) -> str | None:
        """The alembic revision the database is at (None: never migrated)."""
        with self.engine.connect() as conn:
            return _current_revision(conn)

    def require_current_schema(self) -> None:
        """Raise SchemaTooNew (a newer release migrated it) or SchemaNotCurrent (older, or never
        migrated) unless the database is at this code's head revision."""
        with self.engine.connect() as conn:
            _check_known(conn)
            current = _current_revision(conn)
        head = known_revisions()[1]
        if current != head:
            raise SchemaNotCurrent(current, head)

    def check_schema(self) -> None:
        """Raise SchemaTooNew if the database was migrated by a newer release than this code.
        An older schema passes (migrate() or `toh migrate` upgrades it)."""
        with self.engine.connect() as conn:
            _check_known(conn)

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[Connection]:
        if self.dialect == "postgresql":
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                conn.commit()
                try:
                    yield conn
                    conn.commit()
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_KEY})
                    conn.commit()
            return
        database = make_url(self.url).database
        lock_path = Path(f"{database}.migrate.lock") if database and database != ":memory:" else None
        with contextlib.ExitStack() as stack:
            if lock_path is not None:
                handle = stack.enter_context(open(lock_path, "w"))
                fcntl.flock(handle, fcntl.LOCK_EX)
            conn = stack.enter_context(self.engine.connect())
            yield conn
            conn.commit()

    def dispose(self) -> None:
        """Move the audit journal's rows into the table (a failure logged: they stay in the
        journal for the next process), then close every pooled connection, and the checkpoints'
        own (after the checkpoint running)."""
        if self.audit_journal is not None:
            running = self.drain_thread
            if running is not None and running is not threading.current_thread():
                running.join(SQLITE_BUSY_SECONDS)
            try:
                self.settle_audit()
            except Exception:  # noqa: BLE001 - kept in the journal; the next process's first drain moves them
                log.warning("draining the audit journal %s failed", self.audit_journal.path, exc_info=True)
            self.audit_journal.close()
        self.engine.dispose()
        running = self.checkpoint_thread
        if running is not None and running is not threading.current_thread():
            running.join(SQLITE_BUSY_SECONDS)
        opened, self._checkpoint_conn = self._checkpoint_conn, None
        if opened is not None and opened[0] == os.getpid():
            opened[1].close()
