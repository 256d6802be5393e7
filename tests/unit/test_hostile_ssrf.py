"""SSRF corpus for every URL the worker fetches (issue 9, at scale), against real listeners.

Two listening sockets on one port ``P`` of *all* local addresses (``0.0.0.0`` and ``::``)
count the connections they accept: every loopback, "this host", IPv4-mapped and local-interface
spelling of a URL on port ``P`` would land there. Each URL of the corpus is given to the
guarded fetcher (:func:`~collective.plonecelery.blogs.readers.http.fetch`) with its *own* origin
allowed (the worst case: a forged webhook or a blog's HTML names it and the configuration lets
the origin through), to the three readers as their ``api_url`` and as a feature image, and as
the target of a redirect from an allowed blog (pytest-httpserver). Every one must be refused
by the guard (a non-retryable ``FetchError`` with the guard's reason, not a network error), and
the listeners must have accepted nothing. A positive control shows that the listeners do
count a connection that is allowed.

Addresses the listeners cannot own (169.254.169.254, 10.0.0.1, ...) are refused the same way;
for them the refusal's reason is the proof, the count is zero trivially.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time

import pytest

from collective.plonecelery.blogs.config import SourceConfig
from collective.plonecelery.blogs.readers import feed
from collective.plonecelery.blogs.readers import ghost
from collective.plonecelery.blogs.readers import wordpress
from collective.plonecelery.blogs.readers.http import fetch
from collective.plonecelery.exceptions import FetchError
from collective.plonecelery.exceptions import PostGone

#: The guard's own words for a refusal (a network error would mean it tried to connect).
REFUSALS = (
    "refusing",
    "not allowed",
    "invalid URL",
    "only http",
    "non-public",
    "credentials",
    "without a host",
)


class Listeners:
    """Listening sockets on one port of every local IPv4 and IPv6 address; counts accepts."""

    def __init__(self):
        self.accepts = 0
        self.peers: list[str] = []
        self._stop = threading.Event()
        self.sockets = []
        v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        v4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        v4.bind(("0.0.0.0", 0))
        self.port = v4.getsockname()[1]
        self.sockets.append(v4)
        try:
            v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            v6.bind(("::", self.port))
            self.sockets.append(v6)
        except OSError:
            self.ipv6 = False
        else:
            self.ipv6 = True
        for sock in self.sockets:
            sock.listen(64)
            sock.settimeout(0.05)
        self._threads = [threading.Thread(target=self._serve, args=(s,)) for s in self.sockets]
        for thread in self._threads:
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                connection, peer = sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepts += 1
            self.peers.append(str(peer))
            connection.close()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        for sock in self.sockets:
            sock.close()


@pytest.fixture(scope="module")
def trap():
    listeners = Listeners()
    yield listeners
    listeners.close()


def local_addresses() -> list[str]:
    """This host's own non-loopback addresses (private on any test machine)."""
    found = set()
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        infos = []
    for info in infos:
        address = info[4][0].split("%", 1)[0]
        if not ipaddress.ip_address(address).is_loopback:
            found.add(address)
    return sorted(found)


def resolvable(name: str) -> bool:
    try:
        socket.getaddrinfo(name, None)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def hosts() -> list[str]:
    """Host spellings that reach this machine or another internal service."""
    spellings = [
        # loopback, the whole 127/8, and the same in other notations
        "127.0.0.1",
        "127.0.0.2",
        "127.1",
        "127.000.000.001",
        "2130706433",  # decimal
        "0x7f000001",  # hex
        "0x7f.0x0.0x0.0x1",
        "0177.0.0.1",  # octal
        "017700000001",
        "0",
        "0.0.0.0",
        "[::1]",
        "[0:0:0:0:0:0:0:1]",
        "[::]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::ffff:0.0.0.0]",
        "[0:0:0:0:0:ffff:127.0.0.1]",
        "[::127.0.0.1]",
        "[64:ff9b::127.0.0.1]",
        # private ranges, link-local (cloud metadata), CGNAT, multicast, broadcast
        "10.0.0.1",
        "10.255.255.254",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.0.1",
        "192.168.1.254",
        "169.254.169.254",
        "169.254.0.1",
        "100.64.0.1",
        "198.18.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "[fe80::1]",
        "[fc00::1]",
        "[fd00:ec2::254]",
        "[::ffff:169.254.169.254]",
        "[::ffff:10.0.0.1]",
        "[::ffff:a9fe:a9fe]",
        "2852039166",  # 169.254.169.254, decimal
        "0xa9fea9fe",
        "0251.0376.0251.0376",
        # DNS names of this machine (localhost and its own name resolve to internal addresses)
        "localhost",
        "LOCALHOST",
    ]
    for name in (
        *("localhost.", "LocalHost.", "ip6-localhost", "ip6-loopback", "localhost.localdomain"),
        socket.gethostname(),
    ):
        if resolvable(name):
            spellings.append(name)
    spellings += [f"[{a}]" if ":" in a else a for a in local_addresses()]
    return spellings


