"""The bash scripts the slurm provider runs on the cluster (on the login node, locally or over
SSH), and readers for what they print.

Each provider action is one script fed to `bash -s`, so it costs one process (or one SSH exec)
whatever the number of tasks: one poll asks squeue about every live job at once, reads every exit
marker and, over SSH, every log's new bytes. Every value from outside (paths, names, digests) is
quoted with shlex.quote; the output uses a line protocol of `@@flow ...` records, with byte counts
before binary payloads, so any bytes a task prints survive.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable, Sequence
from typing import Final

from attrs import frozen

from flow.domain.code.manifest import ManifestEntry
from flow.domain.slurm.sbatch import ELEMENT_TASK_FILE, EXIT_FILE, JOB_FILE, JOB_ID_FILE, OUTPUT_FILE, RESULT_FILE
from flow.domain.slurm.states import SACCT_FIELDS, SINFO_FORMAT, SQUEUE_FORMAT
from flow.domain.task.config import TaskConfig
from flow.domain.task.dependencies import Dependency, render_slurm_dependency
from flow.domain.task.task_files import TIMED_OUT as TIMED_OUT_FILE

RECORD: Final = b"@@flow "
# Per poll, at most this many new log bytes of one task travel (the rest follows next poll).
MAX_LOG_BYTES_PER_POLL: Final = 1 << 20
# Lines of `mkdir -p`/`chmod` arguments: well under any ARG_MAX.
_ARGS_PER_COMMAND: Final = 200

q = shlex.quote


def prelude(slurm_conf: str | None, bin_dir: str | None) -> str:
    """Lines every script starts with: the cluster's Slurm config and tool directory, if set."""
    lines = []
    if slurm_conf:
        lines.append(f"export SLURM_CONF={q(slurm_conf)}")
    if bin_dir:
        lines.append(f'export PATH={q(bin_dir)}:"$PATH"')
    return "\n".join(lines) + ("\n" if lines else "")


def _chunks(items: Sequence[str], size: int = _ARGS_PER_COMMAND) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- code snapshots --------------------------------------------------------------------------


def missing_blobs_script(blob_dir: str, digests: Iterable[str]) -> str:
    """Prints the digests (hex) the cluster's blob store lacks: `[ -f ]` is a shell builtin, so
    this costs one process for any number of blobs, and only the missing ones travel back."""
    hexes = sorted({d.removeprefix("sha256:") for d in digests})
    words = " ".join(q(h) for h in hexes)
    return (
        f"cd -- {q(blob_dir)} 2>/dev/null || {{ printf '%s\\n' {words}; exit 0; }}\n"
        f'for d in {words}; do [ -f "$d" ] || printf \'%s\\n\' "$d"; done\n'
    )


def snapshot_lines(blob_dir: str, code_dir: str, entries: Sequence[ManifestEntry]) -> list[str]:
    """Lines that build a task's private copy of its code snapshot from the blob store."""
    lines = [f"rm -rf -- {q(code_dir)}", f"mkdir -p -- {q(code_dir)}"]
    dirs = sorted({f"{code_dir}/{e.path.rsplit('/', 1)[0]}" for e in entries if "/" in e.path})
    for group in _chunks(dirs):
        lines.append("mkdir -p -- " + " ".join(q(d) for d in group))
    for e in entries:
        source = f"{blob_dir}/{e.digest.removeprefix('sha256:')}"
        lines.append(f"cp -- {q(source)} {q(code_dir + '/' + e.path)} || exit 93")
    executables = [f"{code_dir}/{e.path}" for e in entries if e.executable]
    for group in _chunks(executables):
        lines.append("chmod 700 -- " + " ".join(q(p) for p in group))
    return lines


@frozen
class Scheduling:
    """What Slurm schedules for a task itself (TaskConfig.depends_on on jobs of its cluster,
    start_after, priority), as sbatch options. `after_jobs`: the jobs --dependency names."""

    options: tuple[str, ...] = ()
    after_jobs: tuple[str, ...] = ()
    nice: int | None = None  # negative (a raised priority) only privileged users may set

    @property
    def plain(self) -> bool:
        """Nothing to schedule: a bare sbatch submits the job."""
        return not self.options and not self.after_jobs and self.nice is None


