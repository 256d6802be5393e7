"""Volto blocks end to end: a Plone site with plone.volto, a signed webhook, the real worker.

A second site (``volto``, plone.volto's profile applied) is added to the harness's database,
so the other tests keep their Classic UI site. The post comes from the demo blog over real
HTTP; the item is read back as Volto reads it: plone.restapi's JSON (``++api++``).
"""

from __future__ import annotations

import uuid

import httpx
import pytest
import transaction
from plone import api
from test_import_e2e import TIMEOUT
from test_import_e2e import _post_when_up
from test_import_e2e import wait_for

from collective.plonecelery.blogs import importer
from collective.plonecelery.blogs import storage
from collective.plonecelery.blogs.importer.blocks import volto_installed
from collective.plonecelery.blogs.importer.images import image_id
from collective.plonecelery.blogs.verify.signatures import sign
from collective.plonecelery.devtools import demo_blog as blog

pytestmark = pytest.mark.timeout(600)

VOLTO = "volto"
SECRET = "volto-secret"


@pytest.fixture(scope="module")
def volto_site(harness):
    """A site with plone.volto's profile, its news folder and the import user."""
    harness.add_site(VOLTO, extra_profiles=("plone.volto:default",))
    with harness.session(user="admin", site_id=VOLTO) as portal:
        if "news" not in portal:
            # plone.volto replaces Folder by folderish pages.
            api.content.create(container=portal, type="Document", id="news", title="News")
        importer.create_import_user(portal)
        transaction.commit()
    return VOLTO


@pytest.fixture
def demo_blog():
    server = blog.serve(host="127.0.0.1", port=0)
    yield server
    server.shutdown()


def send_webhook(plone_http, server, source_id) -> dict:
    """What Ghost does on post.published/updated; returns the worker's outcome."""
    from collective.plonecelery.app import app

    body = server.blog.webhook_body(blog.WELCOME_ID)
    headers = {"Content-Type": "application/json"}
    headers.update(sign(scheme="ghost", secret=SECRET, body=body))
    url = blog.webhook_url(plone_url=f"{plone_http}/{VOLTO}", source_id=source_id)
    response = wait_for(
        lambda: _post_when_up(url, body, headers), timeout=120, what="Plone to answer"
    )
    assert response.status_code == 202, response.text
    return app.AsyncResult(response.json()["task"]).get(timeout=TIMEOUT)


def volto_json(harness, plone_http, path: str) -> dict:
    """The item as Volto's front-end fetches it (plone.restapi through ``++api++``)."""
    inside = path.removeprefix(f"/{VOLTO}/")
    response = httpx.get(
        f"{plone_http}/{VOLTO}/++api++/{inside}",
        auth=("admin", harness.admin_password),
        headers={"Accept": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def in_order(data: dict) -> list[dict]:
    return [data["blocks"][block_id] for block_id in data["blocks_layout"]["items"]]


def test_only_the_volto_site_counts_as_volto(harness, volto_site):
    with harness.session(site_id=volto_site):
        assert volto_installed()
    with harness.session():
        assert not volto_installed()  # the harness's Classic UI site: no blocks there


def test_imported_post_shows_as_volto_blocks_and_a_re_import_replaces_them(
    harness, volto_site, plone_http, demo_blog
):
    image = f"{demo_blog.url}/content/images/welcome-to-the-demo-blog.png"
    demo_blog.blog.edit(
        blog.WELCOME_ID,
        html=(
            '<p>Read <a href="https://example.org/docs">the docs</a>, <strong>now</strong>.</p>'
            "<h2>What is new</h2>"
            "<ul><li>Blocks</li><li>Text too</li></ul>"
            f'<figure><img src="{image}" alt="A picture"><figcaption>The picture</figcaption>'
            "</figure>"
            '<iframe src="https://www.youtube.com/embed/dQw4w9WgXcQ"></iframe>'
            "<ol><li>Last</li></ol>"
        ),
    )
    settings = blog.source_settings(
        blog_url=demo_blog.url,
        secret=SECRET,
        target="news",
        source_id=f"volto-{uuid.uuid4().hex[:6]}",
    )
    with harness.session(user="admin", site_id=volto_site) as portal:
        config = storage.add_source(storage.config_from_data(settings), portal=portal)
        transaction.commit()
    assert config.volto_blocks == "auto"

    outcome = send_webhook(plone_http, demo_blog, config.id)
    assert (outcome["status"], outcome["note"]) == ("imported", None)
    data = volto_json(harness, plone_http, outcome["path"])
    assert data["@type"] == "News Item"
    blocks = in_order(data)
    assert [block["@type"] for block in blocks] == [
        *("title", "slate", "slate", "slate", "image", "slate", "video", "slate"),
    ]
    assert len(data["blocks"]) == len(blocks)
    assert blocks[1]["value"] == [
        {
            "type": "p",
            "children": [
                {"text": "Read "},
                {
                    "type": "link",
                    "data": {"url": "https://example.org/docs"},
                    "children": [{"text": "the docs"}],
                },
                {"text": ", "},
                {"type": "strong", "children": [{"text": "now"}]},
                {"text": "."},
            ],
        }
    ]
    assert blocks[2]["value"] == [{"type": "h2", "children": [{"text": "What is new"}]}]
    assert blocks[3]["value"] == [
        {
            "type": "ul",
            "children": [
                {"type": "li", "children": [{"text": "Blocks"}]},
                {"type": "li", "children": [{"text": "Text too"}]},
            ],
        }
    ]
    # The body image is kept in Plone (importer/images.py): the block points at the Image,
    # which anonymous visitors get from the site, not from the blog.
    kept = f"{plone_http}/{volto_site}/news/images/{config.id}-{blog.WELCOME_ID}/{image_id(image)}"
    assert (blocks[4]["url"], blocks[4]["alt"]) == (kept, "A picture")
    served = httpx.get(f"{kept}/@@images/image", timeout=30)
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert served.content == demo_blog.blog.image("welcome-to-the-demo-blog")
    assert blocks[5]["plaintext"] == "The picture"
    assert blocks[6]["url"] == "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
    assert blocks[7]["value"][0]["type"] == "ol"
    # plone.volto takes the rich text field off News Item: there the blocks are the content
    # (where the type keeps it, the text is written too: tests/unit/test_importer_blocks.py).
    assert "text" not in data
    first_ids = data["blocks_layout"]["items"]

    demo_blog.blog.edit(blog.WELCOME_ID, html="<p>Changed <em>intro</em>.</p><h3>Only heading</h3>")
    outcome = send_webhook(plone_http, demo_blog, config.id)
    assert outcome["status"] == "imported"
    changed = volto_json(harness, plone_http, outcome["path"])
    assert changed["@id"] == data["@id"]
    assert [block.get("plaintext") for block in in_order(changed)] == [
        *(None, "Changed intro.", "Only heading"),
    ]
    assert in_order(changed)[2]["value"][0]["type"] == "h3"
    # Replaced, not appended; the same ids for the same places.
    assert len(changed["blocks"]) == 3
    assert changed["blocks_layout"]["items"] == first_ids[:3]
