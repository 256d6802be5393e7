"""Webhook signature verification: published and local vectors, and every failure reason."""

import hashlib
import json
from pathlib import Path

import pytest

from collective.plonecelery.blogs.verify.signatures import SCHEMES
from collective.plonecelery.blogs.verify.signatures import sign
from collective.plonecelery.blogs.verify.signatures import verify
from collective.plonecelery.exceptions import SignatureError

DATA = Path(__file__).parent / "data"
VECTORS = json.loads((DATA / "signature_test_vectors.json").read_text())
GHOST_SECRET = "ghost-test-secret"
GHOST_T = 1700000000000
GHOST_NOW = GHOST_T / 1000


def reason_of(**kwargs):
    with pytest.raises(SignatureError) as info:
        verify(**kwargs)
    return info.value.reason


# --- Standard Webhooks -------------------------------------------------------------------------

SW = VECTORS["standard_webhooks"]
SW_HEADERS = {
    "webhook-id": SW["msg_id"],
    "webhook-timestamp": str(SW["timestamp"]),
    "webhook-signature": SW["expected_signature"],
}


def test_standard_webhooks_official_vector_verifies():
    verified = verify(
        scheme="standard-webhooks",
        secret=SW["secret"],
        body=SW["payload"].encode(),
        headers=SW_HEADERS,
        now=SW["timestamp"] + 10,
    )
    assert verified.delivery_id == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    assert verified.timestamp == 1614265330


def test_standard_webhooks_sign_reproduces_official_vector():
    headers = sign(
        scheme="standard-webhooks",
        secret=SW["secret"],
        body=SW["payload"].encode(),
        now=SW["timestamp"],
        msg_id=SW["msg_id"],
    )
    assert headers == SW_HEADERS


def test_standard_webhooks_headers_are_case_insensitive_and_multi_signature():
    headers = {
        "Webhook-Id": SW["msg_id"],
        "WEBHOOK-TIMESTAMP": str(SW["timestamp"]),
        # Other versions and a wrong v1 entry next to the right one, as in the reference tests.
        "Webhook-Signature": "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,abc= "
        + SW["expected_signature"],
    }
    verified = verify(
        scheme="standard-webhooks",
        secret=SW["secret"],
        body=SW["payload"].encode(),
        headers=headers,
        now=SW["timestamp"],
    )
    assert verified.delivery_id == SW["msg_id"]


def test_standard_webhooks_known_bad_signature_is_invalid():
    headers = {**SW_HEADERS, "webhook-signature": SW["known_bad_signature"]}
    assert (
        reason_of(
            scheme="standard-webhooks",
            secret=SW["secret"],
            body=SW["payload"].encode(),
            headers=headers,
            now=SW["timestamp"],
        )
        == "invalid"
    )


@pytest.mark.parametrize("offset", [-301, 301, -10_000])
def test_standard_webhooks_stale_and_future_timestamps(offset):
    assert (
        reason_of(
            scheme="standard-webhooks",
            secret=SW["secret"],
            body=SW["payload"].encode(),
            headers=SW_HEADERS,
            now=SW["timestamp"] - offset,
        )
        == "stale"
    )


def test_standard_webhooks_custom_tolerance():
    kwargs = {
        "scheme": "standard-webhooks",
        "secret": SW["secret"],
        "body": SW["payload"].encode(),
        "headers": SW_HEADERS,
    }
    assert verify(**kwargs, now=SW["timestamp"] + 3000, tolerance=3600).timestamp == SW["timestamp"]
    assert reason_of(**kwargs, now=SW["timestamp"] + 61, tolerance=60) == "stale"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_standard_webhooks_missing_header(missing):
    headers = {k: v for k, v in SW_HEADERS.items() if k != missing}
    assert (
        reason_of(
            scheme="standard-webhooks",
            secret=SW["secret"],
            body=SW["payload"].encode(),
            headers=headers,
            now=SW["timestamp"],
        )
        == "missing"
    )


