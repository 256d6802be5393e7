"""``plonecelery keys``: make and check the key and certificate for message signing.

Works without a ``zope.conf``::

    plonecelery keys create --out /etc/plonecelery [--days 825] [--cn plonecelery]
    plonecelery keys check [--key K --cert C --store 'certs/*.pem']

``create`` writes ``signing.key`` (mode 0600), ``signing.pem`` and ``certs/signing.pem``
(the store) and prints the three ``CELERY_SECURITY_*`` settings. To rotate, create a new
pair elsewhere, add its certificate to every worker's store first, then switch the senders'
key and certificate, and drop the old certificate once its messages are consumed.

``check`` reads the same settings as the processes (``CELERY_SECURITY_KEY``,
``CELERY_SECURITY_CERTIFICATE``, ``CELERY_SECURITY_CERT_STORE``, ``CELERY_SECURITY_KEY_PASSWORD``)
unless given as options, and prints one line: ``OK ...`` (exit 0) or what is wrong (exit 1).
"""

from __future__ import annotations

import argparse
import datetime
import glob
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

KEY_FILE = "signing.key"
CERT_FILE = "signing.pem"


def create(out: str | os.PathLike, *, days: int = 825, cn: str = "plonecelery") -> dict[str, str]:
    """Write a new RSA key and self-signed certificate into ``out``; return the settings."""
    if days <= 0:
        raise ValueError("--days must be positive")
    out = Path(out)
    (out / "certs").mkdir(parents=True, exist_ok=True)
    key_path, cert_path = out / KEY_FILE, out / CERT_FILE
    if key_path.exists():
        raise FileExistsError(f"{key_path} exists; choose another --out to rotate keys")
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 from the start: never readable by others, not even for a moment.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path.write_bytes(cert_pem)
    (out / "certs" / CERT_FILE).write_bytes(cert_pem)
    return {
        "CELERY_SECURITY_KEY": str(key_path.resolve()),
        "CELERY_SECURITY_CERTIFICATE": str(cert_path.resolve()),
        "CELERY_SECURITY_CERT_STORE": str((out / "certs").resolve() / "*.pem"),
    }


def check(*, key: str, cert: str, store: str, password: bytes | None = None) -> str:
    """One line saying what is wrong; ``ValueError`` with it, or the OK line."""
    if not (key and cert and store):
        raise ValueError(
            "signing is not configured: set CELERY_SECURITY_KEY, CELERY_SECURITY_CERTIFICATE "
            "and CELERY_SECURITY_CERT_STORE (or pass --key, --cert, --store)"
        )
    try:
        private = serialization.load_pem_private_key(Path(key).read_bytes(), password=password)
    except OSError as exc:
        raise ValueError(f"cannot read the key {key}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"the key {key} cannot be loaded (wrong password or not PEM): {exc}"
        ) from None
    if Path(key).stat().st_mode & 0o077:
        raise ValueError(f"the key {key} is readable by others: chmod 600 {key}")
    try:
        certificate = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read the certificate {cert}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"the certificate {cert} is not a PEM certificate: {exc}") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError(f"the key {key} is not an RSA key; Celery signs with RSA only")
    if certificate.public_key().public_numbers() != private.public_key().public_numbers():
        raise ValueError(f"the key {key} does not belong to the certificate {cert}")
    now = datetime.datetime.now(datetime.UTC)
    if now >= certificate.not_valid_after_utc:
        raise ValueError(
            f"the certificate {cert} expired on {certificate.not_valid_after_utc:%Y-%m-%d}"
        )
    if now < certificate.not_valid_before_utc:
        raise ValueError(
            f"the certificate {cert} is not valid before {certificate.not_valid_before_utc}"
        )
    pattern = os.path.join(store, "*") if os.path.isdir(store) else store
    stored = []
    for path in sorted(glob.glob(pattern)):
        try:
            stored.append(x509.load_pem_x509_certificate(Path(path).read_bytes()))
        except (OSError, ValueError):
            raise ValueError(f"the store entry {path} is not a readable PEM certificate") from None
    if not stored:
        raise ValueError(f"the certificate store {store} matches no file")
    expired = [c for c in stored if now >= c.not_valid_after_utc]
    if expired:
        raise ValueError(
            f"the store {store} holds an expired certificate (serial {expired[0].serial_number}): "
            "workers refuse to start with it; remove it"
        )
    if certificate not in stored:
        raise ValueError(
            f"the certificate {cert} is not in the store {store}: workers would refuse"
        )
    days = (certificate.not_valid_after_utc - now).days
    return (
        f"OK: key matches {cert}, valid {days} more days, "
        f"in the store ({len(stored)} certificate(s))"
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="plonecelery keys")
    commands = parser.add_subparsers(dest="command", required=True)
    create_parser = commands.add_parser("create", help="a new key and self-signed certificate")
    create_parser.add_argument("--out", required=True, help="directory to write into")
    create_parser.add_argument("--days", type=int, default=825, help="validity (default 825)")
    create_parser.add_argument("--cn", default="plonecelery", help="certificate common name")
    check_parser = commands.add_parser("check", help="check the configured key, cert and store")
    check_parser.add_argument("--key", default=os.environ.get("CELERY_SECURITY_KEY", ""))
    check_parser.add_argument("--cert", default=os.environ.get("CELERY_SECURITY_CERTIFICATE", ""))
    check_parser.add_argument("--store", default=os.environ.get("CELERY_SECURITY_CERT_STORE", ""))
    options = parser.parse_args(argv)
    try:
        if options.command == "create":
            settings = create(options.out, days=options.days, cn=options.cn)
            for name, value in settings.items():
                print(f"{name}={value}")
            return 0
        password = os.environ.get("CELERY_SECURITY_KEY_PASSWORD")
        print(
            check(
                key=options.key,
                cert=options.cert,
                store=options.store,
                password=password.encode() if password else None,
            )
        )
        return 0
    except (ValueError, OSError) as exc:
        print(f"plonecelery keys {options.command}: {exc}", file=sys.stderr)
        return 1
