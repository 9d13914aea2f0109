from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from flow.domain.errors import ErrorReason
from flow.domain.instances.gpu_catalog import (
    CATALOG,
    MODEL_NAMES,
    PCIE,
    SXM,
    GpuModel,
    find_model,
    lookup_model,
    suggest_models,
)


@pytest.mark.parametrize(
    ("name", "memory_gb", "variants", "default_form_factor"),
    [
        ("h200", 141, (141,), SXM),
        ("h100", 80, (80,), SXM),
        ("a100", 80, (40, 80), SXM),
        ("b200", 180, (180, 192), SXM),
        ("v100", 16, (16, 32), SXM),
        ("l40s", 48, (48,), PCIE),
        ("l40", 48, (48,), PCIE),
        ("a6000", 48, (48,), PCIE),
        ("l4", 24, (24,), PCIE),
        ("a10", 24, (24,), PCIE),
        ("a10g", 24, (24,), PCIE),
        ("t4", 16, (16,), PCIE),
    ],
)
def test_catalog_facts(name: str, memory_gb: int, variants: tuple[int, ...], default_form_factor: str) -> None:
    model = lookup_model(name).unwrap()
    assert model.name == name
    assert model.memory_gb == memory_gb
    assert model.memory_variants_gb == variants
    assert model.default_form_factor == default_form_factor
    assert model.variants == tuple((name, size) for size in variants)
    assert model.vendor == "nvidia"


@pytest.mark.parametrize("model", CATALOG, ids=lambda m: m.name)
def test_every_model_is_consistent(model: GpuModel) -> None:
    assert model.name == model.name.lower()
    assert model.memory_gb in model.memory_variants_gb
    assert model.default_form_factor in model.form_factors
    assert set(model.form_factors) <= {SXM, PCIE}
    assert list(model.memory_variants_gb) == sorted(set(model.memory_variants_gb))


def test_spellings_are_unique() -> None:
    spellings = [s for m in CATALOG for s in (m.name, *m.aliases)]
    assert len(spellings) == len(set(spellings))
    assert tuple(m.name for m in CATALOG) == MODEL_NAMES


def test_datacenter_parts_come_in_sxm_and_workstation_parts_in_pcie_only() -> None:
    for name in ("h100", "h200", "a100", "v100"):
        assert lookup_model(name).unwrap().form_factors == (SXM, PCIE)
    assert lookup_model("b200").unwrap().form_factors == (SXM,)
    for name in ("l40s", "l40", "l4", "a10", "a10g", "t4", "a6000"):
        assert lookup_model(name).unwrap().form_factors == (PCIE,)


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("A100", "a100"),
        ("  h100 ", "h100"),
        ("rtx-a6000", "a6000"),
        ("RTXA6000", "a6000"),
    ],
)
def test_lookup_accepts_any_case_and_aliases(spelling: str, name: str) -> None:
    assert lookup_model(spelling) == Success(find_model(name))
    found = find_model(spelling)
    assert found is not None and found.name == name


@pytest.mark.parametrize(
    ("typo", "guess"),
    [
        ("a10o", "a100"),
        ("h1OO", "h100"),
        ("h10", "h100"),
        ("l40x", "l40"),
        ("a600", "a6000"),
    ],
)
def test_unknown_model_suggests_the_closest(typo: str, guess: str) -> None:
    result = lookup_model(typo, field="gpu_type")
    assert isinstance(result, Failure)
    error = result.failure()
    assert error.reason is ErrorReason.VALIDATION_FAILED
    (problem,) = error.violations
    assert problem.field == "gpu_type"
    assert problem.value == repr(typo)
    assert problem.fix.startswith(f"did you mean {guess!r}?")
    assert error.suggestions[0] == f"did you mean {guess!r}?"


@pytest.mark.parametrize("name", ["", "   ", "tpu", "x" * 10_000, "\u00e9\u00e9\u00e9"])
def test_hopeless_names_list_the_known_models(name: str) -> None:
    error = lookup_model(name).failure()
    assert suggest_models(name) == ()
    (problem,) = error.violations
    assert "h100" in problem.fix and "a100" in problem.fix
    assert len(problem.value) <= 80


@given(st.text())
def test_lookup_never_raises(name: str) -> None:
    result = lookup_model(name)
    assert isinstance(result, Success | Failure)
    if isinstance(result, Success):
        assert find_model(name) == result.unwrap()
