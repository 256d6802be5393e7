"""The broker TLS check's error names the options of the broker's client library."""

import ssl

import pytest

from collective.plonecelery import brokertls
from collective.plonecelery.exceptions import ConfigurationError


class FailingConnection:
    """kombu's Connection whose connect() fails as a TLS handshake with a wrong CA does."""

    seen: list = []

    def __init__(self, url, ssl=None, **kwargs):
        self.ssl = ssl
        FailingConnection.seen.append(ssl)

    def connect(self):
        if isinstance(self.ssl, dict):
            self.ssl["server_hostname"] = "written by kombu"
        raise ssl.SSLCertVerificationError(
            1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
        )

    def release(self):
        pass


@pytest.fixture
def failing(monkeypatch):
    import kombu

    FailingConnection.seen.clear()
    monkeypatch.setattr(kombu, "Connection", FailingConnection)
    return FailingConnection.seen


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("amqps://plone@rabbitmq:5671//", "Check ca_certs in CELERY_BROKER_USE_SSL"),
        ("amqp://plone@rabbitmq:5672//", "Check ca_certs in CELERY_BROKER_USE_SSL"),
        ("rediss://redis:6380/0", "(ssl_ca_certs, ssl_certfile, ssl_keyfile)"),
    ],
)
def test_the_error_names_the_options_of_the_broker(failing, url, names):
    options = {"ca_certs": "/nowhere.pem", "server_hostname": None}
    settings = {"broker_url": url, "broker_use_ssl": options}
    with pytest.raises(ConfigurationError, match="TLS to the broker failed") as raised:
        brokertls.check_broker_tls(settings)
    assert names in str(raised.value)
    assert "certificate verify failed" in str(raised.value)
    # kombu fills server_hostname into the dict it is given: the settings' own stays as set.
    assert options["server_hostname"] is None
    assert failing[0] is not options
