"""The demo Ghost blog (a real HTTP server), the webhook curl line it prints, retry delays.

The demo blog listens on 127.0.0.1, so its sources set ``allow_private=True``.
"""

from __future__ import annotations

import io
import json
import shlex

import httpx
import pytest
from PIL import Image

from collective.plonecelery.blogs import importer
from collective.plonecelery.blogs.config import SourceConfig
from collective.plonecelery.blogs.readers import ghost
from collective.plonecelery.blogs.verify.events import parse_notification
from collective.plonecelery.blogs.verify.signatures import verify
from collective.plonecelery.content.remote_post import remote_key
from collective.plonecelery.devtools import demo_blog as blog
from collective.plonecelery.exceptions import FetchError
from collective.plonecelery.exceptions import PostGone
from collective.plonecelery.exceptions import SignatureError

PUBLISHED = "6650f0a1b2c3d4e5f6a7b801"


@pytest.fixture
def server():
    server = blog.serve(host="127.0.0.1", port=0, key=blog.DEMO_KEY)
    yield server
    server.shutdown()


@pytest.fixture
def config(server):
    data = blog.source_settings(blog_url=server.url, secret="demo-secret", target="news")
    config = SourceConfig.from_dict(data)
    config.validate()
    return config


def test_demo_blog_serves_published_posts_through_the_ghost_reader(config, server):
    post = ghost.fetch_post(config, PUBLISHED)
    assert post.title == "Welcome to the demo blog"
    assert post.url == f"{server.url}/welcome-to-the-demo-blog/"
    assert post.tags == ["Demo", "Getting Started"]
    assert post.authors == ["Ada Lovelace"]
    assert post.image_url == f"{server.url}/content/images/welcome-to-the-demo-blog.png"
    assert post.published.isoformat() == "2024-05-01T09:00:00+00:00"
    # The demo post carrying a script comes out clean.
    assert "<script" not in ghost.fetch_post(config, "6650f0a1b2c3d4e5f6a7b802").html


def test_browse_paginates_newest_first_without_drafts(config, monkeypatch):
    monkeypatch.setattr(ghost, "PAGE_SIZE", 2)
    first, next_page = ghost.list_posts(config, page=1)
    second, last = ghost.list_posts(config, page=next_page)
    assert [p.title for p in first + second] == [
        "Signed deliveries",
        "Webhooks and workers",
        "Welcome to the demo blog",
    ]
    assert (next_page, last) == (2, None)
    assert ghost.test_connection(config)["total"] == 3


def test_draft_is_404_until_published_then_unpublished_again(config, server):
    with pytest.raises(PostGone):
        ghost.fetch_post(config, blog.DRAFT_ID)
    answer = httpx.post(f"{server.url}/demo/posts/{blog.DRAFT_ID}/publish")
    assert answer.status_code == 200
    post = ghost.fetch_post(config, blog.DRAFT_ID)
    assert post.title == "Coming soon" and post.published is not None
    edited = httpx.post(f"{server.url}/demo/posts/{blog.DRAFT_ID}", json={"title": "Out now"})
    assert edited.json()["post"]["title"] == "Out now"
    assert ghost.fetch_post(config, blog.DRAFT_ID).modified >= post.modified
    server.blog.unpublish(blog.DRAFT_ID)
    with pytest.raises(PostGone):
        ghost.fetch_post(config, blog.DRAFT_ID)
    statuses = {p["id"]: p["status"] for p in httpx.get(f"{server.url}/demo/posts").json()["posts"]}
    assert statuses[blog.DRAFT_ID] == "draft"


def test_wrong_key_is_refused_like_ghost(config):
    config.api_key = "0" * 26
    with pytest.raises(FetchError, match="Unknown Content API Key") as caught:
        ghost.fetch_post(config, PUBLISHED)
    assert caught.value.status == 401 and not caught.value.retryable


def test_edit_refuses_unknown_fields(server):
    answer = httpx.post(f"{server.url}/demo/posts/{PUBLISHED}", json={"status": "published"})
    assert answer.status_code == 400
    assert httpx.post(f"{server.url}/demo/posts/ffff/publish").status_code == 404


def test_feature_images_are_real_pngs(server):
    response = httpx.get(f"{server.url}/content/images/signed-deliveries.png")
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.size) == ("PNG", (64, 40))
    assert image.getpixel((0, 0)) == (0x1E, 0x84, 0x49)
    assert httpx.get(f"{server.url}/content/images/nope.png").status_code == 404


def test_shutdown_frees_the_port(server):
    url = server.url
    server.shutdown()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/demo/posts")


@pytest.mark.parametrize("scheme", ["ghost", "hmac-sha256-base64", "standard-webhooks"])
def test_curl_line_carries_a_valid_signature(scheme):
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" if scheme == "standard-webhooks" else "s3"
    line = blog.curl_line(
        plone_url="http://localhost:8080/Plone",
        source_id="demo-blog",
        secret=secret,
        post_id=PUBLISHED,
        scheme=scheme,
    )
    words = shlex.split(line)
    assert words[:4] == ["curl", "-i", "-X", "POST"]
    headers = dict(words[i + 1].split(": ", 1) for i, word in enumerate(words) if word == "-H")
    body = words[words.index("--data-binary") + 1].encode()
    url = words[-1]
    assert url == (
        "http://localhost:8080/Plone/++api++/@blog-webhook/demo-blog?event=post.published"
    )
    verify(scheme=scheme, secret=secret, body=body, headers=headers)
    with pytest.raises(SignatureError):
        verify(scheme=scheme, secret="other-secret-" + secret, body=body, headers=headers)
    note = parse_notification(kind="ghost", body=body, headers=headers, event_hint="post.published")
    assert (note.action, note.remote_id) == ("upsert", PUBLISHED)


def test_deleted_event_body_names_the_post_in_previous():
    body = blog.webhook_body(PUBLISHED, event="post.deleted")
    assert json.loads(body) == {"post": {"current": {}, "previous": {"id": PUBLISHED}}}
    note = parse_notification(kind="ghost", body=body, headers={}, event_hint="post.deleted")
    assert (note.action, note.remote_id) == ("remove", PUBLISHED)


def test_cli_prints_a_curl_line(capsys):
    assert (
        blog.main(["curl", "--plone-url", "http://h/Plone", "--source", "s", "--secret", "x"]) == 0
    )
    assert capsys.readouterr().out.startswith("curl -i -X POST -H ")


# -- retry delays and keys -------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter(monkeypatch):
    monkeypatch.setenv("PLONECELERY_IMPORT_BACKOFF", "10")
    for retries, ceiling in [(0, 10), (1, 20), (2, 40), (4, 160)]:
        delays = {importer.backoff_seconds(retries) for _ in range(50)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(delays) > 1  # jittered
    assert importer.backoff_seconds(30) <= importer.MAX_BACKOFF


def test_backoff_honours_retry_after(monkeypatch):
    monkeypatch.setenv("PLONECELERY_IMPORT_BACKOFF", "1")
    assert importer.backoff_seconds(0, retry_after=120) == 120
    assert importer.backoff_seconds(0, retry_after=10**6) == importer.MAX_BACKOFF
    assert importer.backoff_seconds(0, retry_after=0.1) <= 1


def test_remote_key():
    assert remote_key("blog", "42") == "blog:42"
    with pytest.raises(ValueError):
        remote_key("blog", "")
