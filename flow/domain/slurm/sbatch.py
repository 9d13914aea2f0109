"""#SBATCH scripts, both ways: reading an existing script's directives into TaskConfigs that run on
any provider, and writing the job script the slurm provider submits for a TaskConfig.

Reading follows sbatch itself (src/sbatch/opt.c): directives are lines that begin with `#SBATCH`
at column 0; they end at the first line holding a command (blank lines and other comments do not
end them); each line may hold several options, `--opt=value`, `--opt value`, `-N2` or `-N 2`;
quotes group, a backslash escapes, and an unquoted `#` starts a comment. Options are found as
getopt_long finds them (sbatch_options): aliases, and unambiguous prefixes of long names. Nodes,
tasks and GPUs per node come out as Slurm lays them out (layout).

Writing quotes every user value for bash (`shlex.quote`), never builds a heredoc, and writes the
program's exit status to a marker file (the durable record for clusters without sacct).
"""

from __future__ import annotations

import difflib
import math
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Final

from attrs import evolve, field, frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, ErrorReason, FieldViolation, validation_error, violation
from flow.domain.instances.instance_types import (
    InstanceType,
    parse_instance_type,
    short_name,
)
from flow.domain.slurm.gpu_requests import GpuAsk, GpuSpecProblem, parse_gpu_count, parse_gres_request
from flow.domain.slurm.layout import ONE_NODE, Layout, LayoutProblem, TaskCounts, job_layout
from flow.domain.slurm.sbatch_options import LONG_NAMES, NONE, REQUIRED, SHORT, argument_of, resolve_long
from flow.domain.slurm.states import model_of_gres_type
from flow.domain.task import task_files
from flow.domain.task.config import ENV_NAME_PATTERN, MAX_NUM_INSTANCES, NAME_PATTERN, TaskConfig, program_of
from flow.domain.task.dependencies import LocalTime, parse_begin, parse_slurm_dependency

MAGIC: Final = "#SBATCH"
OLD_MAGIC: Final = "#SLURM"
MAX_ARRAY_TASKS: Final = 1000
# Paths Flow writes into #SBATCH lines and --output patterns: nothing sbatch or bash would misread.
PLAIN_PATH: Final = re.compile(r"/[A-Za-z0-9_./+@,:=~-]*")

# Files of one task in its directory on the cluster: named once, in flow.domain.task.task_files.
JOB_FILE: Final = task_files.JOB
SCRIPT_FILE: Final = task_files.SCRIPT
OUTPUT_FILE: Final = task_files.OUTPUT
EXIT_FILE: Final = task_files.EXIT_STATUS
JOB_ID_FILE: Final = task_files.JOB_ID
CODE_DIR: Final = task_files.CODE_DIR
WORK_DIR: Final = task_files.WORK_DIR
RUNNER_FILE: Final = task_files.RUNNER
INVOCATION_FILE: Final = task_files.INVOCATION
RESULT_FILE: Final = task_files.RESULT
SECRETS_FILE: Final = task_files.SECRETS

# Nothing the program started outlives the job (the task is terminal only once all of it is gone):
# what carries the task's FLOW_TASK_ID in its environment is killed once the program has ended,
# also what left the job's process tree (a shell's background job, a daemon), which Slurm's
# proctrack/linuxproc does not follow. One grep reads every environ (a grep per process took
# seconds on a busy node, and delayed the job's end, and so its dependents); the list is taken
# before the grep and the subshell start, so neither is in it.
LEFTOVERS_KILLED: Final = (
    "set -- /proc/[0-9]*/environ; "
    'for e in $(grep -lxzF "FLOW_TASK_ID=$FLOW_TASK_ID" "$@" 2>/dev/null); do p=${e#/proc/}; p=${p%/environ}; '
    '[ "$p" = "$$" ] || kill -KILL "$p" 2>/dev/null; done'
)

# --- what Flow does with each option ---------------------------------------------------------

# Read into TaskConfig fields (or, for the task counts, used to work out nodes and GPUs per node).
MAPPED: Final = frozenset(
    {
        "job-name",
        "gres",
        "gpus",
        "gpus-per-node",
        "gpus-per-task",
        "nodes",
        "ntasks",
        "ntasks-per-node",
        "cpus-per-task",
        "mem",
        "time",
        "output",
        "error",
        "array",
        "export",
        "chdir",
    }
)
# Directives that make no sense in a script Flow runs: refused with a reason.
REFUSED: Final[Mapping[str, str]] = {
    "wrap": "--wrap only exists on the sbatch command line; put the command in the script body",
    "test-only": "--test-only would never run the job; use `flow run --dry-run` to validate",
    "wait": "--wait blocks sbatch; Flow already follows the task (flow logs -f, flow wait)",
    "batch": "--batch selects node features for a federation; not supported",
    "uid": "--uid submits as another user; run Flow as that user",
    "gid": "--gid submits as another group; run Flow as that user",
    "help": "--help makes sbatch print its help and submit nothing; remove it",
    "usage": "--usage makes sbatch print its usage and submit nothing; remove it",
    "version": "--version makes sbatch print its version and submit nothing; remove it",
}
# Directives the task counts only matter to Slurm: they are native-only, but also parsed.
_TASK_COUNTS: Final = ("ntasks", "ntasks-per-node", "cpus-per-task")
# Read, and also only Slurm's: the task counts, and the files Slurm writes the job's output to
# (elsewhere the output is the task's log).
_NATIVE_TOO: Final = frozenset({*_TASK_COUNTS, "output", "error"})
_GPU_OPTIONS: Final = ("gres", "gpus", "gpus-per-node", "gpus-per-task")
_MEMORY_OPTIONS: Final = ("mem", "mem-per-cpu", "mem-per-gpu")
# Directives that decide how many nodes Slurm allocates: with any of them in the script, the
# slurm provider adds no --nodes of its own (Slurm derives the count as the script means it).
LAYOUT_OPTIONS: Final = frozenset(
    {"nodes", "ntasks", "ntasks-per-node", "gpus", "gpus-per-task", "ntasks-per-gpu", "cpus-per-task", "nodelist"}
)


@frozen
class Directive:
    """One option of an #SBATCH line: its long name (the table's, for an alias or a prefix), its
    value (None for flags), the line, and how it was written. `tokens` are the indices of the
    line's arguments it took; `bundle_at`, where its letter starts in a bundle such as -Ha."""

    option: str
    value: str | None
    line: int
    spelled: str  # as written: "-t", "--time", "--tim", "--tasks-per-node"
    tokens: tuple[int, int] = (0, 0)
    bundle_at: int = 0

    @property
    def label(self) -> str:
        shown = self.spelled if self.value is None else f"{self.spelled} {self.value}"
        return f"#SBATCH {shown} (line {self.line})"

    @property
    def field(self) -> str:
        return f"#SBATCH {self.spelled} (line {self.line})"


