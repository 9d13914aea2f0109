"""What `flow slurm submit` read in a script and would do with it, for one provider: the value
behind `--dry-run --json`, so a user (and a script) can check a conversion without running it.

Each task it would submit is shown as its TaskConfig (with the array index it runs), the Slurm-only
directives as passed through (a slurm provider submits them as written) or ignored (any other
provider runs without them, with a warning), and every warning.
"""

from __future__ import annotations

import posixpath
from typing import Any, Final

from attrs import evolve, frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError
from flow.domain.slurm.emulation import ARRAY_ID_VAR, ARRAY_INDEX_VAR, batch_env, wrapped_script
from flow.domain.slurm.layout import Layout
from flow.domain.slurm.sbatch import ArraySpec, Directive, SbatchJob, element_name, gpu_model_needed
from flow.domain.task.config import TaskConfig
from flow.domain.task.config_codec import task_config_to_dict

SLURM_KIND: Final = "slurm"
# Providers whose nodes are processes of one machine: srun outside Slurm starts every node's tasks.
SAME_MACHINE_KINDS: Final = frozenset({SLURM_KIND, "local"})
# Slurm-only directives a provider that is not Slurm still honours, as variables srun reads.
EMULATED: Final = frozenset({"ntasks", "ntasks-per-node", "cpus-per-task"})
# Shown for every task even at their defaults, so a script reading the plan finds them.
_ALWAYS_SHOWN: Final = (
    "name",
    "num_instances",
    "instance_type",
    "max_run_time_hours",
    "memory_mb",
    "env",
    "working_dir",
)


@frozen
class PlannedTask:
    config: TaskConfig
    array_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        shown = {key: getattr(self.config, key) for key in _ALWAYS_SHOWN}
        shown["env"] = dict(self.config.env)
        written = {k: v for k, v in task_config_to_dict(self.config).items() if k != "script"}
        return {**shown, **written, "array_index": self.array_index}


