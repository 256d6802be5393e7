"""One task's Zope world: connection, transaction, request, site and user.

:func:`zope_environment` gives one task all of these and cleans all of it up
afterwards; the database comes from :func:`.process.get_db`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import transaction
from AccessControl.users import UnrestrictedUser

from ..exceptions import UnknownUser
from ..internals import mark_traversed
from .process import get_db


class TaskAdmin(UnrestrictedUser):
    """The unrestricted user of ``as_admin`` tasks, keeping the queuing user's id
    so that ownership and creators stay meaningful."""

    def getId(self):
        return self.getUserName()


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
    mark_traversed(request)
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
