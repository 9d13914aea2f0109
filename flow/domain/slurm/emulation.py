"""An sbatch script on a provider that is not Slurm: the environment sbatch would give it, and the
wrapper that runs it as on one Slurm allocation.

Static variables (what the script asked for) are decided here, once, as the task's env:
SLURM_JOB_NAME, SLURM_NNODES/SLURM_JOB_NUM_NODES, SLURM_NTASKS/SLURM_NPROCS,
SLURM_NTASKS_PER_NODE, SLURM_CPUS_PER_TASK, SLURM_GPUS_ON_NODE, SLURM_MEM_PER_NODE and the
array variables. What only the running task knows (SLURM_JOB_ID, SLURM_NODEID, SLURM_PROCID,
SLURM_JOB_NODELIST, SLURM_SUBMIT_DIR, ...) is set at start by the shim (flow.runtime.slurm_shim,
standard library only), which the wrapper writes next to the script and runs: it puts `srun` and
`scontrol` first on PATH and runs the script's body once, on the task's first node, as sbatch
runs a batch script on the first node of its allocation.

The wrapper is bash that writes two files (the shim, the script) into a private temporary
directory and hands over to the shim; every byte of both is quoted for bash (shlex.quote), so the
script's text reaches the file exactly as it was written.
"""

from __future__ import annotations

import shlex
from typing import Final

from returns.result import Success

from flow.domain.instances.instance_types import parse_instance_type
from flow.domain.slurm.layout import Layout
from flow.domain.task.config import TaskConfig

SHIM_FILE: Final = "flow_slurm.py"
JOB_FILE: Final = "job.sbatch"
# The array a task is an element of (a key its elements share; Slurm's SLURM_ARRAY_JOB_ID is a
# number the shim derives from it), set by `flow slurm submit` on every provider.
ARRAY_ID_VAR: Final = "FLOW_ARRAY_ID"
ARRAY_INDEX_VAR: Final = "SLURM_ARRAY_TASK_ID"


def batch_env(
    config: TaskConfig, layout: Layout, job_name: str, ntasks_per_node: int | None, cpus_per_task: int | None
) -> dict[str, str]:
    """The variables sbatch sets from what the script asked for (the task's GPUs per node are its
    instance type's, so an -i given at submission shows)."""
    found = {
        "SLURM_JOB_NAME": job_name,
        "SLURM_NNODES": str(layout.nodes),
        "SLURM_JOB_NUM_NODES": str(layout.nodes),
        "SLURM_NTASKS": str(layout.ntasks),
        "SLURM_NPROCS": str(layout.ntasks),
    }
    if ntasks_per_node is not None:
        found["SLURM_NTASKS_PER_NODE"] = str(ntasks_per_node)
    if cpus_per_task is not None:
        found["SLURM_CPUS_PER_TASK"] = str(cpus_per_task)
    gpus = 0
    if config.instance_type:
        parsed = parse_instance_type(config.instance_type)
        if isinstance(parsed, Success) and not parsed.unwrap().is_cpu:
            gpus = parsed.unwrap().count
    if gpus:
        found["SLURM_GPUS_ON_NODE"] = str(gpus)
    if config.memory_mb:
        found["SLURM_MEM_PER_NODE"] = str(config.memory_mb)
    return found


def wrapped_script(script: str, shim_source: str, source: str) -> str:
    """A bash script that runs `script` through the shim (see the module docstring)."""
    q = shlex.quote
    return "\n".join(
        [
            "#!/bin/bash",
            f"# Written by Flow (flow slurm submit {q(source)}): the script below runs as sbatch runs it,",
            "# with Slurm's variables, and srun and scontrol for the task's nodes (flow.runtime.slurm_shim).",
            'flow_slurm=$(mktemp -d "${TMPDIR:-/tmp}/flow-slurm.XXXXXX") || exit 1',
            f'printf %s {q(shim_source)} > "$flow_slurm/{SHIM_FILE}" || exit 1',
            f'printf %s {q(script)} > "$flow_slurm/{JOB_FILE}" || exit 1',
            f'chmod 700 "$flow_slurm/{JOB_FILE}"',
            "command -v python3 >/dev/null || "
            "{ echo 'flow: python3 is needed to run an sbatch script outside Slurm' >&2; exit 127; }",
            f'exec python3 "$flow_slurm/{SHIM_FILE}" batch "$flow_slurm"',
            "",
        ]
    )
