"""``@celery-tasks`` (recent tasks, one task's progress) and ``@celery-backfills``.

::

    GET @celery-tasks?b_start=0&b_size=25&state=FAILURE&name=...   Managers: recent tasks
        {"items": [...], "items_total": n, "batching": {...}}       from the result backend
    GET @celery-tasks/<task id>      the user who queued it, and Managers (others: 404;
        whose task it is, is in its id: see :mod:`..progress`)
        {"task_id", "state", "progress": {"done", "total", "percent", "message"}|null,
         "result", "error", "date_done"}
    GET @celery-backfills[?source=<id>]   Managers: {"items": [{"source_id", "run", "pages",
        "total", "done", "failed", "running", "started", "updated"}]}

The listing (:mod:`..operations.recent_tasks`) pages newest first in the database (SQL
``LIMIT``/``OFFSET``) or in the add-on's Redis backend's index of task ids, so a backend
holding 10,000 results never loads them whole. Other backends keep no order to page by:
there the listing answers 501 ``NotSupported``, ``@celery-tasks/<id>`` works.
Filtering by task name needs Celery's extended results (``result_extended``, on by default
in the add-on's configuration).
"""

from __future__ import annotations

from urllib.parse import urlencode

from AccessControl import getSecurityManager
from plone import api

from ..app import app
from ..blogs import backfills
from ..exceptions import ServiceError
from ..operations import recent_tasks
from ..progress import stored_owner_is
from ..taskids import is_owner
from .service import ManagerService

#: Default and largest page of the listing (plone.restapi's default page is 25 too).
DEFAULT_SIZE = 25
MAX_SIZE = 500
#: Past this, b_start is no offset a database takes (SQL OFFSET is a 64-bit integer).
MAX_START = 2**62


class TasksGet(ManagerService):
    """``GET @celery-tasks`` (Managers) and ``GET @celery-tasks/<id>`` (its user, Managers)."""

    def handle(self):
        self.expect_params(0, 1)
        if api.user.is_anonymous():
            raise ServiceError(401, "Unauthorized", "Log in to see tasks.")
        manager = bool(getSecurityManager().checkPermission("Manage portal", self.context))
        if self.params:
            return self.one(self.params[0], manager=manager)
        if not manager:
            raise ServiceError(403, "Forbidden", "Only Managers may list the tasks.")
        return self.listing()

    def one(self, task_id: str, *, manager: bool) -> dict:
        if task_id.endswith(".owner"):
            raise ServiceError(404, "NotFound", f"No task {task_id!r} here.")
        backend = app.backend
        if not manager:
            user = api.user.get_current().getId()
            site = "/".join(self.context.getPhysicalPath())
            if not is_owner(task_id, user=user, site=site) and not stored_owner_is(
                backend, task_id, user=user, site=site
            ):
                # 404, not 403: whether a task of someone else exists is not ours to say.
                raise ServiceError(404, "NotFound", f"No task {task_id!r} of yours here.")
        meta = backend.get_task_meta(task_id)
        return {
            "@id": f"{self.context.absolute_url()}/@celery-tasks/{task_id}",
            **recent_tasks.task_data(task_id, meta),
        }

    def listing(self) -> dict:
        try:
            start = max(0, int(self.query("b_start", "0")))
            size = min(MAX_SIZE, max(1, int(self.query("b_size", str(DEFAULT_SIZE)))))
        except ValueError:
            raise ServiceError(400, "BadRequest", "b_start and b_size are whole numbers") from None
        if start > MAX_START:
            # Found by schemathesis: SQLite's OverflowError was a 500.
            raise ServiceError(400, "BadRequest", f"b_start is at most {MAX_START}")
        found = recent_tasks.page(
            app, start=start, size=size, state=self.query("state"), name=self.query("name")
        )
        if found is None:
            raise ServiceError(
                501,
                "NotSupported",
                "Listing tasks needs Celery's database result backend (db+...) or Redis "
                f"(redis://); this site "
                f"uses {type(app.backend).__name__}. GET @celery-tasks/<task id> works on it.",
            )
        items, total = found
        portal_url = self.context.absolute_url()
        for item in items:
            item["@id"] = f"{portal_url}/@celery-tasks/{item['task_id']}"
        base = f"{portal_url}/@celery-tasks"
        return {
            "@id": self.page_url(base, start, size),
            "items": items,
            "items_total": total,
            **self.batching(base, start=start, size=size, total=total),
        }

    def page_url(self, base: str, start: int, size: int) -> str:
        query = {key: self.query(key) for key in ("state", "name") if self.query(key)}
        query.update(b_start=start, b_size=size)
        return f"{base}?{urlencode(query)}"

    def batching(self, base: str, *, start: int, size: int, total: int) -> dict:
        """plone.restapi's ``batching`` links, present only when there is more than one page."""
        if total <= size:
            return {}
        last = ((total - 1) // size) * size
        links = {
            "@id": self.page_url(base, start, size),
            "first": self.page_url(base, 0, size),
            "last": self.page_url(base, last, size),
        }
        if start + size < total:
            links["next"] = self.page_url(base, start + size, size)
        if start > 0:
            links["prev"] = self.page_url(base, max(0, start - size), size)
        return {"batching": links}


class BackfillsGet(ManagerService):
    """``GET @celery-backfills``: every backfill run in the delivery log, with done / total."""

    def handle(self):
        self.expect_params(0)
        items = backfills.summarize(source_id=self.query("source") or None, portal=self.context)
        return {
            "@id": f"{self.context.absolute_url()}/@celery-backfills",
            "items": items,
            "items_total": len(items),
        }
