"""The delivery log: every accepted webhook, deduplicated by delivery id, bounded in size.

Usage::

    from collective.plonecelery.webhooks import deliveries

    if not deliveries.record(delivery_id=verified.delivery_id, source_id="blog",
                             event="post.published", remote_id="abc", status="queued"):
        ...  # a duplicate: this delivery was accepted before, within the retention window
    deliveries.update(delivery_id, status="imported")        # from the worker
    deliveries.list_deliveries(source_id="blog", limit=20)   # newest first, JSON-ready dicts

Only authentic deliveries are recorded (signature verified, source known). Rejected requests
(unknown source, bad/stale signature, malformed body, too large) are logged with the
``collective.plonecelery`` logger and write nothing to the ZODB, so an anonymous sender cannot
fill the log or the database.

Settings (environment): ``PLONECELERY_DELIVERY_RETENTION_DAYS`` (default 7) and
``PLONECELERY_DELIVERY_MAX_ENTRIES`` (default 10000).

Storage and concurrency
-----------------------
``IAnnotations(portal)[ANNOTATION_KEY]`` is a ``PersistentMapping`` created once (by
``storage.add_source``, or by the first delivery), holding:

``by_id``
    ``OOBTree``: delivery id -> ``PersistentMapping`` record. Dedupe is a lookup here.
``time_shards``
    ``OOBTree``: writer (host, process, thread) -> ``OOTreeSet`` of ``(-received,
    delivery_id)``, newest first, for listing (merged) and trimming.
``length``
    ``BTrees.Length.Length``: the entry count without loading every bucket.

Up to 20 concurrent webhook requests each add one record. What they write is chosen so that
ZODB conflict resolution merges them instead of raising ``ConflictError``:

* Inserts of *distinct* keys into the same BTree bucket resolve (``Bucket._p_resolveConflict``);
  ``by_id`` keys are random-looking (hashes, ``msg_...`` ids), so concurrent inserts are spread
  over buckets anyway.
* The time index is newest-first, so every insert lands in the first bucket, which splits
  every ~15 inserts: shared by concurrent requests it conflicted often under load (measured:
  ~5% of requests retried, some failed after three). Each Zope thread therefore keeps its own
  time shard, as the task outbox does: requests never write the same time index.
* Records are persistent objects of their own, so a bucket holds only references: the worker's
  :func:`update` of a record's status writes the record alone, never a bucket.
* ``Length.change()`` resolves concurrent increments by summing them.
* Nothing else is written: the container mapping is never modified after creation.

What does not resolve: two transactions that both *split* buckets of one tree (or one splits a
bucket the other inserts into), and the same delivery id arriving twice at the same moment.
Those raise ``ConflictError``; Zope's publisher retries the request (3 times by default) and the
retry sees the committed state (for a duplicate: it answers "duplicate"). Splits happen once per
~15 inserts, so retries are rare and cheap (verification is microseconds, nothing is fetched).

Trimming never happens in a webhook request: deleting many keys would conflict with every
concurrent insert. :func:`record` only notices that the log is over its bounds (cheap
reads: ``length()`` and each time shard's ``maxKey()``) and queues the
:func:`trim_deliveries` task (at most once a minute per process); the worker trims in
batches of ``TRIM_BATCH`` entries per transaction, and a conflicting batch is retried by the
task machinery. Between trims the log may
exceed its bounds a little; dedupe ignores entries older than the retention window anyway.
"""

from __future__ import annotations

import heapq
import logging
import os
import socket
import threading
import time
from datetime import UTC
from datetime import datetime
from typing import Any

from BTrees.Length import Length
from BTrees.OOBTree import OOBTree
from BTrees.OOBTree import OOTreeSet
from persistent.mapping import PersistentMapping
from zope.annotation.interfaces import IAnnotations

from collective.plonecelery import task

logger = logging.getLogger("collective.plonecelery")

ANNOTATION_KEY = "collective.plonecelery.deliveries"
STATUSES = ("queued", "ignored", "rejected", "imported", "skipped", "removed", "failed")
DEFAULT_RETENTION_DAYS = 7.0
DEFAULT_MAX_ENTRIES = 10_000
#: Entries removed per transaction by the trim task.
TRIM_BATCH = 1000
#: Seconds between two trim tasks queued by one process.
TRIM_INTERVAL = 60.0

