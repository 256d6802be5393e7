"""Fetch-and-import tasks for blog sources: the worker side of blog webhooks.

Usage (Plone side, after a webhook was verified, or from a management view)::

    from collective.plonecelery import importer

    importer.queue_import(config, remote_id="5c7ece47da174000c0c5c6d7", action="upsert",
                          delivery_id="msg_p5jXN8AQM9LWM0D4loKWxJek")
    importer.queue_backfill(config)            # every published post, one task per post
    importer.test_source.delay("blog")         # fetch one post from a worker, report the result

All are sent when the current transaction commits. In the worker :func:`import_post` runs as
the source's import user and never trusts the webhook body: it fetches the post from the
source's API and brings the one item keyed by (source id, remote id) in line with it:

* published on the blog -> created or updated (title, description, text, dates, subjects,
  creators, lead image, original URL), then ``config.transition`` applied if needed;
* gone (404/410, not public any more, or a status other than published) -> retracted to
  ``private`` or deleted, per ``config.on_remove``;
* not newer than what was imported (``remote_modified``) -> skipped. Since the current state
  is always fetched, deliveries arriving twice or out of order end in the same item, and the
  webhook's action is only a hint: a 'remove' for a post the API still publishes keeps it.

Items are found through the ``plonecelery_remote_key`` catalog index (unrestricted, so that
retracted items are found too); the ``collective.plonecelery.remote_post`` behavior is enabled
on the source's content type by the first import.

Network errors, 5xx and 429 are retried (:data:`MAX_RETRIES` times, exponential backoff with
jitter from ``PLONECELERY_IMPORT_BACKOFF`` seconds, at least ``Retry-After``); other errors
fail at once with the API's message (:class:`ImportFailed`). Each outcome is written to the
delivery log (``webhooks.deliveries``): imported, skipped, removed or failed.

A lead image that cannot be fetched (host not allowed for the source, not an image, network
trouble) does not fail the import: the item is imported without it and the delivery log says
why; the image is tried again when the post changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import secrets
import uuid
from dataclasses import asdict
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote
from urllib.parse import urlsplit

import transaction

from collective.plonecelery import task
from collective.plonecelery.content.remote_post import INDEX
from collective.plonecelery.content.remote_post import enable_behavior
from collective.plonecelery.content.remote_post import remote_key
from collective.plonecelery.sources import feed
from collective.plonecelery.sources import ghost
from collective.plonecelery.sources import storage
from collective.plonecelery.sources import wordpress
from collective.plonecelery.sources.http import fetch
from collective.plonecelery.sources.remote import FetchError
from collective.plonecelery.sources.remote import PostGone
from collective.plonecelery.sources.remote import RemotePost

logger = logging.getLogger("collective.plonecelery.importer")

ACTIONS = ("upsert", "remove")
READERS = {"ghost": ghost, "wordpress": wordpress, "feed": feed}
#: The user imports run as unless a source names another (created on install).
IMPORT_USER = "plonecelery-importer"
#: Retries of a fetch that failed with a retryable error (network, 5xx, 429).
MAX_RETRIES = 5
#: Cap of one retry delay (seconds).
MAX_BACKOFF = 3600.0
IMAGE_MAX_BYTES = 10_000_000
#: State of the last import kept on the item (content digest, lead image URL).
STATE_KEY = "collective.plonecelery.import"
RETRACTED_STATE = "private"


class ImportFailed(Exception):
    """Reading the blog failed for good (after the retries, or at once for a 4xx).

    Carries the API's message; a plain one-argument exception so that result backends can
    store and rebuild it.
    """


@dataclass
class Outcome:
    """What an import did; ``status`` is the delivery log status."""

    status: str  # 'imported' | 'skipped' | 'removed'
    remote_id: str | None
    path: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- queuing (Plone side) ------------------------------------------------------


def queue_import(config, *, remote_id: str | None, action: str, delivery_id: str | None = None):
    """Queue :func:`import_post` for ``config`` (a SourceConfig), run as its import user.

    Sent when the current transaction commits; returns the ``AsyncResult``.

    >>> queue_import(config, remote_id="42", action="remove", delivery_id="d-1")  # doctest: +SKIP
    """
    _check_action(action)
    if remote_id is None and config.kind != "feed":
        raise ValueError(
            f"remote_id is required for {config.kind} sources (only feeds refetch all)"
        )
    return import_post.apply_async(
        args=(config.id, remote_id, action),
        kwargs={"delivery_id": delivery_id},
        run_as=config.import_user,
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


# -- tasks (worker side) -------------------------------------------------------


@task(bind=True)
def import_post(
    self, source_id: str, remote_id: str | None, action: str, delivery_id: str | None = None
) -> dict[str, Any]:
    """Fetch one post of ``source_id`` and create/update/retract/delete its item.

    ``action`` ('upsert' or 'remove') is what the webhook said; the API has the last word.
    ``remote_id`` None (feeds only) refetches the feed and upserts every entry.
    Returns :meth:`Outcome.as_dict`.
    """
    try:
        _check_action(action)
        config = get_source(source_id)
        outcome = sync(config, remote_id=remote_id, action=action)
    except FetchError as exc:
        if exc.retryable and self.request.retries < MAX_RETRIES:
            raise _retry(self, exc, delivery_id=delivery_id) from exc
        _record_apart(delivery_id, status="failed", error=str(exc))
        raise ImportFailed(str(exc)) from exc
    except _passed_through():
        raise
    except Exception as exc:
        _record_apart(delivery_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    update_delivery(delivery_id, status=outcome.status, error=outcome.note)
    logger.info(
        "%s %s:%s (%s)%s",
        outcome.status,
        source_id,
        outcome.remote_id,
        action,
        f": {outcome.note}" if outcome.note else "",
    )
    return outcome.as_dict()


@task(bind=True)
def backfill(self, source_id: str, page: int = 1, run: str | None = None) -> dict[str, Any]:
    """List ``page`` of the source's posts, queue :func:`import_post` for each, queue the next.

    Feeds are not paginated: page 1 queues one refetch of the whole feed.
    """
    run = run or (self.request.id or uuid.uuid4().hex)[:8]
    page_delivery = f"backfill:{source_id}:{run}:{page}"
    try:
        config = get_source(source_id)
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


@task()
def test_source(source_id: str) -> dict[str, Any]:
    """Read the newest post from the source's API (from a worker, which may reach the Internet).

    Returns ``{"ok": True, **test_connection()}`` or ``{"ok": False, "error": ..., ...}``.
    """
    config = get_source(source_id)
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


# -- import logic (runs in the site, as the import user) --------------------------


def sync(config, *, remote_id: str | None, action: str = "upsert") -> Outcome:
    """Bring the item of one post in line with the blog (``remote_id`` None: a whole feed)."""
    reader = reader_for(config)
    if remote_id is None:
        if config.kind != "feed":
            raise ValueError(f"no post id given for {config.kind} source {config.id!r}")
        return sync_feed(config)
    try:
        post = reader.fetch_post(config, remote_id)
    except PostGone as exc:
        if config.kind == "feed" and action != "remove":
            # Entries scroll off feeds; only an explicit removal removes.
            return Outcome("skipped", remote_id, note=str(exc))
        return remove_post(config, remote_id=remote_id, reason=str(exc))
    if post.status != "published":
        return remove_post(
            config, remote_id=post.remote_id, reason=f"the post's status is {post.status!r}"
        )
    return upsert_post(config, post)


def sync_feed(config) -> Outcome:
    """Upsert every entry of a feed source (entries no longer in the feed are left alone)."""
    posts, _ = feed.list_posts(config)
    outcomes = [upsert_post(config, post) for post in posts]
    changed = sum(outcome.status == "imported" for outcome in outcomes)
    notes = [f"{outcome.remote_id}: {outcome.note}" for outcome in outcomes if outcome.note]
    summary = f"{changed} of {len(posts)} entries imported or updated"
    return Outcome(
        "imported" if changed else "skipped",
        None,
        note="; ".join([summary, *notes]),
    )


def upsert_post(config, post: RemotePost) -> Outcome:
    """Create or update the item of ``post`` (already fetched from the API)."""
    enable_behavior(config.portal_type)
    item = find_item(config.id, post.remote_id)
    if item is None:
        item, notes = _create_item(config, post)
    else:
        _check_may_modify(item)
        if not _is_newer(item, post):
            moved = apply_transition(config, item)
            if moved:
                item.reindexObject(idxs=_index_names())
            return Outcome(
                "imported" if moved else "skipped",
                post.remote_id,
                path=_path(item),
                note=None if moved else "not newer than the imported version",
            )
        notes = _write_fields(item, post, config=config)
        _notify_modified(item)
    apply_transition(config, item)
    if post.modified or post.published:
        item.setModificationDate(_zope_datetime(post.modified or post.published))
    # Explicit index names: reindexObject() without them would stamp 'modified' with now.
    item.reindexObject(idxs=_index_names())
    return Outcome("imported", post.remote_id, path=_path(item), note="; ".join(notes) or None)


def remove_post(config, *, remote_id: str, reason: str) -> Outcome:
    """Retract (workflow to private) or delete the item of a post the blog no longer publishes."""
    from plone import api

    item = find_item(config.id, remote_id)
    if item is None:
        return Outcome("skipped", remote_id, note=f"no item to remove ({reason})")
    _check_may_modify(item)
    path = _path(item)
    if config.on_remove == "delete":
        api.content.delete(obj=item, check_linkintegrity=False)
        return Outcome("removed", remote_id, path=path, note=f"deleted: {reason}")
    note = retract(item)
    return Outcome("removed", remote_id, path=path, note="; ".join(filter(None, [reason, note])))


def find_item(source_id: str, remote_id: str):
    """The item imported from ``remote_id`` of ``source_id``, wherever it is, or None."""
    from plone import api

    catalog = api.portal.get_tool("portal_catalog")
    if INDEX not in catalog.indexes():
        raise RuntimeError(
            f"the catalog has no {INDEX} index: run the collective.plonecelery upgrade steps "
            "(Site Setup > Add-ons) before importing"
        )
    # Unrestricted: a retracted (private) item must still be found, or it would be duplicated.
    brains = catalog.unrestrictedSearchResults(**{INDEX: remote_key(source_id, remote_id)})
    if not brains:
        return None
    if len(brains) > 1:
        logger.warning(
            "%d items for %s:%s (%s); updating the first",
            len(brains),
            source_id,
            remote_id,
            ", ".join(brain.getPath() for brain in brains),
        )
    return brains[0]._unrestrictedGetObject()


def apply_transition(config, item) -> bool:
    """Apply ``config.transition`` unless the item is already in its target state.

    Returns True if the workflow state changed. A transition the item's workflow does not
    have is logged and ignored (the post is still imported).
    """
    from plone import api

    if not config.transition:
        return False
    workflow_tool = api.portal.get_tool("portal_workflow")
    target = None
    for workflow in workflow_tool.getWorkflowsFor(item):
        definition = workflow.transitions.get(config.transition)
        if definition is not None:
            target = definition.new_state_id
            break
    if target is None:
        logger.warning(
            "%s: its workflow has no transition %r; set the source's transition",
            _path(item),
            config.transition,
        )
        return False
    if api.content.get_state(obj=item, default=None) == target:
        return False
    available = {action["id"] for action in workflow_tool.getTransitionsFor(item)}
    if config.transition not in available:
        logger.warning(
            "%s: transition %r is not available to %s in state %r",
            _path(item),
            config.transition,
            api.user.get_current().getId(),
            api.content.get_state(obj=item, default=None),
        )
        return False
    workflow_tool.doActionFor(item, config.transition)
    return True


def retract(item) -> str | None:
    """Move ``item`` to the private state; returns a note when that is not possible."""
    from plone import api
    from plone.api.exc import InvalidParameterError

    workflow_tool = api.portal.get_tool("portal_workflow")
    if not workflow_tool.getWorkflowsFor(item):
        return f"{item.portal_type} has no workflow: the item could not be retracted"
    if api.content.get_state(obj=item, default=None) == RETRACTED_STATE:
        return None
    try:
        api.content.transition(obj=item, to_state=RETRACTED_STATE)
    except InvalidParameterError as exc:
        raise RuntimeError(
            f"cannot retract {_path(item)} to {RETRACTED_STATE!r} as "
            f"{api.user.get_current().getId()}: {exc}; grant the import user the Reviewer role "
            "on the target folder, or set on_remove to 'delete'"
        ) from None
    return None


# -- creating and writing items ----------------------------------------------------


def _create_item(config, post: RemotePost):
    from AccessControl import Unauthorized
    from plone.dexterity.utils import addContentToContainer
    from plone.dexterity.utils import createContent

    container = resolve_target(config)
    item = createContent(config.portal_type, id=_id_hint(post), title=post.title)
    notes = _write_fields(item, post, config=config)
    # Checks the add permission and allowed types. The id comes from the post's slug, so a
    # concurrent import of the same post adds the same key: one transaction gets a
    # ConflictError, and its retry finds this item.
    try:
        item = addContentToContainer(container, item, checkConstraints=True)
    except Unauthorized:
        raise Unauthorized(
            f"{_current_userid()} may not add {config.portal_type} to {_path(container)}: "
            "give the import user the Contributor role there (Sharing tab)"
        ) from None
    return item, notes


def _write_fields(item, post: RemotePost, *, config) -> list[str]:
    """Copy ``post`` onto ``item``; returns notes (e.g. why there is no lead image)."""
    from plone.app.textfield.value import RichTextValue

    fields = _field_names(item)
    item.title = post.title
    item.description = post.excerpt
    if "text" in fields:
        item.text = RichTextValue(post.html, "text/html", "text/x-html-safe")
    item.setSubject(tuple(post.tags))
    if post.authors:
        item.setCreators(tuple(post.authors))
    if post.published:
        item.setEffectiveDate(_zope_datetime(post.published))
    item.remote_source = config.id
    item.remote_id = post.remote_id
    item.remote_url = post.url or None
    item.remote_modified = post.modified
    state = _import_state(item)
    state["digest"] = _digest(post)
    notes = []
    if "image" in fields:
        note = _update_image(item, post, config=config, state=state)
        if note:
            notes.append(note)
    return notes


def _update_image(item, post: RemotePost, *, config, state: dict) -> str | None:
    """Download the feature image into ``item.image`` (host-restricted like every fetch)."""
    from plone.namedfile.file import NamedBlobImage

    if not post.image_url:
        if state.get("image_url"):
            item.image = None  # the image we imported was removed on the blog
            state["image_url"] = None
        return None
    if post.image_url == state.get("image_url") and getattr(item, "image", None) is not None:
        return None
    try:
        response = fetch(
            post.image_url,
            allowed_hosts=config.allowed_hosts,
            allow_private=config.allow_private,
            max_bytes=IMAGE_MAX_BYTES,
            headers={"Accept": "image/*"},
        )
    except (FetchError, PostGone) as exc:
        logger.warning("%s: lead image not imported: %s", post.url or post.remote_id, exc)
        return f"imported without lead image: {exc}"
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type.startswith("image/"):
        return f"imported without lead image: {post.image_url} is {content_type or 'untyped'}"
    item.image = NamedBlobImage(
        data=response.content, filename=_file_name(str(response.url)), contentType=content_type
    )
    state["image_url"] = post.image_url
    return None


def _is_newer(item, post: RemotePost) -> bool:
    """True if ``post`` is newer than what ``item`` holds (by remote time, else by content)."""
    stored = getattr(item, "remote_modified", None)
    if stored is not None and post.modified is not None:
        return post.modified > stored
    return _import_state(item).get("digest") != _digest(post)


def _digest(post: RemotePost) -> str:
    data = asdict(post)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _import_state(item):
    from persistent.mapping import PersistentMapping
    from zope.annotation.interfaces import IAnnotations

    annotations = IAnnotations(item)
    state = annotations.get(STATE_KEY)
    if state is None:
        state = annotations[STATE_KEY] = PersistentMapping()
    return state


def _notify_modified(item) -> None:
    from zope.event import notify
    from zope.lifecycleevent import ObjectModifiedEvent

    notify(ObjectModifiedEvent(item))


def _check_may_modify(item) -> None:
    from AccessControl import Unauthorized
    from plone import api

    if not api.user.has_permission("Modify portal content", obj=item):
        raise Unauthorized(
            f"{_current_userid()} may not modify {_path(item)}: give the import user the "
            "Editor role on the folder holding the imported posts (Sharing tab)"
        )


def _field_names(item) -> set[str]:
    from plone.dexterity.utils import iterSchemataForType
    from zope.schema import getFieldNames

    return {
        name for schema in iterSchemataForType(item.portal_type) for name in getFieldNames(schema)
    }


def _index_names() -> list[str]:
    from plone import api

    return list(api.portal.get_tool("portal_catalog").indexes())


def _id_hint(post: RemotePost) -> str:
    """The post's slug (last segment of its URL), else its title, else 'post-<id>'."""
    segments = [part for part in urlsplit(post.url or "").path.split("/") if part]
    slug = unquote(segments[-1]) if segments else ""
    return slug or post.title or f"post-{post.remote_id}"


