"""Security findings of issue 9 at the unit level (the HTTP-level tests are in
tests/integration/test_security_*.py)."""

from __future__ import annotations

import logging
import time

import httpx
import pytest
from pytest_httpserver import HTTPServer

from collective.plonecelery.blogs.config import SourceConfig
from collective.plonecelery.blogs.readers.http import fetch
from collective.plonecelery.blogs.readers.sanitize import clean_html
from collective.plonecelery.blogs.verify import events
from collective.plonecelery.blogs.verify.signatures import verify
from collective.plonecelery.exceptions import FetchError
from collective.plonecelery.exceptions import SignatureError

ZEROS = "0" * 64
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# -- finding 1: no parsing before the signature, bounded depth after -----------------------------


def test_woocommerce_ping_check_does_not_parse_the_body():
    deep = b"[" * 5000 + b"]" * 5000
    assert events.is_woocommerce_ping(b"webhook_id=12") is True
    assert events.is_woocommerce_ping(deep) is False


@pytest.mark.parametrize("kind", ["wordpress", "ghost", "standard-webhooks", "feed"])
@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_deep_json_is_malformed_not_recursion(kind, depth):
    body = b'{"post_id": 1, "x": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(events.MalformedPayload, match="deeper than 64"):
        events.parse_notification(kind=kind, body=body, headers={})


def test_brackets_inside_strings_do_not_count():
    body = b'{"post_id": 7, "title": "' + b"[{" * 1000 + b'"}'
    assert events.parse_notification(kind="wordpress", body=body, headers={}).remote_id == "7"


# -- finding 2: malformed signature headers are the sender's fault -------------------------------


@pytest.mark.parametrize(
    ("scheme", "headers"),
    [
        ("ghost", {"X-Ghost-Signature": f"sha256={ZEROS}, t=\xb2"}),
        ("ghost", {"X-Ghost-Signature": f"sha256={ZEROS}, t=" + "9" * 5000}),
        ("ghost", {"X-Ghost-Signature": f"sha256={ZEROS}, t=" + "9" * 400}),
        ("ghost", {"X-Ghost-Signature": f"sha256={ZEROS}, t=\u0663"}),
        ("standard-webhooks", {"webhook-id": "m", "webhook-timestamp": "\xb2"}),
        ("standard-webhooks", {"webhook-id": "m", "webhook-timestamp": "9" * 400}),
        ("standard-webhooks", {"webhook-id": "m", "webhook-timestamp": "9" * 5000}),
        ("hmac-sha256-base64", {"X-WP-Webhook-Signature": "\xe9"}),
        ("websub", {"X-Hub-Signature": "sha256=\xe9"}),
        ("github", {"X-Hub-Signature-256": "\xe9=00"}),
    ],
)
def test_malformed_headers_raise_signature_error_malformed(scheme, headers):
    if scheme == "standard-webhooks":
        headers = {**headers, "webhook-signature": "v1,\xe9"}
    secret = WHSEC if scheme == "standard-webhooks" else "s3cret"
    started = time.perf_counter()
    with pytest.raises(SignatureError) as info:
        verify(scheme=scheme, secret=secret, body=b"{}", headers=headers)
    assert info.value.reason in ("malformed", "invalid")
    assert time.perf_counter() - started < 0.05


def test_latin1_base64_signature_is_malformed():
    with pytest.raises(SignatureError) as info:
        verify(
            scheme="hmac-sha256-base64",
            secret="s",
            body=b"{}",
            headers={"X-WP-Webhook-Signature": "\xe9"},
        )
    assert info.value.reason == "malformed"


def test_a_bad_secret_is_still_a_configuration_error():
    with pytest.raises(ValueError):
        verify(scheme="standard-webhooks", secret="not base64 !", body=b"", headers={})


# -- finding 3: iframes parsed like browsers do --------------------------------------------------

YT = {"www.youtube.com"}


@pytest.mark.parametrize(
    "src",
    [
        "https://evil.example\\@www.youtube.com/embed/x",
        "https://evil.example&#92;@www.youtube.com/embed/x",
        "https://evil.example%5C@www.youtube.com/embed/x",
        "https://user:pw@www.youtube.com/embed/x",
        "https://www.youtube.com:8443/embed/x",
        "https://www.youtube.com.evil.example/embed/x",
        "http://www.youtube.com/embed/x",
        "//www.youtube.com/embed/x",
        "javascript:alert(1)//www.youtube.com",
    ],
)
def test_iframe_src_that_browsers_load_elsewhere_is_dropped(src):
    cleaned = clean_html(f'<p>a</p><iframe src="{src}"></iframe>', iframe_hosts=YT)
    assert "iframe" not in cleaned
    assert "evil" not in cleaned