@frozen
class SubmissionPlan:
    source: str
    provider: str
    provider_kind: str
    job_name: str | None
    layout: Layout
    tasks: tuple[PlannedTask, ...]
    passed_through: tuple[Directive, ...]  # Slurm-only directives a slurm provider submits as written
    ignored: tuple[Directive, ...]  # the same, on a provider that runs without them
    warnings: tuple[str, ...]
    array: ArraySpec | None = None
    instance_type_override: str | None = None
    # Elsewhere, the task counts: not Slurm's to lay out, but the variables (SLURM_NTASKS, ...)
    # that srun (flow.runtime.slurm_shim) starts the script's steps by.
    emulated: tuple[Directive, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        array = None
        if self.array is not None:
            array = {
                "indices": list(self.array.indices),
                "step": self.array.step,
                "throttle": self.array.throttle,
                "directive": directive_to_dict(self.array.directive),
            }
        return {
            "source": self.source,
            "provider": self.provider,
            "provider_kind": self.provider_kind,
            "job_name": self.job_name,
            "layout": {
                "nodes": self.layout.nodes,
                "ntasks": self.layout.ntasks,
                "gpus_per_node": self.layout.gpus_per_node,
            },
            "array": array,
            "instance_type_override": self.instance_type_override,
            "tasks": [task.to_dict() for task in self.tasks],
            "slurm_directives": {
                "passed_through": [directive_to_dict(d) for d in self.passed_through],
                "ignored": [directive_to_dict(d) for d in self.ignored],
                "emulated": [directive_to_dict(d) for d in self.emulated],
            },
            "warnings": list(self.warnings),
        }


def directive_to_dict(d: Directive) -> dict[str, Any]:
    return {"option": f"--{d.option}", "written": d.spelled, "value": d.value, "line": d.line}


def ignored_warning(d: Directive, provider: str) -> str:
    """What a provider other than Slurm says of a directive only Slurm honours."""
    if d.option in ("output", "error"):
        return f"{d.label}: on provider {provider} the output is the task's log (flow logs); this file is not written"
    return f"{d.label} only applies on Slurm; provider {provider} ignores it"


def _native_tasks(job: SbatchJob, array_id: str) -> tuple[PlannedTask, ...]:
    """On Slurm: the script as it is, one task per element of ONE array job. Each element says
    which array it belongs to and its index; the slurm provider submits the array with its first
    element and takes each further element as `<array job>_<index>`."""
    base = job.base or job.configs[0]
    if job.array is None:
        return (PlannedTask(config=base),)
    stem = base.name or "array"
    shared = {ARRAY_ID_VAR: array_id} if array_id else {}
    return tuple(
        PlannedTask(
            config=evolve(
                base, name=element_name(stem, index), env={**base.env, **shared, ARRAY_INDEX_VAR: str(index)}
            ),
            array_index=index,
        )
        for index in job.array.indices
    )


def _emulated_tasks(job: SbatchJob, source: str, array_id: str, shim_source: str | None) -> tuple[PlannedTask, ...]:
    """Elsewhere: one task per element, each with the variables sbatch would set and, given the
    shim, run through it (srun and scontrol for its nodes)."""
    indices: tuple[int | None, ...] = job.array.indices if job.array is not None else (None,)
    counts = {d.option: d.value for d in job.directives}
    name = job.job_name or posixpath.basename(source) or "sbatch"
    tasks = []
    for config, index in zip(job.configs, indices, strict=True):
        env = batch_env(
            config,
            job.layout,
            name,
            _count(counts.get("ntasks-per-node")),
            _count(counts.get("cpus-per-task")),
        )
        if index is not None and array_id:
            env[ARRAY_ID_VAR] = array_id
        env.update(config.env)  # the script's own --export wins
        script = config.script
        if shim_source is not None and script is not None:
            script = wrapped_script(script, shim_source, source)
        tasks.append(PlannedTask(config=evolve(config, env=env, script=script), array_index=index))
    return tuple(tasks)


def _count(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def submission_plan(
    job: SbatchJob,
    *,
    source: str,
    provider: str,
    provider_kind: str,
    array_id: str = "",
    shim_source: str | None = None,
) -> Result[SubmissionPlan, DomainError]:
    """The plan for submitting `job` (sbatch_to_configs' reading of `source`) to `provider`; the
    error a submission would raise where the provider cannot run it as read (GPUs of a model
    only the Slurm cluster knows, on a provider that is not Slurm).

    `array_id`: a key the elements of this submission's --array share (the shell picks it, new for
    each submission). `shim_source`: flow.runtime.slurm_shim's text, for a provider that is not
    Slurm (without it, the tasks get Slurm's static variables only)."""
    on_slurm = provider_kind == SLURM_KIND
    if not on_slurm and (problem := gpu_model_needed(job, provider, source)) is not None:
        return Failure(problem)
    warnings = list(job.warnings)
    if on_slurm:
        tasks = _native_tasks(job, array_id)
    else:
        tasks = _emulated_tasks(job, source, array_id, shim_source)
        warnings.extend(ignored_warning(d, provider) for d in job.native_only if d.option not in EMULATED)
        if job.array is not None and job.array.throttle is not None:
            warnings.append(
                f"{job.array.directive.label}: provider {provider} runs all {len(job.array.indices)} elements at "
                f"once; the %{job.array.throttle} limit applies on Slurm only"
            )
        if job.layout.nodes > 1 and provider_kind not in SAME_MACHINE_KINDS:
            warnings.append(
                f"the script runs on {job.layout.nodes} nodes: provider {provider} runs its body on the first "
                "node, as sbatch does, and srun there only reaches that node (on Slurm, or on the local "
                "provider, srun runs on every node)"
            )
    return Success(
        SubmissionPlan(
            source=source,
            provider=provider,
            provider_kind=provider_kind,
            job_name=job.job_name,
            layout=job.layout,
            tasks=tasks,
            passed_through=job.native_only if on_slurm else (),
            ignored=() if on_slurm else tuple(d for d in job.native_only if d.option not in EMULATED),
            emulated=() if on_slurm else tuple(d for d in job.native_only if d.option in EMULATED),
            warnings=tuple(warnings),
            array=job.array,
            instance_type_override=job.instance_type_override,
        )
    )
