"""How many nodes, tasks and GPUs per node an sbatch script's counts come to, as Slurm makes them.

Each rule was confirmed with `sbatch --test-only` on the test stack's Slurm 22.05 (partition `all`:
four nodes of 8 CPUs and 2 GPUs; tests/slurm/test_sbatch_layouts.py checks them against it):

- Tasks: `-n` if given; else sbatch sets nodes x ntasks-per-node, or one task per node of `-N`
  without `-c` (`-N 2 --gpus-per-task=1` runs 2 tasks); else `--gpus` / `--gpus-per-task`
  when both are given (`--gpus=4 --gpus-per-task=2`: 2 tasks). Where these disagree sbatch refuses
  ("Based on --gpus and --gpus-per-task number of requested tasks differ from -n/--ntasks"), as it
  does for `--gpus` not a multiple of `--gpus-per-task`, and for `--gpus-per-task` with no task
  count at all ("used without either --gpus or -n/--ntasks is not allowed").
- Nodes, when `--nodes` is given: that many, but never more than `-n` tasks (`-N 3 -n 2` runs on
  2: "can't run 2 processes on 3 nodes, setting nnodes to 2"); more tasks than nodes x
  ntasks-per-node is refused ("Requested node configuration is not available"), and so are fewer
  `--gpus` than nodes ("--gpus < -N"). `--ntasks-per-node` without `-n` puts exactly that many
  tasks on each node: one node, or as many as `--gpus` needs.
- Nodes, when it is not: the fewest nodes that hold everything, each node taking as many tasks as
  ntasks-per-node, its GPUs (per task) and its CPUs (per task) allow: `-n 4 --ntasks-per-node=2`
  is 2 nodes, `-n 3 --ntasks-per-node=2` 2, `-n 3 --gpus-per-task=2` on 2-GPU nodes 3,
  `--gpus=6` on 2-GPU nodes 3, `--gpus=4 --gpus-per-node=2` 2, `-n 12` on 8-CPU nodes 2; CPUs
  count in all, not task by task (`-n 5 -c 3` on 8-CPU nodes is 2 nodes, 15 CPUs). The GPUs
  and CPUs a node has belong to the cluster: `node_gpus` (default: unknown, taken as the 8 GPUs of
  the largest common nodes) and `cpus_per_node` (default: unknown, so CPUs never add nodes).
- GPUs per node: `--gres=gpu:N` / `--gpus-per-node` as given; `--gpus` spread over the nodes
  (Slurm allows an uneven spread, 3 over 2 nodes as 2+1; Flow's nodes are alike, so each gets
  the most any one gets); `--gpus-per-task` times `--ntasks-per-node` (Slurm sets that many
  tasks' GPUs aside on every node, even for fewer tasks: `-n 3 --ntasks-per-node=4
  --gpus-per-task=1` is refused on 2-GPU nodes, and so is `-n 2 -c 3 --ntasks-per-node=3` on
  8-CPU ones), else times the tasks of the fullest node.
"""

from __future__ import annotations

import math
from typing import Final

from attrs import frozen

from flow.domain.instances.instance_types import MAX_GPUS_PER_INSTANCE

# The GPUs of a node when the cluster's are unknown: the 8 of the largest common nodes (HGX/DGX,
# and Flow's largest instances), so --gpus=16 comes to 2 nodes as on such a cluster.
DEFAULT_NODE_GPUS: Final = 8


@frozen
class TaskCounts:
    """The counts a script gives (None: not given); GPU counts without their types."""

    nodes: int | None = None
    ntasks: int | None = None
    ntasks_per_node: int | None = None
    cpus_per_task: int | None = None
    gpus: int | None = None  # --gpus: in all
    gpus_per_node: int | None = None  # --gres=gpu:N or --gpus-per-node
    gpus_per_task: int | None = None


@frozen
class Layout:
    nodes: int
    ntasks: int
    gpus_per_node: int
    notes: tuple[str, ...] = ()  # what Slurm would do that the script may not expect


ONE_NODE = Layout(nodes=1, ntasks=1, gpus_per_node=0)  # a script that asks for no counts at all


