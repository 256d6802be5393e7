"""ZODB helpers shared by the outbox, the dead letters and the blog delivery log."""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import transaction


@contextmanager
def own_connection(db) -> Iterator[tuple]:
    """A connection of ``db`` with a transaction manager of its own.

    Yields ``(connection, transaction_manager)``: work done here commits apart
    from the calling thread's current transaction (a relay run, a dead letter
    written after the task's own transaction was aborted). Whatever is not
    committed is aborted on the way out.

    >>> with own_connection(db) as (connection, tm):  # doctest: +SKIP
    ...     tm.begin()
    ...     connection.root()["x"] = 1
    ...     tm.commit()
    """
    tm = transaction.TransactionManager()
    connection = db.open(transaction_manager=tm)
    try:
        yield connection, tm
    finally:
        tm.abort()
        connection.close()


def root_object(connection, key: str, factory, *, create: bool):
    """The object under ``key`` in the database root; made with ``factory()`` if
    missing and ``create``, else None."""
    root = connection.root()
    obj = root.get(key)
    if obj is None and create:
        obj = root[key] = factory()
    return obj


def ensure_root_object(db, key: str, factory) -> None:
    """Create the root object ``key`` at start-up, so that first uses never race to."""
    from ZODB.POSException import ConflictError

    with own_connection(db) as (connection, tm):
        tm.begin()
        if connection.root().get(key) is not None:
            return
        root_object(connection, key, factory, create=True)
        try:
            tm.commit()
        except ConflictError:
            pass  # another process just created it


def writer_id() -> str:
    """Host, process and thread of the caller.

    Structures written by many Zope threads at once keep one shard per writer, so
    that two threads never change the same object and never conflict.
    """
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


@functools.cache
def retryable_errors() -> tuple[type[BaseException], ...]:
    """Errors after which a task is simply run again in a fresh transaction:
    write conflicts, and a ZEO server that went away (the client reconnects)."""
    from ZEO.Exceptions import ClientDisconnected
    from ZODB.POSException import ConflictError

    return (ConflictError, ClientDisconnected)
