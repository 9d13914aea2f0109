"""A Kubernetes task's state: KubeJob, what flowd stores (the Job and the objects of the same name),
and KubeTask, what the kubernetes provider's collaborators share about a task they follow. A module
of its own so that the provider and its collaborators all import it and not each other."""

from __future__ import annotations

import threading
from typing import Final

from attrs import define, field, frozen

from flow.domain.kubernetes.pods import PodView
from flowd.providers.base import StateType

RETRY_SECONDS: Final = 1.0
MAX_RETRY_SECONDS: Final = 30.0


@frozen
class KubeJob:
    """The runtime state of a task on Kubernetes: its Job (and the objects of the same name)."""

    job: str
    namespace: str
    num_nodes: int = 1


KUBE_STATES: Final = StateType(classes=(KubeJob,), legacy=lambda _data: None)


@define
class KubeTask:
    """A task the watch follows."""

    task_id: str
    job: str
    num_nodes: int
    function_call: bool
    deadline: int | None  # max_run_time_hours in seconds
    started: bool = False
    pending_reason: str = ""
    cancelling: bool = False
    ended: bool = False
    pods: dict[str, PodView] = field(factory=dict)
    followers: dict[str, threading.Thread] = field(factory=dict)  # by pod name
    logs_done: set[str] = field(factory=set)  # pods whose output is all in
    deadline_set: set[str] = field(factory=set)
    code_digest: str | None = None  # a snapshot flowd streams into each pod's init container
    delivering: set[str] = field(factory=set)  # pods it was (or is being) streamed to
    delivery_attempts: int = 0