HOSTS = hosts()
PORT_MARK = "{port}"


def corpus_urls(port: int) -> list[str]:
    urls = []
    for host in HOSTS:
        for scheme in ("http", "https"):
            urls.append(f"{scheme}://{host}:{port}/ghost/api/content/posts/")
        urls.append(f"http://{host}/latest/meta-data/")  # the default port
    return urls


def refused(exc: BaseException) -> bool:
    return (
        isinstance(exc, FetchError) and not exc.retryable and any(r in str(exc) for r in REFUSALS)
    )


def assert_refused(url: str, call, *, same_origin: str | None = None) -> None:
    """``call`` raises the guard's refusal; or, with ``same_origin``, an answer of that origin
    (a Location like ``http:127.0.0.1:P/`` is a path on the blog itself)."""
    try:
        call()
    except (FetchError, PostGone) as exc:
        if same_origin and str(exc).startswith(f"{same_origin}/"):
            return
        assert refused(exc), f"{url}: not refused by the guard: {exc!r}"
    except ValueError as exc:  # refused as configuration (SourceConfig.validate)
        assert str(exc), url
    else:
        raise AssertionError(f"{url} was fetched")


def quiet(trap: Listeners, before: int, what: str, *, record, inputs: int) -> None:
    """No connection since ``before``; the category's row of the summary (conftest.py)."""
    time.sleep(0.01)
    record("hostile", (f"ssrf: {what}", {"inputs": inputs, "connections": trap.accepts - before}))
    assert trap.accepts == before, f"{what}: {trap.accepts - before} connection(s): {trap.peers}"


def test_listeners_count_an_allowed_connection(trap):
    """Positive control: what the guard lets through does reach the listeners."""
    before = trap.accepts
    url = f"http://127.0.0.1:{trap.port}/"
    with pytest.raises(FetchError, match="network error"):  # accepted, then closed
        fetch(url, allowed_hosts={f"http://127.0.0.1:{trap.port}"}, allow_private=True)
    deadline = time.monotonic() + 5
    while trap.accepts == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert trap.accepts > before


def test_fetch_refuses_every_internal_url_even_when_its_origin_is_allowed(trap, record_property):
    before = trap.accepts
    urls = corpus_urls(trap.port)
    for url in urls:
        origin = url.split("/ghost/")[0].split("/latest/")[0]
        assert_refused(url, lambda url=url, origin=origin: fetch(url, allowed_hosts={origin}))
    quiet(
        trap,
        before,
        "direct fetches (own origin allowed)",
        record=record_property,
        inputs=len(urls),
    )
    assert len(urls) >= 120


def _config(kind: str, api_url: str) -> SourceConfig:
    data = {
        "id": "ssrf",
        "title": "SSRF",
        "kind": kind,
        "api_url": api_url,
        "target": "news",
        "scheme": "none",
        "insecure": True,
    }
    if kind == "ghost":
        data["api_key"] = "0" * 26
    config = SourceConfig.from_dict(data)
    config.validate()  # as storage.add_source does: some URLs stop here (ValueError)
    return config


READERS = {
    "ghost": lambda config: ghost.fetch_post(config, "0" * 24),
    "wordpress": lambda config: wordpress.fetch_post(config, "1"),
    "feed": lambda config: feed.fetch_post(config, "tag:x,2024:1"),
}


@pytest.mark.parametrize("kind", sorted(READERS))
def test_readers_refuse_an_internal_api_url(trap, kind, record_property):
    before = trap.accepts
    for host in HOSTS:
        api_url = f"http://{host}:{trap.port}/"
        if kind == "feed":
            api_url += "feed.xml"

        def call(api_url=api_url):
            READERS[kind](_config(kind, api_url))

        assert_refused(api_url, call)
    quiet(trap, before, "api_url of the 3 readers", record=record_property, inputs=len(HOSTS))