def _file_name(url: str) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name or "image"


def _zope_datetime(value):
    from DateTime import DateTime

    return DateTime(value)


def _path(obj) -> str:
    return "/".join(obj.getPhysicalPath())


def _current_userid() -> str:
    from plone import api

    return api.user.get_current().getId() or "Anonymous"


def _check_action(action: str) -> None:
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")


def reader_for(config):
    """The module reading posts of ``config.kind`` (ghost, wordpress or feed)."""
    try:
        return READERS[config.kind]
    except KeyError:
        raise ValueError(
            f"source {config.id!r} has unknown kind {config.kind!r}; valid: {', '.join(READERS)}"
        ) from None


# -- backfill --------------------------------------------------------------------


def _queue_page(config, *, page: int, page_delivery: str) -> tuple[int, int | None]:
    if config.kind == "feed":
        # A feed is one document: one task refetches it and upserts every entry.
        if page > 1:
            return 0, None
        delivery_id = f"{page_delivery}:feed"
        result = queue_import(config, remote_id=None, action="upsert", delivery_id=delivery_id)
        note_delivery(
            delivery_id,
            source_id=config.id,
            event="backfill",
            remote_id=None,
            status="queued",
            task_id=result.id,
        )
        return 1, None
    posts, next_page = reader_for(config).list_posts(config, page=page)
    for post in posts:
        delivery_id = f"{page_delivery}:{post.remote_id}"
        result = queue_import(
            config, remote_id=post.remote_id, action="upsert", delivery_id=delivery_id
        )
        note_delivery(
            delivery_id,
            source_id=config.id,
            event="backfill",
            remote_id=post.remote_id,
            status="queued",
            task_id=result.id,
        )
    return len(posts), next_page


