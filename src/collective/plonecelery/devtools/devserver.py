"""``make run``: ZEO, Plone with this add-on, and a Celery worker, on one machine.

::

    .venv/bin/python -m collective.plonecelery.devtools.devserver          # until Ctrl-C
    .venv/bin/python -m collective.plonecelery.devtools.devserver --check  # start, probe, stop

Everything lives under ``var/`` and ``etc/`` of the current directory. The
broker and result backend are SQLite files in ``var/`` unless
``CELERY_BROKER_URL`` / ``CELERY_RESULT_BACKEND`` are set (e.g. to a Redis or
RabbitMQ URL); every other ``CELERY_*`` and ``PLONECELERY_*`` variable is passed
on to Zope and the worker as well. Ports: ``PLONECELERY_ZEO_PORT`` (8100) and
``PLONECELERY_HTTP_PORT`` (8080).

(Over 400 lines on purpose: it is one command, start-up to shut-down, read top to bottom;
the parts it drives live in :mod:`.instance`.)
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

from ..config import own_variables
from . import instance

HOST = "127.0.0.1"
SITE_ID = "Plone"
ADMIN_USER = "admin"
#: Variables that configure this script, not Zope: not copied into zope.conf.
OWN_VARIABLES = frozenset(
    {"PLONECELERY_ZEO_PORT", "PLONECELERY_HTTP_PORT", "PLONECELERY_BLOG_PORT"}
)
#: The demo source: a stand-in Ghost blog whose posts are imported into /news.
DEMO_BLOG_MODULE = "collective.plonecelery.devtools.demo_blog"
DEMO_SOURCE = "demo-blog"
DEMO_FOLDER = "news"


@dataclass
class Context:
    """Paths, ports and settings of one dev server run."""

    base_dir: Path
    zeo_port: int
    http_port: int
    environment: dict[str, str]
    admin_password: str = ""
    blog_port: int = 2368
    webhook_secret: str = ""

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

    @property
    def blog_url(self) -> str:
        return f"http://{HOST}:{self.blog_port}"


@dataclass
class Service:
    """A child process the dev server watches; services stop in reverse order."""

    name: str
    process: subprocess.Popen
    log_file: Path
    stop: Callable[[], object]


def start_demo_blog(ctx: Context) -> Service:
    """The stand-in Ghost blog (a real HTTP server on loopback)."""
    log_file = ctx.log_dir / "blog.log"
    print(f"Starting the demo blog on {ctx.blog_url} ...", flush=True)
    process = subprocess.Popen(
        [sys.executable, "-m", DEMO_BLOG_MODULE, "--port", str(ctx.blog_port)],
        stdout=open(log_file, "ab"),  # noqa: SIM115 - the child keeps it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    instance.wait_for_port(HOST, ctx.blog_port, process=process, log_file=log_file)
    return Service("blog", process, log_file, lambda: instance.stop_process(process))


#: Further services, started after the worker, in order: callables
#: ``start(ctx: Context) -> Service``.
EXTRA_SERVICES: list[Callable[[Context], Service]] = [start_demo_blog]


def configure_demo_source(ctx: Context) -> None:
    """Create the /news folder and the demo source through the REST API, once."""
    from collective.plonecelery.devtools import demo_blog as blog

    api = f"http://{HOST}:{ctx.http_port}/{SITE_ID}/++api++"
    auth = (ADMIN_USER, ctx.admin_password)
    headers = {"Accept": "application/json"}
    with httpx.Client(auth=auth, headers=headers, timeout=60) as client:
        if client.get(f"{api}/{DEMO_FOLDER}").status_code == 404:
            response = client.post(
                api, json={"@type": "Folder", "id": DEMO_FOLDER, "title": "News"}
            )
            response.raise_for_status()
        if client.get(f"{api}/@blog-sources/{DEMO_SOURCE}").status_code == 404:
            settings = blog.source_settings(
                blog_url=ctx.blog_url,
                source_id=DEMO_SOURCE,
                secret=ctx.webhook_secret,
                target=DEMO_FOLDER,
            )
            response = client.post(f"{api}/@blog-sources", json=settings)
            if response.status_code >= 400:
                raise RuntimeError(f"Could not create the demo source: {response.text}")


def curl_line(ctx: Context) -> str:
    """A freshly signed Ghost webhook for the demo's published post."""
    from collective.plonecelery.devtools import demo_blog as blog

    return blog.curl_line(
        plone_url=f"http://localhost:{ctx.http_port}/{SITE_ID}",
        source_id=DEMO_SOURCE,
        secret=ctx.webhook_secret,
    )