def test_feature_images_on_internal_hosts_are_refused(trap, record_property):
    """What ``importer.items._update_image`` does with a post's image URL."""
    before = trap.accepts
    config = _config("ghost", "https://blog.example.org/")
    for host in HOSTS:
        for url in (f"http://{host}:{trap.port}/lead.png", f"https://{host}/lead.png"):
            assert_refused(
                url,
                lambda url=url: fetch(
                    url,
                    allowed_hosts=config.allowed_hosts,
                    allow_private=config.allow_private,
                    headers={"Accept": "image/*"},
                ),
            )
    quiet(trap, before, "feature images", record=record_property, inputs=2 * len(HOSTS))


def other_urls(port: int, blog_port: int) -> list[str]:
    """Other schemes, credentials, other ports of an allowed host."""
    return [
        "file:///etc/passwd",
        "file://localhost/etc/passwd",
        f"gopher://127.0.0.1:{port}/_GET%20/",
        f"ftp://127.0.0.1:{port}/",
        f"dict://127.0.0.1:{port}/info",
        f"ldap://127.0.0.1:{port}/",
        "data:text/plain,hello",
        "javascript:alert(1)",
        f"jar:http://127.0.0.1:{port}/x.jar!/",
        "netdoc:///etc/passwd",
        f"ws://127.0.0.1:{port}/",
        f"//127.0.0.1:{port}/",
        f"http:127.0.0.1:{port}/",
        f"http:/127.0.0.1:{port}/",
        f"http://user:pw@127.0.0.1:{blog_port}/",
        f"http://user@127.0.0.1:{blog_port}/",
        f"http://:pw@127.0.0.1:{blog_port}/",
        f"http://127.0.0.1:{blog_port}@127.0.0.1:{port}/",
        f"http://127.0.0.1:{port}#@127.0.0.1:{blog_port}/",
        f"http://127.0.0.1:{port}\\@127.0.0.1:{blog_port}/",
        f"http://127.0.0.1:{port}/",  # another port of the allowed host
        f"https://127.0.0.1:{port}/",
        f"http://localhost:{port}/",
        f"http://127.0.0.1:{blog_port + 0}:{port}/",
        f"http://127.0.0.1:0{port}/",
        "http:///",
        "http://",
        "",
        " http://127.0.0.1/",
        f"http://127.0.0.1:{port}\r\nHost: x/",
        f"http://127.0.0.1%00:{port}/",
        f"http://%31%32%37.0.0.1:{port}/",
        f"http://127.0.0.1.:{port}/",
        f"http://①②⑦.0.0.1:{port}/",
        f"http://127。0。0。1:{port}/",
    ]


def test_other_schemes_credentials_and_other_ports_are_refused(trap, record_property):
    """The allowed origin is a blog on loopback (allow_private, as for a blog on the LAN)."""
    blog_port = trap.port + 1 if trap.port < 65535 else trap.port - 1
    allowed = {f"http://127.0.0.1:{blog_port}"}
    before = trap.accepts
    urls = other_urls(trap.port, blog_port)
    for url in urls:
        assert_refused(url, lambda url=url: fetch(url, allowed_hosts=allowed, allow_private=True))
    quiet(
        trap, before, "schemes, credentials, other ports", record=record_property, inputs=len(urls)
    )


def test_redirects_to_internal_urls_are_refused(trap, httpserver, record_property):
    """An allowed blog (on loopback: allow_private) redirects: each hop is checked again."""
    origin = f"http://{httpserver.host}:{httpserver.port}"
    targets = [
        *corpus_urls(trap.port),
        *other_urls(trap.port, httpserver.port),
    ]
    targets = [t for t in targets if "\r" not in t and t.strip() and t != origin]
    before = trap.accepts
    tried = 0
    for index, target in enumerate(targets):
        if target.startswith("http://user") or "@127.0.0.1:" in target:
            continue  # credentials on the blog itself: see the test above
        path = f"/r{index}"
        for status in (301, 302, 303, 307, 308):
            httpserver.expect_request(f"{path}/{status}").respond_with_data(
                "", status=status, headers={"Location": target}
            )
            url = f"{origin}{path}/{status}"
            assert_refused(
                f"{url} -> {target}",
                lambda url=url: fetch(url, allowed_hosts={origin}, allow_private=True),
                same_origin=origin,
            )
            tried += 1
    quiet(trap, before, "redirects from an allowed blog", record=record_property, inputs=tried)
    assert tried >= 500
