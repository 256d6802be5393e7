"""Turn a verified webhook body into what to import: which remote post, upserted or removed.

Usage::

    from collective.plonecelery.blogs.verify.events import parse_notification

    note = parse_notification(
        kind="ghost", body=raw_body, headers=headers, event_hint="post.published"
    )
    if note.action is None:
        ...  # an event we do not handle (pages, tags, members...): acknowledge and ignore
    elif note.remote_id is None:
        ...  # refetch the whole source (feeds)
    else:
        ...  # enqueue import/removal of note.remote_id

Only identifiers are taken from the body: the importer always refetches the post from the
platform's API, so a forged-but-signed body cannot inject content.

``kind`` is the source kind (``'ghost'``, ``'wordpress'``, ``'feed'``) or ``'standard-webhooks'``
for senders that post Standard Webhooks payloads (``{"type": ..., "data": {"id": ...}}``).
Ghost and WordPress sources also accept that shape when their native keys are absent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...exceptions import MalformedPayload
from .forms import FormError
from .forms import parse_php_form

KINDS = ("ghost", "wordpress", "feed", "standard-webhooks")

_GHOST_UPSERT = {
    "post.published",
    "post.published.edited",
    "post.edited",
    "post.added",
    "post.rescheduled",
}
_GHOST_REMOVE = {"post.unpublished", "post.deleted"}
#: Ghost pages are keyed ``page:<id>`` (the reader then asks the pages endpoint); whether a
#: source imports them is its ``ghost_pages`` option, checked by the endpoint.
PAGE_PREFIX = "page:"
# WP Webhooks trigger names, plus WooCommerce-style dotted topics.
_WORDPRESS_UPSERT = {"post_create", "post_update", "post.created", "post.updated", "post.restored"}
_WORDPRESS_REMOVE = {"post_delete", "post_trash", "post.deleted"}
_STANDARD_UPSERT = {"post.created", "post.published", "post.updated"}
_STANDARD_REMOVE = {"post.deleted", "post.unpublished"}
_WORDPRESS_EVENT_HEADERS = ("x-wp-webhook-trigger", "x-wc-webhook-topic")
#: Webhook bodies nest a few levels (Ghost: about 5). Deeper JSON is refused before parsing,
#: since Python's parser recurses once per level (1,000 levels raise RecursionError).
MAX_DEPTH = 64
# A JSON string (skipped whole, so brackets inside strings do not count) or a bracket.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


@dataclass(frozen=True)
class Notification:
    """What a webhook asks for."""

    #: ``'upsert'``, ``'remove'`` or ``None`` when the event is ignored/unsupported.
    action: str | None
    #: The platform's post id; ``None`` with ``'upsert'`` means "refetch the whole source".
    remote_id: str | None
    #: The platform's event name as received (``''`` when the sender gave none).
    event: str


def parse_notification(
    *, kind: str, body: bytes, headers: Mapping[str, str], event_hint: str | None = None
) -> Notification:
    """Normalise a verified webhook body of a ``kind`` source into a :class:`Notification`.

    ``event_hint`` is the event name the webhook URL carries (``?event=post.published``); Ghost
    sends no event name otherwise.

    >>> body = b'{"type": "post.deleted", "data": {"id": 7}}'
    >>> parse_notification(kind="standard-webhooks", body=body, headers={})
    Notification(action='remove', remote_id='7', event='post.deleted')
    """
    if kind not in KINDS:
        raise ValueError(f"unknown source kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    lowered = {str(key).lower(): value for key, value in headers.items()}
    hint = (event_hint or "").strip() or None
    if kind == "feed":
        return _parse_feed(body=body, hint=hint)
    if kind == "wordpress" and is_woocommerce_ping(body):
        return Notification(action=None, remote_id=None, event="ping")
    payload = _load_form(body) if kind == "wordpress" and _is_form(body) else _load_object(body)
    if kind == "standard-webhooks" or _looks_standard(payload, native_keys=_NATIVE_KEYS[kind]):
        return _parse_standard(payload, hint=hint)
    if kind == "ghost":
        return _parse_ghost(payload, hint=hint)
    return _parse_wordpress(payload, headers=lowered, hint=hint)


_NATIVE_KEYS = {
    "ghost": ("post", "page"),
    "wordpress": ("post_id", "post", "id", "ID"),
    "standard-webhooks": (),
}


def check_depth(body: bytes, *, limit: int = MAX_DEPTH) -> None:
    """Raise :class:`MalformedPayload` if the JSON in ``body`` nests deeper than ``limit``.

    >>> check_depth(b'{"a": [[["]]]]]"]]]}')
    >>> try:
    ...     check_depth(b"[" * 65)
    ... except MalformedPayload as exc:
    ...     print(exc)
    the webhook body nests deeper than 64 levels
    """
    depth = 0
    for match in _JSON_TOKEN.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise MalformedPayload(f"the webhook body nests deeper than {limit} levels")
        elif token in (b"]", b"}"):
            depth -= 1


def _load_object(body: bytes) -> dict[str, Any]:
    check_depth(body)
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedPayload(f"the webhook body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise MalformedPayload(
            f"the webhook body must be a JSON object, not {type(payload).__name__}"
        )
    return payload


def _is_form(body: bytes) -> bool:
    # WP Webhooks can send its payload form-encoded (PHP's http_build_query()).
    text = body.lstrip()
    return bool(text) and not text.startswith((b"{", b"[")) and b"=" in text.split(b"&", 1)[0]


def _load_form(body: bytes) -> dict[str, Any]:
    try:
        return parse_php_form(body)
    except FormError as exc:
        raise MalformedPayload(f"the form-encoded webhook body cannot be read: {exc}") from None


def _looks_standard(payload: Mapping[str, Any], *, native_keys: tuple[str, ...]) -> bool:
    return (
        "type" in payload and "data" in payload and not any(key in payload for key in native_keys)
    )


def _text_id(value: Any, *, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        raise MalformedPayload(
            f"{where} must be a non-empty string or integer post id, got {value!r:.60}"
        )
    return str(value).strip()


def _mapping(value: Any, *, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedPayload(f"{where} must be a JSON object, not {type(value).__name__}")
    return value


def _parse_ghost(payload: Mapping[str, Any], *, hint: str | None) -> Notification:
    resource = "post" if "post" in payload else "page" if "page" in payload else None
    if resource is None:
        raise MalformedPayload(
            'a Ghost webhook body must have a top-level "post" (or "page") object'
        )
    envelope = _mapping(payload[resource], where=f'"{resource}"')
    current = _mapping(envelope.get("current"), where=f'"{resource}.current"')
    previous = _mapping(envelope.get("previous"), where=f'"{resource}.previous"')
    event = hint or (payload.get("event") if isinstance(payload.get("event"), str) else None) or ""
    if event:
        # page.published is post.published for a page; a page event on a post body is not.
        named, _, rest = event.partition(".")
        as_post = f"post.{rest}" if named == resource else ""
        action = (
            "upsert" if as_post in _GHOST_UPSERT else "remove" if as_post in _GHOST_REMOVE else None
        )
    else:
        # Ghost's post.deleted sends an empty "current"; everything else carries the post.
        action = "remove" if not current else "upsert"
    if action is None:
        return Notification(action=None, remote_id=None, event=event)
    raw_id = current.get("id") or previous.get("id")
    if raw_id is None:
        raise MalformedPayload(f'the Ghost "{resource}" has no id in "current" or "previous"')
    remote_id = _text_id(raw_id, where=f"{resource}.id")
    if resource == "page":
        remote_id = PAGE_PREFIX + remote_id
    return Notification(action=action, remote_id=remote_id, event=event)


def _parse_wordpress(
    payload: Mapping[str, Any], *, headers: Mapping[str, str], hint: str | None
) -> Notification:
    event = hint or next(
        (headers[name] for name in _WORDPRESS_EVENT_HEADERS if headers.get(name)), None
    )
    trigger = payload.get("trigger")
    event = (event or (trigger if isinstance(trigger, str) else "") or "").strip()
    post = _mapping(payload.get("post"), where='"post"')
    post_type = post.get("post_type", payload.get("post_type", payload.get("type")))
    if event and event not in _WORDPRESS_UPSERT | _WORDPRESS_REMOVE:
        return Notification(action=None, remote_id=None, event=event)
    if post_type is not None and post_type != "post":
        return Notification(action=None, remote_id=None, event=event)
    # Without an event name, upsert: the importer refetches and a 404/401 then means "remove".
    action = "remove" if event in _WORDPRESS_REMOVE else "upsert"
    raw_id = next(
        (value for value in (payload.get("post_id"), post.get("ID"), payload.get("id")) if value),
        None,
    )
    if raw_id is None:
        raise MalformedPayload('a WordPress webhook body needs "post_id", "post.ID" or "id"')
    return Notification(action=action, remote_id=_text_id(raw_id, where="post id"), event=event)


def is_woocommerce_ping(body: bytes) -> bool:
    """True for WooCommerce's unsigned creation ping; looks at the bytes only, parses nothing."""
    # WooCommerce posts a form-encoded 'webhook_id=<n>' when a webhook is created; it expects 200.
    return body.startswith(b"webhook_id=") and body[len(b"webhook_id=") :].strip().isdigit()


