"""WebSub pieces: hub discovery, the form POST to a hub, the subscription state and schedule.

The end-to-end run against a real hub is tests/integration/test_websub.py.
"""

from __future__ import annotations

import json

import pytest
from werkzeug import Response

from collective.plonecelery.blogs import subscriptions
from collective.plonecelery.blogs.importer import websub
from collective.plonecelery.blogs.readers.feed import discover_hub
from collective.plonecelery.blogs.readers.http import post_form
from collective.plonecelery.exceptions import ConfigurationError
from collective.plonecelery.exceptions import FetchError

# -- discovery ----------------------------------------------------------------------------


def test_hub_from_the_atom_links_resolved_against_the_feed(httpserver):
    httpserver.expect_request("/blog/atom").respond_with_data(
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>T</title>'
        '<link rel="hub" href="/hub"/><link rel="self" href="https://blog.example.org/atom"/>'
        "</feed>",
        content_type="application/atom+xml",
    )
    links = discover_hub(httpserver.url_for("/blog/atom"), allow_private=True)
    assert links.hub == httpserver.url_for("/hub")
    assert links.self_url == "https://blog.example.org/atom"


def test_the_link_header_wins_and_rss_atom_links_are_read(httpserver):
    httpserver.expect_request("/rss").respond_with_data(
        '<?xml version="1.0"?><rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">'
        '<channel><title>T</title><atom:link rel="hub" href="https://body.example/hub"/>'
        "</channel></rss>",
        content_type="application/rss+xml",
        headers={"Link": '<https://header.example/hub>; rel="hub"'},
    )
    links = discover_hub(httpserver.url_for("/rss"), allow_private=True)
    assert links.hub == "https://header.example/hub"
    assert links.self_url == ""


def test_json_feed_hubs_and_no_hub(httpserver):
    httpserver.expect_request("/feed.json").respond_with_data(
        json.dumps(
            {
                "version": "https://jsonfeed.org/version/1.1",
                "feed_url": "https://blog.example.org/feed.json",
                "hubs": [{"type": "rssCloud", "url": "x"}, {"type": "WebSub", "url": "/h"}],
            }
        ),
        content_type="application/feed+json",
    )
    httpserver.expect_request("/plain").respond_with_data(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>T</title></channel></rss>',
        content_type="application/rss+xml",
    )
    links = discover_hub(httpserver.url_for("/feed.json"), allow_private=True)
    assert links.hub == httpserver.url_for("/h")
    assert links.self_url == "https://blog.example.org/feed.json"
    assert discover_hub(httpserver.url_for("/plain"), allow_private=True).hub == ""


def test_find_hub_names_what_to_set_when_the_feed_has_none(httpserver):
    httpserver.expect_request("/plain").respond_with_data(
        '<?xml version="1.0"?><rss version="2.0"><channel><title>T</title></channel></rss>',
        content_type="application/rss+xml",
    )
    config = websub_config(api_url=httpserver.url_for("/plain"))
    with pytest.raises(FetchError, match="announces no WebSub hub"):
        websub.find_hub(config)
    assert websub.find_hub(websub_config(hub_url="https://hub.example.org/")) == (
        "https://hub.example.org/",
        "https://blog.example.org/feed.xml",
    )


def websub_config(**changes):
    from collective.plonecelery.blogs.config import SourceConfig

    data = {
        "id": "feed",
        "title": "Feed",
        "kind": "feed",
        "api_url": "https://blog.example.org/feed.xml",
        "scheme": "websub",
        "websub": True,
        "allow_private": True,
        **changes,
    }
    config = SourceConfig(**data)
    config.validate()
    return config


# -- the request to the hub ---------------------------------------------------------------


def test_post_form_sends_the_form_and_hides_the_secret(httpserver):
    seen = {}

    def hub(request):
        seen.update(request.form.to_dict())
        seen["content-type"] = request.headers["Content-Type"]
        return Response("", status=202)

    httpserver.expect_request("/hub", method="POST").respond_with_handler(hub)
    data = {"hub.mode": "subscribe", "hub.topic": "t", "hub.secret": "s3cr3t-value"}
    response = post_form(httpserver.url_for("/hub"), data=data, allow_private=True)
    assert response.status_code == 202
    assert seen["hub.secret"] == "s3cr3t-value"
    assert seen["content-type"] == "application/x-www-form-urlencoded"

    httpserver.expect_request("/echo", method="POST").respond_with_handler(
        lambda request: Response(f"bad secret {request.form['hub.secret']}", status=400)
    )
    with pytest.raises(FetchError) as caught:
        post_form(
            httpserver.url_for("/echo"), data=data, allow_private=True, hidden=("s3cr3t-value",)
        )
    assert "400" in str(caught.value) and "s3cr3t-value" not in str(caught.value)


def test_post_form_refuses_private_hubs_and_redirects(httpserver):
    with pytest.raises(FetchError, match="private|loopback|not allowed"):
        post_form(httpserver.url_for("/hub"), data={"hub.mode": "subscribe"})
    httpserver.expect_request("/moved", method="POST").respond_with_data(
        "", status=307, headers={"Location": "https://elsewhere.example/hub"}
    )
    with pytest.raises(FetchError, match="redirect"):
        post_form(httpserver.url_for("/moved"), data={"a": "b"}, allow_private=True)


