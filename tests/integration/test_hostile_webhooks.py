"""Property-based hostile input to the webhook endpoint over real HTTP (issue 9, at scale).

A real Plone WSGI server (waitress) on a real ZEO answers; hypothesis generates the requests
and every one is sent as raw bytes (``http.client``: no path normalisation, latin-1 headers,
chunked bodies). For every request that is not a valid notification:

* the answer is a 4xx with a JSON body carrying ``type`` and ``message``, never a 5xx;
* the ZEO server committed no transaction but the worker's outbox relay lease
  (``hostile_support.writes_since``), the delivery log did not grow, no task was queued.

A request the endpoint must accept (a correctly signed valid notification, or a valid body for
the unsigned-by-design ``none`` source) is decided by the endpoint's own parser
(``events.parse_notification``) and only has to avoid a 5xx.

``PLONECELERY_HOSTILE_EXAMPLES`` sets the number of examples per property (default 150).
Broker-independent (refusals never reach the broker): the SQLite run of the matrix covers it.
"""

from __future__ import annotations

import json
import os
import time
from urllib.parse import parse_qs
from urllib.parse import quote
from urllib.parse import unquote

import httpx
import pytest
from conftest import BROKER
from hostile_support import NOTES
from hostile_support import SCHEMES
from hostile_support import admin_client
from hostile_support import assert_json_refusal
from hostile_support import assert_nothing_written
from hostile_support import create_sources
from hostile_support import new_run
from hostile_support import raw_request
from hostile_support import signed_headers
from hostile_support import snapshot
from hostile_support import tally
from hostile_support import tasks_received
from hostile_support import wait_until_idle
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from collective.plonecelery.blogs.verify import events
from collective.plonecelery.exceptions import MalformedPayload

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        BROKER != "sqlite",
        reason="refused webhooks never reach the broker: the SQLite run covers them",
    ),
]

RUN = new_run()
TARGET = f"hostile-{RUN}"
EXAMPLES = int(os.environ.get("PLONECELERY_HOSTILE_EXAMPLES", "150"))
HTTP = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
KINDS = {"ghost": "ghost", "std": "ghost", "wp": "wordpress", "none": "wordpress"}
SIGNATURE_HEADERS = (
    "X-Ghost-Signature",
    "X-WP-Webhook-Signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "X-Hub-Signature-256",
    "X-Hub-Signature",
    "Authorization",
)
CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-7",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "text/plain",
    "text/xml",
    "application/xml",
    "application/octet-stream",
    "application/json; charset=\xff\xfe",
    ";;;",
    "",
    "a" * 9000,
)


@pytest.fixture(scope="module")
def site(harness, plone_http):
    with admin_client(harness, plone_http) as admin:
        ids = create_sources(harness, admin, run=RUN, target=TARGET)
        # A new site writes its portlet assignments on its first page view: do that now, so
        # that a '..' escaping the endpoint to the site root does not look like our write.
        for path in ("/plone", "/plone/document_view", f"/plone/{TARGET}"):
            httpx.get(f"{plone_http}{path}", timeout=60)
    return {"url": plone_http, "ids": ids, "harness": harness}


def endpoint(site, name: str, suffix: str = "") -> str:
    return f"/plone/++api++/@blog-webhook/{site['ids'][name]}{suffix}"


def accepted_by_design(name: str, body: bytes, *, signed: bool, event: str | None = None) -> bool:
    """Would the endpoint rightly accept this (valid notification, verified or 'none')?"""
    if name != "none" and not signed:
        return False
    try:
        events.parse_notification(kind=KINDS[name], body=body, headers={}, event_hint=event)
    except (MalformedPayload, ValueError, RecursionError):
        return False
    return True


def category() -> str:
    """This test's row in the summary table (its name, without test_ and parameters)."""
    name = os.environ["PYTEST_CURRENT_TEST"].split("::")[-1].split(" ")[0]
    return "webhook: " + name.split("[")[0].removeprefix("test_")


def counted(answer) -> None:
    tally(category(), inputs=1, **{"5xx": int(answer.status >= 500)})


def check(site, name, answer, *, before, body, signed, what) -> None:
    counted(answer)
    assert answer.status < 500, f"{what}: HTTP {answer.status}: {answer.body[:500]!r}"
    if accepted_by_design(name, body, signed=signed):
        return
    assert_json_refusal(answer, what=what)
    assert_nothing_written(site["harness"], before, what=what, category=category())


def send(site, name, body, headers, *, method="POST", chunked=False, suffix=""):
    raw = [(key, value.encode("latin-1")) for key, value in headers]
    return raw_request(
        site["url"], method, endpoint(site, name, suffix), headers=raw, body=body, chunked=chunked
    )


