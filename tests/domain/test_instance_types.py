from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from flow.domain.errors import DomainError, ErrorReason
from flow.domain.instances.gpu_catalog import CATALOG
from flow.domain.instances.instance_types import (
    CPU_INSTANCE,
    MAX_GPUS_PER_INSTANCE,
    InstanceType,
    format_instance_type,
    parse_instance_type,
    short_name,
)

CONFORMANCE = Path(__file__).resolve().parents[1] / "conformance" / "instance_types.json"


def parsed(text: str, provider_defaults: Mapping[str, int] | None = None) -> InstanceType:
    result = parse_instance_type(text, provider_defaults=provider_defaults)
    assert isinstance(result, Success), result
    instance_type: InstanceType = result.unwrap()
    return instance_type


def refused(text: str, field: str = "instance_type") -> DomainError:
    result = parse_instance_type(text, field)
    assert isinstance(result, Failure), result
    error: DomainError = result.failure()
    assert error.reason is ErrorReason.VALIDATION_FAILED
    assert error.violations, error
    for problem in error.violations:
        assert problem.field == field
        assert problem.fix
    return error


# The seed's examples and every other accepted form: (input, canonical, short name).
VALID = [
    ("a100", "a100-80gb.sxm.1x", "a100"),
    ("h100", "h100-80gb.sxm.1x", "h100"),
    ("2xa100", "a100-80gb.sxm.2x", "2xa100"),
    ("4xa100", "a100-80gb.sxm.4x", "4xa100"),
    ("8xa100", "a100-80gb.sxm.8x", "8xa100"),
    ("8xh100", "h100-80gb.sxm.8x", "8xh100"),
    ("1xa100", "a100-80gb.sxm.1x", "a100"),
    ("2x a100", "a100-80gb.sxm.2x", "2xa100"),
    ("8x H100", "h100-80gb.sxm.8x", "8xh100"),
    (" 8 X\th100 ", "h100-80gb.sxm.8x", "8xh100"),
    ("A100:8", "a100-80gb.sxm.8x", "8xa100"),
    ("h100:8", "h100-80gb.sxm.8x", "8xh100"),
    ("a100 : 2", "a100-80gb.sxm.2x", "2xa100"),
    ("a100x8", "a100-80gb.sxm.8x", "8xa100"),
    ("a100 x 8", "a100-80gb.sxm.8x", "8xa100"),
    ("a100-40gb", "a100-40gb.sxm.1x", "a100-40gb"),
    ("a100 40gb", "a100-40gb.sxm.1x", "a100-40gb"),
    ("a100-80gb", "a100-80gb.sxm.1x", "a100"),
    ("4xa100-40gb", "a100-40gb.sxm.4x", "4xa100-40gb"),
    ("a100-40gb:4", "a100-40gb.sxm.4x", "4xa100-40gb"),
    ("a100-80gb.sxm.4x", "a100-80gb.sxm.4x", "4xa100"),
    ("A100-80GB.SXM.4X", "a100-80gb.sxm.4x", "4xa100"),
    ("h100-80gb.pcie.1x", "h100-80gb.pcie.1x", "h100.pcie"),
    ("a100-40gb.pcie.2x", "a100-40gb.pcie.2x", "2xa100-40gb.pcie"),
    ("h100.pcie", "h100-80gb.pcie.1x", "h100.pcie"),
    ("h100.80gb.sxm", "h100-80gb.sxm.1x", "h100"),
    ("h200.8x", "h200-141gb.sxm.8x", "8xh200"),
    ("b200-192gb.1x", "b200-192gb.sxm.1x", "b200-192gb"),
    ("b200", "b200-180gb.sxm.1x", "b200"),
    ("64xa100", "a100-80gb.sxm.64x", "64xa100"),
    ("rtx-a6000", "a6000-48gb.pcie.1x", "a6000"),
    ("RTX A6000", "a6000-48gb.pcie.1x", "a6000"),
    ("a6000", "a6000-48gb.pcie.1x", "a6000"),
    ("2xrtxa6000", "a6000-48gb.pcie.2x", "2xa6000"),
    ("l40s", "l40s-48gb.pcie.1x", "l40s"),
    ("l4", "l4-24gb.pcie.1x", "l4"),
    ("a10g", "a10g-24gb.pcie.1x", "a10g"),
    ("t4", "t4-16gb.pcie.1x", "t4"),
    ("v100", "v100-16gb.sxm.1x", "v100"),
    ("v100-32gb", "v100-32gb.sxm.1x", "v100-32gb"),
    ("cpu", "cpu", "cpu"),
    (" CPU ", "cpu", "cpu"),
]


@pytest.mark.parametrize(("text", "canonical", "short"), VALID)
def test_accepted_forms(text: str, canonical: str, short: str) -> None:
    instance_type = parsed(text)
    assert format_instance_type(instance_type) == canonical
    assert short_name(instance_type) == short
    assert parsed(short) == instance_type
    assert parsed(canonical) == instance_type


