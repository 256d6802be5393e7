"""The transactional outbox: no task is lost between Plone and the broker.

Queuing a task inside a Zope transaction also writes an :class:`OutboxRecord`
into the ZODB, in that same transaction. After commit the message is sent at
once, as without the outbox. When the worker runs the task it marks the record
done in the task's own transaction, so the task's effects and "done" commit
together: a message delivered twice runs once.

A record still pending after a grace period (the broker was down at commit
time, or the Plone process died between commit and send) is sent again by the
relay (:mod:`.relay`). This module is the persistent store alone: it imports
nothing of Celery.

Structure, and why it does not make concurrent queuing conflict: the outbox
lives in the ZODB root and holds one *shard* per queuing thread (host, process,
thread), an ``OOBTree`` keyed by ``(created, task_id)``. Two Plone threads never
write the same shard, so they never conflict; the worker only changes the
record object itself (its state), never the tree, so it never conflicts with
queuing either. Only the relay removes finished records, from shards that have
been idle for a while.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from BTrees.OOBTree import OOBTree
from persistent import Persistent

from ..zodb import ensure_root_object
from ..zodb import root_object
from ..zodb import writer_id

ROOT_KEY = "collective.plonecelery.outbox"
PENDING, DONE, FAILED = "pending", "done", "failed"
#: A failed record whose dead letter was queued again (as a new task): no longer "failed".
RETRIED = "retried"
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


def get_outbox(connection, *, create: bool = True) -> Outbox | None:
    """The outbox in the root of ``connection``'s database."""
    return root_object(connection, ROOT_KEY, Outbox, create=create)


def ensure_outbox(db) -> None:
    """Create the outbox at start-up, so first uses never race to create it."""
    ensure_root_object(db, ROOT_KEY, Outbox)


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
    name = writer_id()
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


def mark_retried(connection, ref: RecordRef) -> None:
    """Its dead letter was queued again: the record no longer counts as failed."""
    record = find(connection, ref)
    if record is not None and record.state == FAILED:
        record.state = RETRIED


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
