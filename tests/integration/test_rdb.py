"""celery.contrib.rdb works inside a Zope task: break in, inspect, continue."""

from __future__ import annotations

import re
import socket
import time

import pytest
import sample_tasks
import transaction

pytestmark = pytest.mark.timeout(180)


def read_until(sock: socket.socket, marker: bytes, timeout: float = 30) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_remote_debugger_in_a_zope_task(harness):
    with harness.session() as portal:
        result = sample_tasks.debug_me.delay(portal)
        transaction.commit()
    deadline = time.monotonic() + 60
    port = None
    while port is None and time.monotonic() < deadline:
        match = re.search(r"Ready to connect: telnet [\d.]+ (\d+)", harness.worker_log.read_text())
        port = int(match.group(1)) if match else None
        time.sleep(0.2)
    assert port, "the worker never announced the remote debugger"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        read_until(sock, b"(Pdb)")
        # The debugger sees the Zope world of the task: site, user, content.
        sock.sendall(b"p api.user.get_current().getId(), title\n")
        answer = read_until(sock, b"(Pdb)")
        sock.sendall(b"c\n")
    assert b"'admin'" in answer
    assert result.get(timeout=60) == answer.split(b"'admin', '")[1].split(b"'")[0].decode()
