"""The `toh` command: `toh serve` runs the service under gunicorn (with the sweep's and the
deliveries' tick), `toh worker` runs only the tick, `toh sweep [--now T]` runs one sweep,
`toh deliver [--now T]` one delivery pass, `toh notifications list [--dead]` and
`toh notifications replay ID` show and replay the outbox, `toh migrate` upgrades the schema,
`toh reindex` rebuilds the search index, `toh export` / `toh import` write and
restore the data as NDJSON, `toh token` prints a bearer token,
`toh synth` writes a synthetic cohort, `toh demo` loads a demo cohort into a running service."""
from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import sys
from datetime import date, datetime, timezone
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

from service.config import Settings


def _gunicorn_app(factory: Callable[[], Any], options: dict[str, Any]) -> Any:
    from gunicorn.app.base import BaseApplication

    class TohGunicorn(BaseApplication):  # type: ignore[misc]
        """gunicorn with our options and the application factory, no config files read."""

        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return factory()

    return TohGunicorn()


def freeze_heap() -> None:
    """Collect, then move every object alive now out of the cyclic garbage collector's sight
    (gc.freeze, https://docs.python.org/3/library/gc.html#gc.freeze). Called once per worker
    after its app is built: the app holds ~176k long-lived objects (guide, terminology, search
    registry), which every full (generation 2) collection would otherwise walk again, mid-request,
    every dozen or so large pages: that pause was the worklist's p95 (bench/bench_pages.py).
    Workers are not recycled (max_requests = 0), so what is frozen is what the worker keeps."""
    gc.collect()
    gc.freeze()


WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def startup_message(settings: Settings, host: str, port: int) -> str:
    """What `toh serve` prints: a FHIR base a client can use (not a wildcard address) and the
    database URL with its password masked."""
    base = settings.base_url
    note = ""
    if base is None:
        shown = "127.0.0.1" if host in WILDCARD_HOSTS else host
        base = f"http://{shown}:{port}/fhir"
        if host in WILDCARD_HOSTS:
            note = f" (listening on all interfaces, {host or '*'}:{port}; set TOH_BASE_URL to the address clients use)"
    return f"TOH service: FHIR at {base}{note}  database {masked_url(settings.database_url)}"


def masked_url(url: str) -> str:
    """A database URL fit to print: its password replaced by ***."""
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL: show nothing of it rather than a secret
        return "(unparsable database URL)"


def serve(args: argparse.Namespace) -> int:
    """Migrate once, then start gunicorn workers that each build the app from the same settings."""
    from service import create_app

    settings = Settings.from_env()
    overrides: dict[str, Any] = {"host": args.host, "port": args.port, "workers": args.workers,
                                 "threads": args.threads, "worker_timeout": args.timeout}
    if args.database_url:
        overrides["database_url"] = args.database_url
    if settings.base_url is None and args.host not in WILDCARD_HOSTS:
        # Absolute references to this server are recognised at write time only with a known base.
        overrides["base_url"] = f"http://{args.host}:{args.port}/fhir"
    settings = settings.with_overrides(overrides)
    from service.observability import logs, multiproc
    logs.configure(settings.log_format, settings.log_level)
    # before anything imports prometheus_client: every worker then writes its metrics there
    previous_dir = os.environ.get(multiproc.ENV)
    metrics_dir = multiproc.prepare(settings.metrics_dir)
    create_app(settings).extensions["toh"].database.dispose()  # migrate and install the guide once
    worker_settings = settings.with_overrides({"migrate_on_start": False})

    def factory() -> Any:
        logs.configure(worker_settings.log_format, worker_settings.log_level)
        app = create_app(worker_settings)
        if worker_settings.scheduler:
            from service.scheduling import start_background
            app.extensions["toh"].scheduler = start_background(app.extensions["toh"])
        freeze_heap()
        return app

    from service.gunicorn_config import options as gunicorn_options
    options = gunicorn_options(settings, access_log=args.access_log)
    print(startup_message(settings, args.host, args.port), file=sys.stderr, flush=True)
    keys = "the identity provider's JWKS" if settings.jwks_url or settings.jwks_file else (
        "TOH_JWT_SECRET" if settings.jwt_secret else f"the secret in {settings.data_dir}/jwt-secret")
    print(f"Every FHIR request needs a bearer token, checked against {keys}; get one with "
          f"`toh token --role ehr|staff|auditor|admin` (run where the service runs)", file=sys.stderr, flush=True)
    try:
        _gunicorn_app(factory, options).run()
    finally:
        if metrics_dir is not None and settings.metrics_dir is None:   # the temporary folder of this run
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if previous_dir is None:
            os.environ.pop(multiproc.ENV, None)
        else:
            os.environ[multiproc.ENV] = previous_dir
    return 0


