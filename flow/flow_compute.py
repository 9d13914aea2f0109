"""The names the Mithril platform's SDK (flow-compute 3.28.2, same import name `flow`) exports
that this project does not, each with why and what to use instead. `flow.NAME` for one of them
raises an AttributeError that says so; the README's "Coming from flow-compute" lists them too.
(Read only when a name is missing, so `import flow` does not pay for it.)
"""

from __future__ import annotations

from typing import Final

_SERVERLESS = "a decorator of flow-compute's serverless backend (flow deploy), which this project does not have"

ABSENT: Final[dict[str, str]] = {
    "AvailableInstance": "offers are dicts here: Flow().find_instances() gives instance_type, price_per_hour, "
    "gpu_type, gpu_count, gpu_memory_gb, region, provider and available",
    "CapacityChild": "there is no managed capacity; submit tasks with max_price_per_hour=",
    "CapacityRequest": "there is no managed capacity; submit tasks with max_price_per_hour=",
    "CapacityRequestSpec": "there is no managed capacity; submit tasks with max_price_per_hour=",
    "Constraints": "there are no placement constraints; use instance_type=, region= and max_price_per_hour=",
    "CpuVmType": "CPU machines are instance_type='cpu'",
    "Cron": "there is no scheduler; call flow.run or flow.invoke from cron or a systemd timer",
    "DEFAULT_ALLOCATION_ESTIMATED_SECONDS": "flow-compute's CLI estimate; nothing here uses it",
    "DEFAULT_PROVISION_MINUTES": "flow-compute's CLI estimate; nothing here uses it",
    "DEFAULT_REGION": "a Mithril default; the region comes from the provider's settings and offers (region=)",
    "DEFAULT_UPLOAD_ESTIMATED_MINUTES": "flow-compute's CLI estimate; nothing here uses it",
    "GrabFamilyChoice": "there is no `flow grab`; flow.run('sleep infinity', instance_type=...) then `flow ssh`",
    "GrabPlan": "there is no `flow grab`; flow.run('sleep infinity', instance_type=...) then `flow ssh`",
    "Image": "there is no image builder; build and push an image, then give image='registry/name:tag'",
    "Instance": "a task's machine is not an object here; use task.instance_type, task.exec() and task.ssh()",
    "InstanceType": "instance types are strings here ('a100', '8xh100', 'cpu')",
    "MarketRow": "there is no market listing; Flow().find_instances() gives the offers",
    "MountPersistence": "volumes attach when a task starts; there are no live mounts to persist",
    "Period": "there is no scheduler; call flow.run or flow.invoke from cron or a systemd timer",
    "PublicAvailability": "there is no market listing; Flow().find_instances() gives the offers",
    "Quota": "there is no accounts and projects model here",
    "RemoteExecResult": "task.exec(command) returns an ExecResult (exit_code, stdout and stderr as bytes); "
    "task.shell(command, capture_output=True) returns stdout as text",
    "Reservation": "there are no reservations; tasks start on demand",
    "ReservationSpec": "there are no reservations; tasks start on demand",
    "Resources": "ask with instance_type= ('a100', '4xa100', 'cpu'), min_gpu_memory_gb= and memory_mb=",
    "Retries": "there is no retry policy object; catch TaskExecutionError and submit again",
    "Sandbox": "use flow.run('sleep infinity', ...), then task.exec(...) and task.cancel()",
    "SandboxInstanceChoice": "use flow.run('sleep infinity', ...), then task.exec(...) and task.cancel()",
    "TaskDisplayStatus": "use task.status and task.state_reason",
    "TaskWaitOutcome": "task.wait() returns the Task here; look at task.status afterwards",
    "TaskWaitResult": "task.wait() returns the Task here; look at task.status afterwards",
    "User": "there is no accounts and projects model here",
    "batched": f"{_SERVERLESS}; give one call a list of inputs, or fan out with .map()",
    "concurrent": f"{_SERVERLESS}; fan out with .map(..., max_concurrency=N)",
    "on_build": "there are no image builds; do the work in an @flow.on_enter() hook or bake it into image=",
    "web_endpoint": f"{_SERVERLESS}; serve from a long-running task (flow.run('python serve.py', ...))",
}


_WAIT = "task.wait() returns the Task here (flow-compute: a TaskWaitResult); look at task.status after it"
_SSH = "reach the task with task.ssh(), task.exec() or `flow ssh TASK_ID`"

# Task attributes of flow-compute that a Task here does not have.
TASK_ABSENT: Final[dict[str, str]] = {
    "failed": _WAIT,
    "reached": _WAIT,
    "timed_out": _WAIT,
    "outcome": _WAIT,
    "total_cost": "only cost_per_hour (USD per hour, a number) is known here",
    "ssh_host": _SSH,
    "ssh_port": _SSH,
    "ssh_user": _SSH,
    "public_ip": _SSH,
    "has_ssh_access": _SSH,
    "get_instances": "task.instance_type says what it runs on; task.exec() runs commands there",
    "log_events": "task.log_chunks() gives the output with cursors to resume from",
    "stop": "task.cancel() stops it",
    "message": "task.state_reason says why it is in its state",
    "region": "task.config.region is the region asked for",
}


def absent_task_attribute(name: str) -> AttributeError:
    reason = TASK_ABSENT.get(name)
    if reason is None:
        return AttributeError(f"'Task' object has no attribute {name!r}")
    return AttributeError(
        f"'Task' object has no attribute {name!r}: flow-compute's Task.{name} is not provided here; {reason}"
    )


def absent(name: str) -> AttributeError:
    """The error for `flow.NAME`: why, when flow-compute has the name, and what to use."""
    reason = ABSENT.get(name)
    if reason is None:
        return AttributeError(f"module 'flow' has no attribute {name!r}")
    return AttributeError(
        f"module 'flow' has no attribute {name!r}: flow-compute's {name} is not provided here ({reason}). "
        "See the README, 'Coming from flow-compute'."
    )


__all__ = ["ABSENT", "TASK_ABSENT", "absent", "absent_task_attribute"]
