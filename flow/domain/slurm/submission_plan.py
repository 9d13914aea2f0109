"""What `flow slurm submit` read in a script and would do with it, for one provider: the value
behind `--dry-run --json`, so a user (and a script) can check a conversion without running it.

Each task it would submit is shown as its TaskConfig (with the array index it runs), the Slurm-only
directives as passed through (a slurm provider submits them as written) or ignored (any other
provider runs without them, with a warning), and every warning.
"""

from __future__ import annotations

from typing import Any, Final

from attrs import frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError
from flow.domain.slurm.layout import Layout
from flow.domain.slurm.sbatch import ArraySpec, Directive, SbatchJob, gpu_model_needed
from flow.domain.task.config import TaskConfig
from flow.domain.task.config_codec import task_config_to_dict

SLURM_KIND: Final = "slurm"
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
            },
            "warnings": list(self.warnings),
        }


def directive_to_dict(d: Directive) -> dict[str, Any]:
    return {"option": f"--{d.option}", "written": d.spelled, "value": d.value, "line": d.line}


def ignored_warning(d: Directive, provider: str) -> str:
    """What a provider other than Slurm says of a directive only Slurm honours."""
    return f"{d.label} only applies on Slurm; provider {provider} ignores it"


def submission_plan(
    job: SbatchJob, *, source: str, provider: str, provider_kind: str
) -> Result[SubmissionPlan, DomainError]:
    """The plan for submitting `job` (sbatch_to_configs' reading of `source`) to `provider`; the
    error a submission would raise where the provider cannot run it as read (GPUs of a model
    only the Slurm cluster knows, on a provider that is not Slurm)."""
    on_slurm = provider_kind == SLURM_KIND
    if not on_slurm and (problem := gpu_model_needed(job, provider, source)) is not None:
        return Failure(problem)
    indices: tuple[int | None, ...] = job.array.indices if job.array is not None else (None,)
    tasks = tuple(PlannedTask(config=c, array_index=i) for c, i in zip(job.configs, indices, strict=True))
    warnings = list(job.warnings)
    if not on_slurm:
        warnings.extend(ignored_warning(d, provider) for d in job.native_only)
    return Success(
        SubmissionPlan(
            source=source,
            provider=provider,
            provider_kind=provider_kind,
            job_name=job.job_name,
            layout=job.layout,
            tasks=tasks,
            passed_through=job.native_only if on_slurm else (),
            ignored=() if on_slurm else job.native_only,
            warnings=tuple(warnings),
            array=job.array,
            instance_type_override=job.instance_type_override,
        )
    )
