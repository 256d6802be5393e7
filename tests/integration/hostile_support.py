"""What the hostile-input tests (issue 9, "at scale") share: sources, raw HTTP, write checks.

*A write* is any transaction a web request committed (see :func:`writes_since`), read from the
ZEO server's own transaction iterator, so nothing depends on when invalidations reach this
client.
"""

from __future__ import annotations

import http.client
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import transaction
from plone import api
from ZODB.utils import get_pickle_metadata
from ZODB.utils import p64
from ZODB.utils import u64

from collective.plonecelery.blogs import deliveries
from collective.plonecelery.blogs.verify.signatures import sign
from collective.plonecelery.outbox import records as outbox

GHOST_SECRET = "hostile-ghost-secret"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WP_SECRET = "hostile-wp-secret"
#: One source per verification scheme; "none" accepts unsigned bodies by design.
SCHEMES = ("ghost", "wp", "std", "none")


def source_definitions(run: str, target: str) -> dict[str, dict]:
    # Imports that are rightly queued fail at once and for good (a loopback api_url without
    # allow_private): no retries in the background of the tests that follow.
    common = {"target": target, "allow_private": False, "api_url": "http://127.0.0.1:9"}
    definitions = {
        "wp": {"kind": "wordpress", "scheme": "hmac-sha256-base64", "secret": WP_SECRET},
        "none": {"kind": "wordpress", "scheme": "none", "insecure": True},
        "ghost": {"kind": "ghost", "api_key": "0" * 26, "scheme": "ghost", "secret": GHOST_SECRET},
        "std": {
            "kind": "ghost",
            "api_key": "0" * 26,
            "scheme": "standard-webhooks",
            "secret": WHSEC,
        },
    }
    return {
        name: {"id": f"h{run}-{name}", "title": name, **common, **definition}
        for name, definition in definitions.items()
    }


def create_sources(harness, admin: httpx.Client, *, run: str, target: str) -> dict[str, str]:
    """The four sources (through the REST API, as an administrator would); name -> source id."""
    with harness.session(user="admin") as portal:
        if target not in portal:
            api.content.create(container=portal, type="Folder", id=target, title=target)
            transaction.commit()
    ids = {}
    for name, data in source_definitions(run, target).items():
        response = admin.post("/@blog-sources", json=data)
        assert response.status_code == 201, response.text
        ids[name] = data["id"]
    return ids


def signed_headers(name: str, body: bytes) -> dict[str, str]:
    """Correct signature headers for the schemes that sign (none for 'wp' and 'none')."""
    if name == "ghost":
        return sign(scheme="ghost", secret=GHOST_SECRET, body=body)
    if name == "std":
        try:
            return sign(scheme="standard-webhooks", secret=WHSEC, body=body)
        except Exception:  # not UTF-8: Standard Webhooks cannot sign it (nor verify it)
            return {}
    if name == "wp":
        return sign(scheme="hmac-sha256-base64", secret=WP_SECRET, body=body)
    return {}


def admin_client(harness, plone_http: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{plone_http}/plone/++api++",
        auth=("admin", harness.admin_password),
        headers={"Accept": "application/json"},
        timeout=60,
    )


# -- raw HTTP: exactly the bytes an attacker sends ------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        import json

        return json.loads(self.body)


class _Latin1Connection(http.client.HTTPConnection):
    """Sends the request line as latin-1 bytes (http.client insists on ASCII)."""

    def _encode_request(self, request: str) -> bytes:
        return request.encode("latin-1")

    def _validate_path(self, url: str) -> None:
        pass  # the point is to send what a well-behaved client would not


def raw_request(
    base_url: str,
    method: str,
    target: str,
    *,
    headers: Iterable[tuple[str, bytes]] = (),
    body: bytes | Iterable[bytes] | None = None,
    chunked: bool = False,
    timeout: float = 60,
) -> Answer:
    """Send ``method target`` as given (no path normalisation, latin-1 header bytes).

    ``chunked`` sends ``body`` (bytes or an iterable of chunks) with ``Transfer-Encoding:
    chunked`` and no Content-Length.
    """
    parts = urlsplit(base_url)
    connection = _Latin1Connection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if chunked:
            connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            chunks = [body] if isinstance(body, bytes) else list(body or ())
            for chunk in chunks:
                if chunk:
                    connection.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            connection.send(b"0\r\n\r\n")
        else:
            data = body if isinstance(body, bytes) else b"".join(body or ())
            if data or method in ("POST", "PUT", "PATCH"):
                connection.putheader("Content-Length", str(len(data)))
            connection.endheaders(data or None)
        response = connection.getresponse()
        return Answer(
            status=response.status,
            headers={k.lower(): v for k, v in response.getheaders()},
            body=response.read(),
        )
    finally:
        connection.close()


#: How waitress ends the plain-text 400 it sends for a request that is not valid HTTP.
WAITRESS_REFUSAL = b"(generated by waitress)"


