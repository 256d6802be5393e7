"""The Classic UI control panel ``@@plonecelery-sources``, driven through its HTML forms."""

from __future__ import annotations

import types

import pytest
import transaction
import webtest
from plone import api
from plone.app.testing import SITE_OWNER_NAME
from plone.app.testing import SITE_OWNER_PASSWORD
from plone.app.testing import TEST_USER_NAME
from plone.app.testing import TEST_USER_PASSWORD
from plone.testing._z2_testbrowser import Zope2Caller

from collective.plonecelery.blogs import importer
from collective.plonecelery.blogs import storage
from collective.plonecelery.blogs.config import SourceConfig

pytestmark = pytest.mark.timeout(900)

IMPORT_USER = "plonecelery-importer"
SECRET = "s3cret-of-the-blog"
PANEL = "/plone/@@plonecelery-sources"


@pytest.fixture
def queued(monkeypatch):
    calls = []

    def fake(name):
        def queue(*args, **kwargs):
            calls.append((name, args))
            return types.SimpleNamespace(id=f"task-{len(calls)}")

        return queue

    monkeypatch.setattr(importer, "queue_backfill", fake("backfill"))
    monkeypatch.setattr(importer.test_source, "delay", fake("test"))
    return calls


@pytest.fixture
def portal(layers, queued):
    for layer in layers:
        layer.testSetUp()
    portal = layers[-1]["portal"]
    with api.env.adopt_roles(["Manager"]):
        api.content.create(container=portal, type="Folder", id="news", title="News")
        if api.user.get(userid=IMPORT_USER) is None:
            api.user.create(email="importer@example.org", username=IMPORT_USER)
    transaction.commit()
    try:
        yield portal
    finally:
        for layer in reversed(layers):
            layer.testTearDown()


def browser(layers, auth=None):
    app = webtest.TestApp(Zope2Caller(types.SimpleNamespace(handleErrors=True), layers[-1]["app"]))
    if auth:
        app.authorization = ("Basic", auth)
    return app


@pytest.fixture
def manager(layers, portal):
    return browser(layers, (SITE_OWNER_NAME, SITE_OWNER_PASSWORD))


def add_source(portal, **overrides):
    data = {
        "id": "blog",
        "title": "Our blog",
        "kind": "ghost",
        "api_url": "https://blog.example.org",
        "api_key": "content-key",
        "scheme": "ghost",
        "secret": SECRET,
        "target": "news",
    }
    data.update(overrides)
    storage.add_source(SourceConfig.from_dict(data), portal=portal)
    transaction.commit()


def stored(portal, source_id="blog"):
    portal._p_jar.sync()
    return storage.get_source(source_id, portal=portal)


def test_listed_in_site_setup(portal):
    configlets = {action.id: action for action in portal.portal_controlpanel.listActions()}
    configlet = configlets["plonecelery-sources"]
    assert configlet.permissions == ("Manage portal",)
    assert configlet.category == "Products"
    assert "@@plonecelery-sources" in configlet.getActionExpression()


def test_overview_shows_sources_urls_and_deliveries_but_no_secret(manager, portal):
    add_source(portal)
    page = manager.get(PANEL)
    table = page.html.find(id="sources")
    assert "Our blog" in table.text
    assert "set" in table.find(class_="badge").text
    urls = [node["value"] for node in table.find_all("input", class_="webhook-url")]
    assert urls == ["http://localhost:80/plone/++api++/@blog-webhook/blog"]
    assert "?event=post.published" in table.text
    assert SECRET not in page.text
    assert "content-key" not in page.text
    assert page.html.find(id="deliveries") is None  # none yet
    assert "No delivery yet." in page.text


def test_a_paused_source_shows_until_when_and_why(manager, portal):
    add_source(portal)
    page = manager.get(PANEL)
    assert page.html.find(class_="paused") is None
    storage.pause_source(
        "blog", until=2_000_000_000, reason="blog.example.org answered HTTP 429", portal=portal
    )
    transaction.commit()
    table = manager.get(PANEL).html.find(id="sources")
    assert "Paused until 2033-05-18T03:33:20+00:00" in table.find(class_="paused").text
    assert "answered HTTP 429" in table.text
    # The REST API shows it too.
    answer = manager.get(
        "/plone/++api++/@blog-sources/blog", headers={"Accept": "application/json"}
    ).json
    assert answer["paused"] == {
        "until": "2033-05-18T03:33:20+00:00",
        "reason": "blog.example.org answered HTTP 429",
    }