def scheduling_of(config: TaskConfig, after: Sequence[tuple[Dependency, str]], now: float) -> Scheduling:
    """--dependency for the conditions on jobs of this cluster (`after`: each with its job id),
    --begin relative to `now` (the cluster's clock and time zone are not flowd's), and --nice
    for priority: Slurm adds the negated nice to a job's priority, so priority p is --nice=-p."""
    options: list[str] = []
    if after:
        job_of = {dep.task_id: job for dep, job in after}
        options.append(f"--dependency={render_slurm_dependency([dep for dep, _ in after], job_of)}")
    if config.start_after is not None and config.start_after > now:
        options.append(f"--begin=now+{math.ceil(config.start_after - now)}")
    return Scheduling(
        options=tuple(options),
        after_jobs=tuple(dict.fromkeys(job for _, job in after)),
        nice=-config.priority if config.priority else None,
    )


@frozen
class ElementRegistration:
    """An array element taken by a Flow task: the element's directory under the array's holds
    the task's id and name (the job script reads them), and the task's own directory is a link
    to it, so everything Flow reads of a task (exit status, output) is where it always is."""

    array_dir: str
    index: int
    task_id: str
    task_name: str
    task_dir: str  # <work_dir>/tasks/<task_id>, made a link to <array_dir>/<index>

    @property
    def element_dir(self) -> str:
        return f"{self.array_dir}/{self.index}"


def registration_lines(r: ElementRegistration) -> list[str]:
    e = r.element_dir
    task = f"{e}/{ELEMENT_TASK_FILE}"
    return [
        f"mkdir -p -- {q(e)} {q(r.task_dir.rsplit('/', 1)[0])} || exit 90",
        f"printf '%s %s\\n' {q(r.task_id)} {q(r.task_name)} > {q(task + '.tmp')} || exit 90",
        f"mv -f -- {q(task + '.tmp')} {q(task)} || exit 90",
        f"ln -sfn -- {q(e)} {q(r.task_dir)} || exit 90",
    ]


def register_script(r: ElementRegistration) -> str:
    """Registers a further element of an array already submitted; prints the array's job id."""
    job_id = q(f"{r.array_dir}/{JOB_ID_FILE}")
    lines = [f"[ -s {job_id} ] || exit {ARRAY_NOT_SUBMITTED}", *registration_lines(r), f"cat -- {job_id}", ""]
    return "\n".join(["umask 077", *lines])


@frozen
class SubmitPlan:
    """What one submission does on the cluster (all paths absolute, on the cluster). For an
    array, `task_dir` is the array's directory, and `register` the element submitting it."""

    task_dir: str
    submit_dir: str  # where sbatch runs: the job's SLURM_SUBMIT_DIR (the code snapshot)
    pack: str | None = None  # an uploaded tar of new blobs (blobs/) and task files (task/)
    blob_dir: str | None = None
    snapshot: tuple[ManifestEntry, ...] | None = None  # materialized from blob_dir into code_dir
    code_dir: str | None = None
    check_dir: str | None = None  # a working directory that must exist before submitting
    make_work_dir: str | None = None
    run: int = 0  # how many runs of the task came before this one (TaskRecord.attempts)
    scheduling: Scheduling = Scheduling()
    register: ElementRegistration | None = None
    element_dirs: tuple[str, ...] = ()  # made before sbatch: Slurm opens each element's output there
    output_dirs: tuple[str, ...] = ()  # the directories of the script's own output files


