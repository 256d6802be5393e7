"""What every source reader returns (:class:`RemotePost`) and the errors it raises.

Usage::

    from collective.plonecelery.exceptions import FetchError, PostGone

    try:
        post = ghost.fetch_post(config, remote_id)
    except PostGone:
        ...  # unpublished or deleted on the blog: retract/delete locally
    except FetchError as exc:
        if exc.retryable:
            ...  # retry later, after exc.retry_after seconds when given
        else:
            ...  # give up and report str(exc)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any

if TYPE_CHECKING:
    pass


@dataclass
class RemotePost:
    """A post as read from a blog, already sanitised."""

    remote_id: str
    url: str
    title: str  # plain text
    html: str  # sanitised with sanitize.clean_html
    excerpt: str  # plain text
    published: datetime | None  # tz-aware UTC
    modified: datetime | None  # tz-aware UTC
    tags: list[str] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)  # display names only, never e-mail addresses
    image_url: str | None = None
    status: str = "published"  # 'published' or the platform's own status word


def utc_datetime(value: str | None, *, assume_utc: bool = False) -> datetime | None:
    """Parse an ISO-8601 timestamp into an aware UTC datetime; ``None`` when absent or unparseable.

    ``assume_utc`` treats a timestamp without offset as UTC (WordPress ``*_gmt`` fields);
    otherwise such a timestamp is refused (``None``), since its zone is unknown.

    >>> utc_datetime("2019-11-26T02:44:17.000+01:00").isoformat()
    '2019-11-26T01:44:17+00:00'
    """
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        if not assume_utc:
            return None
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


_EMAIL = re.compile(r"(?:mailto:)?[^\s<>()\[\],;:\"]+@[^\s<>()\[\],;:\"]+")


def author_names(values: Iterable[object]) -> list[str]:
    """Return the distinct display names in ``values`` with any e-mail address removed.

    Feeds often give ``"jane@example.org (Jane Doe)"`` or only an address: addresses are personal
    data we do not copy into the site.

    >>> author_names(["jane@example.org (Jane Doe)", "bob@example.org", "Ann", None, "Ann"])
    ['Jane Doe', 'Ann']
    """
    names = []
    for value in values:
        if not isinstance(value, str):
            continue
        name = " ".join(_EMAIL.sub(" ", value).replace("()", " ").split()).strip(" ()<>,;")
        if name and name not in names:
            names.append(name)
    return names


def connection_summary(
    config: Any, *, posts: list[RemotePost], total: int | None
) -> dict[str, Any]:
    """The short dict the readers' ``test_connection`` return, for showing to an administrator."""
    sample = posts[0] if posts else None
    return {
        "kind": config.kind,
        "api_url": config.api_url,
        "total": total,
        "sample": None
        if sample is None
        else {
            "remote_id": sample.remote_id,
            "title": sample.title,
            "url": sample.url,
            "published": sample.published.isoformat() if sample.published else None,
        },
    }
