"""Read posts from an RSS 2.0, Atom or JSON Feed 1.x feed (``config.api_url`` is the feed URL).

Usage::

    from collective.plonecelery.blogs.readers import feed

    posts, _ = feed.list_posts(config)                   # every entry; never a next page
    post = feed.fetch_post(config, "tag:blog,2024:42")   # by entry id (or link); PostGone if absent
    feed.test_connection(config)
    read = feed.read_changes(config, etag='"v1"')   # read.not_modified after a 304

A feed only holds its newest entries, so an entry missing from it is reported as ``PostGone``:
callers decide whether that means "deleted" or merely "scrolled off".
"""

from __future__ import annotations

import calendar
import html as html_lib
import textwrap
import time
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from typing import Any
from urllib.parse import urljoin

import feedparser
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
from collective.plonecelery.exceptions import FetchError
from collective.plonecelery.exceptions import PostGone

EXCERPT_LENGTH = 300
_ACCEPT = (
    "application/feed+json, application/atom+xml, application/rss+xml, "
    "application/xml;q=0.9, */*;q=0.5"
)
_HTML_TYPES = ("text/html", "application/xhtml+xml")
TOMBSTONES_NS = "http://purl.org/atompub/tombstones/1.0"


def fetch_post(
    config: SourceConfig, remote_id: str, *, client: httpx.Client | None = None
) -> RemotePost:
    """Fetch the feed and return the entry whose id (or, lacking one, link) is ``remote_id``."""
    if not remote_id:
        raise ValueError("remote_id is empty: pass the feed entry's id or link")
    for post in read_feed(config, client=client):
        if post.remote_id == remote_id:
            return post
    raise PostGone(f"the feed has no entry {remote_id!r} (any more)")


def list_posts(
    config: SourceConfig, *, page: int = 1, client: httpx.Client | None = None
) -> tuple[list[RemotePost], int | None]:
    """Return all entries of the feed for page 1 (feeds are not paginated here), nothing after."""
    if page < 1:
        raise ValueError(f"page numbers start at 1, not {page}")
    if page > 1:
        return [], None
    return read_feed(config, client=client), None


def test_connection(config: SourceConfig, *, client: httpx.Client | None = None) -> dict[str, Any]:
    """Fetch the feed and summarise it (``FetchError`` when it is unreachable or not a feed)."""
    posts = read_feed(config, client=client)
    return connection_summary(config, posts=posts, total=len(posts))


test_connection.__test__ = False  # not a pytest test, even when imported into a test module


@dataclass
class FeedRead:
    """One conditional read of a feed (:func:`read_changes`)."""

    posts: list[RemotePost] = field(default_factory=list)
    #: Ids of the entries the feed marks deleted (Atom tombstones, RFC 6721).
    deleted: list[str] = field(default_factory=list)
    etag: str = ""
    last_modified: str = ""
    #: The server answered 304: nothing changed since the validators given.
    not_modified: bool = False


def read_feed(config: SourceConfig, *, client: httpx.Client | None = None) -> list[RemotePost]:
    """Fetch ``config.api_url`` and return its entries as sanitised :class:`RemotePost` objects."""
    return _parse(_get(config, headers={}, client=client), config=config)


def read_changes(
    config: SourceConfig,
    *,
    etag: str = "",
    last_modified: str = "",
    client: httpx.Client | None = None,
) -> FeedRead:
    """Fetch the feed unless it is unchanged since ``etag``/``last_modified`` (HTTP 304).

    Returns the entries, the tombstones and the new validators to keep for the next read.
    """
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    response = _get(config, headers=headers, client=client)
    validators = {
        "etag": response.headers.get("etag", "") or etag,
        "last_modified": response.headers.get("last-modified", "") or last_modified,
    }
    if response.status_code == 304:
        return FeedRead(not_modified=True, **validators)
    return FeedRead(
        posts=_parse(response, config=config), deleted=tombstones(response.content), **validators
    )


@dataclass
class HubLinks:
    """What a feed announces for WebSub (:func:`discover_hub`)."""

    hub: str = ""
    #: The feed's own URL (``rel="self"``), which hubs know as the topic.
    self_url: str = ""


