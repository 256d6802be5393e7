"""Signed task messages with Celery's ``auth`` serializer.

Set the three settings and every message is signed with the key and checked
against the certificates in the store; unsigned or tampered messages are
refused by workers::

    CELERY_SECURITY_KEY=/etc/plonecelery/worker.key
    CELERY_SECURITY_CERTIFICATE=/etc/plonecelery/worker.pem
    CELERY_SECURITY_CERT_STORE=/etc/plonecelery/certs/*.pem

Plone instances need the key (they sign what they queue); workers need the
store (and the key too, for retries and the outbox relay).

Celery signs only the message *body*. The ``plonecelery`` header (site, user,
unrestricted) would stay open to tampering, so a copy of it, with the task's id
and name, is sealed into the signed body when the message is published
(:func:`seal_envelope`), and workers refuse a message whose header differs from
the sealed copy (:class:`SignedRequest`). Celery 5.7 reports a bad signature as
a ``TypeError`` about "catching classes"; :class:`ReadableSecureSerializer`
says what is wrong instead.
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from celery import signals
from celery.exceptions import InvalidTaskError
from celery.exceptions import SecurityError
from celery.security.serialization import SecureSerializer
from celery.worker.request import Request
from kombu.serialization import loads
from kombu.utils.encoding import bytes_to_str

from .config import addon_settings
from .exceptions import ConfigurationError
from .internals import request_message
from .internals import set_default_serializer

logger = logging.getLogger(__name__)

SECURITY_SETTINGS = ("security_key", "security_certificate", "security_cert_store")
#: The envelope header (``dispatch.HEADER``; not imported, to keep this module light).
HEADER = "plonecelery"
#: Key of the signed body's ``embed`` part that holds ``[task id, task name]``.
SEALED_FOR = "plonecelery_for"


def signing_requested(settings: dict) -> bool:
    """True when the key, certificate and store are all configured."""
    given = [name for name in SECURITY_SETTINGS if settings.get(name)]
    if given and len(given) != len(SECURITY_SETTINGS):
        missing = ", ".join(
            "CELERY_" + name.upper() for name in SECURITY_SETTINGS if name not in given
        )
        raise ConfigurationError(f"Message signing needs {missing} as well.")
    return bool(given)


def apply_signing(settings: dict) -> None:
    """Switch ``settings`` to signed messages and register the serializer.

    Results stay JSON (they are not signed by Celery); pickle and every other
    serializer but JSON and ``auth`` are disabled.
    """
    from celery.security import disable_untrusted_serializers
    from celery.security.certificate import Certificate
    from celery.security.certificate import FSCertStore
    from celery.security.key import PrivateKey
    from celery.security.utils import get_digest_algorithm
    from kombu.serialization import registry

    settings["task_serializer"] = "auth"
    settings["accept_content"] = ["auth"]
    try:
        with open(settings["security_key"]) as key, open(settings["security_certificate"]) as cert:
            key_text, cert_text = key.read(), cert.read()
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the signing key or certificate: {exc}") from exc
    try:
        serializer = ReadableSecureSerializer(
            PrivateKey(key_text, password=settings.get("security_key_password")),
            Certificate(cert_text),
            FSCertStore(settings["security_cert_store"]),
            get_digest_algorithm(settings.get("security_digest") or "sha256"),
            serializer="json",
        )
    except (SecurityError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"Message signing cannot start: {exc}") from exc
    # The digest was resolved above; SecureSerializer resolves it again from a name.
    registry.register(
        "auth",
        serializer.serialize,
        serializer.deserialize,
        content_type="application/data",
        content_encoding="utf-8",
    )
    disable_untrusted_serializers(["json", "auth"])
    set_default_serializer("auth")
    signals.before_task_publish.connect(seal_envelope, weak=False)


class ReadableSecureSerializer(SecureSerializer):
    """Celery's signed serializer, with refusals a person can act on.

    (Celery 5.7's ``reraise_errors`` catches the ``cryptography.exceptions`` module,
    so a bad signature surfaces as ``TypeError: catching classes that do not inherit
    from BaseException is not allowed``.)
    """

    def __init__(self, key, cert, cert_store, digest, serializer="json"):
        # SecureSerializer wants a digest name; keep the resolved algorithm.
        super().__init__(key, cert, cert_store, "sha256", serializer=serializer)
        self._digest = digest

    def deserialize(self, data):
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric import padding

        try:
            payload = self._unpack(data)
            signer = bytes_to_str(payload["signer"])
        except Exception:
            raise SecurityError(
                "Refusing a message that is not signed: its body is not an 'auth' payload"
            ) from None
        try:
            cert = self._cert_store[signer]
        except SecurityError:
            raise SecurityError(
                f"Refusing a message signed by certificate {signer!r}, which is not in "
                "CELERY_SECURITY_CERT_STORE"
            ) from None
        if cert.has_expired():
            raise SecurityError(f"Refusing a message signed by expired certificate {signer!r}")
        if payload["content_type"] != "application/json":
            raise SecurityError(
                f"Refusing a signed message whose inner content type is "
                f"{payload['content_type']!r}: only application/json is accepted"
            )
        pad = padding.PSS(mgf=padding.MGF1(self._digest), salt_length=padding.PSS.MAX_LENGTH)
        try:
            cert.get_pubkey().verify(payload["signature"], payload["body"], pad, self._digest)
        except InvalidSignature:
            raise SecurityError(
                f"Refusing a message with a bad signature (claimed signer {signer!r}): "
                "it was altered after signing, or signed with a key that is not this "
                "certificate's"
            ) from None
        return loads(payload["body"], "application/json", payload["content_encoding"], force=True)


def seal_envelope(body=None, headers=None, **kwargs) -> None:
    """Copy the ``plonecelery`` header and the task's id and name into the signed body.

    Connected to ``before_task_publish`` by :func:`apply_signing`, so only once signing is on.
    """
    if headers is None or HEADER not in headers:
        return
    if not (isinstance(body, tuple | list) and len(body) == 3 and isinstance(body[2], dict)):
        return
    body[2][HEADER] = headers[HEADER]
    body[2][SEALED_FOR] = [headers.get("id"), headers.get("task")]


class SignedRequest(Request):
    """A worker's request that refuses a ``plonecelery`` header that was not signed.

    It also refuses, rather than dies of, a message whose body is not Celery's
    ``(args, kwargs, embed)``: Celery's own Request raises ValueError for one, which
    stops the whole worker ("Unrecoverable error"). Such a message is a forgery, or a
    signed one reaching a worker that does not sign (during a switch to signing).
    """

    def __init__(self, message, *args, **kwargs):
        try:
            super().__init__(message, *args, **kwargs)
        except (ValueError, TypeError) as exc:
            raise InvalidTaskError(
                f"Refusing a message for {message.headers.get('task')!r} whose body is not "
                f"Celery protocol 2 ({exc}); content type {message.content_type!r}: forged, "
                "or signed for a worker with message signing on"
            ) from exc
        app, headers, body = request_message(self)
        if app.conf.task_serializer == "auth":
            check_sealed(headers, body)


def check_sealed(headers: dict, payload) -> None:
    """Raise ``InvalidTaskError`` unless the envelope header is the signed copy's twin."""
    envelope = headers.get(HEADER)
    try:
        _args, _kwargs, embed = payload
    except (TypeError, ValueError):
        raise InvalidTaskError("Refusing a message whose body is not Celery protocol 2") from None
    embed = embed or {}
    sealed, sealed_for = embed.get(HEADER), embed.get(SEALED_FOR)
    if envelope is None and sealed is None:
        return
    name = f"{headers.get('task')}[{headers.get('id')}]"
    if sealed is None:
        raise InvalidTaskError(
            f"Refusing {name}: its plonecelery header (site, user) is not covered by the "
            "signature; it was not sent by a signing collective.plonecelery"
        )
    if sealed_for != [headers.get("id"), headers.get("task")]:
        raise InvalidTaskError(
            f"Refusing {name}: the signed body belongs to task {sealed_for!r}; "
            "the message's id or task name was changed after signing"
        )
    if envelope != sealed:
        raise InvalidTaskError(
            f"Refusing {name}: its plonecelery header was altered after signing "
            f"(header {_describe(envelope)}, signed {_describe(sealed)})"
        )


