"""--output/--error patterns expanded as Slurm 22.05's slurmd names the files. Every expected name
below is a file the test stack's Slurm wrote (tests/slurm/test_sbatch_layouts.py writes them again)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flow.domain.slurm.filename_patterns import (
    NO_ARRAY_INDEX,
    PatternValues,
    expand_filename_pattern,
    output_path,
)

PLAIN = PatternValues(job_id=35, job_name="my.job name", user="root", node="localhost")
ELEMENT = PatternValues(job_id=43, job_name="arr", user="root", node="localhost", array_job_id=36, array_index=3)


@pytest.mark.parametrize(
    ("pattern", "values", "name"),
    [
        (
            "a_%x_%j_%A_%a_%N_%n_%s_%t_%u_%J_%%_%q_%5j_%3a_%010j_%12j.out",
            PLAIN,
            "a_my.job name_35_35_4294967294_localhost_0_batch_0_root_35_%_%q_00035_4294967294_"
            "0000000035_0000000035.out",
        ),
        ("b_%x_%j_%A_%a_%4a_%N_%J_%s.out", ELEMENT, "b_arr_43_36_3_0003_localhost_43_batch.out"),
        (
            "p_%3J_%3s_%3x_%3N_%3u_%3n_%3t_%0j_%1j_%3%_%3q",
            PLAIN,
            "p_035_batch_my.job name_localhost_root_000_000_35_35_3%_3q",
        ),
        ("e_%", PLAIN, "e_%"),
        ("%x-%%j-%", PLAIN, "my.job name-%j-%"),
        ("q_%A_%a", ELEMENT, "q_36_3"),
        ("g_%j\\x.out", PLAIN, "g_%jx.out"),  # a backslash: nothing is replaced, each \ keeps the next
        ("h_\\%j.out", PLAIN, "h_%j.out"),
        ("i_%j\\\\x\\\\\\y.out", PLAIN, "i_%j\\x\\y.out"),
        ("c\\\\_%j.out", PLAIN, "c\\_%j.out"),
        ("plain.log", PLAIN, "plain.log"),
    ],
)
def test_patterns_expand_as_slurmd_names_files(pattern: str, values: PatternValues, name: str) -> None:
    assert expand_filename_pattern(pattern, values) == name


def test_output_paths_default_as_slurm_does_and_are_relative_to_the_working_dir() -> None:
    assert output_path(None, PLAIN, "/home/u/run") == "/home/u/run/slurm-35.out"
    assert output_path(None, ELEMENT, "/home/u/run/") == "/home/u/run/slurm-36_3.out"
    assert output_path("logs/%x-%j.out", PLAIN, "/w") == "/w/logs/my.job name-35.out"
    assert output_path("/abs/%j.out", PLAIN, "/w") == "/abs/35.out"
    assert NO_ARRAY_INDEX == 4294967294


TEXT = st.text(alphabet=st.characters(blacklist_characters="%\\", blacklist_categories=("Cs",)), max_size=30)


@given(TEXT)
def test_text_without_symbols_is_kept(text: str) -> None:
    assert expand_filename_pattern(text, PLAIN) == text


@given(st.lists(st.sampled_from(["%j", "%A", "%a", "%x", "%u", "%N", "%%", "%5j", "%3a", "%q", "_", "-", ".out"])))
def test_each_symbol_expands_on_its_own(parts: list[str]) -> None:
    """A pattern is the concatenation of its pieces' expansions (no symbol reaches into another)."""
    whole = expand_filename_pattern("".join(parts), ELEMENT)
    assert whole == "".join(expand_filename_pattern(p, ELEMENT) for p in parts)


@given(st.integers(0, 10**12), st.integers(0, 20))
def test_widths_pad_with_zeros_up_to_ten_digits(job_id: int, width: int) -> None:
    values = PatternValues(job_id=job_id, job_name="n", user="u", node="h")
    padded = expand_filename_pattern(f"%{width}j", values)
    assert int(padded) == job_id
    assert len(padded) == max(len(str(job_id)), min(width, 10))
