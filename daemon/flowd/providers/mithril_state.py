"""A Mithril task's runtime state as flowd stores it: its bid (and, once running, an instance to
reach). A module of its own, light to import: flowd reads stored states of Mithril tasks even
when the provider cannot be used (its settings are wrong) and httpx is never needed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from attrs import frozen

from flowd.providers.base import StateType
from flowd.providers.task_dir import TaskDir


@frozen
class MithrilBid:
    """The runtime state of a task on Mithril: its bid (and, once running, its instance)."""

    bid_fid: str
    bid_name: str
    region: str = ""
    uploads_pending: bool = False
    destination: str | None = None
    # Bytes of the task's local logs (one per node) written by its earlier attempts: this bid's
    # output follows them.
    log_base: tuple[int, ...] = ()


def _legacy(data: Mapping[str, Any]) -> MithrilBid | None:
    fid = data.get("bid_fid")
    if not isinstance(fid, str):
        return None  # stopped while posting: the bid is looked up by its name (from the task)
    return MithrilBid(
        bid_fid=fid,
        bid_name=str(data.get("bid_name", "")),
        region=str(data.get("region", "")),
        uploads_pending=bool(data.get("uploads_pending")),
        destination=data.get("destination"),
    )


MITHRIL_STATES: Final = StateType(classes=(MithrilBid,), legacy=_legacy)


# The task's local logs are shared by the launch (which records what earlier attempts wrote), the
# tracker (which writes the streams into them) and the provider (which lists them): here, once.


def local_logs(tasks_root: Path, task_id: str, nodes: int) -> list[Path]:
    """The task's local logs: one per node of a multi-node task, else output.log."""
    local = TaskDir(tasks_root / task_id)
    return [local.node(k).output for k in range(nodes)] if nodes > 1 else [local.output]


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def earlier_output(paths: Iterable[Path]) -> tuple[int, ...]:
    """Each log's size, as a `log_base`: () when earlier attempts wrote nothing."""
    base = tuple(file_size(p) for p in paths)
    return base if any(base) else ()
