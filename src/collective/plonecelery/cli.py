"""The ``plonecelery`` command: Celery's command line with Zope booted first.

::

    plonecelery --zope-conf etc/zope.conf worker -l info
    plonecelery --zope-conf etc/zope.conf beat
    plonecelery --zope-conf etc/zope.conf inspect active

Everything after the Zope options goes to ``celery`` unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys

APP = "collective.plonecelery.app:app"


#: Our own commands (argparse); everything else is Celery's (click).
OWN_COMMANDS = ("deadletters", "import", "workers")


def top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plonecelery",
        usage="plonecelery [--zope-conf ZOPE_CONF] COMMAND [ARGS ...]",
        add_help=False,  # `plonecelery worker --help` is Celery's help
        description="Run Celery (worker, beat, inspect, purge, events, ...) "
        "as a Zope client of your Plone site's ZODB.",
        epilog="Commands: Celery's (worker, beat, inspect, purge, events, call, ...) and "
        "'deadletters', 'import', 'workers'. Any other arguments go to Celery, e.g. "
        "'worker -l info -c 2'. 'plonecelery COMMAND --help' needs no zope.conf.",
    )
    parser.add_argument(
        "--zope-conf",
        default=os.environ.get("ZOPE_CONF"),
        help="the instance's zope.conf (default: $ZOPE_CONF)",
    )
    return parser


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    options, rest = top_parser().parse_known_args(argv)
    if rest[:1] in (["-h"], ["--help"]):
        top_parser().print_help()
        raise SystemExit(0)
    return options, rest


def wants_help(rest: list[str]) -> bool:
    """True for ``COMMAND ... --help``: answered without Zope, ZEO or zope.conf."""
    if rest[:1] and rest[0] in OWN_COMMANDS:
        return "-h" in rest or "--help" in rest
    return "--help" in rest


def show_help(rest: list[str]) -> int:
    """Help of our own commands, or Celery's for its commands, without booting Zope."""
    if rest[0] in OWN_COMMANDS:
        parser = {
            "deadletters": deadletters_parser,
            "import": import_parser,
            "workers": workers_parser,
        }[rest[0]]()
        try:
            parser.parse_args(rest[1:])
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 0
        return 0
    # Reading the app's settings would boot Zope from $ZOPE_CONF: help needs none.
    os.environ.pop("ZOPE_CONF", None)
    return run_celery(rest)


def run_celery(rest: list[str]) -> int:
    from celery.bin.celery import celery

    try:
        celery.main(args=["-A", APP, *rest], prog_name="plonecelery", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options, rest = parse_args(argv)
    if rest[:1] == ["keys"]:  # no Zope needed: see keys.py
        from .keys import main as keys_main

        return keys_main(rest[1:])
    if wants_help(rest):
        return show_help(rest)
    if not options.zope_conf:
        print(
            "plonecelery: no Zope configuration; pass --zope-conf etc/zope.conf or set ZOPE_CONF.",
            file=sys.stderr,
        )
        return 2
    zope_conf = os.path.abspath(options.zope_conf)
    if not os.path.isfile(zope_conf):
        print(
            f"plonecelery: no such zope.conf: {options.zope_conf} "
            "(pass --zope-conf with your instance's etc/zope.conf).",
            file=sys.stderr,
        )
        return 2
    os.environ["ZOPE_CONF"] = zope_conf
    from .config import addon_settings
    from .config import settings_from_environ
    from .exceptions import ConfigurationError
    from .worker.process import boot_zope

    boot_zope(zope_conf)
    try:
        settings = settings_from_environ()
        addon_settings()
        if rest[:1] == ["worker"]:
            from .brokertls import check_broker_tls

            check_broker_tls(settings)
    except ConfigurationError as exc:
        print(f"plonecelery: {exc}", file=sys.stderr)
        return 2

    if rest[:1] == ["deadletters"]:
        return deadletters_command(rest[1:])
    if rest[:1] == ["import"]:
        return import_command(rest[1:])
    if rest[:1] == ["workers"]:
        return workers_command(rest[1:])

    return run_celery(rest)


def deadletters_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plonecelery deadletters",
        description="Tasks that failed for good: list, show, retry or purge them.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="one line per dead letter")
    for name, text in (("show", "everything about one"), ("retry", "queue it again now")):
        commands.add_parser(name, help=text).add_argument("task_id")
    commands.add_parser("purge", help="remove one, or all").add_argument("task_id", nargs="?")
    return parser


def import_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plonecelery import", description="Queue the import of every post of a source."
    )
    parser.add_argument("source", help="the source id")
    parser.add_argument("--all", action="store_true", required=True, help="every post")
    parser.add_argument("--site", default="Plone", help="path of the Plone site (Plone)")
    return parser


