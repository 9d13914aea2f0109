"""What Slurm says, in Flow's terms: job states as task events, GRES as GPUs, sinfo as offers.

Everything here reads text a Slurm command printed (squeue, sacct, the jobcomp/filetxt log,
sinfo) and decides; running the commands is the provider's job. Job states map to the events of
the task state machine with a reason a human can act on:

    PENDING, CONFIGURING, REQUEUED, ...     still queued: no event (the task stays PENDING/PROVISIONING)
    RUNNING, COMPLETING, SUSPENDED, ...     Started
    COMPLETED                               Exited(0)               -> COMPLETED
    FAILED                                  Exited(code)            -> FAILED "exited with code N"
    CANCELLED                               Lost("CANCELLED: ...")  -> CANCELLED when Flow asked, else FAILED
    TIMEOUT, DEADLINE                       TimedOut                -> FAILED "TIMEOUT: ..."
    PREEMPTED                               Preempted               -> PREEMPTED
    NODE_FAIL, BOOT_FAIL, OUT_OF_MEMORY     Lost("<STATE>: ...")    -> FAILED "<STATE>: ..."
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from attrs import evolve, frozen

from flow.domain.instances.gpu_catalog import CATALOG, find_model
from flow.domain.instances.instance_types import CPU_INSTANCE, InstanceType
from flow.domain.instances.matching import Offer
from flow.domain.task.lifecycle import Exited, Lost, Preempted, Started, TaskEvent, TimedOut

PENDING_STATES: Final = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESV_DEL_HOLD",
        "SPECIAL_EXIT",
    }
)
RUNNING_STATES: Final = frozenset(
    {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
)
TERMINAL_STATES: Final = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "DEADLINE",
        "PREEMPTED",
        "NODE_FAIL",
        "BOOT_FAIL",
        "OUT_OF_MEMORY",
        "REVOKED",
    }
)
# Terminal states whose task event carries the command's exit status (so it is worth looking up).
NEEDS_EXIT_CODE: Final = frozenset({"COMPLETED", "FAILED"})
UNKNOWN_GPU_MEMORY: Final = 0
UNKNOWN_FORM_FACTOR: Final = "slurm"
GENERIC_GPU: Final = "gpu"

_LOST_REASONS: Final[Mapping[str, str]] = {
    "CANCELLED": "CANCELLED: the Slurm job was cancelled outside Flow (scancel, or an administrator)",
    "NODE_FAIL": "NODE_FAIL: a node of the Slurm job failed; run the task again",
    "BOOT_FAIL": "BOOT_FAIL: Slurm could not boot the job's nodes; run the task again",
    "OUT_OF_MEMORY": (
        "OUT_OF_MEMORY: the job used more memory than it was given; ask for more with memory_mb (#SBATCH --mem)"
    ),
    "REVOKED": "REVOKED: Slurm revoked the job (it ran on another cluster of a federation)",
}


def base_state(text: str) -> str:
    """'CANCELLED by 0' (sacct), 'COMPLETED+' -> 'CANCELLED', 'COMPLETED'."""
    word = text.strip().split(" ", 1)[0] if text.strip() else ""
    return word.rstrip("+").upper()


def phase_of(state: str) -> str:
    """'pending', 'running', 'ended' or 'unknown' for a Slurm job state."""
    base = base_state(state)
    if base in PENDING_STATES:
        return "pending"
    if base in RUNNING_STATES:
        return "running"
    if base in TERMINAL_STATES:
        return "ended"
    return "unknown"


def parse_exit_code(text: str) -> int | None:
    """Slurm's 'rc:signal' (e.g. '3:0', '0:15') as a shell reports it: rc, or 128+signal."""
    match = re.fullmatch(r"\s*(\d+):(\d+)\s*", text)
    if match is None:
        return None
    code, sig = int(match.group(1)), int(match.group(2))
    return 128 + sig if sig and not code else code


