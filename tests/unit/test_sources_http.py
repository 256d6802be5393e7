"""The guarded fetcher, against a real local HTTP server (pytest-httpserver).

pytest-httpserver listens on localhost (127.0.0.1), which the SSRF guard refuses by design, so
tests that need a response pass ``allow_private=True``; the guard itself is tested separately.
"""

import datetime
import gzip
import ipaddress
import json
import socket
import ssl
import time

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from collective.plonecelery.blogs.readers.http import fetch
from collective.plonecelery.blogs.readers.http import json_body
from collective.plonecelery.blogs.readers.http import retry_after_seconds
from collective.plonecelery.blogs.readers.http import vet_url
from collective.plonecelery.exceptions import FetchError
from collective.plonecelery.exceptions import PostGone

LOCAL = {"localhost", "127.0.0.1"}


def local_origins(url) -> set[str]:
    """The test server's origins: allowed origins include the port."""
    port = httpx.URL(url).port
    return {f"http://localhost:{port}", f"http://127.0.0.1:{port}", f"https://localhost:{port}"}


def local_fetch(url, **kwargs):
    # allow_private: the test server is on loopback (see module docstring).
    allowed = kwargs.pop("allowed_hosts", None) or local_origins(url)
    return fetch(url, allowed_hosts=allowed, allow_private=True, **kwargs)


def fetch_error(url, **kwargs):
    with pytest.raises(FetchError) as info:
        local_fetch(url, **kwargs)
    return info.value


# --- success -------------------------------------------------------------------------------------


def test_fetch_returns_read_response_with_host_name_url(httpserver):
    httpserver.expect_request("/posts", headers={"X-Test": "1"}).respond_with_json({"posts": [1]})
    response = local_fetch(httpserver.url_for("/posts"), headers={"X-Test": "1"})
    assert response.status_code == 200
    assert json_body(response) == {"posts": [1]}
    assert response.url.host == "localhost"  # not the pinned address
    request, _ = httpserver.log[0]
    assert request.headers["Host"] == f"localhost:{httpserver.port}"
    assert request.headers["User-Agent"].startswith("collective.plonecelery")


def test_gzip_body_is_decoded(httpserver):
    payload = json.dumps({"ok": True}).encode()
    httpserver.expect_request("/gz").respond_with_data(
        gzip.compress(payload),
        headers={"Content-Encoding": "gzip"},
        content_type="application/json",
    )
    response = local_fetch(httpserver.url_for("/gz"))
    assert response.json() == {"ok": True}
    assert "content-encoding" not in response.headers


def test_json_body_refuses_html(httpserver):
    httpserver.expect_request("/html").respond_with_data(
        "<html>login</html>", content_type="text/html"
    )
    with pytest.raises(FetchError, match="did not answer JSON") as info:
        json_body(local_fetch(httpserver.url_for("/html")))
    assert info.value.retryable is False


# --- SSRF guard ----------------------------------------------------------------------------------


def test_private_addresses_are_refused_by_default(httpserver):
    httpserver.expect_request("/").respond_with_data("secret internal page")
    for url in (httpserver.url_for("/"), f"http://127.0.0.1:{httpserver.port}/"):
        with pytest.raises(FetchError, match="non-public address") as info:
            fetch(url, allowed_hosts=local_origins(url))
        assert info.value.retryable is False
    assert httpserver.log == []


def test_host_outside_allowed_hosts_is_refused(httpserver):
    httpserver.expect_request("/").respond_with_data("hi")
    error = fetch_error(httpserver.url_for("/"), allowed_hosts={"blog.example.org"})
    assert "not allowed" in str(error) and error.retryable is False
    assert httpserver.log == []


@pytest.mark.parametrize("url", ["ftp://localhost/x", "file:///etc/passwd", "gopher://localhost/"])
def test_non_http_schemes_are_refused(url):
    assert "only http and https" in str(fetch_error(url))


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "127.0.0.2",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_vet_url_refuses_internal_ip_literals(address):
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(FetchError, match="non-public"):
        vet_url(f"http://{host}/", allowed_hosts={str(ipaddress.ip_address(address))})


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
def test_vet_url_accepts_public_ip_literals_without_dns(address):
    host = f"[{address}]" if ":" in address else address
    assert vet_url(f"https://{host}/", allowed_hosts={address}) == [address]


def test_vet_url_checks_every_resolved_address():
    addresses = vet_url("http://localhost/", allowed_hosts={"localhost"}, allow_private=True)
    assert "127.0.0.1" in addresses
    with pytest.raises(FetchError):
        vet_url("http://localhost/", allowed_hosts={"localhost"})


