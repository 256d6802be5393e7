"""ZEO client adjustment: forget pre-fetched oids when the server restarts.

A ZEO client asks the server for new object ids 100 at a time and keeps the
unused ones across a reconnect. A restarted FileStorage server does not know
about ids it handed out but nobody stored, and hands them out again: two
clients then create different objects with the same oid (seen as a
ConflictError, then "A different object already has the same oid"). Workers
must survive a ZEO restart, so every database opened here drops its unused
ids whenever the client (re)connects.

Both helpers here look for ZEO's ClientStorage and do nothing for other storages:
RelStorage allocates oids in its database (a sequence, nothing to forget) and polls
it at every transaction start (its own server-sync).
"""

from __future__ import annotations

import logging

from .internals import drop_prefetched_oids

logger = logging.getLogger(__name__)


def forget_oids_on_reconnect(db) -> None:
    """Make ``db``'s ZEO client storage drop pre-fetched oids on (re)connect.

    A no-op for storages without ZEO's ``notify_connected`` (RelStorage, FileStorage).
    """
    storages = [db.storage, *(d.storage for d in getattr(db, "databases", {}).values())]
    for storage in storages:
        original = getattr(storage, "notify_connected", None)
        if original is None or getattr(original, "_plonecelery", False):
            continue  # not a ZEO client, or done already

        def notify_connected(conn, info, _storage=storage, _original=original):
            dropped = drop_prefetched_oids(_storage)
            if dropped:
                logger.info("ZEO (re)connected: dropping %d pre-fetched oid(s)", dropped)
            return _original(conn, info)

        notify_connected._plonecelery = True
        storage.notify_connected = notify_connected


def on_database_opened(event) -> None:
    """Subscriber for Zope's IDatabaseOpenedWithRoot (Plone instances)."""
    forget_oids_on_reconnect(event.database)


def warn_without_server_sync(db) -> None:
    """Workers need ``server-sync on``: else a task may start before its
    worker has seen the commit that queued it, and is discarded until the
    outbox relay sends it again. Silent for storages that are not ZEO clients."""
    storage = db.storage
    if hasattr(storage, "server_sync") and not storage.server_sync:
        logger.warning(
            "The ZEO client of this worker has server-sync off: tasks may not see the "
            "transaction that queued them and run late, by the outbox relay. Set "
            "'server-sync on' in the <clientstorage> section of zope.conf."
        )
