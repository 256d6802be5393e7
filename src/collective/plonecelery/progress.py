"""Progress of a running task, for the person who queued it.

Inside a task, call :func:`report_progress` as work gets done::

    from collective.plonecelery import report_progress, task

    @task()
    def rebuild(context, uids):
        for done, uid in enumerate(uids, 1):
            ...
            report_progress(done, len(uids), message=f"rebuilt {uid}")

The task's result in the result backend then has state ``PROGRESS`` and the meta
``{"done", "total", "percent", "message"}`` (Celery's ``update_state``), until the task
ends and Celery stores its result. ``GET @celery-tasks/<id>`` shows it to the user who
queued the task (and to Managers), whether or not the task reports progress.

Whom to show a task to is in its id (:mod:`.taskids`): nothing is stored per task for
it, in the request or in the worker. A task whose id was chosen by the caller
(``task_id=``) has no such id: its first progress report stores, under ``<id>.owner``,
who queued it and on which site.
"""

from __future__ import annotations

import logging

from celery import current_task
from celery.backends.base import DisabledBackend

from .results import OWNER_SUFFIX
from .taskids import is_owner

logger = logging.getLogger(__name__)

#: The state of a task that reported progress and has not ended.
PROGRESS = "PROGRESS"


def owner_id(task_id: str) -> str:
    """The result-backend id of the record naming who queued ``task_id``."""
    return f"{task_id}{OWNER_SUFFIX}"


def progress_meta(done: int, total: int | None, message: str | None = None) -> dict:
    """``{"done", "total", "percent", "message"}``; percent is None without a total."""
    percent = round(100.0 * done / total, 1) if total else None
    return {"done": done, "total": total, "percent": percent, "message": message}


def report_progress(done: int, total: int | None, message: str | None = None) -> bool:
    """Say how far the running task has got: ``done`` of ``total`` (units of your choosing).

    Stored in the result backend with state ``PROGRESS``. Returns False, and does
    nothing, outside a task or without a result backend (so a task can call it
    unconditionally, also when it is called as a plain function).

    >>> report_progress(3, 10, message="page 3")  # doctest: +SKIP
    True
    """
    task = current_task
    request = getattr(task, "request", None)
    task_id = getattr(request, "id", None)
    if task is None or task_id is None or isinstance(task.backend, DisabledBackend):
        return False
    if not getattr(request, "plonecelery_owner_stored", False):
        envelope = task.envelope() if hasattr(task, "envelope") else None
        envelope = envelope or {}
        if not is_owner(task_id, user=envelope.get("user"), site=envelope.get("site") or ""):
            _store_owner(task, task_id, envelope)
        request.plonecelery_owner_stored = True
    task.update_state(state=PROGRESS, meta=progress_meta(done, total, message))
    return True


def stored_owner_is(backend, task_id: str, *, user: str | None, site: str) -> bool:
    """Whether the owner record of ``task_id`` (see :func:`_store_owner`) names ``user``."""
    owner = backend.get_task_meta(owner_id(task_id)).get("result")
    return isinstance(owner, dict) and (owner.get("user"), owner.get("site")) == (user, site)


def _store_owner(task, task_id: str, envelope: dict) -> None:
    """For an id that does not name its owner: who queued the task, beside its result."""
    task.backend.store_result(
        owner_id(task_id),
        {"user": envelope.get("user"), "site": envelope.get("site"), "task": task.name},
        "SUCCESS",
    )