# -- the callback URL, the renewal margin ---------------------------------------------------


def test_callback_url_needs_the_public_url():
    assert (
        websub.callback_url("b", site_id="site1", public_url="https://x.example/{site}/")
        == "https://x.example/site1/@blog-webhook/b"
    )
    with pytest.raises(ConfigurationError, match="PLONECELERY_PUBLIC_URL"):
        websub.callback_url("b", site_id="plone", public_url="")


def test_renewal_margin():
    assert websub.renewal_margin(864000, interval=60) == 86400.0  # a day before ten days end
    assert websub.renewal_margin(7200, interval=60) == 3600.0  # half of two hours
    assert websub.renewal_margin(None, interval=60) == 180.0


# -- the state and when the schedule asks again ---------------------------------------------


@pytest.fixture
def site():
    """Something annotatable, standing in for the Plone site."""
    from zope.annotation.attribute import AttributeAnnotations
    from zope.annotation.interfaces import IAnnotations
    from zope.annotation.interfaces import IAttributeAnnotatable
    from zope.component import provideAdapter
    from zope.interface import implementer

    provideAdapter(AttributeAnnotations, (IAttributeAnnotatable,), IAnnotations)

    @implementer(IAttributeAnnotatable)
    class Site:
        pass

    return Site()


HUB, TOPIC, CALLBACK = "https://hub.example/", "https://blog.example/feed", "https://cb.example/x"


def ask(site, mode="subscribe", now=1000.0, **changes):
    entry = {"hub": HUB, "topic": TOPIC, "callback": CALLBACK, **changes}
    return subscriptions.request("s", mode=mode, now=now, portal=site, **entry)


def test_each_subscription_gets_a_fresh_secret_a_retry_keeps_it(site):
    first = ask(site)
    assert len(first) == 64 and ask(site) == first  # the same request, sent again
    assert subscriptions.verify("s", mode="subscribe", topic=TOPIC, lease_seconds=60, portal=site)
    renewal = ask(site, now=1030.0)
    assert renewal != first
    assert subscriptions.secrets_for("s", portal=site) == [first, renewal]
    info = subscriptions.info("s", portal=site)
    assert info["status"] == "subscribed" and info["renewing"] is True
    assert first not in json.dumps(info) and renewal not in json.dumps(info)


def test_due_when_never_asked_expiring_failed_or_unverified(site):
    def due(now, margin=100.0, retry_base=30.0):
        state = subscriptions.get("s", portal=site)
        return subscriptions.due(state, now=now, margin=margin, retry_base=retry_base)

    assert due(0.0)  # never asked
    subscriptions.note_queued("s", now=1000.0, portal=site)
    assert not due(1001.0)  # a subscribe is queued
    ask(site, now=1000.0)
    assert not due(1001.0)  # the hub has not verified yet
    assert due(1000.0 + subscriptions.PENDING_TIMEOUT)  # ... for too long: ask again
    subscriptions.verify(
        "s", mode="subscribe", topic=TOPIC, lease_seconds=1000, now=1000.0, portal=site
    )
    assert not due(1899.0)
    assert due(1900.0)  # 100 s left: renew
    # The hub is down: wait 30 s, then 60 s after the second failure.
    subscriptions.record_error("s", error="hub down", now=2000.0, portal=site)
    assert subscriptions.info("s", portal=site)["status"] == "subscribed"  # still, until expiry
    assert not due(2029.0) and due(2030.0)
    subscriptions.record_error("s", error="hub down", now=2030.0, portal=site)
    assert not due(2089.0) and due(2090.0)
    assert subscriptions.info("s", portal=site)["last_error"] == "hub down"


def test_a_denied_subscription_waits_for_a_manager(site):
    ask(site)
    assert not subscriptions.deny("s", topic="https://other.example/", portal=site)
    assert subscriptions.deny("s", topic=TOPIC, reason="no", portal=site)
    state = subscriptions.get("s", portal=site)
    assert state["status"] == "denied"
    assert not subscriptions.due(state, now=1e12, margin=1.0, retry_base=1.0)


def test_an_unsubscribe_is_sent_again_until_the_lease_ends(site):
    ask(site)
    subscriptions.verify(
        "s", mode="subscribe", topic=TOPIC, lease_seconds=5000, now=1000.0, portal=site
    )
    ask(site, mode="unsubscribe", now=1100.0)
    leaving = subscriptions.get("s", portal=site)["leaving"]
    assert leaving["expires"] == 6000.0

    def what(now):
        return subscriptions.leaving_due("s", now=now, retry_base=30.0, portal=site)

    assert what(1101.0) == ""
    assert what(1100.0 + subscriptions.PENDING_TIMEOUT) == "send"  # never verified
    subscriptions.record_leaving_error("s", error="down", now=1200.0, portal=site)
    assert what(1229.0) == "" and what(1230.0) == "send"
    assert what(6000.0) == "forget"  # the hub forgets it anyway
    assert not subscriptions.verify("s", mode="unsubscribe", topic="other", portal=site)
    assert subscriptions.verify("s", mode="unsubscribe", topic=TOPIC, portal=site)
    assert subscriptions.get("s", portal=site) is None
