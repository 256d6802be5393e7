"""The WordPress REST API reader against a local server serving wordpress-develop's fixtures.

The server listens on 127.0.0.1, so the configs set ``allow_private=True`` (the SSRF guard
refuses loopback otherwise, as test_sources_http checks).
"""

import base64
import datetime
import json
from pathlib import Path

import pytest

from collective.plonecelery.blogs.config import SourceConfig
from collective.plonecelery.blogs.readers import wordpress
from collective.plonecelery.exceptions import FetchError
from collective.plonecelery.exceptions import PostGone

DATA = Path(__file__).parent / "data"
API = "/wp-json/wp/v2/posts"


def fixture(name):
    return json.loads((DATA / name).read_text())


@pytest.fixture
def config(httpserver):
    return SourceConfig(
        id="wp",
        title="WordPress",
        kind="wordpress",
        api_url=httpserver.url_for("/"),
        scheme="hmac-sha256-base64",
        secret="s",
        allow_private=True,  # test server on loopback
    )


def test_fetch_post_maps_embedded_response(httpserver, config):
    httpserver.expect_request(f"{API}/4", query_string="_embed").respond_with_json(
        fixture("wp_rest_v2_post_embedded.json")
    )
    post = wordpress.fetch_post(config, "4")
    assert post.remote_id == "4"
    assert post.url == "https://wp.example.org/2017/02/14/restapi-client-fixture-post/"
    assert post.title == "Café “news”"
    assert post.html == (
        "<p>Updated post content.</p>\n"
        '<p><img src="https://wp.example.org/wp-content/uploads/a.jpg"></p>\n'
    )
    assert post.excerpt == "REST API Client Fixture: Post"
    assert post.published == datetime.datetime(2017, 2, 14, tzinfo=datetime.UTC)
    assert post.modified == datetime.datetime(2017, 2, 14, tzinfo=datetime.UTC)
    assert post.tags == ["Plone", "Rock & Roll"]  # categories are not tags
    assert post.authors == ["Wendy Press"]
    assert post.image_url == "https://wp.example.org/wp-content/uploads/featured.jpg"
    assert post.status == "published"


def test_fetch_post_verbatim_fixture_without_embed(httpserver, config):
    httpserver.expect_request(f"{API}/4").respond_with_json(fixture("wp_rest_v2_post_model.json"))
    post = wordpress.fetch_post(config, 4)
    assert (post.title, post.tags, post.authors, post.image_url) == (
        "REST API Client Fixture: Post",
        [],
        [],
        None,
    )
    assert post.url == "http://example.org/?p=4"


def test_basic_auth_with_application_password(httpserver, config):
    config.username, config.app_password = "editor", "abcd efgh ijkl"
    token = base64.b64encode(b"editor:abcd efgh ijkl").decode()
    draft = fixture("wp_rest_v2_post_model.json") | {"status": "draft"}
    httpserver.expect_request(
        f"{API}/4", headers={"Authorization": f"Basic {token}"}
    ).respond_with_json(draft)
    assert wordpress.fetch_post(config, "4").status == "draft"


@pytest.mark.parametrize("status", [401, 403, 404, 410])
def test_anonymous_not_found_or_forbidden_means_gone(httpserver, config, status):
    body = {
        "code": "rest_forbidden",
        "message": "Sorry, you are not allowed to do that.",
        "data": {"status": status},
    }
    httpserver.expect_request(f"{API}/4").respond_with_json(body, status=status)
    with pytest.raises(PostGone):
        wordpress.fetch_post(config, "4")


def test_authenticated_401_is_a_configuration_error(httpserver, config):
    config.username, config.app_password = "editor", "wrong"
    body = {
        "code": "incorrect_password",
        "message": "The provided password is an invalid application password.",
    }
    httpserver.expect_request(f"{API}/4").respond_with_json(body, status=401)
    with pytest.raises(FetchError, match="invalid application password") as info:
        wordpress.fetch_post(config, "4")
    assert info.value.retryable is False


def test_non_numeric_id_is_refused_before_any_request(httpserver, config):
    with pytest.raises(FetchError, match="numbers"):
        wordpress.fetch_post(config, "../users/1")
    assert httpserver.log == []


def test_server_error_is_retryable(httpserver, config):
    httpserver.expect_request(f"{API}/4").respond_with_data(
        "db down", status=503, headers={"Retry-After": "30"}
    )
    with pytest.raises(FetchError) as info:
        wordpress.fetch_post(config, "4")
    assert (info.value.retryable, info.value.retry_after) == (True, 30)


def test_list_posts_uses_total_pages_header(httpserver, config):
    collection = fixture("wp_rest_v2_posts_collection.json")
    for page, total in ((1, "2"), (2, "2")):
        httpserver.expect_request(
            API, query_string=f"_embed&page={page}&per_page=20"
        ).respond_with_json(collection, headers={"X-WP-Total": "21", "X-WP-TotalPages": total})
    posts, next_page = wordpress.list_posts(config)
    assert [post.remote_id for post in posts] == ["4"] and next_page == 2
    assert wordpress.list_posts(config, page=2)[1] is None


def test_list_posts_rejects_non_list(httpserver, config):
    httpserver.expect_request(API).respond_with_json({"code": "rest_no_route"})
    with pytest.raises(FetchError, match="not a list"):
        wordpress.list_posts(config)


def test_test_connection(httpserver, config):
    httpserver.expect_request(API, query_string="_embed&page=1&per_page=1").respond_with_json(
        fixture("wp_rest_v2_posts_collection.json"),
        headers={"X-WP-Total": "7", "X-WP-TotalPages": "7"},
    )
    summary = wordpress.test_connection(config)
    assert summary["total"] == 7
    assert summary["sample"]["remote_id"] == "4"
    assert summary["sample"]["published"] == "2017-02-14T00:00:00+00:00"
