"""Where a user's Flow state lives: $FLOW_HOME (default ~/.flow) and the files inside it.

Shared by the SDK (to find the daemon) and flowd (to own it). Both refuse a home that another
user controls (`check_ownership`), as OpenSSH refuses keys and config files with the wrong
owner: whoever can replace the socket receives the clients' requests, secret values included."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

# sockaddr_un holds 108 bytes including the NUL; grpc fails obscurely beyond it.
MAX_SOCKET_PATH = 107


class FlowHome(NamedTuple):
    """(A NamedTuple rather than attrs: every CLI command builds one, and attrs costs ~20 ms.)"""

    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "flowd.sock"

    @property
    def lock(self) -> Path:
        return self.root / "flowd.lock"

    @property
    def database(self) -> Path:
        return self.root / "state.db"

    @property
    def tasks(self) -> Path:
        return self.root / "tasks"

    @property
    def daemon_log(self) -> Path:
        return self.root / "flowd.log"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def address(self) -> str:
        return f"unix:{self.socket}"

    def task_dir(self, task_id: str) -> Path:
        return self.tasks / task_id

    def state_files(self) -> Iterator[Path]:
        """The files whose owner decides who controls this home (see check_ownership)."""
        yield self.socket
        yield self.lock
        yield self.database
        yield self.database.with_name(self.database.name + "-wal")
        yield self.database.with_name(self.database.name + "-shm")
        yield self.config
        yield self.daemon_log
        yield self.root / "daemon-token"


class UnsafeHomeError(PermissionError):
    """$FLOW_HOME, its socket or a state file is controlled by another user; the message names
    the path, its owner and the fix."""


def _problem(path: Path, info: os.stat_result, uid: int) -> str | None:
    if info.st_uid not in (uid, 0):
        return f"{path} is owned by uid {info.st_uid}, not by you (uid {uid}) or root"
    if stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        return f"{path} is writable by every user (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def check_ownership(home: FlowHome, uid: int | None = None) -> None:
    """Raises UnsafeHomeError when the home directory, or a state file or the socket in it, is
    owned by another user than `uid` (default: this process's) or root, or the directory is
    writable by everyone. What does not exist yet is fine: flowd creates it, private."""
    me = os.geteuid() if uid is None else uid
    try:
        found = os.stat(home.root)
    except FileNotFoundError:
        return
    problem = _problem(home.root, found, me)
    if problem is None:
        for path in home.state_files():
            try:
                own = os.lstat(path)  # a link planted by another user is theirs, whatever it names
                problem = _problem(path, own, me) or (
                    _problem(path, os.stat(path), me) if stat.S_ISLNK(own.st_mode) else None
                )
            except FileNotFoundError:
                continue
            if problem is not None:
                break
    if problem is not None:
        import pwd

        try:
            user = pwd.getpwuid(me).pw_name
        except KeyError:
            user = str(me)
        raise UnsafeHomeError(
            f"refusing FLOW_HOME={home.root}: {problem}, so another user could take over the "
            "daemon's socket and receive your requests (secret values included). Fix: if it is "
            f"yours, `sudo chown -R {user} {home.root} && chmod 700 {home.root}`; otherwise set "
            "FLOW_HOME to a directory you own"
        )


def resolve_home(env: Mapping[str, str] | None = None, explicit: str | os.PathLike[str] | None = None) -> FlowHome:
    """$FLOW_HOME, else ~/.flow; an explicit path wins. Always absolute."""
    source = os.environ if env is None else env
    chosen = explicit or source.get("FLOW_HOME") or Path.home() / ".flow"
    return FlowHome(root=Path(chosen).expanduser().absolute())
