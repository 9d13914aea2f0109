"""Placement on a Slurm cluster (the slurm provider), as a pure function of what sinfo said.

A task runs in one partition: its `region` (a partition's name, the same meaning as in
find_instances, whose Slurm offers carry their partition as region), else its script's own
--partition, else the provider's `partition` setting, else the cluster's default partition. In
it, the same matcher as find_instances picks the instance type (a script's own #SBATCH GPU
directives count when the config says nothing), then the partition's usable nodes and memory
must fit. What Slurm cannot do (volumes, data mounts, images, job arrays) is refused by field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from attrs import evolve, frozen
from returns.result import Failure, Result, Success

from flow.domain.daemon_config import SlurmSettings
from flow.domain.errors import DomainError, ErrorReason, FieldViolation, validation_error, violation
from flow.domain.instances.instance_types import short_name
from flow.domain.instances.matching import Offer, rank_key
from flow.domain.instances.placement import choose_offer
from flow.domain.slurm.emulation import ARRAY_ID_VAR, ARRAY_INDEX_VAR
from flow.domain.slurm.sbatch import Directive, has_directives, parse_array, read_directives, sbatch_to_configs
from flow.domain.slurm.states import GENERIC_GPU, Partition, SlurmOffer
from flow.domain.task.config import TaskConfig

ARRAY_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


@frozen
class SlurmPlacement:
    partition: Partition
    offer: SlurmOffer


def unsupported(config: TaskConfig) -> list[FieldViolation]:
    """The fields of the task Slurm cannot honour."""
    found: list[FieldViolation] = []
    for i, vol in enumerate(config.volumes):
        found.append(
            violation(
                f"volumes[{i}]",
                vol.name or vol.volume_id,
                "is not supported by the slurm provider (Slurm has no volumes)",
                "use a directory on the cluster's shared file system instead (e.g. in working_dir or env)",
            )
        )
    for i, mount in enumerate(config.data_mounts):
        found.append(
            violation(
                f"data_mounts[{i}]",
                mount.source,
                "is not supported by the slurm provider",
                "copy the data to the cluster's shared file system and pass its path in env",
            )
        )
    if config.image:
        found.append(
            violation(
                "image",
                config.image,
                "is not supported by the slurm provider (jobs run on the nodes' own software)",
                "remove image; to use a container, start it from your script (e.g. srun --container-image)",
            )
        )
    if config.ssh_keys:
        found.append(
            violation(
                "ssh_keys",
                list(config.ssh_keys),
                "is not supported by the slurm provider (its nodes are reached through the cluster's own logins)",
                "leave ssh_keys out: `flow ssh TASK` runs in the job through srun",
            )
        )
    if config.script and config.script.startswith("#!"):
        read = read_directives(config.script)
        found.extend(read.problems)
        arrays = [d for d in read.directives if d.option == "array"]
        if arrays and ARRAY_ID_VAR not in config.env:
            fix = "submit the script with `flow slurm submit`, which runs one task per array element"
            found += [violation(f"script: {d.field}", d.value, "asks for a job array", fix) for d in arrays]
        elif arrays:
            found += _element_problems(config, arrays[-1])
    return found


@frozen
class ArrayElement:
    """A task that is one element of a native array job (flow slurm submit --array on Slurm)."""

    array_id: str  # the submission's key, shared by its elements
    index: int
    indices: tuple[int, ...]  # every element of the array


def _element_problems(config: TaskConfig, array: Directive) -> list[FieldViolation]:
    key = config.env.get(ARRAY_ID_VAR, "")
    index = config.env.get(ARRAY_INDEX_VAR, "")
    parsed = parse_array(array.value or "")
    found: list[FieldViolation] = []
    if not ARRAY_ID_PATTERN.fullmatch(key):
        fix = "leave it to `flow slurm submit`, which names each array submission"
        found.append(violation(f"env.{ARRAY_ID_VAR}", key, "is not an array id (letters, digits, - and _)", fix))
    if parsed is None or not index.isdigit() or int(index) not in parsed[0]:
        fix = f"give an index the script's {array.label} lists"
        found.append(violation(f"env.{ARRAY_INDEX_VAR}", index, "is not an element of the array", fix))
    return found


def array_element(config: TaskConfig) -> ArrayElement | None:
    """The array element a (valid) task is, when it is one."""
    key = config.env.get(ARRAY_ID_VAR)
    if not key or not config.script or not config.script.startswith("#!"):
        return None
    arrays = [d for d in read_directives(config.script).directives if d.option == "array"]
    parsed = parse_array(arrays[-1].value or "") if arrays else None
    index = config.env.get(ARRAY_INDEX_VAR, "")
    if parsed is None or not index.isdigit():
        return None
    return ArrayElement(array_id=key, index=int(index), indices=parsed[0])


def partition_directive(config: TaskConfig) -> Directive | None:
    """The script's own --partition, when it names one partition."""
    if config.script and config.script.startswith("#!"):
        for d in reversed(read_directives(config.script).directives):
            if d.option == "partition":
                return d if d.value and "," not in d.value else None
    return None


