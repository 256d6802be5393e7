"""``@celery-tasks`` (recent tasks, one task's progress) and ``@celery-backfills``.

::

    GET @celery-tasks?b_start=0&b_size=25&state=FAILURE&name=...   Managers: recent tasks
        {"items": [...], "items_total": n, "batching": {...}}       from the result backend
    GET @celery-tasks/<task id>      the user who queued it, and Managers (others: 404)
        {"task_id", "state", "progress": {"done", "total", "percent", "message"}|null,
         "result", "error", "date_done"}
    GET @celery-backfills[?source=<id>]   Managers: {"items": [{"source_id", "run", "pages",
        "total", "done", "failed", "running", "started", "updated"}]}

The listing pages in the database (SQL ``LIMIT``/``OFFSET``, newest first), so a backend
holding 10,000 results never loads them whole; it needs Celery's database result backend
(``db+...``, the add-on's default). Key-value backends (Redis and others) keep no order
to page by: there the listing answers 501 ``NotSupported``, ``@celery-tasks/<id>`` works.
Filtering by task name needs Celery's extended results (``result_extended``, on by default
in the add-on's configuration).
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from AccessControl import getSecurityManager
from celery import states
from plone import api

from ..app import app
from ..blogs import backfills
from ..exceptions import ServiceError
from ..progress import PROGRESS
from ..progress import owner_id
from .service import ManagerService

#: Default and largest page of the listing (plone.restapi's default page is 25 too).
DEFAULT_SIZE = 25
MAX_SIZE = 500


def _json_safe(value):
    """The value as JSON would carry it: exceptions and other objects as their text."""
    return json.loads(json.dumps(value, default=repr))


def _iso(value) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else value


def task_data(task_id: str, meta: dict) -> dict:
    """What the services show of one task: state, progress, result or error."""
    state = meta.get("status") or states.PENDING
    info = meta.get("result")
    data = {
        "task_id": task_id,
        "state": state,
        "progress": None,
        "result": None,
        "error": None,
        "date_done": _iso(meta.get("date_done")),
    }
    for key in ("name", "worker", "retries", "queue"):
        if meta.get(key) is not None:
            data[key] = meta[key]
    if state == PROGRESS and isinstance(info, dict):
        data["progress"] = {key: info.get(key) for key in ("done", "total", "percent", "message")}
    elif state in states.EXCEPTION_STATES and info is not None:
        data["error"] = f"{type(info).__name__}: {info}" if isinstance(info, Exception) else info
    elif state == states.SUCCESS:
        data["result"] = _json_safe(info)
    return data


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
            owner = backend.get_task_meta(owner_id(task_id)).get("result")
            user = api.user.get_current().getId()
            site = "/".join(self.context.getPhysicalPath())
            if not isinstance(owner, dict) or (owner.get("user"), owner.get("site")) != (
                user,
                site,
            ):
                # 404, not 403: whether a task of someone else exists is not ours to say.
                raise ServiceError(404, "NotFound", f"No task {task_id!r} of yours here.")
        meta = backend.get_task_meta(task_id)
        return {
            "@id": f"{self.context.absolute_url()}/@celery-tasks/{task_id}",
            **task_data(task_id, meta),
        }

    def listing(self) -> dict:
        from celery.backends.database import DatabaseBackend
        from celery.backends.database import session_cleanup

        form = self.request.form
        try:
            start = max(0, int(form.get("b_start", 0)))
            size = min(MAX_SIZE, max(1, int(form.get("b_size", DEFAULT_SIZE))))
        except ValueError:
            raise ServiceError(400, "BadRequest", "b_start and b_size are whole numbers") from None
        state, name = form.get("state"), form.get("name")
        backend = app.backend
        if not isinstance(backend, DatabaseBackend):
            raise ServiceError(
                501,
                "NotSupported",
                f"Listing tasks needs Celery's database result backend (db+...); this site "
                f"uses {type(backend).__name__}. GET @celery-tasks/<task id> works on it.",
            )
        model = backend.task_cls
        if name and not hasattr(model, "name"):
            raise ServiceError(
                400,
                "BadRequest",
                "Filtering by task name needs CELERY_RESULT_EXTENDED=true (Celery stores "
                "task names then).",
            )
        session = backend.ResultSession()
        with session_cleanup(session):
            query = session.query(model).filter(~model.task_id.like("%.owner"))
            if state:
                query = query.filter(model.status == state.upper())
            if name:
                query = query.filter(model.name == name)
            total = query.count()
            rows = (
                query.order_by(model.date_done.desc(), model.id.desc())
                .offset(start)
                .limit(size)
                .all()
            )
            items = [self.row(backend, row) for row in rows]
        base = f"{self.context.absolute_url()}/@celery-tasks"
        return {
            "@id": self.page_url(base, start, size),
            "items": items,
            "items_total": total,
            **self.batching(base, start=start, size=size, total=total),
        }

    def row(self, backend, row) -> dict:
        data = row.to_dict()
        data.pop("stamps", None)
        data["result"] = backend._decode_stored_result(data["result"])
        # Errors as exceptions again (they are stored as type, module and message).
        data = task_data(row.task_id, backend.meta_from_decoded(data))
        data["@id"] = f"{self.context.absolute_url()}/@celery-tasks/{row.task_id}"
        return data

    def page_url(self, base: str, start: int, size: int) -> str:
        query = {
            key: self.request.form[key] for key in ("state", "name") if self.request.form.get(key)
        }
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
        items = backfills.summarize(
            source_id=self.request.form.get("source") or None, portal=self.context
        )
        return {
            "@id": f"{self.context.absolute_url()}/@celery-backfills",
            "items": items,
            "items_total": len(items),
        }
