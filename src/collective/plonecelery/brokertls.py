"""Fail fast when TLS to the broker cannot work, instead of retrying forever.

A worker retries a broker connection at start-up for ever
(``broker_connection_retry_on_startup``), which is right for a broker that is still
starting, and wrong for a certificate that will never verify: the worker then hangs
with a retry message every few seconds. :func:`check_broker_tls` connects once, before
the worker starts, and turns a TLS failure into a :class:`ConfigurationError` that
names the setting to fix. Any other connection error is left to Celery's retries.
"""

from __future__ import annotations

import logging
import ssl

from .exceptions import ConfigurationError

logger = logging.getLogger(__name__)

TLS_SCHEMES = ("rediss", "amqps")


def uses_tls(settings: dict) -> bool:
    scheme = str(settings.get("broker_url") or "").split(":", 1)[0]
    return scheme in TLS_SCHEMES or bool(settings.get("broker_use_ssl"))


def check_broker_tls(settings: dict, *, timeout: float = 10.0) -> None:
    """Connect to a TLS broker once; ``ConfigurationError`` if the TLS handshake fails."""
    if not uses_tls(settings):
        return
    from kombu import Connection

    connection = Connection(
        settings["broker_url"],
        # A copy: kombu writes server_hostname into the dict it is given.
        ssl=_copy(settings.get("broker_use_ssl")) or None,
        connect_timeout=timeout,
        transport_options=settings.get("broker_transport_options") or {},
    )
    try:
        connection.connect()
    except Exception as exc:
        if _is_tls_error(exc):
            raise ConfigurationError(
                f"TLS to the broker failed: {_reason(exc)}. {_hint(settings)}"
            ) from None
        logger.info("Broker not reachable yet (%s); the worker keeps retrying", exc)
    finally:
        connection.release()


def _copy(options):
    return dict(options) if isinstance(options, dict) else options


def _hint(settings: dict) -> str:
    """What to check, in the option names of the broker's client library."""
    scheme = str(settings.get("broker_url") or "").split(":", 1)[0].split("+")[-1]
    if scheme in ("amqp", "amqps", "pyamqp"):
        return (
            "Check ca_certs in CELERY_BROKER_USE_SSL (and certfile, keyfile, "
            "server_hostname; py-amqp takes Python's ssl names)."
        )
    return (
        "Check the CA and certificates in CELERY_BROKER_USE_SSL (ssl_ca_certs, "
        "ssl_certfile, ssl_keyfile) or the rediss:// URL's query string."
    )


def _is_tls_error(exc: BaseException) -> bool:
    seen = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        text = str(seen)
        if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text and "handshake" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reason(exc: BaseException) -> str:
    seen = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return str(exc)
