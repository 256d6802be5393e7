"""``make run``: ZEO, Plone with this add-on, and a Celery worker, on one machine.

::

    .venv/bin/python -m collective.plonecelery.devserver          # until Ctrl-C
    .venv/bin/python -m collective.plonecelery.devserver --check  # start, probe, stop

Everything lives under ``var/`` and ``etc/`` of the current directory. The
broker and result backend are SQLite files in ``var/`` unless
``CELERY_BROKER_URL`` / ``CELERY_RESULT_BACKEND`` are set (e.g. to a Redis or
RabbitMQ URL); every other ``CELERY_*`` and ``PLONECELERY_*`` variable is passed
on to Zope and the worker as well. Ports: ``PLONECELERY_ZEO_PORT`` (8100) and
``PLONECELERY_HTTP_PORT`` (8080).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from collective.plonecelery import instance

HOST = "127.0.0.1"
SITE_ID = "Plone"
ADMIN_USER = "admin"
#: Variables that configure this script, not Zope: not copied into zope.conf.
OWN_VARIABLES = frozenset({"PLONECELERY_ZEO_PORT", "PLONECELERY_HTTP_PORT"})


@dataclass
class Context:
    """Paths, ports and settings of one dev server run."""

    base_dir: Path
    zeo_port: int
    http_port: int
    environment: dict[str, str]
    admin_password: str = ""

    @property
    def var_dir(self) -> Path:
        return self.base_dir / "var"

    @property
    def etc_dir(self) -> Path:
        return self.base_dir / "etc"

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "log"

    @property
    def zope_conf(self) -> Path:
        return self.etc_dir / "zope.conf"

    @property
    def site_url(self) -> str:
        return f"http://localhost:{self.http_port}/{SITE_ID}"


@dataclass
class Service:
    """A child process the dev server watches; services stop in reverse order."""

    name: str
    process: subprocess.Popen
    log_file: Path
    stop: Callable[[], object]


#: Further services, started after the worker, in order: callables
#: ``start(ctx: Context) -> Service``. The demo blog (issue 4) goes here.
EXTRA_SERVICES: list[Callable[[Context], Service]] = []


def port_from_env(name: str, default: int) -> int:
    """``int(os.environ[name])`` with a clear error for junk values."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a port number.") from None


def zope_environment(*, var_dir: Path, http_port: int) -> dict[str, str]:
    """``<environment>`` of zope.conf: SQLite defaults, then the caller's variables.

    >>> env = zope_environment(var_dir=Path("/srv/var"), http_port=8080)  # doctest: +SKIP
    >>> env["CELERY_BROKER_URL"]  # doctest: +SKIP
    'sqla+sqlite:////srv/var/celery-broker.sqlite'
    """
    environment = {
        "CELERY_BROKER_URL": f"sqla+sqlite:///{var_dir}/celery-broker.sqlite",
        "CELERY_RESULT_BACKEND": f"db+sqlite:///{var_dir}/celery-results.sqlite",
        "PLONECELERY_SERVER_URL": f"http://localhost:{http_port}",
    }
    for name, value in os.environ.items():
        if name.startswith(("CELERY_", "PLONECELERY_")) and name not in OWN_VARIABLES:
            environment[name] = value
    return environment


def admin_password(path: Path) -> str:
    """The admin password kept in ``path``; generated (mode 600) the first time."""
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    # Created with 600 from the start: never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(password + "\n")
    return password


def banner(ctx: Context, services: list[Service]) -> str:
    logs = "\n".join(f"    {s.name:<8} {s.log_file}" for s in services)
    return f"""
================================================================
  Plone with collective.plonecelery is running.

  Site:     {ctx.site_url}
  Login:    {ADMIN_USER} / {ctx.admin_password}
            (stored in {ctx.var_dir / "admin-password.txt"})
  Broker:   {ctx.environment["CELERY_BROKER_URL"]}
  Logs:
{logs}
  Follow them with:  tail -f {ctx.log_dir}/*.log

  Ctrl-C stops everything.
================================================================
"""