# -- strategies -----------------------------------------------------------------------------------

header_values = st.one_of(
    st.text(
        st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=300
    ),
    st.sampled_from(
        ["", " ", "sha256=" + "0" * 64 + ", t=1", "v1,AAAA", "v1," + "A" * 5000, "\xb2"]
    ),
    st.integers().map(str),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["post", "current", "previous", "id", "post_id", "ID", "type", "data"])
            | st.text(max_size=8),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=500).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def nested(depth: int, opener: bytes, closer: bytes, inner: bytes = b"1") -> bytes:
    return opener * depth + inner + closer * depth


deep_bodies = st.builds(
    nested,
    st.integers(min_value=60, max_value=200_000),
    st.sampled_from([b"[", b'{"a":', b'{"post":{"current":']),
    st.sampled_from([b"]", b"}"]),
)


def _huge(digits: int, kind: str) -> bytes:
    number = {
        "int": "9" * digits,
        "neg": "-" + "9" * digits,
        "exp": f"1e{'9' * min(digits, 50)}",
        "frac": "0." + "0" * digits + "1",
    }[kind]
    return number.encode()


huge_numbers = st.builds(
    _huge,
    st.integers(min_value=300, max_value=200_000),
    st.sampled_from(["int", "neg", "exp", "frac"]),
)
huge_bodies = st.builds(
    lambda number, shape: shape.replace(b"N", number),
    huge_numbers,
    st.sampled_from(
        [
            b'{"post_id": N}',
            b'{"post": {"current": {"id": N}, "previous": {}}}',
            b'{"type": "post.published", "data": {"id": N}}',
            b"[N]",
            b"N",
            b'{"id": N, "post": {"ID": N}}',
        ]
    ),
)
invalid_utf8 = st.builds(
    lambda prefix, junk, suffix: prefix + junk + suffix,
    st.sampled_from([b'{"post_id": "', b'{"post": {"current": {"id": "', b"", b'{"type": "']),
    st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
    | st.binary(min_size=1, max_size=20).filter(lambda b: not _is_utf8(b)),
    st.sampled_from([b'"}', b'"}}, "previous": {}}', b"", b'", "data": {"id": 1}}']),
)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


sources = st.sampled_from(SCHEMES)


# -- properties -----------------------------------------------------------------------------------


@HTTP
@given(
    name=sources,
    body=bodies,
    content_type=st.sampled_from(CONTENT_TYPES),
    extra=st.lists(st.tuples(st.sampled_from(SIGNATURE_HEADERS), header_values), max_size=4),
)
def test_random_unsigned_bodies_and_headers_are_refused(site, name, body, content_type, extra):
    before = snapshot(site["harness"])
    answer = send(site, name, body, [("Content-Type", content_type), *extra])
    check(site, name, answer, before=before, body=body, signed=False, what=f"{name} {body[:80]!r}")
    if name != "none":
        assert answer.status == 401, answer.body


@HTTP
@given(
    name=sources,
    names=st.lists(
        st.text(
            # RFC 9110 token characters, and a few that are not (waitress refuses those).
            st.sampled_from("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzXYZ;@"),
            min_size=1,
            max_size=40,
        ),
        min_size=1,
        max_size=6,
    ),
    values=st.lists(header_values, min_size=6, max_size=6),
)
def test_random_headers_never_fail_the_server(site, name, names, values):
    body = b'{"post_id": 1, "post": {"current": {"id": "x"}, "previous": {}}}'
    headers = [("Content-Type", "application/json"), *zip(names, values, strict=False)]
    before = snapshot(site["harness"])
    try:
        answer = send(site, name, body, headers)
    except ValueError:  # http.client refuses to send it at all (illegal header name)
        return
    check(site, name, answer, before=before, body=body, signed=False, what=f"{name} {headers}")


@HTTP
@given(name=sources, body=st.one_of(deep_bodies, huge_bodies, invalid_utf8), sign_it=st.booleans())
def test_deep_nesting_huge_numbers_and_invalid_utf8_are_4xx(site, name, body, sign_it):
    headers = [("Content-Type", "application/json")]
    if sign_it:
        headers += list(signed_headers(name, body).items())
    signed = sign_it or name == "none"
    before = snapshot(site["harness"])
    answer = send(site, name, body, headers)
    check(site, name, answer, before=before, body=body, signed=signed, what=f"{name} {body[:80]!r}")


