"""The transactional outbox: no task is lost between Plone and the broker.

Queuing a task inside a Zope transaction also writes an :class:`OutboxRecord`
into the ZODB, in that same transaction. After commit the message is sent at
once, as without the outbox. When the worker runs the task it marks the record
done in the task's own transaction, so the task's effects and "done" commit
together: a message delivered twice runs once.

A record still pending after a grace period (the broker was down at commit
time, or the Plone process died between commit and send) is sent again by the
relay, :func:`relay`, which every worker triggers periodically (a bootstep);
a lease in the ZODB lets only one relay work at a time.

Structure, and why it does not make concurrent queuing conflict: the outbox
lives in the ZODB root and holds one *shard* per queuing thread (host, process,
thread), an ``OOBTree`` keyed by ``(created, task_id)``. Two Plone threads never
write the same shard, so they never conflict; the worker only changes the
record object itself (its state), never the tree, so it never conflicts with
queuing either. Only the relay removes finished records, from shards that have
been idle for a while.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import transaction
from BTrees.OOBTree import OOBTree
from celery import bootsteps
from persistent import Persistent
from ZODB.POSException import ConflictError

from .app import app
from .config import addon_settings

logger = logging.getLogger("collective.plonecelery")

ROOT_KEY = "collective.plonecelery.outbox"
PENDING, DONE, FAILED = "pending", "done", "failed"
RELAY_BATCH = 500


class Outbox(Persistent):
    """All outbox records of one ZODB, in per-thread shards."""

    def __init__(self):
        self.shards = OOBTree()
        self.lease_owner: str | None = None
        self.lease_until = 0.0


class OutboxRecord(Persistent):
    """One queued task call, kept until the worker has run it."""

    def __init__(self, *, task_name: str, task_id: str, args, kwargs, options, created: float):
        self.task_name = task_name
        self.task_id = task_id
        self.args = args
        self.kwargs = kwargs
        self.options = options
        self.created = created
        self.state = PENDING
        self.attempts = 1
        self.last_sent = created
        self.finished: float | None = None


@dataclass(frozen=True)
class RecordRef:
    """Where a record lives; travels in the message headers as a list."""

    shard: str
    created: float
    task_id: str

    @property
    def key(self) -> tuple[float, str]:
        return (self.created, self.task_id)

    def to_json(self) -> list:
        return [self.shard, self.created, self.task_id]

    @classmethod
    def from_json(cls, value) -> RecordRef:
        shard, created, task_id = value
        return cls(shard=shard, created=float(created), task_id=task_id)


def shard_id() -> str:
    """The shard of the calling thread: host, process and thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def get_outbox(connection, *, create: bool = True) -> Outbox | None:
    """The outbox in the root of ``connection``'s database."""
    root = connection.root()
    outbox = root.get(ROOT_KEY)
    if outbox is None and create:
        outbox = root[ROOT_KEY] = Outbox()
    return outbox


def ensure_outbox(db) -> None:
    """Create the outbox at start-up, so first uses never race to create it."""
    tm = transaction.TransactionManager()
    connection = db.open(transaction_manager=tm)
    try:
        tm.begin()
        if connection.root().get(ROOT_KEY) is None:
            get_outbox(connection)
            tm.commit()
    except ConflictError:
        pass  # somebody else just created it
    finally:
        tm.abort()
        connection.close()


def on_database_opened(event) -> None:
    """Subscriber for Zope's IDatabaseOpenedWithRoot (Plone instances)."""
    ensure_outbox(event.database)


def add(
    connection,
    *,
    task_name: str,
    task_id: str,
    args,
    kwargs,
    options: dict,
    not_before: float | None = None,
) -> RecordRef:
    """Write a pending record in the current transaction; returns its reference.

    ``not_before``: a delayed task's due time; the relay leaves it alone until
    then (plus the grace period).
    """
    outbox = get_outbox(connection)
    name = shard_id()
    shard = outbox.shards.get(name)
    if shard is None:
        shard = outbox.shards[name] = OOBTree()
    ref = RecordRef(shard=name, created=time.time(), task_id=task_id)
    shard[ref.key] = OutboxRecord(
        task_name=task_name,
        task_id=task_id,
        args=args,
        kwargs=kwargs,
        options=options,
        created=ref.created,
    )
    if not_before is not None and not_before > ref.created:
        shard[ref.key].last_sent = not_before
    return ref


def find(connection, ref: RecordRef) -> OutboxRecord | None:
    outbox = get_outbox(connection, create=False)
    if outbox is None:
        return None
    shard = outbox.shards.get(ref.shard)
    return None if shard is None else shard.get(ref.key)


def claim(connection, ref: RecordRef) -> str:
    """Mark the record done in the current (task) transaction.

    Returns the state found: ``pending`` (run the task), ``done`` (a
    redelivered message: skip it), ``failed``, or ``missing``.
    """
    record = find(connection, ref)
    if record is None:
        return "missing"
    state = record.state
    if state == PENDING:
        record.state = DONE
        record.finished = time.time()
    return state


def mark_failed(connection, ref: RecordRef) -> None:
    """The task failed for good: the relay must not send it again."""
    record = find(connection, ref)
    if record is not None and record.state == PENDING:
        record.state = FAILED
        record.finished = time.time()


def iter_records(outbox: Outbox) -> Iterator[tuple[str, OutboxRecord]]:
    for name, shard in outbox.shards.items():
        for record in shard.values():
            yield name, record