def assert_json_refusal(answer, *, statuses: Iterable[int] | None = None, what: str = "") -> dict:
    """A 4xx with a JSON body carrying ``type`` and ``message``; returns the body."""
    status = answer.status if isinstance(answer, Answer) else answer.status_code
    body = answer.body if isinstance(answer, Answer) else answer.content
    assert 400 <= status < 500, f"{what}: HTTP {status}: {body[:500]!r}"
    if statuses is not None:
        assert status in set(statuses), f"{what}: HTTP {status}: {body[:500]!r}"
    headers = answer.headers
    if body.endswith(WAITRESS_REFUSAL):
        # Not HTTP at all (an illegal header name...): waitress answers before Plone runs.
        return {"type": "waitress", "message": body.decode("latin-1")}
    assert headers.get("content-type", "").startswith("application/json"), (what, headers)
    import json

    error = json.loads(body)
    assert isinstance(error.get("type"), str) and error["type"], (what, error)
    assert isinstance(error.get("message"), str) and error["message"], (what, error)
    return error


# -- writes ---------------------------------------------------------------------------------------


def server_last_tid(harness) -> bytes:
    """The ZEO server's last committed transaction id (asked of the server, not the cache)."""
    return harness.db.storage._call("lastTransaction")


@dataclass
class Snapshot:
    tid: bytes
    outbox: dict[str, int]
    log_size: int


def snapshot(harness) -> Snapshot:
    with harness.session(user="admin") as portal:
        counts = outbox.counts(portal._p_jar)
        size = deliveries.count(portal=portal)
    return Snapshot(tid=server_last_tid(harness), outbox=counts, log_size=size)


def writes_since(harness, tid: bytes) -> list[str]:
    """Transactions a web request committed after ``tid``, described.

    ZPublisher notes the request's path as the description of the transaction it commits; the
    worker (imports queued by earlier tests, the outbox relay's lease every second) and this
    process commit without one. The endpoint queues a task only in its own transaction (the
    outbox record, and the message sent after commit), so "no web transaction" also means
    "nothing queued".
    """
    found = []
    start = p64(u64(tid) + 1)
    for txn in harness.db.storage.iterator(start=start):
        description = (txn.description or b"").decode("utf-8", "replace")
        if not description.startswith("/"):
            continue
        classes = set()
        for record in txn:
            if record.data:
                module, name = get_pickle_metadata(record.data)
                classes.add(f"{module}.{name}")
        found.append(f"{description!r} by {txn.user!r}: {sorted(classes)}")
    return found


def assert_nothing_written(
    harness, before: Snapshot, *, what: str = "", category: str | None = None
) -> None:
    after = snapshot(harness)
    written = writes_since(harness, before.tid)
    if category:
        tally(category, writes=len(written) + (after.log_size - before.log_size))
    assert not written, f"{what}: ZODB writes: {written}"
    assert after.log_size == before.log_size, f"{what}: the delivery log grew"


#: The workers' own periodic tasks (the outbox relay, the blog schedule): not queued by requests.
PERIODIC = ("relay_outbox", "importer.due_sources")


def tasks_received(harness) -> int:
    """Tasks the worker(s) received so far, but their own periodic tasks."""
    return sum(
        1
        for path in harness.log_dir.glob("worker-*.log")
        for line in path.read_text(errors="replace").splitlines()
        if "] received" in line and not any(name in line for name in PERIODIC)
    )


def wait_until_idle(harness, *, quiet: float = 3.0, timeout: float = 120) -> int:
    """Wait until the worker has received no task for ``quiet`` seconds; the count then."""
    deadline = time.monotonic() + timeout
    count, since = tasks_received(harness), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = tasks_received(harness)
        if now != count:
            count, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return count
    raise AssertionError("the worker kept receiving tasks")


def count_accepts(sock: socket.socket, *, seconds: float = 0.0) -> int:
    """Accept (and close) every pending connection on a non-blocking listener; how many."""
    deadline = time.monotonic() + seconds
    accepted = 0
    sock.setblocking(False)
    while True:
        try:
            connection, _ = sock.accept()
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return accepted
            time.sleep(0.01)
            continue
        accepted += 1
        connection.close()


#: Per category: inputs tried, 5xx answers, web writes, active payloads, connections (printed
#: at the end of the run by conftest's pytest_terminal_summary, copied into docs/security.rst).
TALLY: dict[str, dict[str, int]] = {}
COLUMNS = ("inputs", "5xx", "writes", "active payloads", "connections")


#: Free-form lines for the summary (the burst's cost per refused request).
NOTES: list[str] = []


def tally(category: str, **counts: int) -> None:
    """Add ``counts`` (inputs=, writes=, active_payloads=, ...) to ``category``'s row."""
    row = TALLY.setdefault(category, {})
    for key, value in counts.items():
        column = key.replace("_", " ")
        assert column in COLUMNS, column
        row[column] = row.get(column, 0) + value


def tally_table() -> str:
    """One line per category; a column the category does not measure shows '-'."""
    lines = [f"{'category':60} " + " ".join(f"{c:>15}" for c in COLUMNS)]
    for category, row in sorted(TALLY.items()):
        cells = (str(row[c]) if c in row else "-" for c in COLUMNS)
        lines.append(f"{category:60} " + " ".join(f"{cell:>15}" for cell in cells))
    return "\n".join(lines)


def new_run() -> str:
    return uuid.uuid4().hex[:6]