def discover_hub(
    url: str, *, allow_private: bool = False, client: httpx.Client | None = None
) -> HubLinks:
    """Fetch the feed at ``url`` and return the hub it announces (and its ``self`` link).

    Looked for, first found wins: the HTTP ``Link`` header (``rel="hub"``), the feed's own
    links (Atom ``<link rel="hub">``, RSS ``<atom:link rel="hub">``), a JSON Feed's ``hubs``.
    Relative hub URLs are resolved against the feed's URL. ``FetchError`` when the feed
    cannot be read; an empty ``hub`` when it announces none.
    """
    parts = httpx.URL(url)
    try:
        response = fetch(
            url,
            allowed_hosts=(f"{parts.scheme}://{parts.netloc.decode('ascii')}",),
            allow_private=allow_private,
            headers={"Accept": _ACCEPT},
            client=client,
        )
    except PostGone as exc:
        raise FetchError(f"{exc}; check the feed URL", retryable=False, status=exc.status) from None
    base = str(response.url)
    links = HubLinks(
        hub=(response.links.get("hub") or {}).get("url", ""),
        self_url=(response.links.get("self") or {}).get("url", ""),
    )
    body = response.content.lstrip(b"\xef\xbb\xbf \t\r\n")
    if body.startswith(b"{"):
        data = json_body(response)
        hubs = data.get("hubs") if isinstance(data, Mapping) else None
        for entry in hubs if isinstance(hubs, list) else ():
            if isinstance(entry, Mapping) and str(entry.get("type", "")).lower() == "websub":
                links.hub = links.hub or _text(entry.get("url"))
        if isinstance(data, Mapping):
            links.self_url = links.self_url or _text(data.get("feed_url"))
    else:
        parsed = feedparser.parse(response.content, response_headers={"content-location": base})
        for link in parsed.feed.get("links", []):
            if link.get("rel") == "hub":
                links.hub = links.hub or link.get("href", "")
            elif link.get("rel") == "self":
                links.self_url = links.self_url or link.get("href", "")
    links.hub = urljoin(base, links.hub.strip()) if links.hub.strip() else ""
    links.self_url = urljoin(base, links.self_url.strip()) if links.self_url.strip() else ""
    return links


def tombstones(content: bytes) -> list[str]:
    """The ``ref`` of each ``at:deleted-entry`` of an Atom (or RSS) document (RFC 6721).

    feedparser keeps only the last one of a feed, so they are read here; entity expansion and
    network access are off. Not XML (a JSON Feed): none.
    """
    from lxml import etree

    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        root = etree.fromstring(content, parser=parser)
    except (etree.XMLSyntaxError, ValueError):
        return []
    refs = (element.get("ref") for element in root.iter(f"{{{TOMBSTONES_NS}}}deleted-entry"))
    return list(dict.fromkeys(ref.strip() for ref in refs if ref and ref.strip()))


def _get(
    config: SourceConfig, *, headers: Mapping[str, str], client: httpx.Client | None
) -> httpx.Response:
    try:
        return fetch(
            config.api_url,
            allowed_hosts=config.allowed_hosts,
            allow_private=config.allow_private,
            headers={"Accept": _ACCEPT, **headers},
            client=client,
        )
    except PostGone as exc:
        raise FetchError(f"{exc}; check the feed URL", retryable=False, status=exc.status) from None


def _parse(response: httpx.Response, *, config: SourceConfig) -> list[RemotePost]:
    content_type = response.headers.get("content-type", "").lower()
    if "json" in content_type or response.content.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return parse_json_feed(json_body(response), config=config, base_url=str(response.url))
    return parse_xml_feed(
        response.content, config=config, base_url=str(response.url), content_type=content_type
    )


def parse_xml_feed(
    content: bytes, *, config: SourceConfig, base_url: str, content_type: str = ""
) -> list[RemotePost]:
    """Parse RSS/Atom bytes with feedparser; ``FetchError`` when they are not a feed."""
    parsed = feedparser.parse(
        content,
        response_headers={
            "content-location": base_url,
            "content-type": content_type or "application/xml",
        },
    )
    if not parsed.get("version") and not parsed.entries:
        problem = parsed.get("bozo_exception") or "no RSS or Atom elements found"
        raise FetchError(f"{base_url} is not an RSS/Atom/JSON feed: {problem}", retryable=False)
    posts = (_xml_entry(entry, config=config, base_url=base_url) for entry in parsed.entries)
    return [post for post in posts if post is not None]


def parse_json_feed(data: Any, *, config: SourceConfig, base_url: str) -> list[RemotePost]:
    """Convert a decoded JSON Feed (https://jsonfeed.org/version/1.1) into posts."""
    if not isinstance(data, Mapping) or not str(data.get("version", "")).startswith(
        "https://jsonfeed.org/version/"
    ):
        raise FetchError(
            f"{base_url} is JSON but not a JSON Feed (no jsonfeed.org version)", retryable=False
        )
    items = data.get("items") if isinstance(data.get("items"), list) else []
    posts = (
        _json_item(item, config=config, base_url=base_url)
        for item in items
        if isinstance(item, Mapping)
    )
    return [post for post in posts if post is not None]


