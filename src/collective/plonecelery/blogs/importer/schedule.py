"""Scheduled re-sync of blog sources: no Celery beat, the workers ask for it.

Every worker asks for a :func:`due_sources` run every ``PLONECELERY_BLOG_SCHEDULE_INTERVAL``
seconds (:class:`BlogScheduleStep`, a worker bootstep like the outbox relay's). A run looks
at every Plone site at the top of the Zope root that has blog sources; in each one, under a
lease in the site (one run at a time, whichever worker it lands on), it queues
:func:`~.tasks.resync` for every source whose ``sync_interval`` has passed since its last run
and records when, in the same transaction: a crash before the commit queues nothing and
records nothing, so the next run does it.

Usage::

    from collective.plonecelery.blogs.importer import schedule

    schedule.due_sources.delay()                  # what the bootstep queues
    schedule.last_runs(portal)                    # {"blog": {"last_run": ..., "run": ...}}

A run of a source (:func:`~.tasks.resync`) reads at most ``sync_max_posts`` of its newest
posts and queues an import for each one that is missing or newer than its item; a feed is
read once (conditionally: 304 means nothing to do). Its progress is in the delivery log under
``sync:<source>:<run>``.
"""

from __future__ import annotations

import logging
import time
import uuid

from Acquisition import aq_base
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from ZODB.POSException import ConflictError

from ...app import app
from ...config import addon_settings
from ...worker.environment import zope_environment
from ...worker.periodic import PeriodicStep
from ...worker.process import get_db
from ...zodb import own_connection
from ...zodb import writer_id
from .. import storage
from ..subscriptions import WEBSUB_KEY

logger = logging.getLogger(__name__)

#: Annotation key of the schedule in a site: the lease and each source's last run. Written
#: only by :func:`due_sources`, apart from the sources (Managers) and their state (imports).
SCHEDULE_KEY = "collective.plonecelery.schedule"
#: Seconds a run holds the lease of a site.
LEASE_SECONDS = 120.0
#: Seconds a queued schedule run stays valid at least.
MIN_EXPIRY = 60.0


def scheduled_sites(db) -> list[str]:
    """Paths of the Plone sites at the top of the Zope root that have blog sources (or
    WebSub subscription state)."""
    paths = []
    with own_connection(db) as (connection, tm):
        tm.begin()
        root = connection.root().get("Application")
        for obj in root.objectValues() if root is not None else ():
            annotations = getattr(aq_base(obj), "__annotations__", None)
            # (A site whose last source was removed may still owe a hub an unsubscribe.)
            if annotations is not None and (
                annotations.get(storage.ANNOTATION_KEY) or annotations.get(WEBSUB_KEY)
            ):
                paths.append("/".join(obj.getPhysicalPath()))
    return paths


def last_runs(portal) -> dict[str, dict]:
    """Each source's last scheduled run: ``{source id: {"last_run": <Unix s>, "run": id}}``."""
    from zope.annotation.interfaces import IAnnotations

    schedule = IAnnotations(portal).get(SCHEDULE_KEY)
    runs = schedule.get("sources") if schedule is not None else None
    return {key: dict(value) for key, value in runs.items()} if runs else {}


def due(configs, runs, *, now: float) -> list:
    """The configs whose interval has passed since their last run (never run: due now).

    >>> due([], {}, now=0.0)
    []
    """
    found = []
    for config in configs:
        interval = config.sync_interval
        if interval <= 0:
            continue
        last = runs.get(config.id)
        if last is None or last.get("last_run", 0.0) + interval <= now:
            found.append(config)
    return found