@frozen
class SbatchScript:
    """The directives of a script, where they end, and any problems reading them."""

    directives: tuple[Directive, ...]
    directive_lines: tuple[int, ...]  # 1-based numbers of the #SBATCH lines
    problems: tuple[FieldViolation, ...] = ()
    warnings: tuple[str, ...] = ()


def _tokens(text: str) -> tuple[list[str], str | None]:
    """sbatch's _get_argument over one directive line: the arguments, or why it is unreadable."""
    found: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return found, None
        current: list[str] = []
        quote = ""
        escaped = False
        has = False
        while i < n and (quote or not text[i].isspace()):
            ch = text[i]
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
                i += 1
                continue
            elif quote:
                if ch == quote:
                    quote = ""
                    i += 1
                    continue
            elif ch in "\"'":
                quote = ch
                has = True
                i += 1
                continue
            elif ch == "#":
                if has or current:
                    found.append("".join(current))
                return found, None
            current.append(ch)
            has = True
            i += 1
        if quote:
            return found, f"has an unmatched {quote}"
        if has or current:
            found.append("".join(current))


def _long_option(token: str, line: int, out: list[FieldViolation]) -> tuple[str, str, str, bool] | None:
    """`--name[=value]` as getopt_long reads it: (option, name as written, value, has '='), or
    None after reporting why it names no option."""
    written, eq, value = token[2:].partition("=")
    field_name = f"#SBATCH --{written} (line {line})"
    found = resolve_long(written)
    if found.ambiguous:
        shown = ", ".join(f"--{c}" for c in found.candidates)
        fix = "write more of the name, e.g. " + " or ".join(f"--{c}" for c in found.candidates[:2])
        out.append(violation(field_name, token, f"is ambiguous: it could be {shown}", fix))
        return None
    if found.option is None:
        close = difflib.get_close_matches(written, list(LONG_NAMES), n=1)
        fix = f"did you mean --{close[0]}?" if close else "see `man sbatch` for the options it knows"
        out.append(violation(field_name, token, "is not an sbatch option", fix))
        return None
    return found.option, written, value, bool(eq)


def _getopt(tokens: list[str], line: int, out: list[FieldViolation]) -> list[Directive]:
    """getopt_long over one line's arguments (a line's last option may not take the next line's
    argument: sbatch passes all lines at once, but nobody writes a value on the next line)."""
    found: list[Directive] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        first = i
        i += 1
        if token.startswith("--") and len(token) > 2:
            read = _long_option(token, line, out)
            if read is None:
                continue
            name, written, value, eq = read
            arg = argument_of(name)
            if arg == NONE and eq:
                fix = f"write just --{written}"
                out.append(violation(f"#SBATCH --{written} (line {line})", token, "takes no value", fix))
                continue
            if arg == REQUIRED and not eq:
                if i >= len(tokens):
                    fix = f"write --{written}=VALUE"
                    out.append(violation(f"#SBATCH --{written} (line {line})", token, "needs a value", fix))
                    continue
                value, eq = tokens[i], True
                i += 1
            found.append(
                Directive(
                    option=name,
                    value=value if eq else None,
                    line=line,
                    spelled=f"--{written}",
                    tokens=(first, i - 1),
                )
            )
        elif token.startswith("-") and len(token) > 1 and token != "--":
            j = 1
            while j < len(token):
                letter = token[j]
                name = SHORT.get(letter, "")
                if not name:
                    fix = "see `man sbatch` for the options it knows"
                    out.append(violation(f"#SBATCH -{letter} (line {line})", token, "is not an sbatch option", fix))
                    break
                arg = argument_of(name)
                if arg == NONE or (arg != REQUIRED and j + 1 >= len(token)):
                    found.append(
                        Directive(
                            option=name, value=None, line=line, spelled=f"-{letter}", tokens=(first, first), bundle_at=j
                        )
                    )
                    j += 1
                    continue
                value = token[j + 1 :]
                if not value and arg == REQUIRED:
                    if i >= len(tokens):
                        fix = f"write -{letter} VALUE"
                        out.append(violation(f"#SBATCH -{letter} (line {line})", token, "needs a value", fix))
                        break
                    value = tokens[i]
                    i += 1
                found.append(
                    Directive(
                        option=name, value=value, line=line, spelled=f"-{letter}", tokens=(first, i - 1), bundle_at=j
                    )
                )
                break
        else:
            fix = "write options such as --time=10 or -N 2; put commands below the directives"
            out.append(violation(f"#SBATCH (line {line})", token, "is not an option", fix))
    return found


def read_directives(text: str) -> SbatchScript:
    """The #SBATCH directives of a script, as sbatch reads them."""
    directives: list[Directive] = []
    lines: list[int] = []
    problems: list[FieldViolation] = []
    warnings: list[str] = []
    for number, line in enumerate(text.split("\n"), 1):
        if line.startswith(MAGIC):
            rest = line[len(MAGIC) :]
        elif line.startswith(OLD_MAGIC):
            rest = line[len(OLD_MAGIC) :]
            if not warnings:
                warnings.append(
                    f"line {number}: #SLURM is an old spelling of #SBATCH; write #SBATCH (sbatch warns too)"
                )
        else:
            stripped = line.lstrip()
            if stripped and not stripped.startswith("#"):
                break  # the first command ends the directives
            continue
        lines.append(number)
        if re.search(r"\b(hetjob|packjob)\b", rest, re.IGNORECASE):
            fix = "split the heterogeneous job into separate scripts (one task each)"
            problems.append(
                violation(f"#SBATCH (line {number})", rest.strip(), "heterogeneous jobs are not supported", fix)
            )
            continue
        tokens, problem = _tokens(rest)
        if problem:
            fix = "close the quote, or escape it with a backslash"
            problems.append(violation(f"#SBATCH (line {number})", rest.strip(), problem, fix))
            continue
        directives.extend(_getopt(tokens, number, problems))
    return SbatchScript(
        directives=tuple(directives),
        directive_lines=tuple(lines),
        problems=tuple(problems),
        warnings=tuple(warnings),
    )


def has_directives(script: str | None) -> bool:
    """Whether a script carries #SBATCH directives (the slurm provider then honours them)."""
    return bool(script) and bool(read_directives(script or "").directive_lines)