# -- retries and the delivery log ------------------------------------------------------


def backoff_seconds(retries: int, *, retry_after: float | None = None) -> float:
    """Delay before retry number ``retries + 1``: exponential, jittered, at least Retry-After.

    The base (``PLONECELERY_IMPORT_BACKOFF`` seconds, default 30) doubles per retry; half of
    each delay is random so that imports failing together do not retry together.

    >>> 15 <= backoff_seconds(0) <= 30
    True
    """
    base = float(os.environ.get("PLONECELERY_IMPORT_BACKOFF", "30"))
    ceiling = min(MAX_BACKOFF, base * 2**retries)
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    if retry_after:
        delay = max(delay, min(float(retry_after), MAX_BACKOFF))
    return delay


def _retry(task_, exc: FetchError, *, delivery_id: str | None, source_id: str | None = None):
    retries = task_.request.retries
    countdown = backoff_seconds(retries, retry_after=exc.retry_after)
    message = (
        f"attempt {retries + 1} of {MAX_RETRIES + 1} failed, retrying in {countdown:.0f}s: {exc}"
    )
    logger.info("%s[%s] %s", task_.name, task_.request.id, message)
    _record_apart(delivery_id, status="queued", error=message, source_id=source_id)
    return task_.retry(exc=exc, countdown=countdown, max_retries=MAX_RETRIES)


