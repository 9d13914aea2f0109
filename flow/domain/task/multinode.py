"""Multi-node tasks on one machine: the pure decisions.

A task with `num_instances=N` runs N node processes. Each gets its share of the task's GPUs and
the variables torch.distributed (and torchrun) read. Convention: every node process is one
worker, so WORLD_SIZE = NNODES = N and RANK = NODE_RANK, with LOCAL_RANK=0 and
LOCAL_WORLD_SIZE=1. That is what `init_process_group("gloo"|"nccl")` with the default env://
init needs in a plain script, and a node that runs `torchrun --nnodes=$NNODES
--node_rank=$NODE_RANK --master_addr=$MASTER_ADDR --master_port=$MASTER_PORT` gets consistent
values too (torchrun then sets RANK, WORLD_SIZE, LOCAL_RANK of its own workers).

The task has one state: it ends when every node has ended; it fails as soon as one node fails
(the others are then stopped) and takes the exit code of the first node that failed.

Logs: each node writes its own file. A stream over all nodes (the default) prefixes each line
with "[node K] " and carries one byte offset per node in its cursor ("c2." + offsets joined by
","); a stream of one node is that node's file as it is, with single-offset cursors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from attrs import frozen
from returns.result import Failure, Result, Success

from flow.domain.errors import DomainError, validation_error, violation

MASTER_ADDR: Final = "127.0.0.1"
MERGED_CURSOR_PREFIX: Final = "c2."
MAX_NODES: Final = 1024


def node_env(node_rank: int, num_nodes: int, master_port: int) -> dict[str, str]:
    """The distributed-training variables of one node process (see the module docstring)."""
    return {
        "MASTER_ADDR": MASTER_ADDR,
        "MASTER_PORT": str(master_port),
        "NODE_RANK": str(node_rank),
        "NNODES": str(num_nodes),
        "WORLD_SIZE": str(num_nodes),
        "RANK": str(node_rank),
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "GROUP_RANK": str(node_rank),
        "FLOW_NODE_RANK": str(node_rank),
        "FLOW_NUM_NODES": str(num_nodes),
    }


def split_gpus(gpus: Sequence[int], num_nodes: int) -> tuple[tuple[int, ...], ...]:
    """The task's GPUs (num_nodes x the per-node count, in index order) as one share per node:
    node K gets the K-th consecutive block."""
    ordered = sorted(gpus)
    per_node = len(ordered) // num_nodes if num_nodes else 0
    return tuple(tuple(ordered[k * per_node : (k + 1) * per_node]) for k in range(num_nodes))


@frozen
class GroupOutcome:
    """What the node exits seen so far mean for the task."""

    stop_others: bool  # a node failed: the nodes still running must be stopped
    finished: bool  # every node has ended: the task ends now
    exit_code: int | None  # once finished: the first failing node's code, else 0; None if unknown
    failed_node: int | None  # the node whose failure decided the outcome


def group_outcome(num_nodes: int, exits: Sequence[tuple[int, int | None]]) -> GroupOutcome:
    """`exits` lists (node, exit code) in the order the nodes were seen to end; None is a node
    that ended without leaving a status (killed while flowd was down). The first node that ended
    with a non-zero (or unknown) status decides the task's outcome."""
    ended: dict[int, int | None] = {}
    failed: tuple[int, int | None] | None = None
    for node, code in exits:
        if node in ended or not 0 <= node < num_nodes:
            continue  # a node ends once; a report about a node we do not have is ignored
        ended[node] = code
        if failed is None and code != 0:
            failed = (node, code)
    finished = len(ended) == num_nodes
    if failed is None:
        return GroupOutcome(stop_others=False, finished=finished, exit_code=0 if finished else None, failed_node=None)
    return GroupOutcome(stop_others=not finished, finished=finished, exit_code=failed[1], failed_node=failed[0])


# --- logs ---------------------------------------------------------------------------------------


def node_violations(node: int | None, num_nodes: int) -> list[str]:
    """Why `node` does not name a node of a task with num_nodes nodes ([] when it does)."""
    if node is None or 0 <= node < num_nodes:
        return []
    return [f"this task has {num_nodes} node{'s' if num_nodes != 1 else ''} (0..{num_nodes - 1})"]


def check_node(node: int | None, num_nodes: int) -> Result[int | None, DomainError]:
    problems = node_violations(node, num_nodes)
    if not problems:
        return Success(node)
    return Failure(
        validation_error(
            [violation("node", node, problems[0], f"give a node rank from 0 to {num_nodes - 1}, or leave node out")],
            subject="log request",
        )
    )


def encode_merged_cursor(offsets: Sequence[int]) -> str:
    return MERGED_CURSOR_PREFIX + ",".join(str(o) for o in offsets)


def decode_merged_cursor(text: str, num_nodes: int) -> Result[tuple[int, ...], DomainError]:
    """The per-node byte offsets a merged cursor names; '' is the beginning of every node."""
    if text == "":
        return Success((0,) * num_nodes)
    parts = text[len(MERGED_CURSOR_PREFIX) :].split(",")
    if (
        text.startswith(MERGED_CURSOR_PREFIX)
        and len(text) <= 24 * num_nodes + 8
        and len(parts) == num_nodes
        and all(p.isascii() and p.isdigit() for p in parts)
    ):
        return Success(tuple(int(p) for p in parts))
    return Failure(
        validation_error(
            [
                violation(
                    "cursor",
                    text,
                    f"is not a cursor of this task's {num_nodes}-node log stream",
                    "pass back the cursor of the last chunk you received with the same node, or '' to start over",
                )
            ],
            subject="log request",
        )
    )


def label_lines(data: bytes, node: int) -> bytes:
    """Whole lines of one node with "[node K] " before each; a last line without its newline
    (the end of a finished node) gets one, so the next node's line starts on a line of its own."""
    if not data:
        return b""
    prefix = b"[node %d] " % node
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join(prefix + line + b"\n" for line in lines)


def unlabel_lines(data: bytes) -> dict[int, bytes]:
    """The inverse of label_lines over a merged stream: each node's bytes (for tests and tools)."""
    out: dict[int, bytes] = {}
    for line in data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"):
        head, sep, rest = line.partition(b"] ")
        if not sep or not head.startswith(b"[node "):
            continue
        node = int(head[len(b"[node ") :])
        out[node] = out.get(node, b"") + rest + b"\n"
    return out
