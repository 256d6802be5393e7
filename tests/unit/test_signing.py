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
    # Refused, with the reason (not Celery 5.7's misleading TypeError).
    with pytest.raises(Exception, match="bad signature") as info:
        loads(tampered, content_type, encoding, accept=["auth"])
    assert "catching classes" not in str(info.value)
    # Pickle is refused outright.
    with pytest.raises(Exception, match="(?i)pickle|disabled|refus"):
        loads(b"\x80\x04K\x01.", "application/x-python-serialize", "binary", accept=["auth"])


def test_unreadable_key_fails_clearly(keys, tmp_path):
    settings = settings_from_environ({**keys, "CELERY_SECURITY_KEY": str(tmp_path / "nope.key")})
    with pytest.raises(ConfigurationError, match="signing key"):
        apply_signing(settings)


@pytest.mark.parametrize(
    "environ",
    [
        {"CELERY_ACCEPT_CONTENT": '["application/x-python-serialize"]'},
        {"CELERY_ACCEPT_CONTENT": "json,Application/X-Python-Serialize"},
        {"CELERY_RESULT_ACCEPT_CONTENT": "application/x-python-serialize"},
        {"CELERY_ACCEPT_CONTENT": "yaml"},
        {"CELERY_RESULT_ACCEPT_CONTENT": "application/x-yaml"},
        {"CELERY_TASK_SERIALIZER": "pickle"},
        {"CELERY_RESULT_SERIALIZER": "yaml"},
        {"CELERY_EVENT_SERIALIZER": "pickle"},
    ],
)
def test_code_running_serializers_are_refused_by_name_and_content_type(environ):
    with pytest.raises(ConfigurationError, match="pickle|yaml"):
        settings_from_environ(environ)


def test_unknown_signer_and_foreign_content_type_are_explained(keys, tmp_path):
    from kombu.utils.encoding import ensure_bytes

    from collective.plonecelery.signing import ReadableSecureSerializer

    settings = settings_from_environ(keys)
    apply_signing(settings)
    content_type, encoding, body = dumps({"a": 1}, serializer="auth")
    from kombu.serialization import registry

    serializer = registry._decoders["application/data"].__self__
    assert isinstance(serializer, ReadableSecureSerializer)
    payload = serializer._unpack(body)
    other = serializer._pack(
        payload["body"],
        payload["content_type"],
        payload["content_encoding"],
        signer=b"CN=someone-else 42",
        signature=payload["signature"],
    )
    with pytest.raises(Exception, match="not in CELERY_SECURITY_CERT_STORE"):
        loads(other, content_type, encoding, accept=["auth"])
    pickled = serializer._pack(
        payload["body"],
        "application/x-python-serialize",
        "binary",
        signer=ensure_bytes(payload["signer"]),
        signature=payload["signature"],
    )
    with pytest.raises(Exception, match="only application/json"):
        loads(pickled, content_type, encoding, accept=["auth"])
    with pytest.raises(Exception, match="not signed"):
        loads(base64.b64encode(b"plain"), content_type, encoding, accept=["auth"])


def test_the_envelope_header_must_match_its_signed_copy():
    from celery.exceptions import InvalidTaskError

    from collective.plonecelery.signing import check_sealed

    envelope = {"site": "/plone", "user": "bob", "unrestricted": False}
    headers = {"id": "t1", "task": "x.y", "plonecelery": dict(envelope)}
    sealed = ([], {}, {"plonecelery": dict(envelope), "plonecelery_for": ["t1", "x.y"]})
    check_sealed(headers, sealed)
    check_sealed({"id": "t1", "task": "celery.ping"}, ([], {}, {}))
    with pytest.raises(InvalidTaskError, match="altered after signing"):
        check_sealed({**headers, "plonecelery": {**envelope, "unrestricted": True}}, sealed)
    with pytest.raises(InvalidTaskError, match="altered after signing"):
        check_sealed({**headers, "plonecelery": {**envelope, "user": "admin"}}, sealed)
    with pytest.raises(InvalidTaskError, match="id or task name"):
        check_sealed({**headers, "task": "x.other"}, sealed)
    with pytest.raises(InvalidTaskError, match="not covered by the signature"):
        check_sealed(headers, ([], {}, {}))


def test_require_signing_refuses_to_start_and_remote_brokers_warn(caplog):
    from collective.plonecelery.signing import check_policy

    settings = settings_from_environ({"CELERY_BROKER_URL": "redis://10.1.2.3:6379/0"})
    with pytest.raises(ConfigurationError, match="PLONECELERY_REQUIRE_SIGNING"):
        check_policy(settings, {"PLONECELERY_REQUIRE_SIGNING": "true"})
    with caplog.at_level("WARNING"):
        check_policy(settings, {})
    assert "10.1.2.3 is not on this machine" in caplog.text
    caplog.clear()
    for url in ("redis://127.0.0.1:6379/0", "amqp://guest@localhost//", "sqla+sqlite:///x.db"):
        check_policy(settings_from_environ({"CELERY_BROKER_URL": url}), {})
    assert caplog.text == ""
