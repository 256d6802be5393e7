"""HTTP side of blog webhooks: the anonymous webhook endpoint and the Manager-only REST API.

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

REST API (``cmf.ManagePortal``; secrets are write-only, shown as ``{"set": true/false}``)::

    GET    @blog-sources                 {"items": [...]}
    POST   @blog-sources                 201, the new source
    GET    @blog-sources/{id}
    PATCH  @blog-sources/{id}            200, the changed source (absent/empty secrets kept)
    DELETE @blog-sources/{id}            204
    POST   @blog-sources/{id}/test       202 {"task": id}: a worker fetches one post
    GET    @blog-sources/{id}/test/{task}     {"state": "SUCCESS", "result": {"ok": ...}}
    POST   @blog-sources/{id}/backfill   202 {"task": id}: a worker imports every post
    GET    @blog-deliveries?source=...&limit=100   {"items": [...], "items_total": n,
                                                    "log_size": entries in the log}
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any
from urllib.parse import parse_qs

import transaction
from plone.protect.interfaces import IDisableCSRFProtection
from plone.restapi.deserializer import json_body
from plone.restapi.services import Service
from Products.Five.browser import BrowserView
from zope.interface import alsoProvides
from zope.interface import implementer
from zope.publisher.interfaces import IPublishTraverse

from collective.plonecelery.sources import storage
from collective.plonecelery.sources.config import SourceConfig
from collective.plonecelery.webhooks import deliveries
from collective.plonecelery.webhooks import events
from collective.plonecelery.webhooks import guard
from collective.plonecelery.webhooks import signatures

logger = logging.getLogger("collective.plonecelery")

DEFAULT_MAX_BYTES = 1024 * 1024
_SIGNATURE_ERROR_TYPES = {
    "missing": "SignatureMissing",
    "invalid": "SignatureInvalid",
    "stale": "SignatureStale",
    "malformed": "SignatureMalformed",
}
#: Schemes whose senders verify intent with a GET (WebSub hubs; unsigned hubs use 'none').
_WEBSUB_SCHEMES = ("websub", "none")


class WebhookError(Exception):
    """A request the endpoint refuses: ``status``, JSON ``type`` and ``message``."""

    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message


def max_body_bytes(environ=None) -> int:
    """The body size limit: ``PLONECELERY_WEBHOOK_MAX_BYTES`` or 1 MB.

    >>> max_body_bytes({"PLONECELERY_WEBHOOK_MAX_BYTES": "2048"})
    2048
    """
    environ = os.environ if environ is None else environ
    value = environ.get("PLONECELERY_WEBHOOK_MAX_BYTES", "")
    if not value:
        return DEFAULT_MAX_BYTES
    try:
        limit = int(value)
    except ValueError:
        raise ValueError(
            f"PLONECELERY_WEBHOOK_MAX_BYTES={value!r} must be an integer number of bytes"
        ) from None
    if limit <= 0:
        raise ValueError("PLONECELERY_WEBHOOK_MAX_BYTES must be positive")
    return limit


def webhook_urls(portal, source_id: str) -> dict[str, str]:
    """The URLs a blog platform posts to for ``source_id`` (with and without ``++api++``)."""
    base = portal.absolute_url()
    return {
        "api": f"{base}/++api++/@blog-webhook/{source_id}",
        "plain": f"{base}/@blog-webhook/{source_id}",
    }


def request_headers(request) -> dict[str, str]:
    """The request's HTTP headers, lower-case names (``webhook-id``, ``x-ghost-signature``)."""
    headers = {}
    for key, value in request.environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            headers[key.replace("_", "-").lower()] = value
    if "content-type" in headers:
        headers["content-type"] = guard.content_type(request.environ)
    return headers


def read_body(request, *, limit: int) -> bytes:
    """The raw request body; ``WebhookError`` 413 if it is (or claims to be) over ``limit``."""
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


def _too_large(limit: int) -> WebhookError:
    return WebhookError(
        413,
        "PayloadTooLarge",
        f"the body is larger than {limit} bytes (PLONECELERY_WEBHOOK_MAX_BYTES)",
    )