@HTTP
@given(
    method=st.sampled_from(
        ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "MKCOL", "LOCK", "HEAD", "COPY"]
    )
    | st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), min_size=1, max_size=12),
    name=sources,
    body=st.binary(max_size=200),
)
def test_odd_methods_are_refused(site, method, name, body):
    before = snapshot(site["harness"])
    headers = [("Content-Type", "application/json")]
    answer = send(site, name, body, headers, method=method)
    what = f"{method} {name}"
    counted(answer)
    assert answer.status < 500, f"{what}: HTTP {answer.status} {answer.body[:300]!r}"
    if method.upper() in ("GET", "POST"):
        return
    if method == "HEAD":
        assert 400 <= answer.status < 500, what
    else:
        assert_json_refusal(answer, what=what)
    assert_nothing_written(site["harness"], before, what=what, category=category())


PATH_TRICKS = [
    "..",
    "%2e%2e",
    "%2E%2E%2F%2E%2E",
    "../../acl_users",
    "..%2f..%2fetc%2fpasswd",
    "%00",
    "x%00y",
    "%0d%0aSet-Cookie:%20x=1",
    "@@view",
    "++resource++x",
    "++api++",
    "__class__",
    "aq_parent",
    "aq_base",
    "manage_main",
    "REQUEST",
    ";",
    ";x=1",
    "%3B",
    "%252e%252e",
    "\u00e9".encode().decode("latin-1"),
    "%C0%AE%C0%AE",
    "%ff%fe",
    "x/y",
    "x//y",
    "/",
    "a" * 5000,
    "%u002e",
    "~",
    ".",
    "*",
]


#: Path segments refused before the endpoint runs, by Plone's own JSON 404 (``error_type``):
#: ZPublisher's BaseRequest.traverse refuses the first three, plone.rest a second ++api++.
ZOPE_RESERVED = {"REQUEST", "aq_self", "aq_base", "++api++"}


def still_the_endpoint(target: str) -> bool:
    """Does the path still name the endpoint once Zope resolved '.' and '..' (after unquoting)?"""
    segments = []
    for segment in unquote(target, errors="replace").split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    return segments[:3] == ["plone", "++api++", "@blog-webhook"]


@pytest.mark.parametrize("prefix", ["", "../", "./", "h/../"])
@pytest.mark.parametrize("trick", PATH_TRICKS)
def test_known_path_tricks_in_the_source_id(site, trick, prefix):
    check_path(site, f"/plone/++api++/@blog-webhook/{prefix}{trick}")


@HTTP
@given(
    trick=st.text(
        st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#"),
        min_size=1,
        max_size=60,
    )
    | st.binary(max_size=30).map(lambda raw: quote(raw, safe="")),
    prefix=st.sampled_from(["", "../", "./", "%2e%2e/"]),
)
def test_random_paths_in_the_source_id(site, trick, prefix):
    check_path(site, f"/plone/++api++/@blog-webhook/{prefix}{trick}")


def check_path(site, target: str) -> None:
    """POST to ``target``: a JSON 4xx from the endpoint, or no write from whatever answered."""
    body = b'{"post_id": 1}'
    before = snapshot(site["harness"])
    answer = raw_request(
        site["url"], "POST", target, headers=[("Content-Type", b"application/json")], body=body
    )
    what = f"POST {target[:120]}"
    counted(answer)
    assert answer.status < 500, f"{what}: HTTP {answer.status} {answer.body[:300]!r}"
    segments = set(unquote(target, errors="replace").split("/")[4:])
    if not still_the_endpoint(target):
        pass  # '..' left the endpoint (Zope resolves it): another resource answers
    elif ZOPE_RESERVED & segments:
        assert answer.status == 404, what
        assert json.loads(answer.body)["error_type"] == "NotFound", what
    elif answer.status < 400:
        # Only a path that still names one of our sources may be accepted ('none' by design).
        assert answer.status in (200, 202), what
        assert json.loads(answer.body)["source"] == site["ids"]["none"], what
        return
    else:
        assert_json_refusal(answer, what=what)
    assert_nothing_written(site["harness"], before, what=what, category=category())


@HTTP
@given(
    name=sources,
    chunks=st.lists(st.binary(min_size=1, max_size=500), max_size=8),
    oversize=st.booleans(),
    sign_it=st.booleans(),
)
def test_chunked_bodies_without_content_length(site, name, chunks, oversize, sign_it):
    if oversize:
        chunks = [*chunks, b"x" * 600_000, b"y" * 600_000]
    body = b"".join(chunks)
    headers = [("Content-Type", "application/json")]
    if sign_it and not oversize:
        headers += list(signed_headers(name, body).items())
    before = snapshot(site["harness"])
    answer = send(site, name, chunks, headers, chunked=True)
    signed = (sign_it and not oversize) or name == "none"
    check(site, name, answer, before=before, body=body, signed=signed, what=f"chunked {name}")
    if oversize:
        assert answer.status in (401, 413), answer.body[:300]


