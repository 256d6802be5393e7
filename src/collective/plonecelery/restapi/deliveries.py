"""``@blog-deliveries``: the delivery log, for Managers.

::

    GET @blog-deliveries?source=...&limit=100   {"items": [...], "items_total": n,
                                                 "log_size": entries in the log}
"""

from __future__ import annotations

from ..blogs import deliveries
from ..blogs import storage
from ..exceptions import ServiceError
from .service import ManagerService


class DeliveriesGet(ManagerService):
    """``GET @blog-deliveries?source=...&limit=...``: the delivery log, newest first."""

    def handle(self):
        self.expect_params(0)
        source_id = self.query("source") or None
        if source_id:
            storage.get_source(source_id, portal=self.context)  # 404 for an unknown source
        try:
            limit = int(self.query("limit", "100"))
        except (TypeError, ValueError):
            raise ServiceError(400, "BadRequest", "limit must be an integer") from None
        items = deliveries.list_deliveries(
            source_id=source_id, limit=max(0, min(limit, 1000)), portal=self.context
        )
        return {
            "@id": f"{self.context.absolute_url()}/@blog-deliveries",
            "items": items,
            "items_total": len(items),
            "log_size": deliveries.count(portal=self.context),
        }
