"""The anonymous blog webhook endpoint: verify, deduplicate, queue the import, answer 202.

Webhook endpoint (anonymous; the signature is the authentication)::

    POST {site}/++api++/@blog-webhook/{source_id}[?event=post.published]
    POST {site}/@blog-webhook/{source_id}[?event=...]     # any Accept header, or none
    GET  {site}/@blog-webhook/{source_id}?hub.mode=subscribe&hub.topic=...&hub.challenge=...

Answers (always JSON with ``type`` and ``message`` on errors; nothing is written on errors):

=====  =====================================================================
202    ``{"delivery": id, "task": id, ...}``: verified, recorded, import queued
202    ``{"ignored": true, "delivery": id, "event": ...}``: an event we do not import
200    ``{"duplicate": true, "delivery": id, ...}``: seen before, nothing queued
400    ``MalformedPayload``: signed, but not a payload of the source's platform
401    ``SignatureMissing`` / ``SignatureInvalid`` / ``SignatureStale`` / ``SignatureMalformed``
404    ``UnknownSource``
413    ``PayloadTooLarge``: over ``PLONECELERY_WEBHOOK_MAX_BYTES`` (default 1 MB)
=====  =====================================================================

The endpoint is a plain browser view named ``@blog-webhook``, not a plone.rest service:
plone.rest dispatches services on the ``Accept`` header, and real senders (Ghost) send none. A
view answers whatever the Accept header, and under ``++api++`` plone.rest's traverser falls back
to it when no service has the name.

The Manager services live beside it: :mod:`.sources` and :mod:`.deliveries`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import parse_qsl
from urllib.parse import urlencode

import transaction
from plone.protect.interfaces import IDisableCSRFProtection
from Products.Five.browser import BrowserView
from zope.interface import alsoProvides

from collective.plonecelery.blogs import deliveries
from collective.plonecelery.blogs import storage
from collective.plonecelery.blogs import subscriptions
from collective.plonecelery.blogs.config import SourceConfig
from collective.plonecelery.blogs.verify import events
from collective.plonecelery.blogs.verify import removals
from collective.plonecelery.blogs.verify import signatures

from ..config import addon_settings
from ..exceptions import ServiceError
from .guard import content_type
from .service import PathParams

logger = logging.getLogger(__name__)

_SIGNATURE_ERROR_TYPES = {
    "missing": "SignatureMissing",
    "invalid": "SignatureInvalid",
    "stale": "SignatureStale",
    "malformed": "SignatureMalformed",
}
#: Schemes whose senders verify intent with a GET (WebSub hubs; unsigned hubs use 'none').
_WEBSUB_SCHEMES = ("websub", "none")


def max_body_bytes(environ=None) -> int:
    """The body size limit: ``PLONECELERY_WEBHOOK_MAX_BYTES`` or 1 MB.

    >>> max_body_bytes({"PLONECELERY_WEBHOOK_MAX_BYTES": "2048"})
    2048
    """
    return addon_settings(environ).webhook_max_bytes


def request_headers(request) -> dict[str, str]:
    """The request's HTTP headers, lower-case names (``webhook-id``, ``x-ghost-signature``)."""
    headers = {}
    for key, value in request.environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            headers[key.replace("_", "-").lower()] = value
    if "content-type" in headers:
        headers["content-type"] = content_type(request.environ)
    return headers


def read_body(request, *, limit: int) -> bytes:
    """The raw request body; ``ServiceError`` 413 if it is (or claims to be) over ``limit``."""
    declared = request.environ.get("CONTENT_LENGTH") or ""
    if declared.strip().isdigit() and int(declared) > limit:
        raise _too_large(limit)
    stdin = request.stdin
    if stdin is None:
        return b""
    try:
        stdin.seek(0)
    except (AttributeError, OSError):
        pass
    # Read one byte more than allowed: a body without (or with a lying) Content-Length is
    # refused as soon as it proves too long, without reading the rest into memory.
    body = stdin.read(limit + 1)
    if len(body) > limit:
        raise _too_large(limit)
    return body