def test_a_signed_valid_delivery_still_gets_202(site):
    """Positive control for the properties above: the same raw client, a correct signature."""
    body = json.dumps({"post": {"current": {"id": f"ok{RUN}"}, "previous": {}}}).encode()
    headers = [("Content-Type", "application/json"), *signed_headers("ghost", body).items()]
    started = time.monotonic()
    answer = send(site, "ghost", body, headers, chunked=True)
    assert answer.status == 202, answer.body
    assert time.monotonic() - started < 30


@HTTP
@given(
    name=sources,
    query=st.lists(
        st.tuples(
            st.sampled_from(["event", "hub.mode", "hub.topic", "hub.challenge", "x", "event:list"])
            | st.text(max_size=10),
            st.binary(max_size=40),
        ),
        max_size=4,
    ),
    method=st.sampled_from(["POST", "GET"]),
)
def test_query_strings_with_any_bytes_are_4xx(site, name, query, method):
    def encode(value) -> str:
        raw = value if isinstance(value, bytes) else value.encode()
        return quote(raw, safe="")

    query_string = "&".join(f"{encode(key)}={encode(value)}" for key, value in query)
    body = b'{"nothing": "here"}' if method == "POST" else b""
    before = snapshot(site["harness"])
    answer = send(
        site,
        name,
        body,
        [("Content-Type", "application/json")],
        method=method,
        suffix=f"?{query_string}",
    )
    what = f"{method} ?{query_string[:200]}"
    counted(answer)
    assert answer.status < 500, f"{what}: HTTP {answer.status} {answer.body[:300]!r}"
    event = parse_qs(query_string, keep_blank_values=True).get("event", [None])[0]
    if method == "POST" and accepted_by_design(name, body, signed=False, event=event):
        return  # the unsigned-by-design source records an event it does not import
    assert_json_refusal(answer, what=what)
    assert_nothing_written(site["harness"], before, what=what, category=category())


BURST = int(os.environ.get("PLONECELERY_HOSTILE_BURST", "500"))


@pytest.mark.parametrize("concurrency", [1, 20], ids=["sequential", "20-senders"])
def test_a_burst_of_unsigned_requests_is_refused_cheaply(site, concurrency):
    """500 unsigned POSTs (keep-alive, like a flood): all 401, no write, their cost printed."""
    from concurrent.futures import ThreadPoolExecutor

    body = json.dumps({"post": {"current": {"id": "x" * 24}, "previous": {}}}).encode()
    names = [SCHEMES[i % 3] for i in range(BURST)]  # the three signed sources, in turn
    harness = site["harness"]
    log = harness.log_dir / "instance.log"
    # Imports rightly queued by the tests above (the 'none' source) finish first.
    received = wait_until_idle(harness)
    log_before = log.stat().st_size
    before = snapshot(harness)

    def flood(share: list[str]) -> list[tuple[int, float]]:
        timings = []
        with httpx.Client(base_url=site["url"], timeout=60) as client:
            for name in share:
                started = time.perf_counter()
                response = client.post(
                    endpoint(site, name), content=body, headers={"Content-Type": "application/json"}
                )
                timings.append((response.status_code, time.perf_counter() - started))
                assert response.json()["type"] == "SignatureMissing", response.text
        return timings

    shares = [names[i::concurrency] for i in range(concurrency)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = [t for share in pool.map(flood, shares) for t in share]
    wall = time.perf_counter() - started
    statuses = {status for status, _ in results}
    latencies = sorted(seconds * 1000 for _, seconds in results)
    tally(
        f"abuse: burst ({concurrency} sender(s))",
        inputs=len(results),
        **{"5xx": sum(status >= 500 for status, _ in results)},
    )
    assert statuses == {401}, statuses
    assert_nothing_written(
        harness, before, what="burst", category=f"abuse: burst ({concurrency} sender(s))"
    )
    # Nothing reached the broker: the outbox holds no new record, the worker received nothing
    # (the relay runs every second with a 2 s grace: wait for it).
    time.sleep(3)
    assert sum(snapshot(harness).outbox.values()) <= sum(before.outbox.values())
    assert tasks_received(harness) == received
    note = (
        f"burst of {len(results)} unsigned requests, {concurrency} sender(s): "
        f"{wall * 1000 / len(results):.2f} ms per refused request (wall / requests), "
        f"latency p50 {latencies[len(latencies) // 2]:.1f} ms, "
        f"p95 {latencies[int(len(latencies) * 0.95)]:.1f} ms, max {latencies[-1]:.1f} ms; "
        f"instance.log +{(log.stat().st_size - log_before) / len(results):.0f} bytes per request"
    )
    NOTES.append(note)
    print(note)
