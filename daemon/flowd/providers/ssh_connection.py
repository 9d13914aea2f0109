"""One SSH connection kept open and shared by threads (a Slurm login node, a cloud instance), and
the loop that reads a command's output from one of its channels. paramiko itself is imported by
the users of this module, where they need it (it costs flowd's start-up a tenth of a second)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any


class KeptConnection:
    """Opened on first use and opened again once its transport is gone. Subclasses say how to open
    it (`_open`: their host key policy, their timeouts, their errors)."""

    def __init__(self, description: str) -> None:
        self.description = description
        self._lock = threading.Lock()
        self._sftp_lock = threading.Lock()
        self._client: Any = None
        self._sftp: Any = None

    def _open(self) -> Any:
        raise NotImplementedError

    def _connect(self) -> Any:
        with self._lock:
            client = self._client
            if client is not None:
                transport = client.get_transport()
                if transport is not None and transport.is_active():
                    return client
                self._drop_locked()
            self._client = self._open()
            return self._client

    def _drop_locked(self) -> None:
        with contextlib.suppress(Exception):
            if self._sftp is not None:
                self._sftp.close()
        with contextlib.suppress(Exception):
            if self._client is not None:
                self._client.close()
        self._sftp = None
        self._client = None


def drain(channel: Any, deadline: float, too_late: Callable[[], Exception], poll: float = 0.05) -> tuple[bytes, bytes]:
    """stdout to its end, and stderr alongside it (one shared window: an unread stream can stall
    the other), until the command's exit status is there. Raises too_late() past `deadline`."""
    out = bytearray()
    err = bytearray()
    channel.settimeout(poll)
    while True:
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
        try:
            data = channel.recv(65536)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise too_late() from None
            continue
        if not data:
            break
        out += data
    while not channel.exit_status_ready() or channel.recv_stderr_ready():
        if channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
            continue
        if time.monotonic() > deadline:
            raise too_late()
        time.sleep(0.002)
    return bytes(out), bytes(err)
