"""``@blog-sources``: the blog sources, for Managers (one class per verb).

::

    GET    @blog-sources                 {"items": [...]}
    POST   @blog-sources                 201, the new source
    GET    @blog-sources/{id}
    PATCH  @blog-sources/{id}            200, the changed source (absent/empty secrets kept)
    DELETE @blog-sources/{id}            204
    POST   @blog-sources/{id}/test       202 {"task": id}: a worker fetches one post
    GET    @blog-sources/{id}/test/{task}     {"state": "SUCCESS", "result": {"ok": ...}}
    POST   @blog-sources/{id}/backfill   202 {"task": id}: a worker imports every post

Secrets are write-only, shown as ``{"set": true/false}``.
"""

from __future__ import annotations

from typing import Any

from ..blogs import importer
from ..blogs import storage
from ..blogs.importer import websub
from ..exceptions import ServiceError
from .service import ManagerService


class SourcesGet(ManagerService):
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
        storage.get_source(source_id, portal=self.context)
        if action != "test":
            raise ServiceError(404, "NotFound", f"unknown path /{action}; use /test/<task id>")
        result = importer.test_source.AsyncResult(task_id)
        # With result_extended (our default) the backend knows the task's name and args:
        # only answer for tests of this very source.
        name, args = getattr(result, "name", None), getattr(result, "args", None)
        if name is not None and (
            name != importer.test_source.name or list(args or []) != [source_id]
        ):
            raise ServiceError(404, "NotFound", f"task {task_id!r} is not a test of {source_id!r}")
        answer = {"task": task_id, "source": source_id, "state": result.state, "result": None}
        if result.successful():
            answer["result"] = result.result
        elif result.failed():
            answer["result"] = {
                "ok": False,
                "error": f"{type(result.result).__name__}: {result.result}",
            }
        return answer


class SourcesPost(ManagerService):
    """``POST @blog-sources`` (add) and ``POST @blog-sources/{id}/test|backfill`` (actions)."""

    def handle(self):
        self.write_request()
        if len(self.params) == 2:
            return self.action(*self.params)
        self.expect_params(0)
        config = storage.config_from_data(self.body())
        websub.add_source(config, portal=self.context)
        self.request.response.setStatus(201)
        data = self.source_data(config)
        self.request.response.setHeader("Location", data["@id"])
        return data

    def action(self, source_id: str, name: str):
        config = storage.get_source(source_id, portal=self.context)
        if name == "test":
            result = importer.test_source.delay(config.id)
        elif name == "backfill":
            result = importer.queue_backfill(config)
        else:
            raise ServiceError(404, "NotFound", f"unknown action {name!r}; use test or backfill")
        self.request.response.setStatus(202)
        return {"task": result.id, "source": config.id, "action": name}


class SourcesPatch(ManagerService):
    """``PATCH @blog-sources/{id}``."""

    def handle(self):
        self.write_request()
        self.expect_params(1)
        config = websub.update_source(self.params[0], self.body(), portal=self.context)
        return self.source_data(config)


class SourcesDelete(ManagerService):
    """``DELETE @blog-sources/{id}``."""

    def handle(self):
        self.write_request()
        self.expect_params(1)
        websub.remove_source(self.params[0], portal=self.context)
        return self.reply_no_content()
