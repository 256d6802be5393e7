"""The delivery log: every accepted webhook, deduplicated per source, bounded in size.

Usage::

    from collective.plonecelery.blogs import deliveries

    if not deliveries.record(delivery_id=delivery_id, source_id="blog",
                             event="post.published", remote_id="abc", status="queued"):
        ...  # a duplicate (see below): nothing to queue
    deliveries.update(delivery_id, source_id="blog", status="imported")   # from the worker
    deliveries.list_deliveries(source_id="blog", limit=20)   # newest first, JSON-ready dicts

Duplicates
----------
Delivery ids are per source: the same id received by two sources is two deliveries. A
delivery is answered as a duplicate only if all of these hold:

* the source already recorded the same delivery id (the caller makes it: the sender's own id,
  or a digest of the signed material, the event and the query string), less than the retention
  window ago, for the same event and post;
* the import it queued can still bring the post up to date: it is still pending (``queued``),
  or it has run (``imported``, ``skipped``, ``removed``; ``ignored`` for events not imported).
  After a ``failed`` import the delivery is accepted again;
* with ``repeat_window`` (deliveries whose id cannot tell a sender's retry from a new
  notification with the same body: no delivery id, no signed timestamp), an import that has
  run only counts for ``repeat_window`` seconds after the delivery was received. Later, the
  same request queues the import again: the post may have changed since (a re-import costs
  one fetch, and the API has the last word).

A delivery accepted again is recorded anew; the earlier entry stays in the log (under a key
of its own) until it is trimmed.

Only authentic deliveries are recorded (signature verified, source known). Rejected requests
(unknown source, bad/stale signature, malformed body, too large) are logged with the
``collective.plonecelery`` logger and write nothing to the ZODB, so an anonymous sender cannot
fill the log or the database.

Settings (environment): ``PLONECELERY_DELIVERY_RETENTION_DAYS`` (default 7),
``PLONECELERY_DELIVERY_MAX_ENTRIES`` (default 10000) and
``PLONECELERY_DELIVERY_REPEAT_WINDOW`` (seconds, default 60; see :func:`repeat_window`).

Storage and concurrency
-----------------------
``IAnnotations(portal)[ANNOTATION_KEY]`` is a ``PersistentMapping`` created once (by
``storage.add_source``, or by the first delivery), holding:

``shards``
    ``OOBTree``: writer (host, process, Zope thread) -> its shard, a ``PersistentMapping``
    with ``by_id`` (``OOBTree``: entry key -> ``PersistentMapping`` record) and
    ``by_time`` (``OOTreeSet`` of ``(-received, entry key)``, newest first). The entry key
    is ``"<source id>/<delivery id>"`` (entries written before 1.0 are keyed by the
    delivery id alone, and still found).
``index``
    ``OOBTree``: slot (0 to ``INDEX_SLOTS - 1``, from a CRC of the key) -> ``OOBTree`` of
    entry key -> the name of the shard holding the entry. Shared by every thread on
    purpose: two threads recording the *same* key at the same moment insert the same key
    into the same bucket, which conflict resolution refuses; Zope retries the later
    request, which then finds the entry and answers "duplicate". Different keys in one
    bucket are merged, and the slots keep each tree small, so bucket splits (which do
    conflict) are rare.
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

Dedupe looks the key up in the index (one bucket). Two requests carrying the same delivery
at the very same moment on two threads conflict on that bucket, and the one retried by Zope
is a duplicate: the check holds across threads, processes and ZEO clients.

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
import zlib
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
#: Statuses of a delivery whose import has run (or that needs none: ``ignored``).
DONE_STATUSES = ("ignored", "imported", "skipped", "removed")
#: Slots of the shared key index (see the module docstring).
INDEX_SLOTS = 256
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


def repeat_window(environ=None) -> float:
    """Seconds a repeated delivery without a sender's id or timestamp counts as a retry.

    ``PLONECELERY_DELIVERY_REPEAT_WINDOW`` (default 60): for the schemes that sign the body
    alone (``hmac-sha256-base64``, ``websub``, ``github`` without ``X-GitHub-Delivery``,
    ``none``), a sender's retry and a new notification with the same body look the same.

    >>> repeat_window({"PLONECELERY_DELIVERY_REPEAT_WINDOW": "5"})
    5.0
    """
    return addon_settings(environ).delivery_repeat_window


def ensure_log(*, portal=None) -> PersistentMapping:
    """Create the log if it does not exist yet (install, first source) and return it."""
    log = _log(portal, create=False)
    if log is None or "index" not in log:
        log = _log(portal, create=True)
    return log


def entry_key(source_id: str, delivery_id: str) -> str:
    """The key of a delivery in the log: delivery ids are per source.

    >>> entry_key("blog", "msg_1")
    'blog/msg_1'
    """
    return f"{source_id}/{delivery_id}"


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
    repeat_window: float | None = None,
) -> bool:
    """Record an accepted delivery; ``False`` (and nothing written) if it is a duplicate.

    See "Duplicates" in the module docstring; ``repeat_window`` (seconds) is for delivery ids
    that cannot tell a sender's retry from a new notification with the same body.
    """
    _check_status(status)
    if not delivery_id:
        raise ValueError("record() needs the delivery id")
    if not source_id:
        raise ValueError("record() needs the source id: delivery ids are per source")
    now = time.time() if now is None else now
    retention, max_entries = settings()
    log = _log(portal, create=True)
    key = entry_key(source_id, delivery_id)
    found = _find(log, key, source_id=source_id, delivery_id=delivery_id)
    if found is not None:
        old_shard, old_key, existing = found
        if _is_duplicate(
            existing,
            event=event or "",
            remote_id=remote_id,
            now=now,
            retention=retention,
            repeat_window=repeat_window,
        ):
            return False
        _retire(log, old_shard, old_key, existing)
    shard_name, shard = _own_shard(log)
    shard["by_id"][key] = PersistentMapping(
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
    shard["by_time"].insert((-now, key))
    # Written even when an older entry had the key: two threads accepting the same delivery
    # at once both write this index key, so one of them conflicts and is retried.
    _index_slot(log, key)[key] = shard_name
    log["length"].change(1)
    if _over_bounds(log, now=now, retention=retention, max_entries=max_entries):
        _queue_trim(portal)
    return True


def _is_duplicate(
    existing, *, event: str, remote_id, now: float, retention: float, repeat_window
) -> bool:
    age = now - existing["received"]
    if age >= retention:
        return False
    if (existing["event"], existing["remote_id"]) != (event, remote_id):
        return False  # not the same delivery after all: the sender reused an id
    status = existing["status"]
    if status == "queued":
        return True  # the pending import fetches the post after this request anyway
    if status in DONE_STATUSES:
        return repeat_window is None or age < repeat_window
    return False  # failed (or rejected): queue the import again


def _retire(log, shard, key: str, existing) -> None:
    """Take an entry out of the key's place: kept under a key of its own until trimmed."""
    received = existing["received"]
    kept = f"{key}@{received!r}"
    del shard["by_id"][key]
    shard["by_time"].remove((-received, key))
    shard["by_id"][kept] = existing
    shard["by_time"].insert((-received, kept))