def workers_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plonecelery workers",
        description="Worker processes from their presence records (any broker, no broadcast), "
        "and the started tasks the outbox relay watches: running, or orphaned and when "
        "they are sent again.",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document")
    parser.add_argument("--all", action="store_true", help="also processes gone or stopped")
    return parser


def _age(now: float, moment: float | None) -> str:
    return "-" if moment is None else f"{now - moment:.0f}s ago"


def workers_command(argv: list[str]) -> int:
    """``plonecelery workers [--json] [--all]``."""
    import json
    import time

    from .app import app
    from .config import addon_settings
    from .outbox.relay import started_report
    from .worker import presence
    from .worker import process
    from .zodb import own_connection

    options = workers_parser().parse_args(argv)
    timeout = addon_settings().outbox_started_timeout
    now = time.time()
    db = process.open_db()
    try:
        with own_connection(db) as (connection, tm):
            tm.begin()
            seen = presence.read(connection, now=now, timeout=timeout)
        started = started_report(db=db, app=app, timeout=timeout, now=now)
    finally:
        process.close_db()
    shown = [p for p in seen if options.all or p.alive]
    if options.json:
        document = {"now": now, "processes": [p.as_dict() for p in shown], "started": started}
        print(json.dumps(document, indent=2, default=str))
        return 0
    print(f"{sum(p.alive for p in seen)} worker process(es) alive, {len(seen)} known")
    for p in shown:
        state = "alive" if p.alive else ("stopped" if p.stopped else "gone")
        running = ", ".join(f"{name}[{task_id}]" for task_id, (name, _) in p.running.items())
        print(
            f"  {p.nodename or p.host} pid {p.pid} ({p.pool}) {state}, "
            f"started {_age(now, p.started)}, last beat {_age(now, p.last_beat)}"
            + (f", running {running}" if running else "")
        )
    print(f"{len(started)} started task(s) with a pending outbox record")
    for entry in started:
        if entry["verdict"] == "running":
            plan = "running"
        elif entry["verdict"] == "send":
            plan = "orphaned: sent again at the next relay run"
        else:
            plan = f"orphaned if still unreported: sent again in {entry['due'] - now:.0f}s"
        print(
            f"  {entry['task_name']}[{entry['task_id']}] on {entry['worker']} pid "
            f"{entry['pid']}: {plan} ({entry['reason']})"
        )
    return 0


def deadletters_command(argv: list[str]) -> int:
    """``plonecelery deadletters list|show ID|retry ID|purge [ID]``."""
    import json

    import transaction

    from . import deadletters
    from .app import app
    from .worker import process

    options = deadletters_parser().parse_args(argv)

    # Registers the tasks a retry may need.
    app.loader.import_default_modules()
    connection = process.open_db().open()
    try:
        transaction.begin()
        if options.command == "list":
            for letter in deadletters.list_dead_letters(connection):
                print(f"{letter.task_id}  {letter.task_name}  {letter.error}")
        elif options.command == "show":
            print(json.dumps(deadletters.get(connection, options.task_id).as_dict(), indent=2))
        elif options.command == "retry":
            new_id = deadletters.retry(connection, options.task_id, app=app)
            transaction.commit()
            print(f"queued again as {new_id}")
        elif options.command == "purge":
            count = deadletters.purge(connection, options.task_id)
            transaction.commit()
            print(f"removed {count} dead letter(s)")
    except KeyError as exc:
        print(f"plonecelery: {exc.args[0]}", file=sys.stderr)
        return 1
    finally:
        transaction.abort()
        connection.close()
        process.close_db()
    return 0


def import_command(argv: list[str]) -> int:
    """``plonecelery import SOURCE --all [--site Plone]``: queue a full import."""
    import transaction

    from .blogs.importer import queue_backfill
    from .blogs.storage import get_source
    from .exceptions import UnknownSource
    from .worker import process
    from .worker.environment import zope_environment

    options = import_parser().parse_args(argv)
    try:
        with (
            process.use_database(process.open_db()),
            zope_environment(site_path=options.site, userid=None, unrestricted=True),
        ):
            result = queue_backfill(get_source(options.source))
            transaction.commit()
    except (UnknownSource, KeyError, AttributeError) as exc:
        print(f"plonecelery: {exc}", file=sys.stderr)
        return 1
    finally:
        process.close_db()
    print(f"queued the import of every post of {options.source!r}: task {result.id}")
    print("progress: GET @blog-deliveries?source=" + options.source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