def start_services(ctx: Context, services: list[Service]) -> None:
    """Start ZEO, create the site, start Zope and the worker; append to ``services``.

    ``services`` is filled as they start, so the caller can stop what did
    start if a later step fails.
    """
    ctx.log_dir.mkdir(parents=True, exist_ok=True)
    zeo_log = ctx.log_dir / "zeo.log"
    print(f"Starting ZEO on {HOST}:{ctx.zeo_port} ...", flush=True)
    zeo = instance.start_zeo(var_dir=ctx.var_dir, host=HOST, port=ctx.zeo_port, log_file=zeo_log)
    services.append(Service("zeo", zeo.process, zeo_log, zeo.stop))

    instance.write_zope_conf(
        path=ctx.zope_conf,
        zeo_address=zeo.address,
        var_dir=ctx.var_dir,
        blob_dir=zeo.blob_dir,
        environment=ctx.environment,
        debug_mode=True,
    )
    zope_ini = instance.write_zope_ini(
        path=ctx.etc_dir / "zope.ini",
        zope_conf=ctx.zope_conf,
        host=HOST,
        port=ctx.http_port,
    )

    ctx.admin_password = admin_password(ctx.var_dir / "admin-password.txt")
    print("Creating the Plone site if needed ...", flush=True)
    if instance.create_site(
        zope_conf=ctx.zope_conf,
        site_id=SITE_ID,
        admin_user=ADMIN_USER,
        admin_password=ctx.admin_password,
        log_file=ctx.log_dir / "create-site.log",
    ):
        print(f"Created the site {SITE_ID!r}.", flush=True)

    wsgi_log = ctx.log_dir / "instance.log"
    print(f"Starting Zope on {HOST}:{ctx.http_port} ...", flush=True)
    wsgi = instance.start_wsgi(zope_ini=zope_ini, host=HOST, port=ctx.http_port, log_file=wsgi_log)
    services.append(Service("zope", wsgi, wsgi_log, lambda: instance.stop_process(wsgi)))

    worker_log = ctx.log_dir / "worker.log"
    print("Starting the Celery worker ...", flush=True)
    worker = instance.start_worker(
        zope_conf=ctx.zope_conf,
        env={**os.environ, **ctx.environment},
        args=("-l", "info", "-c", "1"),
        log_file=worker_log,
    )
    services.append(Service("worker", worker, worker_log, lambda: instance.stop_process(worker)))

    for start_extra in EXTRA_SERVICES:
        services.append(start_extra(ctx))


def stop_services(services: list[Service]) -> None:
    """Stop in reverse start order: worker, Zope, then ZEO."""
    for service in reversed(services):
        try:
            service.stop()
        except Exception as exc:  # keep stopping the others
            print(f"Stopping {service.name} failed: {exc}", file=sys.stderr)


def dead_service(services: list[Service]) -> Service | None:
    """The first service whose process has exited, if any."""
    for service in services:
        if service.process.poll() is not None:
            return service
    return None


def wait_for_site(url: str, *, timeout: float = 120) -> None:
    """Wait until ``url`` answers HTTP 200."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=30)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.TransportError as exc:
            last = exc
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s (last: {last}).")


class Stop(Exception):
    """Raised by the signal handler to leave the main loop."""


def _raise_stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def run(*, base_dir: Path, check: bool = False) -> int:
    """Start everything, then wait for Ctrl-C / SIGTERM (or probe and stop if ``check``)."""
    base_dir = base_dir.absolute()
    http_port = port_from_env("PLONECELERY_HTTP_PORT", 8080)
    ctx = Context(
        base_dir=base_dir,
        zeo_port=port_from_env("PLONECELERY_ZEO_PORT", 8100),
        http_port=http_port,
        environment=zope_environment(var_dir=base_dir / "var", http_port=http_port),
    )
    for variable, port in (
        ("PLONECELERY_ZEO_PORT", ctx.zeo_port),
        ("PLONECELERY_HTTP_PORT", ctx.http_port),
    ):
        if instance.port_is_open(HOST, port):
            print(
                f"ERROR: {HOST}:{port} is already in use (another `make run`?). "
                f"Stop it, or choose another port with {variable}=<port>.",
                file=sys.stderr,
            )
            return 1
    services: list[Service] = []
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    try:
        start_services(ctx, services)
        if check:
            wait_for_site(f"http://{HOST}:{ctx.http_port}/{SITE_ID}")
            if dead := dead_service(services):
                return report_death(dead)
            print(f"OK: {ctx.site_url} answers.", flush=True)
            return 0
        print(banner(ctx, services), flush=True)
        while True:
            if dead := dead_service(services):
                return report_death(dead)
            time.sleep(0.5)
    except Stop as stop:
        print(f"\n{stop}: stopping ...", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"\nERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # A second Ctrl-C must not interrupt the orderly shutdown.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_services(services)
        if services:
            print("Stopped.", flush=True)


def report_death(dead: Service) -> int:
    """Say which service died and how; the caller then stops the others."""
    print(
        f"\nERROR: {dead.name} exited unexpectedly with code {dead.process.returncode}."
        f"\nLast lines of {dead.log_file}:\n{instance.tail(dead.log_file, lines=30)}",
        file=sys.stderr,
        flush=True,
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m collective.plonecelery.devserver",
        description="Run ZEO, Plone with collective.plonecelery and a Celery worker "
        "from ./var and ./etc.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="start everything, wait until the site answers, print OK and stop",
    )
    options = parser.parse_args(argv)
    return run(base_dir=Path.cwd(), check=options.check)


if __name__ == "__main__":
    sys.exit(main())
