"""Blog imports end to end, the awkward cases: duplicate deliveries over real HTTP,
an update that arrives before the create, and a post the API answers 404 for."""

from __future__ import annotations

import json

import httpx
import pytest
from test_import_e2e import GHOST_SECRET
from test_import_e2e import TIMEOUT
from test_import_e2e import add_source
from test_import_e2e import ghost_api  # noqa: F401 - fixture
from test_import_e2e import ghost_post
from test_import_e2e import item_state
from test_import_e2e import new_id
from test_import_e2e import news  # noqa: F401 - fixture
from test_import_e2e import queue
from test_import_e2e import wait_for

from collective.plonecelery.app import app
from collective.plonecelery.blogs.verify.signatures import sign

pytestmark = pytest.mark.timeout(600)


def send_webhook(plone_http, config, post_id, event="post.published"):
    body = json.dumps({"post": {"current": {"id": post_id}, "previous": {}}}).encode()
    headers = {"Content-Type": "application/json"}
    headers.update(sign(scheme="ghost", secret=GHOST_SECRET, body=body))
    url = f"{plone_http}/plone/++api++/@blog-webhook/{config.id}?event={event}"
    return httpx.post(url, content=body, headers=headers, timeout=60), body, headers, url


def test_same_delivery_twice_gives_one_task_and_one_item(harness, news, plone_http, ghost_api):  # noqa: F811
    config = add_source(harness, news, api_url=ghost_api.server.url_for("/"))
    post_id = new_id()
    ghost_api.posts[post_id] = ghost_post(post_id)
    first, body, headers, url = send_webhook(plone_http, config, post_id)
    assert first.status_code == 202, first.text
    # The platform retries the very same signed request.
    again = httpx.post(url, content=body, headers=headers, timeout=60)
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    assert again.json()["task"] == first.json()["task"]
    assert app.AsyncResult(first.json()["task"]).get(timeout=TIMEOUT)["status"] == "imported"
    assert len(item_state(harness, config, post_id)) == 1
    assert ghost_api.hits(post_id) == 1


def test_update_before_create_ends_with_one_correct_item(harness, news, ghost_api):  # noqa: F811
    config = add_source(harness, news, api_url=ghost_api.server.url_for("/"))
    post_id = new_id()
    # The "edited" notification is handled first: the API already has the edit.
    ghost_api.posts[post_id] = ghost_post(
        post_id, title="Edited", updated_at="2030-01-02T00:00:00.000+00:00"
    )
    edited, _ = queue(harness, config, post_id)
    assert edited.get(timeout=TIMEOUT)["status"] == "imported"
    # Then the late "published" notification: not newer, so nothing changes.
    created, _ = queue(harness, config, post_id)
    assert created.get(timeout=TIMEOUT)["status"] == "skipped"
    [item] = item_state(harness, config, post_id)
    assert item["title"] == "Edited"


def test_post_the_api_answers_404_for_is_removed(harness, news, ghost_api):  # noqa: F811
    config = add_source(harness, news, api_url=ghost_api.server.url_for("/"))
    post_id = new_id()
    ghost_api.posts[post_id] = ghost_post(post_id)
    assert queue(harness, config, post_id)[0].get(timeout=TIMEOUT)["status"] == "imported"
    del ghost_api.posts[post_id]  # the API now answers 404
    # Even an "upsert" notification: the API's word counts, not the webhook's.
    assert queue(harness, config, post_id)[0].get(timeout=TIMEOUT)["status"] == "removed"
    [item] = wait_for(lambda: item_state(harness, config, post_id), what="the item")
    assert item["state"] == "private"
