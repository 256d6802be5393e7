"""Read posts from a WordPress site through its REST API (``/wp-json/wp/v2/posts``).

Usage::

    from collective.plonecelery.blogs.readers import wordpress

    post = wordpress.fetch_post(config, "4")            # PostGone when deleted or not public
    posts, next_page = wordpress.list_posts(config, page=1)
    wordpress.test_connection(config)

Requests are anonymous unless the source has ``username`` + ``app_password`` (an application
password), in which case HTTP basic auth is sent (https only, see ``SourceConfig.validate``).

Sites without pretty permalinks have no ``/wp-json/`` path (it answers the theme's 404): when
it answers 404 the same request is made as ``/?rest_route=/wp/v2/...``, and the form that
worked is remembered for the site (per process). A REST 404 for a gone post on a site with
pretty permalinks then costs one request, not two.

Rendered fields (titles, excerpts, term and author names) carry HTML entities
(``&#038;``, ``&amp;``, ``&#8220;``): they are decoded exactly once into plain text.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote
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
from collective.plonecelery.exceptions import FetchError
from collective.plonecelery.exceptions import PostGone

PAGE_SIZE = 20


def fetch_post(
    config: SourceConfig, remote_id: str, *, client: httpx.Client | None = None
) -> RemotePost:
    """Fetch one post by its numeric WordPress id.

    Raises ``PostGone`` on 404/410, and also on 401/403 for anonymous sources: WordPress answers
    those for drafts, private and trashed posts, i.e. posts that are no longer public.
    """
    remote_id = str(remote_id).strip()
    if not remote_id.isdigit():
        raise FetchError(f"WordPress post ids are numbers, got {remote_id[:40]!r}", retryable=False)
    try:
        response = _get(config, f"posts/{remote_id}?_embed", client=client)
    except FetchError as exc:
        if exc.status in (401, 403) and not config.username:
            raise PostGone(
                f"post {remote_id} is not public any more ({exc})", status=exc.status
            ) from None
        raise
    return to_remote_post(json_body(response), config=config)


def list_posts(
    config: SourceConfig, *, page: int = 1, client: httpx.Client | None = None
) -> tuple[list[RemotePost], int | None]:
    """Return the posts of ``page`` (newest first) and the next page number, or ``None``."""
    response, items = _browse(config, page=page, per_page=PAGE_SIZE, client=client)
    total_pages = response.headers.get("x-wp-totalpages", "")
    has_next = total_pages.isdigit() and page < int(total_pages)
    return [to_remote_post(item, config=config) for item in items], page + 1 if has_next else None


def test_connection(config: SourceConfig, *, client: httpx.Client | None = None) -> dict[str, Any]:
    """Fetch the newest post and summarise the answer (raises ``FetchError`` on failure)."""
    response, items = _browse(config, page=1, per_page=1, client=client)
    total = response.headers.get("x-wp-total", "")
    posts = [to_remote_post(item, config=config) for item in items]
    return connection_summary(config, posts=posts, total=int(total) if total.isdigit() else None)


test_connection.__test__ = False  # not a pytest test, even when imported into a test module


def to_remote_post(data: Any, *, config: SourceConfig) -> RemotePost:
    """Convert one REST API post object (fetched with ``?_embed``) into a :class:`RemotePost`."""
    if not isinstance(data, Mapping) or data.get("id") in (None, ""):
        raise FetchError(
            "WordPress sent a post without an id; is api_url a WordPress site?", retryable=False
        )
    url = data.get("link") or ""
    embedded = data.get("_embedded") if isinstance(data.get("_embedded"), Mapping) else {}
    terms = [term for group in _list(embedded.get("wp:term")) for term in _objects(group)]
    media = _objects(embedded.get("wp:featuredmedia"))
    image = media[0].get("source_url") if media else None
    status = data.get("status") or "publish"
    return RemotePost(
        remote_id=str(data["id"]),
        url=url,
        title=html_to_text(_rendered(data.get("title"))),
        html=clean_html(
            _rendered(data.get("content")), iframe_hosts=config.iframe_hosts, base_url=url or None
        ),
        excerpt=html_to_text(_rendered(data.get("excerpt"))),
        # *_gmt carry no offset but are UTC; 'date'/'modified' are site-local and not used.
        published=utc_datetime(data.get("date_gmt"), assume_utc=True),
        modified=utc_datetime(data.get("modified_gmt"), assume_utc=True),
        tags=[
            html_to_text(term["name"])
            for term in terms
            if term.get("taxonomy") == "post_tag" and term.get("name")
        ],
        authors=author_names(
            # WordPress stores display names HTML-escaped ('Admin &amp; Co'): decode once.
            html_to_text(author["name"])
            for author in _objects(embedded.get("author"))
            if isinstance(author.get("name"), str)
        ),
        image_url=urljoin(url, image) if isinstance(image, str) and image else None,
        status="published" if status == "publish" else str(status),
    )


def _browse(
    config: SourceConfig, *, page: int, per_page: int, client: httpx.Client | None
) -> tuple[httpx.Response, list[Mapping[str, Any]]]:
    if page < 1:
        raise ValueError(f"page numbers start at 1, not {page}")
    try:
        response = _get(config, f"posts?_embed&page={page}&per_page={per_page}", client=client)
    except PostGone as exc:
        raise FetchError(
            f"{exc}; check that api_url is the WordPress site's root URL "
            "and that its REST API is enabled",
            retryable=False,
            status=exc.status,
        ) from None
    items = json_body(response)
    if not isinstance(items, list):
        raise FetchError(
            "WordPress answered a post listing that is not a list; check api_url", retryable=False
        )
    return response, _objects(items)


#: api_url -> "pretty" (``/wp-json/``) or "plain" (``?rest_route=``), as learnt from the site.
_URL_FORMS: dict[str, str] = {}


def rest_urls(api_url: str, path: str) -> dict[str, str]:
    """The two URLs of REST path ``path`` (``posts/4?_embed``) on the site ``api_url``.

    >>> rest_urls("https://blog.example.org", "posts/4?_embed")["plain"]
    'https://blog.example.org/?rest_route=/wp/v2/posts/4&_embed'
    """
    base = api_url.rstrip("/")
    route, _, query = path.partition("?")
    plain = f"{base}/?rest_route={quote('/wp/v2/' + route, safe='/')}"
    return {
        "pretty": f"{base}/wp-json/wp/v2/{path}",
        "plain": f"{plain}&{query}" if query else plain,
    }


def _get(config: SourceConfig, path: str, *, client: httpx.Client | None) -> httpx.Response:
    urls = rest_urls(config.api_url, path)
    known = _URL_FORMS.get(config.api_url)
    if known == "plain":
        return _get_url(config, urls["plain"], client=client)
    try:
        response = _get_url(config, urls["pretty"], client=client)
    except PostGone:
        if known == "pretty":
            raise  # the REST API answered: the post is gone
        response = _get_url(config, urls["plain"], client=client)  # PostGone if gone here too
        _URL_FORMS[config.api_url] = "plain"
        return response
    _URL_FORMS[config.api_url] = "pretty"
    return response


def _get_url(config: SourceConfig, url: str, *, client: httpx.Client | None) -> httpx.Response:
    headers = {"Accept": "application/json"}
    if config.username:
        token = base64.b64encode(f"{config.username}:{config.app_password}".encode()).decode(
            "ascii"
        )
        headers["Authorization"] = f"Basic {token}"
    return fetch(
        url,
        allowed_hosts=config.allowed_hosts,
        allow_private=config.allow_private,
        headers=headers,
        client=client,
    )


def _rendered(value: Any) -> str:
    rendered = value.get("rendered") if isinstance(value, Mapping) else value
    return rendered if isinstance(rendered, str) else ""


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _objects(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in _list(value) if isinstance(item, Mapping)]