def test_allowed_hosts_must_not_be_a_single_string():
    with pytest.raises(TypeError, match="collection"):
        vet_url("http://b/", allowed_hosts="blog.example.org")


def test_unresolvable_host_is_retryable():
    error = fetch_error("http://no-such-host.invalid/", allowed_hosts={"no-such-host.invalid"})
    assert error.retryable is True and "resolve" in str(error)


# --- redirects -----------------------------------------------------------------------------------


def test_redirect_within_allowed_hosts_is_followed(httpserver):
    httpserver.expect_request("/old").respond_with_data(
        "", status=301, headers={"Location": "/new"}
    )
    httpserver.expect_request("/new").respond_with_data("moved here")
    response = local_fetch(httpserver.url_for("/old"))
    assert response.text == "moved here"
    assert response.url.path == "/new"


def test_redirect_to_a_host_outside_allowed_hosts_is_refused(httpserver):
    httpserver.expect_request("/go").respond_with_data(
        "", status=302, headers={"Location": "http://169.254.169.254/"}
    )
    error = fetch_error(httpserver.url_for("/go"))
    assert "not allowed" in str(error) and error.retryable is False


def test_every_redirect_hop_is_vetted_for_private_addresses():
    # A public first hop cannot be served locally, so this one test uses a mock transport; the
    # fetcher connects to the vetted address, which the mock sees as the request URL.
    seen = []

    def blog(request):
        seen.append(request)
        return httpx.Response(302, headers={"Location": "http://10.0.0.1/internal"})

    client = httpx.Client(transport=httpx.MockTransport(blog))
    with pytest.raises(FetchError, match="non-public address 10.0.0.1"):
        fetch(
            "http://93.184.216.34/start", allowed_hosts={"93.184.216.34", "10.0.0.1"}, client=client
        )
    client.close()
    assert [str(request.url) for request in seen] == ["http://93.184.216.34/start"]


def test_too_many_redirects(httpserver):
    for n in range(5):
        httpserver.expect_request(f"/r{n}").respond_with_data(
            "", status=302, headers={"Location": f"/r{n + 1}"}
        )
    error = fetch_error(httpserver.url_for("/r0"))
    assert "more than 3" in str(error) and error.retryable is False
    assert [request.path for request, _ in httpserver.log] == ["/r0", "/r1", "/r2", "/r3"]


def test_credentials_are_dropped_when_a_redirect_changes_host(httpserver):
    other = f"http://127.0.0.1:{httpserver.port}/landing"
    httpserver.expect_request("/start").respond_with_data(
        "", status=307, headers={"Location": other}
    )
    httpserver.expect_request("/landing").respond_with_data("ok")
    local_fetch(
        httpserver.url_for("/start"), headers={"Authorization": "Basic dTpw", "X-Keep": "1"}
    )
    first, second = (request for request, _ in httpserver.log)
    assert first.headers.get("Authorization") == "Basic dTpw"
    assert second.headers.get("Authorization") is None
    assert second.headers.get("X-Keep") == "1"


# --- status mapping -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [404, 410])
def test_gone_statuses_raise_post_gone(httpserver, status):
    httpserver.expect_request("/p").respond_with_json(
        {"errors": [{"message": "Resource not found"}]}, status=status
    )
    with pytest.raises(PostGone, match="Resource not found") as info:
        local_fetch(httpserver.url_for("/p"))
    assert info.value.status == status


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_are_retryable(httpserver, status):
    httpserver.expect_request("/p").respond_with_data("oops", status=status)
    error = fetch_error(httpserver.url_for("/p"))
    assert error.retryable is True and error.status == status and error.retry_after is None


def test_429_with_retry_after_seconds(httpserver):
    httpserver.expect_request("/p").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "120"}
    )
    error = fetch_error(httpserver.url_for("/p"))
    assert error.retryable is True and error.status == 429 and error.retry_after == 120


def test_429_with_retry_after_http_date(httpserver):
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=90)
    header = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    httpserver.expect_request("/p").respond_with_data(
        "", status=429, headers={"Retry-After": header}
    )
    error = fetch_error(httpserver.url_for("/p"))
    assert 80 <= error.retry_after <= 91