def _passed_through() -> tuple[type[BaseException], ...]:
    # Conflicts and ZEO disconnects are retried by the task class; Retry is ours in flight.
    from celery.exceptions import Retry
    from ZEO.Exceptions import ClientDisconnected
    from ZODB.POSException import ConflictError

    return (ConflictError, ClientDisconnected, Retry)


def update_delivery(delivery_id: str | None, *, status: str, error: str | None = None) -> None:
    """Set the status of ``delivery_id`` in the delivery log (no-op without an id)."""
    if not delivery_id:
        return
    # Imported here: the delivery log module imports the task machinery, as this one does.
    from collective.plonecelery.webhooks import deliveries

    deliveries.update(delivery_id, status=status, error=error)


def note_delivery(
    delivery_id: str, *, source_id: str, event: str, remote_id, status, task_id=None, error=None
) -> None:
    """Record ``delivery_id`` in the delivery log, or update it when it is already there."""
    from collective.plonecelery.webhooks import deliveries

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
        deliveries.update(delivery_id, status=status, error=error)


def _record_apart(
    delivery_id: str | None, *, status: str, error: str, source_id: str | None = None
) -> None:
    """Record a failure in a transaction of its own, discarding the task's partial changes."""
    if not delivery_id:
        return
    transaction.abort()
    if source_id is not None:
        note_delivery(
            delivery_id,
            source_id=source_id,
            event="backfill",
            remote_id=None,
            status=status,
            error=error,
        )
    else:
        update_delivery(delivery_id, status=status, error=error)
    transaction.commit()


# -- sources and the import user ---------------------------------------------------------


def get_source(source_id: str):
    """The SourceConfig of ``source_id`` from the site (``storage.UnknownSource`` if absent)."""
    return storage.get_source(source_id)


def resolve_target(config):
    """The folder new items of ``config`` are created in."""
    return storage.resolve_target(config)


def create_import_user(portal) -> bool:
    """Create the user imports run as (``plonecelery-importer``) unless it exists.

    A real Plone user with only the Member role and a random password nobody knows: the roles
    it needs are granted locally on each source's target folder. Returns True if created.
    Meant for the profile's post_handler: ``create_import_user(context.getSite())``.
    """
    from Products.CMFCore.utils import getToolByName

    if portal.acl_users.getUserById(IMPORT_USER) is not None:
        return False
    registration = getToolByName(portal, "portal_registration")
    registration.addMember(
        IMPORT_USER,
        secrets.token_urlsafe(32),
        roles=("Member",),
        properties={
            "username": IMPORT_USER,
            "fullname": "Blog importer",
            "email": f"{IMPORT_USER}@localhost.invalid",
        },
    )
    logger.info("Created the import user %s", IMPORT_USER)
    return True
