"""Existing #SBATCH scripts as Flow tasks, on any provider: `flow slurm submit job.sbatch`.

    from flow import Flow
    from flow.slurm import submit_sbatch

    tasks = submit_sbatch(Flow(), "job.sbatch")                  # the default provider
    tasks = submit_sbatch(Flow(), "job.sbatch", provider="cluster")

The script runs as it is (its whole text is the task's `script`); the directives Flow understands
(job name, GPUs, nodes, time, memory, exported variables, working directory) become TaskConfig
fields, so the task asks for the same resources on any provider. On a slurm provider the
directives are also submitted as they are, so nothing is lost in translation. An `--array` makes
one task per element, each with its SLURM_ARRAY_TASK_ID. Directives Flow cannot honour are
refused (naming the line and a fix) or, when they matter to Slurm only, reported as warnings.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from returns.result import Failure

from flow.domain.slurm.emulation import ARRAY_ID_VAR
from flow.domain.slurm.sbatch import SbatchJob, sbatch_to_configs
from flow.domain.slurm.submission_plan import SubmissionPlan, submission_plan
from flow.domain.source_lines import locate
from flow.errors import ValidationError
from flow.wire.error_table import exception_from_domain_error

if TYPE_CHECKING:
    from flow.client import Flow
    from flow.config import TaskConfig
    from flow.task import Task

SLURM_KIND = "slurm"
MAX_LISTED = 10_000  # tasks looked through for an array's elements


class SbatchWarning(UserWarning):
    """Something in the script that Flow does not apply (the task runs without it)."""


def _provider_kind(flow: Flow, name: str) -> tuple[str, str]:
    """The provider a submission goes to (name, kind): `name`, else the client's, else the
    daemon's default."""
    info = flow.daemon_info()
    chosen = name or flow.chosen_provider(info)
    return chosen, info.kind_of(chosen)


def _shim_source() -> str:
    from flow.runtime import slurm_shim

    return Path(slurm_shim.__file__).read_text()


