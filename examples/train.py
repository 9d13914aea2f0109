"""A stand-in training script. It imports nothing from Flow: run it as a task with
`flow run "python3 train.py --epochs 3"` (what `make run` does), or `flow run job.yaml`."""

from __future__ import annotations

import argparse
import math
import os
import time


def train_model(data_path: str = "synthetic", epochs: int = 3, steps: int = 5) -> dict[str, float]:
    """Pretends to train: prints a decreasing loss and returns the final metrics."""
    loss = 2.0
    for epoch in range(1, epochs + 1):
        for step in range(1, steps + 1):
            loss *= 0.9
            print(f"epoch {epoch}/{epochs} step {step}/{steps} loss: {loss:.4f}", flush=True)
            time.sleep(0.05)
    accuracy = round(1.0 - math.exp(-epochs * steps / 10), 4)
    return {"accuracy": accuracy, "loss": round(loss, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default="synthetic")
    args = parser.parse_args()
    task = os.environ.get("FLOW_TASK_ID", "(not under flow)")
    # Flow sets CUDA_VISIBLE_DEVICES to the task's GPUs: empty for a task that asked for none.
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES") or "none"
    print(f"task {task}: training on {args.data}, GPUs: {gpus}", flush=True)
    metrics = train_model(args.data, epochs=args.epochs)
    print(f"done: accuracy={metrics['accuracy']} loss={metrics['loss']}", flush=True)


if __name__ == "__main__":
    main()
