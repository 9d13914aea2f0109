"""Placement on this machine (the local provider), as a pure function of what flowd knows about
it: its GPUs, its memory, its region ("local").

The same matcher as find_instances decides, over the same offers (`local_offers`), so `run` and
`find_instances` agree on every field: a region other than "local" finds nothing and is refused;
"a100" runs on this machine's A100s whether they are SXM or PCIe (form factor is not a
constraint here). A refusal names the machine's inventory and the closest offer along the
constraint that failed (flow.domain.instances.closest).
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import evolve, frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, ErrorReason, validation_error, violation
from flow.domain.instances.gpu_inventory import Gpu, describe_inventory, local_offers
from flow.domain.instances.gpu_scheduler import GpuRequest, fits_ever
from flow.domain.instances.instance_types import parse_instance_type
from flow.domain.instances.matching import Offer, Requirements, explain_no_match, match_offers
from flow.domain.money import price_to_micros
from flow.domain.task.config import TaskConfig


@frozen
class Machine:
    """What the local provider knows about this machine."""

    provider: str
    gpus: tuple[Gpu, ...]
    memory_mb: int


@frozen
class LocalPlacement:
    offer: Offer
    gpus: GpuRequest | None  # what the whole task takes from the GPU queue; None: CPUs only


def local_requirements(config: TaskConfig) -> Result[Requirements, DomainError]:
    """What the task needs, in the matcher's terms (model, memory and count, not form factor)."""
    price = None if config.max_price_per_hour is None else price_to_micros(config.max_price_per_hour)
    if config.instance_type is not None:
        parsed = parse_instance_type(config.instance_type)
        if isinstance(parsed, Failure):
            return Failure(parsed.failure())
        wanted = parsed.unwrap()
        if wanted.is_cpu:
            return Success(Requirements(instance_type=wanted, max_price_micros=price, region=config.region))
        return Success(
            Requirements(
                gpu_type=wanted.model,
                gpu_memory_gb=wanted.memory_gb,
                min_gpu_count=wanted.count,
                max_price_micros=price,
                region=config.region,
            )
        )
    return Success(Requirements(gpu_memory_gb=config.min_gpu_memory_gb, max_price_micros=price, region=config.region))


def gpu_request(config: TaskConfig, task_id: str) -> GpuRequest | None:
    """The GPUs the whole task needs: a multi-node task takes num_instances x the per-node count
    at once (all or nothing), queued like any other request."""
    nodes = max(1, config.num_instances)
    if config.instance_type is not None:
        parsed = parse_instance_type(config.instance_type)
        if isinstance(parsed, Success) and not parsed.unwrap().is_cpu:
            wanted = parsed.unwrap()
            return GpuRequest(task_id, wanted.count * nodes, wanted.model, wanted.memory_gb)
        return None
    if config.min_gpu_memory_gb is not None:
        return GpuRequest(task_id, nodes, None, config.min_gpu_memory_gb)
    return None


def _memory_error(config: TaskConfig, machine: Machine) -> DomainError | None:
    nodes = config.num_instances
    if config.memory_mb is None or config.memory_mb * nodes <= machine.memory_mb:
        return None
    return DomainError(
        reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
        message=f"The task needs {config.memory_mb * nodes} MB of RAM"
        + (f" ({nodes} nodes x {config.memory_mb} MB)" if nodes > 1 else "")
        + f"; this machine has {machine.memory_mb} MB",
        suggestions=(f"ask for at most memory_mb={machine.memory_mb}", "run on a provider with bigger machines"),
        metadata=(("provider", machine.provider),),
    )


def _nodes_error(request: GpuRequest, nodes: int, gpus: Sequence[Gpu], provider: str) -> DomainError:
    return DomainError(
        reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
        message=(
            f"num_instances={nodes} nodes of {request.count // nodes}x {request.model or 'GPU'} each need "
            f"{request.describe()} at once; this machine has {describe_inventory(gpus)}."
        ),
        suggestions=(
            f"ask for fewer nodes or fewer GPUs per node (at most {len(gpus)} GPUs in all)",
            "run on a provider with more machines, e.g. provider='slurm' or provider='mithril'",
        ),
        metadata=(("provider", provider), ("num_instances", str(nodes))),
    )


def place_locally(config: TaskConfig, machine: Machine) -> Result[LocalPlacement, DomainError]:
    """Whether and on what this machine runs the (valid) task, or why it never could."""
    if config.ssh_keys:  # refused, not ignored: it would mean something on another provider
        fix = "leave ssh_keys out: `flow ssh TASK` reaches a local task without keys"
        problem = "has no meaning here: a local task is a process on this machine, with no SSH server of its own"
        return Failure(validation_error([violation("ssh_keys", list(config.ssh_keys), problem, fix)]))
    memory = _memory_error(config, machine)
    if memory is not None:
        return Failure(memory)
    required = local_requirements(config)
    if isinstance(required, Failure):
        return Failure(required.failure())
    result = match_offers(required.unwrap(), local_offers(machine.gpus, machine.provider))
    if not result.matches:
        error = explain_no_match(required.unwrap(), result, price_field="max_price_per_hour")
        return Failure(
            evolve(
                error,
                message=f"{error.message} This machine has {describe_inventory(machine.gpus)}.",
                suggestions=(
                    *error.suggestions,
                    "leave out instance_type and min_gpu_memory_gb to run on this machine's CPUs",
                    "run on a provider with GPUs, e.g. provider='slurm' or provider='mithril'",
                ),
                metadata=(*error.metadata, ("provider", machine.provider)),
            )
        )
    request = gpu_request(config, "")
    nodes = config.num_instances
    if request is not None and nodes > 1 and not fits_ever(request, machine.gpus):
        return Failure(_nodes_error(request, nodes, machine.gpus, machine.provider))
    return Success(LocalPlacement(offer=result.matches[0], gpus=request))