_trim_lock = threading.Lock()
_last_trim_queued = 0.0


def settings(environ=None) -> tuple[float, int]:
    """``(retention_seconds, max_entries)`` from the environment.

    >>> settings({"PLONECELERY_DELIVERY_RETENTION_DAYS": "1"})
    (86400.0, 10000)
    """
    environ = os.environ if environ is None else environ
    try:
        days = float(environ.get("PLONECELERY_DELIVERY_RETENTION_DAYS", DEFAULT_RETENTION_DAYS))
        max_entries = int(environ.get("PLONECELERY_DELIVERY_MAX_ENTRIES", DEFAULT_MAX_ENTRIES))
    except ValueError as exc:
        raise ValueError(
            "PLONECELERY_DELIVERY_RETENTION_DAYS must be a number of days and "
            f"PLONECELERY_DELIVERY_MAX_ENTRIES an integer: {exc}"
        ) from None
    if days <= 0 or max_entries <= 0:
        raise ValueError(
            "PLONECELERY_DELIVERY_RETENTION_DAYS and PLONECELERY_DELIVERY_MAX_ENTRIES "
            "must be positive"
        )
    return days * 86400, max_entries


def ensure_log(*, portal=None) -> PersistentMapping:
    """Create the log if it does not exist yet (install, first source) and return it."""
    log = _log(portal, create=False)
    if log is None:
        log = _log(portal, create=True)
    return log


def record(
    *,
    delivery_id: str,
    source_id: str,
    event: str,
    remote_id: str | None,
    status: str,
    task_id: str | None = None,
    error: str | None = None,
    portal=None,
    now: float | None = None,
) -> bool:
    """Record an accepted delivery; ``False`` (and nothing written) if it is a duplicate.

    A duplicate is a ``delivery_id`` recorded less than the retention window ago.
    """
    _check_status(status)
    if not delivery_id:
        raise ValueError("record() needs the delivery id (signatures.Verified.delivery_id)")
    now = time.time() if now is None else now
    retention, max_entries = settings()
    log = _log(portal, create=True)
    by_id = log["by_id"]
    existing = by_id.get(delivery_id)
    if existing is not None:
        if existing["received"] >= now - retention:
            return False
        # Expired but not trimmed yet: a new delivery under the same id.
        old_shard = _time_shards(log).get(existing.get("shard", ""))
        old_key = (-existing["received"], delivery_id)
        if old_shard is not None and old_key in old_shard:
            old_shard.remove(old_key)
            log["length"].change(-1)
    shard_name = shard_id()
    by_id[delivery_id] = PersistentMapping(
        {
            "delivery_id": delivery_id,
            "source_id": source_id,
            "event": event or "",
            "remote_id": remote_id,
            "status": status,
            "task_id": task_id,
            "error": error,
            "received": now,
            "updated": now,
            "shard": shard_name,
        }
    )
    _own_time_shard(log, shard_name).insert((-now, delivery_id))
    log["length"].change(1)
    if _over_bounds(log, now=now, retention=retention, max_entries=max_entries):
        _queue_trim(portal)
    return True


def update(
    delivery_id: str,
    *,
    status: str,
    error: str | None = None,
    task_id: str | None = None,
    portal=None,
) -> None:
    """Set the status (and error, task id) of a recorded delivery.

    A delivery that is not (or no longer) in the log is ignored: the log is informative and
    must not make an import fail.
    """
    _check_status(status)
    log = _log(portal, create=False)
    entry = log["by_id"].get(delivery_id) if log is not None else None
    if entry is None:
        logger.debug(
            "Delivery %s is not in the log (trimmed?); status %s not kept", delivery_id, status
        )
        return
    changes = {"status": status, "error": error, "updated": time.time()}
    if task_id is not None:
        changes["task_id"] = task_id
    entry.update(changes)


def get(delivery_id: str, *, portal=None) -> dict[str, Any] | None:
    """The recorded delivery as a JSON-ready dict, or ``None``."""
    log = _log(portal, create=False)
    entry = log["by_id"].get(delivery_id) if log is not None else None
    return _as_dict(entry) if entry is not None else None


