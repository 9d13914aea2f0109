"""What a failed submission means for the user: the seed's exception, Slurm's own words, a fix.

The submit script (flow.domain.slurm.scripts.submit_script) exits with a status per step; 95 is
sbatch itself refusing the job, whose message says why. Messages about what the cluster does not
have (a partition, a GRES, enough nodes, memory or time) are RESOURCE_NOT_AVAILABLE; any other
refused option (an unknown account, QOS, feature, a malformed value) is VALIDATION_FAILED.
"""

from __future__ import annotations

from typing import Final

from flow.domain.errors import DomainError, ErrorReason, validation_error, violation
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


def submit_refusal(rc: int, error_text: str, working_dir: str, provider: str) -> DomainError:
    """The error for a submit script that exited with `rc`, having printed `error_text`."""
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
        return DomainError(
            reason=reason,
            message=f"Slurm (provider {provider}) refused the job: {said or 'sbatch failed without a message'}",
            suggestions=(
                f"look at what the cluster offers: `flow instances --provider {provider}` and `sinfo`",
                "fix or remove the option sbatch names (in the task's settings or its #SBATCH lines)",
            ),
            metadata=metadata,
        )
    what = SUBMIT_ERRORS.get(rc, f"submitting failed (exit status {rc})")
    return DomainError(
        reason=ErrorReason.PROVIDER_ERROR,
        message=f"Provider {provider} could not submit the job: {what}" + (f": {said}" if said else ""),
        suggestions=("check the provider's work_dir on the cluster (space, permissions)", "then run the task again"),
        metadata=metadata,
    )
