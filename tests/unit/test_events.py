"""Normalising webhook bodies of every source kind into Notifications."""

import json
from pathlib import Path

import pytest

from collective.plonecelery.blogs.verify.events import Notification
from collective.plonecelery.blogs.verify.events import parse_notification
from collective.plonecelery.exceptions import MalformedPayload

DATA = Path(__file__).parent / "data"
GHOST_ID = "5c7ece47da174000c0c5c6d7"
PUBLISHED = (DATA / "ghost_webhook_post_published.SYNTH.json").read_bytes()
DELETED = (DATA / "ghost_webhook_post_deleted.SYNTH.json").read_bytes()
WP_CREATE = (DATA / "wpwebhooks_post_create_demo.json").read_bytes()


def parse(kind, body, headers=None, event_hint=None):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return parse_notification(kind=kind, body=body, headers=headers or {}, event_hint=event_hint)


# --- Ghost ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    ["post.published", "post.published.edited", "post.edited", "post.added", "post.rescheduled"],
)
def test_ghost_upsert_events(event):
    assert parse("ghost", PUBLISHED, event_hint=event) == Notification("upsert", GHOST_ID, event)


@pytest.mark.parametrize("event", ["post.unpublished", "post.deleted"])
def test_ghost_remove_events_take_id_from_previous_when_current_is_empty(event):
    assert parse("ghost", DELETED, event_hint=event) == Notification("remove", GHOST_ID, event)


@pytest.mark.parametrize("event", ["page.published", "post.scheduled", "tag.added", "member.added"])
def test_ghost_other_events_are_ignored(event):
    assert parse("ghost", PUBLISHED, event_hint=event) == Notification(None, None, event)


def test_ghost_pages_are_keyed_apart_from_posts():
    page = {"page": {"current": {"id": "p1"}, "previous": {}}}
    assert parse("ghost", page) == Notification("upsert", "page:p1", "")
    for event, action in [("page.published.edited", "upsert"), ("page.deleted", "remove")]:
        assert parse("ghost", page, event_hint=event) == Notification(action, "page:p1", event)
    # A page event on a post body (or the reverse) is nobody's event.
    assert parse("ghost", page, event_hint="post.published").action is None


def test_ghost_without_event_guesses_from_current():
    assert parse("ghost", PUBLISHED) == Notification("upsert", GHOST_ID, "")
    assert parse("ghost", DELETED) == Notification("remove", GHOST_ID, "")


def test_ghost_event_key_in_body_is_used_and_hint_wins():
    body = {
        "event": "post.unpublished",
        "post": {"current": {"id": "a1"}, "previous": {"status": "published"}},
    }
    assert parse("ghost", body) == Notification("remove", "a1", "post.unpublished")
    assert parse("ghost", body, event_hint="post.edited") == Notification(
        "upsert", "a1", "post.edited"
    )


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        ({"tag": {"current": {}}}, '"post"'),
        ({"post": []}, "JSON object"),
        ({"post": {"current": {"title": "no id"}, "previous": {}}}, "no id"),
        ({"post": {"current": {"id": {"nested": 1}}}}, "post id"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_ghost_malformed(body, message):
    with pytest.raises(MalformedPayload, match=message):
        parse("ghost", body, event_hint="post.published")


def test_malformed_payload_is_a_value_error():
    assert issubclass(MalformedPayload, ValueError)


# --- WordPress -----------------------------------------------------------------------------------


def test_wp_webhooks_demo_payload_with_trigger_header():
    headers = {"X-WP-Webhook-Trigger": "post_create"}
    assert parse("wordpress", WP_CREATE, headers) == Notification("upsert", "1234", "post_create")


@pytest.mark.parametrize(
    "event, action",
    [
        ("post_create", "upsert"),
        ("post_update", "upsert"),
        ("post_delete", "remove"),
        ("post_trash", "remove"),
    ],
)
def test_wordpress_events_from_hint(event, action):
    assert parse("wordpress", WP_CREATE, event_hint=event) == Notification(action, "1234", event)


def test_wordpress_event_from_body_trigger_and_woocommerce_topic():
    assert parse("wordpress", {"trigger": "post_trash", "post_id": 7}).action == "remove"
    woo = parse("wordpress", {"id": 99}, headers={"x-wc-webhook-topic": "post.deleted"})
    assert woo == Notification("remove", "99", "post.deleted")


def test_wordpress_without_event_upserts_so_the_importer_decides():
    assert parse("wordpress", {"id": 99}) == Notification("upsert", "99", "")
    post_only = {"post": {"ID": 12, "post_type": "post"}}
    assert parse("wordpress", post_only) == Notification("upsert", "12", "")


def test_wordpress_other_post_types_and_events_are_ignored():
    page = json.loads(WP_CREATE)
    page["post"]["post_type"] = "page"
    assert parse("wordpress", page, event_hint="post_create") == Notification(
        None, None, "post_create"
    )
    assert parse("wordpress", WP_CREATE, event_hint="user_register").action is None
    assert (
        parse("wordpress", {"id": 5}, headers={"X-WC-Webhook-Topic": "order.created"}).action
        is None
    )


def test_woocommerce_creation_ping_is_ignored_not_malformed():
    assert parse("wordpress", b"webhook_id=15") == Notification(None, None, "ping")


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not a payload", "not valid JSON"),
        (b"post_meta[x]=1", "post_id"),
        ({"post_meta": {}}, "post_id"),
        ({"post_id": True}, "post id"),
        ({"post": "1234"}, "JSON object"),
    ],
)
def test_wordpress_malformed(body, message):
    with pytest.raises(MalformedPayload, match=message):
        parse("wordpress", body, event_hint="post_update")


