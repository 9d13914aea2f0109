"""What a Mithril bid and its instances say about a task, as one of a few phases.

The exit record the task wrote on the instance decides first (the provider checks it before it
asks this module); then the bid's status, refined by its instances. Statuses are matched
lowercased, without the `status_` prefix; an unknown one is not terminal ("unknown": keep
polling, and log it), never guessed from substrings.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from typing import Final

from attrs import frozen


class Phase(enum.Enum):
    PENDING = "pending"  # bid open, nothing allocated
    PROVISIONING = "provisioning"  # allocated, instances starting or not reachable yet
    RUNNING = "running"  # every instance running with an SSH destination
    PREEMPTING = "preempting"  # the platform takes the capacity back soon: the instances still run
    PREEMPTED = "preempted"  # the platform took the capacity back: an instance is gone
    PAUSED = "paused"
    FAILED = "failed"  # an instance in error
    TERMINATED = "terminated"  # the bid ended without an exit record
    UNKNOWN = "unknown"


_STARTING: Final = frozenset({"new", "confirmed", "initializing", "starting"})
_PREEMPTING: Final = frozenset({"preempting", "relocating"})
_RECLAIMED: Final = frozenset({"preempted", "replaced"})
_ENDED: Final = frozenset({"terminated", "stopping"})
_DESTINATION: Final = re.compile(r"(?P<host>[A-Za-z0-9_.-]{1,253}|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")


@frozen
class Observation:
    phase: Phase
    detail: str = ""
    # The SSH destinations of the bid's instances, in the order the API listed them.
    destinations: tuple[str, ...] = ()


def normalized(status: object) -> str:
    return status.lower().removeprefix("status_") if isinstance(status, str) else ""


def parse_destination(text: object, default_port: int = 22) -> tuple[str, int] | None:
    """ "host" or "host:port" as (host, port); None when it is not one."""
    if not isinstance(text, str):
        return None
    found = _DESTINATION.fullmatch(text.strip())
    if found is None:
        return None
    port = int(found.group("port")) if found.group("port") else default_port
    if not 1 <= port <= 65535:
        return None
    return found.group("host").strip("[]"), port


def observe(bid: Mapping[str, object], instances: Sequence[Mapping[str, object]]) -> Observation:
    """The phase of one bid, from the bid and the instances listed for it."""
    status = normalized(bid.get("status"))
    states = [normalized(i.get("status")) for i in instances]
    destinations = tuple(str(i.get("ssh_destination")) for i in instances if i.get("ssh_destination"))
    if "error" in states:
        return Observation(Phase.FAILED, "an instance of the bid is in STATUS_ERROR (a platform error)")
    if any(s in _RECLAIMED for s in states):
        return Observation(
            Phase.PREEMPTED, f"PREEMPTED: Mithril reclaimed the spot capacity (bid status {bid.get('status')})"
        )
    if status in ("preempting", "relocating") or any(s in _PREEMPTING for s in states):
        return Observation(Phase.PREEMPTING, "Mithril is reclaiming the spot capacity", destinations=destinations)
    if status == "terminated":
        return Observation(Phase.TERMINATED, "terminated by the platform (exit status unknown)")
    if status == "paused" or (states and all(s == "paused" for s in states)):
        return Observation(Phase.PAUSED, "the bid is paused")
    if status == "open" and not instances:
        return Observation(Phase.PENDING, "waiting for spot capacity at the limit price")
    if status in ("allocated", "open"):
        quantity = bid.get("instance_quantity")
        wanted = quantity if isinstance(quantity, int) and quantity > 0 else 1
        if any(s in _ENDED for s in states):
            return Observation(Phase.TERMINATED, "an instance of the bid was terminated")
        if len(states) >= wanted and all(s == "running" for s in states) and len(destinations) == len(states):
            return Observation(Phase.RUNNING, destinations=destinations)
        if not instances or all(s in _STARTING or s == "running" for s in states):
            return Observation(Phase.PROVISIONING, "instances are starting")
    return Observation(Phase.UNKNOWN, f"bid status {bid.get('status')!r}, instances {states}")


def parse_exit_code(text: str) -> int | None:
    """The exit record the task wrote ("0\\n"), or None when it is not one yet."""
    stripped = text.strip()
    if not stripped.isdigit() or len(stripped) > 3:
        return None
    return int(stripped)
