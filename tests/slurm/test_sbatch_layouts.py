"""The core's reading of sbatch scripts checked against the real sbatch and slurmd of the test
stack: the option table against sbatch's getopt, the nodes derived from task and GPU counts
against `sbatch --test-only` on nodes of 8 CPUs and 2 GPUs (partition `all`), and --output
patterns against the files slurmd writes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from returns.result import Failure

from conftest import REPO, wait_until
from flow.domain.slurm.filename_patterns import PatternValues, expand_filename_pattern
from flow.domain.slurm.sbatch import sbatch_to_configs
from flow.domain.slurm.sbatch_options import LONG_NAMES, OPTIONS, canonical

from .conftest import MultiNode, Stack

LAYOUTS = json.loads((REPO / "tests" / "fixtures" / "sbatch" / "test_only_layouts.json").read_text())
NODE_GPUS, NODE_CPUS = LAYOUTS["node_gpus"], LAYOUTS["node_cpus"]
ANSWERS: list[tuple[str, int | None, int | None]] = [
    (a["directives"], a["nodes"], a.get("flow_nodes", a["nodes"])) for a in LAYOUTS["answers"]
]
_STARTS = re.compile(r"to start at \S+ using \d+ processors on nodes (\S+) in partition")


def slurm_nodes(multinode: MultiNode, directives: str) -> int | None:
    """How many nodes `sbatch --test-only` says the job would get (None: refused)."""
    done = multinode.stack.slurm(
        "sbatch", "--test-only", f"--partition={multinode.all}", *directives.split(), "--wrap=true"
    )
    found = _STARTS.search(done.stderr)
    return len(multinode.stack.hostnames(found.group(1))) if found else None


def flow_nodes(directives: str) -> int | None:
    parsed = sbatch_to_configs(
        f"#!/bin/bash\n#SBATCH {directives}\ntrue\n", node_gpus=NODE_GPUS, cpus_per_node=NODE_CPUS
    )
    return None if isinstance(parsed, Failure) else parsed.unwrap().layout.nodes


def test_the_nodes_partition_all_offers_are_those_the_recorded_answers_assume(multinode: MultiNode) -> None:
    listed = multinode.stack.slurm("sinfo", "-h", "-N", "-p", multinode.all, "-o", "%N %c %G").stdout.split("\n")
    nodes = {line.split()[0]: line.split()[1:] for line in listed if line.strip()}
    assert len(nodes) == 4 and all(v == [str(NODE_CPUS), f"gpu:{NODE_GPUS}"] for v in nodes.values())


@pytest.mark.parametrize(("directives", "nodes", "flow"), ANSWERS, ids=[d for d, _, _ in ANSWERS])
def test_recorded_answers_are_what_sbatch_test_only_says(
    multinode: MultiNode, directives: str, nodes: int | None, flow: int | None
) -> None:
    assert slurm_nodes(multinode, directives) == nodes
    assert flow_nodes(directives) == flow


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    nodes=st.none() | st.integers(1, 4),
    ntasks=st.none() | st.integers(1, 10),
    per_node=st.none() | st.integers(1, 4),
    cpus=st.none() | st.integers(1, 8),
    gpus=st.none() | st.integers(1, 8),
    gpn=st.none() | st.integers(1, 2),
    gpt=st.none() | st.integers(1, 3),
)
def test_flow_derives_the_nodes_sbatch_test_only_does(
    multinode: MultiNode,
    nodes: int | None,
    ntasks: int | None,
    per_node: int | None,
    cpus: int | None,
    gpus: int | None,
    gpn: int | None,
    gpt: int | None,
) -> None:
    written = {
        "-N": nodes,
        "-n": ntasks,
        "--ntasks-per-node": per_node,
        "-c": cpus,
        "--gpus": gpus,
        "--gpus-per-node": gpn,
        "--gpus-per-task": gpt,
    }
    directives = " ".join(f"{k} {v}" if len(k) == 2 else f"{k}={v}" for k, v in written.items() if v)
    if not directives:
        return
    slurm, flow = slurm_nodes(multinode, directives), flow_nodes(directives)
    # What Slurm runs, Flow runs on as many nodes; what Slurm refuses (past the partition's four
    # nodes, or for reasons of its own) Flow may still lay out.
    if slurm is not None:
        assert flow == slurm, (directives, slurm, flow)


def _sbatch_says(stack: Stack, *argv: str) -> str:
    """What sbatch's option parsing says of `argv` (--test-only and an empty script: nothing is
    ever submitted, not even by --wrap=x)."""
    done = subprocess.run(
        ["sbatch", "--test-only", *argv],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **stack.env},
    )
    return done.stderr


def test_the_option_table_is_sbatchs_own(slurm_stack: Stack) -> None:
    listed: set[str] = set()
    for letter in "abcdefghijklmnopqrstuvwxyz":
        said = _sbatch_says(slurm_stack, f"--{letter}")
        if "is ambiguous" in said:
            listed.update(re.findall(r"'--([a-z-]+)'", said.split("possibilities:")[1]))
        elif "requires an argument" in said or "Batch script" in said:
            listed.add(re.findall(r"'--([a-z-]+)'", said)[0] if "'--" in said else "")
    listed.discard("")
    # --j, --k and --l name one option each: getopt takes them without a word.
    listed.update({"job-name", "kill-on-invalid-dep", "licenses"})
    assert listed == set(LONG_NAMES)
    for name in LONG_NAMES:
        argument = OPTIONS[canonical(name)][1]
        bare, with_value = _sbatch_says(slurm_stack, f"--{name}"), _sbatch_says(slurm_stack, f"--{name}=x")
        if name in ("help", "usage", "version"):
            continue
        assert ("requires an argument" in bare) == (argument == "required"), name
        assert ("doesn't allow an argument" in with_value) == (argument == "none"), name


def test_an_ambiguous_prefix_is_ambiguous_to_sbatch_too(slurm_stack: Stack) -> None:
    said = _sbatch_says(slurm_stack, "--mem-=1")
    assert "option '--mem-=1' is ambiguous; possibilities: '--mem-bind' '--mem-per-cpu' '--mem-per-gpu'" in said


@pytest.mark.parametrize("gres", ["gpu:zero", "gpu:two:2"])
def test_a_gpu_count_spelled_out_never_runs_on_slurm_either(multinode: MultiNode, gres: str) -> None:
    assert slurm_nodes(multinode, f"--gres={gres}") is None
    assert flow_nodes(f"--gres={gres}") is None


def test_output_patterns_name_the_files_slurmd_writes(slurm_stack: Stack) -> None:
    where = slurm_stack.shared / f"patterns-{uuid.uuid4().hex[:8]}"
    where.mkdir(mode=0o777)
    patterns = {
        "plain": ("a_%x_%j_%A_%a_%N_%n_%s_%t_%u_%J_%%_%q_%5j_%3a_%010j_%12j_%3%.out", []),
        "array": ("b_%x_%j_%A_%a_%4a_%N_%u.out", ["--array=3-4"]),
        "escaped": ("c_%j\\x.out", []),
    }
    # Each job says who it is: its array index, its own job id, the array's, its host and user.
    fields = "$SLURM_JOB_NAME|${SLURM_ARRAY_TASK_ID:-}|$SLURM_JOB_ID|${SLURM_ARRAY_JOB_ID:-}|$(hostname)|$(id -un)"
    report = f'echo "{fields}" >> {where}/ids'
    for label, (pattern, extra) in patterns.items():
        slurm_stack.sbatch(
            f"#!/bin/bash\n{report}\n", f"--job-name={label}.x y", f"--chdir={where}", f"--output={pattern}", *extra
        )
    ids = where / "ids"
    wait_until(lambda: ids.exists() and len(ids.read_text().splitlines()) == 4, 60, interval=0.2)
    expected: set[str] = set()
    for line in ids.read_text().splitlines():
        name, index, job, array_job, host, user = line.split("|")
        values = PatternValues(
            job_id=int(job),
            job_name=name,
            user=user,
            node=host,
            array_job_id=int(array_job) if array_job else None,
            array_index=int(index) if index else None,
        )
        expected.add(expand_filename_pattern(patterns[name.split(".")[0]][0], values))
    assert "c_%jx.out" in expected and any(e.startswith("a_plain.x y_") for e in expected)
    wait_until(lambda: {p.name for p in where.iterdir()} - {"ids"} == expected, 60, interval=0.2)
