"""The import tasks (worker side) and the calls that queue them (Plone side)."""

from __future__ import annotations

import logging
import random
import time
import uuid
from datetime import UTC
from datetime import datetime
from typing import Any

import transaction

from ...config import addon_settings
from ...exceptions import FetchError
from ...exceptions import ImportFailed
from ...exceptions import PostGone
from ...progress import report_progress
from ...task import task
from .. import deliveries
from .. import storage
from .items import is_newer
from .sync import check_action
from .sync import find_item
from .sync import reader_for
from .sync import sync
from .sync import sync_feed

logger = logging.getLogger(__name__)

#: Retries of a fetch that failed with a retryable error (network, 5xx, 429).
MAX_RETRIES = 5
#: Cap of one retry delay (seconds).
MAX_BACKOFF = 3600.0
#: Task names are stored in outbox records and dead letters: they never change.
TASK_NAMES = "collective.plonecelery.importer."


# -- queuing (Plone side) ------------------------------------------------------


def queue_import(
    config,
    *,
    remote_id: str | None,
    action: str,
    delivery_id: str | None = None,
    shown_gone: bool = False,
    as_of: str | None = None,
):
    """Queue :func:`import_post` for ``config`` (a SourceConfig), run as its import user.

    Sent when the current transaction commits; returns the ``AsyncResult``. ``shown_gone``
    and ``as_of``: see :func:`~.sync.sync`.

    >>> queue_import(config, remote_id="42", action="remove", delivery_id="d-1")  # doctest: +SKIP
    """
    check_action(action)
    if remote_id is None and config.kind != "feed":
        raise ValueError(
            f"remote_id is required for {config.kind} sources (only feeds refetch all)"
        )
    kwargs: dict[str, Any] = {"delivery_id": delivery_id}
    if shown_gone:
        kwargs.update(shown_gone=True, as_of=as_of)
    return import_post.apply_async(
        args=(config.id, remote_id, action), kwargs=kwargs, run_as=config.import_user
    )


def queue_backfill(config, *, run: str | None = None):
    """Queue :func:`backfill` from page 1: imports every published post of the source.

    Progress shows in the delivery log under ids ``backfill:<source>:<run>:<page>`` (one per
    page) and ``backfill:<source>:<run>:<page>:<remote id>`` (one per post). Returns the
    ``AsyncResult`` of the first page.
    """
    return backfill.apply_async(
        args=(config.id,),
        kwargs={"page": 1, "run": run or uuid.uuid4().hex[:8]},
        run_as=config.import_user,
    )


def queue_resync(config, *, run: str | None = None):
    """Queue :func:`resync` of ``config`` (what the schedule does when a source is due)."""
    return resync.apply_async(
        args=(config.id,),
        kwargs={"run": run or uuid.uuid4().hex[:8]},
        run_as=config.import_user,
    )


# -- tasks (worker side) -------------------------------------------------------


@task(bind=True, name=TASK_NAMES + "import_post")
def import_post(
    self,
    source_id: str,
    remote_id: str | None,
    action: str,
    delivery_id: str | None = None,
    shown_gone: bool = False,
    as_of: str | None = None,
    deferrals: int = 0,
) -> dict[str, Any]:
    """Fetch one post of ``source_id`` and create/update/retract/delete its item.

    ``action`` ('upsert' or 'remove') is what the webhook said; the API has the last word,
    unless ``shown_gone`` (the signed body shows the post deleted or unpublished).
    ``remote_id`` None (feeds only) refetches the feed and upserts every entry.
    While the source is paused (the blog answered 429 with a long Retry-After) nothing is
    fetched: the import is queued again for the end of the pause (``deferrals`` counts how
    often). Returns :meth:`Outcome.as_dict`, or ``{"status": "paused", ...}``.
    """
    job = {
        "remote_id": remote_id,
        "action": action,
        "delivery_id": delivery_id,
        "shown_gone": shown_gone,
        "as_of": as_of,
        "deferrals": deferrals,
    }
    try:
        check_action(action)
        config = storage.get_source(source_id)
        pause = storage.source_pause(source_id)
        if pause is not None and not shown_gone:
            return _wait_for_pause(config, job, until=pause["until"], reason=pause["reason"])
        outcome = sync(
            config, remote_id=remote_id, action=action, shown_gone=shown_gone, as_of=as_of
        )
    except FetchError as exc:
        if _asks_for_a_pause(exc):
            return _pause(config, job, exc)
        if exc.retryable and self.request.retries < MAX_RETRIES:
            raise _retry(self, exc, delivery_id=delivery_id, of_source=source_id) from exc
        _record_apart(delivery_id, status="failed", error=str(exc), of_source=source_id)
        raise ImportFailed(str(exc)) from exc
    except _passed_through():
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        _record_apart(delivery_id, status="failed", error=error, of_source=source_id)
        raise
    update_delivery(delivery_id, status=outcome.status, error=outcome.note, source_id=source_id)
    logger.info(
        "%s %s:%s (%s)%s",
        outcome.status,
        source_id,
        outcome.remote_id,
        action,
        f": {outcome.note}" if outcome.note else "",
    )
    return outcome.as_dict()