# --- values ----------------------------------------------------------------------------------


def parse_time_minutes(text: str) -> int | None:
    """An sbatch --time as whole minutes (rounded up): 'M', 'M:S', 'H:M:S', 'D-H', 'D-H:M',
    'D-H:M:S'; 0 for 'UNLIMITED'/'INFINITE'. None when it is none of these."""
    value = text.strip()
    if value.lower() in ("unlimited", "infinite", "-1"):
        return 0
    days = 0
    if "-" in value:
        head, _, value = value.partition("-")
        if not head.isdigit():
            return None
        days = int(head)
        parts = value.split(":")
        if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
            return None
        hours, minutes, seconds = ([int(p) for p in parts] + [0, 0])[:3]
    else:
        parts = value.split(":")
        if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
            return None
        numbers = [int(p) for p in parts]
        if len(numbers) == 1:
            hours, minutes, seconds = 0, numbers[0], 0
        elif len(numbers) == 2:
            hours, minutes, seconds = 0, numbers[0], numbers[1]
        else:
            hours, minutes, seconds = numbers
    return days * 1440 + hours * 60 + minutes + math.ceil(seconds / 60)


def parse_memory_mb(text: str) -> int | None:
    """An sbatch --mem ('4000', '32G', '500M', '1T', '2048K') in MB; None when unreadable."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)B?\s*", text, re.IGNORECASE)
    if match is None:
        return None
    number, unit = int(match.group(1)), match.group(2).upper()
    factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    return math.ceil(number * factor)


def parse_array(text: str) -> tuple[tuple[int, ...], int | None, int | None] | None:
    """An --array spec ('0-15', '1,3,5', '0-15:4', '1-5%2') as (indices, step, throttle)."""
    spec, _, throttle_text = text.strip().partition("%")
    throttle = None
    if throttle_text:
        if not throttle_text.isdigit():
            return None
        throttle = int(throttle_text)
    indices: set[int] = set()
    step_seen = None
    items = spec.split(",")
    for item in items:
        match = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", item.strip())
        if match is None:
            return None
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else start
        step = int(match.group(3)) if match.group(3) else 1
        if end < start or step < 1 or (end - start) // step >= MAX_ARRAY_TASKS:
            return None
        indices.update(range(start, end + 1, step))
        if match.group(3) and len(items) == 1:
            step_seen = step  # Slurm sets SLURM_ARRAY_TASK_STEP for a single stepped range only
        if len(indices) > MAX_ARRAY_TASKS:
            return None
    return tuple(sorted(indices)), step_seen, throttle


def task_name_for(text: str) -> str:
    """A valid task name for a job name or file name (letters, digits, - and _; at most 63), or
    "" when nothing of it is usable: 'gpt-1.3b-pretrain' -> 'gpt-1-3b-pretrain'."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")[:63]
    return name if name and NAME_PATTERN.fullmatch(name) else ""


# --- sbatch script -> TaskConfigs -----------------------------------------------------------


@frozen
class ArraySpec:
    """A script's --array: its elements, its step (Slurm's SLURM_ARRAY_TASK_STEP) and throttle."""

    indices: tuple[int, ...]
    step: int | None
    throttle: int | None
    directive: Directive


@frozen
class SbatchJob:
    """What an sbatch script asks for, as Flow tasks (one per --array element)."""

    configs: tuple[TaskConfig, ...]
    directives: tuple[Directive, ...]
    warnings: tuple[str, ...] = ()
    # Directives only Slurm honours (partition, ntasks, mail, ...): the slurm provider keeps them
    # in the script it submits; other providers ignore them (the caller warns).
    native_only: tuple[Directive, ...] = ()
    # GPUs per node asked for without a model Flow knows (an untyped `--gres=gpu:2`, or a type
    # such as a800 that names no catalog model): fine on Slurm, where the directive itself is
    # submitted; other providers need an instance type (gpu_model_needed says so).
    generic_gpus: int | None = None
    gpu_directive: Directive | None = None
    gpu_type: str | None = None  # the type the script names when Flow does not know it ("a800")
    # The job's own name, as written (Slurm's job name, SLURM_JOB_NAME); each task's `name` is a
    # valid task name derived from it (or from the file's name).
    job_name: str | None = None
    layout: Layout = ONE_NODE
    array: ArraySpec | None = None
    # -i/--instance-type given at submission, which replaces what the script asks for.
    instance_type_override: str | None = None
    # The job as one task, before --array makes one per element: its script is the file as it
    # is (an -i edits only its GPU directives), --array included. None: configs[0].
    base: TaskConfig | None = None


def _quote_for_directive(token: str) -> str:
    """A token as sbatch's directive reader reads it back."""
    if token and not re.search(r"[\s\"'#\\]", token):
        return token
    return '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'


@frozen
class Edit:
    """One option of a script's #SBATCH lines replaced by other tokens (none: taken out)."""

    directive: Directive
    tokens: tuple[str, ...] = ()
    note: str = ""


def _edited(script: str, edits: Sequence[Edit]) -> str:
    """The script with each edit made on its #SBATCH line, and the edits' notes after the line;
    a line left with no option becomes a comment. Other options of the same line stay."""
    lines = script.split("\n")
    by_line: dict[int, list[tuple[Directive, tuple[str, ...]]]] = {}
    notes: dict[int, list[str]] = {}
    for edit in edits:
        by_line.setdefault(edit.directive.line, []).append((edit.directive, edit.tokens))
        if edit.note and edit.note not in notes.setdefault(edit.directive.line, []):
            notes[edit.directive.line].append(edit.note)
    for number, changes in by_line.items():
        note = "flow: " + "; ".join(notes.get(number, [])) if notes.get(number) else "flow: edited"
        line = lines[number - 1]
        magic = MAGIC if line.startswith(MAGIC) else OLD_MAGIC
        tokens, _ = _tokens(line[len(magic) :])
        kept: list[str] = []
        at = 0
        for d, replacement in sorted(changes, key=lambda c: (c[0].tokens, c[0].bundle_at)):
            first, last = d.tokens
            kept += tokens[at:first]
            if d.bundle_at > 1:  # -Ha0-3: the options before it in the bundle stay
                kept.append(tokens[first][: d.bundle_at])
            kept += replacement
            at = last + 1
        kept += tokens[at:]
        if kept:
            lines[number - 1] = f"{magic} {' '.join(_quote_for_directive(t) for t in kept)}  # {note}"
        else:
            lines[number - 1] = f"# {note}"
    return "\n".join(lines)