def partition_for(config: TaskConfig, partitions: Sequence[Partition], settings: SlurmSettings) -> str | None:
    """The task's partition: its region, else its script's own --partition, else the provider's
    setting, else the cluster's default partition."""
    if config.region:
        return config.region
    if (d := partition_directive(config)) is not None:
        return d.value
    if settings.partition:
        return settings.partition
    return next((p.name for p in partitions if p.default), None)


def _from_directives(config: TaskConfig) -> tuple[TaskConfig, int | None]:
    """What a script's own #SBATCH directives ask for, when the config does not say: a GPU model
    and count (as an instance type), or only a count (untyped GRES)."""
    if config.instance_type or config.min_gpu_memory_gb or not has_directives(config.script):
        return config, None
    parsed = sbatch_to_configs(config.script or "")
    if isinstance(parsed, Failure):
        return config, None  # `unsupported` names the problems
    job = parsed.unwrap()
    derived = job.configs[0].instance_type
    if derived:
        return evolve(config, instance_type=derived), None
    return config, job.generic_gpus


def _refusal(provider: str, partition: str, message: str, *suggestions: str) -> DomainError:
    return DomainError(
        reason=ErrorReason.RESOURCE_NOT_AVAILABLE,
        message=message,
        suggestions=suggestions,
        metadata=(("provider", provider), ("partition", partition)),
    )


def _explain(error: DomainError, part: Partition, offers: Sequence[Offer], settings: SlurmSettings) -> DomainError:
    has = ", ".join(short_name(o.instance_type) for o in offers) or "nothing"
    suggestions = list(error.suggestions)
    if any(o.instance_type.model == GENERIC_GPU for o in offers):
        suggestions.append(
            f"the GPUs of partition {part.name} are untyped GRES (gpu:N), so Flow cannot tell their model: "
            f"set gpu_type (e.g. gpu_type: a100) for provider {settings.name} in $FLOW_HOME/config.yaml"
        )
    return evolve(
        error,
        message=f"{error.message} Partition {part.name} offers: {has}.",
        suggestions=tuple(suggestions),
        metadata=(*error.metadata, ("provider", settings.name), ("partition", part.name)),
    )


def _offer_in(
    config: TaskConfig, part: Partition, offers: Sequence[SlurmOffer], settings: SlurmSettings
) -> Result[SlurmOffer, DomainError]:
    wanted, native_gpus = _from_directives(config)
    if native_gpus:  # the script's own untyped GPU directive: any GPUs, as many as it says
        fitting = sorted(
            (o for o in offers if o.offer.instance_type.count == native_gpus), key=lambda o: rank_key(o.offer)
        )
        if fitting:
            return Success(fitting[0])
        most = max((o.offer.instance_type.count for o in offers), default=0)
        return Failure(
            _refusal(
                settings.name,
                part.name,
                f"The script asks for {native_gpus} GPUs per node; "
                f"the nodes of partition {part.name} have at most {most}",
                f"ask for at most {most} GPUs per node, and more nodes",
            )
        )
    plain = [o.offer for o in offers]
    chosen = choose_offer(evolve(wanted, region=None), plain)
    if isinstance(chosen, Failure):
        return Failure(_explain(chosen.failure(), part, plain, settings))
    return Success(next(o for o in offers if o.offer == chosen.unwrap()))


def place_on_cluster(
    config: TaskConfig, partitions: Sequence[Partition], offers: Sequence[SlurmOffer], settings: SlurmSettings
) -> Result[SlurmPlacement, DomainError]:
    """Where on the cluster the (valid) task runs, or why it cannot."""
    problems = unsupported(config)
    if problems:
        return Failure(validation_error(problems, subject=f"task for provider {settings.name}"))
    name = partition_for(config, partitions, settings)
    known = {p.name: p for p in partitions}
    if name is None or name not in known:
        names = ", ".join(known) or "none"
        directive = None if config.region else partition_directive(config)
        hints: tuple[str, ...]
        if directive is not None:  # the script's own directive decides: only it can be changed
            hints = (f"change {directive.label} in the script to one of: {names}",)
        else:
            hints = (
                f"use one of: {names} (region is the partition on Slurm)",
                "set partition for the provider in $FLOW_HOME/config.yaml",
            )
        return Failure(
            _refusal(
                settings.name,
                str(name),
                f"The Slurm cluster of provider {settings.name} has no partition {name!r} (it has: {names})",
                *hints,
            )
        )
    part = known[name]
    chosen = _offer_in(config, part, [o for o in offers if o.partition == name], settings)
    if isinstance(chosen, Failure):
        return Failure(chosen.failure())
    offer = chosen.unwrap()
    fits = offer.offer.available or 0
    if config.num_instances > fits:
        return Failure(
            _refusal(
                settings.name,
                name,
                f"Partition {name} has {fits} usable node(s) for {short_name(offer.offer.instance_type)}; "
                f"the task asks for num_instances={config.num_instances}",
                f"ask for at most num_instances={fits}",
                "use another partition (region)",
            )
        )
    if config.memory_mb is not None and part.memory_mb and config.memory_mb > part.memory_mb:
        return Failure(
            _refusal(
                settings.name,
                name,
                f"The task needs {config.memory_mb} MB of RAM per node; the nodes of partition {name} have at most "
                f"{part.memory_mb} MB",
                f"ask for at most memory_mb={part.memory_mb}",
            )
        )
    return Success(SlurmPlacement(partition=part, offer=offer))