# --- Standard Webhooks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "event, action",
    [
        ("post.published", "upsert"),
        ("post.updated", "upsert"),
        ("post.deleted", "remove"),
        ("post.unpublished", "remove"),
    ],
)
def test_standard_webhooks_payloads(event, action):
    body = {"type": event, "timestamp": "2024-03-07T10:00:00Z", "data": {"id": 42}}
    assert parse("standard-webhooks", body) == Notification(action, "42", event)


def test_standard_webhooks_unknown_type_ignored_and_accepted_by_native_kinds():
    assert parse("standard-webhooks", {"type": "comment.created", "data": {}}).action is None
    body = {"type": "post.updated", "data": {"id": "abc"}}
    assert parse("ghost", body) == Notification("upsert", "abc", "post.updated")
    assert parse("wordpress", body) == Notification("upsert", "abc", "post.updated")


@pytest.mark.parametrize(
    "body, message",
    [
        ({"data": {"id": 1}}, '"type"'),
        ({"type": "post.published", "data": {}}, "data.id"),
        ({"type": "post.published", "data": [1]}, "JSON object"),
        (b"", "not valid JSON"),
    ],
)
def test_standard_webhooks_malformed(body, message):
    with pytest.raises(MalformedPayload, match=message):
        parse("standard-webhooks", body)


# --- Feeds ---------------------------------------------------------------------------------------


def test_feed_websub_delivery_means_refetch_everything():
    rss = (DATA / "rss2_blog.xml").read_bytes()
    assert parse("feed", rss) == Notification("upsert", None, "websub")
    assert parse("feed", (DATA / "json_feed_1_1.json").read_bytes()) == Notification(
        "upsert", None, "websub"
    )


def test_feed_standard_webhooks_ping_means_refetch_everything():
    body = {"type": "post.published", "data": {"url": "https://blog.example.org/x/"}}
    assert parse("feed", body) == Notification("upsert", None, "post.published")


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"{oops", "not valid JSON"),
        (b"hello", "neither XML"),
        ({"a": 1}, "JSON Feed"),
    ],
)
def test_feed_malformed(body, message):
    with pytest.raises(MalformedPayload, match=message):
        parse("feed", body)


def test_unknown_kind():
    with pytest.raises(ValueError, match="ghost, wordpress, feed"):
        parse("medium", b"{}")


# -- WP Webhooks' real payloads, as JSON or form-encoded ----------------------------------------


def http_build_query(data, prefix=None):
    """PHP's http_build_query() of ``data`` (what WP Webhooks sends as form data)."""
    from urllib.parse import quote_plus

    pairs = []
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, dict | list):
            pairs.append(http_build_query(value, name))
        else:
            text = "" if value is None else str(value)
            pairs.append(f"{quote_plus(name)}={quote_plus(text)}")
    return "&".join(pair for pair in pairs if pair)


def wp_payload(post_type="post"):
    payload = json.loads(WP_CREATE)
    payload["post"]["post_type"] = post_type
    return payload


@pytest.mark.parametrize(
    ("trigger", "action"),
    [
        ("post_create", "upsert"),
        ("post_update", "upsert"),
        ("post_trash", "remove"),
        ("post_delete", "remove"),
    ],
)
@pytest.mark.parametrize("encoding", ["json", "form"])
def test_wp_webhooks_whole_post_payloads(trigger, action, encoding):
    payload = wp_payload()
    body = (
        json.dumps(payload).encode() if encoding == "json" else http_build_query(payload).encode()
    )
    note = parse("wordpress", body, event_hint=trigger)
    assert note == Notification(action=action, remote_id="1234", event=trigger)


def test_wp_webhooks_form_payload_keeps_the_nested_fields():
    from collective.plonecelery.blogs.verify.forms import parse_php_form

    payload = wp_payload()
    parsed = parse_php_form(http_build_query(payload).encode())
    assert parsed["post"]["post_title"] == "Hello world!"
    assert parsed["post_meta"]["key_5"] == {"0": "a:0:{}"}  # PHP lists are numbered
    assert parsed["taxonomies"]["category"]["secondcat"]["name"] == "Second Cat"
    assert parsed["post_thumbnail"] == "https://mydomain.com/images/image.jpg"


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_wp_webhooks_pages_are_ignored_in_both_encodings(encoding):
    payload = wp_payload("page")
    body = (
        json.dumps(payload).encode() if encoding == "json" else http_build_query(payload).encode()
    )
    assert parse("wordpress", body, event_hint="post_update").action is None


@pytest.mark.parametrize(
    "body",
    [b"post[=1", b"a[b]=1&a[]=2", b"a" + b"[x]" * 20 + b"=1", b"\xff=1"],
)
def test_unreadable_form_bodies_are_malformed(body):
    with pytest.raises(MalformedPayload):
        parse("wordpress", body, event_hint="post_update")