def _array_edit(array: Directive, index: int, count: int) -> Edit:
    """--array taken out of an element's script (each element is its own task elsewhere)."""
    return Edit(array, (), f"--array expanded into {count} tasks; this one is element {index}")


def _int_value(d: Directive, out: list[FieldViolation], what: str) -> int | None:
    value = (d.value or "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    out.append(violation(d.field, d.value, f"is not a {what}", f"give a whole number above 0, e.g. {d.spelled} 2"))
    return None


def _gpu_problem(d: Directive, problem: GpuSpecProblem, what: str) -> FieldViolation:
    return violation(d.field, d.value, f"is not a valid {what}: {problem.problem}", problem.fix)


def _gpus_in_words(count: int, model: str | None) -> str:
    if count == 0:
        return "no GPUs"
    return f"{count}x {model} per node" if model else f"{count} GPU{'s' if count != 1 else ''} per node"


def _override_warning(given: str, wanted: InstanceType, asked: int, model: str | None, by: Directive | None) -> str:
    """-i given at submission against the script's own GPU request (None when they agree)."""
    gets = _gpus_in_words(wanted.count, None if wanted.is_cpu else wanted.model)
    where = by.label if by is not None else "the script (no GPU directive)"
    return f"-i {given} overrides {where}: the script asks for {_gpus_in_words(asked, model)}; the task gets {gets}"


def sbatch_to_configs(
    text: str,
    *,
    name: str = "",
    environ: Mapping[str, str] | None = None,
    gpu_model: str | None = None,
    instance_type: str | None = None,
    node_gpus: int | None = None,
    cpus_per_node: int | None = None,
    now: float | None = None,
    local: LocalTime | None = None,
) -> Result[SbatchJob, DomainError]:
    """The Flow tasks an sbatch script asks for. The script runs as it is (`script` = the whole
    file, directives included: they are comments to bash, and the slurm provider submits them
    natively); the directives Flow understands also become TaskConfig fields, so the task runs
    the same on any provider.

    `name`: the task name when the script gives no --job-name (e.g. the file's stem).
    `environ`: the submitting environment, for `--export=NAME` without a value.
    `gpu_model`: the GPU model of untyped GPU requests (`--gres=gpu:2`), e.g. "a100".
    `instance_type`: -i given at submission; it replaces the script's GPU request, and a warning
    names both where they differ (another count, another model, GPUs for a CPU-only script).
    `node_gpus`, `cpus_per_node`: the size of the cluster's nodes, for the node count Slurm would
    derive from task and GPU counts (layout.job_layout); unknown by default.
    `now`, `local`: the time of submission and the submitter's local time (see parse_begin). With
    them, --dependency, --begin, --nice and --priority become depends_on, start_after and priority
    (and leave the script: the slurm provider passes them on from the config); without them they
    stay Slurm's alone, as other directives Flow does not map.
    """
    out: list[FieldViolation] = []
    warnings: list[str] = []
    subject = "sbatch script"
    if not text.startswith("#!"):
        first = text.split("\n", 1)[0]
        fix = "start the script with an interpreter line such as #!/bin/bash (sbatch requires it too)"
        out.append(violation("script (line 1)", first, "does not start with #!", fix))
        return Failure(validation_error(out, subject=subject))
    if "\r\n" in text:
        line = text[: text.index("\r\n")].count("\n") + 1
        fix = "convert the file to Unix line breaks, e.g. with dos2unix (sbatch refuses it too)"
        out.append(violation(f"script (line {line})", "\\r\\n", "has DOS line breaks", fix))
        return Failure(validation_error(out, subject=subject))
    read = read_directives(text)
    out.extend(read.problems)
    warnings.extend(read.warnings)
    last: dict[str, Directive] = {}
    native: list[Directive] = []
    for each in read.directives:
        if each.option in REFUSED:
            out.append(violation(each.field, each.value, "is not supported", REFUSED[each.option]))
            continue
        last[each.option] = each  # like sbatch: a later directive overrides an earlier one
        scheduled = now is not None and each.option in SCHEDULING_OPTIONS
        if (each.option not in MAPPED or each.option in _NATIVE_TOO) and not scheduled:
            native.append(each)
    d: Directive | None
    fields: dict[str, object] = {}
    job_name = last.get("job-name")
    derived = task_name_for(job_name.value or "") if job_name is not None else ""
    fields["name"] = derived or task_name_for(name) or None
    nodes: int | None = None
    if (d := last.get("nodes")) is not None:
        match = re.fullmatch(r"\s*(\d+)(?:-(\d+))?\s*", d.value or "")
        if match is None or int(match.group(1)) < 1:
            out.append(violation(d.field, d.value, "is not a node count", "give the number of nodes, e.g. --nodes=2"))
        elif match.group(2) and match.group(2) != match.group(1):
            fix = f"give a fixed count, e.g. --nodes={match.group(1)}; Flow starts one command per node"
            out.append(violation(d.field, d.value, "is a range of node counts", fix))
        else:
            nodes = int(match.group(1))
    counts: dict[str, int | None] = {}
    for option, what in (("ntasks-per-node", "task count"), ("ntasks", "task count"), ("cpus-per-task", "CPU count")):
        if (d := last.get(option)) is not None:
            counts[option] = _int_value(d, out, what)
    # GPU requests: per node (--gres, --gpus-per-node), in all (--gpus), per task (--gpus-per-task).
    asks: dict[str, tuple[Directive, GpuAsk]] = {}
    if (d := last.get("gres")) is not None:
        gres = parse_gres_request(d.value or "")
        if isinstance(gres, GpuSpecProblem):
            out.append(_gpu_problem(d, gres, "GRES"))
        else:
            if gres.others:
                native.append(d)
                others = ", ".join(gres.others)
                warnings.append(f"{d.label}: only the GPU part is understood by Flow; {others} is left to Slurm")
            if gres.gpu is not None:
                asks["gres"] = (d, gres.gpu)
    for option in ("gpus-per-node", "gpus", "gpus-per-task"):
        if (d := last.get(option)) is not None:
            parsed = parse_gpu_count(d.value or "", option)
            if isinstance(parsed, GpuSpecProblem):
                out.append(_gpu_problem(d, parsed, "GPU request"))
            else:
                asks[option] = (d, parsed)
    per_node_asks = [asks[o] for o in ("gres", "gpus-per-node") if o in asks]
    if len({ask.count for _, ask in per_node_asks}) > 1:
        shown = " and ".join(f"{asked.label} ({ask.count} per node)" for asked, ask in per_node_asks)
        first_gpu = per_node_asks[0][0]
        fix = "ask for GPUs in one way, e.g. only --gres=gpu:N"
        out.append(violation(first_gpu.field, first_gpu.value, f"disagrees with the other GPU requests: {shown}", fix))
    counted = not out  # the layout comes from counts that all read well

    def count_of(option: str) -> int | None:
        found = asks.get(option)
        return found[1].count or None if found is not None else None

    layout = job_layout(
        TaskCounts(
            nodes=nodes,
            ntasks=counts.get("ntasks"),
            ntasks_per_node=counts.get("ntasks-per-node"),
            cpus_per_task=counts.get("cpus-per-task"),
            gpus=count_of("gpus"),
            gpus_per_node=count_of("gres") or count_of("gpus-per-node"),
            gpus_per_task=count_of("gpus-per-task"),
        ),
        node_gpus=node_gpus,
        cpus_per_node=cpus_per_node,
    )
    gpu_directive = next((asks[o][0] for o in ("gres", "gpus-per-node", "gpus", "gpus-per-task") if o in asks), None)
    overrides: tuple[Edit, ...] = ()
    blame = {
        "gpus-per-node": gpu_directive,
        "ntasks": last.get("ntasks") or last.get("nodes") or last.get("ntasks-per-node"),
    }
    if isinstance(layout, tuple) or not counted:
        for problem in layout if isinstance(layout, tuple) and counted else ():
            at = last.get(problem.option) or blame.get(problem.option) or gpu_directive or read.directives[0]
            out.append(violation(at.field, at.value, problem.problem, problem.fix))
        layout = ONE_NODE
    where = last.get("nodes") or gpu_directive or last.get("ntasks")
    for note in layout.notes:
        warnings.append(f"{where.label}: {note}" if where is not None else note)
    if layout.nodes > MAX_NUM_INSTANCES:
        at = where or read.directives[0]
        fix = "ask for fewer nodes (fewer tasks, or more of them per node)"
        out.append(violation(at.field, at.value, f"comes to {layout.nodes} nodes, more than {MAX_NUM_INSTANCES}", fix))
    elif layout.nodes > 1 or nodes is not None:
        fields["num_instances"] = layout.nodes
    # The GPU model: the one type the requests name, when Flow knows it; else the provider's.
    generic_gpus = None
    unknown_type = None
    model: str | None = None
    count = layout.gpus_per_node
    if count > 0:
        types = {ask.type for _, ask in asks.values() if ask.type}
        if len(types) == 1:
            kind = next(iter(types))
            known = model_of_gres_type(kind)
            if known is None:
                unknown_type = kind
            else:
                model = short_name(known)
        elif not types:
            model = gpu_model
        if model is None:
            generic_gpus = count
    if instance_type is not None:
        given = parse_instance_type(instance_type, field="-i/--instance-type")
        if isinstance(given, Failure):
            return Failure(validation_error(list(given.failure().violations), subject=subject))
        wanted = given.unwrap()
        asked_model = model or unknown_type
        gets_model = None if wanted.is_cpu else wanted.model
        contradicts = wanted.count != count or bool(
            count and asked_model is not None and gets_model != asked_model.split("-")[0]
        )
        if contradicts:
            warnings.append(_override_warning(instance_type, wanted, count, asked_model, gpu_directive))
        if contradicts or (count and asked_model is None):
            # -i wins, as an option on sbatch's command line wins over the script's: its GPU
            # directives go (on Slurm the job asks for the instance type's GRES instead), also
            # untyped ones it agrees with, which Slurm could meet with another model.
            overrides = _gpu_override(read.directives, last, layout, counts, nodes, wanted.is_cpu, instance_type)
        fields["instance_type"] = instance_type
        generic_gpus = None
    elif model is not None:
        wanted_type = model if count == 1 else f"{count}x{model}"
        at = gpu_directive or read.directives[0]
        parsed_type = parse_instance_type(wanted_type, field=at.field)
        if isinstance(parsed_type, Failure):
            out.extend(parsed_type.failure().violations)
        else:
            fields["instance_type"] = wanted_type
    if (d := last.get("mem")) is not None:
        mb = parse_memory_mb(d.value or "")
        if mb is None:
            out.append(violation(d.field, d.value, "is not an amount of memory", "write e.g. --mem=32G or --mem=4000"))
        elif mb == 0:
            native.append(d)  # "all the node's memory": only Slurm knows what that is
        else:
            fields["memory_mb"] = mb
    if (d := last.get("time")) is not None:
        minutes = parse_time_minutes(d.value or "")
        if minutes is None:
            fix = "write minutes, H:M:S or D-H:M:S, e.g. --time=2:00:00"
            out.append(violation(d.field, d.value, "is not a time limit", fix))
        elif minutes:
            fields["max_run_time_hours"] = minutes / 60
    env: dict[str, str] = {}
    if (d := last.get("export")) is not None:
        for item in (d.value or "").split(","):
            key, eq, value = item.strip().partition("=")
            if not key or (not eq and key.upper() in ("ALL", "NONE", "NIL")):
                if key.upper() in ("NONE", "NIL"):
                    native.append(d)
                continue
            if not ENV_NAME_PATTERN.fullmatch(key):
                fix = "name variables with letters, digits and '_', e.g. --export=ALL,BATCH=256"
                out.append(violation(d.field, key, "is not an environment variable name", fix))
            elif eq:
                env[key] = value
            elif environ is not None and key in environ:
                env[key] = environ[key]
            else:
                warnings.append(f"{d.label}: {key} is not set where you submit, so the task does not get it")
    if env:
        fields["env"] = env
    if (d := last.get("chdir")) is not None:
        fields["working_dir"] = d.value
    array: ArraySpec | None = None
    if (d := last.get("array")) is not None:
        parsed_array = parse_array(d.value or "")
        if parsed_array is None:
            fix = f"write e.g. --array=0-15, --array=1,3,5 or --array=0-15:4 (at most {MAX_ARRAY_TASKS} elements)"
            out.append(violation(d.field, d.value, "is not an array spec", fix))
        else:
            array = ArraySpec(indices=parsed_array[0], step=parsed_array[1], throttle=parsed_array[2], directive=d)
    if now is not None:
        fields.update(_scheduling_fields(last, now, local or (lambda t: now), out))
    if out:
        return Failure(validation_error(out, subject=subject))
    script = _edited(text, overrides) if overrides else text
    base = TaskConfig(script=script, **fields)  # type: ignore[arg-type]  # each value checked above for its field
    configs: tuple[TaskConfig, ...] = (base,)
    if array is not None:
        indices = array.indices
        stem = base.name or "array"
        configs = tuple(
            evolve(
                base,
                name=element_name(stem, index),
                script=_edited(text, (*overrides, _array_edit(array.directive, index, len(indices)))),
                env={**base.env, **array_env(array), "SLURM_ARRAY_TASK_ID": str(index)},
            )
            for index in indices
        )
    if now is not None:
        configs = tuple(evolve(c, script=_without_scheduling(c.script or "")) for c in configs)
    return Success(
        SbatchJob(
            configs=configs,
            directives=read.directives,
            warnings=tuple(warnings),
            native_only=tuple(native),
            generic_gpus=generic_gpus,
            gpu_directive=gpu_directive,
            gpu_type=unknown_type if generic_gpus else None,
            job_name=job_name.value if job_name is not None else None,
            layout=layout,
            array=array,
            instance_type_override=instance_type,
            base=base,
        )
    )


def element_name(stem: str, index: int) -> str:
    """The task name of array element `index` of a job whose task name is `stem`."""
    return f"{stem[: 62 - len(str(index))]}-{index}"


def array_env(array: ArraySpec) -> dict[str, str]:
    """The array variables every element shares (each adds its SLURM_ARRAY_TASK_ID)."""
    indices = array.indices
    found = {
        "SLURM_ARRAY_TASK_COUNT": str(len(indices)),
        "SLURM_ARRAY_TASK_MIN": str(indices[0]),
        "SLURM_ARRAY_TASK_MAX": str(indices[-1]),
    }
    if array.step is not None:
        found["SLURM_ARRAY_TASK_STEP"] = str(array.step)
    return found


# Options that only mean something for GPUs: they go with the GPUs when -i asks for none.
_PER_GPU_OPTIONS: Final = frozenset(
    {"cpus-per-gpu", "mem-per-gpu", "ntasks-per-gpu", "gpu-bind", "gpu-freq", "gpus-per-socket"}
)


def _gpu_override(
    directives: Sequence[Directive],
    last: Mapping[str, Directive],
    layout: Layout,
    counts: Mapping[str, int | None],
    nodes: int | None,
    cpu_only: bool,
    given: str,
) -> tuple[Edit, ...]:
    """The edits that take a script's GPU directives out for -i, keeping its nodes and tasks: a
    count Slurm derived from the GPUs (`--gpus=16` is 2 nodes) is written out instead."""
    note = f"-i {given} replaces this GPU request"
    edits: list[Edit] = []
    for d in directives:
        if d.option == "gres":
            others = [
                item.strip()
                for item in (d.value or "").split(",")
                if item.strip()
                and item.strip().lower() != "none"
                and item.strip().split(":")[0].split("/")[-1] != "gpu"
            ]
            edits.append(Edit(d, (f"--gres={','.join(others)}",) if others else (), note))
        elif d.option in _GPU_OPTIONS or (cpu_only and d.option in _PER_GPU_OPTIONS):
            edits.append(Edit(d, (), note))
    if not edits:
        return ()

    def without_gpus(node_count: int | None) -> Layout | tuple[LayoutProblem, ...]:
        return job_layout(
            TaskCounts(
                nodes=node_count,
                ntasks=counts.get("ntasks"),
                ntasks_per_node=counts.get("ntasks-per-node"),
                cpus_per_task=counts.get("cpus-per-task"),
            )
        )

    kept: list[str] = []
    without = without_gpus(nodes)
    if isinstance(without, Layout) and without.nodes != layout.nodes and "nodes" not in last:
        kept.append(f"--nodes={layout.nodes}")
        without = without_gpus(layout.nodes)
    if isinstance(without, Layout) and without.ntasks != layout.ntasks and "ntasks" not in last:
        kept.append(f"--ntasks={layout.ntasks}")
    if kept:
        edits[0] = evolve(edits[0], tokens=(*edits[0].tokens, *kept))
    return tuple(edits)


def gpu_model_needed(job: SbatchJob, provider: str, source: str = "") -> DomainError | None:
    """The error for a provider that must know the GPU model (any but Slurm) when the script
    leaves it to Slurm: untyped GPUs, or a type no catalog model has (None when it names one)."""
    if not job.generic_gpus:
        return None
    count = job.generic_gpus
    where = job.gpu_directive.label if job.gpu_directive is not None else "the script"
    prefix = f"{source}: " if source else ""
    if job.gpu_type:
        asked = (
            f"asks for {count} GPU(s) of type {job.gpu_type} per node, a model Flow does not know, and provider "
            f"{provider} needs one it knows (only a Slurm cluster knows what its {job.gpu_type} GPUs are)"
        )
    else:
        asked = (
            f"asks for {count} GPU(s) without naming a model, and provider {provider} needs one "
            "(only Slurm knows what its untyped GPUs are)"
        )
    return DomainError(
        reason=ErrorReason.VALIDATION_FAILED,
        message=f"{prefix}{where} {asked}",
        suggestions=(
            f"give the instance type, e.g. --instance-type {count}xa100 (flow slurm submit) or "
            f"instance_type='{count}xa100' (submit_sbatch)",
            f"or name a model Flow knows in the script, e.g. #SBATCH --gres=gpu:a100:{count}",
            "or submit to a slurm provider, which runs the directive as it is",
        ),
        metadata=(("provider", provider),),
    )


# --- TaskConfig -> the job script the slurm provider submits --------------------------------


def time_limit_minutes(hours: float) -> int:
    """max_run_time_hours as whole minutes for --time: rounded up, at least 1 (Slurm's unit)."""
    return max(1, math.ceil(round(hours * 60, 6)))


@frozen
class ArrayJob:
    """A native Slurm array (flow slurm submit --array on a slurm provider): ONE job whose
    elements are Flow tasks. Its files live in one directory (`JobRequest.task_dir`): the job
    script, the script, the code; each element has `<dir>/<index>/` (its exit status, its output
    unless the script names one, and `task`: the Flow task that took it)."""

    indices: tuple[int, ...]


# How long an array element that Slurm starts waits for the Flow task that takes it (flow slurm
# submit creates them one by one right after the array job; a submission that died midway leaves
# elements nobody takes: they end at once).
ELEMENT_WAIT_SECONDS: Final = 300
ELEMENT_TASK_FILE: Final = "task"  # in an element's directory: "<task id> <task name>"


@frozen
class JobRequest:
    """Everything the job script depends on. Paths are absolute paths on the cluster."""

    task_id: str
    name: str
    config: TaskConfig
    task_dir: str
    code_dir: str | None = None  # the code snapshot (None: the task runs in task_dir/work)
    gres: str | None = None  # "gpu:2" or "gpu:a100:2"; None: no GPUs
    partition: str | None = None  # the provider's setting (a script's own directive wins)
    account: str | None = None
    qos: str | None = None
    function_call: bool = False
    python: str = "python3"
    # Values of the task's secret_env. They go to their own file (0600), which the job script
    # sources, never into job.sbatch: Slurm keeps batch scripts in its state, and shows them
    # (scontrol write batch_script) to the job's owner and the administrators.
    secrets: Mapping[str, str] = field(factory=dict)
    array: ArrayJob | None = None  # the job is the array of the config's --array
    # Directives Flow adds after the script's own (e.g. --dependency), each as "--option=value".
    extra: tuple[str, ...] = ()


@frozen
class JobFiles:
    job_script: str  # job.sbatch
    user_script: str | None = None  # the task's `script`, run by its #! line (or python)
    secrets: str | None = None  # secrets.env


def working_dir_of(request: JobRequest) -> str:
    """Where the program starts: working_dir, relative to the code snapshot (or the task's own
    work directory without one); an absolute working_dir is taken as it is."""
    base = request.code_dir or f"{request.task_dir}/{WORK_DIR}"
    wanted = request.config.working_dir
    if not wanted:
        return base
    return posixpath.normpath(posixpath.join(base, wanted))


def output_dirs(request: JobRequest) -> tuple[str, ...]:
    """The directories a script's relative --output/--error files go to, which Flow makes in the
    task's copy of the code before submitting (they exist where the user submits; a snapshot
    holds files only). A directory named by a pattern (%x/) is the script's to make, as on Slurm."""
    script = request.config.script
    if not script or not script.startswith("#!"):
        return ()
    last = {d.option: d for d in read_directives(script).directives}
    base = working_dir_of(request)
    found: list[str] = []
    for option in ("output", "error"):
        d = last.get(option)
        value = (d.value or "") if d is not None else ""
        head = posixpath.dirname(value)
        if head and not value.startswith("/") and "%" not in head and "\\" not in head:
            path = posixpath.normpath(posixpath.join(base, head))
            if path.startswith(base + "/") and path not in found:
                found.append(path)
    return tuple(found)


def _program(request: JobRequest) -> list[str]:
    td = request.task_dir
    if request.function_call:
        return [request.python, f"{td}/{RUNNER_FILE}", f"{td}/{INVOCATION_FILE}", f"{td}/{RESULT_FILE}"]
    form, program = program_of(request.config)
    if form == "command":
        assert isinstance(program, tuple)
        return list(program)
    if form == "shell":
        assert isinstance(program, str)
        return ["bash", "-c", program]
    assert isinstance(program, str)
    if program.startswith("#!"):
        return [f"{td}/{SCRIPT_FILE}"]
    return [request.python, f"{td}/{SCRIPT_FILE}"]


def render_job(request: JobRequest) -> Result[JobFiles, DomainError]:
    """The job script for a (valid) task. Directives the task's own script carries (a script from
    `flow slurm submit`) are submitted as they are; Flow adds only what they leave out, and never
    one that would override them: a script that names its output files (--output/--error) has
    them written where it says, and Flow's log of the task is that output (a link to it in the
    task's directory, made as the job starts: the name Slurm expanded); otherwise the output goes
    to the task's own file. An array job (`request.array`) runs once per element, each element
    in its own directory under the array's."""
    cfg = request.config
    problems: list[FieldViolation] = []
    if not PLAIN_PATH.fullmatch(request.task_dir):
        fix = "configure a work_dir of letters, digits and / . _ - only"
        problems.append(violation("work_dir", request.task_dir, "is not a plain absolute path", fix))
    native = read_directives(cfg.script) if cfg.script and cfg.script.startswith("#!") else None
    given: set[str] = set()
    if native is not None:
        problems.extend(native.problems)
        for d in native.directives:
            given.add(d.option)
            if d.option == "array" and request.array is None:
                fix = "submit it with `flow slurm submit`, which makes one task per array element"
                problems.append(violation(f"script: {d.field}", d.value, "asks for a job array", fix))
    if problems:
        return Failure(validation_error(problems, subject="task configuration"))
    td = request.task_dir
    q = shlex.quote
    lines = ["#!/bin/bash"]

    def directive(option: str, value: str | int | None = None) -> None:
        lines.append(f"#SBATCH --{option}" if value is None else f"#SBATCH --{option}={value}")

    # The provider's defaults come first, so a script's own directive overrides them.
    if request.partition and not cfg.region:
        directive("partition", request.partition)
    if request.account:
        directive("account", request.account)
    if request.qos:
        directive("qos", request.qos)
    if native is not None and native.directive_lines:
        script_lines = (cfg.script or "").split("\n")
        lines.extend(script_lines[n - 1].rstrip("\r") for n in native.directive_lines)
    if cfg.region:
        directive("partition", cfg.region)  # asked for in this task: it wins
    if "job-name" not in given:
        directive("job-name", request.name)
    if not given.intersection(LAYOUT_OPTIONS):
        directive("nodes", cfg.num_instances)  # a script's own counts decide its nodes, as in sbatch
    if request.gres and not given.intersection(_GPU_OPTIONS):
        directive("gres", request.gres)
    if cfg.max_run_time_hours and "time" not in given:
        directive("time", time_limit_minutes(cfg.max_run_time_hours))
    if cfg.memory_mb and not given.intersection(_MEMORY_OPTIONS):
        directive("mem", f"{cfg.memory_mb}M")
    if not given.intersection(("requeue", "no-requeue")):
        directive("no-requeue")  # a node failure or preemption ends the task; Flow does not rerun it
    lines += [f"#SBATCH {extra}" for extra in request.extra]
    own_output = not given.intersection(("output", "error"))
    if own_output:
        # Flow's own file, as the script names none: the log Flow streams is this file.
        output = f"{td}/%a/{OUTPUT_FILE}" if request.array is not None else f"{td}/{OUTPUT_FILE}"
        directive("output", output)
        directive("error", output)
        directive("open-mode", "append")
    # Where this run keeps its files: the task's directory, or its element's in an array.
    element = f'{q(td)}/"$SLURM_ARRAY_TASK_ID"' if request.array is not None else q(td)
    marker = f'"$flow_dir"/{EXIT_FILE}'
    cwd = working_dir_of(request)
    lines += [
        f"# Written by Flow for task {request.task_id}. The program's exit status goes to {EXIT_FILE}.",
        # Trapped (not ignored: the program keeps the default) so this shell outlives a TERM
        # from scancel or the time limit and records how the program ended.
        "trap : TERM INT",
        "export PYTHONUNBUFFERED=1",
    ]
    in_array = request.array is not None  # Slurm sets the array's variables itself
    lines += [
        f"export {key}={q(value)}"
        for key, value in cfg.env.items()
        if not (in_array and key.startswith("SLURM_ARRAY_"))
    ]
    if request.secrets:
        lines.append(f". {q(f'{td}/{SECRETS_FILE}')} || exit 1")
    lines.append(f"flow_dir={element}")  # after the task's variables: none of them can move it
    if not own_output:
        # The script's own output file, as Slurm named it: Flow's log of the task reads it.
        lines.append(f'ln -sfn -- "$(readlink /proc/$$/fd/1)" "$flow_dir"/{OUTPUT_FILE} 2>/dev/null')
    if request.array is None:
        lines += [f"export FLOW_TASK_ID={q(request.task_id)}", f"export FLOW_TASK_NAME={q(request.name)}"]
    else:
        task_file = f'"$flow_dir"/{ELEMENT_TASK_FILE}'
        lines += [
            f"w=0; while [ ! -s {task_file} ] && [ $w -lt {ELEMENT_WAIT_SECONDS * 10} ]; do",
            "  sleep 0.1; w=$((w + 1))",
            "done",
            f"if ! read -r FLOW_TASK_ID FLOW_TASK_NAME < {task_file}; then",
            '  echo "flow: no Flow task took element $SLURM_ARRAY_TASK_ID of this array: it does not run" >&2; exit 0',
            "fi",
            "export FLOW_TASK_ID FLOW_TASK_NAME",
        ]
    argv = _program(request)
    program = " ".join(q(a) for a in argv)
    if cfg.num_instances > 1 and not given:
        # torchrun's variables, derived from Slurm's; the program runs once per node. (A script
        # with its own directives runs as written: it starts its own srun steps.)
        lines += [
            'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
            "export MASTER_ADDR",
            'export MASTER_PORT="${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}"',
            'export NNODES="$SLURM_NNODES" WORLD_SIZE="$SLURM_NNODES"',
        ]
        # One worker per node (flow.domain.task.multinode's convention): RANK is the node's.
        per_node = q(
            'export NODE_RANK="$SLURM_NODEID" RANK="$SLURM_NODEID" GROUP_RANK="$SLURM_NODEID" '
            'LOCAL_RANK=0 LOCAL_WORLD_SIZE=1; exec "$@"'
        )
        program = (
            'srun --nodes="$SLURM_NNODES" --ntasks="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 '
            f"bash -c {per_node} flow-node {program}"
        )
    lines += [
        f"cd -- {q(cwd)} || {{ printf 'flow: cannot enter the working directory %s\\n' {q(cwd)} >&2; "
        f"printf '1\\n' > {marker}; exit 1; }}",
        program,
        "rc=$?",
        f"printf '%s\\n' \"$rc\" > {marker}",
        LEFTOVERS_KILLED,
        'exit "$rc"',
        "",
    ]
    user_script = cfg.script if not request.function_call and program_of(cfg)[0] == "script" else None
    secrets = "".join(f"export {key}={q(value)}\n" for key, value in sorted(request.secrets.items())) or None
    return Success(JobFiles(job_script="\n".join(lines), user_script=user_script, secrets=secrets))


# --- scheduling directives: TaskConfig.depends_on, start_after, priority ---------------------

SCHEDULING_OPTIONS: Final = frozenset({"dependency", "begin", "nice", "priority"})
DEFAULT_NICE: Final = 100  # sbatch's --nice without a value


def _scheduling_fields(
    last: Mapping[str, Directive], now: float, local: LocalTime, out: list[FieldViolation]
) -> dict[str, object]:
    """depends_on from --dependency, start_after from --begin, priority from --nice (negated:
    Slurm adds -nice to a job's priority) or --priority; problems go to `out`."""
    fields: dict[str, object] = {}
    if (d := last.get("dependency")) is not None:
        parsed = parse_slurm_dependency(d.value or "", field=d.field)
        if isinstance(parsed, Failure):
            out.extend(parsed.failure().violations)
        else:
            fields["depends_on"] = parsed.unwrap()
    if (d := last.get("begin")) is not None:
        begin = parse_begin(d.value or "", now, local, field=d.field)
        if isinstance(begin, Failure):
            out.extend(begin.failure().violations)
        else:
            fields["start_after"] = begin.unwrap()
    nice, priority = last.get("nice"), last.get("priority")
    if nice is not None and priority is not None:
        fix = "give one: --nice=N lowers a job's priority by N, --priority=N sets it"
        out.append(violation(priority.field, priority.value, f"is given together with {nice.label}", fix))
    elif nice is not None:
        value = (nice.value or str(DEFAULT_NICE)).strip()
        if re.fullmatch(r"[+-]?\d{1,9}", value) is None:
            out.append(violation(nice.field, nice.value, "is not a whole number", "write e.g. --nice=10"))
        else:
            fields["priority"] = -int(value)
    elif priority is not None:
        value = (priority.value or "").strip()
        if re.fullmatch(r"[+-]?\d{1,9}", value) is None:
            fix = "write a whole number, e.g. --priority=10 (higher runs first among your tasks)"
            out.append(violation(priority.field, priority.value, "is not a priority Flow knows", fix))
        else:
            fields["priority"] = int(value)
    return fields


def _without_scheduling(script: str) -> str:
    """The script without its scheduling directives (each line keeps its other options)."""
    read = read_directives(script)
    drop = [d for d in read.directives if d.option in SCHEDULING_OPTIONS]
    if not drop:
        return script
    lines = script.split("\n")
    for number in sorted({d.line for d in drop}):
        line = lines[number - 1]
        magic = MAGIC if line.startswith(MAGIC) else OLD_MAGIC
        tokens, _ = _tokens(line[len(magic) :])
        here = sorted((d for d in drop if d.line == number), key=lambda d: d.tokens)
        kept: list[str] = []
        at = 0
        for d in here:
            first, end = d.tokens
            kept += tokens[at:first]
            if d.bundle_at > 1:  # -Hd afterok:1: the options before it in the bundle stay
                kept.append(tokens[first][: d.bundle_at])
            at = end + 1
        kept += tokens[at:]
        shown = ", ".join(d.spelled for d in here)
        note = f"flow: {shown} taken into the task's depends_on/start_after/priority"
        lines[number - 1] = (
            f"{magic} {' '.join(_quote_for_directive(t) for t in kept)}  # {note}" if kept else f"# {note}"
        )
    return "\n".join(lines)
