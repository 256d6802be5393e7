"""The WordPress REST API reader against a local server serving wordpress-develop's fixtures.

The server listens on 127.0.0.1, so the configs set ``allow_private=True`` (the SSRF guard
refuses loopback otherwise, as test_sources_http checks).
"""

import base64
import datetime
import json
import re
from pathlib import Path

import pytest
from werkzeug import Response

from collective.plonecelery.blogs.config import SourceConfig
from collective.plonecelery.blogs.readers import wordpress
from collective.plonecelery.exceptions import FetchError
from collective.plonecelery.exceptions import PostGone

DATA = Path(__file__).parent / "data"
API = "/wp-json/wp/v2/posts"


def fixture(name):
    return json.loads((DATA / name).read_text())


@pytest.fixture(autouse=True)
def forget_url_forms(monkeypatch):
    """Each test starts without knowing which REST URL form its server takes."""
    monkeypatch.setattr(wordpress, "_URL_FORMS", {})


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
    # Not known yet whether the site has pretty permalinks: the other form says the same.
    httpserver.expect_request("/").respond_with_json(body, status=status)
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


# -- sites without pretty permalinks: ?rest_route= ----------------------------------------------


class WordPressSite:
    """A WordPress-shaped server: with pretty permalinks or without (then /wp-json/ is the
    theme's HTML 404 and the REST API answers at /?rest_route=)."""

    def __init__(self, httpserver, *, pretty: bool):
        self.server = httpserver
        self.pretty = pretty
        self.posts = {"4": fixture("wp_rest_v2_post_embedded.json")}
        httpserver.expect_request(re.compile("^/wp-json/.*")).respond_with_handler(self.wp_json)
        httpserver.expect_request("/").respond_with_handler(self.index)

    def wp_json(self, request):
        if not self.pretty:
            return Response("<html><body>Page not found</body></html>", 404, mimetype="text/html")
        return self.route(request.path[len("/wp-json") :], request)

    def index(self, request):
        route = request.args.get("rest_route")
        if route is None:
            return Response("<html>home</html>", 200, mimetype="text/html")
        return self.route(route, request)

    def route(self, route, request):
        match = re.fullmatch(r"/wp/v2/posts/(\d+)", route)
        if match and match.group(1) in self.posts:
            return Response(
                json.dumps(self.posts[match.group(1)]), 200, mimetype="application/json"
            )
        if route == "/wp/v2/posts":
            return Response(
                json.dumps(list(self.posts.values())),
                200,
                mimetype="application/json",
                headers={"X-WP-TotalPages": "1", "X-WP-Total": str(len(self.posts))},
            )
        error = {
            "code": "rest_post_invalid_id",
            "message": "Invalid post ID.",
            "data": {"status": 404},
        }
        return Response(json.dumps(error), 404, mimetype="application/json")

    def paths(self):
        return [request.full_path for request, _ in self.server.log]


@pytest.mark.parametrize("pretty", [True, False], ids=["pretty-permalinks", "plain-permalinks"])
def test_both_url_forms(httpserver, config, pretty):
    site = WordPressSite(httpserver, pretty=pretty)
    post = wordpress.fetch_post(config, "4")
    assert post.remote_id == "4" and post.title == "Café “news”"
    posts, _ = wordpress.list_posts(config)
    assert [p.remote_id for p in posts] == ["4"]
    with pytest.raises(PostGone, match="Invalid post ID"):
        wordpress.fetch_post(config, "5")
    paths = site.paths()
    if pretty:
        assert all(path.startswith("/wp-json/wp/v2/posts") for path in paths)
        assert len(paths) == 3, "a gone post costs one request once the form is known"
    else:
        # The first request finds /wp-json/ missing; from then on ?rest_route= only.
        assert paths[0] == "/wp-json/wp/v2/posts/4?_embed"
        assert paths[1] == "/?rest_route=/wp/v2/posts/4&_embed"
        assert all(path.startswith("/?rest_route=/wp/v2/posts") for path in paths[1:])
        assert len(paths) == 4


def test_rest_urls():
    urls = wordpress.rest_urls("https://blog.example.org/", "posts?_embed&page=2&per_page=20")
    assert urls == {
        "pretty": "https://blog.example.org/wp-json/wp/v2/posts?_embed&page=2&per_page=20",
        "plain": "https://blog.example.org/?rest_route=/wp/v2/posts&_embed&page=2&per_page=20",
    }


# -- rendered fields are decoded exactly once --------------------------------------------------


def test_entities_in_rendered_fields_are_decoded_once(httpserver, config):
    data = fixture("wp_rest_v2_post_embedded.json")
    data["title"]["rendered"] = (
        "Fish &#038; Chips &#8220;quoted&#8221; &quot;x&quot; &amp;amp; 🎉 &#x1F600;"
    )
    data["excerpt"]["rendered"] = "<p>Tom &amp; Jerry&#8217;s &lt;b&gt; 🎉</p>\n"
    data["_embedded"]["author"][0]["name"] = "Admin &amp; Co"
    data["_embedded"]["wp:term"][1][0]["name"] = "Q&amp;A &#8211; &quot;live&quot;"
    httpserver.expect_request(f"{API}/4", query_string="_embed").respond_with_json(data)
    post = wordpress.fetch_post(config, "4")
    assert post.title == 'Fish & Chips “quoted” "x" &amp; 🎉 😀'
    assert post.excerpt == "Tom & Jerry’s <b> 🎉"
    assert post.authors == ["Admin & Co"]
    assert post.tags[0] == 'Q&A – "live"'