def event_for(state: str, exit_code: int | None = None, reason: str = "") -> TaskEvent | None:
    """The task event a job state means; None while the job is still queued (or unknown).

    `exit_code` is the command's own status where known (our exit marker, sacct or jobcomp);
    `reason` is Slurm's reason text, added to messages that would otherwise be vague."""
    base = base_state(state)
    if base in PENDING_STATES:
        return None
    if base in RUNNING_STATES:
        return Started()
    if base == "COMPLETED":
        return Exited(exit_code=exit_code or 0)
    if base == "FAILED":
        if exit_code:
            return Exited(exit_code=exit_code)
        why = f" ({reason})" if reason and reason not in ("None", "NonZeroExitCode") else ""
        return Lost(reason=f"FAILED: Slurm reports the job failed{why}; see its log")
    if base in ("TIMEOUT", "DEADLINE"):
        return TimedOut(exit_code=None)
    if base == "PREEMPTED":
        return Preempted(reason="PREEMPTED: Slurm preempted the job to run a higher-priority one")
    if base in _LOST_REASONS:
        return Lost(reason=_LOST_REASONS[base])
    return None


# --- squeue, sacct, jobcomp ------------------------------------------------------------------


@frozen
class JobStatus:
    """A job as one query saw it: Slurm's state and reason, and its exit code where known."""

    job_id: str
    state: str
    reason: str = ""
    exit_code: int | None = None


SQUEUE_FORMAT: Final = "%i|%T|%r"
SACCT_FIELDS: Final = "JobID,State,ExitCode"


_ARRAY_RECORD = re.compile(r"(\d+)_\[([^\]]*)\]")
_ELEMENT_ID = re.compile(r"\d+(?:_\d+)?")
MAX_ARRAY_RECORD: Final = 100_000  # elements one compressed squeue record may stand for


def array_record_ids(job_id: str) -> list[str]:
    """The element ids a compressed squeue record stands for ('12_[0-7%2]' -> 12_0 .. 12_7,
    '12_[0,5]' -> 12_0, 12_5: pending elements Slurm has not split off yet); [job_id] else."""
    match = _ARRAY_RECORD.fullmatch(job_id)
    if match is None:
        return [job_id]
    base, inner = match.groups()
    ids: list[str] = []
    for part in inner.split("%")[0].split(","):
        bounds, _, step_text = part.partition(":")
        low, dash, high = bounds.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            continue
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else 1
        end = int(high) if dash else int(low)
        ids += [f"{base}_{k}" for k in range(int(low), min(end, int(low) + MAX_ARRAY_RECORD) + 1, step)]
    return ids


def parse_squeue(text: str) -> dict[str, JobStatus]:
    """`squeue -h -t all -o '%i|%T|%r'` lines by job id (an array element's id is `<array>_<k>`;
    a compressed record of pending elements stands for each of them)."""
    found: dict[str, JobStatus] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and parts[0]:
            for job_id in array_record_ids(parts[0]):
                found[job_id] = JobStatus(job_id=job_id, state=parts[1], reason="|".join(parts[2:]))
    return found


def parse_sacct(text: str) -> dict[str, JobStatus]:
    """`sacct -n -P -X -o JobID,State,ExitCode` lines by job id."""
    found: dict[str, JobStatus] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 3 and _ELEMENT_ID.fullmatch(parts[0]):
            found[parts[0]] = JobStatus(
                job_id=parts[0], state=base_state(parts[1]), exit_code=parse_exit_code(parts[2])
            )
    return found


_JOBCOMP_FIELD = re.compile(r"(?:^| )(JobId|JobState|ExitCode|ArrayJobId|ArrayTaskId)=(\S*)")


def parse_jobcomp(text: str) -> dict[str, JobStatus]:
    """jobcomp/filetxt lines ('JobId=12 ... JobState=FAILED ... ExitCode=3:0') by job id, and an
    array element's also by `<ArrayJobId>_<ArrayTaskId>`; the last line of a job wins (a
    requeued job ends more than once)."""
    found: dict[str, JobStatus] = {}
    for line in text.splitlines():
        fields = dict(_JOBCOMP_FIELD.findall(line))
        job_id, state = fields.get("JobId", ""), fields.get("JobState", "")
        if job_id.isdigit() and state:
            status = JobStatus(
                job_id=job_id, state=base_state(state), exit_code=parse_exit_code(fields.get("ExitCode", ""))
            )
            found[job_id] = status
            array, index = fields.get("ArrayJobId", ""), fields.get("ArrayTaskId", "")
            if array.isdigit() and index.isdigit() and array != "0":
                found[f"{array}_{index}"] = evolve(status, job_id=f"{array}_{index}")
    return found


def squeue_says_gone(rc: int, stderr: str) -> bool:
    """True when squeue failed only because none of the asked jobs exists any more (they left the
    controller after MinJobAge); any other failure says nothing about the jobs."""
    return rc != 0 and "Invalid job id" in stderr