def pending_records(outbox: Outbox, *, older_than: float) -> list[tuple[str, OutboxRecord]]:
    """Pending records whose last send is older than ``older_than`` (a time).

    Per shard, a watermark remembers where the leading run of finished records
    ends, so the relay does not re-read a day of finished records every run.
    """
    watermarks = getattr(outbox, "watermarks", None)
    if watermarks is None:
        watermarks = outbox.watermarks = OOBTree()
    found = []
    for name, shard in outbox.shards.items():
        leading = True
        for key, record in shard.items(min=watermarks.get(name)):
            if record.state != PENDING:
                if leading and watermarks.get(name) != key:
                    watermarks[name] = key  # finished records never turn pending again
                continue
            leading = False
            if record.last_sent < older_than:
                found.append((name, record))
                if len(found) >= RELAY_BATCH:
                    return found
    return found


def counts(connection) -> dict[str, int]:
    """How many records are pending, done and failed (for monitoring)."""
    result = {PENDING: 0, DONE: 0, FAILED: 0}
    outbox = get_outbox(connection, create=False)
    if outbox is not None:
        for _, record in iter_records(outbox):
            result[record.state] = result.get(record.state, 0) + 1
    return result


# -- the relay (runs in workers) -------------------------------------------


def _take_lease(outbox: Outbox, *, owner: str, seconds: float, now: float) -> bool:
    if outbox.lease_owner not in (None, owner) and outbox.lease_until > now:
        return False
    outbox.lease_owner = owner
    outbox.lease_until = now + seconds
    return True


def relay(*, db, app, grace: float, retention: float, lease_seconds: float = 120.0) -> int:
    """Send again what is still pending after ``grace`` seconds; sweep old records.

    Returns how many messages were sent. Safe to call from several workers:
    only the holder of the lease works.
    """
    from .dispatch import Message

    owner = f"{shard_id()}:relay"
    tm = transaction.TransactionManager()
    connection = db.open(transaction_manager=tm)
    try:
        tm.begin()
        now = time.time()
        outbox = get_outbox(connection, create=False)
        if outbox is None:
            return 0
        if not _take_lease(outbox, owner=owner, seconds=lease_seconds, now=now):
            tm.abort()
            return 0
        try:
            tm.commit()
        except ConflictError:
            # Another relay took the lease at the same moment.
            tm.abort()
            return 0
        tm.begin()
        sent = 0
        for _, record in pending_records(outbox, older_than=now - grace):
            task = app.tasks.get(record.task_name)
            if task is None or not hasattr(task, "send_message"):
                logger.error(
                    "Outbox record %s names unknown task %r; left pending",
                    record.task_id,
                    record.task_name,
                )
                continue
            state = app.AsyncResult(record.task_id).state
            if state in ("SUCCESS", "FAILURE"):
                # Read-only tasks leave their record pending (their result
                # says they ran): close it here, many in one commit.
                record.state = DONE if state == "SUCCESS" else FAILED
                record.finished = time.time()
                continue
            if state != "PENDING":
                # A worker has started it (task_track_started): a second copy
                # would only do the same work and lose at commit.
                continue
            message = Message(
                task=task,
                task_id=record.task_id,
                args=list(record.args),
                kwargs=dict(record.kwargs),
                options=_plain(record.options),
            )
            task.send_message(message)
            record.attempts += 1
            record.last_sent = time.time()
            sent += 1
        swept = sweep(outbox, now=now, retention=retention)
        outbox.lease_owner = None
        outbox.lease_until = 0.0
        tm.commit()
        if sent or swept:
            logger.info("Outbox relay sent %d pending task(s), swept %d record(s)", sent, swept)
        return sent
    except ConflictError:
        tm.abort()
        logger.info("Outbox relay hit a conflict; the next run picks up where it left off")
        return 0
    finally:
        tm.abort()
        connection.close()


def _plain(value):
    # Persistent copies of dicts/lists come back as plain ones for kombu.
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def sweep(outbox: Outbox, *, now: float, retention: float) -> int:
    """Remove finished records older than ``retention``.

    Shards themselves stay (one small tree per thread that ever queued): a
    thread may be writing to a shard at this very moment, and a record added
    to a shard the relay just unhooked would be lost.

    Old records sit in old buckets, away from the last bucket that the shard's
    thread appends to, so sweeping does not get in the way of queuing.
    """
    removed = 0
    for name in list(outbox.shards.keys()):
        shard = outbox.shards[name]
        for key in list(shard.keys(max=(now - retention, "\uffff"))):
            record = shard[key]
            if record.state != PENDING and (record.finished or 0) < now - retention:
                del shard[key]
                removed += 1
    return removed


class OutboxRelayStep(bootsteps.StartStopStep):
    """Worker bootstep: ask for a relay run every ``outbox_relay_interval`` s."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        self.settings = addon_settings()
        self.timer_entry = None

    def start(self, worker):
        interval = self.settings.outbox_relay_interval
        if interval > 0 and self.settings.outbox:
            self.timer_entry = worker.timer.call_repeatedly(interval, self.tick, args=(interval,))

    def tick(self, interval: float) -> None:
        try:
            relay_outbox.apply_async(expires=interval * 2, ignore_result=True)
        except Exception:
            logger.warning("Could not queue the outbox relay", exc_info=True)

    def stop(self, worker):
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None


@app.task(name="collective.plonecelery.outbox.relay_outbox", ignore_result=True, shared=False)
def relay_outbox():
    """Send outbox records that are still pending (runs in a worker)."""
    from . import worker

    settings = addon_settings()
    return relay(
        db=worker.get_db(),
        app=app,
        grace=settings.outbox_grace,
        retention=settings.outbox_retention,
    )
