"""The RSS/Atom/JSON Feed reader against a local server.

The server listens on 127.0.0.1, so the configs set ``allow_private=True`` (the SSRF guard
refuses loopback otherwise, as test_sources_http checks).
"""

import datetime
from pathlib import Path

import pytest

from collective.plonecelery.blogs.config import SourceConfig
from collective.plonecelery.blogs.readers import feed
from collective.plonecelery.exceptions import FetchError
from collective.plonecelery.exceptions import PostGone

DATA = Path(__file__).parent / "data"
UTC = datetime.UTC


def make_config(httpserver, path):
    return SourceConfig(
        id="feed",
        title="Feed",
        kind="feed",
        api_url=httpserver.url_for(path),
        scheme="websub",
        secret="hub-secret",
        allow_private=True,  # test server on loopback
    )


def serve(httpserver, path, name, content_type):
    httpserver.expect_request(path).respond_with_data(
        (DATA / name).read_bytes(), content_type=content_type
    )
    return make_config(httpserver, path)


def test_rss2(httpserver):
    config = serve(httpserver, "/rss", "rss2_blog.xml", "application/rss+xml")
    posts, next_page = feed.list_posts(config)
    assert next_page is None
    first, second = posts
    assert first.remote_id == "tag:blog.example.org,2024:post-42"
    assert first.url == "https://blog.example.org/2024/fish-and-chips/"
    assert first.title == "Fish & chips"
    # feedparser resolves relative URLs against the feed's own URL; the script is gone.
    assert (
        first.html == '<p>Full text about fish.</p><p><img alt="fish" '
        f'src="{httpserver.url_for("/images/fish.jpg")}"></p>'
    )
    assert first.excerpt == "Short summary of fish."
    assert first.published == datetime.datetime(2024, 3, 5, 9, 30, tzinfo=UTC)
    assert first.tags == ["Food", "Friday"]
    assert first.authors == ["Jane Doe"]
    assert first.image_url == "https://cdn.example.org/fish-thumb.jpg"
    # No guid: the link identifies it; the author's e-mail address is dropped.
    assert second.remote_id == "https://blog.example.org/2024/no-guid/"
    assert second.authors == ["Bob Builder"]
    assert second.excerpt == "Only a description, which is the whole post."


def test_atom(httpserver):
    config = serve(httpserver, "/atom", "atom_blog.xml", "application/atom+xml")
    (post,) = feed.list_posts(config)[0]
    assert post.remote_id == "urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a"
    assert post.title == "Atom & friends"
    assert "javascript" not in post.html and "Atom body" in post.html
    assert post.published == datetime.datetime(2024, 3, 6, 7, 0, tzinfo=UTC)
    assert post.modified == datetime.datetime(2024, 3, 6, 11, 0, tzinfo=UTC)
    assert post.authors == ["Ann Author"]
    assert post.tags == ["atom"]
    assert post.image_url == "https://cdn.example.org/atom.png"


def test_json_feed_detected_by_content_type_or_leading_brace(httpserver):
    for content_type in ("application/feed+json", "text/plain"):
        httpserver.clear()
        config = serve(httpserver, "/feed.json", "json_feed_1_1.json", content_type)
        second, first = feed.list_posts(config)[0]
        assert second.remote_id == "2"
        assert "youtube.com/embed/abc" in second.html
        assert second.modified == datetime.datetime(2024, 3, 7, 10, 30, tzinfo=UTC)
        assert second.tags == ["json", "feeds"] and second.authors == ["Jay Son"]
        assert second.image_url == "https://cdn.example.org/second.png"
        assert first.remote_id == "1"
        assert first.url == httpserver.url_for(
            "/first-item/"
        )  # relative URL resolved against the feed
        assert (
            first.html == "<p>Plain text first item.</p>"
            "<p>Second paragraph with &lt;b&gt;angle brackets&lt;/b&gt;.</p>"
        )
        assert first.authors == []  # only an e-mail address was given


def test_fetch_post_by_id_and_gone_when_absent(httpserver):
    config = serve(httpserver, "/rss", "rss2_blog.xml", "application/rss+xml")
    assert feed.fetch_post(config, "tag:blog.example.org,2024:post-42").title == "Fish & chips"
    with pytest.raises(PostGone):
        feed.fetch_post(config, "tag:blog.example.org,2024:post-1")


