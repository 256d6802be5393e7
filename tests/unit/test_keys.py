"""``plonecelery keys create|check`` (no zope.conf needed)."""

import os
import shutil
import stat
import subprocess
import sys

import pytest

from collective.plonecelery import keys
from collective.plonecelery.cli import main


def test_create_writes_a_private_key_and_a_store(tmp_path, capsys):
    assert main(["keys", "create", "--out", str(tmp_path / "k"), "--days", "30", "--cn", "x"]) == 0
    printed = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    key = printed["CELERY_SECURITY_KEY"]
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    line = keys.check(
        key=key,
        cert=printed["CELERY_SECURITY_CERTIFICATE"],
        store=printed["CELERY_SECURITY_CERT_STORE"],
    )
    assert line.startswith("OK") and "29 more days" in line


def test_create_refuses_to_overwrite_a_key(tmp_path):
    keys.create(tmp_path)
    with pytest.raises(FileExistsError):
        keys.create(tmp_path)


def test_check_diagnoses_in_one_line(tmp_path):
    a = keys.create(tmp_path / "a")
    b = keys.create(tmp_path / "b")
    store_a = a["CELERY_SECURITY_CERT_STORE"]
    with pytest.raises(ValueError, match="does not belong to the certificate"):
        keys.check(
            key=a["CELERY_SECURITY_KEY"], cert=b["CELERY_SECURITY_CERTIFICATE"], store=store_a
        )
    with pytest.raises(ValueError, match="is not in the store"):
        keys.check(
            key=b["CELERY_SECURITY_KEY"], cert=b["CELERY_SECURITY_CERTIFICATE"], store=store_a
        )
    os.chmod(a["CELERY_SECURITY_KEY"], 0o644)
    with pytest.raises(ValueError, match="readable by others"):
        keys.check(
            key=a["CELERY_SECURITY_KEY"], cert=a["CELERY_SECURITY_CERTIFICATE"], store=store_a
        )
    with pytest.raises(ValueError, match="matches no file"):
        keys.check(
            key=b["CELERY_SECURITY_KEY"],
            cert=b["CELERY_SECURITY_CERTIFICATE"],
            store=str(tmp_path / "none" / "*.pem"),
        )


def test_check_from_the_environment_without_zope_conf(tmp_path):
    settings = keys.create(tmp_path / "k")
    env = {key: value for key, value in os.environ.items() if key not in ("ZOPE_CONF",)} | settings
    command = [sys.executable, "-m", "collective.plonecelery.cli", "keys", "check"]
    if shutil.which("plonecelery", path=os.path.dirname(sys.executable)):
        command = [os.path.join(os.path.dirname(sys.executable), "plonecelery"), "keys", "check"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK")
    env["CELERY_SECURITY_CERT_STORE"] = str(tmp_path / "nowhere" / "*.pem")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and "matches no file" in done.stderr