def migrate(args: argparse.Namespace) -> int:
    """Bring the database schema up to date and exit."""
    from service.store import Database
    settings = Settings.from_env()
    if args.database_url:
        settings = settings.with_overrides({"database_url": args.database_url})
    Database(settings.database_url).migrate()
    print(f"database at {masked_url(settings.database_url)} is up to date")
    return 0


def reindex(args: argparse.Namespace) -> int:
    """Rebuild the search index of every stored resource (after new search parameters)."""
    from service import create_app
    svc = create_app({"database_url": args.database_url} if args.database_url else None).extensions["toh"]
    with svc.database.unit_of_work() as uow:
        count = svc.search.indexer.reindex(uow.conn)
        uow.commit()
    print(f"re-indexed {count} resources")
    return 0


def _parse_now(value: str) -> datetime:
    """--now as an aware UTC datetime ("2027-06-01T09:00:00Z" or a date); argparse reports errors."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date-time: {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def sweep_command(args: argparse.Namespace) -> int:
    """Run one sweep as of --now (default: the wall clock), print what it did; exit 1 if an
    item failed. The whole run, writes included, sees the clock at --now."""
    from service import create_app
    from service.clock import FixedClock, SystemClock
    from service.workflows.sweep import sweep

    now = args.now or SystemClock().now()
    overrides: dict[str, Any] = {"migrate_on_start": False}
    if args.database_url:
        overrides["database_url"] = args.database_url
    settings = Settings.from_env().with_overrides(overrides)
    app = create_app(settings, clock=FixedClock(now) if args.now else None)
    database = app.extensions["toh"].database
    try:
        database.require_current_schema()
        report = sweep(database, now)
    finally:
        database.dispose()
    print("\n".join(report.lines()), flush=True)
    return 1 if report.failed else 0


def _services(args: argparse.Namespace, now: datetime | None = None) -> Any:
    """The services of an app built for a one-off command (no migration; --now fixes the clock)."""
    from service import create_app
    from service.clock import FixedClock
    overrides: dict[str, Any] = {"migrate_on_start": False}
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    settings = Settings.from_env().with_overrides(overrides)
    services = create_app(settings, clock=FixedClock(now) if now else None).extensions["toh"]
    try:
        services.database.require_current_schema()
    except BaseException:
        services.database.dispose()
        raise
    return services


def deliver_command(args: argparse.Namespace) -> int:
    """Run one delivery pass of the outbox as of --now (default: the wall clock) and print what
    it did; exit 0 (failed deliveries are retried later, not errors of this command)."""
    from service.clock import SystemClock
    from service.workflows.delivery import deliver
    now = args.now or SystemClock().now()
    svc = _services(args, args.now)
    try:
        report = deliver(svc.database, svc.channels, now)
    finally:
        svc.database.dispose()
    print("\n".join(report.lines()), flush=True)
    return 0


def notifications_command(args: argparse.Namespace) -> int:
    """`toh notifications list [--dead] [--subscription ID]` prints outbox rows, newest first;
    `toh notifications replay ID` makes a dead (or cancelled) one due again (exit 1 if it is not)."""
    from service.clock import SystemClock
    from service.store.notifications import Outbox
    from service.workflows.delivery import replay
    svc = _services(args)
    try:
        if args.action == "replay":
            if not replay(svc.database, args.id, SystemClock().now()):
                print(f"notification {args.id} is not dead or cancelled (or does not exist)", file=sys.stderr)
                return 1
            print(f"notification {args.id} will be delivered on the next pass (`toh deliver` or the tick)")
            return 0
        with svc.database.unit_of_work(write=False) as uow:
            rows = Outbox(uow.conn).rows(status="dead" if args.dead else None, subscription_id=args.subscription,
                                         limit=args.limit)
        for row in rows:
            print(f"{row.id}\t{row.status}\t{row.kind}\tSubscription/{row.subscription_id}\t{row.focus or '-'}\t"
                  f"attempts={row.attempts}\t{row.webhook_id}\t{row.last_error or ''}")
        return 0
    finally:
        svc.database.dispose()


def worker(args: argparse.Namespace) -> int:
    """Run only the scheduler: the sweep every TOH_SWEEP_INTERVAL_SECONDS, until SIGTERM/SIGINT;
    its metrics (sweep duration, items due, flags raised) on TOH_HOST:TOH_METRICS_PORT if set."""
    from service import create_app
    from service.observability import logs
    from service.scheduling import run_blocking

    overrides: dict[str, Any] = {}
    if args.database_url:
        overrides["database_url"] = args.database_url
    settings = Settings.from_env().with_overrides(overrides)
    logs.configure(settings.log_format, settings.log_level)
    if settings.metrics_port:
        from prometheus_client import start_http_server
        start_http_server(settings.metrics_port, addr=settings.host)   # GET /metrics of this worker
    app = create_app(settings)
    run_blocking(app.extensions["toh"])
    return 0


def export_command(args: argparse.Namespace) -> int:
    """Write every resource (with --history every version) and the service's tables as NDJSON
    under --out (service.workflows.bulk_export); exit 1 if --out holds files already."""
    from service import create_app
    from service.workflows.bulk_export import export_to_folder

    overrides: dict[str, Any] = {"migrate_on_start": False}
    if args.database_url:
        overrides["database_url"] = args.database_url
    services = create_app(Settings.from_env().with_overrides(overrides)).extensions["toh"]
    try:
        services.database.require_current_schema()
        manifest = export_to_folder(services.database, Path(args.out), history=args.history, clock=services.clock,
                                    request="toh export" + (" --history" if args.history else ""))
    except FileExistsError as exc:
        print(f"toh export: {exc}; give an empty or new folder", file=sys.stderr)
        return 1
    finally:
        services.database.dispose()
    total = sum(o["count"] for o in manifest["output"])
    print(f"exported {total} {'versions' if args.history else 'resources'} of {len(manifest['output'])} types "
          f"as of {manifest['transactionTime']} to {args.out}")
    return 0


def import_command(args: argparse.Namespace) -> int:
    """Restore a `toh export` folder into an empty database (migrated first); exit 1, having
    written nothing, if the database is not empty or a file is malformed."""
    from service import create_app
    from service.workflows.bulk_export import ImportRefused, import_from_folder

    overrides: dict[str, Any] = {"migrate_on_start": False}
    if args.database_url:
        overrides["database_url"] = args.database_url
    services = create_app(Settings.from_env().with_overrides(overrides)).extensions["toh"]
    try:
        services.database.migrate()
        report = import_from_folder(services.database, Path(args.folder))
    except ImportRefused as exc:
        print(f"toh import: refused, nothing written: {exc}", file=sys.stderr)
        return 1
    finally:
        services.database.dispose()
    print(f"imported {sum(report.versions.values())} versions of {len(report.versions)} types and "
          f"{sum(report.rows.values())} rows of the service's tables")
    return 0


_TTL = re.compile(r"^(\d+)([smhd]?)$")


def parse_ttl(text: str) -> int:
    """'90', '90s', '30m', '1h', '7d' in seconds; raises argparse.ArgumentTypeError."""
    match = _TTL.match(text.strip())
    if match is None or int(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a lifetime: {text!r} (e.g. 3600, 30m, 1h, 7d)")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def token(args: argparse.Namespace) -> int:
    """Print a token signed with the configured secret for a role (or explicit scopes)."""
    from service.security import ROLES, issue_token
    scopes = list(ROLES[args.role]) if args.role else []
    scopes += (args.scope or "").split()
    if not scopes:
        print("give --role or --scope", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    try:
        text = issue_token(settings.token_settings(), subject=args.sub, scopes=scopes,
                           ttl_seconds=args.ttl, patient=args.patient)
    except ValueError as exc:
        print(f"cannot issue a token: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0


def _parse_day(value: str) -> date:
    """--as-of as a date (YYYY-MM-DD); argparse reports errors."""
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {value!r}") from exc


def _share(value: str) -> float:
    """--migration-share: a fraction from 0.05 to 0.40 (the range the clinical sources give)."""
    try:
        share = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from exc
    if not 0.05 <= share <= 0.40:
        raise argparse.ArgumentTypeError(f"{value} is outside 0.05-0.40")
    return share


def synth(args: argparse.Namespace) -> int:
    """Write a synthetic cohort, one transaction Bundle per patient, and print the rate."""
    from pathlib import Path

    from service.synth import write_cohort
    if args.patients < 0:
        print("--patients cannot be negative", file=sys.stderr)
        return 2
    try:
        report = write_cohort(Path(args.out), args.patients, args.seed, args.as_of, args.migration_share)
    except OSError as exc:
        print(f"cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {report.patients} patients ({report.resources} resources) to {args.out} as of "
          f"{args.as_of.isoformat()} in {report.seconds:.1f} s ({report.per_second:.0f} patients/s)")
    return 0


def _local_sweep(settings: Settings) -> Callable[[], None] | None:
    """One sweep as of now on the database of `settings` (as `toh sweep` runs it), or None when
    that database is an SQLite file that does not exist here (the service runs elsewhere)."""
    from sqlalchemy.engine import make_url
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not (url.database and os.path.exists(url.database)):
        return None

    def run() -> None:
        from service import create_app
        from service.clock import SystemClock
        from service.workflows.sweep import sweep
        try:
            database = create_app(settings.with_overrides({"migrate_on_start": False})).extensions["toh"].database
            try:
                report = sweep(database, SystemClock().now())
            finally:
                database.dispose()
        except Exception as exc:  # noqa: BLE001 - the service's own sweep will do it; say why not here
            print(f"no sweep here ({type(exc).__name__}: {str(exc)[:200]}); waiting for the service's own",
                  file=sys.stderr, flush=True)
            return
        print(report.lines()[-1], flush=True)

    return run


def demo(args: argparse.Namespace) -> int:
    """Load the demo cohort into a running service, run (or wait for) the sweep, check the
    worklist states over FHIR and print where to look; exit 1 if the service refused or a
    state did not appear within --wait seconds."""
    from service.security import ROLES, issue_token
    from service.synth.demo import DemoClient, DemoError, demo_courses, load, summary, wait_for_states

    settings = Settings.from_env()
    if args.database_url:
        settings = settings.with_overrides({"database_url": args.database_url})
    base = (args.url or settings.base_url or f"http://127.0.0.1:{settings.port}/fhir").rstrip("/")
    token_text = args.token
    if not token_text:
        try:
            token_text = issue_token(settings.token_settings(), subject="toh-demo", scopes=list(ROLES["ehr"]),
                                     ttl_seconds=3600)
        except ValueError as exc:
            print(f"cannot issue a token ({exc}): give --token with an ehr token", file=sys.stderr)
            return 1
    today = datetime.now(timezone.utc).date()
    patients = demo_courses(today, args.patients, args.seed)
    client = DemoClient(base, token_text)
    sweep = None if args.no_sweep else _local_sweep(settings)
    try:
        loaded = load(client, patients)
        seen = wait_for_states(client, patients, today, args.wait, sweep)
    except DemoError as exc:
        print(f"toh demo: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:   # requests' ConnectionError is an OSError
        print(f"toh demo: cannot reach {base} ({exc}); start it with `toh serve`", file=sys.stderr)
        return 1
    print("\n".join(summary(base, patients, seen, loaded)), flush=True)
    missing = [role for role, ok in seen.items() if not ok]
    if missing:
        print(f"not shown yet: {', '.join(missing)} (the service's sweep runs every TOH_SWEEP_INTERVAL_SECONDS; "
              "run `toh sweep` where the service runs, or look again in a minute)", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `toh` console script."""
    defaults = Settings.from_env()     # each option's default is its TOH_* setting
    parser = argparse.ArgumentParser(prog="toh", description="TOH follow-up FHIR service")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the FHIR service")
    p_serve.add_argument("--host", default=defaults.host, help="default: $TOH_HOST or 127.0.0.1")
    p_serve.add_argument("--port", type=int, default=defaults.port, help="default: $TOH_PORT or 8080")
    p_serve.add_argument("--database-url", default=None, help="default: $TOH_DATABASE_URL or SQLite in ./toh-data/")
    p_serve.add_argument("--workers", type=int, default=defaults.workers, help="default: $TOH_WORKERS or 2")
    p_serve.add_argument("--threads", type=int, default=defaults.threads, help="default: $TOH_THREADS or 4")
    p_serve.add_argument("--timeout", type=int, default=defaults.worker_timeout,
                         help="gunicorn's worker timeout in seconds; default: $TOH_WORKER_TIMEOUT or 60")
    p_serve.add_argument("--access-log", action="store_true")
    p_serve.set_defaults(run=serve)
    p_migrate = sub.add_parser("migrate", help="create or upgrade the database schema")
    p_migrate.add_argument("--database-url", default=None)
    p_migrate.set_defaults(run=migrate)
    p_reindex = sub.add_parser("reindex", help="rebuild the search index of every stored resource")
    p_reindex.add_argument("--database-url", default=None)
    p_reindex.set_defaults(run=reindex)
    p_sweep = sub.add_parser("sweep", help="run the follow-up sweep once and print what it did")
    p_sweep.add_argument("--now", type=_parse_now, default=None,
                         help="the moment to sweep as of, e.g. 2027-06-01T09:00:00Z (default: now)")
    p_sweep.add_argument("--database-url", default=None)
    p_sweep.set_defaults(run=sweep_command)
    p_deliver = sub.add_parser("deliver", help="deliver the due notifications once and print what it did")
    p_deliver.add_argument("--now", type=_parse_now, default=None,
                           help="the moment to deliver as of, e.g. 2027-06-01T09:00:00Z (default: now)")
    p_deliver.add_argument("--database-url", default=None)
    p_deliver.set_defaults(run=deliver_command)
    p_notes = sub.add_parser("notifications", help="list notifications of the outbox, or replay a dead one")
    notes = p_notes.add_subparsers(dest="action", required=True)
    p_list = notes.add_parser("list", help="outbox rows, newest first")
    p_list.add_argument("--dead", action="store_true", help="only the dead letters")
    p_list.add_argument("--subscription", default=None, help="only this Subscription's")
    p_list.add_argument("--limit", type=int, default=100)
    p_replay = notes.add_parser("replay", help="deliver a dead notification again")
    p_replay.add_argument("id", type=int)
    for p in (p_list, p_replay):
        p.add_argument("--database-url", default=None)
    p_notes.set_defaults(run=notifications_command)
    p_worker = sub.add_parser("worker", help="run only the scheduler (the sweep and the deliveries)")
    p_worker.add_argument("--database-url", default=None)
    p_worker.set_defaults(run=worker)
    p_export = sub.add_parser("export", help="write every resource as NDJSON (Bulk Data format) into a folder")
    p_export.add_argument("--out", required=True, help="an empty or new folder")
    p_export.add_argument("--history", action="store_true", help="every version, not only the current ones")
    p_export.add_argument("--database-url", default=None)
    p_export.set_defaults(run=export_command)
    p_import = sub.add_parser("import", help="restore a `toh export` folder into an empty database")
    p_import.add_argument("folder")
    p_import.add_argument("--database-url", default=None)
    p_import.set_defaults(run=import_command)
    p_token = sub.add_parser("token", help="print a bearer token signed with the configured secret")
    p_token.add_argument("--role", choices=("ehr", "staff", "auditor", "admin"), default=None)
    p_token.add_argument("--scope", default=None, help="SMART scopes, space-separated (added to the role's)")
    p_token.add_argument("--sub", default=os.environ.get("USER") or "operator", help="the token's subject")
    p_token.add_argument("--patient", default=None, help="launch context: the patient of patient/ scopes")
    p_token.add_argument("--ttl", type=parse_ttl, default=3600, help="lifetime: 3600, 30m, 1h, 7d (default 1h)")
    p_token.set_defaults(run=token)
    from service.synth import DEFAULT_AS_OF
    p_synth = sub.add_parser("synth", help="write a synthetic TOH cohort: one FHIR transaction Bundle per patient")
    p_synth.add_argument("--patients", type=int, required=True, help="how many patients")
    p_synth.add_argument("--seed", type=int, default=1, help="the same seed writes the same files (default 1)")
    p_synth.add_argument("--out", required=True, help="folder to write patient-NNNNNN.json and manifest.json to")
    p_synth.add_argument("--migration-share", type=_share, default=0.15,
                         help="share of patients whose oedema migrates to another joint, 0.05-0.40 (default 0.15)")
    p_synth.add_argument("--as-of", type=_parse_day, default=DEFAULT_AS_OF,
                         help=f"the day the records end (default {DEFAULT_AS_OF.isoformat()}, fixed for reproducibility)")
    p_synth.set_defaults(run=synth)
    p_demo = sub.add_parser("demo", help="load a demo cohort dated relative to today into a running service")
    p_demo.add_argument("--url", default=None,
                        help="FHIR base of the service (default: $TOH_BASE_URL or http://127.0.0.1:$TOH_PORT/fhir)")
    p_demo.add_argument("--patients", type=int, default=12, help="how many patients (default 12; the first 6 "
                        "show a due and an overdue follow-up, migration, failure to resolve, AVN, "
                        "bisphosphonate in pregnancy)")
    p_demo.add_argument("--token", default=None, help="a bearer token that may write (default: one signed "
                        "like `toh token --role ehr`)")
    p_demo.add_argument("--seed", type=int, default=1, help="seed of the drawn patients (default 1)")
    p_demo.add_argument("--wait", type=float, default=150.0,
                        help="seconds to wait for the states to show (default 150)")
    p_demo.add_argument("--no-sweep", action="store_true",
                        help="do not run a sweep here; wait for the service's own")
    p_demo.add_argument("--database-url", default=None,
                        help="the service's database, for the sweep (default: $TOH_DATABASE_URL or ./toh-data)")
    p_demo.set_defaults(run=demo)
    args = parser.parse_args(argv)
    from service.store import SchemaTooNew
    from service.store.db import SchemaNotCurrent
    try:
        return int(args.run(args))
    except (SchemaTooNew, SchemaNotCurrent) as exc:
        print(f"toh {args.command}: refusing to run: {exc}", file=sys.stderr, flush=True)
        return 3


if __name__ == "__main__":
    sys.exit(main())