@task(bind=True, name=TASK_NAMES + "backfill")
def backfill(self, source_id: str, page: int = 1, run: str | None = None) -> dict[str, Any]:
    """List ``page`` of the source's posts, queue :func:`import_post` for each, queue the next.

    Feeds are not paginated: page 1 queues one refetch of the whole feed.
    """
    run = run or (self.request.id or uuid.uuid4().hex)[:8]
    page_delivery = f"backfill:{source_id}:{run}:{page}"
    try:
        config = storage.get_source(source_id)
        queued, next_page = _queue_page(config, page=page, page_delivery=page_delivery)
    except FetchError as exc:
        if exc.retryable and self.request.retries < MAX_RETRIES:
            raise _retry(self, exc, delivery_id=page_delivery, source_id=source_id) from exc
        _record_apart(page_delivery, status="failed", error=str(exc), source_id=source_id)
        raise ImportFailed(str(exc)) from exc
    except _passed_through():
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        _record_apart(page_delivery, status="failed", error=error, source_id=source_id)
        raise
    note_delivery(
        page_delivery,
        source_id=source_id,
        event="backfill",
        remote_id=None,
        status="imported",
        task_id=self.request.id,
    )
    if next_page is not None:
        backfill.apply_async(
            args=(source_id,), kwargs={"page": next_page, "run": run}, run_as=config.import_user
        )
    return {"run": run, "page": page, "queued": queued, "next_page": next_page}


@task(bind=True, name=TASK_NAMES + "resync")
def resync(self, source_id: str, run: str | None = None) -> dict[str, Any]:
    """One scheduled run: import what webhooks missed among the newest posts of ``source_id``.

    Reads at most ``sync_max_posts`` posts, newest first, and queues :func:`import_post` for
    each one that has no item or is newer than its item; a feed is read once, conditionally,
    and its entries are upserted here. The run is in the delivery log as
    ``sync:<source>:<run>`` (event ``sync``), each queued post as ``sync:<source>:<run>:<id>``.
    A failure is recorded and not retried: the next scheduled run tries again.
    """
    run = run or (self.request.id or uuid.uuid4().hex)[:8]
    run_delivery = f"sync:{source_id}:{run}"
    note = None
    try:
        config = storage.get_source(source_id)
        pause = storage.source_pause(source_id)
        if pause is not None:
            status, note = "skipped", f"source paused ({pause['reason']}); not read"
        elif config.kind == "feed":
            outcome = sync_feed(config, limit=config.sync_max_posts, conditional=True)
            status, note = outcome.status, outcome.note
        else:
            status, note = _queue_changed(config, run_delivery=run_delivery)
    except FetchError as exc:
        if _asks_for_a_pause(exc):
            until = time.time() + float(exc.retry_after)
            storage.pause_source(source_id, until=until, reason=_pause_reason(config, exc))
        # Committed with the pause taken above; imports queued before the failure go too.
        note_delivery(
            run_delivery,
            source_id=source_id,
            event="sync",
            remote_id=None,
            status="failed",
            error=str(exc),
        )
        return {"run": run, "status": "failed", "note": str(exc)}
    except _passed_through():
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        _record_apart(run_delivery, status="failed", error=error, source_id=source_id, event="sync")
        raise
    note_delivery(
        run_delivery,
        source_id=source_id,
        event="sync",
        remote_id=None,
        status=status,
        task_id=self.request.id,
        error=note,
    )
    logger.info("Scheduled sync of %s (%s): %s", source_id, run, note)
    return {"run": run, "status": status, "note": note}


