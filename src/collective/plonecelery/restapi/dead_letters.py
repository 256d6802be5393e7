"""``@celery-deadletters``: tasks that failed for good, for Managers (and Volto).

::

    GET  @celery-deadletters                 {"items": [... without tracebacks ...],
                                              "items_total": n}
    GET  @celery-deadletters/<task id>       one, with its traceback
    POST @celery-deadletters/<task id>/retry {"task_id": "<the new task's id>"}
    POST @celery-deadletters/<task id>/purge {"removed": 1}
    POST @celery-deadletters/purge           {"removed": n}   (all of them)

Each retry and purge is logged with the acting user.
"""

from __future__ import annotations

import logging

from plone import api

from .. import deadletters
from ..app import app
from ..exceptions import ServiceError
from .service import ManagerService

logger = logging.getLogger(__name__)


def _summary(letter) -> dict:
    data = letter.as_dict()
    data.pop("traceback")
    return data


class _DeadLetterService(ManagerService):
    def connection(self):
        return self.context._p_jar

    def letter(self, task_id: str):
        try:
            return deadletters.get(self.connection(), task_id)
        except KeyError as exc:
            raise ServiceError(404, "NotFound", exc.args[0]) from None


class DeadLettersGet(_DeadLetterService):
    """``GET @celery-deadletters[/<task id>]``."""

    def handle(self):
        self.expect_params(0, 1)
        if self.params:
            return {
                "@id": f"{self.context.absolute_url()}/@celery-deadletters/{self.params[0]}",
                **self.letter(self.params[0]).as_dict(),
            }
        items = [_summary(letter) for letter in deadletters.list_dead_letters(self.connection())]
        return {
            "@id": f"{self.context.absolute_url()}/@celery-deadletters",
            "items": items,
            "items_total": len(items),
        }


class DeadLettersPost(_DeadLetterService):
    """``POST @celery-deadletters/<task id>/retry|purge`` and ``POST @celery-deadletters/purge``."""

    def handle(self):
        self.expect_params(1, 2)
        self.write_request()
        actor = api.user.get_current().getId()
        if self.params == ["purge"]:
            removed = deadletters.purge(self.connection())
            logger.info("%s purged all %d dead letter(s)", actor, removed)
            return {"removed": removed}
        if len(self.params) != 2 or self.params[1] not in ("retry", "purge"):
            raise ServiceError(
                404, "NotFound", "POST @celery-deadletters/<task id>/retry or .../purge"
            )
        task_id, action = self.params
        letter = self.letter(task_id)
        if action == "purge":
            deadletters.purge(self.connection(), task_id)
            logger.info("%s purged the dead letter %s (%s)", actor, task_id, letter.task_name)
            return {"removed": 1}
        # The task modules a retry needs (CELERY_IMPORTS, entry points), as the CLI does.
        app.loader.import_default_modules()
        try:
            new_id = deadletters.retry(self.connection(), task_id, app=app)
        except KeyError as exc:
            raise ServiceError(409, "TaskNotRegistered", exc.args[0]) from None
        logger.info("%s retried the dead letter %s as %s", actor, task_id, new_id)
        return {"task_id": new_id}