def plan_sbatch(
    path: str | os.PathLike[str],
    *,
    provider_kind: str = SLURM_KIND,
    provider_name: str = "",
    instance_type: str | None = None,
) -> SubmissionPlan:
    """What submitting the sbatch script at `path` to a provider of `provider_kind` would do: the
    tasks (one per --array element), the Slurm-only directives and the warnings. Raises
    ValidationError naming each bad line, or the error the provider would give (a GPU model only
    Slurm knows, elsewhere)."""
    source = Path(path)
    try:
        text = source.read_text()
    except FileNotFoundError:
        raise ValidationError(
            f"No sbatch script at {source}", suggestions=["give the path of an existing #SBATCH script"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"Cannot read {source}: {exc}", suggestions=["give a readable text file"]) from None
    parsed = sbatch_to_configs(
        text, name=source.stem, environ=os.environ, instance_type=instance_type, now=time.time(), local=local_time
    )
    if isinstance(parsed, Failure):
        raise exception_from_domain_error(locate(parsed.failure(), {}, str(source)))
    job: SbatchJob = parsed.unwrap()
    planned = submission_plan(
        job,
        source=str(source),
        provider=provider_name or provider_kind,
        provider_kind=provider_kind,
        array_id=uuid.uuid4().hex[:12],  # new for each submission: its elements share it
        shim_source=None if provider_kind == SLURM_KIND else _shim_source(),
    )
    if isinstance(planned, Failure):
        raise exception_from_domain_error(planned.failure())
    return planned.unwrap()


def local_time(fields: tuple[int, int, int, int, int, int]) -> float:
    """Seconds since the epoch of a local date and time (this machine's zone, as sbatch's)."""
    return time.mktime((*fields, 0, 0, -1))


def read_sbatch(
    path: str | os.PathLike[str],
    *,
    provider_kind: str = SLURM_KIND,
    provider_name: str = "",
    instance_type: str | None = None,
) -> tuple[list[TaskConfig], list[str]]:
    """The TaskConfigs (one per --array element) of an sbatch script for a provider of
    `provider_kind`, and the warnings to show; raises ValidationError naming each bad line."""
    from flow.config import TaskConfig

    plan = plan_sbatch(path, provider_kind=provider_kind, provider_name=provider_name, instance_type=instance_type)
    return [TaskConfig.from_core(t.config) for t in plan.tasks], list(plan.warnings)


def plan_for(flow: Flow, path: str | os.PathLike[str], provider: str | None = None, **options: Any) -> SubmissionPlan:
    """plan_sbatch for the provider a submission through `flow` goes to (`provider`, else the
    client's, else the daemon's default)."""
    name, kind = _provider_kind(flow, provider or "")
    return plan_sbatch(path, provider_kind=kind, provider_name=name, **options)


def submit_plan(
    flow: Flow,
    plan: SubmissionPlan,
    *,
    code_root: str | os.PathLike[str] | None = None,
    upload_code: bool = True,
    validate_only: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> list[Task]:
    """Submits a plan's tasks in order (on a slurm provider, an array's first element submits the
    array job, and each further one takes its element). `overrides`: TaskConfig fields given at
    submission, which win over the script's directives (as sbatch's command line does; e.g.
    depends_on from `flow slurm submit --dependency`)."""
    from flow.config import TaskConfig

    root = str(code_root or Path.cwd())
    return [
        flow.submit(
            attrs.evolve(
                TaskConfig.from_core(task.config),
                upload_code=upload_code,
                code_root=root if upload_code else None,
                **(overrides or {}),
            ),
            validate_only=validate_only,
            provider=plan.provider,
        )
        for task in plan.tasks
    ]


def submit_sbatch(
    flow: Flow,
    path: str | os.PathLike[str],
    provider: str | None = None,
    *,
    instance_type: str | None = None,
    code_root: str | os.PathLike[str] | None = None,
    upload_code: bool = True,
    validate_only: bool = False,
    on_warning: Callable[[str], None] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[Task]:
    """Submits an sbatch script as Flow task(s), one per --array element (one without), and
    returns them in order. The task runs in a snapshot of `code_root` (default: the current
    directory), as sbatch runs a job in the directory it was submitted from. Warnings (what the
    task runs without) go to `on_warning`, by default as SbatchWarning through `warnings`.
    The client is only used, never changed: one Flow may submit from several threads at once.
    `overrides`: as submit_plan's."""
    plan = plan_for(flow, path, provider, instance_type=instance_type)
    warn = on_warning or (lambda text: warnings.warn(text, SbatchWarning, stacklevel=3))
    for note in plan.warnings:
        warn(note)
    return submit_plan(
        flow, plan, code_root=code_root, upload_code=upload_code, validate_only=validate_only, overrides=overrides
    )


def array_of(task: Task) -> str | None:
    """The --array submission a task is an element of (None: it is none)."""
    return task.config.env.get(ARRAY_ID_VAR) if task.config is not None else None


def cancel_array(flow: Flow, task: Task) -> list[Task]:
    """Cancels every element of the array `task` belongs to that has not ended (on a slurm
    provider each is its element of one array job), and returns them as they are now."""
    key = array_of(task)
    if key is None:
        raise ValidationError(
            f"Task {task.task_id} is not an element of an array",
            suggestions=["cancel it alone with `flow cancel`", "arrays come from `flow slurm submit` of --array"],
        )
    elements = [t for t in flow.list_tasks(limit=MAX_LISTED) if array_of(t) == key and not t.is_terminal]
    for element in elements:
        element.cancel()
    return [flow.get_task(t.task_id) for t in elements]


__all__ = [
    "SbatchWarning",
    "array_of",
    "cancel_array",
    "local_time",
    "plan_for",
    "plan_sbatch",
    "read_sbatch",
    "submit_plan",
    "submit_sbatch",
]
