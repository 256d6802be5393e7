"""The delivery log: every accepted webhook, deduplicated by delivery id, bounded in size.

Usage::

    from collective.plonecelery.blogs import deliveries

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

``shards``
    ``OOBTree``: writer (host, process, Zope thread) -> its shard, a ``PersistentMapping``
    with ``by_id`` (``OOBTree``: delivery id -> ``PersistentMapping`` record) and
    ``by_time`` (``OOTreeSet`` of ``(-received, delivery_id)``, newest first).
``length``
    ``BTrees.Length.Length``: the entry count without loading every bucket.

Up to 20 (and more) concurrent webhook requests each add one record. A shared index
conflicts under that load: BTree inserts read their tree's inner node as current
(``readCurrent``), and any concurrent bucket split changes it; measured on the first
version (one shared ``by_id`` and time index): ~5% of requests retried by Zope, a few failing
after three retries. So every Zope thread writes only its own shard, as the task outbox does:

* Requests never write the same tree; a shard is created once per thread.
* Records are persistent objects of their own: the worker's :func:`update` of a record's
  status writes the record alone, never a bucket.
* ``Length.change()`` resolves concurrent increments by summing them.

Dedupe looks the id up in every shard (one per thread that ever received a webhook: a
handful). Two requests carrying the same delivery at the very same moment on two threads are
both accepted (each commits its own shard); the import they queue is idempotent, so the
post still ends as one item.

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

from ..config import addon_settings
from ..task import task
from ..zodb import writer_id

logger = logging.getLogger(__name__)

ANNOTATION_KEY = "collective.plonecelery.deliveries"
STATUSES = ("queued", "ignored", "rejected", "imported", "skipped", "removed", "failed")
#: Entries removed per transaction by the trim task.
TRIM_BATCH = 1000
#: Seconds between two trim tasks queued by one process.
TRIM_INTERVAL = 60.0

_trim_lock = threading.Lock()
_last_trim_queued = 0.0


def settings(environ=None) -> tuple[float, int]:
    """``(retention_seconds, max_entries)`` from the add-on's settings.

    >>> settings({"PLONECELERY_DELIVERY_RETENTION_DAYS": "1"})
    (86400.0, 10000)

    :raises ConfigurationError: a value is not a positive number.
    """
    values = addon_settings(environ)
    return values.delivery_retention_days * 86400, values.delivery_max_entries


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
    found = _find(log, delivery_id)
    if found is not None:
        old_shard, existing = found
        if existing["received"] >= now - retention:
            return False
        # Expired but not trimmed yet: a new delivery under the same id.
        del old_shard["by_id"][delivery_id]
        old_shard["by_time"].remove((-existing["received"], delivery_id))
        log["length"].change(-1)
    shard = _own_shard(log)
    shard["by_id"][delivery_id] = PersistentMapping(
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
        }
    )
    shard["by_time"].insert((-now, delivery_id))
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
    found = _find(log, delivery_id) if log is not None else None
    entry = found[1] if found is not None else None
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
    found = _find(log, delivery_id) if log is not None else None
    return _as_dict(found[1]) if found is not None else None


def list_deliveries(*, source_id: str | None = None, limit: int = 100, portal=None) -> list[dict]:
    """Recorded deliveries, newest first, optionally of one source only."""
    log = _log(portal, create=False)
    if log is None or limit <= 0:
        return []
    shards = _shards(log)
    found = []
    for (_received, delivery_id), name in _newest_first(log):
        entry = shards[name]["by_id"].get(delivery_id)
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
    shards = _shards(log)
    cutoff = now - retention
    victims = []
    # Newest first: once an entry is a victim (too old or past max_entries), all later are too.
    for index, (key, name) in enumerate(_newest_first(log)):
        if index >= max_entries or -key[0] <= cutoff:
            victims.append((key, name))
            if len(victims) >= batch:
                break
    for key, name in victims:
        shard = shards[name]
        shard["by_time"].remove(key)
        shard["by_id"].pop(key[1], None)
    if victims:
        log["length"].change(-len(victims))
        logger.info("Trimmed %d entries from the webhook delivery log", len(victims))
    return len(victims)


# The name is stored in outbox records and dead letters: it never changes.
@task.as_admin(name="collective.plonecelery.webhooks.deliveries.trim_deliveries")
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
    ends = [shard["by_time"].maxKey() for shard in _shards(log).values() if shard["by_time"]]
    return bool(ends) and -max(ends)[0] < now - retention


def _shards(log) -> OOBTree:
    return log["shards"]


def _own_shard(log) -> PersistentMapping:
    shards = _shards(log)
    name = writer_id()
    shard = shards.get(name)
    if shard is None:  # once per thread
        shard = shards[name] = PersistentMapping({"by_id": OOBTree(), "by_time": OOTreeSet()})
    return shard


def _find(log, delivery_id: str):
    """``(shard, entry)`` of ``delivery_id``, or None: one lookup per shard (a few)."""
    for shard in _shards(log).values():
        entry = shard["by_id"].get(delivery_id)
        if entry is not None:
            return shard, entry
    return None


def _newest_first(log):
    """``((-received, delivery_id), shard name)`` over every shard, newest first."""

    def tagged(name, shard):
        for key in shard["by_time"]:
            yield key, name

    return heapq.merge(*(tagged(name, shard) for name, shard in _shards(log).items()))


def _log(portal, *, create: bool) -> PersistentMapping | None:
    if portal is None:
        from plone import api

        portal = api.portal.get()
    annotations = IAnnotations(portal)
    log = annotations.get(ANNOTATION_KEY)
    if log is None and create:
        log = annotations[ANNOTATION_KEY] = PersistentMapping(
            {"shards": OOBTree(), "length": Length()}
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
