"""Nodes, tasks and GPUs per node derived from a script's counts as sbatch and slurmctld derive
them. SLURM_SAYS is what `sbatch --test-only -p all` answered on the test stack (four nodes of 8
CPUs and 2 GPUs), kept in tests/fixtures/sbatch/test_only_layouts.json: the node count, or that it
refused; tests/slurm/test_sbatch_layouts.py asks it again, live."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure

from flow.domain.slurm.layout import DEFAULT_NODE_GPUS, Layout, TaskCounts, job_layout
from flow.domain.slurm.sbatch import sbatch_to_configs

LAYOUTS = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "sbatch" / "test_only_layouts.json").read_text()
)
NODE_GPUS, NODE_CPUS = LAYOUTS["node_gpus"], LAYOUTS["node_cpus"]
# (directives, the nodes Flow derives): Slurm's answer, or what Flow does where it runs more
SLURM_SAYS: list[tuple[str, int | None]] = [
    (a["directives"], a.get("flow_nodes", a["nodes"])) for a in LAYOUTS["answers"]
]


def nodes_of(directives: str) -> int | None:
    parsed = sbatch_to_configs(
        f"#!/bin/bash\n#SBATCH {directives}\ntrue\n", node_gpus=NODE_GPUS, cpus_per_node=NODE_CPUS
    )
    return None if isinstance(parsed, Failure) else parsed.unwrap().layout.nodes


@pytest.mark.parametrize(("directives", "nodes"), SLURM_SAYS, ids=[d for d, _ in SLURM_SAYS])
def test_nodes_come_out_as_slurm_allocates_them(directives: str, nodes: int | None) -> None:
    assert nodes_of(directives) == nodes


def test_without_the_clusters_sizes_gpus_fill_8_gpu_nodes_and_cpus_add_no_nodes() -> None:
    def derived(directives: str) -> tuple[int, int, str | None]:
        job = sbatch_to_configs(f"#!/bin/bash\n#SBATCH {directives}\ntrue\n").unwrap()
        config = job.configs[0]
        return config.num_instances, job.layout.gpus_per_node, config.instance_type

    assert derived("--ntasks=16 --ntasks-per-node=8") == (2, 0, None)
    assert derived("--gpus=h100:16") == (2, 8, "8xh100")
    assert derived("--gpus=a100:12") == (2, 6, "6xa100")  # 12 over 2 nodes: 6 each
    assert derived("-n 16 --gpus-per-task=a100:1") == (2, 8, "8xa100")
    assert derived("-n 64 -c 8") == (1, 0, None)  # CPUs per node unknown: one node
    assert derived("--gres=gpu:a100:16") == (1, 16, "16xa100")  # an explicit 16-GPU node stands


def test_notes_say_what_slurm_does_that_the_script_may_not_expect() -> None:
    job = sbatch_to_configs("#!/bin/bash\n#SBATCH -N 3 -n 2\ntrue\n").unwrap()
    assert job.configs[0].num_instances == 2
    assert job.warnings == ("#SBATCH -N 3 (line 2): 2 tasks run on 2 nodes, not 3 (sbatch: can't run 2 on 3)",)
    uneven = sbatch_to_configs("#!/bin/bash\n#SBATCH -N 2 --gpus=a100:3\ntrue\n").unwrap()
    assert uneven.configs[0].instance_type == "2xa100"
    assert "spreads 3 GPUs unevenly over 2 nodes" in uneven.warnings[0]


@pytest.mark.parametrize(
    ("directives", "expected"),
    [
        ("-N 1 -n 4 --ntasks-per-node=2", "#SBATCH -n (line 2): 4 tasks do not fit on 1 nodes of 2 tasks each"),
        ("--gpus=4 --gpus-per-task=1 --ntasks-per-node=1", "#SBATCH --gpus (line 2): with --gpus-per-task=1 makes 4"),
        ("--gpus=3 --gpus-per-task=2", "#SBATCH --gpus (line 2): 3 GPUs are not a multiple of --gpus-per-task=2"),
        ("--gpus-per-task=1", "#SBATCH --gpus-per-task (line 2): needs a task count"),
        ("--gres=gpu:100", "#SBATCH --gres (line 2): asks for 100 GPUs on one node, more than the 64"),
        ("--ntasks=2000 --ntasks-per-node=1", "#SBATCH --ntasks (line 2): comes to 2000 nodes, more than 1024"),
    ],
)
def test_what_slurm_refuses_is_refused_naming_the_directive(directives: str, expected: str) -> None:
    parsed = sbatch_to_configs(f"#!/bin/bash\n#SBATCH {directives}\ntrue\n")
    assert isinstance(parsed, Failure)
    rendered = [v.render() for v in parsed.failure().violations]
    assert any(expected in r for r in rendered), rendered


COUNT = st.none() | st.integers(1, 40)
SMALL = st.none() | st.integers(1, 6)


@given(
    nodes=COUNT,
    ntasks=COUNT,
    per_node=SMALL,
    cpus=SMALL,
    gpus=st.none() | st.integers(1, 32),
    gpn=st.none() | st.integers(1, 8),
    gpt=st.none() | st.integers(1, 4),
    node_gpus=st.none() | st.integers(1, 8),
    node_cpus=st.none() | st.integers(1, 64),
)
def test_a_layout_holds_what_was_asked_for(
    nodes: int | None,
    ntasks: int | None,
    per_node: int | None,
    cpus: int | None,
    gpus: int | None,
    gpn: int | None,
    gpt: int | None,
    node_gpus: int | None,
    node_cpus: int | None,
) -> None:
    asked = TaskCounts(
        nodes=nodes,
        ntasks=ntasks,
        ntasks_per_node=per_node,
        cpus_per_task=cpus,
        gpus=gpus,
        gpus_per_node=gpn,
        gpus_per_task=gpt,
    )
    layout = job_layout(asked, node_gpus=node_gpus, cpus_per_node=node_cpus)
    if not isinstance(layout, Layout):
        assert layout and all(p.problem and p.fix for p in layout)
        return
    assert layout.nodes >= 1 and layout.ntasks >= 1
    if nodes is not None:
        assert layout.nodes == (min(nodes, ntasks) if ntasks is not None else nodes)
    else:
        # The fewest nodes: one less would not hold the tasks at --ntasks-per-node.
        if per_node and ntasks:
            assert layout.nodes >= math.ceil(ntasks / per_node)
        if layout.nodes > 1 and not (gpus or gpt or node_cpus):
            assert per_node and ntasks and (layout.nodes - 1) * per_node < ntasks
    if ntasks is not None:
        assert layout.ntasks == ntasks
    if gpus:
        assert layout.nodes * layout.gpus_per_node >= gpus  # every GPU asked for has a place
    if gpt:
        assert layout.nodes * layout.gpus_per_node >= gpt * layout.ntasks or gpn is not None
    assert layout.gpus_per_node <= (node_gpus or 64)
    if gpn is not None:
        assert layout.gpus_per_node == gpn
    if node_gpus is None and gpus and gpn is None and gpt is None and nodes is None and not per_node:
        assert layout.gpus_per_node <= DEFAULT_NODE_GPUS or layout.nodes > 1
