"""Verify (and, for tests and demos, produce) the signatures blog platforms put on webhooks.

Usage::

    from collective.plonecelery.blogs.verify.signatures import SignatureError, verify

    try:
        verified = verify(scheme="ghost", secret=secret, body=raw_body, headers=request_headers)
    except SignatureError as exc:
        ...  # answer 401 and log exc.reason ('missing', 'invalid', 'stale' or 'malformed')
    verified.delivery_id  # idempotency key: the same signed request always gives the same id

Every scheme is an HMAC over the raw body bytes, so always pass the body exactly as received
(never re-serialise parsed JSON). Digests are compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime

from standardwebhooks.webhooks import EmptyWebhookSecretError
from standardwebhooks.webhooks import Webhook

from ...exceptions import SignatureError

SCHEMES = ("ghost", "standard-webhooks", "hmac-sha256-base64", "websub", "github", "none")

#: Signature header each scheme reads (and :func:`sign` writes) unless ``header_name`` overrides it.
DEFAULT_HEADERS = {
    "ghost": "X-Ghost-Signature",
    "standard-webhooks": "webhook-signature",
    "hmac-sha256-base64": "X-WP-Webhook-Signature",
    "websub": "X-Hub-Signature",
    "github": "X-Hub-Signature-256",
}
#: Schemes whose signature header may be renamed (e.g. ``X-WC-Webhook-Signature``, WooCommerce).
RENAMEABLE_HEADER_SCHEMES = ("hmac-sha256-base64", "websub", "github")

_WEBSUB_METHODS = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}
_MAX_MESSAGE_ID_LENGTH = 256
#: Timestamps are ASCII digits, at most 16 of them (milliseconds until the year 318857).
#: ``str.isdigit()`` also accepts '\xb2' and other non-ASCII digits that ``int()`` refuses,
#: and thousands of digits make ``int()`` slow or a float overflow: both are malformed.
_TIMESTAMP = re.compile(r"[0-9]{1,16}")


@dataclass(frozen=True)
class Verified:
    """What a successful verification tells about the delivery."""

    #: ``webhook-id`` for standard-webhooks; otherwise the sha256 hex of the signed material,
    #: so a replay of the same signed request yields the same id.
    delivery_id: str
    #: Unix seconds, for schemes whose signature covers a timestamp (ghost, standard-webhooks).
    timestamp: float | None


def verify(
    *,
    scheme: str,
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    tolerance: int = 300,
    now: float | None = None,
    header_name: str | None = None,
) -> Verified:
    """Check the signature of a webhook request and return what identifies the delivery.

    ``headers`` is looked up case-insensitively. ``tolerance`` (seconds) bounds how far the signed
    timestamp may be from ``now`` (default: the current time), in either direction.
    ``header_name`` renames the signature header for the schemes in ``RENAMEABLE_HEADER_SCHEMES``.

    Raises :class:`SignatureError` when the request is not authentic, and ``ValueError`` when the
    call itself is wrong (unknown scheme, empty secret, ...).

    >>> body = b"Hello, World!"
    >>> verify(scheme="github", secret="It's a Secret to Everybody", body=body,
    ...        headers={"x-hub-signature-256": "sha256=757107ea0eb2509fc211221cce984b8a"
    ...                 "37570b6d7586c22c46f4379c8b043e17"}).timestamp is None
    True
    """
    _check_call(scheme=scheme, header_name=header_name)
    body = _as_bytes(body)
    if scheme == "none":
        return Verified(delivery_id=_sha256_hex(body), timestamp=None)
    if not secret:
        raise ValueError(
            f"the webhook secret for scheme {scheme!r} is empty: configure the secret the blog "
            "signs with (or use scheme 'none' on a trusted network)"
        )
    if scheme == "standard-webhooks":
        _standard_webhook(secret)  # a secret that is not base64 is the source's fault: ValueError
    lowered = {str(key).lower(): value for key, value in headers.items()}
    now = time.time() if now is None else now
    header = (header_name or DEFAULT_HEADERS[scheme]).lower()
    try:
        return _verify_scheme(
            scheme=scheme,
            secret=secret,
            body=body,
            headers=lowered,
            header=header,
            tolerance=tolerance,
            now=now,
        )
    except (ValueError, OverflowError, TypeError) as exc:
        # Whatever the headers contain, a parsing error is the sender's: never a 500.
        raise SignatureError(
            "malformed", f"the signature headers cannot be parsed ({type(exc).__name__})"
        ) from None


def _verify_scheme(
    *,
    scheme: str,
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    header: str,
    tolerance: int,
    now: float,
) -> Verified:
    lowered = headers
    if scheme == "ghost":
        return _verify_ghost(
            secret=secret, body=body, value=lowered.get(header), tolerance=tolerance, now=now
        )
    if scheme == "standard-webhooks":
        return _verify_standard(
            secret=secret, body=body, headers=lowered, tolerance=tolerance, now=now
        )
    if scheme == "hmac-sha256-base64":
        return _verify_base64(secret=secret, body=body, value=lowered.get(header), header=header)
    methods = ("sha256",) if scheme == "github" else tuple(_WEBSUB_METHODS)
    return _verify_prefixed_hex(
        secret=secret, body=body, value=lowered.get(header), header=header, methods=methods
    )


def sign(
    *,
    scheme: str,
    secret: str,
    body: bytes,
    now: float | None = None,
    msg_id: str | None = None,
    header_name: str | None = None,
) -> dict[str, str]:
    """Return the headers a sender using ``scheme`` would add to a request carrying ``body``.

    Meant for tests, demos (curl lines) and benchmarks. ``now`` defaults to the current time,
    ``msg_id`` (standard-webhooks only) to a random ``msg_...`` id. websub signs with sha256.

    >>> headers = sign(scheme="github", secret="It's a Secret to Everybody", body=b"Hello, World!")
    >>> headers["X-Hub-Signature-256"][:20]
    'sha256=757107ea0eb25'
    """
    _check_call(scheme=scheme, header_name=header_name)
    body = _as_bytes(body)
    if scheme == "none":
        return {}
    if not secret:
        raise ValueError(f"cannot sign with scheme {scheme!r} and an empty secret")
    now = time.time() if now is None else now
    header = header_name or DEFAULT_HEADERS[scheme]
    if scheme == "ghost":
        millis = str(int(now * 1000))
        digest = _hmac_hex(secret, body + millis.encode(), hashlib.sha256)
        return {header: f"sha256={digest}, t={millis}"}
    if scheme == "standard-webhooks":
        msg_id = msg_id or f"msg_{secrets.token_urlsafe(18)}"
        seconds = int(now)
        signed_at = datetime.fromtimestamp(seconds, tz=UTC)
        signature = _standard_webhook(secret).sign(msg_id, signed_at, _utf8(body))
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(seconds),
            "webhook-signature": signature,
        }
    if scheme == "hmac-sha256-base64":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        return {header: base64.b64encode(digest).decode("ascii")}
    return {header: f"sha256={_hmac_hex(secret, body, hashlib.sha256)}"}


def _check_call(*, scheme: str, header_name: str | None) -> None:
    if scheme not in SCHEMES:
        raise ValueError(
            f"unknown webhook signature scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}"
        )
    if header_name and scheme not in RENAMEABLE_HEADER_SCHEMES:
        raise ValueError(
            f"header_name cannot be changed for scheme {scheme!r}; "
            f"only for: {', '.join(RENAMEABLE_HEADER_SCHEMES)}"
        )


def _as_bytes(body: bytes) -> bytes:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError(f"pass the raw request body as bytes, not {type(body).__name__}")
    return bytes(body)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac_hex(secret: str, data: bytes, digestmod) -> str:
    return hmac.new(secret.encode(), data, digestmod).hexdigest()


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("malformed", "the request body is not UTF-8") from None


def _standard_webhook(secret: str) -> Webhook:
    try:
        return Webhook(secret)
    except (binascii.Error, EmptyWebhookSecretError, RuntimeError):
        raise ValueError(
            "the standard-webhooks secret must be base64 (optionally prefixed with 'whsec_'), "
            "as shown by the sending platform"
        ) from None


def _require(value: str | None, header: str) -> str:
    if value is None or not value.strip():
        raise SignatureError("missing", f"the {header} header is missing")
    return value.strip()


def _check_fresh(*, timestamp: float, tolerance: int, now: float) -> None:
    # Both directions count: a timestamp far in the future is as suspicious as an old one.
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            "stale",
            f"the signed timestamp is {abs(now - timestamp):.0f} s away from now "
            f"(tolerance {tolerance} s); check the clocks or it is a replay",
        )


_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _verify_ghost(
    *, secret: str, body: bytes, value: str | None, tolerance: int, now: float
) -> Verified:
    value = _require(value, "X-Ghost-Signature")
    parts = dict(part.strip().partition("=")[::2] for part in value.split(","))
    digest, millis = parts.get("sha256", ""), parts.get("t", "")
    if not _HEX64.fullmatch(digest) or not _TIMESTAMP.fullmatch(millis):
        raise SignatureError(
            "malformed", "X-Ghost-Signature must look like 'sha256=<64 hex>, t=<milliseconds>'"
        )
    _check_fresh(timestamp=int(millis) / 1000, tolerance=tolerance, now=now)
    signed = body + millis.encode()
    expected = _hmac_hex(secret, signed, hashlib.sha256)
    if not hmac.compare_digest(expected, digest.lower()):
        raise SignatureError("invalid", "the X-Ghost-Signature does not match the body and secret")
    return Verified(delivery_id=_sha256_hex(signed), timestamp=int(millis) / 1000)


def _verify_standard(
    *, secret: str, body: bytes, headers: Mapping[str, str], tolerance: int, now: float
) -> Verified:
    # The library's own verify() checks the timestamp against its fixed 5-minute window and the
    # real clock; we check freshness with the caller's tolerance/now and let the library sign.
    webhook = _standard_webhook(secret)
    msg_id = _require(headers.get("webhook-id"), "webhook-id")
    stamp = _require(headers.get("webhook-timestamp"), "webhook-timestamp")
    signatures = _require(headers.get("webhook-signature"), "webhook-signature")
    if len(msg_id) > _MAX_MESSAGE_ID_LENGTH:
        raise SignatureError(
            "malformed", f"the webhook-id header is longer than {_MAX_MESSAGE_ID_LENGTH} characters"
        )
    if not _TIMESTAMP.fullmatch(stamp):
        raise SignatureError(
            "malformed", "the webhook-timestamp header must be integer Unix seconds"
        )
    _check_fresh(timestamp=int(stamp), tolerance=tolerance, now=now)
    signed_at = datetime.fromtimestamp(int(stamp), tz=UTC)
    expected = base64.b64decode(webhook.sign(msg_id, signed_at, _utf8(body)).split(",", 1)[1])
    entries = [entry.partition(",") for entry in signatures.split()]
    if not all(sep and sig for _version, sep, sig in entries):
        raise SignatureError(
            "malformed", "webhook-signature must be space-separated '<version>,<base64>' entries"
        )
    matched = False
    for version, _sep, candidate in entries:
        if version == "v1":
            # Keep comparing after a match so timing does not reveal which entry matched.
            matched |= hmac.compare_digest(expected, _b64_or_empty(candidate))
    if not matched:
        raise SignatureError(
            "invalid", "no v1 entry of webhook-signature matches the body and secret"
        )
    return Verified(delivery_id=msg_id, timestamp=float(stamp))


def _b64_or_empty(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        return b""


def _verify_base64(*, secret: str, body: bytes, value: str | None, header: str) -> Verified:
    value = _require(value, header)
    try:
        given = base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise SignatureError("malformed", f"the {header} header is not base64") from None
    expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, given):
        raise SignatureError(
            "invalid", f"the {header} signature does not match the body and secret"
        )
    return Verified(delivery_id=_sha256_hex(body), timestamp=None)


def _verify_prefixed_hex(
    *, secret: str, body: bytes, value: str | None, header: str, methods: tuple
) -> Verified:
    value = _require(value, header)
    method, sep, digest = value.partition("=")
    method = method.strip().lower()
    if not sep or not re.fullmatch(r"[0-9a-fA-F]+", digest.strip()):
        raise SignatureError(
            "malformed", f"the {header} header must look like '<method>=<hex digest>'"
        )
    if method not in methods:
        raise SignatureError(
            "invalid", f"the {header} method {method[:20]!r} is not accepted; use one of {methods}"
        )
    expected = _hmac_hex(secret, body, _WEBSUB_METHODS[method])
    if not hmac.compare_digest(expected, digest.strip().lower()):
        raise SignatureError(
            "invalid", f"the {header} signature does not match the body and secret"
        )
    return Verified(delivery_id=_sha256_hex(body), timestamp=None)
