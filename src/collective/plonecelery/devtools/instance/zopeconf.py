"""Run a local ZEO + Plone + Celery worker stack from Python.

Used by ``make run`` (:mod:`collective.plonecelery.devserver`), by this
package's integration tests, and meant for add-on developers' own test
layers. Every function starts real processes from the current virtualenv
(``runzeo``, ``runwsgi``, ``plonecelery``) and never imports Zope itself, so
callers stay light::

    from collective.plonecelery import instance

    zeo = instance.start_zeo(var_dir=tmp / "var")
    conf = instance.write_zope_conf(
        path=tmp / "etc" / "zope.conf",
        zeo_address=zeo.address,
        var_dir=tmp / "var",
        blob_dir=zeo.blob_dir,
        environment={"CELERY_BROKER_URL": "redis://localhost:6379/0"},
    )
    instance.create_site(zope_conf=conf, admin_password="secret")
    port = instance.free_port()
    ini = instance.write_zope_ini(
        path=tmp / "etc" / "zope.ini", zope_conf=conf, host="127.0.0.1", port=port
    )
    wsgi = instance.start_wsgi(zope_ini=ini, host="127.0.0.1", port=port)
    worker = instance.start_worker(zope_conf=conf)
    ...
    instance.stop_process(worker)
    instance.stop_process(wsgi)
    zeo.stop()

``python -m collective.plonecelery.instance create-site --zope-conf etc/zope.conf``
creates the Plone site from the command line (see :func:`main`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("collective.plonecelery.instance")

#: Profiles of a Classic UI Plone site, as the "Create a Plone site" form
#: installs them (minus plone.app.caching, which is not a dependency), plus
#: plone.restapi and this add-on.
SITE_PROFILES = (
    "plone.app.contenttypes:default",
    "plonetheme.barceloneta:default",
    "plone.restapi:default",
    "collective.plonecelery:default",
)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def bin_path(name: str) -> Path:
    """Path of console script ``name`` in the running virtualenv.

    >>> bin_path("runzeo")  # doctest: +SKIP
    PosixPath('/work/main/.venv/bin/runzeo')
    """
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise RuntimeError(
            f"{path} does not exist: install collective.plonecelery into this "
            f"virtualenv (make install) so that {name!r} is available."
        )
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it).

    >>> port = free_port()
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def ensure_port_free(host: str, port: int) -> None:
    """Raise RuntimeError if something already listens on ``host:port``.

    Otherwise waiting for the port would succeed on someone else's server.
    """
    if port_is_open(host, port):
        raise RuntimeError(
            f"{host}:{port} is already in use: stop whatever listens there or choose another port."
        )


def tail(path: str | os.PathLike | None, *, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' if there is none)."""
    if path is None or not Path(path).exists():
        return ""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def wait_for_port(
    host: str,
    port: int,
    *,
    timeout: float = 30,
    process: subprocess.Popen | None = None,
    log_file: str | os.PathLike | None = None,
) -> None:
    """Block until ``host:port`` accepts connections.

    Raises RuntimeError after ``timeout`` seconds, or as soon as ``process``
    (the one supposed to open the port) has exited; the message carries its
    exit code and the end of ``log_file``.

    >>> wait_for_port("127.0.0.1", 8080, timeout=60, process=proc)  # doctest: +SKIP
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{_describe(process)} exited with code {process.returncode} "
                f"before listening on {host}:{port}." + _log_hint(log_file)
            )
        if port_is_open(host, port):
            return
        if time.monotonic() > deadline:
            what = _describe(process) if process is not None else "Nothing"
            raise RuntimeError(
                f"{what} did not listen on {host}:{port} within {timeout} s." + _log_hint(log_file)
            )
        time.sleep(0.1)


def _describe(process: subprocess.Popen) -> str:
    args = process.args if isinstance(process.args, list | tuple) else [process.args]
    return f"Process {process.pid} ({' '.join(map(str, args))})"


def _log_hint(log_file) -> str:
    text = tail(log_file)
    return f"\nLast lines of {log_file}:\n{text}" if text else ""


def _open_log(log_file: str | os.PathLike | None):
    """A file object for a child's stdout/stderr (None = inherit ours)."""
    if log_file is None:
        return None
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    return open(log_file, "ab")  # noqa: SIM115 - handed to the child


