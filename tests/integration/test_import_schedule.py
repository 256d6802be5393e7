"""The schedule of blog sources, run by the session's real worker (no Celery beat).

The worker's bootstep asks for a schedule run every second (conftest.py); a source whose
``sync_hours`` has passed is re-synced: a post that no webhook announced ends as content, a
feed is polled conditionally (304 counted) and its tombstones remove items. Broker-neutral,
so it runs on the SQLite broker only.
"""

from __future__ import annotations

import pytest
import transaction
from conftest import BROKER
from test_import_e2e import GhostAPI
from test_import_e2e import _json
from test_import_e2e import add_source
from test_import_e2e import ghost_post
from test_import_e2e import item_state
from test_import_e2e import new_id
from test_import_e2e import news  # noqa: F401 - fixture
from test_import_e2e import wait_for
from werkzeug import Response

from collective.plonecelery.blogs import deliveries
from collective.plonecelery.blogs import storage
from collective.plonecelery.blogs.importer import schedule

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(BROKER != "sqlite", reason="broker-neutral: runs on the SQLite broker only"),
]


class GhostBlog(GhostAPI):
    """GhostAPI that also browses (newest first), as a scheduled run reads it."""

    def read(self, request) -> Response:
        if request.path.rstrip("/").endswith("/posts") and not request.args.get("filter"):
            posts = list(self.posts.values())[::-1]
            return _json({"posts": posts, "meta": {"pagination": {"next": None}}})
        return super().read(request)


def sync_entries(harness, source_id) -> list[dict]:
    with harness.session() as portal:
        return [
            entry
            for entry in deliveries.list_deliveries(source_id=source_id, portal=portal)
            if entry["delivery_id"].startswith(f"sync:{source_id}:")
        ]


def test_a_due_source_is_re_synced_by_the_running_worker(harness, news, httpserver):  # noqa: F811
    blog = GhostBlog(httpserver)
    announced, missed = new_id(), new_id()
    blog.posts[announced] = ghost_post(announced, title="Announced")
    # 0.0005 h = 1.8 s between runs: the worker's next ticks re-sync it.
    config = add_source(
        harness, news, api_url=httpserver.url_for("/"), sync_hours=0.0005, sync_max_posts=5
    )
    blog.posts[missed] = ghost_post(missed, title="No webhook said so")

    found = wait_for(lambda: item_state(harness, config, missed), what="the missed post")
    assert found[0]["title"] == "No webhook said so"
    wait_for(lambda: item_state(harness, config, announced), what="the announced post")
    runs = wait_for(
        lambda: [e for e in sync_entries(harness, config.id) if e["event"] == "sync"],
        what="the run in the delivery log",
    )
    assert any("queued 2 missing or changed" in (e.get("error") or "") for e in runs), runs
    with harness.session() as portal:
        assert schedule.last_runs(portal)[config.id]["last_run"] > 0
    # A later run finds both up to date and queues nothing.
    wait_for(
        lambda: any("queued 0" in (e.get("error") or "") for e in sync_entries(harness, config.id)),
        what="a run with nothing to do",
    )
    with harness.session(user="admin") as portal:
        storage.remove_source(config.id, portal=portal)
        transaction.commit()


def test_a_polled_feed_answers_304_and_its_tombstones_remove(harness, news, httpserver):  # noqa: F811
    entries = {"tag:b,1": "One", "tag:b,2": "Two"}
    deleted: list[str] = []
    version = {"n": 1}

    def atom(request):
        etag = f'"v{version["n"]}"'
        if request.headers.get("If-None-Match") == etag:
            return Response(status=304, headers={"ETag": etag})
        body = "".join(
            f"<entry><id>{key}</id><title>{title}</title>"
            f"<updated>2024-03-0{version['n']}T09:00:00Z</updated>"
            f'<content type="html">&lt;p&gt;{title}&lt;/p&gt;</content></entry>'
            for key, title in entries.items()
        )
        tombs = "".join(
            f'<at:deleted-entry ref="{ref}" when="2024-03-06T10:00:00Z"/>' for ref in deleted
        )
        return Response(
            '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom" '
            'xmlns:at="http://purl.org/atompub/tombstones/1.0"><title>B</title><id>urn:b</id>'
            f"<updated>2024-03-06T12:00:00Z</updated>{tombs}{body}</feed>",
            content_type="application/atom+xml",
            headers={"ETag": etag},
        )

    httpserver.expect_request("/atom").respond_with_handler(atom)
    config = add_source(
        harness,
        news,
        kind="feed",
        api_url=httpserver.url_for("/atom"),
        api_key="",
        scheme="websub",
        secret="hub-secret",
        poll_minutes=0.03,  # 1.8 s
    )
    wait_for(lambda: item_state(harness, config, "tag:b,2"), what="the feed's entries")

    def not_modified():
        with harness.session() as portal:
            return storage.feed_counts(config.id, portal=portal)["not_modified"]

    wait_for(lambda: not_modified() >= 1, what="a poll answered 304")
    # "One" drops off the feed (kept), "Two" is marked deleted (retracted).
    del entries["tag:b,1"], entries["tag:b,2"]
    entries["tag:b,3"] = "Three"
    deleted.append("tag:b,2")
    version["n"] = 2
    wait_for(lambda: item_state(harness, config, "tag:b,3"), what="the new entry")
    wait_for(
        lambda: item_state(harness, config, "tag:b,2")[0]["state"] == "private",
        what="the tombstoned entry retracted",
    )
    assert item_state(harness, config, "tag:b,1")[0]["state"] == "published"
    with harness.session(user="admin") as portal:
        storage.remove_source(config.id, portal=portal)
        transaction.commit()