# Exit statuses of the submit script, each with what went wrong.
SUBMIT_ERRORS: Final = {
    90: "cannot create the task's directory on the cluster",
    91: "cannot unpack the uploaded code on the cluster",
    93: "cannot build the code snapshot on the cluster",
    94: "the working directory does not exist in the code snapshot",
    95: "sbatch refused the job",
    96: "the cluster no longer knows a job this one was to wait for",
    97: "the array job this element belongs to was never submitted",
}
DEPENDENCY_FORGOTTEN: Final = 96
ARRAY_NOT_SUBMITTED: Final = 97


def job_id_file_name(run: int) -> str:
    """Where the job id of a task's run is kept (in its task directory): one file per run, so a
    run submits once however often its submission is retried, and a new run submits anew."""
    return f"{JOB_ID_FILE}.{run}" if run else JOB_ID_FILE


def submit_script(plan: SubmitPlan) -> str:
    """Unpacks what was uploaded, builds the snapshot and runs sbatch; prints the job id.
    Idempotent: a run already submitted (its job id file exists) prints that id again. A task that
    runs again (max_retries) has one job id file per run, and its new run starts without the
    previous run's exit marker, time-out mark and result (TaskDir.clear_run, on the cluster)."""
    td = q(plan.task_dir)
    job_id_file = f"{td}/{job_id_file_name(plan.run)}"
    lines = ["umask 077", f"mkdir -p -- {td} || exit 90"]
    if plan.register is not None:
        lines += registration_lines(plan.register)
    lines.append(f"if [ -s {job_id_file} ]; then cat -- {job_id_file}; exit 0; fi")
    if plan.run:
        lines.append(f"rm -f -- {td}/{EXIT_FILE} {td}/{TIMED_OUT_FILE} {td}/{RESULT_FILE}")
    if plan.pack is not None:
        assert plan.blob_dir is not None
        pack = q(plan.pack)
        lines += [
            f"mkdir -p -- {q(plan.blob_dir)} || exit 91",
            f"tmp=$(mktemp -d {pack}.XXXXXX) || exit 91",
            f'tar -xf {pack} -C "$tmp" || exit 91',
            # Blobs are whole before they are renamed into the store (a rename is atomic), so
            # a blob that exists there is always complete.
            f'if [ -d "$tmp/blobs" ]; then find "$tmp/blobs" -type f -exec mv -f -t {q(plan.blob_dir)} -- {{}} + '
            "|| exit 91; fi",
            f'if [ -d "$tmp/task" ]; then cp -pR -- "$tmp/task/." {td}/ || exit 91; fi',
            f'rm -rf -- "$tmp" {pack}',
        ]
    if plan.snapshot is not None:
        assert plan.blob_dir is not None and plan.code_dir is not None
        lines += snapshot_lines(plan.blob_dir, plan.code_dir, plan.snapshot)
    if plan.make_work_dir is not None:
        lines.append(f"mkdir -p -- {q(plan.make_work_dir)} || exit 90")
    if plan.check_dir is not None:
        lines.append(f"[ -d {q(plan.check_dir)} ] || exit 94")
    for group in _chunks((*plan.element_dirs, *plan.output_dirs)):
        lines.append("mkdir -p -- " + " ".join(q(d) for d in group) + " || exit 90")
    lines.append(f"cd -- {q(plan.submit_dir)} || exit 94")
    lines += _sbatch_lines(plan.scheduling, f"{td}/{JOB_FILE}", f"{td}/sbatch.err")
    lines += [
        f"printf '%s\\n' \"$jid\" > {job_id_file}.tmp && mv -f -- {job_id_file}.tmp {job_id_file}",
        "printf '%s\\n' \"$jid\"",
    ]
    return "\n".join(lines) + "\n"