def test_parsed_value_fields() -> None:
    assert parsed("4xa100-40gb") == InstanceType("a100", 40, "sxm", 4)
    assert parsed("cpu") is CPU_INSTANCE
    assert InstanceType("cpu", 0, "none", 0) == CPU_INSTANCE
    assert CPU_INSTANCE.is_cpu and not parsed("a100").is_cpu


def test_total_gpu_memory() -> None:
    assert parsed("8xh100").total_gpu_memory_gb == 640
    assert parsed("4xa100-40gb").total_gpu_memory_gb == 160
    assert CPU_INSTANCE.total_gpu_memory_gb == 0


# (input, words the problem must contain, words the fix must contain)
ERRORS = [
    ("", "is empty", '"a100"'),
    ("   ", "is empty", '"a100"'),
    ("0xa100", "GPU count 0 is not between 1 and 64", "1 to 64 GPUs"),
    ("-1xa100", "GPU count -1", "1 to 64 GPUs"),
    ("a100:0", "GPU count 0", "1 to 64 GPUs"),
    ("65xa100", "GPU count 65", "num_instances"),
    ("a100:999999999999", "GPU count 999999999999", "1 to 64"),
    ("a100-60gb", "a100 has no 60 GB variant", "use a100-40gb or a100-80gb"),
    ("h100-40gb", "h100 has no 40 GB variant", "use h100-80gb"),
    ("l4.sxm", "l4 does not come as 'sxm'", "use l4.pcie"),
    ("b200-180gb.pcie.8x", "b200 does not come as 'pcie'", "use b200.sxm"),
    ("4xa100:8", "more than once", '"4xa100"'),
    ("cpu:2", "CPU-only instance has no GPU count", '"cpu"'),
    ("4xcpu", "CPU-only", '"cpu"'),
    ("garbage!!", "is not an instance type", '"4xa100"'),
    ("1x", "is not an instance type", '"a100:8"'),
    ("a100;rm -rf /", "is not an instance type", '"a100"'),
    ("\u0664xa100", "is not an instance type", '"a100"'),
    ("a" * 65, "longer than 64 characters", '"a100"'),
    ("tpu-v4", "unknown GPU model 'tpu-v4'", "h100"),
    ("a 100", "unknown GPU model 'a-100'", "did you mean 'a100'?"),
]


@pytest.mark.parametrize(("text", "problem", "fix"), ERRORS)
def test_refusals_name_the_field_the_value_and_a_fix(text: str, problem: str, fix: str) -> None:
    error = refused(text, field="resources.instance_type")
    (violation,) = error.violations
    assert violation.field == "resources.instance_type"
    assert problem in violation.problem
    assert fix in violation.fix
    assert violation.value == repr(text)[:77] + ("..." if len(repr(text)) > 80 else "")
    assert "resources.instance_type" in error.message


@pytest.mark.parametrize(
    ("typo", "guess"),
    [
        ("a10o", "a100"),
        ("4xa10o", "4xa100"),
        ("8xh1OO", "8xh100"),
        ("h100o:8", "h100:8"),
    ],
)
def test_unknown_model_suggests_the_corrected_text(typo: str, guess: str) -> None:
    error = refused(typo)
    (violation,) = error.violations
    assert violation.problem.startswith("unknown GPU model")
    assert f"did you mean {guess!r}?" in violation.fix
    assert error.suggestions[0] == f"did you mean {guess!r}?"
    assert isinstance(parse_instance_type(guess), Success)


def test_unknown_word_ending_in_a_count_is_named_whole() -> None:
    (violation,) = refused("rtx8000").violations
    assert violation.problem == "unknown GPU model 'rtx8000'"


def test_every_problem_in_one_text_is_reported() -> None:
    error = refused("0xa100-60gb.nvlink")
    problems = [v.problem for v in error.violations]
    assert len(problems) == 3
    assert "GPU count 0" in problems[0]
    assert "no 60 GB variant" in problems[1]
    assert "does not come as 'nvlink'" in problems[2]


def test_non_string_is_refused() -> None:
    result = parse_instance_type(8)
    assert result.failure().violations[0].problem == "must be a string"


class TestProviderDefaults:
    MITHRIL: ClassVar[Mapping[str, int]] = {"h100": 8}

    def test_applies_only_without_an_explicit_count(self) -> None:
        assert parsed("h100", provider_defaults=self.MITHRIL).count == 8
        assert parsed("H100-80GB.SXM", provider_defaults=self.MITHRIL).count == 8
        assert parsed("1xh100", provider_defaults=self.MITHRIL).count == 1
        assert parsed("h100:4", provider_defaults=self.MITHRIL).count == 4
        assert parsed("a100", provider_defaults=self.MITHRIL).count == 1

    def test_short_name_never_hides_a_single_gpu(self) -> None:
        one = parsed("1xh100")
        assert short_name(one) == "h100"
        assert short_name(one, self.MITHRIL) == "1xh100"
        assert short_name(parsed("8xh100"), self.MITHRIL) == "8xh100"
        assert parsed(short_name(one, self.MITHRIL), provider_defaults=self.MITHRIL) == one

    def test_an_impossible_default_is_refused_not_raised(self) -> None:
        result = parse_instance_type("h100", provider_defaults={"h100": 0})
        assert "GPU count 0" in result.failure().violations[0].problem


