"""Read published posts from a Ghost site through its Content API.

Usage::

    from collective.plonecelery.blogs.readers import ghost

    post = ghost.fetch_post(config, "5c7ece47da174000c0c5c6d7")   # PostGone when unpublished
    posts, next_page = ghost.list_posts(config, page=1)
    page = ghost.fetch_post(config, "page:5c7ece47da174000c0c5c6d8")   # a page (pages endpoint)
    ghost.test_connection(config)   # {'kind': 'ghost', 'total': 12, 'sample': {...}, ...}

The Content API only shows published posts. One post is read through the browse endpoint
with ``filter=id:<id>``, which answers 200 with an empty list for a post that is not
published (any more), where ``/posts/<id>/`` would answer 404: Ghost's brute-force guard
blocks a Content API key for an hour or more (429) after 99 consecutive 4xx answers, and
a blog that deletes or unpublishes many posts would trip it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

import httpx

from collective.plonecelery.blogs.config import SourceConfig
from collective.plonecelery.blogs.readers.http import fetch
from collective.plonecelery.blogs.readers.http import json_body
from collective.plonecelery.blogs.readers.remote import RemotePost
from collective.plonecelery.blogs.readers.remote import author_names
from collective.plonecelery.blogs.readers.remote import connection_summary
from collective.plonecelery.blogs.readers.remote import utc_datetime
from collective.plonecelery.blogs.readers.sanitize import clean_html
from collective.plonecelery.blogs.readers.sanitize import html_to_text
from collective.plonecelery.blogs.verify.events import PAGE_PREFIX
from collective.plonecelery.exceptions import FetchError
from collective.plonecelery.exceptions import PostGone

PAGE_SIZE = 15
_HEADERS = {"Accept-Version": "v5.0", "Accept": "application/json"}
_INCLUDE = {"include": "tags,authors", "formats": "html"}
_GHOST_ID = re.compile(r"[0-9a-f]{24}")


def fetch_post(
    config: SourceConfig, remote_id: str, *, client: httpx.Client | None = None
) -> RemotePost:
    """Fetch one published post by its Ghost id; ``PostGone`` if it is not (any more) published.

    Asks ``/posts/?filter=id:<id>`` (see the module docstring): no 4xx for a gone post.
    """
    if not remote_id:
        raise ValueError("remote_id is empty: pass the Ghost post id")
    resource = "pages" if remote_id.startswith(PAGE_PREFIX) else "posts"
    ghost_id = remote_id.removeprefix(PAGE_PREFIX)
    if not _GHOST_ID.fullmatch(ghost_id):
        # Ghost ids are ObjectIds: anything else is no post of this blog (and no NQL).
        raise PostGone(f"{remote_id[:40]!r} is not a Ghost post id (24 hex digits)")
    params = {**_INCLUDE, "filter": f"id:{ghost_id}", "limit": 1}
    data = _get(config, "", params=params, client=client, resource=resource)
    posts = [post for post in data[resource] if str(post.get("id")) == ghost_id]
    if not posts:
        raise PostGone(f"Ghost publishes no {resource[:-1]} with id {ghost_id!r}")
    post = to_remote_post(posts[0], config=config)
    post.remote_id = remote_id
    return post


def list_posts(
    config: SourceConfig, *, page: int = 1, client: httpx.Client | None = None
) -> tuple[list[RemotePost], int | None]:
    """Return the published posts of ``page`` (newest first) and the next page number or None."""
    data = _browse(config, page=page, limit=PAGE_SIZE, client=client)
    posts = [to_remote_post(item, config=config) for item in _posts(data)]
    next_page = _pagination(data).get("next")
    return posts, next_page if isinstance(next_page, int) and next_page > page else None


def test_connection(config: SourceConfig, *, client: httpx.Client | None = None) -> dict[str, Any]:
    """Fetch the newest post and summarise the answer (raises ``FetchError`` on failure)."""
    data = _browse(config, page=1, limit=1, client=client)
    posts = [to_remote_post(item, config=config) for item in _posts(data)]
    total = _pagination(data).get("total")
    return connection_summary(config, posts=posts, total=total if isinstance(total, int) else None)


test_connection.__test__ = False  # not a pytest test, even when imported into a test module


def to_remote_post(data: Mapping[str, Any], *, config: SourceConfig) -> RemotePost:
    """Convert one Content API post object into a sanitised :class:`RemotePost`."""
    if not isinstance(data, Mapping) or not data.get("id"):
        raise FetchError(
            "Ghost sent a post without an id; is api_url a Ghost site?", retryable=False
        )
    url = data.get("url") or ""
    tags = [
        tag.get("name")
        for tag in _objects(data.get("tags"))
        # Internal tags ('#hash' tags) are Ghost's own routing hints, not subjects.
        if tag.get("name") and tag.get("visibility", "public") != "internal"
    ]
    image = data.get("feature_image")
    status = data.get("status") or "published"
    return RemotePost(
        remote_id=str(data["id"]),
        url=url,
        title=str(data.get("title") or "").strip(),
        html=clean_html(
            data.get("html") or "", iframe_hosts=config.iframe_hosts, base_url=url or None
        ),
        excerpt=html_to_text(data.get("custom_excerpt") or data.get("excerpt") or ""),
        published=utc_datetime(data.get("published_at")),
        modified=utc_datetime(data.get("updated_at")),
        tags=[str(tag) for tag in tags],
        authors=author_names(author.get("name") for author in _objects(data.get("authors"))),
        image_url=urljoin(url, image) if isinstance(image, str) and image else None,
        status="published" if status == "published" else str(status),
    )


def _browse(
    config: SourceConfig, *, page: int, limit: int, client: httpx.Client | None
) -> Mapping[str, Any]:
    if page < 1:
        raise ValueError(f"page numbers start at 1, not {page}")
    try:
        return _get(config, "", params={**_INCLUDE, "page": page, "limit": limit}, client=client)
    except PostGone as exc:
        # Browsing never 404s on a Ghost site: the URL is wrong.
        raise FetchError(
            f"{exc}; check that api_url is the Ghost site's root URL",
            retryable=False,
            status=exc.status,
        ) from None


def _get(
    config: SourceConfig,
    path: str,
    *,
    params: Mapping[str, Any],
    client: httpx.Client | None,
    resource: str = "posts",
) -> Mapping:
    base = config.api_url.rstrip("/")
    try:
        url = httpx.URL(
            f"{base}/ghost/api/content/{resource}/{path}",
            params={"key": config.api_key, **params},
        )
    except httpx.InvalidURL as exc:
        raise FetchError(f"invalid URL: api_url {base!r}: {exc}", retryable=False) from None
    response = fetch(
        str(url),
        allowed_hosts=config.allowed_hosts,
        allow_private=config.allow_private,
        headers=_HEADERS,
        client=client,
    )
    data = json_body(response)
    if not isinstance(data, Mapping) or not isinstance(data.get(resource), list):
        raise FetchError(
            f'Ghost answered without a "{resource}" list; check api_url', retryable=False
        )
    return data


def _posts(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return _objects(data.get("posts"))


def _pagination(data: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = data.get("meta")
    pagination = meta.get("pagination") if isinstance(meta, Mapping) else None
    return pagination if isinstance(pagination, Mapping) else {}


def _objects(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []
