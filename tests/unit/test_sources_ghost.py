"""The Ghost Content API reader against a local server serving the real v2 demo responses.

The server listens on 127.0.0.1, so the configs set ``allow_private=True`` (the SSRF guard
refuses loopback otherwise, as test_sources_http checks).
"""

import datetime
import json
import re
from pathlib import Path

import pytest

from collective.plonecelery.blogs.config import SourceConfig
from collective.plonecelery.blogs.readers import ghost
from collective.plonecelery.exceptions import FetchError
from collective.plonecelery.exceptions import PostGone

DATA = Path(__file__).parent / "data"
POST_ID = "5c7ece47da174000c0c5c6d7"
KEY = "22444f78447824223cefc48062"
API = "/ghost/api/content/posts/"


def fixture(name):
    return json.loads((DATA / name).read_text())


@pytest.fixture
def config(httpserver):
    return SourceConfig(
        id="ghost-demo",
        title="Ghost demo",
        kind="ghost",
        api_url=httpserver.url_for("/"),
        api_key=KEY,
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        allow_private=True,  # test server on loopback
    )


def expect_read(httpserver, payload, status=200):
    """One post is read through the browse endpoint, filtered by id (never a 404 for gone)."""
    httpserver.expect_request(
        API,
        query_string={
            "key": KEY,
            "include": "tags,authors",
            "formats": "html",
            "filter": f"id:{POST_ID}",
            "limit": "1",
        },
        headers={"Accept-Version": "v5.0"},
    ).respond_with_json(payload, status=status)


def test_fetch_post_maps_the_content_api_response(httpserver, config):
    expect_read(httpserver, fixture("ghost_content_api_v2_posts_with_tags_authors.json"))
    post = ghost.fetch_post(config, POST_ID)
    assert post.remote_id == POST_ID
    assert post.url == "https://demo.ghost.io/welcome-short/"
    assert post.title == "Welcome"
    assert post.html == "<p>👋 Welcome, it's great to have you here.</p>"
    assert post.excerpt == "Welcome, it's great to have you here."
    assert post.published == datetime.datetime(2012, 11, 27, 15, 30, tzinfo=datetime.UTC)
    assert post.modified == datetime.datetime(2019, 3, 26, 19, 45, 31, tzinfo=datetime.UTC)
    assert post.tags == ["Getting Started"]
    assert post.authors == ["Ghost"]
    assert post.image_url == "https://casper.ghost.org/v2.0.0/images/welcome-to-ghost.jpg"
    assert post.status == "published"


def test_fetch_post_sanitises_html_and_skips_internal_tags_and_emails(httpserver, config):
    payload = fixture("ghost_content_api_v2_posts_with_tags_authors.json")
    post = payload["posts"][0]
    post["html"] = (
        '<p>Hi<img src="x.png" onerror="alert(1)"></p><script>alert(2)</script>'
        '<iframe src="https://www.youtube.com/embed/x"></iframe><iframe src="https://evil.example/"></iframe>'
    )
    post["custom_excerpt"] = None
    post["tags"].append({"name": "#internal", "visibility": "internal"})
    post["authors"].append({"name": "ghost@example.org", "email": "ghost@example.org"})
    expect_read(httpserver, payload)
    result = ghost.fetch_post(config, POST_ID)
    assert (
        "onerror" not in result.html and "<script" not in result.html and "evil" not in result.html
    )
    assert 'src="https://demo.ghost.io/welcome-short/x.png"' in result.html
    assert "youtube.com/embed/x" in result.html
    assert (
        result.excerpt == "Welcome, it's great to have you here."
    )  # falls back to the auto excerpt
    assert result.tags == ["Getting Started"]
    assert result.authors == ["Ghost"]


def test_fetch_post_404_means_gone(httpserver, config):
    expect_read(
        httpserver,
        {"errors": [{"message": "Resource not found", "type": "NotFoundError"}]},
        status=404,
    )
    with pytest.raises(PostGone, match="Resource not found"):
        ghost.fetch_post(config, POST_ID)


def test_fetch_post_empty_list_means_gone(httpserver, config):
    expect_read(httpserver, {"posts": []})
    with pytest.raises(PostGone):
        ghost.fetch_post(config, POST_ID)


def test_bad_key_is_a_permanent_error_with_ghost_message(httpserver, config):
    expect_read(httpserver, {"errors": [{"message": "Unknown Content API Key"}]}, status=401)
    with pytest.raises(FetchError, match="Unknown Content API Key") as info:
        ghost.fetch_post(config, POST_ID)
    assert info.value.retryable is False
    assert KEY not in str(info.value)


def test_non_ghost_answer_is_refused(httpserver, config):
    expect_read(httpserver, {"hello": "world"})
    with pytest.raises(FetchError, match='"posts"'):
        ghost.fetch_post(config, POST_ID)


@pytest.mark.parametrize("remote_id", ["../admin", "5c7ece47da174000c0c5c6d7,id:-x", "p-1"])
def test_an_id_that_is_no_ghost_id_is_gone_without_a_request(httpserver, config, remote_id):
    httpserver.expect_request(re.compile(".*")).respond_with_json({"posts": []})
    with pytest.raises(PostGone, match="not a Ghost post id"):
        ghost.fetch_post(config, remote_id)
    assert httpserver.log == []  # nothing reaches the filter (NQL) or the path


def test_another_post_in_the_answer_is_not_taken(httpserver, config):
    payload = fixture("ghost_content_api_v2_posts.json")
    payload["posts"][0]["id"] = "0" * 24
    expect_read(httpserver, payload)
    with pytest.raises(PostGone):
        ghost.fetch_post(config, POST_ID)


def test_list_posts_pages(httpserver, config):
    first = fixture("ghost_content_api_v2_posts.json")
    first["meta"] = {
        "pagination": {"page": 1, "limit": 15, "pages": 2, "total": 16, "next": 2, "prev": None}
    }
    httpserver.expect_request(
        API,
        query_string={
            "key": KEY,
            "include": "tags,authors",
            "formats": "html",
            "page": "1",
            "limit": "15",
        },
    ).respond_with_json(first)
    last = {
        "posts": [],
        "meta": {"pagination": {"page": 2, "limit": 15, "pages": 2, "total": 16, "next": None}},
    }
    httpserver.expect_request(
        API,
        query_string={
            "key": KEY,
            "include": "tags,authors",
            "formats": "html",
            "page": "2",
            "limit": "15",
        },
    ).respond_with_json(last)
    posts, next_page = ghost.list_posts(config)
    assert [post.remote_id for post in posts] == [POST_ID]
    assert next_page == 2
    assert ghost.list_posts(config, page=2) == ([], None)


def test_list_posts_404_means_wrong_api_url(httpserver, config):
    httpserver.expect_request(API).respond_with_data("not here", status=404)
    with pytest.raises(FetchError, match="api_url") as info:
        ghost.list_posts(config)
    assert info.value.retryable is False


def test_test_connection_summarises(httpserver, config):
    payload = fixture("ghost_content_api_v2_posts.json")
    payload["meta"] = {"pagination": {"total": 12, "next": 2}}
    httpserver.expect_request(
        API,
        query_string={
            "key": KEY,
            "include": "tags,authors",
            "formats": "html",
            "page": "1",
            "limit": "1",
        },
    ).respond_with_json(payload)
    assert ghost.test_connection(config) == {
        "kind": "ghost",
        "api_url": config.api_url,
        "total": 12,
        "sample": {
            "remote_id": POST_ID,
            "title": "Welcome",
            "url": "https://demo.ghost.io/welcome-short/",
            "published": "2012-11-27T15:30:00+00:00",
        },
    }


def test_private_address_refused_without_allow_private(httpserver, config):
    config.allow_private = False
    expect_read(httpserver, fixture("ghost_content_api_v2_posts.json"))
    with pytest.raises(FetchError, match="non-public"):
        ghost.fetch_post(config, POST_ID)
    assert httpserver.log == []