@task(name=TASK_NAMES + "test_source")
def test_source(source_id: str) -> dict[str, Any]:
    """Read the newest post from the source's API (from a worker, which may reach the Internet).

    Returns ``{"ok": True, **test_connection()}`` or ``{"ok": False, "error": ..., ...}``.
    """
    config = storage.get_source(source_id)
    try:
        return {"ok": True, **reader_for(config).test_connection(config)}
    except (FetchError, PostGone) as exc:
        return {
            "ok": False,
            "kind": config.kind,
            "api_url": config.api_url,
            "error": str(exc),
            "retryable": bool(getattr(exc, "retryable", False)),
        }


test_source.__test__ = False  # not a pytest test when imported into a test module


# -- backfill --------------------------------------------------------------------


def _queue_page(config, *, page: int, page_delivery: str) -> tuple[int, int | None]:
    if config.kind == "feed":
        # A feed is one document: one task refetches it and upserts every entry.
        if page > 1:
            return 0, None
        _queue_logged(config, None, delivery_id=f"{page_delivery}:feed", event="backfill")
        return 1, None
    posts, next_page = reader_for(config).list_posts(config, page=page)
    report_progress(0, len(posts), message=f"page {page}: {len(posts)} post(s) listed")
    for done, post in enumerate(posts, 1):
        delivery_id = f"{page_delivery}:{post.remote_id}"
        _queue_logged(config, post.remote_id, delivery_id=delivery_id, event="backfill")
        # Every tenth and the last: one result-backend write per post would cost more
        # than the queueing it reports on.
        if done % 10 == 0 or done == len(posts):
            report_progress(done, len(posts), message=f"page {page}: queued {post.remote_id}")
    return len(posts), next_page


def _queue_logged(config, remote_id: str | None, *, delivery_id: str, event: str) -> None:
    """Queue an upsert of ``remote_id`` and show it queued in the delivery log."""
    result = queue_import(config, remote_id=remote_id, action="upsert", delivery_id=delivery_id)
    note_delivery(
        delivery_id,
        source_id=config.id,
        event=event,
        remote_id=remote_id,
        status="queued",
        task_id=result.id,
    )


def _queue_changed(config, *, run_delivery: str) -> tuple[str, str]:
    """Queue an import of each of the newest posts that has no item or a newer version."""
    reader = reader_for(config)
    seen = queued = 0
    page: int | None = 1
    while page is not None and seen < config.sync_max_posts:
        posts, page = reader.list_posts(config, page=page)
        for post in posts[: config.sync_max_posts - seen]:
            seen += 1
            item = find_item(config.id, post.remote_id)
            if item is not None and not is_newer(item, post):
                continue
            delivery_id = f"{run_delivery}:{post.remote_id}"
            _queue_logged(config, post.remote_id, delivery_id=delivery_id, event="sync")
            queued += 1
    note = f"read {seen} of the newest posts, queued {queued} missing or changed"
    return ("imported" if queued else "skipped"), note


# -- a blog that asks us to stop: pause the source -----------------------------------------

#: How often one import waits for the end of a pause before it fails.
MAX_DEFERRALS = 24


def _asks_for_a_pause(exc: FetchError) -> bool:
    """A 429 (or 503) with a Retry-After beyond ``PLONECELERY_IMPORT_PAUSE_THRESHOLD``.

    Ghost answers 429 for an hour or more once a Content API key has had 99 consecutive 4xx:
    five retries with back-off would all land in the block.
    """
    threshold = addon_settings().import_pause_threshold
    return exc.status in (429, 503) and (exc.retry_after or 0) > threshold


def _pause(config, job: dict[str, Any], exc: FetchError) -> dict[str, Any]:
    until = time.time() + float(exc.retry_after)
    reason = _pause_reason(config, exc)
    logger.warning("Pausing blog source %r until %s: %s", config.id, _iso(until), exc)
    storage.pause_source(config.id, until=until, reason=reason)
    return _wait_for_pause(config, job, until=until, reason=reason)


def _pause_reason(config, exc: FetchError) -> str:
    return f"{config.api_host} answered HTTP {exc.status}, Retry-After {exc.retry_after:.0f} s"


