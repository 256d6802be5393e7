"""Signed task messages with Celery's ``auth`` serializer.

Set the three settings and every message is signed with the key and checked
against the certificates in the store; unsigned or tampered messages are
refused by workers::

    CELERY_SECURITY_KEY=/etc/plonecelery/worker.key
    CELERY_SECURITY_CERTIFICATE=/etc/plonecelery/worker.pem
    CELERY_SECURITY_CERT_STORE=/etc/plonecelery/certs/*.pem

Plone instances need the key (they sign what they queue); workers need the
store (and the key too, for retries and the outbox relay).
"""

from __future__ import annotations

from .exceptions import ConfigurationError
from .internals import set_default_serializer

SECURITY_SETTINGS = ("security_key", "security_certificate", "security_cert_store")


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
    from celery.security.serialization import register_auth

    settings["task_serializer"] = "auth"
    settings["accept_content"] = ["auth"]
    try:
        with open(settings["security_key"]) as key, open(settings["security_certificate"]) as cert:
            register_auth(
                key.read(),
                settings.get("security_key_password"),
                cert.read(),
                settings["security_cert_store"],
                settings.get("security_digest") or "sha256",
                "json",
            )
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the signing key or certificate: {exc}") from exc
    disable_untrusted_serializers(["json", "auth"])
    set_default_serializer("auth")
