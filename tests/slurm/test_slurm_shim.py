"""The srun and scontrol that sbatch scripts find outside Slurm (flow.runtime.slurm_shim): host
lists as Slurm writes them, the step layouts srun makes inside an allocation, and its options."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flow.runtime.slurm_shim import (
    OPTIONS,
    SrunError,
    compress_hostlist,
    expand_hostlist,
    job_number,
    parse_srun,
    step_layout,
)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("node1", ["node1"]),
        ("node[1-3]", ["node1", "node2", "node3"]),
        ("gpu[01-03,7],cpu9", ["gpu01", "gpu02", "gpu03", "gpu7", "cpu9"]),
        ("127.0.0.1,127.0.0.2", ["127.0.0.1", "127.0.0.2"]),
        ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
        ("", []),
    ],
)
def test_scontrol_show_hostnames_expands_slurm_host_lists(text: str, names: list[str]) -> None:
    assert expand_hostlist(text) == names


@given(
    st.lists(
        st.tuples(st.sampled_from(["node", "gpu-", "a"]), st.integers(0, 120), st.sampled_from([1, 3])), max_size=12
    )
)
def test_compressed_host_lists_expand_to_the_same_names(parts: list[tuple[str, int, int]]) -> None:
    names = list(dict.fromkeys(f"{head}{str(number).zfill(width)}" for head, number, width in parts))
    assert expand_hostlist(compress_hostlist(names)) == names


def test_a_run_of_numbered_nodes_compresses_as_slurm_writes_it() -> None:
    assert compress_hostlist(["node1", "node2", "node3", "node7"]) == "node[1-3,7]"
    assert compress_hostlist(["127.0.0.1", "127.0.0.2"]) == "127.0.0.[1-2]"


@pytest.mark.parametrize(
    ("argv", "job", "layout"),
    [
        ([], {"SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS": "4"}, [2, 2]),  # the job's tasks over its nodes
        ([], {"SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS": "3"}, [2, 1]),  # block distribution
        (["-N1"], {"SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS": "4"}, [1]),
        (["-n", "6"], {"SLURM_JOB_NUM_NODES": "2"}, [3, 3]),
        (["--ntasks-per-node=4"], {"SLURM_JOB_NUM_NODES": "2"}, [4, 4]),
        (["-N", "2", "--ntasks-per-node", "1"], {"SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS": "8"}, [1, 1]),
        (["-n1"], {"SLURM_JOB_NUM_NODES": "3"}, [1]),
        ([], {"SLURM_JOB_NUM_NODES": "1"}, [1]),
    ],
)
def test_a_step_lays_out_its_tasks_as_srun_does_inside_an_allocation(
    argv: list[str], job: dict[str, str], layout: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in job.items():
        monkeypatch.setenv(name, value)
    options, command = parse_srun([*argv, "hostname"])
    assert command == ["hostname"]
    assert step_layout(options, dict(job)) == layout


def test_a_step_cannot_ask_for_more_nodes_than_the_job_has(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    with pytest.raises(SrunError, match="Only allocated 2 nodes asked for 3"):
        step_layout(parse_srun(["-N3", "true"])[0], {})


def test_options_end_at_the_command_and_unknown_ones_are_refused() -> None:
    options, command = parse_srun(["-l", "--mpi=pmix", "-c4", "python", "-u", "train.py", "--nodes=9"])
    assert options == {"label": "", "mpi": "pmix", "cpus-per-task": "4"}
    assert command == ["python", "-u", "train.py", "--nodes=9"]  # the program's own options stay its own
    with pytest.raises(SrunError, match="unrecognized option '--frobnicate'"):
        parse_srun(["--frobnicate", "x"])
    with pytest.raises(SrunError, match="requires an argument"):
        parse_srun(["--ntasks"])
    assert {"nodes", "ntasks", "ntasks-per-node", "label", "export", "kill-on-bad-exit"} <= set(OPTIONS)


def test_job_ids_are_numbers_stable_for_a_task() -> None:
    assert job_number("t-abc") == job_number("t-abc") != job_number("t-abd")
    assert 1_000_000 <= job_number("t-abc") < 10_000_000
