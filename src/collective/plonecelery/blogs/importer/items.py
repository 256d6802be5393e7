"""Writing one imported post into its Plone item: fields, lead image, import state."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from urllib.parse import unquote
from urllib.parse import urlsplit

from ...content.remote_post import remote_key
from ...exceptions import FetchError
from ...exceptions import PostGone
from .. import storage
from ..readers.http import fetch
from ..readers.remote import RemotePost
from .blocks import write_blocks
from .images import localise_images

logger = logging.getLogger(__name__)

IMAGE_MAX_BYTES = 10_000_000


#: State of the last import kept on the item (content digest, lead image URL).
STATE_KEY = "collective.plonecelery.import"


def create_item(config, post: RemotePost):
    from AccessControl import Unauthorized
    from plone.dexterity.utils import addContentToContainer
    from plone.dexterity.utils import createContent

    container = storage.resolve_target(config)
    item = createContent(config.portal_type, id=_id_hint(post), title=post.title)
    notes = write_fields(item, post, config=config)
    # Checks the add permission and allowed types. The id comes from the post's slug, so a
    # concurrent import of the same post adds the same key: one transaction gets a
    # ConflictError, and its retry finds this item.
    try:
        item = addContentToContainer(container, item, checkConstraints=True)
    except Unauthorized:
        raise Unauthorized(
            f"{current_userid()} may not add {config.portal_type} to {item_path(container)}: "
            "give the import user the Contributor role there (Sharing tab)"
        ) from None
    return item, notes


def write_fields(item, post: RemotePost, *, config) -> list[str]:
    """Copy ``post`` onto ``item``; returns notes (e.g. why there is no lead image)."""
    from plone.app.textfield.value import RichTextValue

    fields = _field_names(item)
    item.title = post.title
    item.description = post.excerpt
    key = remote_key(config.id, post.remote_id)
    html, image_notes = localise_images(post.html, config=config, post_key=key)
    if "text" in fields:  # Classic UI shows the text, Volto the blocks: both are written
        item.text = RichTextValue(html, "text/html", "text/x-html-safe")
    blocks_note = write_blocks(
        item,
        html=html,
        seed=remote_key(config.id, post.remote_id),
        mode=config.volto_blocks,
        fields=fields,
    )
    item.setSubject(tuple(post.tags))
    if post.authors:
        item.setCreators(tuple(post.authors))
    if post.published:
        item.setEffectiveDate(zope_datetime(post.published))
    item.remote_source = config.id
    item.remote_id = post.remote_id
    item.remote_url = post.url or None
    item.remote_modified = post.modified
    state = _import_state(item)
    state["digest"] = _digest(post)
    notes = [*image_notes, blocks_note] if blocks_note else list(image_notes)
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


def is_newer(item, post: RemotePost) -> bool:
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


def notify_modified(item) -> None:
    from zope.event import notify
    from zope.lifecycleevent import ObjectModifiedEvent

    notify(ObjectModifiedEvent(item))


def check_may_modify(item) -> None:
    from AccessControl import Unauthorized
    from plone import api

    if not api.user.has_permission("Modify portal content", obj=item):
        raise Unauthorized(
            f"{current_userid()} may not modify {item_path(item)}: give the import user the "
            "Editor role on the folder holding the imported posts (Sharing tab)"
        )


def _field_names(item) -> set[str]:
    from plone.dexterity.utils import iterSchemataForType
    from zope.schema import getFieldNames

    return {
        name for schema in iterSchemataForType(item.portal_type) for name in getFieldNames(schema)
    }


def index_names() -> list[str]:
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


def zope_datetime(value):
    from DateTime import DateTime

    return DateTime(value)


def item_path(obj) -> str:
    return "/".join(obj.getPhysicalPath())


def current_userid() -> str:
    from plone import api

    return api.user.get_current().getId() or "Anonymous"
