"""``@celery-status`` (Managers) and ``@@plonecelery-metrics`` (Prometheus; Managers, or
a scraper with ``PLONECELERY_METRICS_TOKEN``).

::

    GET ++api++/@celery-status   {"workers": {"alive": 1, ...}, "broker": {"reachable":
                                  true, "queues": [...]}, "outbox": {...}, "dead_letters": 0}
    GET @@plonecelery-metrics    Authorization: Bearer <token>   (text/plain; version=0.0.4)
"""

from __future__ import annotations

import hmac

from AccessControl import getSecurityManager
from Products.Five.browser import BrowserView

from ..app import app
from ..config import addon_settings
from ..operations import metrics
from ..operations import status
from .service import ManagerService


class StatusGet(ManagerService):
    """``GET @celery-status``: workers, queue lengths, outbox and dead letters."""

    def handle(self):
        self.expect_params(0)
        return {
            "@id": f"{self.context.absolute_url()}/@celery-status",
            **status.collect(db=self.context._p_jar.db(), app=app),
        }


class Metrics(BrowserView):
    """The Prometheus text endpoint. Anonymous scrapers need the bearer token."""

    def __call__(self):
        response = self.request.response
        if not self.allowed():
            response.setStatus(401)
            response.setHeader("WWW-Authenticate", 'Bearer realm="plonecelery-metrics"')
            response.setHeader("Content-Type", "text/plain; charset=utf-8")
            return "Unauthorized: log in as a Manager or send Authorization: Bearer <token>\n"
        body = metrics.render(status.collect(db=self.context._p_jar.db(), app=app))
        response.setHeader("Content-Type", metrics.CONTENT_TYPE_LATEST)
        response.setHeader("Cache-Control", "no-store")
        return body

    def allowed(self) -> bool:
        token = addon_settings().metrics_token
        sent = self.request.getHeader("Authorization") or ""
        if token and sent.startswith("Bearer "):
            return hmac.compare_digest(sent[7:].strip().encode(), token.encode())
        return bool(getSecurityManager().checkPermission("Manage portal", self.context))
