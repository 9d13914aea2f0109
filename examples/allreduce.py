"""A torch.distributed all-reduce across the nodes of a Flow task, from the torchrun variables
flowd gives every node (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, ...).

    flow run --num-instances 2 -- python allreduce.py          # gloo, on CPUs
    flow run --num-instances 2 -i a100 -- python allreduce.py  # nccl, one GPU per node

Each node contributes rank+1; every node prints the sum, 1 + 2 + ... + WORLD_SIZE.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def main() -> int:
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)  # env:// : MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", 0) if backend == "nccl" else torch.device("cpu")
    value = torch.tensor([float(rank + 1)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    expected = world * (world + 1) / 2
    print(
        f"node {os.environ.get('NODE_RANK')} rank {rank}/{world} ({backend}): "
        f"all_reduce sum = {value.item():g}, expected {expected:g}"
    )
    dist.destroy_process_group()
    return 0 if value.item() == expected else 1


if __name__ == "__main__":
    sys.exit(main())