def _xml_entry(
    entry: Mapping[str, Any], *, config: SourceConfig, base_url: str
) -> RemotePost | None:
    remote_id = entry.get("id") or entry.get("link")
    if not remote_id:
        return None  # nothing stable to recognise it by next time
    url = urljoin(base_url, entry.get("link") or "")
    body = _xml_body(entry)
    summary = entry.get("summary") or ""
    return RemotePost(
        remote_id=str(remote_id),
        url=url,
        title=html_to_text(entry.get("title") or ""),
        html=clean_html(body, iframe_hosts=config.iframe_hosts, base_url=url or base_url),
        excerpt=_excerpt(summary if body != summary else "", fallback=body),
        published=_struct_utc(entry.get("published_parsed")),
        modified=_struct_utc(entry.get("updated_parsed")),
        tags=[
            tag.get("term") or tag.get("label")
            for tag in entry.get("tags", [])
            if tag.get("term") or tag.get("label")
        ],
        authors=author_names(_xml_author_names(entry)),
        image_url=_xml_image(entry, base_url=url or base_url),
        status="published",
    )


def _xml_body(entry: Mapping[str, Any]) -> str:
    contents = [item for item in entry.get("content", []) if item.get("value")]
    html_first = sorted(contents, key=lambda item: item.get("type") not in _HTML_TYPES)
    if html_first:
        item = html_first[0]
        return item["value"] if item.get("type") in _HTML_TYPES else _text_to_html(item["value"])
    return entry.get("summary") or ""


def _xml_author_names(entry: Mapping[str, Any]) -> list[str]:
    names = [
        author.get("name") for author in entry.get("authors", []) if isinstance(author, Mapping)
    ]
    return [name for name in names if name] or [entry.get("author")]


def _xml_image(entry: Mapping[str, Any], *, base_url: str) -> str | None:
    candidates = [item.get("url") for item in entry.get("media_thumbnail", [])]
    candidates += [
        item.get("url")
        for item in entry.get("media_content", [])
        if item.get("medium") == "image" or str(item.get("type", "")).startswith("image/")
    ]
    candidates += [
        link.get("href")
        for link in entry.get("links", [])
        if link.get("rel") == "enclosure" and str(link.get("type", "")).startswith("image/")
    ]
    candidates.append((entry.get("image") or {}).get("href"))
    return next((urljoin(base_url, url) for url in candidates if url), None)


def _json_item(
    item: Mapping[str, Any], *, config: SourceConfig, base_url: str
) -> RemotePost | None:
    remote_id = item.get("id")
    if remote_id in (None, "") or isinstance(remote_id, bool | dict | list):
        remote_id = item.get("url")
    if not remote_id:
        return None
    url = urljoin(base_url, _text(item.get("url")))
    body = _text(item.get("content_html")) or _text_to_html(_text(item.get("content_text")))
    authors = item.get("authors") if isinstance(item.get("authors"), list) else [item.get("author")]
    image = _text(item.get("image")) or _text(item.get("banner_image"))
    tags = item.get("tags") if isinstance(item.get("tags"), list) else []
    return RemotePost(
        remote_id=str(remote_id),
        url=url,
        title=_text(item.get("title")).strip(),
        html=clean_html(body, iframe_hosts=config.iframe_hosts, base_url=url or base_url),
        excerpt=_excerpt(_text(item.get("summary")), fallback=body),
        published=utc_datetime(item.get("date_published")),
        modified=utc_datetime(item.get("date_modified")),
        tags=[tag for tag in tags if isinstance(tag, str) and tag],
        authors=author_names(
            author.get("name") for author in authors if isinstance(author, Mapping)
        ),
        image_url=urljoin(base_url, image) if image else None,
        status="published",
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _text_to_html(text: str) -> str:
    paragraphs = [part.strip() for part in text.split("\n\n") if part.strip()]
    return "".join(f"<p>{html_lib.escape(part)}</p>" for part in paragraphs)


def _excerpt(summary: str, *, fallback: str) -> str:
    """The summary as plain text; without one, the start of the body (a post is no excerpt)."""
    text = html_to_text(summary)
    if text:
        return text
    return textwrap.shorten(html_to_text(fallback), width=EXCERPT_LENGTH, placeholder=" …")


def _struct_utc(value: time.struct_time | None) -> datetime | None:
    # feedparser normalises parsed dates to UTC struct_time.
    if not value:
        return None
    return datetime.fromtimestamp(calendar.timegm(value), tz=UTC)
