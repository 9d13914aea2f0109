"""`Flow(provider=LocalProvider())`: this machine (the embedded default)."""

from __future__ import annotations

from attrs import frozen


@frozen
class LocalProvider:
    """The local provider: tasks are processes on this machine, its GPUs shared among them."""

    name: str = "local"
    kind: str = "local"
