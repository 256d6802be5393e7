"""A hostile post imported by a real worker and shown by a real Plone (issue 9, findings 3-5).

The blog is a pytest-httpserver on loopback; a second server on another port of the same host
stands for an internal service the post tries to reach. Broker-independent: the SQLite run of
the matrix covers it.
"""

from __future__ import annotations

import re

import httpx
import pytest
from conftest import BROKER
from pytest_httpserver import HTTPServer
from test_import_e2e import GHOST_KEY
from test_import_e2e import GhostAPI
from test_import_e2e import add_source
from test_import_e2e import delivery
from test_import_e2e import ghost_post
from test_import_e2e import item_state
from test_import_e2e import new_id
from test_import_e2e import news  # noqa: F401 - a fixture
from test_import_e2e import queue
from test_import_e2e import wait_for

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        BROKER != "sqlite",
        reason="what a worker fetches and Plone shows does not depend on the broker",
    ),
]

HTML = (
    "<p>Watch:</p>"
    '<iframe src="https://www.youtube.com/embed/abc" width="560"></iframe>'
    '<iframe src="https://evil.example\\@www.youtube.com/embed/x"></iframe>'
    '<iframe src="https://user:pw@www.youtube.com/embed/y"></iframe>'
)


@pytest.fixture
def internal():
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request("/x.png").respond_with_data(b"internal", content_type="image/png")
    server.start()
    yield server
    server.clear()
    server.stop()


def test_hostile_post_is_imported_harmless_and_shown_sandboxed(
    harness,
    plone_http,
    news,  # noqa: F811 - the fixture imported above
    httpserver,
    internal,
):
    blog = GhostAPI(httpserver)
    config = add_source(harness, news, api_url=httpserver.url_for("/"))
    post_id = new_id()
    blog.posts[post_id] = ghost_post(post_id, html=HTML, feature_image=internal.url_for("/x.png"))
    _result, delivery_id = queue(harness, config, post_id)
    done = wait_for(
        lambda: (delivery(harness, delivery_id) or {}).get("status") == "imported",
        what="the import",
    )
    assert done
    # Finding 4: another port of the blog's host is not the blog.
    assert internal.log == []
    assert "not allowed" in (delivery(harness, delivery_id).get("error") or "")
    [item] = item_state(harness, config, post_id)
    assert "evil.example" not in item["text"] and "user:pw" not in item["text"]

    # Finding 3: the page Plone renders keeps the sandbox on the one iframe left.
    with httpx.Client(auth=("admin", harness.admin_password), timeout=60) as client:
        page = client.get(f"{plone_http}{item['path']}")
    assert page.status_code == 200
    iframes = re.findall(r"<iframe[^>]*>", page.text)
    assert len(iframes) == 1, iframes
    assert 'src="https://www.youtube.com/embed/abc"' in iframes[0]
    assert 'sandbox="allow-scripts allow-same-origin allow-presentation allow-popups"' in iframes[0]
    assert 'referrerpolicy="no-referrer"' in iframes[0]

    # Finding 5: the worker fetched with ?key=..., its log does not show the key.
    assert blog.hits(post_id) >= 1
    worker_log = harness.worker_log.read_text(errors="replace")
    assert "HTTP Request: GET" in worker_log
    assert GHOST_KEY not in worker_log
