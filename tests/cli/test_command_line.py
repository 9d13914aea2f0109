"""How `flow` reads a command line and talks back, before any daemon is involved: every option
explained in --help, --json everywhere, hints that name flags, and one documented exit code per
outcome. The `flow` executable itself is run where a user would see the difference."""

from __future__ import annotations

import argparse
import re
import subprocess
from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st

from conftest import BIN, REPO
from flow.cli import exit_status
from flow.cli.arguments import split_program
from flow.cli.hints import flags_of, in_cli_words
from flow.cli.main import COMMAND_GROUPS, build_parser, parse
from flow.task import Task
from flow.task import TaskStatus as S
from flow.wire.task_snapshot_codec import TaskSnapshot


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser under `parser` (itself included), with the words that reach it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def leaves() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    return [
        (path, parser)
        for path, parser in commands(build_parser())
        if path and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    ]


def flow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "flow"), *args], capture_output=True, text=True, timeout=60)


def test_a_command_line_builds_only_its_group_and_parses_the_same() -> None:
    """`parse` builds only the parsers of the command it is given (COMMAND_GROUPS): the map
    names every command, and each command's parsers are the ones the whole parser holds."""
    whole = {path: sub for path, sub in commands(build_parser()) if path}
    assert {path[0] for path in whole} == set(COMMAND_GROUPS)
    for command in COMMAND_GROUPS:
        alone = {path: sub for path, sub in commands(build_parser(command)) if path}
        assert {path[0] for path in alone} <= {p[0] for p in whole if COMMAND_GROUPS[p[0]] is COMMAND_GROUPS[command]}
        mine = {path: sub for path, sub in alone.items() if path[0] == command}
        assert mine.keys() == {path for path in whole if path[0] == command}
        for path, sub in mine.items():
            assert sub.format_help() == whole[path].format_help(), path
    assert vars(parse(["run", "-d", "-n", "x", "--", "echo", "hi"]))["program"] == ["echo", "hi"]
    assert parse(["invoke", "f.py", "g", "--args", "[1]"]).args == "[1]"


def test_every_option_of_every_command_is_explained_in_its_help() -> None:
    found = list(commands(build_parser()))
    assert len(found) >= 14  # flow, 11 commands, slurm submit, volumes create|list|delete
    for path, parser in found:
        for action in parser._actions:
            name = "/".join(action.option_strings) or action.metavar or action.dest
            assert action.help and action.help != argparse.SUPPRESS, f"flow {' '.join(path)}: {name} has no help"
        shown = flow(*path, "--help")
        assert shown.returncode == 0, shown.stderr
        for action in parser._actions:
            if action.help and action.help != argparse.SUPPRESS:
                words = re.sub(r"\s+", " ", shown.stdout)
                assert action.help.split()[0] in words, (path, action.help)


def test_every_command_takes_json() -> None:
    for path, parser in leaves():
        assert any("--json" in a.option_strings for a in parser._actions), f"flow {' '.join(path)} lacks --json"


def test_options_that_set_a_task_field_are_named_after_it() -> None:
    """The hints' table is the parser: each option sets the field whose name is its dest."""
    run = dict(commands(build_parser()))[("run",)]
    flags = flags_of(run)
    assert flags["instance_type"].option == "--instance-type"
    assert flags["max_price_per_hour"].option == "--max-price"
    assert flags["memory_mb"].option == "--memory"
    assert flags["upload_code"] == ("--no-upload", False, False)
    instances = flags_of(dict(commands(build_parser()))[("instances",)])
    assert instances["gpu_memory_gb"].option == "--gpu-memory" and instances["min_gpu_count"].option == "--min-gpus"


def test_hints_name_flags_not_python() -> None:
    flags = flags_of(dict(commands(build_parser()))[("run",)])
    assert (
        in_cli_words("run on a provider with GPUs, e.g. provider='slurm' or provider='mithril'", flags)
        == "run on a provider with GPUs, e.g. --provider slurm or --provider mithril"
    )
    assert (
        in_cli_words("leave out instance_type and min_gpu_memory_gb to run on this machine's CPUs", flags)
        == "leave out --instance-type and --min-gpu-memory to run on this machine's CPUs"
    )
    assert in_cli_words("ask for at most memory_mb=2048", flags) == "ask for at most --memory 2048"
    assert in_cli_words("raise max_price_per_hour to $12.50 per hour", flags) == "raise --max-price to $12.50 per hour"
    assert (
        in_cli_words("submit with upload_code=True (the default)", flags) == "submit with no --no-upload (the default)"
    )
    assert in_cli_words("or give upload_code=False", flags) == "or give --no-upload"
    # Python values spelled out whole, paths and unknown fields stay as written.
    kept = "attach it with VolumeSpec(volume_id='vol-1', name='data'); volumes[0].mount_path; code_root=/src"
    assert in_cli_words(kept, flags) == kept
    assert in_cli_words("did you mean 'a100'?", flags) == "did you mean 'a100'?"


@given(st.text(alphabet=st.characters(blacklist_characters="_="), max_size=200))
def test_text_without_a_field_is_left_as_it_is(text: str) -> None:
    flags = flags_of(dict(commands(build_parser()))[("run",)])
    assert in_cli_words(text, flags) == text


@given(st.lists(st.sampled_from(["run", "x", "-d", "--", "a b", "-i", "a100", "--json", ""]), max_size=12))
def test_a_command_line_splits_at_its_first_double_dash(words: list[str]) -> None:
    flow_words, program = split_program(words)
    if "--" in words:
        assert program is not None
        assert [*flow_words, "--", *program] == words and "--" not in flow_words
    else:
        assert (flow_words, program) == (words, None)


def snapshot(state: S, exit_code: int | None) -> Task:
    """A finished task as flowd describes it (no call is made: of_task reads attributes)."""
    values = TaskSnapshot("t-1", "t-1", state, "local", "cpu", 0, exit_code, "", None, None, None, b"")
    return Task(None, values)  # type: ignore[arg-type]


def test_each_way_a_task_ends_has_its_own_exit_code() -> None:
    assert exit_status.of_task(snapshot(S.COMPLETED, 0)) == 0
    assert exit_status.of_task(snapshot(S.FAILED, 3)) == 3
    assert exit_status.of_task(snapshot(S.FAILED, 137)) == 137
    assert exit_status.of_task(snapshot(S.FAILED, None)) == exit_status.FAILED == 1
    assert exit_status.of_task(snapshot(S.CANCELLED, 143)) == exit_status.CANCELLED == 125
    assert exit_status.of_task(snapshot(S.CANCELLED, None)) == exit_status.CANCELLED
    assert exit_status.of_task(snapshot(S.PREEMPTED, None)) == exit_status.PREEMPTED == 75
    codes = [code for code, _ in exit_status.TABLE if isinstance(code, int)]
    assert len(codes) == len(set(codes))


def test_the_exit_codes_are_documented_where_users_look() -> None:
    readme = (REPO / "README.md").read_text()
    shown = flow("--help").stdout
    for code, _ in exit_status.TABLE:
        assert re.search(rf"^\|\s*`?{code}`?\s*\|", readme, re.MULTILINE), f"README's table lacks {code}"
        assert re.search(rf"^\s+{code}\s", shown, re.MULTILINE), f"flow --help lacks {code}"
