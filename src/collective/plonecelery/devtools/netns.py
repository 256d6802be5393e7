"""Linux network namespaces as test hosts: bridges, veth pairs, processes inside.

A :class:`Network` is one run's set of namespaces, all named ``pct-<pid>-<random>-<host>``
so that parallel runs on one machine never meet, and so that a later run can delete the
namespaces of a run whose process died (:func:`remove_stale`). The bridges live in a
namespace of their own (``...-switch``): nothing is added to the caller's namespace, so
the addresses chosen inside never collide with the machine's or another run's::

    net = Network()
    net.add_bridge("data")
    net.add_host("zeo")
    net.connect("zeo", "data", "10.211.1.1/24")
    proc = spawn(net.exec_args("zeo", ["runzeo", "-C", "zeo.conf"]))
    net.call("zeo", socket.create_connection, ("10.211.1.1", 8100))  # from inside
    net.destroy()  # kills what runs inside, deletes the namespaces

Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and ``ip`` from iproute2;
:func:`unavailable` says why not, or None.
"""

from __future__ import annotations

import ctypes
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
PREFIX = "pct"
_NAME = re.compile(rf"^{PREFIX}-(\d+)-[0-9a-f]+-")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ip ARGS``; raises RuntimeError with ip's message when it fails."""
    completed = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and completed.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {completed.stderr.strip()}")
    return completed


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None if they can (tries one)."""
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    probe = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}-probe"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"'ip netns add' failed: {made.stderr.strip() or made.returncode} (needs root)"
    try:
        veth = ip(
            "-n", probe, "link", "add", "name", "va", "type", "veth", "peer", "name", "vb",
            check=False,
        )  # fmt: skip
        if veth.returncode != 0:
            return f"cannot create a veth pair: {veth.stderr.strip()}"
        bridge = ip("-n", probe, "link", "add", "name", "br", "type", "bridge", check=False)
        if bridge.returncode != 0:
            return f"cannot create a bridge: {bridge.stderr.strip()}"
        return None
    finally:
        ip("netns", "del", probe, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete the namespaces (and what runs in them) of runs whose process is gone."""
    removed = []
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _NAME.match(name)
        if match and not _alive(int(match.group(1))):
            _kill_inside(name)
            ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


def _kill_inside(namespace: str) -> None:
    pids = ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


_libc = None


def _setns(path: Path) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


def call_in(namespace: str, function: Callable, *args, **kwargs):
    """Run ``function(*args, **kwargs)`` in a thread that lives in ``namespace``'s network.

    Sockets opened there belong to that namespace. The thread ends with the call, so the
    caller's own network is never changed. Returns the result or raises its exception.
    """
    outcome: dict = {}

    def target():
        try:
            _setns(NETNS_DIR / namespace)
            outcome["value"] = function(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"netns-{namespace}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class Network:
    """The namespaces, bridges and links of one run (see the module's docstring)."""

    def __init__(self, *, tag: str | None = None):
        self.prefix = f"{PREFIX}-{os.getpid()}-{tag or secrets.token_hex(3)}"
        self.hosts: dict[str, str] = {}
        self.addresses: dict[str, dict[str, str]] = {}
        self._bridges: list[str] = []
        self._switch: str | None = None
        self._links = 0

    def namespace(self, host: str) -> str:
        """The namespace name of ``host`` (for ``ip netns exec``)."""
        return self.hosts[host]

    def _add_namespace(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        ip("netns", "add", full)
        ip("-n", full, "link", "set", "lo", "up")
        return full

    def add_host(self, host: str) -> str:
        """A new namespace for ``host``, its loopback up; returns the namespace name."""
        if host in self.hosts:
            raise ValueError(f"host {host!r} exists already")
        self.hosts[host] = self._add_namespace(host)
        self.addresses[host] = {}
        return self.hosts[host]

    def add_bridge(self, bridge: str) -> None:
        """A bridge (one L2 segment) named ``bridge``, in the run's switch namespace."""
        if self._switch is None:
            self._switch = self._add_namespace("switch")
        if len(bridge) > 12:
            raise ValueError(f"bridge name {bridge!r} is longer than 12 characters")
        ip("-n", self._switch, "link", "add", "name", f"br-{bridge}", "type", "bridge")
        ip("-n", self._switch, "link", "set", f"br-{bridge}", "up")
        self._bridges.append(bridge)

    def connect(self, host: str, bridge: str, address: str) -> None:
        """Plug ``host`` into ``bridge`` with ``address`` (CIDR, e.g. ``10.211.1.2/24``).

        The host's side is called ``eth-<bridge>``. Only the bridge's subnet is routed
        from it: a host reaches exactly the segments it is plugged into.
        """
        if bridge not in self._bridges:
            raise ValueError(f"no bridge {bridge!r}: add_bridge() first")
        namespace = self.hosts[host]
        self._links += 1
        port = f"p{self._links}"
        inside = f"eth-{bridge}"
        # Created in the switch namespace, its peer straight in the host's: neither name
        # ever exists in the caller's namespace.
        ip(
            "-n", self._switch, "link", "add", "name", port, "type", "veth",
            "peer", "name", inside, "netns", namespace,
        )  # fmt: skip
        ip("-n", self._switch, "link", "set", port, "master", f"br-{bridge}")
        ip("-n", self._switch, "link", "set", port, "up")
        ip("-n", namespace, "addr", "add", address, "dev", inside)
        ip("-n", namespace, "link", "set", inside, "up")
        self.addresses[host][bridge] = address.split("/")[0]

    def exec_args(self, host: str, args: Sequence[str | os.PathLike]) -> list[str]:
        """``ip netns exec <namespace> ARGS``: a command line that runs inside ``host``."""
        return ["ip", "netns", "exec", self.hosts[host], *map(str, args)]

    def call(self, host: str, function: Callable, *args, **kwargs):
        """``function(*args, **kwargs)`` with the network of ``host`` (see :func:`call_in`)."""
        return call_in(self.hosts[host], function, *args, **kwargs)

    def wait_for_port(self, host: str, address: str, port: int, *, timeout: float = 60,
                      process: subprocess.Popen | None = None, log_file=None) -> None:  # fmt: skip
        """Wait until ``address:port`` accepts connections, as seen from ``host``."""
        from .instance.processes import log_hint
        from .instance.processes import port_is_open

        deadline = time.monotonic() + timeout
        while not self.call(host, port_is_open, address, port):
            if process is not None and process.poll() is not None:
                raise RuntimeError(
                    f"{' '.join(map(str, process.args))} exited with code "
                    f"{process.returncode} before listening on {address}:{port}"
                    + log_hint(log_file)
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"nothing listened on {address}:{port} in {host} within {timeout} s"
                    + log_hint(log_file)
                )
            time.sleep(0.2)

    def destroy(self) -> None:
        """Kill every process still inside and delete every namespace of the run."""
        names = [*self.hosts.values(), *([self._switch] if self._switch else [])]
        for name in names:
            _kill_inside(name)
        for name in names:
            ip("netns", "del", name, check=False)
        self.hosts.clear()
        self._switch = None

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc_info) -> None:
        self.destroy()
