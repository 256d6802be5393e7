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


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="plonecelery",
        description="Run Celery (worker, beat, inspect, purge, events, ...) "
        "as a Zope client of your Plone site's ZODB.",
        epilog="Any other arguments go to Celery, e.g. 'worker -l info -c 2'.",
    )
    parser.add_argument(
        "-C",
        "--zope-conf",
        default=os.environ.get("ZOPE_CONF"),
        help="the instance's zope.conf (default: $ZOPE_CONF)",
    )
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options, rest = parse_args(argv)
    if not options.zope_conf:
        print(
            "plonecelery: no Zope configuration; pass --zope-conf etc/zope.conf or set ZOPE_CONF.",
            file=sys.stderr,
        )
        return 2
    zope_conf = os.path.abspath(options.zope_conf)
    os.environ["ZOPE_CONF"] = zope_conf
    from .worker import boot_zope

    boot_zope(zope_conf)

    from celery.bin.celery import celery

    try:
        celery.main(args=["-A", APP, *rest], prog_name="plonecelery", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