def _parse_standard(payload: Mapping[str, Any], *, hint: str | None) -> Notification:
    event = payload.get("type")
    if not isinstance(event, str) or not event:
        event = hint
    if not event:
        raise MalformedPayload(
            'a Standard Webhooks body needs a "type" string, e.g. "post.published"'
        )
    data = _mapping(payload.get("data"), where='"data"')
    action = (
        "upsert" if event in _STANDARD_UPSERT else "remove" if event in _STANDARD_REMOVE else None
    )
    if action is None:
        return Notification(action=None, remote_id=None, event=event)
    if data.get("id") is None:
        raise MalformedPayload(f'the "{event}" body has no "data.id"')
    return Notification(action=action, remote_id=_text_id(data["id"], where="data.id"), event=event)


def _parse_feed(*, body: bytes, hint: str | None) -> Notification:
    # WebSub delivers the feed itself and Standard-Webhooks pings name an item; either way the
    # importer refetches the whole feed (remote_id None), which also catches missed deliveries.
    text = body.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        raise MalformedPayload(
            "the feed notification body is empty; WebSub delivers the feed content"
        )
    if text.startswith(b"{"):
        payload = _load_object(text)
        if "type" in payload:
            event = payload["type"] if isinstance(payload["type"], str) else ""
            _mapping(payload.get("data"), where='"data"')
            return Notification(action="upsert", remote_id=None, event=event or hint or "")
        if "items" not in payload:
            raise MalformedPayload(
                'a JSON feed notification must be a JSON Feed ("items") or {"type", "data"}'
            )
        return Notification(action="upsert", remote_id=None, event=hint or "websub")
    if not text.startswith(b"<"):
        raise MalformedPayload("the feed notification body is neither XML (RSS/Atom) nor JSON")
    return Notification(action="upsert", remote_id=None, event=hint or "websub")
