"""Options found as sbatch's getopt_long finds them: every alias of the man page and of sbatch's
option table, unambiguous prefixes of long names (`--out=`, `--err=`, `--part=`), ambiguous ones
refused naming every candidate, exact names before longer ones."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure

from flow.domain.slurm.sbatch import read_directives, sbatch_to_configs
from flow.domain.slurm.sbatch_options import ALIASES, LONG_NAMES, OPTIONS, SHORT, canonical, resolve_long


def options(line: str) -> list[tuple[str, str | None, str]]:
    return [(d.option, d.value, d.spelled) for d in read_directives(f"#!/bin/bash\n{line}\ntrue\n").directives]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("#SBATCH --tasks-per-node=4", [("ntasks-per-node", "4", "--tasks-per-node")]),
        ("#SBATCH --tasks-per-node 4", [("ntasks-per-node", "4", "--tasks-per-node")]),
        ("#SBATCH --cluster=a", [("clusters", "a", "--cluster")]),
        ("#SBATCH --ntasks-per-tres=2", [("ntasks-per-gpu", "2", "--ntasks-per-tres")]),
        ("#SBATCH --prefer=fast --context=x", [("prefer", "fast", "--prefer"), ("context", "x", "--context")]),
        ("#SBATCH --out=logs/%j.out", [("output", "logs/%j.out", "--out")]),
        ("#SBATCH --err logs/%j.err", [("error", "logs/%j.err", "--err")]),
        ("#SBATCH --part=gpu", [("partition", "gpu", "--part")]),
        ("#SBATCH --job=x --acco=p", [("job-name", "x", "--job"), ("account", "p", "--acco")]),
        ("#SBATCH --exclus", [("exclusive", None, "--exclus")]),
        ("#SBATCH --no-req", [("no-requeue", None, "--no-req")]),
        ("#SBATCH --tasks=2", [("ntasks-per-node", "2", "--tasks")]),  # only --tasks-per-node starts so
        # An exact name wins over the longer names it begins.
        ("#SBATCH --gpus=2", [("gpus", "2", "--gpus")]),
        ("#SBATCH --time=5", [("time", "5", "--time")]),
        ("#SBATCH --mem=4G", [("mem", "4G", "--mem")]),
        ("#SBATCH --export=ALL", [("export", "ALL", "--export")]),
        ("#SBATCH --cluster=b", [("clusters", "b", "--cluster")]),
        ("#SBATCH --nodes=2", [("nodes", "2", "--nodes")]),
    ],
)
def test_aliases_and_prefixes_name_their_option(line: str, expected: list[tuple[str, str | None, str]]) -> None:
    assert options(line) == expected


@pytest.mark.parametrize(
    ("written", "candidates"),
    [
        ("mem-", ("mem-bind", "mem-per-cpu", "mem-per-gpu")),
        ("tim", ("time", "time-min")),
        ("nod", ("nodefile", "nodelist", "nodes")),
        ("gre", ("gres", "gres-flags")),
        ("clust", ("cluster", "cluster-constraint", "clusters")),
        ("acc", ("account", "acctg-freq")),
        ("exclu", ("exclude", "exclusive")),
    ],
)
def test_an_ambiguous_prefix_is_refused_naming_every_candidate(written: str, candidates: tuple[str, ...]) -> None:
    # What sbatch itself says: "option '--mem-' is ambiguous; possibilities: '--mem-bind' ..."
    parsed = sbatch_to_configs(f"#!/bin/bash\n#SBATCH --{written}=1\ntrue\n")
    assert isinstance(parsed, Failure)
    (found,) = parsed.failure().violations
    assert found.field == f"#SBATCH --{written} (line 2)"
    assert found.problem == "is ambiguous: it could be " + ", ".join(f"--{c}" for c in candidates)
    assert found.fix.startswith("write more of the name")


def test_an_unknown_option_suggests_the_closest_one_aliases_included() -> None:
    parsed = sbatch_to_configs("#!/bin/bash\n#SBATCH --task-per-node=2\ntrue\n")
    assert isinstance(parsed, Failure)
    assert parsed.failure().violations[0].fix == "did you mean --tasks-per-node?"


@pytest.mark.parametrize("option", ["help", "usage", "version"])
def test_options_that_make_sbatch_submit_nothing_are_refused(option: str) -> None:
    parsed = sbatch_to_configs(f"#!/bin/bash\n#SBATCH --{option}\ntrue\n")
    assert isinstance(parsed, Failure)
    assert "submit nothing" in parsed.failure().violations[0].fix


def test_the_table_matches_sbatch_22_05() -> None:
    # `sbatch --a` ... `sbatch --w` list every long option getopt_long knows (the test stack's
    # sbatch; tests/slurm/test_sbatch_layouts.py compares with it live): 106 names.
    assert len(LONG_NAMES) == 106
    assert set(ALIASES.values()) <= set(OPTIONS)
    assert set(SHORT) == set("aAbBcCdDeFGhHiJkLmMnNoOpqQsStvVwWx")


@given(st.sampled_from(LONG_NAMES), st.data())
def test_every_prefix_resolves_as_getopt_long_does(name: str, data: st.DataObject) -> None:
    prefix = name[: data.draw(st.integers(1, len(name)), label="length")]
    found = resolve_long(prefix)
    starting = [n for n in LONG_NAMES if n.startswith(prefix)]
    assert name in starting
    if prefix in LONG_NAMES:
        assert found.option == canonical(prefix)  # exact
    elif len({canonical(n) for n in starting}) == 1:
        assert found.option == canonical(name)  # unique (or every match names one option)
    else:
        assert found.option is None and found.ambiguous and list(found.candidates) == starting


@given(st.sampled_from(LONG_NAMES), st.data())
def test_a_prefix_reads_like_the_full_name_in_a_script(name: str, data: st.DataObject) -> None:
    option = canonical(name)
    argument = OPTIONS[option][1]
    prefix = name[: data.draw(st.integers(1, len(name)), label="length")]
    if resolve_long(prefix).option != option:
        return
    written = f"--{prefix}=v" if argument == "required" else f"--{prefix}"
    assert [(o, v) for o, v, _ in options(f"#SBATCH {written}")] == [(option, "v" if argument == "required" else None)]


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20))
def test_any_long_option_text_is_read_or_refused_never_crashes(word: str) -> None:
    parsed = sbatch_to_configs(f"#!/bin/bash\n#SBATCH --{word}=1\ntrue\n")
    found = resolve_long(word)
    if found.option is None:
        assert isinstance(parsed, Failure)
        assert parsed.failure().violations[0].field == f"#SBATCH --{word} (line 2)"