def _too_large(limit: int) -> ServiceError:
    return ServiceError(
        413,
        "PayloadTooLarge",
        f"the body is larger than {limit} bytes (PLONECELERY_WEBHOOK_MAX_BYTES)",
    )


#: Schemes whose delivery id tells deliveries apart: a sender's id (standard-webhooks) or a
#: signed timestamp (ghost). The others sign the body alone.
_DISTINCT_SCHEMES = ("standard-webhooks", "ghost")
_GITHUB_DELIVERY = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def delivery_identity(
    config: SourceConfig,
    *,
    verified,
    event: str,
    headers: dict[str, str],
    query_string: str = "",
) -> tuple[str, float | None]:
    """The delivery id of a verified request and the repeat window it needs (or ``None``).

    Standard Webhooks: the sender's ``webhook-id``. GitHub: ``X-GitHub-Delivery`` when sent.
    Otherwise a digest of the signed material (body, and Ghost's timestamp), the event
    (query parameter, header or body) and the query string: the same body sent for another
    event is another delivery. Schemes without a sender's id or signed timestamp cannot tell
    a retry from a new notification with the same body, hence a short repeat window
    (``PLONECELERY_DELIVERY_REPEAT_WINDOW``). Ids are per source (see ``blogs.deliveries``).
    """
    if config.scheme == "standard-webhooks":
        return verified.delivery_id, None
    github_id = headers.get("x-github-delivery", "").strip()
    if config.scheme == "github" and _GITHUB_DELIVERY.fullmatch(github_id):
        return f"github:{github_id}", None
    query = urlencode(sorted(parse_qsl(query_string, keep_blank_values=True)))
    material = "\n".join((verified.delivery_id, event, query))
    digest = hashlib.sha256(material.encode("utf-8")).hexdigest()
    window = None if config.scheme in _DISTINCT_SCHEMES else deliveries.repeat_window()
    return digest, window