# --- GRES and GPUs ---------------------------------------------------------------------------


@frozen
class GpuGres:
    """The GPU part of a GRES string: `gpu:a100:2` is type 'a100', count 2; `gpu:2` has no type."""

    count: int
    type: str | None = None


_GRES_TYPE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def parse_gres(text: str) -> tuple[GpuGres | None, tuple[str, ...]]:
    """The GPU entry of a GRES list ('gpu:a100:2(S:0-1),mps:100') and the other entries' names.
    A malformed GPU entry counts as no GPUs."""
    gpu: GpuGres | None = None
    others: list[str] = []
    for item in text.split(","):
        item = re.sub(r"\(.*?\)", "", item).strip()
        if not item or item in ("(null)", "none"):
            continue
        parts = item.split(":")
        name = parts[0].split("/")[-1]  # "gres/gpu" -> "gpu"
        if name != GENERIC_GPU:
            others.append(name)
            continue
        rest = parts[1:]
        count_text = rest[-1] if rest and rest[-1].isdigit() else "1"
        kind = rest[0] if rest and not rest[0].isdigit() else None
        if len(rest) > 2 or (kind is not None and not _GRES_TYPE.fullmatch(kind)):
            continue
        gpu = GpuGres(count=int(count_text), type=kind)
    return gpu, tuple(others)


def model_of_gres_type(gres_type: str) -> InstanceType | None:
    """The catalog GPU a Slurm GRES type names: 'a100', 'A100', 'nvidia_a100-sxm4-80gb' -> a100
    (80 GB, sxm); None when no catalog model is named (Flow then cannot say what it is)."""
    tokens = [t for t in re.split(r"[_.\-\s]+", gres_type.lower()) if t]
    model = None
    for token in tokens:
        found = find_model(token)
        if found is not None and (model is None or len(found.name) > len(model.name)):
            model = found
    if model is None:
        # 'a100sxm4' or 'h100nvl': a catalog name as a prefix of one token, longest first.
        for candidate in sorted(CATALOG, key=lambda m: -len(m.name)):
            if any(t.startswith(candidate.name) for t in tokens):
                model = candidate
                break
    if model is None:
        return None
    memory = model.memory_gb
    form = model.default_form_factor
    for token in tokens:
        size = re.fullmatch(r"(\d+)g(b)?", token)
        if size and int(size.group(1)) in model.memory_variants_gb:
            memory = int(size.group(1))
        for factor in model.form_factors:
            if token.startswith(factor) or token.endswith(factor):
                form = factor
    return InstanceType(model=model.name, memory_gb=memory, form_factor=form, count=1)


def gpu_of(gres: GpuGres, configured: InstanceType | None) -> InstanceType:
    """What one GPU of a GRES entry is: the model its type names, else the provider's gpu_type
    setting for untyped GRES, else an honest unknown (model = the GRES type or 'gpu', 0 GB)."""
    if gres.type is not None:
        known = model_of_gres_type(gres.type)
        if known is not None:
            return known
        return InstanceType(
            model=gres.type.lower(), memory_gb=UNKNOWN_GPU_MEMORY, form_factor=UNKNOWN_FORM_FACTOR, count=1
        )
    if configured is not None:
        return configured
    return InstanceType(model=GENERIC_GPU, memory_gb=UNKNOWN_GPU_MEMORY, form_factor=UNKNOWN_FORM_FACTOR, count=1)


# --- sinfo -----------------------------------------------------------------------------------

SINFO_FORMAT: Final = "%N|%P|%a|%G|%t|%c|%m"
UNUSABLE_NODE_STATES: Final = ("down", "drain", "drng", "fail", "failg", "maint", "unk", "npc", "boot", "inval", "futr")


@frozen
class NodeGpus:
    """One kind of GPU GRES in a partition, and how many usable nodes have it."""

    gres_type: str | None
    per_node: int
    nodes: int


@frozen
class Partition:
    name: str
    default: bool
    up: bool
    nodes: int  # usable nodes (not down, drained, failed, ...)
    cpus: int  # the most CPUs of one node
    memory_mb: int  # the most memory of one node
    gpus: tuple[NodeGpus, ...] = ()


def _usable(state: str) -> bool:
    plain = state.rstrip("*~#!%$@^-").lower()
    return not any(plain.startswith(bad) for bad in UNUSABLE_NODE_STATES)


