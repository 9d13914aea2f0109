"""The process's default client and `flow.run`, the one module-level call of the Mithril
platform's SDK (flow-compute):

    import flow
    task = flow.run("python train.py", instance_type="a100", wait_until="running")

The default client is made on first use and stays open, so the Tasks it returns keep working.
It follows the environment: a changed FLOW_HOME, FLOW_PROVIDER, FLOW_DAEMON_ADDRESS or
MITHRIL_API_KEY (or a fork) gets a new one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from flow.client import Flow
    from flow.config import TaskConfig
    from flow.task import Task, WaitUntil

_ENVIRONMENT = ("FLOW_HOME", "FLOW_PROVIDER", "FLOW_DAEMON_ADDRESS", "MITHRIL_API_KEY")
_lock = threading.Lock()
_clients: dict[tuple[object, ...], Flow] = {}


def default_flow() -> Flow:
    """The Flow client of this process (and environment), made on first use."""
    from flow.client import Flow

    key = (os.getpid(), *(os.environ.get(name) for name in _ENVIRONMENT))
    with _lock:
        client = _clients.get(key)
        if client is None:
            _clients.clear()  # an older one stays usable by the Tasks that hold its connection
            client = _clients[key] = Flow()
        return client


def run(
    task_or_command: TaskConfig | str | Path | Sequence[str],
    *,
    data_mounts: object = None,
    dry_run: bool = False,
    max_wait_seconds: float | None = 3600,
    wait_until: WaitUntil | None = None,
    **task_config_kwargs: Any,
) -> Task:
    """Submits a task with the default client (see Flow.run): a command string, the path of a
    YAML job file (a str ending in .yaml/.yml, or a Path), a TaskConfig or an argument list;
    keyword arguments are TaskConfig fields (with a TaskConfig or a file, they replace its
    fields). Returns at once, or as `wait_until` says."""
    if data_mounts is not None:
        task_config_kwargs["data_mounts"] = data_mounts
    return default_flow().run(
        task_or_command,
        wait_until=wait_until,
        dry_run=dry_run,
        max_wait_seconds=max_wait_seconds,
        **task_config_kwargs,
    )


__all__ = ["default_flow", "run"]
