"""WebSub end to end: the worker subscribes a feed source to a real hub (websub_hub.py).

The hub verifies intent by GETting the callback through the real Plone WSGI server, grants
a short lease (15 s), publishes a new entry signed with the subscription's secret; the
blog schedule (every 5 s, conftest.py) renews the lease before it ends; removing the source
unsubscribes it. A hub that is down: the error is recorded and the request retried until
it gets through. The subscription's secret is then searched for where people can read.

The session's worker has PLONECELERY_PUBLIC_URL (the callback's base) pointing at the
Plone WSGI server (conftest.py). Broker-neutral: runs on the SQLite broker only.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import transaction
from conftest import BROKER
from test_import_e2e import free_port
from test_import_e2e import item_state
from test_import_e2e import news  # noqa: F401 - fixture
from test_import_e2e import wait_for
from websub_hub import Hub
from werkzeug import Response

from collective.plonecelery.blogs import subscriptions
from collective.plonecelery.blogs.config import SourceConfig
from collective.plonecelery.blogs.importer import websub

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(BROKER != "sqlite", reason="broker-neutral: runs on the SQLite broker only"),
]

LEASE = 15


@pytest.fixture(scope="module")
def websub_worker(harness, plone_http):
    """The session's worker; the hub calls back its PLONECELERY_PUBLIC_URL (conftest.py)."""
    assert harness.environment["PLONECELERY_PUBLIC_URL"] == plone_http + "/{site}"
    return plone_http


@pytest.fixture
def hub():
    hub = Hub(lease_seconds=LEASE).start()
    yield hub
    hub.stop()


def atom(feed_url: str, hub_url: str, entries: dict[str, str]) -> str:
    body = "".join(
        f"<entry><id>{key}</id><title>{title}</title><updated>2024-05-01T09:00:00Z</updated>"
        f'<content type="html">&lt;p&gt;{title}&lt;/p&gt;</content></entry>'
        for key, title in entries.items()
    )
    return (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>W</title>'
        f'<id>urn:w</id><link rel="hub" href="{hub_url}"/><link rel="self" href="{feed_url}"/>'
        f"<updated>2024-05-01T09:00:00Z</updated>{body}</feed>"
    )


def add_websub_source(harness, news, **settings) -> SourceConfig:  # noqa: F811
    data = {
        "id": f"ws-{uuid.uuid4().hex[:8]}",
        "title": "WebSub feed",
        "kind": "feed",
        "scheme": "websub",
        "websub": True,
        "target": news,
        "allow_private": True,  # feed, hub and callback are on loopback here
        **settings,
    }
    with harness.session(user="admin") as portal:
        config = websub.add_source(SourceConfig.from_dict(data), portal=portal)
        transaction.commit()
    return config


def state(harness, source_id):
    with harness.session() as portal:
        return subscriptions.info(source_id, portal=portal)


