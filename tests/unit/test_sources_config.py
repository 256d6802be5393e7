"""SourceConfig validation, redaction and (de)serialisation."""

import dataclasses

import pytest

from collective.plonecelery.blogs.config import SourceConfig

SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def make(**changes):
    base = {
        "id": "my-blog_1",
        "title": "My blog",
        "kind": "ghost",
        "api_url": "https://blog.example.org",
        "api_key": "22444f78447824223cefc48062",
        "secret": SW_SECRET,
    }
    return SourceConfig(**{**base, **changes})


def test_defaults_are_valid_and_as_documented():
    config = make()
    config.validate()
    assert config.scheme == "standard-webhooks"
    assert config.portal_type == "News Item"
    assert config.import_user == "plonecelery-importer"
    assert config.transition == "publish"
    assert config.on_remove == "retract"
    assert config.iframe_hosts == ("www.youtube.com", "player.vimeo.com")
    assert config.tolerance == 300
    assert config.insecure is False and config.allow_private is False


def test_allowed_hosts_are_api_host_plus_cdn_hosts():
    config = make(
        api_url="https://Blog.Example.org:8443/sub",
        cdn_hosts=("cdn.example.org", "blog.example.org"),
    )
    assert config.api_host == "blog.example.org"
    # The API's origin (port included), the CDN hosts on their default ports.
    assert config.allowed_hosts == (
        "https://blog.example.org:8443",
        "cdn.example.org",
        "blog.example.org",
    )


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"id": "My Blog"}, "a-z, 0-9"),
        ({"id": ""}, "a-z, 0-9"),
        ({"id": "a/b"}, "a-z, 0-9"),
        ({"kind": "medium"}, "ghost, wordpress, feed"),
        ({"scheme": "md5"}, "valid schemes"),
        ({"scheme": "none", "secret": ""}, "insecure=True"),
        ({"api_url": "ftp://blog.example.org"}, "http"),
        ({"api_url": "blog.example.org"}, "http"),
        ({"api_url": "https://user:pw@blog.example.org"}, "credentials"),
        ({"secret": ""}, "secret"),
        ({"scheme": "github", "secret": ""}, "secret"),
        ({"secret": "not base64 at all!"}, "base64"),
        ({"scheme": "ghost", "secret": "s", "header_name": "X-Foo"}, "header_name"),
        ({"api_key": ""}, "Content API key"),
        ({"kind": "wordpress", "username": "editor"}, "both username and app_password"),
        (
            {
                "kind": "wordpress",
                "username": "u",
                "app_password": "p",
                "api_url": "http://wp.example.org",
            },
            "https",
        ),
        ({"on_remove": "archive"}, "retract, delete"),
        ({"volto_blocks": "yes"}, "auto, on, off"),
        ({"portal_type": ""}, "portal_type"),
        ({"tolerance": 0}, "tolerance"),
        ({"sync_hours": -1.0}, "sync_hours must be 0"),
        ({"poll_minutes": 5.0}, "feed sources only"),
        ({"sync_max_posts": 0}, "between 1 and 500"),
        ({"cdn_hosts": ("https://cdn.example.org/x",)}, "bare host"),
        ({"iframe_hosts": ("www.youtube.com:443",)}, "bare host"),
        ({"websub": True}, "feed sources only"),
        ({"kind": "feed", "api_key": "", "websub": True}, "set scheme to 'websub'"),
        ({"hub_url": "https://hub.example.org/"}, "only used with websub"),
        (
            {"kind": "feed", "scheme": "websub", "websub": True, "hub_url": "hub.example.org"},
            "absolute http",
        ),
        (
            {
                "kind": "feed",
                "scheme": "websub",
                "websub": True,
                "hub_url": "https://u:p@hub.example.org/",
            },
            "credentials",
        ),
        ({"kind": "feed", "scheme": "websub", "secret": ""}, "needs the webhook secret"),
    ],
)
def test_validate_rejects_with_clear_message(changes, message):
    with pytest.raises(ValueError, match=message):
        make(**changes).validate()


def test_a_websub_source_needs_no_secret_of_its_own():
    # The subscription's secret is made by the worker (blogs/subscriptions.py).
    config = make(kind="feed", scheme="websub", secret="", api_key="", websub=True)
    config.validate()
    make(
        kind="feed", scheme="websub", secret="", websub=True, hub_url="https://hub.example.org/"
    ).validate()
    assert config.to_dict()["websub"] is True and config.to_dict()["hub_url"] == ""
    with pytest.raises(ValueError, match="websub must be true or false"):
        SourceConfig.from_dict({**config.to_dict(include_secrets=True), "websub": "yes"})


