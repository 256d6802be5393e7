"""The images of a post's body, kept in Plone: a front-end that cannot reach the Internet
then serves complete posts.

Every ``<img src>`` of the sanitised body is fetched by the worker, under the guards of
every fetch (the source's allowed origins, scheme, host and port; no private addresses
unless allowed; size and type limits), into a Plone Image in
``<target folder>/images/<source>-<post id>/``. The HTML then points at it by UID
(``resolveuid/<uid>/@@images/image``): Plone's output filter and plone.restapi's blocks
serializer turn that into the image's URL, wherever the image is moved.

Why a folder of its own rather than the post: News Items are not folderish, and one folder
per post keeps a post's images together and lets them go with it. The folders are
published (the blog shows these images publicly) and hidden from navigation.

An image is keyed by its URL: a re-import does not fetch again an image it already holds
(the image's content digest is kept too, for the record); images the body no longer shows
are deleted. An image that cannot be fetched keeps its remote URL, with a note in the
delivery log.

>>> html, notes = localise_images(post_html, config=config, post_key="blog:42")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import logging

import lxml.html

from ...exceptions import FetchError
from ...exceptions import PostGone
from .. import storage
from ..readers.http import fetch

logger = logging.getLogger(__name__)

IMAGES_FOLDER = "images"
IMAGE_MAX_BYTES = 10_000_000
#: Most body images fetched per post (a post with more keeps the rest hot-linked).
MAX_IMAGES = 50


def image_id(url: str) -> str:
    """The id of the Image kept for ``url``: stable, so a re-import finds it."""
    return "img-" + hashlib.sha256(url.encode()).hexdigest()[:16]


def localise_images(html: str, *, config, post_key: str) -> tuple[str, list[str]]:
    """Download the body's images into Plone; returns the HTML pointing at them, and notes.

    :param html: [required] The sanitised body HTML.
    :param config: [required] The source's ``SourceConfig``.
    :param post_key: [required] ``<source id>:<remote id>`` of the post.
    """
    if not html or "<img" not in html:
        _prune(config, post_key, keep=set())
        return html, []
    root = lxml.html.fragment_fromstring(html, create_parent="div")
    notes: list[str] = []
    kept: set[str] = set()
    folder = None
    for count, img in enumerate(root.iter("img")):
        src = (img.get("src") or "").strip()
        if not src.startswith(("http://", "https://")):
            continue
        if count >= MAX_IMAGES:
            notes.append(f"more than {MAX_IMAGES} images: the others stay on the blog")
            break
        if folder is None:
            folder = _post_folder(config, post_key)
        image = folder.get(image_id(src)) or _download(folder, src, config=config, notes=notes)
        if image is None:
            continue
        kept.add(image.getId())
        img.set("src", f"resolveuid/{image.UID()}/@@images/image")
        for attribute in ("srcset", "sizes"):
            img.attrib.pop(attribute, None)
    # <picture><source srcset> would still load the blog's files: the <img> is enough.
    for source in list(root.iter("source")):
        if source.getparent() is not None and source.getparent().tag == "picture":
            source.getparent().remove(source)
    _prune(config, post_key, keep=kept)
    inner = (root.text or "") + "".join(
        lxml.html.tostring(child, encoding="unicode") for child in root
    )
    return inner, notes


def _download(folder, url: str, *, config, notes: list[str]):
    from plone.dexterity.utils import createContentInContainer
    from plone.namedfile.file import NamedBlobImage

    try:
        response = fetch(
            url,
            allowed_hosts=config.allowed_hosts,
            allow_private=config.allow_private,
            max_bytes=IMAGE_MAX_BYTES,
            headers={"Accept": "image/*"},
        )
    except (FetchError, PostGone) as exc:
        logger.warning("Body image %s not imported: %s", url, exc)
        notes.append(f"body image kept on the blog: {exc}")
        return None
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not content_type.startswith("image/") or content_type == "image/svg+xml":
        # SVG can carry scripts: never served from the site's own origin.
        notes.append(f"body image kept on the blog: {url} is {content_type or 'untyped'}")
        return None
    name = url.rsplit("/", 1)[-1].split("?", 1)[0] or "image"
    image = createContentInContainer(
        folder,
        "Image",
        id=image_id(url),
        title=name,
        checkConstraints=False,
        image=NamedBlobImage(data=response.content, filename=name, contentType=content_type),
    )
    image.plonecelery_source_url = url
    image.plonecelery_digest = hashlib.sha256(response.content).hexdigest()
    return image


def _post_folder(config, post_key: str):
    target = storage.resolve_target(config)
    images = _child_folder(target, IMAGES_FOLDER, title="Images of imported posts")
    return _child_folder(images, _folder_id(post_key), title=post_key)


def _folder_id(post_key: str) -> str:
    from plone.i18n.normalizer import idnormalizer

    return idnormalizer.normalize(post_key.replace(":", "-"), max_length=80)


def _child_folder(container, folder_id: str, *, title: str):
    from plone import api
    from plone.dexterity.utils import createContentInContainer

    folder = container.get(folder_id)
    if folder is not None:
        return folder
    folder = createContentInContainer(
        container, "Folder", id=folder_id, title=title, checkConstraints=False
    )
    folder.exclude_from_nav = True
    with api.env.adopt_roles(["Manager"]):
        if api.content.get_state(obj=folder, default=None) not in (None, "published"):
            api.content.transition(obj=folder, to_state="published")
    folder.reindexObject()
    return folder


def _prune(config, post_key: str, *, keep: set[str]) -> None:
    """Delete the images of this post that its body no longer shows."""
    target = storage.resolve_target(config)
    images = target.get(IMAGES_FOLDER)
    folder = images.get(_folder_id(post_key)) if images is not None else None
    if folder is None:
        return
    gone = [name for name in folder.objectIds() if name not in keep]
    if gone:
        folder.manage_delObjects(gone)


def remove_post_images(config, post_key: str) -> None:
    """The post's item is deleted: its images go with it."""
    target = storage.resolve_target(config)
    images = target.get(IMAGES_FOLDER)
    if images is not None and _folder_id(post_key) in images.objectIds():
        images.manage_delObjects([_folder_id(post_key)])