def list_deliveries(*, source_id: str | None = None, limit: int = 100, portal=None) -> list[dict]:
    """Recorded deliveries, newest first, optionally of one source only."""
    log = _log(portal, create=False)
    if log is None or limit <= 0:
        return []
    by_id = log["by_id"]
    found = []
    for (_received, delivery_id), _shard in _newest_first(log):
        entry = by_id.get(delivery_id)
        if entry is None or (source_id and entry["source_id"] != source_id):
            continue
        found.append(_as_dict(entry))
        if len(found) >= limit:
            break
    return found


def count(*, portal=None) -> int:
    """Number of entries in the log."""
    log = _log(portal, create=False)
    return log["length"]() if log is not None else 0


def trim(*, portal=None, now: float | None = None, batch: int = TRIM_BATCH) -> int:
    """Remove up to ``batch`` entries older than the retention window or past the maximum count.

    Returns how many were removed; when that equals ``batch`` there may be more.
    """
    now = time.time() if now is None else now
    retention, max_entries = settings()
    log = _log(portal, create=False)
    if log is None:
        return 0
    by_id, shards = log["by_id"], _time_shards(log)
    cutoff = now - retention
    victims = []
    # Newest first: once an entry is a victim (too old or past max_entries), all later are too.
    for index, (key, name) in enumerate(_newest_first(log)):
        if index >= max_entries or -key[0] <= cutoff:
            victims.append((key, name))
            if len(victims) >= batch:
                break
    for key, name in victims:
        shards[name].remove(key)
        entry = by_id.get(key[1])
        if entry is not None and entry["received"] == -key[0]:
            del by_id[key[1]]
    if victims:
        log["length"].change(-len(victims))
        logger.info("Trimmed %d entries from the webhook delivery log", len(victims))
    return len(victims)


@task.as_admin()
def trim_deliveries() -> int:
    """Worker task: trim the delivery log of the site it was queued from, batch by batch."""
    from zope.component.hooks import getSite

    removed = trim(portal=getSite())
    if removed >= TRIM_BATCH:
        trim_deliveries.apply_async()  # sent when this batch commits
    return removed


def _queue_trim(portal) -> None:
    global _last_trim_queued
    with _trim_lock:
        now = time.monotonic()
        if _last_trim_queued and now - _last_trim_queued < TRIM_INTERVAL:
            return
        _last_trim_queued = now
    trim_deliveries.apply_async(site=portal)


def _over_bounds(log, *, now: float, retention: float, max_entries: int) -> bool:
    if log["length"]() > max_entries:
        return True
    ends = [shard.maxKey() for shard in _time_shards(log).values() if len(shard)]
    return bool(ends) and -max(ends)[0] < now - retention


def shard_id() -> str:
    """The time shard of the calling thread: host, process and thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _time_shards(log) -> OOBTree:
    shards = log.get("time_shards")
    if shards is None:
        shards = log["time_shards"] = OOBTree()
    return shards


def _own_time_shard(log, name: str) -> OOTreeSet:
    shards = _time_shards(log)
    shard = shards.get(name)
    if shard is None:
        shard = shards[name] = OOTreeSet()  # once per thread
    return shard


def _newest_first(log):
    """``((-received, delivery_id), shard name)`` over every shard, newest first."""
    return heapq.merge(
        *(((key, name) for key in shard) for name, shard in _time_shards(log).items())
    )


def _log(portal, *, create: bool) -> PersistentMapping | None:
    if portal is None:
        from plone import api

        portal = api.portal.get()
    annotations = IAnnotations(portal)
    log = annotations.get(ANNOTATION_KEY)
    if log is None and create:
        log = annotations[ANNOTATION_KEY] = PersistentMapping(
            {"by_id": OOBTree(), "time_shards": OOBTree(), "length": Length()}
        )
    return log


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown delivery status {status!r}; use one of {', '.join(STATUSES)}")


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="milliseconds")


def _as_dict(entry) -> dict[str, Any]:
    data = dict(entry)
    data["received"] = _iso(data.get("received"))
    data["updated"] = _iso(data.get("updated"))
    return data