def test_retry_after_parsing():
    now = datetime.datetime(2024, 3, 1, 12, 0, tzinfo=datetime.UTC)
    assert retry_after_seconds("5", now=now) == 5
    assert retry_after_seconds("Fri, 01 Mar 2024 12:01:00 GMT", now=now) == 60
    assert retry_after_seconds("Fri, 01 Mar 2024 11:00:00 GMT", now=now) == 0
    assert retry_after_seconds("soon", now=now) is None
    assert retry_after_seconds(None) is None


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            {"errors": [{"message": "Unknown Content API Key", "type": "UnauthorizedError"}]},
            "Unknown Content API Key",
        ),
        (
            {"code": "rest_invalid_param", "message": "Invalid parameter(s): page"},
            "Invalid parameter(s): page",
        ),
    ],
)
def test_client_errors_are_permanent_and_carry_the_api_message(httpserver, body, expected):
    httpserver.expect_request("/api").respond_with_json(body, status=400)
    error = fetch_error(httpserver.url_for("/api") + "?key=SUPERSECRETKEY")
    assert error.retryable is False and error.status == 400
    assert expected in str(error)
    assert "SUPERSECRETKEY" not in str(error)  # query strings (API keys) are redacted


# --- limits and network failures ------------------------------------------------------------


def test_oversize_body_with_content_length_is_refused(httpserver):
    httpserver.expect_request("/big").respond_with_data(b"x" * 2000)
    error = fetch_error(httpserver.url_for("/big"), max_bytes=1000)
    assert "more than 1000 bytes" in str(error) and error.retryable is False


def test_oversize_streamed_body_is_refused(httpserver):
    def chunked(_request):
        return Response((b"x" * 512 for _ in range(8)), direct_passthrough=True)

    httpserver.expect_request("/stream").respond_with_handler(chunked)
    error = fetch_error(httpserver.url_for("/stream"), max_bytes=1000)
    assert "more than 1000 bytes" in str(error)


def test_compressed_bomb_is_measured_after_decoding(httpserver):
    bomb = gzip.compress(b"\0" * 200_000)
    assert len(bomb) < 1000
    httpserver.expect_request("/bomb").respond_with_data(bomb, headers={"Content-Encoding": "gzip"})
    assert "more than 10000 bytes" in str(
        fetch_error(httpserver.url_for("/bomb"), max_bytes=10_000)
    )


def test_connection_refused_is_retryable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once we leave the block: nothing listens there
    error = fetch_error(f"http://127.0.0.1:{port}/")
    assert error.retryable is True and "network error" in str(error)


def test_timeout_is_retryable(httpserver):
    def slow(_request):
        time.sleep(1.0)
        return Response("late")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    error = fetch_error(httpserver.url_for("/slow"), timeout=httpx.Timeout(0.3))
    assert error.retryable is True


# --- TLS: connecting to the vetted address must still verify the certificate's host name ----------


def _self_signed(tmp_path, name):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_context = ssl.create_default_context(cadata=cert_pem.decode())
    return server_context, client_context


@pytest.mark.parametrize("cert_name, ok", [("localhost", True), ("other.example.org", False)])
def test_https_to_pinned_address_verifies_host_name(tmp_path, cert_name, ok):
    server_context, client_context = _self_signed(tmp_path, cert_name)
    server = HTTPServer(host="localhost", port=0, ssl_context=server_context)
    server.expect_request("/tls").respond_with_data("secure")
    server.start()
    try:
        with httpx.Client(verify=client_context, trust_env=False) as client:
            url = server.url_for("/tls")
            assert url.startswith("https://localhost:")
            if ok:
                assert local_fetch(url, client=client).text == "secure"
            else:
                with pytest.raises(FetchError, match="Hostname mismatch"):
                    local_fetch(url, client=client)
    finally:
        server.clear()
        server.stop()


def test_error_messages_never_repeat_the_credentials_sent(httpserver):
    """A blog echoing the request (its ?key=, the Basic credentials) into its error message."""

    def echo(request):
        text = f"{request.full_path} {request.headers.get('Authorization')}"
        return Response(json.dumps({"message": f"Forbidden: {text}"}), status=403)

    httpserver.expect_request("/posts").respond_with_handler(echo)
    url = httpserver.url_for("/posts") + "?key=0123456789abcdef&filter=id:1"
    headers = {"Authorization": "Basic ZWRpdG9yOmFiY2QgZWZnaCBpamts"}  # editor:abcd efgh ijkl
    error = fetch_error(url, headers=headers)
    assert error.status == 403 and "Forbidden" in str(error)
    for secret in ("0123456789abcdef", "ZWRpdG9yOmFiY2QgZWZnaCBpamts", "abcd efgh ijkl"):
        assert secret not in str(error)
    assert "filter=id:1" in str(error)  # what is not a credential stays readable