def _wait_for_pause(config, job: dict[str, Any], *, until: float, reason: str) -> dict[str, Any]:
    """Queue the import again for the end of the pause, without fetching anything now."""
    delivery_id = job["delivery_id"]
    if job["deferrals"] >= MAX_DEFERRALS:
        error = f"source paused until {_iso(until)} ({reason}); gave up after waiting"
        update_delivery(delivery_id, status="failed", error=error, source_id=config.id)
        raise ImportFailed(error)
    countdown = min(max(until - time.time(), 1.0) + random.uniform(0, 30), MAX_BACKOFF)
    result = import_post.apply_async(
        args=(config.id, job["remote_id"], job["action"]),
        kwargs={
            "delivery_id": delivery_id,
            "shown_gone": job["shown_gone"],
            "as_of": job["as_of"],
            "deferrals": job["deferrals"] + 1,
        },
        countdown=countdown,
        run_as=config.import_user,
    )
    note = f"source paused until {_iso(until)} ({reason}); the import waits for it"
    if delivery_id:
        deliveries.update(
            delivery_id, source_id=config.id, status="queued", error=note, task_id=result.id
        )
    logger.info("%s:%s waits for the end of the pause: %s", config.id, job["remote_id"], note)
    return {"status": "paused", "until": _iso(until), "task": result.id, "note": note}


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")


# -- retries and the delivery log ------------------------------------------------------


def backoff_seconds(retries: int, *, retry_after: float | None = None) -> float:
    """Delay before retry number ``retries + 1``: exponential, jittered, at least Retry-After.

    The base (``PLONECELERY_IMPORT_BACKOFF`` seconds, default 30) doubles per retry; half of
    each delay is random so that imports failing together do not retry together.

    >>> 15 <= backoff_seconds(0) <= 30
    True
    """
    base = addon_settings().import_backoff
    ceiling = min(MAX_BACKOFF, base * 2**retries)
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after:
        delay = max(delay, min(float(retry_after), MAX_BACKOFF))
    return delay


def _retry(
    task_,
    exc: FetchError,
    *,
    delivery_id: str | None,
    source_id: str | None = None,
    of_source: str | None = None,
):
    retries = task_.request.retries
    countdown = backoff_seconds(retries, retry_after=exc.retry_after)
    message = (
        f"attempt {retries + 1} of {MAX_RETRIES + 1} failed, retrying in {countdown:.0f}s: {exc}"
    )
    logger.info("%s[%s] %s", task_.name, task_.request.id, message)
    _record_apart(
        delivery_id, status="queued", error=message, source_id=source_id, of_source=of_source
    )
    return task_.retry(exc=exc, countdown=countdown, max_retries=MAX_RETRIES)


def _passed_through() -> tuple[type[BaseException], ...]:
    # Conflicts and ZEO disconnects are retried by the task class; Retry is ours in flight.
    from celery.exceptions import Retry
    from ZEO.Exceptions import ClientDisconnected
    from ZODB.POSException import ConflictError

    return (ConflictError, ClientDisconnected, Retry)


def update_delivery(
    delivery_id: str | None, *, status: str, error: str | None = None, source_id: str | None = None
) -> None:
    """Set the status of ``delivery_id`` of ``source_id`` in the delivery log (no-op without id)."""
    if not delivery_id:
        return
    deliveries.update(delivery_id, source_id=source_id, status=status, error=error)


def note_delivery(
    delivery_id: str, *, source_id: str, event: str, remote_id, status, task_id=None, error=None
) -> None:
    """Record ``delivery_id`` in the delivery log, or update it when it is already there."""
    recorded = deliveries.record(
        delivery_id=delivery_id,
        source_id=source_id,
        event=event,
        remote_id=remote_id,
        status=status,
        task_id=task_id,
        error=error,
    )
    if not recorded:
        deliveries.update(delivery_id, source_id=source_id, status=status, error=error)


def _record_apart(
    delivery_id: str | None,
    *,
    status: str,
    error: str,
    source_id: str | None = None,
    of_source: str | None = None,
    event: str = "backfill",
) -> None:
    """Record a failure in a transaction of its own, discarding the task's partial changes.

    ``source_id``: a backfill page (or a scheduled run: ``event="sync"``), recorded if new;
    ``of_source``: the source of a webhook delivery, only updated.
    """
    if not delivery_id:
        return
    transaction.abort()
    if source_id is not None:
        note_delivery(
            delivery_id,
            source_id=source_id,
            event=event,
            remote_id=None,
            status=status,
            error=error,
        )
    else:
        update_delivery(delivery_id, status=status, error=error, source_id=of_source)
    transaction.commit()