def test_pages_after_the_first_are_empty(httpserver):
    config = serve(httpserver, "/rss", "rss2_blog.xml", "application/rss+xml")
    assert feed.list_posts(config, page=2) == ([], None)
    assert httpserver.log == []


@pytest.mark.parametrize(
    "body, content_type, message",
    [
        (b"<html><body>Not a feed</body></html>", "text/html", "not an RSS/Atom/JSON feed"),
        (b'{"hello": "world"}', "application/json", "not a JSON Feed"),
    ],
)
def test_not_a_feed(httpserver, body, content_type, message):
    httpserver.expect_request("/x").respond_with_data(body, content_type=content_type)
    with pytest.raises(FetchError, match=message) as info:
        feed.list_posts(make_config(httpserver, "/x"))
    assert info.value.retryable is False


def test_missing_feed_is_a_configuration_error(httpserver):
    httpserver.expect_request("/gone").respond_with_data("", status=404)
    with pytest.raises(FetchError, match="feed URL"):
        feed.list_posts(make_config(httpserver, "/gone"))


def test_test_connection(httpserver):
    config = serve(httpserver, "/rss", "rss2_blog.xml", "application/rss+xml")
    summary = feed.test_connection(config)
    assert summary["kind"] == "feed" and summary["total"] == 2
    assert summary["sample"]["title"] == "Fish & chips"


TOMBSTONED = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:at="http://purl.org/atompub/tombstones/1.0">
  <title>Blog</title>
  <id>urn:blog</id>
  <updated>2024-03-06T12:00:00Z</updated>
  <at:deleted-entry ref="tag:blog,2024:1" when="2024-03-06T10:00:00Z"/>
  <at:deleted-entry ref="tag:blog,2024:2" when="2024-03-06T11:00:00Z">
    <at:comment>spam</at:comment></at:deleted-entry>
  <entry><id>tag:blog,2024:3</id><title>Kept</title><updated>2024-03-06T09:00:00Z</updated>
    <content type="html">&lt;p&gt;Body&lt;/p&gt;</content></entry>
</feed>"""


def test_tombstones_are_all_read_where_feedparser_keeps_one(httpserver):
    httpserver.expect_request("/atom").respond_with_data(
        TOMBSTONED, content_type="application/atom+xml"
    )
    read = feed.read_changes(make_config(httpserver, "/atom"))
    assert read.deleted == ["tag:blog,2024:1", "tag:blog,2024:2"]
    assert [post.remote_id for post in read.posts] == ["tag:blog,2024:3"]
    assert feed.tombstones(b'{"version": "https://jsonfeed.org/version/1.1"}') == []
    # No entity expansion: a billion-laughs feed yields nothing, quickly.
    bomb = b'<!DOCTYPE f [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><f>&b;</f>'
    assert feed.tombstones(bomb) == []


def test_conditional_get_answers_304_on_a_matching_etag(httpserver):
    from werkzeug import Response

    def respond(request):
        if request.headers.get("If-None-Match") == '"v1"':
            return Response(status=304, headers={"ETag": '"v1"'})
        return Response(
            TOMBSTONED,
            content_type="application/atom+xml",
            headers={"ETag": '"v1"', "Last-Modified": "Wed, 06 Mar 2024 12:00:00 GMT"},
        )

    httpserver.expect_request("/atom").respond_with_handler(respond)
    config = make_config(httpserver, "/atom")
    first = feed.read_changes(config)
    assert (first.not_modified, first.etag, first.last_modified) == (
        False,
        '"v1"',
        "Wed, 06 Mar 2024 12:00:00 GMT",
    )
    again = feed.read_changes(config, etag=first.etag, last_modified=first.last_modified)
    assert (again.not_modified, again.posts, again.etag) == (True, [], '"v1"')
    sent = httpserver.log[-1][0].headers
    assert sent["If-Modified-Since"] == "Wed, 06 Mar 2024 12:00:00 GMT"
    # Without validators a 304 is an error, as before (nobody asked "unless unchanged").
    with pytest.raises(FetchError, match="304"):
        httpserver.clear()
        httpserver.expect_request("/atom").respond_with_data("", status=304)
        feed.read_feed(config)
