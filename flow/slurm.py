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
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from returns.result import Failure

from flow.domain.slurm.sbatch import SbatchJob, sbatch_to_configs
from flow.domain.source_lines import locate
from flow.errors import ValidationError
from flow.wire.error_table import exception_from_domain_error

if TYPE_CHECKING:
    from flow.client import Flow
    from flow.config import TaskConfig
    from flow.task import Task

SLURM_KIND = "slurm"


class SbatchWarning(UserWarning):
    """Something in the script that Flow does not apply (the task runs without it)."""


def _provider_kind(flow: Flow, name: str) -> tuple[str, str]:
    """The provider a submission goes to (name, kind): `name`, else the client's, else the
    daemon's default."""
    info = flow.daemon_info()
    chosen = name or flow.chosen_provider(info)
    return chosen, info.kind_of(chosen)


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

    source = Path(path)
    try:
        text = source.read_text()
    except FileNotFoundError:
        raise ValidationError(
            f"No sbatch script at {source}", suggestions=["give the path of an existing #SBATCH script"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"Cannot read {source}: {exc}", suggestions=["give a readable text file"]) from None
    parsed = sbatch_to_configs(text, name=source.stem, environ=os.environ, now=time.time(), local=local_time)
    if isinstance(parsed, Failure):
        raise exception_from_domain_error(locate(parsed.failure(), {}, str(source)))
    job: SbatchJob = parsed.unwrap()
    notes = list(job.warnings)
    configs = list(job.configs)
    if instance_type is not None:
        configs = [attrs.evolve(c, instance_type=instance_type) for c in configs]
    elif job.generic_gpus and provider_kind != SLURM_KIND:
        asked = job.gpu_directive
        where = asked.label if asked is not None else "the script"
        count = job.generic_gpus
        raise ValidationError(
            f"{source}: {where} asks for {count} GPU(s) without naming a model, and provider "
            f"{provider_name or provider_kind} needs one (only Slurm knows what its untyped GPUs are)",
            suggestions=[
                f"give the instance type, e.g. --instance-type {count}xa100 (flow slurm submit) or "
                f"instance_type='{count}xa100' (submit_sbatch)",
                f"or name the model in the script, e.g. #SBATCH --gres=gpu:a100:{count}",
                "or submit to a slurm provider, which runs the directive as it is",
            ],
        )
    if provider_kind != SLURM_KIND:
        notes.extend(
            f"{d.label} only applies on Slurm; provider {provider_name or provider_kind} ignores it"
            for d in job.native_only
        )
    return [TaskConfig.from_core(c) for c in configs], notes


def local_time(fields: tuple[int, int, int, int, int, int]) -> float:
    """Seconds since the epoch of a local date and time (this machine's zone, as sbatch's)."""
    return time.mktime((*fields, 0, 0, -1))


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
    `overrides`: TaskConfig fields given at submission, which win over the script's directives
    (as sbatch's command line does; e.g. depends_on from `flow slurm submit --dependency`)."""
    name, kind = _provider_kind(flow, provider or "")
    configs, notes = read_sbatch(path, provider_kind=kind, provider_name=name, instance_type=instance_type)
    warn = on_warning or (lambda text: warnings.warn(text, SbatchWarning, stacklevel=3))
    for note in notes:
        warn(note)
    root = str(code_root or Path.cwd())
    return [
        flow.submit(
            attrs.evolve(config, upload_code=upload_code, code_root=root if upload_code else None, **(overrides or {})),
            validate_only=validate_only,
            provider=name,
        )
        for config in configs
    ]


__all__ = ["SbatchWarning", "read_sbatch", "submit_sbatch"]
