"""``@@plonecelery-progress?task=<id>``: a progress bar for one task, for the user who
queued it. The page polls ``@celery-tasks/<id>`` (which answers that user and Managers
only) every second until the task ends; tasks feed it with ``report_progress()``.

Link a user there after queuing, for example from a view::

    result = rebuild.delay(folder)
    self.request.response.redirect(
        f"{portal_url}/@@plonecelery-progress?task={result.id}"
    )
"""

from __future__ import annotations

import re

from Products.Five.browser import BrowserView

#: Celery task ids are UUIDs; custom ids stay within these characters.
TASK_ID = re.compile(r"[0-9A-Za-z_.:-]{1,200}")


class TaskProgressView(BrowserView):
    def task_id(self) -> str:
        """The ``task`` parameter when it looks like a task id, else ``""``."""
        value = self.request.form.get("task", "")
        return value if isinstance(value, str) and TASK_ID.fullmatch(value) else ""

    def status_url(self) -> str:
        return f"{self.context.absolute_url()}/++api++/@celery-tasks/{self.task_id()}"