@pytest.mark.parametrize(
    "header, value",
    [
        ("webhook-timestamp", "yesterday"),
        ("webhook-signature", "garbage-without-comma"),
        ("webhook-id", "x" * 300),
    ],
)
def test_standard_webhooks_malformed_headers(header, value):
    headers = {**SW_HEADERS, header: value}
    assert (
        reason_of(
            scheme="standard-webhooks",
            secret=SW["secret"],
            body=SW["payload"].encode(),
            headers=headers,
            now=SW["timestamp"],
        )
        == "malformed"
    )


def test_standard_webhooks_altered_body_and_wrong_secret():
    kwargs = {"scheme": "standard-webhooks", "headers": SW_HEADERS, "now": SW["timestamp"]}
    assert reason_of(**kwargs, secret=SW["secret"], body=b'{"test": 2432232315}') == "invalid"
    assert reason_of(**kwargs, secret="whsec_" + "A" * 32, body=SW["payload"].encode()) == "invalid"


def test_standard_webhooks_secret_that_is_not_base64_is_a_configuration_error():
    with pytest.raises(ValueError, match="base64"):
        verify(
            scheme="standard-webhooks",
            secret="whsec_a",
            body=b"{}",
            headers=SW_HEADERS,
            now=SW["timestamp"],
        )


def test_standard_webhooks_sign_then_verify_with_current_clock():
    body = b'{"type": "post.published", "data": {"id": "abc"}}'
    headers = sign(scheme="standard-webhooks", secret=SW["secret"], body=body)
    assert headers["webhook-id"].startswith("msg_")
    verified = verify(scheme="standard-webhooks", secret=SW["secret"], body=body, headers=headers)
    assert verified.delivery_id == headers["webhook-id"]


# --- Ghost -------------------------------------------------------------------------------------


def test_ghost_locally_computed_vector():
    vector = VECTORS["ghost_x_ghost_signature"]
    body = vector["payload"].encode()
    headers = {"X-Ghost-Signature": vector["expected_header"]}
    verified = verify(
        scheme="ghost", secret=vector["secret"], body=body, headers=headers, now=GHOST_NOW
    )
    assert verified.timestamp == GHOST_NOW
    assert verified.delivery_id == hashlib.sha256(body + vector["t"].encode()).hexdigest()
    assert sign(scheme="ghost", secret=vector["secret"], body=body, now=GHOST_NOW) == headers


@pytest.mark.parametrize(
    "name, header",
    [
        (
            "ghost_webhook_post_published.SYNTH.json",
            "sha256=6ccb73d1d497fa88b33eff66581578bcf51f525d1237aa6eead94d2cbf3722c9",
        ),
        (
            "ghost_webhook_post_deleted.SYNTH.json",
            "sha256=92a4fee7085f51d05c26aaa68ac4cb3fd82eeec395d55008e6f590abd70fa874",
        ),
    ],
)
def test_ghost_synthesised_webhook_bodies(name, header):
    body = (DATA / name).read_bytes()
    headers = {"x-ghost-signature": f"{header}, t={GHOST_T}"}
    assert verify(
        scheme="ghost", secret=GHOST_SECRET, body=body, headers=headers, now=GHOST_NOW + 5
    ).timestamp


def test_ghost_replay_has_the_same_delivery_id_and_new_timestamp_a_new_one():
    body = b'{"post":{"current":{"id":"1"}}}'
    first = sign(scheme="ghost", secret=GHOST_SECRET, body=body, now=GHOST_NOW)
    second = sign(scheme="ghost", secret=GHOST_SECRET, body=body, now=GHOST_NOW + 1)
    one = verify(scheme="ghost", secret=GHOST_SECRET, body=body, headers=first, now=GHOST_NOW)
    again = verify(scheme="ghost", secret=GHOST_SECRET, body=body, headers=first, now=GHOST_NOW + 2)
    other = verify(scheme="ghost", secret=GHOST_SECRET, body=body, headers=second, now=GHOST_NOW)
    assert one.delivery_id == again.delivery_id != other.delivery_id