def check_webhook_import(ctx: Context, *, timeout: float = 120) -> str:
    """Post the signed webhook and wait until the worker has imported the post."""
    import shlex

    from collective.plonecelery.devtools import demo_blog as blog

    args = shlex.split(curl_line(ctx))
    headers = dict(args[i + 1].split(": ", 1) for i, arg in enumerate(args) if arg == "-H")
    body = args[args.index("--data-binary") + 1].encode()
    response = httpx.post(args[-1], content=body, headers=headers, timeout=30)
    if response.status_code != 202:
        raise RuntimeError(f"The webhook got {response.status_code}: {response.text}")
    search = (
        f"http://{HOST}:{ctx.http_port}/{SITE_ID}/++api++/{DEMO_FOLDER}/@search"
        f"?portal_type=News Item&plonecelery_remote_key={DEMO_SOURCE}:{blog.WELCOME_ID}"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = httpx.get(
            search,
            auth=(ADMIN_USER, ctx.admin_password),
            headers={"Accept": "application/json"},
            timeout=30,
        ).json()
        if found.get("items"):
            return found["items"][0]["@id"]
        time.sleep(1)
    raise RuntimeError(
        f"The post was not imported within {timeout} s: see {ctx.log_dir}/worker.log"
    )


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
    for name, value in own_variables(os.environ).items():
        if name not in OWN_VARIABLES:
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
  Blog:     {ctx.blog_url} (stand-in Ghost blog)
            source "{DEMO_SOURCE}" imports its posts into /{DEMO_FOLDER}

  Send it a signed "post.published" webhook (valid for 5 minutes; `make webhook`
  prints and sends a fresh one):

{curl_line(ctx)}

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

    wait_for_site(f"http://{HOST}:{ctx.http_port}/{SITE_ID}")
    configure_demo_source(ctx)


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
        blog_port=port_from_env("PLONECELERY_BLOG_PORT", 2368),
    )
    ctx.webhook_secret = admin_password(ctx.var_dir / "demo-webhook-secret.txt")
    for variable, port in (
        ("PLONECELERY_ZEO_PORT", ctx.zeo_port),
        ("PLONECELERY_HTTP_PORT", ctx.http_port),
        ("PLONECELERY_BLOG_PORT", ctx.blog_port),
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
            item = check_webhook_import(ctx)
            if dead := dead_service(services):
                return report_death(dead)
            print(
                f"OK: {ctx.site_url} answers; the webhook's post was imported as {item}", flush=True
            )
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
        prog="python -m collective.plonecelery.devtools.devserver",
        description="Run ZEO, Plone with collective.plonecelery and a Celery worker "
        "from ./var and ./etc.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="start everything, send the demo webhook, wait until the post is imported, "
        "print OK and stop",
    )
    parser.add_argument(
        "--curl",
        action="store_true",
        help="print a freshly signed demo webhook (for a running `make run`) and exit",
    )
    options = parser.parse_args(argv)
    if options.curl:
        ctx = Context(
            base_dir=Path.cwd(),
            zeo_port=0,
            http_port=port_from_env("PLONECELERY_HTTP_PORT", 8080),
            environment={},
        )
        secret_file = ctx.var_dir / "demo-webhook-secret.txt"
        if not secret_file.exists():
            print("No demo source yet: start `make run` first.", file=sys.stderr)
            return 1
        ctx.webhook_secret = secret_file.read_text().strip()
        print(curl_line(ctx))
        return 0
    return run(base_dir=Path.cwd(), check=options.check)


if __name__ == "__main__":
    sys.exit(main())