def _spawn(
    args: Sequence[str | os.PathLike],
    *,
    log_file=None,
    env: Mapping[str, str] | None = None,
    cwd=None,
) -> subprocess.Popen:
    log = _open_log(log_file)
    try:
        # A session of its own: a terminal's Ctrl-C reaches only our process,
        # which then stops the children in order; and stop_process() can kill
        # a child's own children (Celery's pool) with the group.
        return subprocess.Popen(
            [str(arg) for arg in args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        if log is not None:
            log.close()


def stop_process(proc: subprocess.Popen | None, *, timeout: float = 20) -> int | None:
    """Stop ``proc`` with SIGTERM, then SIGKILL (its whole process group)
    if it is still alive after ``timeout`` seconds. Returns the exit code.

    Safe to call on a process that has already exited, or on None.

    >>> stop_process(wsgi)  # doctest: +SKIP
    0
    """
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s ignored SIGTERM, killing it.", _describe(proc))
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
    # Leftovers of the group (e.g. pool processes) go with their leader.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return proc.returncode


# --- ZEO ---------------------------------------------------------------------


def write_zeo_conf(
    *,
    path: str | os.PathLike,
    var_dir: str | os.PathLike,
    host: str,
    port: int,
) -> Path:
    """Write a ``runzeo`` configuration serving one FileStorage.

    Data goes to ``var_dir/filestorage/Data.fs``, blobs to
    ``var_dir/blobstorage``: clients on the same machine use that directory
    directly (``shared-blob-dir``), see :func:`write_zope_conf`.

    >>> write_zeo_conf(
    ...     path="etc/zeo.conf", var_dir="var", host="127.0.0.1", port=8100
    ... )  # doctest: +SKIP
    """
    path = Path(path).absolute()
    var_dir = Path(var_dir).absolute()
    (var_dir / "filestorage").mkdir(parents=True, exist_ok=True)
    (var_dir / "blobstorage").mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""\
# Generated by collective.plonecelery.instance: changes are overwritten.
<zeo>
  address {host}:{port}
  read-only false
  invalidation-queue-size 1000
  pid-filename {_zconfig_value(var_dir / "zeo.pid")}
</zeo>

<filestorage 1>
  path {_zconfig_value(var_dir / "filestorage" / "Data.fs")}
  blob-dir {_zconfig_value(var_dir / "blobstorage")}
</filestorage>

<eventlog>
  level INFO
  <logfile>
    path STDERR
    format %(asctime)s %(levelname)s %(name)s %(message)s
  </logfile>
</eventlog>
""",
        encoding="utf-8",
    )
    return path


class ZEOServer:
    """A running ``runzeo`` process; made by :func:`start_zeo`.

    >>> zeo = start_zeo(var_dir="var")  # doctest: +SKIP
    >>> zeo.address  # doctest: +SKIP
    '127.0.0.1:41235'
    >>> zeo.restart()  # same port, same Data.fs  # doctest: +SKIP
    >>> zeo.stop()  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        conf_path: Path,
        var_dir: Path,
        host: str,
        port: int,
        log_file: Path | None,
    ):
        self.conf_path = conf_path
        self.var_dir = var_dir
        self.host = host
        self.port = port
        self.log_file = log_file
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """``host:port``, as a ZEO client's ``server`` option wants it."""
        return f"{self.host}:{self.port}"

    @property
    def blob_dir(self) -> Path:
        """The blob directory, shared with the clients."""
        return self.var_dir / "blobstorage"

    def start(self, *, timeout: float = 30) -> ZEOServer:
        """Start ``runzeo`` and wait until it listens."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"ZEO server on {self.address} is already running.")
        ensure_port_free(self.host, self.port)
        self.process = _spawn([bin_path("runzeo"), "-C", self.conf_path], log_file=self.log_file)
        try:
            wait_for_port(
                self.host,
                self.port,
                timeout=timeout,
                process=self.process,
                log_file=self.log_file,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, *, timeout: float = 20) -> int | None:
        """Stop the server (SIGTERM closes the storage cleanly)."""
        return stop_process(self.process, timeout=timeout)

    def restart(self, *, timeout: float = 30) -> ZEOServer:
        """Stop, then start again on the same port with the same storage."""
        self.stop()
        return self.start(timeout=timeout)

    def __enter__(self) -> ZEOServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"<ZEOServer {self.address} pid={pid}>"


def start_zeo(
    *,
    var_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_file: str | os.PathLike | None = None,
    timeout: float = 30,
) -> ZEOServer:
    """Start a ZEO server for ``var_dir`` (on a free port unless ``port``).

    Writes ``var_dir/zeo.conf`` and returns once the port is open.

    >>> zeo = start_zeo(var_dir=tmp_path / "var", log_file=tmp_path / "zeo.log")  # doctest: +SKIP
    """
    var_dir = Path(var_dir).absolute()
    port = port or free_port(host)
    conf_path = write_zeo_conf(path=var_dir / "zeo.conf", var_dir=var_dir, host=host, port=port)
    server = ZEOServer(
        conf_path=conf_path,
        var_dir=var_dir,
        host=host,
        port=port,
        log_file=Path(log_file).absolute() if log_file else None,
    )
    return server.start(timeout=timeout)


# --- Zope configuration ------------------------------------------------------


def _zconfig_value(value: object) -> str:
    # ZConfig substitutes $NAME in values; "$$" is a literal dollar.
    text = str(value)
    if "\n" in text:
        raise ValueError(f"Configuration values cannot contain newlines: {text!r}")
    return text.replace("$", "$$")


def write_zope_conf(
    *,
    path: str | os.PathLike,
    zeo_address: str,
    var_dir: str | os.PathLike,
    blob_dir: str | os.PathLike,
    environment: Mapping[str, str] | None = None,
    debug_mode: bool = False,
    cache_size: int = 30000,
    cache_size_bytes: str = "256MB",
    server_sync: bool = True,
) -> Path:
    """Write a ``zope.conf`` for a ZEO client: WSGI instance and workers share it.

    ``environment`` lands in ``os.environ`` when Zope starts: that is how
    ``CELERY_*`` and ``PLONECELERY_*`` settings reach the web instance and the
    worker alike. The instance home is the parent of the directory holding
    ``path`` (``etc/zope.conf`` -> the project directory).

    The client waits for the server at startup (up to 30 s) and reconnects by
    itself when the server restarts. ``server_sync`` makes each transaction
    start with a round trip to the server so a worker sees what the web
    request that queued its task has just committed.

    >>> write_zope_conf(
    ...     path="etc/zope.conf", zeo_address="127.0.0.1:8100", var_dir="var",
    ...     blob_dir="var/blobstorage", environment={"CELERY_BROKER_URL": "redis://"},
    ... )  # doctest: +SKIP
    """
    path = Path(path).absolute()
    var_dir = Path(var_dir).absolute()
    blob_dir = Path(blob_dir).absolute()
    instance_home = path.parent.parent
    for sub in ("log", "cache"):
        (var_dir / sub).mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)

    env_lines = []
    for name, value in (environment or {}).items():
        if not _ENV_NAME.match(name):
            raise ValueError(
                f"Environment variable name {name!r} is not an identifier; "
                "zope.conf's <environment> accepts only letters, digits and _."
            )
        if value is None or str(value) == "":
            continue  # ZConfig cannot express an empty value.
        env_lines.append(f"  {name} {_zconfig_value(value)}")
    env_lines.append(f"  CHAMELEON_CACHE {_zconfig_value(var_dir / 'cache')}")

    path.write_text(
        f"""\
# Generated by collective.plonecelery.instance: changes are overwritten.
%define INSTANCE {_zconfig_value(instance_home)}
%define VAR {_zconfig_value(var_dir)}
%import ZEO

instancehome $INSTANCE
clienthome $VAR
debug-mode {"on" if debug_mode else "off"}
debug-exceptions off
enable-xmlrpc off

<environment>
{chr(10).join(env_lines)}
</environment>

<zodb_db main>
  mount-point /
  # Objects kept in memory per connection (count and size).
  cache-size {cache_size}
  cache-size-bytes {cache_size_bytes}
  # ZEO's own <clientstorage> (not ZODB's <zeoclient>): it alone knows
  # server-sync and wait-timeout. It always waits for the server at startup
  # and reconnects by itself after a server restart.
  <clientstorage>
    server {_zconfig_value(zeo_address)}
    storage 1
    blob-dir {_zconfig_value(blob_dir)}
    shared-blob-dir on
    cache-size 128MB
    wait-timeout 30
    server-sync {"on" if server_sync else "off"}
  </clientstorage>
</zodb_db>
""",
        encoding="utf-8",
    )
    return path


def write_zope_ini(
    *,
    path: str | os.PathLike,
    zope_conf: str | os.PathLike,
    host: str,
    port: int,
    threads: int = 4,
) -> Path:
    """Write the PasteDeploy ini that ``runwsgi`` serves with waitress.

    Logs (Zope's event log and the access log) go to stderr.

    >>> write_zope_ini(
    ...     path="etc/zope.ini", zope_conf="etc/zope.conf", host="127.0.0.1", port=8080
    ... )  # doctest: +SKIP
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    # PasteDeploy interpolates "%" in values: double it in the path. (The
    # logging sections are read raw: their formats keep single "%".)
    conf = str(Path(zope_conf).absolute()).replace("%", "%%")
    path.write_text(
        f"""\
# Generated by collective.plonecelery.instance: changes are overwritten.
[app:zope]
use = egg:Zope#main
zope_conf = {conf}

[server:main]
use = egg:waitress#main
host = {host}
port = {port}
threads = {threads}
clear_untrusted_proxy_headers = false

[filter:translogger]
use = egg:Paste#translogger
setup_console_handler = False

[pipeline:main]
pipeline =
    egg:Zope#httpexceptions
    translogger
    zope

[loggers]
keys = root, waitress.queue, waitress, wsgi

[handlers]
keys = console, accesslog

[formatters]
keys = generic, message

[formatter_generic]
format = %(asctime)s %(levelname)s [%(name)s:%(lineno)s][%(threadName)s] %(message)s
datefmt = %Y-%m-%d %H:%M:%S

[formatter_message]
format = %(message)s

[logger_root]
level = INFO
handlers = console

[logger_waitress.queue]
level = INFO
handlers = console
qualname = waitress.queue
propagate = 0

[logger_waitress]
level = INFO
handlers = console
qualname = waitress
propagate = 0

[logger_wsgi]
level = INFO
handlers = accesslog
qualname = wsgi
propagate = 0

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[handler_accesslog]
class = StreamHandler
args = (sys.stderr,)
level = INFO
formatter = message
""",
        encoding="utf-8",
    )
    return path


# --- Processes ---------------------------------------------------------------


def start_wsgi(
    *,
    zope_ini: str | os.PathLike,
    host: str,
    port: int,
    log_file: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.Popen:
    """Start Zope (``runwsgi zope.ini``) and wait until it listens on ``port``.

    ``host``/``port`` must match the ini (see :func:`write_zope_ini`).

    >>> wsgi = start_wsgi(zope_ini="etc/zope.ini", host="127.0.0.1", port=8080)  # doctest: +SKIP
    """
    ensure_port_free(host, port)
    proc = _spawn([bin_path("runwsgi"), Path(zope_ini).absolute()], log_file=log_file, env=env)
    try:
        wait_for_port(host, port, timeout=timeout, process=proc, log_file=log_file)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def start_worker(
    *,
    zope_conf: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = ("-l", "info", "-c", "1"),
    log_file: str | os.PathLike | None = None,
) -> subprocess.Popen:
    """Start ``plonecelery --zope-conf <zope_conf> worker <args>``.

    Returns as soon as the process runs; it is not yet consuming tasks.
    ``env`` replaces the inherited environment when given.

    >>> worker = start_worker(
    ...     zope_conf="etc/zope.conf", log_file="var/log/worker.log"
    ... )  # doctest: +SKIP
    """
    proc = _spawn(
        [
            bin_path("plonecelery"),
            "--zope-conf",
            Path(zope_conf).absolute(),
            "worker",
            *args,
        ],
        log_file=log_file,
        env=env,
    )
    try:
        time.sleep(0.2)
    except BaseException:
        stop_process(proc)
        raise
    if proc.poll() is not None:
        raise RuntimeError(
            f"{_describe(proc)} exited with code {proc.returncode}." + _log_hint(log_file)
        )
    return proc


# --- Site creation -----------------------------------------------------------


def create_site(
    *,
    zope_conf: str | os.PathLike,
    site_id: str = "Plone",
    title: str = "Plone site",
    admin_user: str = "admin",
    admin_password: str,
    extra_profiles: Sequence[str] = (),
    log_file: str | os.PathLike | None = None,
    timeout: float = 300,
) -> bool:
    """Create the Plone site (and the Zope admin user) if they are missing.

    Runs in a subprocess, so the caller never boots Zope. Installs Classic UI
    with plone.app.contenttypes, plone.restapi and collective.plonecelery
    (:data:`SITE_PROFILES`), then ``extra_profiles``. The admin user is added
    to the Zope root with the Manager role; an existing user keeps its
    password. Returns True if the site was created, False if it existed.

    >>> create_site(zope_conf="etc/zope.conf", admin_password="secret")  # doctest: +SKIP
    True
    """
    if not admin_password:
        raise ValueError("create_site needs a non-empty admin_password.")
    args = [
        sys.executable,
        "-m",
        "collective.plonecelery.instance",
        "create-site",
        "--zope-conf",
        str(Path(zope_conf).absolute()),
        "--site-id",
        site_id,
        "--title",
        title,
        "--admin-user",
        admin_user,
    ]
    for profile in extra_profiles:
        args += ["--profile", profile]
    # The password goes through the environment, not argv (visible in ps).
    env = dict(os.environ, PLONECELERY_ADMIN_PASSWORD=admin_password)
    log = _open_log(log_file)
    try:
        result = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log if log else subprocess.PIPE,
            env=env,
            timeout=timeout,
            check=False,
        )
    finally:
        if log is not None:
            log.close()
    if result.returncode != 0:
        details = (
            result.stderr.decode("utf-8", "replace")[-5000:]
            if log is None
            else tail(log_file, lines=40)
        )
        raise RuntimeError(
            f"Creating the Plone site {site_id!r} failed "
            f"(exit code {result.returncode}):\n{details}"
        )
    last_line = result.stdout.decode("utf-8", "replace").strip().splitlines()[-1]
    return bool(json.loads(last_line)["created"])


def _create_site_in_zope(
    *,
    zope_conf: str,
    site_id: str,
    title: str,
    admin_user: str,
    admin_password: str,
    profiles: Sequence[str],
) -> bool:
    """Body of ``create-site``: boots Zope in this process."""
    if "Testing" in sys.modules:
        raise RuntimeError(
            "The 'Testing' package was imported before Zope started: Zope would "
            "open Testing/custom_zodb.py's DemoStorage instead of zope.conf's "
            "database. Run create-site in a fresh process (create_site())."
        )
    from Zope2.Startup.run import configure_wsgi

    configure_wsgi(zope_conf)

    import Zope2

    # Zope2.app() must come before any import of Testing (makerequest below):
    # importing Testing sets cfg.testinghome, and Zope's startup then prefers
    # Testing/custom_zodb.py (a DemoStorage) to zope.conf's ZEO database.
    app = Zope2.app()

    import transaction
    from AccessControl.SecurityManagement import newSecurityManager
    from AccessControl.SecurityManagement import noSecurityManager
    from Testing.makerequest import makerequest
    from zope.component.hooks import setSite
    from zope.globalrequest import setRequest

    app = makerequest(app)
    setRequest(app.REQUEST)
    try:
        root_users = app.acl_users
        if root_users.getUserById(admin_user) is None:
            root_users.userFolderAddUser(admin_user, admin_password, ["Manager"], [])
            transaction.commit()
            logger.info("Added Zope admin user %r.", admin_user)
        if site_id in app.objectIds():
            logger.info("Site %r exists already.", site_id)
            return False

        from Products.CMFPlone.factory import addPloneSite

        # Owner of the site and its content is the admin, not "System".
        user = root_users.getUserById(admin_user).__of__(root_users)
        newSecurityManager(None, user)
        addPloneSite(
            app,
            site_id,
            title=title,
            extension_ids=list(profiles),
            default_language="en",
        )
        transaction.get().note(f"Created Plone site {site_id} (collective.plonecelery)")
        transaction.commit()
        logger.info("Created Plone site %r with %s.", site_id, ", ".join(profiles))
        return True
    except BaseException:
        transaction.abort()
        raise
    finally:
        noSecurityManager()
        setSite(None)
        setRequest(None)
        app._p_jar.close()
        app._p_jar.db().close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m collective.plonecelery.instance create-site --zope-conf PATH``.

    The admin password comes from ``--admin-password`` or the
    ``PLONECELERY_ADMIN_PASSWORD`` variable. Prints ``{"created": true|false}``
    as the last line of stdout.
    """
    parser = argparse.ArgumentParser(
        prog="python -m collective.plonecelery.instance",
        description="Local Plone instance helpers of collective.plonecelery.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser(
        "create-site", help="Create the admin user and the Plone site if missing."
    )
    create.add_argument("--zope-conf", required=True, help="path of zope.conf")
    create.add_argument("--site-id", default="Plone")
    create.add_argument("--title", default="Plone site")
    create.add_argument("--admin-user", default="admin")
    create.add_argument(
        "--admin-password",
        default=os.environ.get("PLONECELERY_ADMIN_PASSWORD"),
        help="default: $PLONECELERY_ADMIN_PASSWORD",
    )
    create.add_argument(
        "--profile",
        action="append",
        default=[],
        help="extra GenericSetup profile to install (repeatable)",
    )
    options = parser.parse_args(argv)
    if not options.admin_password:
        parser.error("give --admin-password or set PLONECELERY_ADMIN_PASSWORD")
    if not Path(options.zope_conf).is_file():
        parser.error(f"{options.zope_conf} does not exist")
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s [%(name)s] %(message)s",
    )
    created = _create_site_in_zope(
        zope_conf=options.zope_conf,
        site_id=options.site_id,
        title=options.title,
        admin_user=options.admin_user,
        admin_password=options.admin_password,
        profiles=[*SITE_PROFILES, *options.profile],
    )
    print(json.dumps({"created": created}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