def _sbatch_lines(scheduling: Scheduling, job_file: str, err: str) -> list[str]:
    """sbatch, setting $jid. With a dependency the job is submitted held, and released only once
    `scontrol show job` lists every job it waits for: Slurm takes a dependency on a job it has
    already forgotten (MinJobAge) as met, so an unchecked one could run a job whose dependency
    failed; exit 96 instead (the job is gone again), and flowd decides once it learns the end.
    A raised priority (negative --nice) is Slurm's to refuse an unprivileged user: then the job
    is submitted at the default."""
    options = [q(o) for o in scheduling.options] + (["--hold"] if scheduling.after_jobs else [])
    plain = " ".join(["sbatch", "--parsable", *options, "--", job_file])
    nice = scheduling.nice
    if nice is None:
        lines = [f"out=$({plain}) || exit 95"]
    else:
        niced = " ".join(["sbatch", "--parsable", *options, f"--nice={nice}", "--", job_file])
        lines = [f"out=$({niced}) || exit 95"]
        if nice < 0:
            lines = [
                f"if ! out=$({niced} 2>{err}); then",
                f"  if grep -q -- --nice {err}; then out=$({plain}) || {{ rm -f -- {err}; exit 95; }}",
                f"  else cat -- {err} >&2; rm -f -- {err}; exit 95; fi",
                "fi",
                f"rm -f -- {err}",
            ]
    lines.append("jid=${out%%;*}")
    if scheduling.after_jobs:
        lines += [
            'listed=$(scontrol show job -o "$jid" 2>/dev/null) || listed=',
            f"for j in {' '.join(q(j) for j in scheduling.after_jobs)}; do",
            '  case "$listed" in *":$j("*) ;; *) scancel "$jid" 2>/dev/null; exit 96 ;; esac',
            "done",
            'scontrol release "$jid" || { scancel "$jid" 2>/dev/null; exit 96; }',
        ]
    return lines


def job_id_script(task_dir: str) -> str:
    """Prints the job id a task was submitted as (after a crash between sbatch and saving it)."""
    return f"cat -- {q(task_dir)}/{JOB_ID_FILE} 2>/dev/null || true\n"


# --- status ----------------------------------------------------------------------------------


@frozen
class PolledJob:
    task_id: str
    job_id: str
    task_dir: str
    log_offset: int | None = None  # bytes of the log already mirrored; None: do not mirror


def poll_script(jobs: Sequence[PolledJob], max_log_bytes: int = MAX_LOG_BYTES_PER_POLL) -> str:
    """ONE squeue for every job, then every exit marker, then each log's new bytes: squeue runs
    first, so a job it reports ended has its marker and its whole log read after."""
    ids = ",".join(sorted({j.job_id for j in jobs}, key=lambda i: (len(i), i)))
    lines = [
        f"squeue -h -t all -j {q(ids)} -o {q(SQUEUE_FORMAT)}",
        'echo "@@flow squeue $?"',
    ]
    for j in jobs:
        marker = q(f"{j.task_dir}/{EXIT_FILE}")
        lines.append(
            f'if [ -s {marker} ]; then x=; read -r x < {marker} || true; echo "@@flow exit {j.task_id} $x"; fi'
        )
    mirrored = [j for j in jobs if j.log_offset is not None]
    if mirrored:
        offsets = " ".join(f"[{q(j.task_dir + '/' + OUTPUT_FILE)}]={int(j.log_offset or 0)}" for j in mirrored)
        owners = " ".join(f"[{q(j.task_dir + '/' + OUTPUT_FILE)}]={q(j.task_id)}" for j in mirrored)
        files = " ".join(q(j.task_dir + "/" + OUTPUT_FILE) for j in mirrored)
        lines += [
            f"declare -A off=({offsets}) owner=({owners})",
            "while read -r size path; do",
            '  o=${off[$path]:-0}; [ "$size" -gt "$o" ] || continue',
            f'  n=$((size - o)); [ "$n" -gt {int(max_log_bytes)} ] && n={int(max_log_bytes)}',
            '  echo "@@flow log ${owner[$path]} $o $n $size"',
            '  tail -c +$((o + 1)) -- "$path" | head -c "$n"',
            f"done < <(stat -L -c '%s %n' -- {files} 2>/dev/null)",  # -L: a task's output may be a link
        ]
    lines.append('echo "@@flow end"')
    return "\n".join(lines) + "\n"


