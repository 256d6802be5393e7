"""Starting, watching and stopping the stack's processes (ZEO, Zope, workers)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


def bin_path(name: str) -> Path:
    """Path of console script ``name`` in the running virtualenv.

    >>> bin_path("runzeo")  # doctest: +SKIP
    PosixPath('/work/main/.venv/bin/runzeo')
    """
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise RuntimeError(
            f"{path} does not exist: install collective.plonecelery into this "
            f"virtualenv (make install) so that {name!r} is available."
        )
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it).

    >>> port = free_port()
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def ensure_port_free(host: str, port: int) -> None:
    """Raise RuntimeError if something already listens on ``host:port``.

    Otherwise waiting for the port would succeed on someone else's server.
    """
    if port_is_open(host, port):
        raise RuntimeError(
            f"{host}:{port} is already in use: stop whatever listens there or choose another port."
        )


def tail(path: str | os.PathLike | None, *, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' if there is none)."""
    if path is None or not Path(path).exists():
        return ""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def wait_for_port(
    host: str,
    port: int,
    *,
    timeout: float = 30,
    process: subprocess.Popen | None = None,
    log_file: str | os.PathLike | None = None,
) -> None:
    """Block until ``host:port`` accepts connections.

    Raises RuntimeError after ``timeout`` seconds, or as soon as ``process``
    (the one supposed to open the port) has exited; the message carries its
    exit code and the end of ``log_file``.

    >>> wait_for_port("127.0.0.1", 8080, timeout=60, process=proc)  # doctest: +SKIP
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{describe(process)} exited with code {process.returncode} "
                f"before listening on {host}:{port}." + log_hint(log_file)
            )
        if port_is_open(host, port):
            return
        if time.monotonic() > deadline:
            what = describe(process) if process is not None else "Nothing"
            raise RuntimeError(
                f"{what} did not listen on {host}:{port} within {timeout} s." + log_hint(log_file)
            )
        time.sleep(0.1)


def describe(process: subprocess.Popen) -> str:
    args = process.args if isinstance(process.args, list | tuple) else [process.args]
    return f"Process {process.pid} ({' '.join(map(str, args))})"


def log_hint(log_file) -> str:
    text = tail(log_file)
    return f"\nLast lines of {log_file}:\n{text}" if text else ""


def open_log(log_file: str | os.PathLike | None):
    """A file object for a child's stdout/stderr (None = inherit ours)."""
    if log_file is None:
        return None
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    return open(log_file, "ab")  # noqa: SIM115 - handed to the child


def spawn(
    args: Sequence[str | os.PathLike],
    *,
    log_file=None,
    env: Mapping[str, str] | None = None,
    cwd=None,
) -> subprocess.Popen:
    log = open_log(log_file)
    try:
        # A session of its own: a terminal's Ctrl-C reaches only our process,
        # which then stops the children in order; and stop_process() can kill
        # a child's own children (Celery's pool) with the group.
        return subprocess.Popen(
            [str(arg) for arg in args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        if log is not None:
            log.close()


def stop_process(proc: subprocess.Popen | None, *, timeout: float = 20) -> int | None:
    """Stop ``proc`` with SIGTERM, then SIGKILL (its whole process group)
    if it is still alive after ``timeout`` seconds. Returns the exit code.

    Safe to call on a process that has already exited, or on None.

    >>> stop_process(wsgi)  # doctest: +SKIP
    0
    """
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s ignored SIGTERM, killing it.", describe(proc))
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
    # Leftovers of the group (e.g. pool processes) go with their leader.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return proc.returncode


def start_wsgi(
    *,
    zope_ini: str | os.PathLike,
    host: str,
    port: int,
    log_file: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.Popen:
    """Start Zope (``runwsgi zope.ini``) and wait until it listens on ``port``.

    ``host``/``port`` must match the ini (see :func:`write_zope_ini`).

    >>> wsgi = start_wsgi(zope_ini="etc/zope.ini", host="127.0.0.1", port=8080)  # doctest: +SKIP
    """
    ensure_port_free(host, port)
    proc = spawn([bin_path("runwsgi"), Path(zope_ini).absolute()], log_file=log_file, env=env)
    try:
        wait_for_port(host, port, timeout=timeout, process=proc, log_file=log_file)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def start_worker(
    *,
    zope_conf: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = ("-l", "info", "-c", "1"),
    log_file: str | os.PathLike | None = None,
) -> subprocess.Popen:
    """Start ``plonecelery --zope-conf <zope_conf> worker <args>``.

    Returns as soon as the process runs; it is not yet consuming tasks.
    ``env`` replaces the inherited environment when given.

    >>> worker = start_worker(
    ...     zope_conf="etc/zope.conf", log_file="var/log/worker.log"
    ... )  # doctest: +SKIP
    """
    proc = spawn(
        [
            bin_path("plonecelery"),
            "--zope-conf",
            Path(zope_conf).absolute(),
            "worker",
            *args,
        ],
        log_file=log_file,
        env=env,
    )
    try:
        time.sleep(0.2)
    except BaseException:
        stop_process(proc)
        raise
    if proc.poll() is not None:
        raise RuntimeError(
            f"{describe(proc)} exited with code {proc.returncode}." + log_hint(log_file)
        )
    return proc
