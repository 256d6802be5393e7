"""Whether a verified webhook body already shows that a post is gone, so the worker need not ask.

Usage::

    from collective.plonecelery.blogs.verify.removals import shown_gone

    gone = shown_gone(kind="ghost", body=raw_body, action=note.action)
    if gone is not None:
        ...  # queue the removal without a confirming fetch; gone.as_of: when it happened

Ghost's ``post.deleted`` carries an empty ``current`` (the post is in ``previous``), and its
``post.unpublished`` a ``current`` whose status is no longer ``published``. Asking the Content
API to confirm would answer 404, and Ghost's brute-force guard blocks a Content API key for an
hour or more after 99 consecutive 4xx answers: a blog that deletes many posts would lock the
import out. The signature vouches for the body, so these two removals are taken as they are.
Everything else (updates, other platforms, Standard Webhooks bodies that carry only an id) is
still fetched: there the API has the last word.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ShownGone:
    """A removal the body itself proves."""

    #: ``updated_at`` of the unpublished post (ISO 8601), to ignore an older removal arriving
    #: after a newer import; ``None`` for a deletion (Ghost never reuses post ids).
    as_of: str | None


def shown_gone(*, kind: str, body: bytes, action: str | None) -> ShownGone | None:
    """A :class:`ShownGone` if ``body`` (of a ``kind`` source) shows the post removed, else None.

    >>> shown_gone(kind="ghost", action="remove",
    ...            body=b'{"post": {"current": {}, "previous": {"id": "x"}}}')
    ShownGone(as_of=None)
    >>> shown_gone(kind="ghost", action="remove",
    ...            body=b'{"post": {"current": {"id": "x", "status": "published"}}}') is None
    True
    """
    if kind != "ghost" or action != "remove":
        return None
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None
    envelope = (
        (payload.get("post") or payload.get("page")) if isinstance(payload, Mapping) else None
    )
    if not isinstance(envelope, Mapping) or "current" not in envelope:
        return None
    current = envelope["current"]
    if current == {} and isinstance(envelope.get("previous"), Mapping):
        return ShownGone(as_of=None)
    if isinstance(current, Mapping) and current.get("status") not in (None, "published"):
        as_of = current.get("updated_at")
        return ShownGone(as_of=as_of if isinstance(as_of, str) else None)
    return None
