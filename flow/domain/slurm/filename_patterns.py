r"""sbatch's --output/--error/--input filename patterns, expanded as Slurm 22.05 expands them for a
batch job (what the test stack's slurmd wrote, for job 35 on localhost as root, 62 for widths):

    %%  %          %j  35               %A  35 (an array element: the array's job id)
    %x  job name   %a  4294967294 (not an array element; an element: its index)
    %u  user       %N  the batch host   %n  0    %t  0    %s  batch    %J  35 (no .step for batch)

A number between % and the letter pads numeric values with zeros (%5j 00035, %4a 0003), at most
to 10 digits (%12j and %010j: 0000000035); it is ignored for %x %u %N %s, and a longer value stays
whole (%3a of a plain job: 4294967294). An unknown letter stays as written (%q), but with a width
the % goes (%3q: 3q, %3%: 3%); a % at the end stays. A pattern holding a backslash is not expanded
at all, and each backslash keeps the character after it (g_%j\x.out is g_%jx.out, h_\%j is h_%j,
\\ is one backslash). A relative name is relative to the job's working directory (--chdir, else
where sbatch ran). Without --output, Slurm writes slurm-%j.out (slurm-%A_%a.out for an array
element); without --error, errors go to the output file.
"""

from __future__ import annotations

from typing import Final

from attrs import frozen

NO_ARRAY_INDEX: Final = 4294967294  # Slurm's NO_VAL - 1: %a of a job that is not an array element
MAX_WIDTH: Final = 10
DEFAULT_OUTPUT: Final = "slurm-%j.out"
DEFAULT_ARRAY_OUTPUT: Final = "slurm-%A_%a.out"


@frozen
class PatternValues:
    """What a job's patterns refer to. `job_id` is the element's own id for an array element."""

    job_id: int
    job_name: str
    user: str
    node: str  # the batch host's short name (%N)
    array_job_id: int | None = None  # the array's id (%A); None: not an array element
    array_index: int | None = None
    node_index: int = 0  # %n
    task_id: int = 0  # %t
    step: str = "batch"  # %s; the batch script is the "batch" step


def expand_filename_pattern(pattern: str, values: PatternValues) -> str:
    """`pattern` with its replacement symbols filled in, as slurmd writes the file name."""
    if "\\" in pattern:
        return _unescaped(pattern)
    numeric = {
        "j": values.job_id,
        "A": values.array_job_id if values.array_job_id is not None else values.job_id,
        "a": values.array_index if values.array_index is not None else NO_ARRAY_INDEX,
        "n": values.node_index,
        "t": values.task_id,
        "J": values.job_id,  # the batch step has no ".step" suffix
    }
    text = {"x": values.job_name, "u": values.user, "N": values.node, "s": values.step}
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch != "%" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        j = i + 1
        while j < n and pattern[j].isdigit():
            j += 1
        digits = pattern[i + 1 : j]
        if j >= n:  # "%12" at the end: nothing to replace
            out.append(pattern[i:])
            break
        letter = pattern[j]
        if letter in numeric:
            width = min(int(digits), MAX_WIDTH) if digits else 0
            out.append(str(numeric[letter]).zfill(width))
        elif letter in text:
            out.append(text[letter])
        elif letter == "%" and not digits:
            out.append("%")
        else:
            out.append(f"{digits}{letter}" if digits else f"%{letter}")
        i = j + 1
    return "".join(out)


def _unescaped(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 1
            if i < len(pattern):
                out.append(pattern[i])
        else:
            out.append(pattern[i])
        i += 1
    return "".join(out)


def output_path(pattern: str | None, values: PatternValues, working_dir: str) -> str:
    """The file a job's output (or errors) go to: its pattern, else Slurm's default, expanded and
    made absolute against the job's working directory."""
    default = DEFAULT_ARRAY_OUTPUT if values.array_job_id is not None else DEFAULT_OUTPUT
    name = expand_filename_pattern(pattern or default, values)
    if name.startswith("/"):
        return name
    return f"{working_dir.rstrip('/')}/{name}"
