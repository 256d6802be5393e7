"""Bringing the item of one post (or a whole feed) in line with the blog.

Runs in the worker, in the site, as the source's import user. The API has the
last word: the webhook's action is only a hint.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict
from dataclasses import dataclass
from typing import Any

from ...content.remote_post import INDEX
from ...content.remote_post import enable_behavior
from ...content.remote_post import remote_key
from ...exceptions import PostGone
from .. import storage
from ..readers import feed
from ..readers import ghost
from ..readers import wordpress
from ..readers.remote import RemotePost
from ..readers.remote import utc_datetime
from ..verify.events import PAGE_PREFIX
from .images import remove_post_images
from .items import check_may_modify
from .items import create_item
from .items import index_names
from .items import is_newer
from .items import item_path
from .items import notify_modified
from .items import write_fields
from .items import zope_datetime
from .workflow import apply_transition
from .workflow import retract

logger = logging.getLogger(__name__)

ACTIONS = ("upsert", "remove")


READERS = {"ghost": ghost, "wordpress": wordpress, "feed": feed}


@dataclass
class Outcome:
    """What an import did; ``status`` is the delivery log status."""

    status: str  # 'imported' | 'skipped' | 'removed'
    remote_id: str | None
    path: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sync(
    config,
    *,
    remote_id: str | None,
    action: str = "upsert",
    shown_gone: bool = False,
    as_of: str | None = None,
) -> Outcome:
    """Bring the item of one post in line with the blog (``remote_id`` None: a whole feed).

    ``shown_gone``: the signed webhook body itself shows the post deleted or unpublished
    (``verify.removals``), so it is removed without asking the API; ``as_of`` is when it was
    unpublished, and an item imported from a newer version of the post is kept.
    """
    if remote_id is not None and remote_id.startswith(PAGE_PREFIX):
        # A Ghost page: the same import, as the source's page type.
        config = dataclasses.replace(config, portal_type=config.page_portal_type)
    reader = reader_for(config)
    if shown_gone and action == "remove" and remote_id is not None:
        return remove_shown_gone(config, remote_id=remote_id, as_of=as_of)
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


def sync_feed(config, *, limit: int | None = None, conditional: bool = False) -> Outcome:
    """Upsert the entries of a feed source (the first ``limit``) and remove its tombstones.

    Entries no longer in the feed are left alone (they scroll off); entries the feed marks
    deleted (``at:deleted-entry``) are retracted or deleted per ``on_remove``.
    ``conditional``: send the validators of the last read; a 304 is counted and does nothing.
    """
    validators = storage.feed_validators(config.id) if conditional else {}
    read = feed.read_changes(config, **validators)
    if read.not_modified:
        storage.note_feed_read(config.id, not_modified=True)
        return Outcome("skipped", None, note="the feed is unchanged (HTTP 304)")
    if conditional:
        storage.note_feed_read(config.id, etag=read.etag, last_modified=read.last_modified)
    posts = read.posts[:limit] if limit else read.posts
    outcomes = [upsert_post(config, post) for post in posts]
    changed = sum(outcome.status == "imported" for outcome in outcomes)
    removals = [
        remove_post(config, remote_id=ref, reason="the feed marks the entry deleted")
        for ref in read.deleted
    ]
    removed = sum(outcome.status == "removed" for outcome in removals)
    notes = [
        f"{outcome.remote_id}: {outcome.note}" for outcome in outcomes + removals if outcome.note
    ]
    summary = f"{changed} of {len(posts)} entries imported or updated"
    if read.deleted:
        summary += f", {removed} of {len(read.deleted)} deleted entries removed"
    return Outcome(
        "imported" if changed or removed else "skipped",
        None,
        note="; ".join([summary, *notes]),
    )


def upsert_post(config, post: RemotePost) -> Outcome:
    """Create or update the item of ``post`` (already fetched from the API)."""
    enable_behavior(config.portal_type)
    item = find_item(config.id, post.remote_id)
    if item is None:
        item, notes = create_item(config, post)
    else:
        check_may_modify(item)
        if not is_newer(item, post):
            moved = apply_transition(config, item)
            if moved:
                item.reindexObject(idxs=index_names())
            return Outcome(
                "imported" if moved else "skipped",
                post.remote_id,
                path=item_path(item),
                note=None if moved else "not newer than the imported version",
            )
        notes = write_fields(item, post, config=config)
        notify_modified(item)
    apply_transition(config, item)
    if post.modified or post.published:
        item.setModificationDate(zope_datetime(post.modified or post.published))
    # Explicit index names: reindexObject() without them would stamp 'modified' with now.
    item.reindexObject(idxs=index_names())
    return Outcome("imported", post.remote_id, path=item_path(item), note="; ".join(notes) or None)


def remove_post(config, *, remote_id: str, reason: str) -> Outcome:
    """Retract (workflow to private) or delete the item of a post the blog no longer publishes."""
    from plone import api

    item = find_item(config.id, remote_id)
    if item is None:
        return Outcome("skipped", remote_id, note=f"no item to remove ({reason})")
    check_may_modify(item)
    path = item_path(item)
    if config.on_remove == "delete":
        api.content.delete(obj=item, check_linkintegrity=False)
        remove_post_images(config, remote_key(config.id, remote_id))
        return Outcome("removed", remote_id, path=path, note=f"deleted: {reason}")
    note = retract(item)
    return Outcome("removed", remote_id, path=path, note="; ".join(filter(None, [reason, note])))


def remove_shown_gone(config, *, remote_id: str, as_of: str | None) -> Outcome:
    """Remove the item of a post the signed webhook shows gone, without fetching it."""
    item = find_item(config.id, remote_id)
    removed_at = utc_datetime(as_of) if as_of else None
    imported = getattr(item, "remote_modified", None) if item is not None else None
    if removed_at is not None and imported is not None and imported > removed_at:
        return Outcome(
            "skipped",
            remote_id,
            path=item_path(item),
            note="the item was imported from a version newer than this removal",
        )
    return remove_post(
        config,
        remote_id=remote_id,
        reason="the signed webhook shows the post deleted or unpublished (not fetched)",
    )


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


def check_action(action: str) -> None:
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
