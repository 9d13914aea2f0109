"""Where a user's Flow state lives: $FLOW_HOME (default ~/.flow) and the files inside it.

Shared by the SDK (to find the daemon) and flowd (to own it)."""

from __future__ import annotations

import os
from collections.abc import Mapping
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


def resolve_home(env: Mapping[str, str] | None = None, explicit: str | os.PathLike[str] | None = None) -> FlowHome:
    """$FLOW_HOME, else ~/.flow; an explicit path wins. Always absolute."""
    source = os.environ if env is None else env
    chosen = explicit or source.get("FLOW_HOME") or Path.home() / ".flow"
    return FlowHome(root=Path(chosen).expanduser().absolute())
