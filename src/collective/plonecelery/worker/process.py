"""The worker process: Zope booted once, one ZODB per process, Celery's lifecycle.

* :func:`boot_zope` loads ``zope.conf`` and ZCML in the Celery main process,
  then closes the database again: ZEO client storages hold sockets and threads
  that must never be shared across a fork.
* :func:`get_db` opens the database lazily in whichever process runs tasks
  (a prefork child after the fork, or the main process for ``solo`` and
  ``threads`` pools) and reopens it if the process id changed.
* :class:`ZopeFixup` is all the glue to Celery's worker signals, installed on
  the app by :func:`fixup` (as Celery's own Django fixup is): it is handed the
  app and never imports it. It also keeps the process's presence beating
  (:mod:`.presence`): which tasks run here, for the outbox relay and for people.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from celery import signals

from .. import tracing
from ..config import addon_settings
from ..config import own_variables
from ..internals import sqlalchemy_broker_engines
from ..internals import zope_configured
from ..outbox.records import ensure_outbox
from ..zeo import forget_oids_on_reconnect
from ..zeo import warn_without_server_sync
from . import presence

logger = logging.getLogger(__name__)

_state = threading.Lock()
_db = None
_db_pid: int | None = None
_booted_conf: str | None = None

# Eager mode runs a task in a helper thread of the Plone process, against the
# database of the connection that queued it rather than a worker's own.
_eager = threading.local()


def start_zope(zope_conf: str):
    """Configure Zope from ``zope_conf``, load ZCML, and return the root database.

    The process environment wins over zope.conf's ``<environment>`` section for
    ``CELERY_*``/``PLONECELERY_*`` variables, so one zope.conf can serve hosts that
    differ in a setting or two.
    """
    import Zope2
    from Zope2.Startup.run import configure_wsgi

    overrides = own_variables(os.environ)
    configure_wsgi(zope_conf)
    os.environ.update(overrides)
    Zope2.startup_wsgi()
    return Zope2.DB


def boot_zope(zope_conf: str) -> None:
    """Configure Zope from ``zope_conf`` and load ZCML, once per process tree.

    The database is closed again until a task needs it (see :func:`get_db`).

    >>> boot_zope("etc/zope.conf")  # doctest: +SKIP

    :raises FileNotFoundError: ``zope_conf`` does not exist.
    """
    global _booted_conf
    if _booted_conf is not None:
        return
    if not os.path.isfile(zope_conf):
        raise FileNotFoundError(
            f"Zope configuration {zope_conf!r} not found: pass --zope-conf "
            "or set ZOPE_CONF to your instance's zope.conf."
        )
    db = start_zope(zope_conf)
    _booted_conf = zope_conf
    close_db()
    # Zope opened the root database for its start-up; close it so no ZEO
    # connection is inherited by forked pool processes.
    db.close()
    _forget_zope_databases()
    logger.info("Zope configured from %s; ZODB closed until a task needs it", zope_conf)


def boot_zope_from_environ() -> None:
    """Boot Zope from ``$ZOPE_CONF`` unless Zope is configured in this process already.

    For ``celery -A collective.plonecelery.app ...``, where nobody else boots it;
    zope.conf's ``<environment>`` may carry the ``CELERY_*`` settings.
    """
    zope_conf = os.environ.get("ZOPE_CONF")
    if zope_conf and not zope_configured():
        boot_zope(zope_conf)


def zope_booted() -> bool:
    """Whether :func:`boot_zope` ran in this process tree."""
    return _booted_conf is not None


def _forget_zope_databases() -> None:
    from App.config import getConfiguration

    dbtab = getattr(getConfiguration(), "dbtab", None)
    if dbtab is not None:
        dbtab.databases.clear()


def open_db():
    """Open the root database configured in ``zope.conf`` for this process."""
    global _db, _db_pid
    import Zope2
    from App.config import getConfiguration

    with _state:
        if _db is not None and _db_pid == os.getpid():
            return _db
        dbtab = getConfiguration().dbtab
        dbtab.databases.clear()
        _db = dbtab.getDatabase("/", is_root=1)
        _db_pid = os.getpid()
        forget_oids_on_reconnect(_db)
        warn_without_server_sync(_db)
        ensure_outbox(_db)
        presence.ensure_registry(_db)
        Zope2.DB = _db
        logger.info("Opened the ZODB in process %s", _db_pid)
        return _db


def forget_inherited_broker_connections() -> None:
    """In a forked pool process: new connection pools for the SQLAlchemy broker's
    engines, leaving the parent's connections to the parent (``sqla+`` brokers on
    PostgreSQL or MySQL; SQLite's too)."""
    for engine in sqlalchemy_broker_engines():
        engine.dispose(close=False)


