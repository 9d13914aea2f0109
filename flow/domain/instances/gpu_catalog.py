"""The GPU models Flow knows, as data.

One entry per model; a model may come in several memory sizes (A100 40/80 GB), and a "variant" is
the pair (model name, memory in GB). What a given provider sells, and in what sizes, is provider
data passed into the functions that need it, never written here.
"""

from __future__ import annotations

import difflib

from attrs import Factory, frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, validation_error, violation

SXM = "sxm"
PCIE = "pcie"

GpuVariant = tuple[str, int]
"""A model name and a per-GPU memory size in GB, e.g. ("a100", 40)."""


@frozen
class GpuModel:
    """One GPU model. `memory_gb` is the default size; `memory_variants_gb` lists every size."""

    name: str
    memory_gb: int
    form_factors: tuple[str, ...]
    default_form_factor: str
    aliases: tuple[str, ...] = ()
    vendor: str = "nvidia"
    memory_variants_gb: tuple[int, ...] = Factory(lambda self: (self.memory_gb,), takes_self=True)

    @property
    def variants(self) -> tuple[GpuVariant, ...]:
        return tuple((self.name, memory) for memory in self.memory_variants_gb)


_DATACENTER = (SXM, PCIE)

CATALOG: tuple[GpuModel, ...] = (
    GpuModel("b200", 180, (SXM,), SXM, memory_variants_gb=(180, 192)),
    GpuModel("h200", 141, _DATACENTER, SXM),
    GpuModel("h100", 80, _DATACENTER, SXM),
    GpuModel("a100", 80, _DATACENTER, SXM, memory_variants_gb=(40, 80)),
    GpuModel("v100", 16, _DATACENTER, SXM, memory_variants_gb=(16, 32)),
    GpuModel("l40s", 48, (PCIE,), PCIE),
    GpuModel("l40", 48, (PCIE,), PCIE),
    GpuModel("a6000", 48, (PCIE,), PCIE, aliases=("rtx-a6000", "rtxa6000")),
    GpuModel("l4", 24, (PCIE,), PCIE),
    GpuModel("a10", 24, (PCIE,), PCIE),
    GpuModel("a10g", 24, (PCIE,), PCIE),
    GpuModel("t4", 16, (PCIE,), PCIE),
)

# Every accepted spelling (name or alias) -> its model; built once, read by every lookup.
_BY_SPELLING: dict[str, GpuModel] = {spelling: model for model in CATALOG for spelling in (model.name, *model.aliases)}

_SPELLINGS = tuple(_BY_SPELLING)

MODEL_NAMES: tuple[str, ...] = tuple(model.name for model in CATALOG)

# Long inputs are not GPU names; comparing them against the catalog would only waste time.
_MAX_SUGGESTIBLE_LENGTH = 32


def find_model(name: str) -> GpuModel | None:
    """The model spelled `name` (catalog name or alias, any case), or None."""
    return _BY_SPELLING.get(name.strip().lower())


def suggest_models(name: str) -> tuple[str, ...]:
    """Catalog names close to a misspelled `name`, best first (empty when nothing is close)."""
    spelling = name.strip().lower()
    if not spelling or len(spelling) > _MAX_SUGGESTIBLE_LENGTH:
        return ()
    # "h1oo": no catalog name has the letter o, so it is a zero typed as a letter.
    lookalike = _BY_SPELLING.get(spelling.replace("o", "0"))
    if lookalike is not None:
        return (lookalike.name,)
    close = difflib.get_close_matches(spelling, _SPELLINGS, n=3, cutoff=0.6)
    return tuple(dict.fromkeys(_BY_SPELLING[match].name for match in close))


def unknown_model_fix(suggestions: tuple[str, ...]) -> str:
    """How to fix an unknown model: the best guess (a name, or a whole corrected input) first."""
    known = ", ".join(MODEL_NAMES)
    if suggestions:
        return f"did you mean {suggestions[0]!r}? Known GPU models: {known}"
    return f"use one of the known GPU models: {known}"


def lookup_model(name: str, field: str = "gpu_type") -> Result[GpuModel, DomainError]:
    """The catalog model for `name`, or a validation error naming `field` with a "did you mean"."""
    model = find_model(name)
    if model is not None:
        return Success(model)
    suggestions = suggest_models(name)
    return Failure(
        validation_error(
            [violation(field, name, "unknown GPU model", unknown_model_fix(suggestions))],
            subject="GPU model",
            suggestions=tuple(f"did you mean {s!r}?" for s in suggestions),
        )
    )