@frozen
class LogChunk:
    offset: int
    data: bytes
    size: int  # the file's size when it was read

    @property
    def complete(self) -> bool:
        return self.offset + len(self.data) >= self.size


@frozen
class PollOutput:
    squeue: str
    squeue_rc: int | None
    exits: dict[str, int | None]
    logs: dict[str, LogChunk]
    complete: bool  # the script ran to its end (a cut connection leaves this False)


def parse_poll_output(data: bytes) -> PollOutput:
    squeue: list[bytes] = []
    rc: int | None = None
    exits: dict[str, int | None] = {}
    logs: dict[str, LogChunk] = {}
    complete = False
    pos = 0
    in_squeue = True
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break
        line = data[pos:end]
        pos = end + 1
        if not line.startswith(RECORD):
            if in_squeue:
                squeue.append(line)
            continue
        words = line[len(RECORD) :].decode("utf-8", "replace").split(" ")
        kind = words[0]
        if kind == "squeue" and len(words) == 2:
            in_squeue = False
            rc = int(words[1]) if words[1].lstrip("-").isdigit() else None
        elif kind == "exit" and len(words) >= 2:
            value = words[2].strip() if len(words) > 2 else ""
            exits[words[1]] = int(value) if value.lstrip("-").isdigit() else None
        elif kind == "log" and len(words) == 5 and all(w.isdigit() for w in words[2:]):
            offset, count, size = int(words[2]), int(words[3]), int(words[4])
            chunk = data[pos : pos + count]
            if len(chunk) < count:
                break  # cut short: take nothing of it
            logs[words[1]] = LogChunk(offset=offset, data=chunk, size=size)
            pos += count
        elif kind == "end":
            complete = True
    return PollOutput(
        squeue=b"\n".join(squeue).decode("utf-8", "replace"),
        squeue_rc=rc,
        exits=exits,
        logs=logs,
        complete=complete,
    )


def final_states_script(job_ids: Sequence[str], accounting: bool, jobcomp_file: str | None) -> str:
    """How jobs that left squeue's view ended: sacct where accounting exists, and the
    jobcomp/filetxt log (one grep over the file for all of them)."""
    ids = sorted(set(job_ids), key=lambda i: (len(i), i))
    lines = []
    if accounting:
        lines += [
            "echo '@@flow sacct'",
            f"sacct -n -P -X -j {q(','.join(ids))} -o {q(SACCT_FIELDS)} 2>/dev/null",
        ]
    if jobcomp_file:
        plain = [i for i in ids if i.isdigit()]
        elements = [i.split("_", 1) for i in ids if "_" in i]
        patterns = ["^JobId=(" + "|".join(plain) + ") "] if plain else []
        patterns += [f" ArrayJobId={a} ArrayTaskId={k} " for a, k in elements]  # an array element's record
        args = " ".join(f"-e {q(p)}" for p in patterns)
        lines += ["echo '@@flow jobcomp'", f"grep -E {args} -- {q(jobcomp_file)} 2>/dev/null"]
    lines.append("echo '@@flow end'")
    return "\n".join(lines) + "\n"


def split_sections(text: str) -> dict[str, str]:
    """The '@@flow NAME' sections of a script's output."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@@flow "):
            current = sections.setdefault(line[len("@@flow ") :].strip(), [])
            continue
        if current is not None:
            current.append(line)
    return {name: "\n".join(body) for name, body in sections.items()}


def cancel_script(job_ids: Sequence[str]) -> str:
    return "scancel -- " + " ".join(q(i) for i in job_ids) + "\n"


def sinfo_script() -> str:
    return f"sinfo -h -N -o {q(SINFO_FORMAT)}\n"


def config_script() -> str:
    return "scontrol show config\n"


def test_only_script(job_script: str, work_dir: str) -> str:
    """sbatch --test-only of a job script (fed on stdin: nothing is written on the cluster),
    from the provider's work directory when it exists."""
    return f"cd -- {q(work_dir)} 2>/dev/null || cd\nprintf '%s' {q(job_script)} | sbatch --test-only\n"
