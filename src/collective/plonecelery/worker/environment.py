"""The worker side: Zope booted once, one ZODB per process, a Zope world per task.

* :func:`boot_zope` loads ``zope.conf`` and ZCML in the Celery main process,
  then closes the database again: ZEO client storages hold sockets and threads
  that must never be shared across a fork.
* :func:`get_db` opens the database lazily in whichever process runs tasks
  (a prefork child after the fork, or the main process for ``solo`` and
  ``threads`` pools) and reopens it if the process id changed.
* :func:`zope_environment` gives one task its own connection, transaction,
  request, site and user, and cleans all of it up afterwards.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import transaction
from AccessControl.users import UnrestrictedUser

from .zeo import forget_oids_on_reconnect
from .zeo import warn_without_server_sync

logger = logging.getLogger("collective.plonecelery")

ENVIRONMENT_PREFIXES = ("CELERY_", "PLONECELERY_")

_state = threading.Lock()
_db = None
_db_pid: int | None = None
_booted_conf: str | None = None

# Eager mode runs a task in a helper thread of the Plone process, against the
# database of the connection that queued it rather than a worker's own.
_eager = threading.local()


class TaskAdmin(UnrestrictedUser):
    """The unrestricted user of ``as_admin`` tasks, keeping the queuing user's id
    so that ownership and creators stay meaningful."""

    def getId(self):
        return self.getUserName()


class UnknownUser(LookupError):
    """The user a task should run as does not exist (any more)."""


def boot_zope(zope_conf: str) -> None:
    """Configure Zope from ``zope_conf`` and load ZCML, once per process tree.

    >>> boot_zope("etc/zope.conf")  # doctest: +SKIP
    """
    global _booted_conf
    if _booted_conf is not None:
        return
    if not os.path.isfile(zope_conf):
        raise FileNotFoundError(
            f"Zope configuration {zope_conf!r} not found: pass --zope-conf "
            "or set ZOPE_CONF to your instance's zope.conf."
        )
    import Zope2
    from Zope2.Startup.run import configure_wsgi

    # The process environment wins over zope.conf's <environment> section,
    # so one zope.conf can serve hosts that differ in a setting or two.
    overrides = {
        key: value for key, value in os.environ.items() if key.startswith(ENVIRONMENT_PREFIXES)
    }
    configure_wsgi(zope_conf)
    os.environ.update(overrides)
    Zope2.startup_wsgi()
    _booted_conf = zope_conf
    close_db()
    # Zope opened the root database for its start-up; close it so no ZEO
    # connection is inherited by forked pool processes.
    Zope2.DB.close()
    _forget_zope_databases()
    logger.info("Zope configured from %s; ZODB closed until a task needs it", zope_conf)


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

    from .outbox import ensure_outbox

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
        Zope2.DB = _db
        logger.info("Opened the ZODB in process %s", _db_pid)
        return _db


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
    """The database tasks of this thread run against."""
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


def make_request(app, server_url: str):
    """A request of our own whose URLs use the public ``server_url``.

    Returns ``(app wrapped in the request, request)``. (Not Testing.makerequest:
    importing ``Testing`` before Zope starts swaps the configured ZODB for a
    DemoStorage.)
    """
    from io import BytesIO

    from zope.publisher.browser import setDefaultSkin
    from ZPublisher.BaseRequest import RequestContainer
    from ZPublisher.HTTPRequest import HTTPRequest
    from ZPublisher.HTTPResponse import HTTPResponse

    parts = urlsplit(server_url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    environ = {
        "SERVER_NAME": parts.hostname or "localhost",
        "SERVER_PORT": str(port),
        "REQUEST_METHOD": "POST",
    }
    if https:
        environ["HTTPS"] = "on"
    request = HTTPRequest(BytesIO(), environ, HTTPResponse(stdout=BytesIO()))
    request._steps = ["noobject"]
    request.setServerURL(
        protocol=parts.scheme or "http", hostname=environ["SERVER_NAME"], port=port
    )
    setDefaultSkin(request)
    return app.__of__(RequestContainer(REQUEST=request)), request


def find_user(site, app, userid: str):
    """The user ``userid`` from the site's, then the root's user folder."""
    for folder in (getattr(site, "acl_users", None), app.acl_users):
        if folder is None:
            continue
        user = folder.getUserById(userid)
        if user is not None:
            return user.__of__(folder)
    raise UnknownUser(
        f"User {userid!r} does not exist in the site or the Zope root: "
        "the task will not run as anybody else."
    )


def login(*, site, app, request, userid: str | None, unrestricted: bool) -> None:
    """Make ``userid`` (or Anonymous) the current user; admin if ``unrestricted``."""
    from AccessControl.SecurityManagement import newSecurityManager
    from AccessControl.SpecialUsers import nobody
    from AccessControl.SpecialUsers import system

    if unrestricted:
        user = TaskAdmin(userid, "", ("Manager",), ()).__of__(app.acl_users) if userid else system
    elif userid:
        user = find_user(site, app, userid)
    else:
        user = nobody
    newSecurityManager(request, user)


@contextmanager
def zope_environment(
    *,
    site_path: str,
    userid: str | None,
    unrestricted: bool = False,
    server_url: str = "http://localhost:8080",
) -> Iterator[Any]:
    """A fresh connection, transaction, request, site and user for one task.

    Yields the site. The caller commits; anything left uncommitted is
    aborted on the way out, and every piece of global state is cleared.

    >>> with zope_environment(site_path="/Plone", userid="admin") as site:  # doctest: +SKIP
    ...     site.invokeFactory("Document", "doc")
    ...     transaction.commit()
    """
    from AccessControl.SecurityManagement import noSecurityManager
    from zope.component.hooks import setSite
    from zope.event import notify
    from zope.globalrequest import setRequest
    from zope.traversing.interfaces import BeforeTraverseEvent

    db = get_db()
    connection = db.open()
    try:
        transaction.begin()
        root = connection.root()["Application"]
        app, request = make_request(root, server_url)
        setRequest(request)
        site = app.unrestrictedTraverse(site_path.strip("/"))
        setSite(site)
        # Marks browser layers and sets the site, as traversal would.
        notify(BeforeTraverseEvent(site, request))
        request["PARENTS"] = [site, app]
        login(
            site=site,
            app=app,
            request=request,
            userid=userid,
            unrestricted=unrestricted,
        )
        yield site
    finally:
        transaction.abort()
        noSecurityManager()
        setSite(None)
        setRequest(None)
        connection.close()
