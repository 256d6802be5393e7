"""``@@plonecelery-taskqueue``: the "Task queue" control panel (Managers).

What :func:`collective.plonecelery.operations.status.collect` knows, for people: the
worker processes online (from their presence records, so on every broker), the queue
lengths, the outbox; and the dead letters, with show, retry and purge, one at a time or
the ticked ones. The forms post back to the view with a CSRF authenticator; each retry
and purge is logged with the acting user, as ``@celery-deadletters`` does.

Times are shown in the site's time zone (``plone.portal_timezone``).
"""

from __future__ import annotations

import logging
from datetime import UTC
from datetime import datetime
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo
from zoneinfo import ZoneInfoNotFoundError

from plone import api
from plone.protect.authenticator import check as check_authenticator
from Products.Five.browser import BrowserView
from Products.statusmessages.interfaces import IStatusMessage

from collective.plonecelery import deadletters
from collective.plonecelery.app import app
from collective.plonecelery.blogs import backfills
from collective.plonecelery.config import addon_settings
from collective.plonecelery.operations import recent_tasks
from collective.plonecelery.operations import status

from . import _

logger = logging.getLogger(__name__)

#: How many dead letters the panel lists (the REST service lists them all).
DEAD_LETTERS_SHOWN = 100
#: How many recent tasks the panel lists (``@celery-tasks`` pages through them all).
TASKS_SHOWN = 20
#: The states the recent tasks can be filtered by.
TASK_STATES = ("SUCCESS", "FAILURE", "PROGRESS", "STARTED", "RETRY", "REVOKED")
#: How many finished backfills the panel shows besides the running ones.
BACKFILLS_FINISHED_SHOWN = 5


def site_timezone():
    """The site's time zone, UTC when none is set or it is unknown."""
    name = api.portal.get_registry_record("plone.portal_timezone", default=None)
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def local_time(timestamp: float | None, tz) -> str:
    """``2026-12-03 13:05:09 CET`` for a Unix time; empty for none."""
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def age(seconds: float | None) -> str:
    """A short duration: ``12 s``, ``4 min``, ``3 h``, ``2 d``; empty for none."""
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} s"