def test_short_name_of_an_unknown_model_falls_back_to_canonical() -> None:
    odd = InstanceType("mi300x", 192, "oam", 8)
    assert short_name(odd) == "mi300x-192gb.oam.8x"


def load_conformance() -> list[dict[str, str]]:
    vectors: list[dict[str, str]] = json.loads(CONFORMANCE.read_text(encoding="utf-8"))
    return vectors


def test_conformance_file_is_plain_and_large_enough() -> None:
    vectors = load_conformance()
    assert len(vectors) >= 40
    for vector in vectors:
        assert set(vector) in ({"input", "canonical"}, {"input", "error_reason"})
    assert {v["input"] for v in vectors} >= {text for text, _, _ in VALID if text.strip() == text}
    assert sum("error_reason" in v for v in vectors) >= 20


@pytest.mark.parametrize("vector", load_conformance(), ids=lambda v: repr(v["input"])[:40])
def test_conformance(vector: dict[str, str]) -> None:
    result = parse_instance_type(vector["input"])
    if "canonical" in vector:
        assert result.map(format_instance_type) == Success(vector["canonical"])
    else:
        assert isinstance(result, Failure)
        assert result.failure().reason.value == vector["error_reason"]


# ---------------------------------------------------------------------------------------------
# Properties


@st.composite
def instance_types(draw: st.DrawFn) -> InstanceType:
    model = draw(st.sampled_from(CATALOG))
    return InstanceType(
        model=model.name,
        memory_gb=draw(st.sampled_from(model.memory_variants_gb)),
        form_factor=draw(st.sampled_from(model.form_factors)),
        count=draw(st.integers(1, MAX_GPUS_PER_INSTANCE)),
    )


any_instance_type = instance_types() | st.just(CPU_INSTANCE)


@st.composite
def written_forms(draw: st.DrawFn) -> tuple[str, InstanceType]:
    """A way a user might write an instance type, and what it must mean."""
    model = draw(st.sampled_from(CATALOG))
    spelling = draw(st.sampled_from((model.name, *model.aliases)))
    memory = draw(st.none() | st.sampled_from(model.memory_variants_gb))
    form = draw(st.none() | st.sampled_from(model.form_factors))
    count = draw(st.none() | st.integers(1, MAX_GPUS_PER_INSTANCE))
    body = spelling + (f"-{memory}gb" if memory else "") + (f".{form}" if form else "")
    if count is None:
        text = body
    else:
        style = draw(st.sampled_from(["{n}x{b}", "{n}x {b}", "{b}:{n}", "{b} : {n}", "{b}.{n}x"]))
        text = style.format(n=count, b=body)
    text = "".join(c.upper() if draw(st.booleans()) else c for c in text)
    padding = st.sampled_from(["", " ", "\t", "  \n"])
    text = draw(padding) + text + draw(padding)
    meaning = InstanceType(
        model=model.name,
        memory_gb=memory or model.memory_gb,
        form_factor=form or model.default_form_factor,
        count=count or 1,
    )
    return text, meaning


@given(any_instance_type)
def test_format_then_parse_round_trips(instance_type: InstanceType) -> None:
    assert parse_instance_type(format_instance_type(instance_type)) == Success(instance_type)
    assert parse_instance_type(short_name(instance_type)) == Success(instance_type)
    assert parse_instance_type(
        short_name(instance_type, {"h100": 8, "a100": 4}),
        provider_defaults={"h100": 8, "a100": 4},
    ) == Success(instance_type)


@given(written_forms())
def test_every_written_form_means_what_it_says(form: tuple[str, InstanceType]) -> None:
    text, meaning = form
    assert parse_instance_type(text) == Success(meaning)


GRAMMAR_ALPHABET = "aAhHtTlLvVbBcCpPuUxX0123456789-.:gbsmie \t"


@given(st.text(alphabet=GRAMMAR_ALPHABET, max_size=20) | st.text(max_size=80))
def test_canonicalization_is_idempotent(text: str) -> None:
    first = parse_instance_type(text)
    if isinstance(first, Success):
        canonical = format_instance_type(first.unwrap())
        assert parse_instance_type(canonical) == first
        assert format_instance_type(parse_instance_type(canonical).unwrap()) == canonical
    else:
        error = first.failure()
        assert error.reason is ErrorReason.VALIDATION_FAILED
        assert error.violations and all(v.field == "instance_type" for v in error.violations)


@given(st.text() | st.text(min_size=60, max_size=5000))
def test_parser_never_raises(text: str) -> None:
    result = parse_instance_type(text, provider_defaults={"h100": 8})
    assert isinstance(result, Success | Failure)


def test_parser_survives_a_huge_string() -> None:
    error = refused("8xa100" * 200_000)
    assert len(error.violations[0].value) <= 80