def _describe(envelope) -> str:
    if not isinstance(envelope, dict):
        return repr(envelope)[:80]
    return (
        f"user={envelope.get('user')!r} unrestricted={envelope.get('unrestricted')!r} "
        f"site={envelope.get('site')!r}"
    )


def check_policy(settings: dict, environ=None) -> None:
    """``PLONECELERY_REQUIRE_SIGNING`` refuses to start unsigned; a remote broker warns."""
    if settings.get("task_serializer") == "auth":
        return
    required = addon_settings(environ).require_signing
    if required:
        raise ConfigurationError(
            "PLONECELERY_REQUIRE_SIGNING is on but message signing is not configured: set "
            "CELERY_SECURITY_KEY, CELERY_SECURITY_CERTIFICATE and CELERY_SECURITY_CERT_STORE "
            "(plonecelery keys create makes a key and certificate)"
        )
    host = broker_host(str(settings.get("broker_url") or ""))
    if host is not None and not _is_loopback(host):
        logger.warning(
            "The broker %s is not on this machine and messages are not signed: anyone who "
            "can publish to it can run tasks as any user. Turn on message signing "
            "(docs/security.rst) or set PLONECELERY_REQUIRE_SIGNING=true to enforce it.",
            host,
        )


def broker_host(url: str) -> str | None:
    """The host of a network broker URL (``None`` for sqlite/memory/filesystem brokers)."""
    first = url.split(";")[0]
    try:
        parts = urlsplit(first)
    except ValueError:
        return None
    scheme = parts.scheme.split("+")[-1]
    if scheme in ("sqlite", "memory", "filesystem", "") or parts.scheme.startswith("sqla+sqlite"):
        return None
    return parts.hostname or "localhost"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