def close_db() -> None:
    """Close this process's database (``worker_process_shutdown``)."""
    global _db, _db_pid
    with _state:
        if _db is not None and _db_pid == os.getpid():
            _db.close()
            logger.info("Closed the ZODB in process %s", _db_pid)
        _db = None
        _db_pid = None


def get_db():
    """The database tasks of this thread run against.

    :raises RuntimeError: Zope is not configured in this process.
    """
    db = getattr(_eager, "db", None)
    if db is not None:
        return db
    if _db is not None and _db_pid == os.getpid():
        return _db
    if _booted_conf is None:
        raise RuntimeError(
            "Zope is not configured in this process: start workers with "
            "'plonecelery --zope-conf etc/zope.conf worker' or set ZOPE_CONF."
        )
    return open_db()


@contextmanager
def use_database(db) -> Iterator[None]:
    """Run tasks of this thread against ``db`` (eager mode, test clients)."""
    _eager.db = db
    try:
        yield
    finally:
        _eager.db = None


class ZopeFixup:
    """The worker's lifecycle glue: a ZODB and a heartbeat per process that runs
    tasks, both closed at shutdown.

    Celery sends these signals for every app's worker in the process: the fixup acts
    only for a worker of its own app.
    """

    def __init__(self, app):
        self.app = app
        self.ours = False
        self.nodename = ""
        self.main_pid: int | None = None
        self.heartbeat: presence.Heartbeat | None = None
        self.heartbeat_pid: int | None = None

    def install(self) -> ZopeFixup:
        signals.worker_init.connect(self.on_worker_init, weak=False)
        signals.worker_process_init.connect(self.on_worker_process_init, weak=False)
        signals.worker_ready.connect(self.on_worker_ready, weak=False)
        signals.task_prerun.connect(self.on_task_prerun, weak=False)
        signals.task_postrun.connect(self.on_task_postrun, weak=False)
        signals.worker_process_shutdown.connect(self.on_worker_process_shutdown, weak=False)
        signals.worker_shutdown.connect(self.on_worker_shutdown, weak=False)
        return self

    def on_worker_init(self, sender=None, **kwargs) -> None:
        # Set in the main process, before the pool forks: children inherit it.
        self.ours = getattr(sender, "app", None) is self.app
        if self.ours:
            self.nodename = getattr(sender, "hostname", "") or ""
            self.main_pid = os.getpid()

    def on_worker_process_init(self, **kwargs) -> None:
        # A fresh pool process after the fork: its own ZODB, never the parent's.
        if self.ours and os.getpid() != self.main_pid:
            forget_inherited_broker_connections()
        if self.ours:
            tracing.enable()  # after the fork, as OpenTelemetry's span processors need
        if self.ours and zope_booted():
            db = open_db()
            # The solo pool sends this signal too, in the main process: see on_worker_ready.
            if os.getpid() != self.main_pid:
                self.start_heartbeat(db, pool="prefork")

    def on_worker_ready(self, sender=None, **kwargs) -> None:
        # solo and threads pools run tasks in the main process: it beats itself.
        pool = getattr(sender, "pool", None)
        kind = type(pool).__module__.rsplit(".", 1)[-1]
        kind = {"thread": "threads"}.get(kind, kind)  # as in ``-P threads``
        if self.ours and zope_booted() and kind != "prefork":
            self.start_heartbeat(get_db(), pool=kind)

    def start_heartbeat(self, db, *, pool: str) -> None:
        settings = addon_settings()
        self.heartbeat = presence.Heartbeat(
            db, nodename=self.nodename, pool=pool, interval=settings.worker_heartbeat
        ).start()
        self.heartbeat_pid = os.getpid()

    def on_task_prerun(self, sender=None, task_id=None, **kwargs) -> None:
        if self.ours and task_id:
            presence.task_started(task_id, getattr(sender, "name", "?"))

    def on_task_postrun(self, sender=None, task_id=None, **kwargs) -> None:
        if self.ours and task_id:
            presence.task_ended(task_id)

    def stop_heartbeat(self) -> None:
        # A forked child inherits the parent's object, never its thread.
        if self.heartbeat is not None and self.heartbeat_pid == os.getpid():
            self.heartbeat.stop()
        self.heartbeat = None

    def on_worker_process_shutdown(self, **kwargs) -> None:
        if self.ours:
            self.stop_heartbeat()
            close_db()

    def on_worker_shutdown(self, sender=None, **kwargs) -> None:
        if getattr(sender, "app", None) is self.app:
            self.stop_heartbeat()
            close_db()


def fixup(app) -> ZopeFixup:
    """Celery's fixup hook (``Celery(fixups=[...])``): install :class:`ZopeFixup`."""
    return ZopeFixup(app).install()
