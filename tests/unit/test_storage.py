"""Sources stored in a Plone site: validation, secrets, target folders, the import user's roles."""

from __future__ import annotations

import pytest
import transaction
from plone import api
from zope.annotation.interfaces import IAnnotations

from collective.plonecelery.blogs import deliveries
from collective.plonecelery.blogs import storage
from collective.plonecelery.blogs.config import SourceConfig

pytestmark = pytest.mark.timeout(900)

IMPORT_USER = "plonecelery-importer"


@pytest.fixture
def portal(layers):
    for layer in layers:
        layer.testSetUp()
    portal = layers[-1]["portal"]
    try:
        with api.env.adopt_roles(["Manager"]):
            api.content.create(container=portal, type="Folder", id="news", title="News")
            api.content.create(container=portal["news"], type="Folder", id="blog", title="Blog")
            api.content.create(container=portal, type="Document", id="page", title="Page")
            for userid in (IMPORT_USER, "other-importer"):
                if api.user.get(userid=userid) is None:
                    api.user.create(email=f"{userid}@example.org", username=userid)
            yield portal
    finally:
        transaction.abort()
        for layer in reversed(layers):
            layer.testTearDown()


def config(**overrides) -> SourceConfig:
    data = {
        "id": "blog",
        "title": "Blog",
        "kind": "ghost",
        "api_url": "https://blog.example.org",
        "api_key": "content-key",
        "scheme": "ghost",
        "secret": "s3cret",
        "target": "news",
    }
    data.update(overrides)
    return SourceConfig.from_dict(data)


def local_roles(obj, userid=IMPORT_USER):
    return set(obj.get_local_roles_for_userid(userid))


def test_add_get_list(portal):
    storage.add_source(config(), portal=portal)
    storage.add_source(config(id="another", title="Another"), portal=portal)
    stored = storage.get_source("blog", portal=portal)
    assert stored == config()
    assert stored.secret == "s3cret"  # the endpoint needs it
    assert [source.id for source in storage.list_sources(portal=portal)] == ["another", "blog"]
    # Plain persistent types in the site's annotations, secrets included.
    raw = IAnnotations(portal)[storage.ANNOTATION_KEY]["blog"]
    assert type(raw).__name__ == "PersistentMapping"
    assert raw["secret"] == "s3cret"


def test_to_dict_never_shows_secrets(portal):
    storage.add_source(config(app_password=""), portal=portal)
    data = storage.get_source("blog", portal=portal).to_dict()
    assert data["secret"] == {"set": True}
    assert data["api_key"] == {"set": True}
    assert data["app_password"] == {"set": False}
    assert "s3cret" not in repr(data)


def test_unknown_source(portal):
    assert storage.list_sources(portal=portal) == []
    with pytest.raises(storage.UnknownSource, match="no blog source with id 'nope'"):
        storage.get_source("nope", portal=portal)
    with pytest.raises(KeyError):
        storage.remove_source("nope", portal=portal)
    # Reading did not create the storage.
    assert storage.ANNOTATION_KEY not in IAnnotations(portal)


def test_add_grants_the_import_user_roles_on_the_target_only(portal):
    storage.add_source(config(), portal=portal)
    assert local_roles(portal["news"]) == {"Contributor", "Editor", "Reviewer"}
    assert "Contributor" in api.user.get_roles(username=IMPORT_USER, obj=portal["news"])
    assert "Contributor" not in api.user.get_roles(username=IMPORT_USER, obj=portal)
    assert "Manager" not in api.user.get_roles(username=IMPORT_USER, obj=portal["news"])


def test_add_creates_the_delivery_log(portal):
    storage.add_source(config(), portal=portal)
    assert deliveries.ANNOTATION_KEY in IAnnotations(portal)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "medium"}, "unknown source kind"),
        ({"scheme": "ghost", "secret": ""}, "needs the webhook secret"),
        ({"scheme": "none"}, "insecure"),
        ({"target": ""}, "has no target"),
        ({"target": "missing"}, "is not a folder of the site"),
        ({"target": "page"}, "is not a folder of the site"),
        ({"target": "news/news"}, "is not a folder of the site"),  # no acquisition
        ({"target": "acl_users"}, "is not a folder of the site"),
        ({"import_user": "nobody"}, "import user 'nobody' does not exist"),
    ],
)
def test_add_refuses_what_cannot_work(portal, overrides, message):
    with pytest.raises(ValueError, match=message):
        storage.add_source(config(**overrides), portal=portal)
    assert storage.list_sources(portal=portal) == []


def test_add_refuses_a_taken_id(portal):
    storage.add_source(config(), portal=portal)
    with pytest.raises(ValueError, match="exists already"):
        storage.add_source(config(title="Again"), portal=portal)
    assert storage.get_source("blog", portal=portal).title == "Blog"


@pytest.mark.parametrize("target", ["news/blog", "/news/blog", "/plone/news/blog", "news/blog/"])
def test_target_by_path(portal, target):
    assert storage.resolve_target(config(target=target), portal=portal) == portal["news"]["blog"]


