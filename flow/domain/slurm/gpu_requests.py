"""GPU requests as a script writes them: `--gres=gpu[:type][:count]` and `--gpus`,
`--gpus-per-node`, `--gpus-per-task` as `[type:]count`.

Slurm reads a lone word as a type with a count of 1 (`gpu:a100` is one a100; so `gpu:zero` is one
GPU of a type called "zero", which no cluster has: `sbatch --test-only --gres=gpu:zero` fails with
"Requested node configuration is not available", as `gpu:tesla:1` does where no GPU is typed
tesla). A type that is a number, or a number spelled out, is a count written wrongly: it is
refused here, with the count it was meant to be. A count that is not a whole number (`gpu:a100:x`)
is a syntax error to sbatch too ("Invalid generic resource (gres) specification").
"""

from __future__ import annotations

import re
from typing import Final

from attrs import frozen

GPU: Final = "gpu"
# Slurm's GRES type names: letters, digits and a few separators (nvidia_a100-sxm4-80gb).
_TYPE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_NUMBER_WORDS: Final = frozenset(
    {
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
        "thirty",
        "forty",
        "fifty",
        "sixty",
        "seventy",
        "eighty",
        "ninety",
        "hundred",
    }
)


@frozen
class GpuAsk:
    """So many GPUs, of a type when the request names one."""

    count: int
    type: str | None = None


@frozen
class GpuSpecProblem:
    """Why a GPU request cannot be read, and how to write it."""

    problem: str
    fix: str


@frozen
class GresRequest:
    """A --gres list: its GPU entry (None: none asked for) and the names of its other entries."""

    gpu: GpuAsk | None
    others: tuple[str, ...] = ()


def _spelled_number(word: str) -> bool:
    return all(part in _NUMBER_WORDS for part in word.lower().split("-"))


def _type_problem(kind: str, example: str) -> GpuSpecProblem | None:
    if kind.isdigit():
        return GpuSpecProblem(
            f"names a GPU type {kind!r}, a number: Slurm reads [type:]count, so this asks for GPUs of a type "
            f"called {kind!r}",
            f"give the count once, e.g. {example}",
        )
    if _spelled_number(kind):
        return GpuSpecProblem(
            f"names a GPU type {kind!r} and no count: Slurm reads it as one GPU of a type called {kind!r}, "
            "which no cluster has",
            f"write the count in digits, e.g. {example} (0 for no GPUs)",
        )
    if not _TYPE.fullmatch(kind):
        return GpuSpecProblem(
            f"names a GPU type {kind!r}, which is not a GRES type name", f"write e.g. {example} or a100:2"
        )
    return None


def parse_gpu_count(text: str, option: str) -> GpuAsk | GpuSpecProblem:
    """`[type:]count` (--gpus, --gpus-per-node, --gpus-per-task); a lone type is one GPU of it."""
    value = text.strip()
    kind, colon, count = value.rpartition(":")
    example = f"--{option}=2"
    if not colon:
        if value.isdigit():
            return GpuAsk(count=int(value))
        problem = _type_problem(value, example) if value else GpuSpecProblem("is empty", f"write e.g. {example}")
        return problem or GpuAsk(count=1, type=value)
    if not count.isdigit():
        return GpuSpecProblem(f"has a count {count!r} that is not a whole number", f"write e.g. --{option}=a100:2")
    return _type_problem(kind, example) or GpuAsk(count=int(count), type=kind)


def parse_gres_request(text: str) -> GresRequest | GpuSpecProblem:
    """A --gres value: entries `name[:type][:count]`, comma-separated; `none` asks for nothing.
    Entries other than gpu are kept by name only (Slurm judges them)."""
    gpu: GpuAsk | None = None
    others: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item or item.lower() == "none":
            continue
        parts = item.split(":")
        name = parts[0].split("/")[-1]  # "gres/gpu" is gpu
        if name != GPU:
            others.append(name)
            continue
        rest = parts[1:]
        if len(rest) > 2:
            return GpuSpecProblem(
                f"has {len(rest) + 1} parts in {item!r}; a GRES is name[:type][:count]", "write e.g. --gres=gpu:a100:2"
            )
        if len(rest) == 2 and not rest[1].isdigit():
            return GpuSpecProblem(
                f"has a count {rest[1]!r} that is not a whole number", "write e.g. --gres=gpu:a100:2 (type, then count)"
            )
        if not rest:
            gpu = GpuAsk(count=1)
        elif len(rest) == 1 and rest[0].isdigit():
            gpu = GpuAsk(count=int(rest[0]))
        else:
            problem = _type_problem(rest[0], "--gres=gpu:2")
            if problem is not None:
                return problem
            gpu = GpuAsk(count=int(rest[1]) if len(rest) == 2 else 1, type=rest[0])
    return GresRequest(gpu=gpu, others=tuple(others))
