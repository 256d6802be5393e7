"""Real processes for integration tests: ZEO (or RelStorage), a Plone site, a worker.

:class:`WorkerHarness` starts a ZEO server, creates a Plone site in it, starts a
``plonecelery worker`` process and boots Zope in the calling process, which
becomes one more ZEO client that queues tasks and looks at their effects::

    harness = WorkerHarness(base_dir=tmp_path, environment={
        "CELERY_BROKER_URL": "redis://localhost:6379/0",
        "CELERY_IMPORTS": "my.addon.tasks",
    })
    harness.start()
    with harness.session(user="admin") as portal:
        result = my_task.delay(portal)
        transaction.commit()
    assert result.get(timeout=30) == "done"
    harness.stop()

With ``database="relstorage"`` there is no ZEO server: the site lives in RelStorage
on a fresh PostgreSQL database (127.0.0.1:5432 as ``postgres`` unless ``postgresql``
names another :class:`~.instance.PostgreSQLDatabase`), dropped by ``stop()``.

``zeo_tls=(server, client)``, two :class:`~.instance.ZeoTLS` (the server's certificate
and the one Zope here and the worker present), puts ZEO on TLS.

Import nothing that imports ``Testing`` (plone.app.testing does) before
``start()``: Zope then silently swaps the configured ZODB for a DemoStorage.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

from ..app import app
from ..config import settings_from_environ
from ..outbox.records import ensure_outbox
from ..worker.process import start_zope
from ..zeo import forget_oids_on_reconnect
from . import instance

DATABASES = ("zeo", "relstorage")


class WorkerHarness:
    """A ZEO server (or RelStorage), a Plone site, a real worker, this process as a client."""

    def __init__(
        self,
        *,
        base_dir: str | os.PathLike,
        environment: Mapping[str, str] | None = None,
        site_id: str = "plone",
        worker_args: tuple[str, ...] = ("-l", "info", "-c", "1", "-P", "prefork"),
        worker_env: Mapping[str, str] | None = None,
        database: str = "zeo",
        postgresql: instance.PostgreSQLDatabase | None = None,
        zeo_tls: tuple[instance.ZeoTLS, instance.ZeoTLS] | None = None,
    ):
        if database not in DATABASES:
            raise ValueError(f"database={database!r}: use one of {', '.join(DATABASES)}")
        self.base_dir = Path(base_dir)
        self.var_dir = self.base_dir / "var"
        self.log_dir = self.var_dir / "log"
        self.environment = dict(environment or {})
        self.site_id = site_id
        self.worker_args = worker_args
        self.worker_env = dict(worker_env or {})
        self.admin_password = secrets.token_urlsafe(12)
        self.database = database
        self.postgresql = postgresql
        self.zeo_tls = zeo_tls
        self._own_postgresql = False
        self.zeo = None
        self.worker = None
        self.zope_conf: Path | None = None
        self.db = None
        self.http = None
        #: The port for :meth:`start_http` when it must be known early (a public URL).
        self.http_port: int | None = None
        self._worker_starts = 0

    @property
    def site_path(self) -> str:
        return "/" + self.site_id

    def start(self) -> WorkerHarness:
        """Start ZEO (or make the database), create the site, boot Zope here, start the worker."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.database == "relstorage":
            if self.postgresql is None:
                self.postgresql = instance.PostgreSQLDatabase.fresh()
                self._own_postgresql = True
            storage = {"relstorage_dsn": self.postgresql.dsn}
        else:
            server_tls, client_tls = self.zeo_tls or (None, None)
            self.zeo = instance.start_zeo(
                var_dir=self.var_dir, log_file=self.log_dir / "zeo.log", tls=server_tls
            )
            storage = {
                "zeo_address": self.zeo.address,
                "blob_dir": self.zeo.blob_dir,
                "zeo_tls": client_tls,
            }
        self.zope_conf = instance.write_zope_conf(
            path=self.base_dir / "etc" / "zope.conf",
            var_dir=self.var_dir,
            environment=self.environment,
            **storage,
        )
        instance.create_site(
            zope_conf=self.zope_conf,
            site_id=self.site_id,
            admin_password=self.admin_password,
            log_file=self.log_dir / "create-site.log",
        )
        self._boot_zope_here()
        self.start_worker()
        return self

    def add_site(self, site_id: str, *, extra_profiles: tuple[str, ...] = ()) -> bool:
        """Create another Plone site in the same database (with ``extra_profiles``, e.g.
        ``plone.volto:default``); False if it exists. Use it with ``session(site_id=...)``."""
        return instance.create_site(
            zope_conf=self.zope_conf,
            site_id=site_id,
            admin_password=self.admin_password,
            extra_profiles=extra_profiles,
            log_file=self.log_dir / f"create-site-{site_id}.log",
        )

    def _boot_zope_here(self) -> None:
        self.db = start_zope(str(self.zope_conf))
        forget_oids_on_reconnect(self.db)
        ensure_outbox(self.db)
        # zope.conf's <environment> section has just updated os.environ.
        app.conf.update(settings_from_environ())

    @property
    def worker_log(self) -> Path:
        return self.log_dir / f"worker-{self._worker_starts}.log"

    def start_worker(self, *, timeout: float = 60) -> None:
        """Start a worker process and wait until it consumes tasks."""
        self._worker_starts += 1
        env = {**os.environ, **self.environment, **self.worker_env}
        self.worker = instance.start_worker(
            zope_conf=self.zope_conf, env=env, args=self.worker_args, log_file=self.worker_log
        )
        self.wait_for_log("ready.", timeout=timeout)

    def stop_worker(self) -> None:
        instance.stop_process(self.worker)
        self.worker = None

    def wait_for_log(self, text: str, *, timeout: float = 60) -> None:
        """Wait until the current worker's log contains ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.worker_log.exists() and text in self.worker_log.read_text(errors="replace"):
                return
            if self.worker is not None and self.worker.poll() is not None:
                raise RuntimeError(
                    f"The worker exited with code {self.worker.returncode}:\n"
                    + instance.tail(self.worker_log, lines=40)
                )
            time.sleep(0.2)
        raise TimeoutError(
            f"No {text!r} in the worker log after {timeout}s:\n"
            + instance.tail(self.worker_log, lines=40)
        )

    @contextmanager
    def session(
        self, *, user: str | None = "admin", unrestricted: bool = False, site_id: str | None = None
    ) -> Iterator:
        """This process as a Plone client: yields the site (``site_id``, else the harness's
        own), as ``user``.

        Commit inside to queue tasks; anything uncommitted is aborted.
        """
        from ..worker.environment import zope_environment
        from ..worker.process import use_database

        site_path = f"/{site_id}" if site_id else self.site_path
        with (
            use_database(self.db),
            zope_environment(site_path=site_path, userid=user, unrestricted=unrestricted) as site,
        ):
            yield site

    def start_http(self, *, threads: int = 4, port: int | None = None) -> str:
        """Serve the site over HTTP (runwsgi + waitress) on ``port`` (None: a free one); its
        base URL.

        Stopped by :meth:`stop`.
        """
        port = port or instance.free_port()
        ini = instance.write_zope_ini(
            path=self.base_dir / "etc" / "zope.ini",
            zope_conf=self.zope_conf,
            host="127.0.0.1",
            port=port,
            threads=threads,
        )
        self.http = instance.start_wsgi(
            zope_ini=ini,
            host="127.0.0.1",
            port=port,
            log_file=self.log_dir / "instance.log",
            env={**os.environ, **self.environment},
        )
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        """Stop the web server and the worker, close the database, stop ZEO
        (or drop the PostgreSQL database the harness made)."""
        if self.http is not None:
            instance.stop_process(self.http)
            self.http = None
        if self.worker is not None:
            self.stop_worker()
        if self.db is not None:
            self.db.close()
            self.db = None
        if self.zeo is not None:
            self.zeo.stop()
            self.zeo = None
        if self._own_postgresql:
            self.postgresql.drop()
            self.postgresql = None
            self._own_postgresql = False