@frozen
class LayoutProblem:
    """A count Slurm would refuse: the option (long name) to blame, why, and a fix."""

    option: str
    problem: str
    fix: str


def job_layout(
    asked: TaskCounts,
    *,
    node_gpus: int | None = None,
    cpus_per_node: int | None = None,
) -> Layout | tuple[LayoutProblem, ...]:
    """The layout sbatch and the controller make of `asked` on nodes of `node_gpus` GPUs (None:
    unknown; DEFAULT_NODE_GPUS for deriving counts, and at most MAX_GPUS_PER_INSTANCE asked for
    one node) and `cpus_per_node` CPUs (None: as many as needed); the problems Slurm refuses."""
    most = node_gpus or MAX_GPUS_PER_INSTANCE
    problems: list[LayoutProblem] = []
    notes: list[str] = []
    nodes, ntasks, per_task = asked.nodes, asked.ntasks, asked.ntasks_per_node
    gpus, gpn, gpt = asked.gpus, asked.gpus_per_node, asked.gpus_per_task
    tasks = ntasks
    told = "-n/--ntasks"
    # sbatch's own task count: nodes x --ntasks-per-node, or one task per node of -N, though not
    # with -c (it takes `-N 1 --gpus-per-task=1` and refuses `-N 1 -c 1 --gpus-per-task=1`; it
    # refuses `-N 2 --gpus=4 --gpus-per-task=1`, 4 tasks for 2, and runs it with -c 1).
    if tasks is None and per_task is not None:
        tasks = (nodes or 1) * per_task
        told = "--nodes x --ntasks-per-node"
    elif tasks is None and nodes is not None and asked.cpus_per_task is None:
        tasks = nodes
        told = "--nodes (one task per node)"
    # The tasks whose CPUs Slurm counts: not those --gpus / --gpus-per-task make (`-c 5 --gpus=2
    # --gpus-per-task=1` takes 5 CPUs on one node, though SLURM_NTASKS is 2).
    cpu_tasks = tasks
    if gpus and gpt:
        if gpus % gpt:
            problems.append(
                LayoutProblem("gpus", f"{gpus} GPUs are not a multiple of --gpus-per-task={gpt}", "make them one")
            )
        elif tasks is not None and tasks != gpus // gpt:
            problems.append(
                LayoutProblem(
                    "gpus",
                    f"with --gpus-per-task={gpt} makes {gpus // gpt} tasks, and {told} makes {tasks}",
                    "give the task count one way: drop --gpus, or -n/--ntasks",
                )
            )
        else:
            tasks = gpus // gpt
    if gpt and tasks is None:
        problems.append(
            LayoutProblem(
                "gpus-per-task",
                "needs a task count (sbatch refuses --gpus-per-task without --gpus or -n/--ntasks)",
                "add --ntasks (or --nodes, --ntasks-per-node or --gpus)",
            )
        )
    size = gpn or node_gpus or DEFAULT_NODE_GPUS  # the GPUs of one node, for how many nodes
    # How many tasks a node's resources hold: its GPUs, and its CPUs when they are known.
    holds: list[tuple[int, str]] = []
    if gpt:
        if gpt > size:
            problems.append(
                LayoutProblem(
                    "gpus-per-task",
                    f"asks for {gpt} GPUs per task, more than a node's {size}",
                    f"ask for at most {size} GPUs per task",
                )
            )
        holds.append((max(1, size // gpt), f"{size} GPUs a node at {gpt} per task"))
    cpt = asked.cpus_per_task or 1
    if cpus_per_node is not None and (per_task or (ntasks is not None and (gpus or gpn or gpt))):
        # CPUs count in all, not task by task (`-n 5 -c 3` on 8-CPU nodes is 2 nodes), except for
        # the --ntasks-per-node tasks' worth Slurm sets aside on a node, and for -n tasks that ask
        # for GPUs, which Slurm places task by task (`-n 3 -c 5 --gpus=3` on 8-CPU nodes is 3).
        holds.append((max(1, cpus_per_node // cpt), f"{cpus_per_node} CPUs a node at {cpt} per task"))
    held = min(holds, default=None)
    if per_task and held is not None and per_task > held[0]:
        # Slurm sets aside --ntasks-per-node tasks' worth on every node, even for fewer tasks
        # (`-n 1 --ntasks-per-node=2 --gpus-per-task=1` on 2-GPU nodes... fits; on 1-GPU ones not).
        problems.append(
            LayoutProblem(
                "ntasks-per-node",
                f"puts {per_task} tasks on a node that holds {held[0]} ({held[1]})",
                f"ask for at most --ntasks-per-node={held[0]}",
            )
        )
    # The tasks one node takes: --ntasks-per-node, and what its resources hold.
    fit = min([f for f, _ in holds] + ([per_task] if per_task else []), default=None)
    if nodes is None and ntasks is None and per_task is not None and not (gpus and gpt):
        # --ntasks-per-node without -n is that many tasks on every node: on one node, unless
        # --gpus needs more (`--ntasks-per-node=2 --gpus=3` on 2-GPU nodes: 2 nodes, 4 tasks).
        count = math.ceil(gpus / size) if gpus else 1
        tasks = count * per_task
    elif nodes is not None:
        count = nodes
        if ntasks is not None and ntasks < nodes:
            count = ntasks
            notes.append(f"{ntasks} tasks run on {ntasks} nodes, not {nodes} (sbatch: can't run {ntasks} on {nodes})")
        if gpus and gpus < count:
            problems.append(
                LayoutProblem(
                    "gpus", f"gives {count} nodes only {gpus} GPUs (sbatch: --gpus < -N)", "ask for a GPU a node"
                )
            )
        if fit is not None and tasks is not None and tasks > count * fit:
            problems.append(
                LayoutProblem(
                    "ntasks",
                    f"{tasks} tasks do not fit on {count} nodes of {fit} tasks each",
                    f"ask for {math.ceil(tasks / fit)} nodes, or fewer tasks",
                )
            )
        elif cpus_per_node is not None and cpu_tasks is not None and cpu_tasks * cpt > count * cpus_per_node:
            problems.append(
                LayoutProblem(
                    "ntasks",
                    f"{cpu_tasks} tasks of {cpt} CPUs do not fit on {count} nodes of {cpus_per_node} CPUs",
                    f"ask for {math.ceil(cpu_tasks * cpt / cpus_per_node)} nodes, or fewer tasks",
                )
            )
    else:
        bounds = [1]
        if tasks and fit is not None:
            bounds.append(math.ceil(tasks / fit))
        if cpu_tasks and cpus_per_node is not None:
            bounds.append(math.ceil(cpu_tasks * cpt / cpus_per_node))
        if gpus and not gpt:
            bounds.append(math.ceil(gpus / size))
        count = max(bounds)
    if gpn is not None:
        per_node = gpn
        if gpus is not None and gpus > count * gpn:
            problems.append(
                LayoutProblem(
                    "gpus",
                    f"asks for {gpus} GPUs, and {count} nodes of {gpn} GPUs hold {count * gpn}",
                    "ask for GPUs one way, e.g. only --gpus-per-node",
                )
            )
    elif gpus is not None:
        per_node = math.ceil(gpus / count)
        if gpus % count:
            notes.append(
                f"Slurm spreads {gpus} GPUs unevenly over {count} nodes; "
                f"Flow's nodes are alike, each with {per_node} ({per_node * count} in all)"
            )
    elif gpt and tasks is not None:
        per_node = gpt * (per_task or math.ceil(tasks / count))  # Slurm sets aside per_task's worth
    else:
        per_node = 0
    if per_node > most:
        problems.append(
            LayoutProblem(
                "gpus-per-node",
                f"asks for {per_node} GPUs on one node, more than the {most} a node has",
                f"ask for at most {most} GPUs per node, and more nodes",
            )
        )
    if problems:
        return tuple(problems)
    return Layout(nodes=count, ntasks=tasks if tasks is not None else count, gpus_per_node=per_node, notes=tuple(notes))