class TaskQueueControlPanel(BrowserView):
    """The task queue control panel."""

    def __call__(self):
        if self.request.get("REQUEST_METHOD", "GET").upper() == "POST":
            self.handle_post()
            self.request.response.redirect(self.url)
            return ""
        return self.index()

    @property
    def url(self) -> str:
        return f"{self.context.absolute_url()}/@@plonecelery-taskqueue"

    @cached_property
    def tz(self):
        return site_timezone()

    @property
    def settings_timeout(self) -> float:
        """Seconds without a beat after which a worker process counts as gone."""
        return addon_settings().outbox_started_timeout

    @cached_property
    def status(self) -> dict[str, Any]:
        return status.collect(db=self.context._p_jar.db(), app=app)

    # -- what the template shows ----------------------------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        now = self.status["now"]
        rows = []
        for process in self.status["workers"]["processes"]:
            running = [{**item, "for": age(now - item["since"])} for item in process["current"]]
            rows.append(
                {
                    **process,
                    "started_local": local_time(process["started"], self.tz),
                    "last_beat_age": age(now - process["last_beat"]),
                    "current": running,
                }
            )
        return rows

    def outbox(self) -> dict[str, Any]:
        outbox = dict(self.status["outbox"])
        outbox["oldest_pending"] = age(outbox["oldest_pending_age"])
        outbox["last_relay_run_local"] = local_time(outbox["last_relay_run"], self.tz)
        return outbox

    def backfills(self) -> list[dict[str, Any]]:
        """The running backfills and the latest finished ones (the page polls for more)."""
        runs = backfills.summarize(portal=self.context)
        shown = [run for run in runs if run["running"]]
        shown += [run for run in runs if not run["running"]][:BACKFILLS_FINISHED_SHOWN]
        for run in shown:
            run["percent"] = (
                int(100 * (run["done"] + run["failed"]) / run["total"]) if run["total"] else 0
            )
        return shown

    def recent_tasks(self) -> dict[str, Any]:
        """``{"supported", "tasks", "total", "error"}``: the latest tasks matching the filter."""
        form = self.request.form
        try:
            found = recent_tasks.page(
                app,
                start=0,
                size=TASKS_SHOWN,
                state=form.get("state") or None,
                name=(form.get("name") or "").strip() or None,
            )
        except ValueError as exc:
            return {"supported": True, "tasks": [], "total": 0, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a backend that is down must not break the page
            logger.info("Recent tasks unavailable: %s", exc)
            return {
                "supported": True,
                "tasks": [],
                "total": 0,
                "error": f"{type(exc).__name__}: {exc}",
            }
        if found is None:
            return {"supported": False, "tasks": [], "total": 0, "error": None}
        items, total = found
        for item in items:
            for key, shown in (
                ("date_done", "done_local"),
                ("queued", "queued_local"),
                ("started", "started_local"),
            ):
                when = item.get(key) and datetime.fromisoformat(item[key])
                if when and when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)  # Celery stores UTC without saying so
                item[shown] = local_time(when.timestamp(), self.tz) if when else ""
        return {"supported": True, "tasks": items, "total": total, "error": None}

    def task_states(self) -> tuple[str, ...]:
        return TASK_STATES

    def dead_letters(self) -> list[dict[str, Any]]:
        letters = deadletters.list_dead_letters(self.context._p_jar)
        # Newest first: the failure someone is looking for is usually the latest.
        rows = []
        for letter in reversed(letters[-DEAD_LETTERS_SHOWN:]):
            data = letter.as_dict()
            data["failed_local"] = local_time(letter.failed, self.tz)
            data["queued_local"] = local_time(letter.queued, self.tz)
            data["call"] = _call_text(letter.args, letter.kwargs)
            rows.append(data)
        return rows

    # -- what the buttons do --------------------------------------------------------------------

    def handle_post(self) -> None:
        check_authenticator(self.request)
        form = self.request.form
        messages = IStatusMessage(self.request)
        actor = api.user.get_current().getId()
        connection = self.context._p_jar
        selected = form.get("task_ids") or []
        if isinstance(selected, str):
            selected = [selected]
        # A row's own button names its task and wins over the ticked boxes.
        for action in ("retry", "purge"):
            if form.get(f"form.buttons.{action}_one"):
                selected = [form[f"form.buttons.{action}_one"]]
                form[f"form.buttons.{action}"] = "1"
        if "form.buttons.purge_all" in form:
            removed = deadletters.purge(connection)
            logger.info("%s purged all %d dead letter(s)", actor, removed)
            messages.add(
                _(
                    "msg_dead_letters_purged",
                    default="${count} dead letter(s) removed.",
                    mapping={"count": removed},
                ),
                type="info",
            )
            return
        if not selected:
            messages.add(
                _("msg_none_selected", default="Select at least one dead letter."), type="warning"
            )
            return
        if "form.buttons.purge" in form:
            removed = self.purge(connection, selected, actor)
            messages.add(
                _(
                    "msg_dead_letters_purged",
                    default="${count} dead letter(s) removed.",
                    mapping={"count": removed},
                ),
                type="info",
            )
        elif "form.buttons.retry" in form:
            queued, errors = self.retry(connection, selected, actor)
            if queued:
                messages.add(
                    _(
                        "msg_dead_letters_retried",
                        default="Queued again as ${tasks}.",
                        mapping={"tasks": ", ".join(queued)},
                    ),
                    type="info",
                )
            for error in errors:
                messages.add(error, type="error")

    @staticmethod
    def purge(connection, task_ids: list[str], actor: str) -> int:
        removed = 0
        for task_id in task_ids:
            try:
                deadletters.purge(connection, task_id)
            except KeyError:
                continue  # purged meanwhile (another tab, the CLI): nothing left to do
            removed += 1
            logger.info("%s purged the dead letter %s", actor, task_id)
        return removed

    @staticmethod
    def retry(connection, task_ids: list[str], actor: str) -> tuple[list[str], list[str]]:
        # The task modules a retry needs (CELERY_IMPORTS, entry points), as the CLI does.
        app.loader.import_default_modules()
        queued, errors = [], []
        for task_id in task_ids:
            try:
                new_id = deadletters.retry(connection, task_id, app=app)
            except KeyError as exc:
                errors.append(exc.args[0])
                continue
            logger.info("%s retried the dead letter %s as %s", actor, task_id, new_id)
            queued.append(new_id)
        return queued, errors


def _call_text(args, kwargs) -> str:
    """``('a', 1, key='b')``: the arguments as a person reads them."""
    parts = [repr(arg) for arg in args] + [f"{key}={value!r}" for key, value in kwargs.items()]
    return f"({', '.join(parts)})"