def test_ghost_failures():
    body = (DATA / "ghost_webhook_post_deleted.SYNTH.json").read_bytes()
    good = f"sha256=92a4fee7085f51d05c26aaa68ac4cb3fd82eeec395d55008e6f590abd70fa874, t={GHOST_T}"
    kwargs = {"scheme": "ghost", "secret": GHOST_SECRET, "now": GHOST_NOW}
    assert reason_of(**kwargs, body=body + b" ", headers={"X-Ghost-Signature": good}) == "invalid"
    assert (
        reason_of(**{**kwargs, "secret": "wrong"}, body=body, headers={"X-Ghost-Signature": good})
        == "invalid"
    )
    assert reason_of(**kwargs, body=body, headers={}) == "missing"
    assert (
        reason_of(**kwargs, body=body, headers={"X-Ghost-Signature": "sha256=abc, t=1"})
        == "malformed"
    )
    assert (
        reason_of(**kwargs, body=body, headers={"X-Ghost-Signature": "sha256=" + "a" * 64})
        == "malformed"
    )
    # t is milliseconds: 301 s in the past and in the future are both stale.
    assert (
        reason_of(
            **{**kwargs, "now": GHOST_NOW + 301}, body=body, headers={"X-Ghost-Signature": good}
        )
        == "stale"
    )
    assert (
        reason_of(
            **{**kwargs, "now": GHOST_NOW - 301}, body=body, headers={"X-Ghost-Signature": good}
        )
        == "stale"
    )


def test_ghost_timestamp_altered_invalidates_signature():
    body = (DATA / "ghost_webhook_post_deleted.SYNTH.json").read_bytes()
    digest = "92a4fee7085f51d05c26aaa68ac4cb3fd82eeec395d55008e6f590abd70fa874"
    forged = f"sha256={digest}, t={GHOST_T + 1000}"
    assert (
        reason_of(
            scheme="ghost",
            secret=GHOST_SECRET,
            body=body,
            headers={"X-Ghost-Signature": forged},
            now=GHOST_NOW,
        )
        == "invalid"
    )


# --- hmac-sha256-base64 (WP Webhooks / WooCommerce) ----------------------------------------------

B64 = VECTORS["woocommerce_and_wp_webhooks_style_base64"]


def test_base64_vector_default_and_renamed_header():
    body = B64["payload"].encode()
    verified = verify(
        scheme="hmac-sha256-base64",
        secret=B64["secret"],
        body=body,
        headers={"x-wp-webhook-signature": B64["expected_header"]},
    )
    assert verified == verify(
        scheme="hmac-sha256-base64",
        secret=B64["secret"],
        body=body,
        headers={"X-WC-Webhook-Signature": B64["expected_header"]},
        header_name="X-WC-Webhook-Signature",
    )
    assert verified.timestamp is None
    assert verified.delivery_id == hashlib.sha256(body).hexdigest()
    assert sign(scheme="hmac-sha256-base64", secret=B64["secret"], body=body) == {
        "X-WP-Webhook-Signature": B64["expected_header"]
    }


def test_base64_failures():
    kwargs = {"scheme": "hmac-sha256-base64", "secret": B64["secret"]}
    good = {"X-WP-Webhook-Signature": B64["expected_header"]}
    assert reason_of(**kwargs, body=b"Hello, World?", headers=good) == "invalid"
    assert (
        reason_of(**{**kwargs, "secret": "other"}, body=B64["payload"].encode(), headers=good)
        == "invalid"
    )
    assert reason_of(**kwargs, body=b"x", headers={}) == "missing"
    assert (
        reason_of(**kwargs, body=b"x", headers={"X-WP-Webhook-Signature": "not base64!"})
        == "malformed"
    )
    # Signature sent under the default header while the source expects the WooCommerce one.
    assert (
        reason_of(
            **kwargs,
            body=B64["payload"].encode(),
            headers=good,
            header_name="X-WC-Webhook-Signature",
        )
        == "missing"
    )


# --- WebSub and GitHub ----------------------------------------------------------------------

GH = VECTORS["github_x_hub_signature_256"]


def test_github_published_vector():
    body = GH["payload"].encode()
    verified = verify(
        scheme="github",
        secret=GH["secret"],
        body=body,
        headers={"X-Hub-Signature-256": GH["expected_header"]},
    )
    assert verified.delivery_id == hashlib.sha256(body).hexdigest()
    assert sign(scheme="github", secret=GH["secret"], body=body) == {
        "X-Hub-Signature-256": GH["expected_header"]
    }


