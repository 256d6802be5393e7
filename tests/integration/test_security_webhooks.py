"""Hostile input to the webhook endpoint over real HTTP (issue 9): never a 5xx, never a write.

A real Plone WSGI instance on ZEO answers; the refusals below do not depend on the broker, so
they run once, on the SQLite broker run of the matrix.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from conftest import BROKER
from plone import api

from collective.plonecelery.blogs.verify.signatures import sign
from collective.plonecelery.outbox import records as outbox

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        BROKER != "sqlite",
        reason="refused webhooks never reach the broker: the SQLite run covers them",
    ),
]

RUN = uuid.uuid4().hex[:6]
TARGET = f"sec-news-{RUN}"
GHOST_SECRET = "ghost-security-secret"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WP_SECRET = "wp-security-secret"
DEEP = b'{"post_id": 1, "x": ' + b"[" * 1000 + b"]" * 1000 + b"}"
DEEPER = b"[" * 100_000 + b"]" * 100_000


def source_id(name: str) -> str:
    return f"s{RUN}-{name}"


@pytest.fixture(scope="module")
def admin(harness, plone_http):
    with httpx.Client(
        base_url=f"{plone_http}/plone/++api++",
        auth=("admin", harness.admin_password),
        headers={"Accept": "application/json"},
        timeout=60,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def sources(harness, admin):
    with harness.session(user="admin") as portal:
        if TARGET not in portal:
            api.content.create(container=portal, type="Folder", id=TARGET, title="Sec news")
        import transaction

        transaction.commit()
    common = {"target": TARGET, "allow_private": True, "api_url": "http://127.0.0.1:9"}
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
    for name, definition in definitions.items():
        data = {"id": source_id(name), "title": name, **common, **definition}
        response = admin.post("/@blog-sources", json=data)
        assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def sender():
    with httpx.Client(timeout=60) as client:
        del client.headers["Accept"]
        yield client


def state(harness, admin) -> tuple:
    """What a refused request must leave alone: the delivery log, the outbox, the target."""
    with harness.session(user="admin") as portal:
        items = len(portal[TARGET].objectIds())
        records = outbox.counts(portal._p_jar)
    return admin.get("/@blog-deliveries").json()["log_size"], items, records


def instance_log(harness) -> str:
    path = harness.log_dir / "instance.log"
    return path.read_text(errors="replace") if path.exists() else ""


def post(sender, plone_http, name, body, headers, *, api_prefix=True):
    prefix = "/plone/++api++" if api_prefix else "/plone"
    # Raw latin-1 bytes, as an attacker's client would send them (httpx encodes str as ASCII).
    raw = {key: value.encode("latin-1") for key, value in headers.items()}
    return sender.post(
        f"{plone_http}{prefix}/@blog-webhook/{source_id(name)}", content=body, headers=raw
    )


def assert_refused(response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()
    assert error["type"] == error_type, error
    assert error["message"]


def _signed(name: str, body: bytes) -> dict:
    if name == "ghost":
        return sign(scheme="ghost", secret=GHOST_SECRET, body=body)
    if name == "std":
        return sign(scheme="standard-webhooks", secret=WHSEC, body=body)
    return {}


# -- finding 1: deep JSON -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "body", "status", "error_type"),
    [
        # Unsigned: refused before anything looks into the body.
        ("wp", DEEP, 401, "SignatureMissing"),
        ("wp", DEEPER, 401, "SignatureMissing"),
        # Unsigned by design, or correctly signed: parsed, with a bounded depth.
        ("none", DEEP, 400, "MalformedPayload"),
        ("none", DEEPER, 400, "MalformedPayload"),
        ("ghost", DEEP, 400, "MalformedPayload"),
        ("std", DEEP, 400, "MalformedPayload"),
    ],
    ids=["wp-unsigned", "wp-unsigned-100k", "none", "none-100k", "ghost-signed", "std-signed"],
)
def test_deeply_nested_json_is_a_4xx(
    harness, plone_http, sources, admin, sender, name, body, status, error_type
):
    before = state(harness, admin)
    headers = {"Content-Type": "application/json", **_signed(name, body)}
    response = post(sender, plone_http, name, body, headers)
    assert_refused(response, status, error_type)
    assert state(harness, admin) == before
    assert "RecursionError" not in instance_log(harness)


# -- finding 2: malformed signature headers -------------------------------------------------------

_ZEROS = "0" * 64


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        ("ghost", {"X-Ghost-Signature": f"sha256={_ZEROS}, t=\xb2"}),
        ("ghost", {"X-Ghost-Signature": f"sha256={_ZEROS}, t=" + "9" * 5000}),
        ("ghost", {"X-Ghost-Signature": f"sha256={_ZEROS}, t=" + "9" * 400}),
        (
            "std",
            {"webhook-id": "msg_1", "webhook-timestamp": "\xb2", "webhook-signature": "v1,AA=="},
        ),
        (
            "std",
            {"webhook-id": "msg_1", "webhook-timestamp": "9" * 400, "webhook-signature": "v1,A"},
        ),
        ("wp", {"X-WP-Webhook-Signature": "\xe9"}),
    ],
    ids=["ghost-superscript", "ghost-5000", "ghost-400", "std-superscript", "std-400", "wp-latin1"],
)
def test_malformed_signature_headers_are_401_malformed(
    harness, plone_http, sources, admin, sender, name, headers
):
    before = state(harness, admin)
    log_before = len(instance_log(harness))
    response = post(
        sender, plone_http, name, b"{}", {"Content-Type": "application/json", **headers}
    )
    assert_refused(response, 401, "SignatureMalformed")
    assert state(harness, admin) == before
    new_log = instance_log(harness)[log_before:]
    assert "ERROR" not in new_log and "SourceMisconfigured" not in new_log, new_log[-2000:]


def test_a_correct_signature_still_works_after_the_hardening(
    harness, plone_http, sources, admin, sender
):
    """Positive control: the same endpoint queues a valid signed delivery."""
    body = json.dumps({"post": {"current": {"id": f"p{RUN}"}, "previous": {}}}).encode()
    headers = {"Content-Type": "application/json", **_signed("ghost", body)}
    response = post(sender, plone_http, "ghost", body, headers)
    assert response.status_code == 202, response.text