def _query(request) -> dict[str, str]:
    # Only the query string: a form-encoded body must not supply (or hide) these values.
    parsed = parse_qs(request.environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


@implementer(IPublishTraverse)
class PathParams:
    """Mixin: the path segments after the view's name land in ``self.params``."""

    def __init__(self, context, request):
        super().__init__(context, request)
        self.params: list[str] = []

    def publishTraverse(self, request, name):
        self.params.append(name)
        return self


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
            raise WebhookError(
                405, "MethodNotAllowed", "POST webhooks here (GET only for WebSub verification)"
            )
        except WebhookError as exc:
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
            raise WebhookError(400, "MalformedPayload", str(exc)) from None
        delivery_id = verified.delivery_id
        answer = {"delivery": delivery_id, "source": config.id, "event": note.event}
        status = "queued" if note.action else "ignored"
        fresh = deliveries.record(
            delivery_id=delivery_id,
            source_id=config.id,
            event=note.event,
            remote_id=note.remote_id,
            status=status,
        )
        if not fresh:
            previous = deliveries.get(delivery_id) or {}
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
        from collective.plonecelery import importer

        result = importer.queue_import(
            config, remote_id=note.remote_id, action=note.action, delivery_id=delivery_id
        )
        deliveries.update(delivery_id, status="queued", task_id=result.id)
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
            raise WebhookError(
                404, "UnknownSource", f"no blog source {source_id!r} here; check the webhook URL"
            ) from None

    def _verify(self, config: SourceConfig, *, body: bytes, headers: dict) -> Any:
        try:
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
            raise WebhookError(401, _SIGNATURE_ERROR_TYPES[exc.reason], exc.message) from None
        except ValueError as exc:
            # The source itself is unusable (e.g. an empty secret): a configuration error.
            logger.error("Blog source %r cannot verify webhooks: %s", config.id, exc)
            raise WebhookError(
                500, "SourceMisconfigured", f"source {config.id!r} is misconfigured: {exc}"
            ) from None

    def _verify_intent(self, source_id: str):
        """WebSub verification of intent: echo ``hub.challenge`` if the topic is ours."""
        config = self._source(source_id)
        query = _query(self.request)
        mode, topic = query.get("hub.mode", ""), query.get("hub.topic", "").strip()
        if config.scheme not in _WEBSUB_SCHEMES or topic != config.api_url:
            raise WebhookError(
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
        challenge = query.get("hub.challenge", "")
        if mode not in ("subscribe", "unsubscribe") or not challenge:
            raise WebhookError(
                404,
                "NotSubscribed",
                "a verification of intent needs hub.mode=subscribe|unsubscribe and hub.challenge",
            )
        logger.info("WebSub %s verified for source %r", mode, config.id)
        response.setStatus(200)
        return challenge

    def _json(self, status: int, data: dict[str, Any]) -> str:
        response = self.request.response
        response.setStatus(status)
        response.setHeader("Content-Type", "application/json")
        return json.dumps(data)


def _is_woocommerce_ping(config: SourceConfig, body: bytes) -> bool:
    # Unsigned: look at the bytes only, never parse an unauthenticated body.
    return config.kind == "wordpress" and events.is_woocommerce_ping(body)


# -- REST API for Managers ------------------------------------------------------------------

#: Keys GET adds to a source that are not fields: ignored when sent back.
_READ_ONLY = ("@id", "webhook_urls")


class ApiError(Exception):
    """An error answer of the REST API."""

    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message


class _ManagerService(PathParams, Service):
    """Base of the Manager services: path parameters, JSON errors with type and message."""

    def reply(self):
        try:
            return self.handle()
        except ApiError as exc:
            error = exc
        except storage.UnknownSource as exc:
            error = ApiError(404, "NotFound", str(exc))
        except ValueError as exc:
            error = ApiError(400, "BadRequest", str(exc))
        transaction.doom()
        self.request.response.setStatus(error.status)
        return {"type": error.type, "message": error.message}

    def handle(self):
        raise NotImplementedError

    def source_data(self, config: SourceConfig) -> dict[str, Any]:
        """What the API shows of a source: no secrets, plus its URLs."""
        portal = self.context
        data = config.to_dict()
        data["@id"] = f"{portal.absolute_url()}/@blog-sources/{config.id}"
        data["webhook_urls"] = webhook_urls(portal, config.id)
        return data

    def expect_params(self, *counts: int) -> None:
        if len(self.params) not in counts:
            raise ApiError(
                404, "NotFound", f"unknown path /{'/'.join(self.params)} under this service"
            )

    def write_request(self) -> None:
        alsoProvides(self.request, IDisableCSRFProtection)

    def body(self) -> dict[str, Any]:
        """The JSON body, without the read-only keys GET adds (so GET output can be sent back)."""
        try:
            data = json_body(self.request)
        except Exception as exc:  # plone.restapi raises DeserializationError
            raise ApiError(400, "BadRequest", f"the body must be a JSON object: {exc}") from None
        return {key: value for key, value in data.items() if key not in _READ_ONLY}


class SourcesGet(_ManagerService):
    """``GET @blog-sources``, ``GET @blog-sources/{id}``, ``GET @blog-sources/{id}/test/{task}``."""

    def handle(self):
        self.expect_params(0, 1, 3)
        if len(self.params) == 3:
            return self.test_result(*self.params)
        if self.params:
            return self.source_data(storage.get_source(self.params[0], portal=self.context))
        items = [self.source_data(config) for config in storage.list_sources(portal=self.context)]
        return {
            "@id": f"{self.context.absolute_url()}/@blog-sources",
            "items": items,
            "items_total": len(items),
        }

    def test_result(self, source_id: str, action: str, task_id: str) -> dict[str, Any]:
        """The state (and, once done, the result) of a ``test`` task of this source."""
        from collective.plonecelery import importer

        storage.get_source(source_id, portal=self.context)
        if action != "test":
            raise ApiError(404, "NotFound", f"unknown path /{action}; use /test/<task id>")
        result = importer.test_source.AsyncResult(task_id)
        # With result_extended (our default) the backend knows the task's name and args:
        # only answer for tests of this very source.
        name, args = getattr(result, "name", None), getattr(result, "args", None)
        if name is not None and (
            name != importer.test_source.name or list(args or []) != [source_id]
        ):
            raise ApiError(404, "NotFound", f"task {task_id!r} is not a test of {source_id!r}")
        answer = {"task": task_id, "source": source_id, "state": result.state, "result": None}
        if result.successful():
            answer["result"] = result.result
        elif result.failed():
            answer["result"] = {
                "ok": False,
                "error": f"{type(result.result).__name__}: {result.result}",
            }
        return answer


class SourcesPost(_ManagerService):
    """``POST @blog-sources`` (add) and ``POST @blog-sources/{id}/test|backfill`` (actions)."""

    def handle(self):
        self.write_request()
        if len(self.params) == 2:
            return self.action(*self.params)
        self.expect_params(0)
        config = storage.config_from_data(self.body())
        storage.add_source(config, portal=self.context)
        self.request.response.setStatus(201)
        data = self.source_data(config)
        self.request.response.setHeader("Location", data["@id"])
        return data

    def action(self, source_id: str, name: str):
        from collective.plonecelery import importer

        config = storage.get_source(source_id, portal=self.context)
        if name == "test":
            result = importer.test_source.delay(config.id)
        elif name == "backfill":
            result = importer.queue_backfill(config)
        else:
            raise ApiError(404, "NotFound", f"unknown action {name!r}; use test or backfill")
        self.request.response.setStatus(202)
        return {"task": result.id, "source": config.id, "action": name}


class SourcesPatch(_ManagerService):
    """``PATCH @blog-sources/{id}``."""

    def handle(self):
        self.write_request()
        self.expect_params(1)
        config = storage.update_source(self.params[0], self.body(), portal=self.context)
        return self.source_data(config)


class SourcesDelete(_ManagerService):
    """``DELETE @blog-sources/{id}``."""

    def handle(self):
        self.write_request()
        self.expect_params(1)
        storage.remove_source(self.params[0], portal=self.context)
        return self.reply_no_content()


class DeliveriesGet(_ManagerService):
    """``GET @blog-deliveries?source=...&limit=...``: the delivery log, newest first."""

    def handle(self):
        self.expect_params(0)
        source_id = self.request.form.get("source") or None
        if source_id:
            storage.get_source(source_id, portal=self.context)  # 404 for an unknown source
        try:
            limit = int(self.request.form.get("limit", 100))
        except (TypeError, ValueError):
            raise ApiError(400, "BadRequest", "limit must be an integer") from None
        items = deliveries.list_deliveries(
            source_id=source_id, limit=max(0, min(limit, 1000)), portal=self.context
        )
        return {
            "@id": f"{self.context.absolute_url()}/@blog-deliveries",
            "items": items,
            "items_total": len(items),
            "log_size": deliveries.count(portal=self.context),
        }