def parse_sinfo(text: str) -> tuple[Partition, ...]:
    """`sinfo -h -N -o '%N|%P|%a|%G|%t|%c|%m'` (one line per node and partition) as partitions,
    in the order sinfo lists them."""
    order: list[str] = []
    default: set[str] = set()
    up: dict[str, bool] = {}
    nodes: dict[str, set[str]] = {}
    cpus: dict[str, int] = {}
    memory: dict[str, int] = {}
    gpus: dict[str, dict[tuple[str | None, int], set[str]]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 7:
            continue
        node, part, avail, gres, state, cpu, mem = parts
        if part.endswith("*"):
            part = part[:-1]
            default.add(part)
        if part not in up:
            order.append(part)
            up[part] = avail.lower() == "up"
            nodes[part] = set()
            gpus[part] = {}
            cpus[part] = memory[part] = 0
        if not _usable(state):
            continue
        nodes[part].add(node)
        cpus[part] = max(cpus[part], int(cpu) if cpu.isdigit() else 0)
        memory[part] = max(memory[part], int(mem) if mem.isdigit() else 0)
        gpu, _ = parse_gres(gres)
        if gpu is not None and gpu.count > 0:
            gpus[part].setdefault((gpu.type, gpu.count), set()).add(node)
    return tuple(
        Partition(
            name=name,
            default=name in default,
            up=up[name],
            nodes=len(nodes[name]) if up[name] else 0,
            cpus=cpus[name],
            memory_mb=memory[name],
            gpus=tuple(
                NodeGpus(gres_type=kind, per_node=count, nodes=len(members) if up[name] else 0)
                for (kind, count), members in sorted(gpus[name].items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
            ),
        )
        for name in order
    )


@frozen
class SlurmOffer:
    """An offer and the GRES request that gets it on this cluster."""

    offer: Offer
    partition: str
    gres: str | None  # "gpu:2" or "gpu:a100:2"; None for CPUs only


def offers_of(
    partitions: Iterable[Partition], provider: str, configured_gpu: InstanceType | None
) -> tuple[SlurmOffer, ...]:
    """Every instance type each partition can run, as offers: the CPUs of a node, and 1..N GPUs
    of each kind of GPU node (a job may ask for fewer GPUs than a node has). Price 0 (your own
    cluster); region = the partition; available = usable nodes that fit."""
    found: list[SlurmOffer] = []
    for part in partitions:
        found.append(
            SlurmOffer(
                offer=Offer(
                    offer_id=f"{part.name}/cpu",
                    provider=provider,
                    instance_type=CPU_INSTANCE,
                    price_per_hour_micros=0,
                    region=part.name,
                    available=part.nodes,
                ),
                partition=part.name,
                gres=None,
            )
        )
        for kind in part.gpus:
            one = gpu_of(GpuGres(count=1, type=kind.gres_type), configured_gpu)
            for count in range(1, kind.per_node + 1):
                fits = sum(k.nodes for k in part.gpus if k.gres_type == kind.gres_type and k.per_node >= count)
                gres = f"gpu:{kind.gres_type}:{count}" if kind.gres_type else f"gpu:{count}"
                offer_id = f"{part.name}/{gres}"
                if any(o.offer.offer_id == offer_id for o in found):
                    continue
                found.append(
                    SlurmOffer(
                        offer=Offer(
                            offer_id=offer_id,
                            provider=provider,
                            instance_type=InstanceType(one.model, one.memory_gb, one.form_factor, count),
                            price_per_hour_micros=0,
                            region=part.name,
                            available=fits,
                        ),
                        partition=part.name,
                        gres=gres,
                    )
                )
    return tuple(found)


@frozen
class ClusterConfig:
    """What `scontrol show config` says about where finished jobs are recorded."""

    accounting: bool = False
    jobcomp_file: str | None = None
    min_job_age: int | None = None


def parse_scontrol_config(text: str) -> ClusterConfig:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    storage = values.get("AccountingStorageType", "")
    jobcomp = values.get("JobCompType", "")
    location = values.get("JobCompLoc", "")
    age = values.get("MinJobAge", "").split(" ")[0]
    return ClusterConfig(
        accounting=bool(storage) and not storage.endswith("/none"),
        jobcomp_file=location if jobcomp.endswith("/filetxt") and location.startswith("/") else None,
        min_job_age=int(age) if age.isdigit() else None,
    )