def queue_due(portal, *, now: float) -> list[str]:
    """Take the site's lease and queue :func:`~.tasks.resync` for each due source.

    Returns the ids queued; the caller commits (the lease first, see :func:`run_site`).
    """
    from .tasks import queue_resync

    runs = _schedule(portal)["sources"]
    queued = []
    configs = storage.list_sources(portal=portal)
    for config in due(configs, runs, now=now):
        run = uuid.uuid4().hex[:8]
        queue_resync(config, run=run)
        runs[config.id] = PersistentMapping({"last_run": now, "run": run})
        queued.append(config.id)
    # WebSub subscriptions to renew or retry, unsubscribes to send again.
    from .websub import queue_due as queue_websub_due

    queued.extend(
        f"{source_id} (WebSub)" for source_id in queue_websub_due(portal, configs, now=now)
    )
    # Sources that were removed: forget their runs.
    known = {config.id for config in configs}
    for source_id in [key for key in runs if key not in known]:
        del runs[source_id]
    return queued


def take_lease(portal, *, owner: str, now: float, seconds: float = LEASE_SECONDS) -> bool:
    """Hold the site's schedule lease until ``now + seconds`` (False: another run holds it)."""
    schedule = _schedule(portal)
    if schedule["lease_owner"] not in (None, owner) and schedule["lease_until"] > now:
        return False
    schedule.update({"lease_owner": owner, "lease_until": now + seconds})
    return True


def _schedule(portal) -> PersistentMapping:
    from zope.annotation.interfaces import IAnnotations

    annotations = IAnnotations(portal)
    schedule = annotations.get(SCHEDULE_KEY)
    if schedule is None:
        schedule = annotations[SCHEDULE_KEY] = PersistentMapping(
            {"lease_owner": None, "lease_until": 0.0, "sources": OOBTree()}
        )
    return schedule


def release_lease(portal) -> None:
    from zope.annotation.interfaces import IAnnotations

    IAnnotations(portal)[SCHEDULE_KEY].update({"lease_owner": None, "lease_until": 0.0})


def run_site(site_path: str, *, server_url: str) -> list[str]:
    """One schedule run in the site at ``site_path``; the ids of the sources queued."""
    import transaction

    owner = f"{writer_id()}:schedule"
    with zope_environment(
        site_path=site_path, userid=None, unrestricted=True, server_url=server_url
    ) as site:
        try:
            if not take_lease(site, owner=owner, now=time.time()):
                return []
            # The lease commits alone: two runs taking it at once conflict here, and the
            # loser leaves before it queues anything.
            transaction.commit()
            transaction.begin()
            queued = queue_due(site, now=time.time())
            release_lease(site)
            transaction.commit()
        except ConflictError:
            logger.info("Blog schedule run in %s hit a conflict; the next run does it", site_path)
            return []
    if queued:
        # "<id> (WebSub)": a subscribe or unsubscribe request, else a re-sync.
        logger.info("Blog schedule: queued a re-sync of %s in %s", ", ".join(queued), site_path)
    return queued


class BlogScheduleStep(PeriodicStep):
    """Worker bootstep: ask for a :func:`due_sources` run every ``blog_schedule_interval`` s."""

    what = "the blog schedule run"

    def interval(self) -> float:
        return self.settings.blog_schedule_interval

    def send(self, interval: float) -> None:
        # Not expiring after two short intervals: on a polling broker (SQLite) a message
        # can take longer than that to arrive, and each run would be discarded unseen.
        due_sources.apply_async(expires=max(interval * 2, MIN_EXPIRY), ignore_result=True)


# The name is what workers of every version route: keep it.
@app.task(
    name="collective.plonecelery.importer.due_sources",
    ignore_result=True,
    shared=False,
    Request="collective.plonecelery.signing:SignedRequest",
)
def due_sources() -> int:
    """Queue a re-sync of every blog source that is due, in every site (runs in a worker)."""
    settings = addon_settings()
    queued = 0
    for site_path in scheduled_sites(get_db()):
        try:
            queued += len(run_site(site_path, server_url=settings.server_url))
        except Exception:
            # One broken site must not keep the others from their schedule.
            logger.exception("Blog schedule run in %s failed", site_path)
    return queued