def test_github_failures():
    body = GH["payload"].encode()
    kwargs = {"scheme": "github", "secret": GH["secret"]}
    sha1 = VECTORS["websub_x_hub_signature_sha1_same_inputs"]["expected_header"]
    assert reason_of(**kwargs, body=body, headers={"X-Hub-Signature-256": sha1}) == "invalid"
    assert (
        reason_of(
            **kwargs, body=body + b"!", headers={"X-Hub-Signature-256": GH["expected_header"]}
        )
        == "invalid"
    )
    assert (
        reason_of(**kwargs, body=body, headers={"X-Hub-Signature": GH["expected_header"]})
        == "missing"
    )
    assert (
        reason_of(**kwargs, body=body, headers={"X-Hub-Signature-256": "sha256:abc"}) == "malformed"
    )
    assert (
        reason_of(**kwargs, body=body, headers={"X-Hub-Signature-256": "sha256=xyz"}) == "malformed"
    )


@pytest.mark.parametrize("method", ["sha1", "sha256", "sha384", "sha512"])
def test_websub_methods(method):
    import hmac

    body = b"<feed>...</feed>"
    digest = hmac.new(b"hub-secret", body, getattr(hashlib, method)).hexdigest()
    headers = {"X-Hub-Signature": f"{method}={digest}"}
    assert (
        verify(scheme="websub", secret="hub-secret", body=body, headers=headers).timestamp is None
    )
    assert (
        reason_of(scheme="websub", secret="hub-secret", body=body + b" ", headers=headers)
        == "invalid"
    )


def test_websub_sha1_vector_and_refused_methods():
    body = GH["payload"].encode()
    sha1 = VECTORS["websub_x_hub_signature_sha1_same_inputs"]["expected_header"]
    assert verify(
        scheme="websub", secret=GH["secret"], body=body, headers={"x-hub-signature": sha1}
    )
    md5 = "md5=" + hashlib.md5(body).hexdigest()
    assert (
        reason_of(scheme="websub", secret=GH["secret"], body=body, headers={"X-Hub-Signature": md5})
        == "invalid"
    )


# --- none, calling errors, secrecy ---------------------------------------------------------------


def test_none_scheme_accepts_anything_and_ids_by_body():
    verified = verify(scheme="none", secret="", body=b"abc", headers={})
    assert verified.delivery_id == hashlib.sha256(b"abc").hexdigest()
    assert verified.timestamp is None
    assert sign(scheme="none", secret="", body=b"abc") == {}


def test_unknown_scheme_names_valid_ones():
    with pytest.raises(ValueError) as info:
        verify(scheme="md5", secret="s", body=b"", headers={})
    for scheme in SCHEMES:
        assert scheme in str(info.value)


def test_empty_secret_body_type_and_header_name_misuse_are_caller_errors():
    with pytest.raises(ValueError, match="secret"):
        verify(scheme="github", secret="", body=b"x", headers={})
    with pytest.raises(TypeError, match="bytes"):
        verify(scheme="github", secret="s", body="text", headers={})
    with pytest.raises(ValueError, match="header_name"):
        verify(scheme="ghost", secret="s", body=b"", headers={}, header_name="X-Other")


def test_signature_error_messages_never_contain_the_secret_or_expected_digest():
    secret = "s3cr3t-value-that-must-not-leak"
    body = b"payload"
    right = sign(scheme="github", secret=secret, body=body)["X-Hub-Signature-256"]
    for headers in (
        {"X-Hub-Signature-256": "sha256=" + "0" * 64},
        {},
        {"X-Hub-Signature-256": "oops"},
    ):
        with pytest.raises(SignatureError) as info:
            verify(scheme="github", secret=secret, body=body, headers=headers)
        assert secret not in str(info.value)
        assert right.split("=")[1] not in str(info.value)


def test_signature_error_rejects_unknown_reason():
    with pytest.raises(ValueError):
        SignatureError("bad", "text")


def test_sign_interoperates_with_the_standardwebhooks_library():
    from standardwebhooks.webhooks import Webhook

    body = b'{"type": "post.updated", "data": {"id": 1}}'
    headers = sign(scheme="standard-webhooks", secret=SW["secret"], body=body)
    assert Webhook(SW["secret"]).verify(body, headers) == {
        "type": "post.updated",
        "data": {"id": 1},
    }
