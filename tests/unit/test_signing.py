"""Signed messages: the auth serializer signs, verifies and refuses tampering."""

import base64
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from kombu.serialization import dumps
from kombu.serialization import loads

from collective.plonecelery.config import settings_from_environ
from collective.plonecelery.exceptions import ConfigurationError
from collective.plonecelery.signing import apply_signing
from collective.plonecelery.signing import signing_requested


@pytest.fixture
def keys(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plonecelery-worker")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "certs").mkdir()
    key_file = tmp_path / "worker.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "worker.pem").write_bytes(cert_pem)
    (tmp_path / "certs" / "worker.pem").write_bytes(cert_pem)
    return {
        "CELERY_SECURITY_KEY": str(key_file),
        "CELERY_SECURITY_CERTIFICATE": str(tmp_path / "worker.pem"),
        "CELERY_SECURITY_CERT_STORE": str(tmp_path / "certs" / "*.pem"),
    }


def test_signing_is_off_by_default():
    assert signing_requested(settings_from_environ({})) is False


def test_partial_signing_settings_say_what_is_missing(keys):
    partial = {"CELERY_SECURITY_KEY": keys["CELERY_SECURITY_KEY"]}
    with pytest.raises(ConfigurationError, match="CELERY_SECURITY_CERT_STORE"):
        signing_requested(settings_from_environ(partial))


def test_messages_are_signed_verified_and_tampering_refused(keys):
    settings = settings_from_environ(keys)
    assert signing_requested(settings)
    apply_signing(settings)
    assert settings["task_serializer"] == "auth"
    assert settings["accept_content"] == ["auth"]
    content_type, encoding, body = dumps({"args": [1, 2]}, serializer="auth")
    assert loads(body, content_type, encoding, accept=["auth"]) == {"args": [1, 2]}
    raw = base64.b64decode(body)
    assert b"[1, 2]" in raw
    tampered = base64.b64encode(raw.replace(b"[1, 2]", b"[1, 3]")).decode()
    # Refused. (Celery 5.7's reraise_errors() catches the cryptography
    # *module* instead of its exceptions, so the reason reads TypeError rather
    # than "Bad signature": the message is refused all the same.)
    with pytest.raises(Exception, match="Unable to deserialize"):
        loads(tampered, content_type, encoding, accept=["auth"])
    # Pickle is refused outright.
    with pytest.raises(Exception, match="(?i)pickle|disabled|refus"):
        loads(b"\x80\x04K\x01.", "application/x-python-serialize", "binary", accept=["auth"])


def test_unreadable_key_fails_clearly(keys, tmp_path):
    settings = settings_from_environ({**keys, "CELERY_SECURITY_KEY": str(tmp_path / "nope.key")})
    with pytest.raises(ConfigurationError, match="signing key"):
        apply_signing(settings)
