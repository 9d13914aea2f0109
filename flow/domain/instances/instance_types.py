"""Instance types: what users type ("4xa100"), what Flow means by it ("a100-80gb.sxm.4x").

The parser accepts, ignoring case and stray whitespace: `a100`, `4xa100`, `8x H100`, `a100:8`,
`a100x8`, `a100-40gb`, `4xa100-40gb`, `h100.pcie`, the canonical `a100-80gb.sxm.4x`, the
platform's `h200.8x` and `h100.80gb.sxm`, catalog aliases (`rtx-a6000`) and `cpu`. Whatever is
left out takes the catalog's default: one GPU, the default memory size, the default form factor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from attrs import frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, FieldViolation, validation_error, violation
from flow.domain.instances.gpu_catalog import (
    CATALOG,
    GpuModel,
    find_model,
    suggest_models,
    unknown_model_fix,
)

MAX_GPUS_PER_INSTANCE = 64

# Longer text is certainly not an instance type; refusing it early keeps every step cheap.
MAX_INSTANCE_TYPE_LENGTH = 64

CPU_MODEL = "cpu"


@frozen
class InstanceType:
    """`count` GPUs of one model on one machine; the CPU-only instance has model "cpu", count 0."""

    model: str
    memory_gb: int
    form_factor: str
    count: int

    @property
    def is_cpu(self) -> bool:
        return self.model == CPU_MODEL

    @property
    def total_gpu_memory_gb(self) -> int:
        return self.memory_gb * self.count


CPU_INSTANCE = InstanceType(model=CPU_MODEL, memory_gb=0, form_factor="none", count=0)

# Every catalog spelling alone ("a100", "rtx-a6000") as its single-GPU default instance.
_SINGLE_GPU: dict[str, InstanceType] = {
    spelling: InstanceType(model.name, model.memory_gb, model.default_form_factor, 1)
    for model in CATALOG
    for spelling in (model.name, *model.aliases)
}

# Whitespace is allowed only where it cannot change the meaning: around the "x" of a count
# ("8x H100", "a100 x 8") and around separators ("a100 : 8"); those spaces are dropped. What is
# left between words becomes a dash, so "rtx a6000" reads as "rtx-a6000", "a100 40gb" as
# "a100-40gb".
_SPACED_SEPARATOR = re.compile(r" ?([:.]) ?|(?<=[0-9]) ?(x) ?", re.ASCII)

_INSTANCE_TYPE = re.compile(
    r"""
    (?:(?P<prefix_count>-?[0-9]+)x)?        # 4xa100
    (?P<model>[a-z][a-z0-9_-]*?)            # a100, rtx-a6000
    (?:[-.](?P<memory>-?[0-9]+)gb)?         # -40gb, .80gb
    (?:\.(?P<form_factor>[a-z]+))?          # .sxm
    (?:\.(?P<dotted_count>-?[0-9]+)x)?      # .4x
    (?:x(?P<times_count>-?[0-9]+))?         # a100x8
    (?::(?P<colon_count>-?[0-9]+))?         # a100:8
    """,
    re.VERBOSE | re.ASCII,
)


def _normalize(text: str) -> str:
    spaced = " ".join(text.lower().split())
    if " " in spaced:
        spaced = _SPACED_SEPARATOR.sub(r"\1\2", spaced).replace(" ", "-")
    return spaced


def parse_instance_type(
    text: str,
    field: str = "instance_type",
    *,
    provider_defaults: Mapping[str, int] | None = None,
) -> Result[InstanceType, DomainError]:
    """Parse what a user wrote into an `InstanceType`, or say precisely what is wrong with it.

    `provider_defaults` maps a catalog model name to the GPU count a provider uses when the text
    gives none (a provider that sells H100 only as 8-GPU nodes passes {"h100": 8}).
    """
    example = 'write an instance type such as "a100" or "4xa100"'
    if not isinstance(text, str):
        return _refuse(field, text, "must be a string", example)
    stripped = text.strip()
    if not stripped:
        return _refuse(field, text, "is empty", example)
    if len(stripped) > MAX_INSTANCE_TYPE_LENGTH:
        problem = f"is longer than {MAX_INSTANCE_TYPE_LENGTH} characters"
        return _refuse(field, text, problem, example)
    normalized = _normalize(stripped)
    plain = _SINGLE_GPU.get(normalized)
    if plain is not None and (provider_defaults is None or plain.model not in provider_defaults):
        return Success(plain)  # the common case, "a100": no pattern to run
    match = _INSTANCE_TYPE.fullmatch(normalized)
    if match is None:
        fix = 'write a GPU model with an optional count, e.g. "a100", "4xa100", "a100:8" or "a100-80gb.sxm.4x"'
        return _refuse(field, text, "is not an instance type", fix)
    prefix, name, memory, form_factor, dotted, times, colon = match.groups()
    if name == CPU_MODEL:
        if normalized == CPU_MODEL:
            return Success(CPU_INSTANCE)
        problem = "a CPU-only instance has no GPU count, memory or form factor"
        return _refuse(field, text, problem, 'write just "cpu"')
    model = find_model(name)
    if model is None:
        return _refuse_unknown_model(field, text, normalized, match)
    counts = [count for count in (prefix, dotted, times, colon) if count is not None]
    violations = [
        *_count_problems(field, text, model, counts, provider_defaults),
        *_memory_problems(field, text, model, memory),
        *_form_factor_problems(field, text, model, form_factor),
    ]
    if violations:
        return Failure(validation_error(violations, subject="instance type"))
    return Success(
        InstanceType(
            model=model.name,
            memory_gb=model.memory_gb if memory is None else int(memory),
            form_factor=form_factor or model.default_form_factor,
            count=_count(model, counts, provider_defaults),
        )
    )


def _count(model: GpuModel, counts: list[str], provider_defaults: Mapping[str, int] | None) -> int:
    if counts:
        return int(counts[0])
    return 1 if provider_defaults is None else provider_defaults.get(model.name, 1)


def _count_problems(
    field: str,
    text: str,
    model: GpuModel,
    counts: list[str],
    provider_defaults: Mapping[str, int] | None,
) -> list[FieldViolation]:
    if len(counts) > 1:
        problem = "gives the GPU count more than once"
        return [violation(field, text, problem, f'give it once, e.g. "{counts[0]}x{model.name}"')]
    count = _count(model, counts, provider_defaults)
    if 1 <= count <= MAX_GPUS_PER_INSTANCE:
        return []
    problem = f"GPU count {count} is not between 1 and {MAX_GPUS_PER_INSTANCE}"
    fix = (
        f'use 1 to {MAX_GPUS_PER_INSTANCE} GPUs per instance, e.g. "8x{model.name}", and more '
        "instances (num_instances) for more"
    )
    return [violation(field, text, problem, fix)]


def _memory_problems(field: str, text: str, model: GpuModel, given: str | None) -> list[FieldViolation]:
    if given is None or int(given) in model.memory_variants_gb:
        return []
    choices = " or ".join(f"{model.name}-{size}gb" for size in model.memory_variants_gb)
    problem = f"{model.name} has no {int(given)} GB variant"
    return [violation(field, text, problem, f"use {choices}")]


def _form_factor_problems(field: str, text: str, model: GpuModel, given: str | None) -> list[FieldViolation]:
    if given is None or given in model.form_factors:
        return []
    choices = " or ".join(f"{model.name}.{form}" for form in model.form_factors)
    problem = f"{model.name} does not come as {given!r}"
    return [violation(field, text, problem, f"use {choices}, or leave the form factor out")]


def _refuse(field: str, text: object, problem: str, fix: str) -> Failure[DomainError]:
    return Failure(validation_error([violation(field, text, problem, fix)], subject="instance type"))


def _refuse_unknown_model(field: str, text: str, normalized: str, match: re.Match[str]) -> Failure[DomainError]:
    # "rtx8000" matches as model "rt" times 8000; name the whole word, not the fragment.
    end = match.end("times_count") if match.group("times_count") else match.end("model")
    start = match.start("model")
    name = normalized[start:end]
    corrected = tuple(normalized[:start] + model + normalized[end:] for model in suggest_models(name))
    problem = f"unknown GPU model {name!r}"
    return Failure(
        validation_error(
            [violation(field, text, problem, unknown_model_fix(corrected))],
            subject="instance type",
            suggestions=tuple(f"did you mean {guess!r}?" for guess in corrected),
        )
    )


def format_instance_type(instance_type: InstanceType) -> str:
    """The canonical name, `{model}-{memory}gb.{form_factor}.{count}x` ("cpu" for CPU-only)."""
    if instance_type.is_cpu:
        return CPU_MODEL
    it = instance_type
    return f"{it.model}-{it.memory_gb}gb.{it.form_factor}.{it.count}x"


def short_name(instance_type: InstanceType, provider_defaults: Mapping[str, int] | None = None) -> str:
    """The friendly name: "a100", "4xa100", "4xa100-40gb", "h100.pcie".

    Only what differs from the catalog defaults is written, and it always parses back to the same
    instance type. A single GPU of a model whose provider default is larger reads "1xh100", so
    the short name never silently turns into the provider's 8-GPU node.
    """
    it = instance_type
    model = find_model(it.model)
    if it.is_cpu or model is None:
        return format_instance_type(it)
    default_count = (provider_defaults or {}).get(model.name, 1)
    count = "" if it.count == 1 and default_count == 1 else f"{it.count}x"
    memory = "" if it.memory_gb == model.memory_gb else f"-{it.memory_gb}gb"
    form = "" if it.form_factor == model.default_form_factor else f".{it.form_factor}"
    return f"{count}{model.name}{memory}{form}"
