"""What the Manager services share: path parameters, JSON errors with type and message.

Each service family has its module (:mod:`.sources`, :mod:`.deliveries`) with one class
per verb; the anonymous webhook endpoint is :mod:`.webhook`.
"""

from __future__ import annotations

from typing import Any

import transaction
from plone.protect.interfaces import IDisableCSRFProtection
from plone.restapi.deserializer import json_body
from plone.restapi.services import Service
from zope.interface import alsoProvides
from zope.interface import implementer
from zope.publisher.interfaces import IPublishTraverse

from ..blogs import storage
from ..blogs import subscriptions
from ..blogs.config import SourceConfig
from ..blogs.storage import webhook_urls
from ..exceptions import ServiceError


@implementer(IPublishTraverse)
class PathParams:
    """Mixin: the path segments after the view's name land in ``self.params``."""

    def __init__(self, context, request):
        super().__init__(context, request)
        self.params: list[str] = []

    def publishTraverse(self, request, name):
        self.params.append(name)
        return self


#: Keys GET adds to a source that are not fields: ignored when sent back.
_READ_ONLY = ("@id", "webhook_urls", "paused", "websub_state")


class ManagerService(PathParams, Service):
    """Base of the Manager services: path parameters, JSON errors with type and message."""

    def reply(self):
        try:
            return self.handle()
        except ServiceError as exc:
            error = exc
        except storage.UnknownSource as exc:
            error = ServiceError(404, "NotFound", str(exc))
        except ValueError as exc:
            error = ServiceError(400, "BadRequest", str(exc))
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
        # Set by the worker when the blog asked us to stop (a long 429), else null.
        data["paused"] = storage.pause_info(config.id, portal=portal)
        # The add-on's own WebSub subscription (no secret): status, hub, expiry, last error.
        data["websub_state"] = subscriptions.info(config.id, portal=portal)
        return data

    def expect_params(self, *counts: int) -> None:
        if len(self.params) not in counts:
            raise ServiceError(
                404, "NotFound", f"unknown path /{'/'.join(self.params)} under this service"
            )

    def query(self, name: str, default: str | None = None) -> str | None:
        """The query (or form) parameter ``name`` as one string; ``default`` when absent.

        Zope's form turns a repeated parameter into a list and ``name:record`` into a record:
        a 400 BadRequest here, not a ``TypeError`` (a 500) in the service.
        """
        value = self.request.form.get(name, default)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # Zope's ':int' and ':float' converters
        raise ServiceError(400, "BadRequest", f"give the parameter {name!r} once, as plain text")

    def write_request(self) -> None:
        alsoProvides(self.request, IDisableCSRFProtection)

    def body(self) -> dict[str, Any]:
        """The JSON body, without the read-only keys GET adds (so GET output can be sent back)."""
        try:
            data = json_body(self.request)
        except Exception as exc:  # plone.restapi raises DeserializationError
            raise ServiceError(
                400, "BadRequest", f"the body must be a JSON object: {exc}"
            ) from None
        return {key: value for key, value in data.items() if key not in _READ_ONLY}