def test_target_by_uid(portal):
    uid = api.content.get_uuid(portal["news"]["blog"])
    storage.add_source(config(target=uid), portal=portal)
    stored = storage.get_source("blog", portal=portal)
    assert storage.resolve_target(stored, portal=portal) == portal["news"]["blog"]
    assert local_roles(portal["news"]["blog"]) == {"Contributor", "Editor", "Reviewer"}


def test_update_keeps_absent_or_empty_secrets(portal):
    storage.add_source(config(), portal=portal)
    storage.update_source("blog", {"title": "New title", "secret": ""}, portal=portal)
    storage.update_source("blog", {"api_key": None}, portal=portal)
    storage.update_source("blog", {"secret": {"set": True}}, portal=portal)  # echoed from GET
    stored = storage.get_source("blog", portal=portal)
    assert (stored.title, stored.secret, stored.api_key) == ("New title", "s3cret", "content-key")
    storage.update_source("blog", {"secret": "rotated"}, portal=portal)
    assert storage.get_source("blog", portal=portal).secret == "rotated"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": "renamed"}, "cannot change"),
        ({"colour": "red"}, "unknown source field"),
        ({"tolerance": "300"}, "tolerance must be an integer"),
        ({"api_url": "ftp://blog"}, "must be an absolute http"),
        ({"target": "missing"}, "is not a folder"),
    ],
)
def test_update_refuses_invalid_changes(portal, changes, message):
    storage.add_source(config(), portal=portal)
    with pytest.raises(ValueError, match=message):
        storage.update_source("blog", changes, portal=portal)
    assert storage.get_source("blog", portal=portal) == config()


def test_update_moves_the_roles_with_the_target(portal):
    storage.add_source(config(), portal=portal)
    storage.update_source("blog", {"target": "news/blog"}, portal=portal)
    assert local_roles(portal["news"]["blog"]) == {"Contributor", "Editor", "Reviewer"}
    assert local_roles(portal["news"]) == set()


def test_update_moves_the_roles_to_a_new_import_user(portal):
    storage.add_source(config(), portal=portal)
    storage.update_source("blog", {"import_user": "other-importer"}, portal=portal)
    assert local_roles(portal["news"], "other-importer") == {"Contributor", "Editor", "Reviewer"}
    assert local_roles(portal["news"]) == set()


def test_remove_revokes_roles_no_other_source_needs(portal):
    portal["news"].manage_addLocalRoles(IMPORT_USER, ["Reader"])  # given by hand: stays
    storage.add_source(config(), portal=portal)
    storage.add_source(config(id="second"), portal=portal)
    storage.remove_source("blog", portal=portal)
    # "second" imports into the same folder as the same user: the roles stay.
    assert local_roles(portal["news"]) == {"Contributor", "Editor", "Reviewer", "Reader"}
    storage.remove_source("second", portal=portal)
    assert local_roles(portal["news"]) == {"Reader"}
    assert storage.list_sources(portal=portal) == []


def test_config_from_data_refuses_unknown_fields():
    with pytest.raises(ValueError, match="unknown source field.*'colour'"):
        storage.config_from_data({"id": "b", "title": "B", "kind": "feed", "colour": "red"})
    with pytest.raises(ValueError, match="missing 'api_url'"):
        storage.config_from_data({"id": "b", "title": "B", "kind": "feed"})


def test_schedule_lease_and_due_sources(portal):
    from collective.plonecelery.blogs.importer import schedule

    assert schedule.take_lease(portal, owner="w1", now=1000.0)
    assert not schedule.take_lease(portal, owner="w2", now=1001.0)
    assert schedule.take_lease(portal, owner="w1", now=1001.0)  # its own lease, renewed
    assert schedule.take_lease(portal, owner="w2", now=1001.0 + schedule.LEASE_SECONDS)
    schedule.release_lease(portal)
    assert schedule.take_lease(portal, owner="w1", now=1002.0)

    hourly = config(id="hourly", sync_hours=1.0)
    feed = config(id="feed", kind="feed", api_key="", poll_minutes=10.0)
    never = config(id="never")
    runs = {"hourly": {"last_run": 1000.0}, "feed": {"last_run": 1000.0}}
    assert schedule.due([hourly, feed, never], runs, now=1599.0) == []
    assert schedule.due([hourly, feed, never], runs, now=1600.0) == [feed]
    assert schedule.due([hourly, feed, never], runs, now=4600.0) == [hourly, feed]
    assert schedule.due([hourly], {}, now=0.0) == [hourly]  # never run: due at once


def test_feed_validators_and_304_counts(portal):
    assert storage.feed_validators("feed", portal=portal) == {}
    storage.note_feed_read("feed", etag='"v1"', last_modified="", portal=portal)
    assert storage.feed_validators("feed", portal=portal) == {"etag": '"v1"'}
    storage.note_feed_read("feed", not_modified=True, portal=portal)
    storage.note_feed_read("feed", not_modified=True, portal=portal)
    assert storage.feed_counts("feed", portal=portal) == {"not_modified": 2}
    # A pause of the same source keeps the validators (one state mapping).
    storage.pause_source("feed", until=2e9, reason="429", portal=portal)
    assert storage.feed_validators("feed", portal=portal) == {"etag": '"v1"'}
