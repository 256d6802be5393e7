"""Writing ``zope.conf`` and ``zope.ini`` for a ZEO or RelStorage client instance."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def zconfig_value(value: object) -> str:
    # ZConfig substitutes $NAME in values; "$$" is a literal dollar.
    text = str(value)
    if "\n" in text:
        raise ValueError(f"Configuration values cannot contain newlines: {text!r}")
    return text.replace("$", "$$")


@dataclass(frozen=True)
class ZeoTLS:
    """TLS between a ZEO server and its clients: one side's certificate and key, and
    the CA that signs the other side's certificates.

    ZEO's TLS is mutual: the server requires a client certificate signed by
    ``ca`` (``CERT_REQUIRED``) and the client checks the server's certificate
    against ``ca`` and ``server_hostname``. Both sides verify with
    ``VERIFY_X509_STRICT``. Give the server's certificate to :func:`.start_zeo`
    and a client's to :func:`write_zope_conf`::

        server = ZeoTLS(ca="ca.pem", certificate="server.pem", key="server.key")
        client = ZeoTLS(ca="ca.pem", certificate="client.pem", key="client.key")
    """

    ca: str | os.PathLike
    certificate: str | os.PathLike
    key: str | os.PathLike
    server_hostname: str = "localhost"

    def ssl_section(self, *, client: bool, indent: str) -> str:
        """ZEO's ``<ssl>`` section (the client's also names the server's host name)."""
        lines = [
            "<ssl>",
            f"  certificate {zconfig_value(Path(self.certificate).absolute())}",
            f"  key {zconfig_value(Path(self.key).absolute())}",
            f"  authenticate {zconfig_value(Path(self.ca).absolute())}",
        ]
        if client:
            lines.append(f"  server-hostname {zconfig_value(self.server_hostname)}")
        lines.append("</ssl>")
        return "\n".join(indent + line for line in lines)


def clientstorage_section(
    *, zeo_address: str, blob_dir: Path, server_sync: bool = True, tls: ZeoTLS | None = None
) -> tuple[str, str]:
    """The ``%import`` and storage section of a ZEO client (see :func:`write_zope_conf`)."""
    ssl = "\n" + tls.ssl_section(client=True, indent="    ") if tls else ""
    return (
        "ZEO",
        f"""\
  # ZEO's own <clientstorage> (not ZODB's <zeoclient>): it alone knows
  # server-sync and wait-timeout. It always waits for the server at startup
  # and reconnects by itself after a server restart.
  <clientstorage>
    server {zconfig_value(zeo_address)}
    storage 1
    blob-dir {zconfig_value(blob_dir)}
    shared-blob-dir on
    cache-size 128MB
    wait-timeout 30
    server-sync {"on" if server_sync else "off"}{ssl}
  </clientstorage>""",
    )


def relstorage_section(*, dsn: str, blob_dir: Path) -> tuple[str, str]:
    """The ``%import`` and storage section of RelStorage on PostgreSQL.

    History-free (``keep-history false``, like a packed FileStorage); blobs live in
    the database and ``blob_dir`` is this machine's cache of them, which the
    instance and the worker processes may share. Each transaction starts by
    polling the database for changes: a worker sees what the request that queued
    its task committed, as ``server-sync`` does for ZEO.
    """
    return (
        "relstorage",
        f"""\
  <relstorage>
    keep-history false
    blob-dir {zconfig_value(blob_dir)}
    shared-blob-dir false
    blob-cache-size 512MB
    <postgresql>
      dsn {zconfig_value(dsn)}
    </postgresql>
  </relstorage>""",
    )


def write_zope_conf(
    *,
    path: str | os.PathLike,
    var_dir: str | os.PathLike,
    zeo_address: str | None = None,
    blob_dir: str | os.PathLike | None = None,
    relstorage_dsn: str | None = None,
    environment: Mapping[str, str] | None = None,
    debug_mode: bool = False,
    cache_size: int = 30000,
    cache_size_bytes: str = "256MB",
    server_sync: bool = True,
    zeo_tls: ZeoTLS | None = None,
) -> Path:
    """Write a ``zope.conf`` for a ZEO or RelStorage client: WSGI instance and
    workers share it.

    ``environment`` lands in ``os.environ`` when Zope starts: that is how
    ``CELERY_*`` and ``PLONECELERY_*`` settings reach the web instance and the
    worker alike. The instance home is the parent of the directory holding
    ``path`` (``etc/zope.conf`` -> the project directory).

    The client waits for the server at startup (up to 30 s) and reconnects by
    itself when the server restarts. ``server_sync`` makes each transaction
    start with a round trip to the server so a worker sees what the web
    request that queued its task has just committed. ``zeo_tls`` (this
    client's certificate, see :class:`ZeoTLS`) talks to the server over TLS.

    With ``relstorage_dsn`` (a libpq connection string) instead of ``zeo_address``
    the database is RelStorage on PostgreSQL (:func:`relstorage_section`), and
    ``blob_dir`` (default ``var_dir/blobcache``) is a local blob cache.

    >>> write_zope_conf(
    ...     path="etc/zope.conf", zeo_address="127.0.0.1:8100", var_dir="var",
    ...     blob_dir="var/blobstorage", environment={"CELERY_BROKER_URL": "redis://"},
    ... )  # doctest: +SKIP
    >>> write_zope_conf(
    ...     path="etc/zope.conf", var_dir="var",
    ...     relstorage_dsn="dbname=plone host=127.0.0.1 user=plone",
    ... )  # doctest: +SKIP
    """
    if (zeo_address is None) == (relstorage_dsn is None):
        raise ValueError("write_zope_conf needs either zeo_address or relstorage_dsn.")
    path = Path(path).absolute()
    var_dir = Path(var_dir).absolute()
    if zeo_address is not None:
        if blob_dir is None:
            raise ValueError("A ZEO client needs the server's blob_dir.")
        package, storage = clientstorage_section(
            zeo_address=zeo_address,
            blob_dir=Path(blob_dir).absolute(),
            server_sync=server_sync,
            tls=zeo_tls,
        )
    else:
        blob_cache = Path(blob_dir).absolute() if blob_dir else var_dir / "blobcache"
        package, storage = relstorage_section(dsn=relstorage_dsn, blob_dir=blob_cache)
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
        env_lines.append(f"  {name} {zconfig_value(value)}")
    env_lines.append(f"  CHAMELEON_CACHE {zconfig_value(var_dir / 'cache')}")

    path.write_text(
        f"""\
# Generated by collective.plonecelery.devtools.instance: changes are overwritten.
%define INSTANCE {zconfig_value(instance_home)}
%define VAR {zconfig_value(var_dir)}
%import {package}

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
{storage}
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
# Generated by collective.plonecelery.devtools.instance: changes are overwritten.
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

# A URL path that is not UTF-8 is a 400, not Zope's 500 (collective.plonecelery.restapi.wsgi).
[filter:utf8paths]
use = egg:collective.plonecelery#utf8paths

[pipeline:main]
pipeline =
    egg:Zope#httpexceptions
    translogger
    utf8paths
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