@pytest.mark.parametrize(
    ("src", "stored"),
    [
        ("https://www.youtube.com/embed/x", "https://www.youtube.com/embed/x"),
        ("HTTPS://WWW.YOUTUBE.COM/embed/x", "https://www.youtube.com/embed/x"),
        ("https://www.you&#9;tube.com/embed/x", "https://www.youtube.com/embed/x"),
    ],
)
def test_allowed_iframe_is_kept_as_the_browser_reads_it(src, stored):
    cleaned = clean_html(f'<iframe src="{src}"></iframe>', iframe_hosts=YT)
    assert f'src="{stored}"' in cleaned
    assert 'sandbox="allow-scripts allow-same-origin allow-presentation allow-popups"' in cleaned
    assert 'referrerpolicy="no-referrer"' in cleaned


# -- finding 4: origins, not hosts; no credentials -----------------------------------------------


@pytest.fixture
def blog():
    servers = [HTTPServer(host="127.0.0.1", port=0) for _ in range(2)]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.clear()
        server.stop()


def test_other_port_of_the_blog_host_is_refused(blog):
    api, other = blog
    other.expect_request("/x.png").respond_with_data(b"internal", content_type="image/png")
    config = SourceConfig(id="b", title="b", kind="ghost", api_url=api.url_for("/"))
    with pytest.raises(FetchError, match="not allowed"):
        fetch(other.url_for("/x.png"), allowed_hosts=config.allowed_hosts, allow_private=True)
    assert other.log == []


def test_same_host_redirect_to_another_port_is_refused(blog):
    api, other = blog
    api.expect_request("/go").respond_with_data(
        "", status=302, headers={"Location": other.url_for("/admin")}
    )
    other.expect_request("/admin").respond_with_data("internal")
    config = SourceConfig(id="b", title="b", kind="ghost", api_url=api.url_for("/"))
    with pytest.raises(FetchError, match="not allowed"):
        fetch(api.url_for("/go"), allowed_hosts=config.allowed_hosts, allow_private=True)
    assert other.log == []


def test_the_api_origin_itself_is_fetched(blog):
    api, _ = blog
    api.expect_request("/x.png").respond_with_data(b"png", content_type="image/png")
    config = SourceConfig(id="b", title="b", kind="ghost", api_url=api.url_for("/"))
    response = fetch(api.url_for("/x.png"), allowed_hosts=config.allowed_hosts, allow_private=True)
    assert response.content == b"png"


def test_urls_with_credentials_are_refused(blog):
    api, _ = blog
    api.expect_request("/x.png").respond_with_data(b"png")
    config = SourceConfig(id="b", title="b", kind="ghost", api_url=api.url_for("/"))
    url = f"http://user:s3cr3t@127.0.0.1:{api.port}/x.png"
    with pytest.raises(FetchError, match="credentials") as info:
        fetch(url, allowed_hosts=config.allowed_hosts, allow_private=True)
    assert "s3cr3t" not in str(info.value)
    assert api.log == []


# -- finding 5: the Content API key stays out of every log ---------------------------------------


def test_httpx_request_log_has_no_query_string(blog, caplog):
    api, _ = blog
    api.expect_request("/ghost/api/content/posts/").respond_with_json({"posts": []})
    key = "22444f78447824223cefc48062"
    with caplog.at_level(logging.DEBUG):
        fetch(
            api.url_for("/ghost/api/content/posts/") + f"?key={key}",
            allowed_hosts={api.url_for("/")},
            allow_private=True,
        )
    httpx_records = [r for r in caplog.records if r.name.startswith(("httpx", "httpcore"))]
    assert any("HTTP Request" in r.getMessage() for r in httpx_records)
    for record in caplog.records:
        if record.name.startswith(("httpx", "httpcore")):
            assert key not in record.getMessage()
    assert _only_werkzeug(caplog, key)


def _only_werkzeug(caplog, key) -> bool:
    # The test server itself (werkzeug) logs the request line; it is not our process's log.
    return all(r.name == "werkzeug" for r in caplog.records if key in r.getMessage())


def test_redaction_keeps_the_request_log_useful():
    record = logging.LogRecord(
        "httpx",
        logging.INFO,
        __file__,
        1,
        'HTTP Request: %s %s "%s %d %s"',
        ("GET", httpx.URL("http://1.2.3.4/p/?key=abc"), "HTTP/1.1", 200, "OK"),
        None,
    )
    for log_filter in logging.getLogger("httpx").filters:
        log_filter.filter(record)
    assert record.getMessage() == 'HTTP Request: GET http://1.2.3.4/p/ "HTTP/1.1 200 OK"'
