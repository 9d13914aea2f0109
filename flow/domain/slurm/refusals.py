"""What a failed submission means for the user: the seed's exception, Slurm's own words, a fix.

The submit script (flow.domain.slurm.scripts.submit_script) exits with a status per step; 95 is
sbatch itself refusing the job, whose message says why. Messages about what the cluster does not
have (a partition, a GRES, enough nodes, memory or time) are RESOURCE_NOT_AVAILABLE; any other
refused option (an unknown account, QOS, feature, a malformed value) is VALIDATION_FAILED.
"""

from __future__ import annotations

from typing import Final

from flow.domain.errors import DomainError, ErrorReason, validation_error, violation
from flow.domain.slurm.sbatch import Directive, read_directives
from flow.domain.slurm.scripts import SUBMIT_ERRORS

SBATCH_REFUSED: Final = 95
WORKING_DIR_MISSING: Final = 94
# Lower-case pieces of sbatch's messages when the cluster lacks what the job asks for.
NOT_AVAILABLE: Final = (
    "invalid partition",
    "invalid generic resource",
    "gres",
    "requested node configuration is not available",
    "node count specification invalid",
    "memory required by task is not available",
    "requested time limit",
    "partition not available",
    "more processors requested than permitted",
)


# What sbatch names in a refusal, and the options of a script that ask for it.
_BLAMED: Final = (
    ("partition", ("partition",)),
    ("account", ("account",)),
    ("qos", ("qos",)),
    ("feature", ("constraint", "prefer")),
    ("generic resource", ("gres", "gpus", "gpus-per-node", "gpus-per-task")),
    ("gres", ("gres", "gpus", "gpus-per-node", "gpus-per-task")),
    ("node configuration", ("gres", "gpus", "gpus-per-node", "gpus-per-task", "nodes", "ntasks", "constraint")),
    ("node count", ("nodes",)),
    ("time limit", ("time",)),
    ("memory", ("mem", "mem-per-cpu", "mem-per-gpu")),
    ("reservation", ("reservation",)),
    ("dependency", ("dependency",)),
    ("licenses", ("licenses",)),
)


def blamed_directives(error_text: str, script: str | None) -> list[Directive]:
    """The script's own directives that ask for what sbatch's message says it cannot give."""
    if not script or not script.startswith("#!"):
        return []
    lowered = error_text.lower()
    options = [option for piece, options in _BLAMED if piece in lowered for option in options]
    last = {d.option: d for d in read_directives(script).directives}
    return [last[o] for o in dict.fromkeys(options) if o in last]


def submit_refusal(rc: int, error_text: str, working_dir: str, provider: str, script: str | None = None) -> DomainError:
    """The error for a submit script that exited with `rc`, having printed `error_text`; where
    the job's script has the directive sbatch refused, the hint names it (only the script can
    change it: a provider setting comes before the script's own directives)."""
    said = " ".join(error_text.split())[:500]
    metadata = (("provider", provider),)
    if rc == WORKING_DIR_MISSING:
        return validation_error(
            [
                violation(
                    "working_dir",
                    working_dir,
                    "does not exist on the cluster (in the task's code snapshot)",
                    "give a directory of your code (relative to code_root), or leave working_dir out",
                )
            ]
        )
    if rc == SBATCH_REFUSED:
        lowered = said.lower()
        reason = (
            ErrorReason.RESOURCE_NOT_AVAILABLE
            if any(piece in lowered for piece in NOT_AVAILABLE)
            else ErrorReason.VALIDATION_FAILED
        )
        blamed = blamed_directives(said, script)
        fix = (
            "fix or remove " + " or ".join(d.label for d in blamed) + " in the script"
            if blamed
            else "fix or remove the option sbatch names (in the task's settings or its #SBATCH lines)"
        )
        return DomainError(
            reason=reason,
            message=f"Slurm (provider {provider}) refused the job: {said or 'sbatch failed without a message'}",
            suggestions=(fix, f"look at what the cluster offers: `flow instances --provider {provider}` and `sinfo`"),
            metadata=metadata,
        )
    what = SUBMIT_ERRORS.get(rc, f"submitting failed (exit status {rc})")
    return DomainError(
        reason=ErrorReason.PROVIDER_ERROR,
        message=f"Provider {provider} could not submit the job: {what}" + (f": {said}" if said else ""),
        suggestions=("check the provider's work_dir on the cluster (space, permissions)", "then run the task again"),
        metadata=metadata,
    )