def test_subscribe_publish_renew_unsubscribe(harness, news, websub_worker, hub, httpserver):  # noqa: F811
    plone_http = websub_worker
    started = time.monotonic()
    feed_url = httpserver.url_for("/websub.atom")
    entries = {"tag:w,1": "First"}
    httpserver.expect_request("/websub.atom").respond_with_handler(
        lambda request: Response(
            atom(feed_url, hub.url, entries), content_type="application/atom+xml"
        )
    )
    # No hub_url: the worker finds the hub in the feed's <link rel="hub">.
    config = add_websub_source(harness, news, api_url=feed_url)
    callback = f"{plone_http}/plone/@blog-webhook/{config.id}"

    subscribed = wait_for(
        lambda: (s := state(harness, config.id)) and s["status"] == "subscribed" and s,
        what="the subscription verified",
    )
    first = hub.seen("verified", "subscribe", feed_url)[0]
    assert first.callback == callback
    assert subscribed["hub"] == hub.url and subscribed["topic"] == feed_url
    assert subscribed["expires"] is not None
    secret = hub.subscriptions[(feed_url, callback)].secret
    assert len(secret) >= 32

    # Seen through the REST API and the panel, without the secret.
    with httpx.Client(auth=("admin", harness.admin_password), timeout=60) as admin:
        rest = admin.get(
            f"{plone_http}/plone/++api++/@blog-sources/{config.id}",
            headers={"Accept": "application/json"},
        )
        panel = admin.get(f"{plone_http}/plone/@@plonecelery-sources")
    assert rest.json()["websub_state"]["status"] == "subscribed"
    assert "WebSub: subscribed until" in panel.text
    for text in (rest.text, panel.text):
        assert secret not in text

    # A verification for a topic we never asked for, or of a source never subscribed: 404.
    challenge = {"hub.mode": "subscribe", "hub.challenge": "c-123", "hub.lease_seconds": "60"}
    forged = httpx.get(callback, params={**challenge, "hub.topic": "https://evil.example/f"})
    assert forged.status_code == 404, forged.text
    assert "c-123" not in forged.text
    unknown = httpx.get(
        f"{plone_http}/plone/@blog-webhook/never-{config.id}",
        params={**challenge, "hub.topic": feed_url},
    )
    assert unknown.status_code == 404

    # The hub publishes a new entry, signed with the secret it was given: imported.
    entries["tag:w,2"] = "Pushed by the hub"
    assert hub.publish(
        feed_url, atom(feed_url, hub.url, entries).encode(), content_type="application/atom+xml"
    ) == [202]
    found = wait_for(lambda: item_state(harness, config, "tag:w,2"), what="the pushed entry")
    assert found[0]["title"] == "Pushed by the hub"

    # Renewed before the lease ends: the hub sees a second subscribe, and verifies it.
    renewal = wait_for(
        lambda: (
            len(hub.seen("verified", "subscribe", feed_url)) >= 2
            and hub.seen("verified", "subscribe", feed_url)[1]
        ),
        timeout=LEASE + 10,
        what="the renewal",
    )
    assert renewal.at < first.at + LEASE, (renewal.at - first.at, hub.events)
    assert len(hub.seen("request", "subscribe", feed_url)) >= 2

    assert not hub.seen("refused", "subscribe"), hub.events
    # Removed: the hub gets an unsubscribe and verifies it; nothing is left of the state.
    # (A renewal the hub verifies after this is refused: 404, not wanted any more.)
    with harness.session(user="admin") as portal:
        websub.remove_source(config.id, portal=portal)
        transaction.commit()
    wait_for(lambda: hub.seen("verified", "unsubscribe", feed_url), what="the unsubscribe")
    assert (feed_url, callback) not in hub.subscriptions
    wait_for(lambda: state(harness, config.id) is None, what="the state forgotten")
    assert not hub.seen("refused", "unsubscribe"), hub.events
    # No secret the hub was given is in the logs, the broker's or the result backend's files.
    assert len(set(hub.secrets)) >= 2  # a fresh one per subscription (the renewal's)
    places = [*harness.log_dir.iterdir(), *harness.base_dir.glob("*.sqlite")]
    assert any(path.name.startswith("worker") for path in places)
    for path in places:
        content = path.read_bytes()
        for value in set(hub.secrets):
            assert value.encode() not in content, f"a subscription secret is in {path}"
    print(f"\nWebSub subscribe, publish, renew, unsubscribe: {time.monotonic() - started:.1f} s")


def test_a_hub_that_is_down_is_asked_again(harness, news, websub_worker, httpserver):  # noqa: F811
    port = free_port()
    down = Hub(lease_seconds=600, port=port)  # not started yet: nothing listens on the port
    feed_url = httpserver.url_for("/down.atom")
    httpserver.expect_request("/down.atom").respond_with_data(
        atom(feed_url, down.url, {}), content_type="application/atom+xml"
    )
    config = add_websub_source(harness, news, api_url=feed_url, hub_url=down.url)
    failed = wait_for(
        lambda: (s := state(harness, config.id)) and s["status"] == "failed" and s,
        what="the failure recorded",
    )
    assert down.url in failed["last_error"], failed
    assert "could not be reached" in failed["last_error"], failed
    down.start()
    try:
        wait_for(
            lambda: state(harness, config.id)["status"] == "subscribed",
            timeout=60,
            what="the retried subscription",
        )
        assert state(harness, config.id)["last_error"] == ""
        with harness.session(user="admin") as portal:
            websub.remove_source(config.id, portal=portal)
            transaction.commit()
        wait_for(lambda: down.seen("verified", "unsubscribe"), what="the unsubscribe")
    finally:
        down.stop()