@pytest.mark.parametrize("who", ["anonymous", "member"])
def test_managers_only(layers, portal, who):
    add_source(portal)
    auth = None if who == "anonymous" else (TEST_USER_NAME, TEST_USER_PASSWORD)
    response = browser(layers, auth).get(PANEL, status="*")
    assert response.status_int in (302, 401, 403)
    assert "Our blog" not in response.text


def test_add_through_the_form(manager, portal):
    form = manager.get(f"{PANEL}?add=1").forms["source-form"]
    form["id"] = "wp"
    form["title"] = "WordPress blog"
    form["kind"] = "wordpress"
    form["api_url"] = "https://wp.example.org"
    form["scheme"] = "hmac-sha256-base64"
    form["header_name"] = "X-WC-Webhook-Signature"
    form["secret"] = SECRET
    form["target"] = "news"
    form["cdn_hosts"] = "cdn.example.org\n\nimg.example.org\n"
    form["tolerance"] = "600"
    form["volto_blocks"] = "off"
    form["sync_hours"] = "1.5"
    response = form.submit("form.buttons.save", status=302)
    overview = response.follow()
    assert "Source saved." in overview.text
    config = stored(portal, "wp")
    assert config.secret == SECRET
    assert config.cdn_hosts == ("cdn.example.org", "img.example.org")
    assert config.tolerance == 600
    assert config.header_name == "X-WC-Webhook-Signature"
    assert config.insecure is False
    assert config.volto_blocks == "off"
    assert (config.sync_hours, config.poll_minutes, config.sync_max_posts) == (1.5, 0.0, 30)


def test_invalid_input_shows_the_error_and_keeps_what_was_typed(manager, portal):
    form = manager.get(f"{PANEL}?add=1").forms["source-form"]
    form["id"] = "ghost"
    form["title"] = "Typed title"
    form["api_url"] = "https://blog.example.org"
    form["scheme"] = "ghost"
    form["secret"] = SECRET
    form["target"] = "news"
    # kind ghost without api_key
    page = form.submit("form.buttons.save", status=200)
    assert "Ghost sources need api_key" in page.text
    again = page.forms["source-form"]
    assert again["title"].value == "Typed title"
    assert again["secret"].value == ""  # secrets are never sent back
    portal._p_jar.sync()
    assert storage.list_sources(portal=portal) == []


def test_edit_keeps_empty_secrets(manager, portal):
    add_source(portal)
    form = manager.get(f"{PANEL}?edit=blog").forms["source-form"]
    assert form["id"].value == "blog"
    assert form["secret"].value == ""
    assert "Set; leave empty to keep it." in form.text
    form["title"] = "Renamed"
    form.submit("form.buttons.save", status=302)
    config = stored(portal)
    assert (config.title, config.secret, config.api_key) == ("Renamed", SECRET, "content-key")


def test_edit_an_unknown_source(manager, portal):
    response = manager.get(f"{PANEL}?edit=nope", status=302)
    assert "no blog source with id 'nope'" in response.follow().text


def test_remove_test_and_backfill_buttons(manager, portal, queued):
    add_source(portal)
    page = manager.get(PANEL)
    row_form = next(form for form in page.forms.values() if "form.buttons.test" in form.fields)
    row_form.submit("form.buttons.test", status=302)
    assert queued == [("test", ("blog",))]
    row_form.submit("form.buttons.backfill", status=302)
    assert queued[1][0] == "backfill" and queued[1][1][0].id == "blog"
    done = row_form.submit("form.buttons.delete", status=302).follow()
    assert "Source removed." in done.text
    portal._p_jar.sync()
    assert storage.list_sources(portal=portal) == []


def test_posts_need_the_csrf_token(manager, portal):
    add_source(portal)
    response = manager.post(
        PANEL, params={"source_id": "blog", "form.buttons.delete": "1"}, status="*"
    )
    assert response.status_int == 403
    assert stored(portal).id == "blog"