def update(
    delivery_id: str,
    *,
    status: str,
    error: str | None = None,
    task_id: str | None = None,
    source_id: str | None = None,
    portal=None,
) -> None:
    """Set the status (and error, task id) of a recorded delivery of ``source_id``.

    A delivery that is not (or no longer) in the log is ignored: the log is informative and
    must not make an import fail. Without ``source_id`` (callers before delivery ids were
    per source) the first delivery with that id is updated.
    """
    _check_status(status)
    entry = _entry(portal, delivery_id, source_id=source_id)
    if entry is None:
        logger.debug(
            "Delivery %s is not in the log (trimmed?); status %s not kept", delivery_id, status
        )
        return
    changes = {"status": status, "error": error, "updated": time.time()}
    if task_id is not None:
        changes["task_id"] = task_id
    entry.update(changes)


def get(delivery_id: str, *, source_id: str | None = None, portal=None) -> dict[str, Any] | None:
    """The recorded delivery of ``source_id`` as a JSON-ready dict, or ``None``.

    Without ``source_id``, the first delivery with that id, whichever its source.
    """
    entry = _entry(portal, delivery_id, source_id=source_id)
    return _as_dict(entry) if entry is not None else None


def _entry(portal, delivery_id: str, *, source_id: str | None):
    log = _log(portal, create=False)
    if log is None:
        return None
    if source_id:
        found = _find(
            log, entry_key(source_id, delivery_id), source_id=source_id, delivery_id=delivery_id
        )
        return found[2] if found is not None else None
    suffix = "/" + delivery_id
    for slot in _index(log).values():
        for key, name in slot.items():
            if key.endswith(suffix):
                entry = _shards(log)[name]["by_id"].get(key)
                if entry is not None and entry["delivery_id"] == delivery_id:
                    return entry
    found = _find_legacy(log, delivery_id, source_id=None)
    return found[2] if found is not None else None


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
        slot = _index_slot(log, key[1]) if "index" in log else None
        if slot is not None and slot.get(key[1]) == name:
            del slot[key[1]]
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


def _index(log) -> OOBTree:
    return log["index"]


def _index_slot(log, key: str) -> OOBTree:
    return _index(log)[zlib.crc32(key.encode("utf-8")) % INDEX_SLOTS]


def _new_index() -> OOBTree:
    return OOBTree({slot: OOBTree() for slot in range(INDEX_SLOTS)})


def _own_shard(log) -> tuple[str, PersistentMapping]:
    shards = _shards(log)
    name = writer_id()
    shard = shards.get(name)
    if shard is None:  # once per thread
        shard = shards[name] = PersistentMapping({"by_id": OOBTree(), "by_time": OOTreeSet()})
    return name, shard


def _find(log, key: str, *, source_id: str, delivery_id: str):
    """``(shard, key, entry)`` of ``key``, or None: one index lookup.

    Entries written before the index existed (keyed by the delivery id alone) are looked up
    in every shard (a few: one per Zope thread that ever received a webhook).
    """
    name = _index_slot(log, key).get(key) if "index" in log else None
    if name is not None:
        shard = _shards(log).get(name)
        entry = shard["by_id"].get(key) if shard is not None else None
        if entry is not None:
            return shard, key, entry
    return _find_legacy(log, delivery_id, source_id=source_id)


def _find_legacy(log, delivery_id: str, *, source_id: str | None):
    for shard in _shards(log).values():
        entry = shard["by_id"].get(delivery_id)
        if entry is not None and source_id in (None, entry["source_id"]):
            return shard, delivery_id, entry
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
            {"shards": OOBTree(), "length": Length(), "index": _new_index()}
        )
    elif log is not None and create and "index" not in log:
        # A log written before the index: entries already there are found without it.
        log["index"] = _new_index()
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