def test_validate_accepts_the_variants():
    make(scheme="none", secret="", insecure=True).validate()
    make(scheme="hmac-sha256-base64", secret="s", header_name="X-WC-Webhook-Signature").validate()
    make(
        kind="feed",
        api_key="",
        api_url="http://blog.example.org/feed.xml",
        scheme="websub",
        secret="s",
    ).validate()
    make(
        kind="wordpress",
        api_key="",
        username="u",
        app_password="abcd efgh",
        scheme="github",
        secret="s",
    ).validate()
    make(
        kind="wordpress", username="u", app_password="p", api_url="http://wp.local", insecure=True
    ).validate()
    make(cdn_hosts=("cdn.example.org", "10.0.0.5", "::1")).validate()


def test_to_dict_redacts_secrets_unless_asked():
    config = make(kind="wordpress", username="u", app_password="pw", cdn_hosts=("cdn.example.org",))
    public = config.to_dict()
    assert public["secret"] == {"set": True}
    assert public["api_key"] == {"set": True}
    assert public["app_password"] == {"set": True}
    assert make(api_key="").to_dict()["api_key"] == {"set": False}
    assert SW_SECRET not in repr(public) and "pw" not in repr(public.values())
    assert public["cdn_hosts"] == ["cdn.example.org"]
    full = config.to_dict(include_secrets=True)
    assert full["secret"] == SW_SECRET and full["app_password"] == "pw"


def test_from_dict_round_trips_and_ignores_unknown_keys():
    config = make(cdn_hosts=("cdn.example.org",), allow_private=True, tolerance=60)
    data = {**config.to_dict(include_secrets=True), "unknown": "ignored", "created": 123}
    assert SourceConfig.from_dict(data) == config


def test_from_dict_uses_defaults_for_absent_optional_keys():
    config = SourceConfig.from_dict(
        {"id": "b", "title": "B", "kind": "feed", "api_url": "https://b.example.org/rss"}
    )
    assert config == SourceConfig(
        id="b", title="B", kind="feed", api_url="https://b.example.org/rss"
    )


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"insecure": "yes"}, "true or false"),
        ({"allow_private": 1}, "true or false"),
        ({"tolerance": "300"}, "integer"),
        ({"tolerance": True}, "integer"),
        ({"cdn_hosts": "cdn.example.org"}, "list of host names"),
        ({"iframe_hosts": [1]}, "list of host names"),
        ({"title": 5}, "string"),
        ({"secret": {"set": True}}, "redacted"),
        ({"sync_hours": "2"}, "must be a number"),
        ({"poll_minutes": True}, "must be a number"),
        ({"sync_max_posts": 2.5}, "integer"),
    ],
)
def test_from_dict_rejects_wrong_types(changes, message):
    data = {**make().to_dict(include_secrets=True), **changes}
    with pytest.raises(ValueError, match=message):
        SourceConfig.from_dict(data)


def test_from_dict_requires_identity_fields():
    data = make().to_dict(include_secrets=True)
    for field in ("id", "title", "kind", "api_url"):
        with pytest.raises(ValueError, match=field):
            SourceConfig.from_dict({k: v for k, v in data.items() if k != field})
    with pytest.raises(ValueError, match="dict"):
        SourceConfig.from_dict(["not", "a", "dict"])


def test_field_names_match_the_documented_list():
    assert [field.name for field in dataclasses.fields(SourceConfig)] == [
        *(
            "id",
            "title",
            "kind",
            "api_url",
            "api_key",
            "username",
            "app_password",
            "scheme",
            "secret",
        ),
        *(
            "header_name",
            "insecure",
            "target",
            "portal_type",
            "import_user",
            "transition",
            "on_remove",
        ),
        *("cdn_hosts", "allow_private", "iframe_hosts", "tolerance", "volto_blocks"),
        *("sync_hours", "poll_minutes", "sync_max_posts", "ghost_pages", "page_portal_type"),
        *("websub", "hub_url"),
    ]


def test_sources_stored_before_the_schedule_keep_working_unscheduled():
    stored = make().to_dict(include_secrets=True)
    for key in ("sync_hours", "poll_minutes", "sync_max_posts"):
        del stored[key]
    config = SourceConfig.from_dict(stored)
    config.validate()
    assert (config.sync_interval, config.sync_max_posts) == (0.0, 30)


def test_sync_interval_is_hours_or_a_feeds_poll_minutes():
    assert make(sync_hours=2).sync_interval == 7200.0
    feed = make(kind="feed", api_key="", api_url="https://b.example.org/feed", sync_hours=2)
    assert feed.sync_interval == 7200.0
    feed.poll_minutes = 5.0
    feed.validate()
    assert feed.sync_interval == 300.0