def _query(request) -> dict[str, str]:
    # Only the query string: a form-encoded body must not supply (or hide) these values.
    parsed = parse_qs(request.environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


class BlogWebhook(PathParams, BrowserView):
    """Receive a blog platform's webhook: verify, deduplicate, queue the import, answer 202."""

    def __call__(self):
        method = self.request.get("REQUEST_METHOD", "GET").upper()
        source_id = self.params[0] if len(self.params) == 1 else ""
        try:
            if method == "POST":
                return self._json(*self._receive(source_id))
            if method == "GET":
                return self._verify_intent(source_id)
            raise ServiceError(
                405, "MethodNotAllowed", "POST webhooks here (GET only for WebSub verification)"
            )
        except ServiceError as exc:
            # Whatever happened before the error is thrown away: nothing is written.
            transaction.doom()
            logger.warning(
                "Blog webhook refused (%s %s) for source %r from %s: %s",
                exc.status,
                exc.type,
                source_id,
                self.request.getClientAddr(),
                exc.message,
            )
            if exc.status == 405:
                self.request.response.setHeader("Allow", "POST, GET")
            return self._json(exc.status, {"type": exc.type, "message": exc.message})

    def _receive(self, source_id: str) -> tuple[int, dict[str, Any]]:
        # The anonymous POST writes to the ZODB (delivery log, task outbox): plone.protect's
        # CSRF check does not apply, the signature authenticates the sender.
        alsoProvides(self.request, IDisableCSRFProtection)
        config = self._source(source_id)
        body = read_body(self.request, limit=max_body_bytes())
        headers = request_headers(self.request)
        query = _query(self.request)
        verified = self._verify(config, body=body, headers=headers)
        if verified is None:
            return 200, {"ignored": True, "event": "ping", "source": config.id}
        try:
            note = events.parse_notification(
                kind=config.kind, body=body, headers=headers, event_hint=query.get("event")
            )
        except events.MalformedPayload as exc:
            raise ServiceError(400, "MalformedPayload", str(exc)) from None
        if (note.remote_id or "").startswith(events.PAGE_PREFIX) and not config.ghost_pages:
            note = events.Notification(action=None, remote_id=None, event=note.event)
        delivery_id, window = delivery_identity(
            config,
            verified=verified,
            event=note.event,
            headers=headers,
            query_string=self.request.environ.get("QUERY_STRING", ""),
        )
        answer = {"delivery": delivery_id, "source": config.id, "event": note.event}
        status = "queued" if note.action else "ignored"
        fresh = deliveries.record(
            delivery_id=delivery_id,
            source_id=config.id,
            event=note.event,
            remote_id=note.remote_id,
            status=status,
            repeat_window=window,
        )
        if not fresh:
            previous = deliveries.get(delivery_id, source_id=config.id) or {}
            logger.info("Duplicate webhook delivery %s for source %r", delivery_id, config.id)
            return 200, {
                **answer,
                "duplicate": True,
                "task": previous.get("task_id"),
                "status": previous.get("status"),
            }
        if note.action is None:
            logger.info("Ignored webhook event %r for source %r", note.event, config.id)
            return 202, {**answer, "ignored": True, "task": None}
        from collective.plonecelery.blogs import importer

        # A signed body that shows the post deleted/unpublished is not confirmed by a fetch.
        gone = (
            None
            if config.scheme == "none"
            else removals.shown_gone(kind=config.kind, body=body, action=note.action)
        )
        extra = {"shown_gone": True, "as_of": gone.as_of} if gone is not None else {}
        result = importer.queue_import(
            config,
            remote_id=note.remote_id,
            action=note.action,
            delivery_id=delivery_id,
            **extra,
        )
        deliveries.update(delivery_id, source_id=config.id, status="queued", task_id=result.id)
        return 202, {
            **answer,
            "task": result.id,
            "action": note.action,
            "remote_id": note.remote_id,
        }

    def _source(self, source_id: str) -> SourceConfig:
        try:
            return storage.get_source(source_id)
        except storage.UnknownSource:
            raise ServiceError(
                404, "UnknownSource", f"no blog source {source_id!r} here; check the webhook URL"
            ) from None

    def _verify(self, config: SourceConfig, *, body: bytes, headers: dict) -> Any:
        try:
            if config.websub:
                return self._verify_own_subscription(config, body=body, headers=headers)
            return signatures.verify(
                scheme=config.scheme,
                secret=config.secret,
                body=body,
                headers=headers,
                tolerance=config.tolerance,
                header_name=config.header_name or None,
            )
        except signatures.SignatureError as exc:
            if exc.reason == "missing" and _is_woocommerce_ping(config, body):
                # WooCommerce posts an unsigned 'webhook_id=<n>' ping when a webhook is
                # created and wants a 2xx: answer it, write and queue nothing.
                return None
            raise ServiceError(401, _SIGNATURE_ERROR_TYPES[exc.reason], exc.message) from None
        except ValueError as exc:
            # The source itself is unusable (e.g. an empty secret): a configuration error.
            logger.error("Blog source %r cannot verify webhooks: %s", config.id, exc)
            raise ServiceError(
                500, "SourceMisconfigured", f"source {config.id!r} is misconfigured: {exc}"
            ) from None

    def _verify_own_subscription(self, config: SourceConfig, *, body: bytes, headers: dict):
        """A notification of the add-on's own subscription: signed with its secret (or the
        one of a renewal not verified yet)."""
        secrets = subscriptions.secrets_for(config.id)
        if not secrets:
            raise signatures.SignatureError(
                "invalid", "no verified WebSub subscription of this source signs notifications"
            )
        for secret in secrets:
            try:
                return signatures.verify(
                    scheme="websub",
                    secret=secret,
                    body=body,
                    headers=headers,
                    header_name=config.header_name or None,
                )
            except signatures.SignatureError as exc:
                error = exc
        raise error

    def _verify_intent(self, source_id: str):
        """WebSub verification of intent: echo ``hub.challenge`` if the topic is ours."""
        query = _query(self.request)
        mode, topic = query.get("hub.mode", ""), query.get("hub.topic", "").strip()
        if subscriptions.get(source_id) is not None:
            # The add-on's own subscription (also of a removed source, being unsubscribed).
            return self._verify_own_intent(source_id, mode=mode, topic=topic, query=query)
        config = self._source(source_id)
        if config.websub or config.scheme not in _WEBSUB_SCHEMES or topic != config.api_url:
            raise ServiceError(
                404,
                "NotSubscribed",
                "no WebSub subscription for this topic on this source",
            )
        response = self.request.response
        response.setHeader("Content-Type", "text/plain; charset=utf-8")
        response.setHeader("X-Content-Type-Options", "nosniff")
        if mode == "denied":
            logger.warning(
                "WebSub hub denied the subscription of source %r: %s",
                config.id,
                query.get("hub.reason", "")[:200],
            )
            response.setStatus(200)
            return ""
        challenge = _challenge(mode, query)
        logger.info("WebSub %s verified for source %r", mode, config.id)
        response.setStatus(200)
        return challenge

    def _verify_own_intent(self, source_id: str, *, mode: str, topic: str, query: dict) -> str:
        """Confirm a subscribe/unsubscribe we asked for (and record it), or a denial of it."""
        # The hub's anonymous GET records the outcome: no CSRF check applies to it.
        alsoProvides(self.request, IDisableCSRFProtection)
        response = self.request.response
        not_ours = ServiceError(
            404, "NotSubscribed", f"no pending WebSub {mode or 'request'} for this topic"
        )
        if mode == "denied":
            reason = query.get("hub.reason", "")[:200]
            if not subscriptions.deny(source_id, topic=topic, reason=reason):
                raise not_ours
            logger.warning("WebSub hub denied the subscription of %r: %s", source_id, reason)
            response.setStatus(200)
            response.setHeader("Content-Type", "text/plain; charset=utf-8")
            return ""
        challenge = _challenge(mode, query)
        lease = query.get("hub.lease_seconds", "").strip()
        if mode == "subscribe" and lease and not (lease.isascii() and lease.isdigit()):
            raise ServiceError(
                400, "BadRequest", f"hub.lease_seconds must be whole seconds, not {lease[:40]!r}"
            )
        lease_seconds = int(lease) if lease and mode == "subscribe" else None
        if not subscriptions.verify(source_id, mode=mode, topic=topic, lease_seconds=lease_seconds):
            raise not_ours
        logger.info(
            "WebSub %s of %r verified by the hub (lease %s s)", mode, source_id, lease_seconds
        )
        response.setStatus(200)
        response.setHeader("Content-Type", "text/plain; charset=utf-8")
        response.setHeader("X-Content-Type-Options", "nosniff")
        return challenge

    def _json(self, status: int, data: dict[str, Any]) -> str:
        response = self.request.response
        response.setStatus(status)
        response.setHeader("Content-Type", "application/json")
        return json.dumps(data)


def _challenge(mode: str, query: dict[str, str]) -> str:
    """The ``hub.challenge`` of a verification of intent; 404 when it is not one."""
    challenge = query.get("hub.challenge", "")
    if mode not in ("subscribe", "unsubscribe") or not challenge:
        raise ServiceError(
            404,
            "NotSubscribed",
            "a verification of intent needs hub.mode=subscribe|unsubscribe and hub.challenge",
        )
    return challenge


def _is_woocommerce_ping(config: SourceConfig, body: bytes) -> bool:
    # Unsigned: look at the bytes only, never parse an unauthenticated body.
    return config.kind == "wordpress" and events.is_woocommerce_ping(body)
