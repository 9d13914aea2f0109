#!/usr/bin/env python3
"""`nvidia-smi` on a fake Mithril instance (tests/fakes/mithril.py): prints the GPUs of the
instance's type, read from FAKE_MITHRIL_GPU_NAME, FAKE_MITHRIL_GPU_COUNT and
FAKE_MITHRIL_GPU_MEMORY_MIB (set in the startup script's environment; a command run over SSH,
which cannot know its instance on the shared host, sees one NVIDIA A100-SXM4-80GB).

Supported: no arguments (the usual table), `-L` / `--list-gpus`, and
`--query-gpu=FIELDS --format=csv[,noheader][,nounits]` with the fields index, name, uuid,
memory.total, memory.used, memory.free, utilization.gpu, driver_version. Anything else exits 1.
"""

from __future__ import annotations

import os
import sys

DRIVER = "535.129.03"
CUDA = "12.2"


def gpus() -> list[dict[str, str]]:
    name = os.environ.get("FAKE_MITHRIL_GPU_NAME") or "NVIDIA A100-SXM4-80GB"
    count = int(os.environ.get("FAKE_MITHRIL_GPU_COUNT") or "1")
    memory = int(os.environ.get("FAKE_MITHRIL_GPU_MEMORY_MIB") or "81920")
    instance = (os.environ.get("FAKE_MITHRIL_INSTANCE") or "inst_local").encode().hex()[:8].ljust(8, "0")
    return [
        {
            "index": str(i),
            "name": name,
            "uuid": f"GPU-{instance}-{i:04x}-4000-8000-{i:012x}",
            "memory.total": str(memory),
            "memory.used": "0",
            "memory.free": str(memory),
            "utilization.gpu": "0",
            "driver_version": DRIVER,
        }
        for i in range(count)
    ]


def main(argv: list[str]) -> int:
    if not argv:
        print(f"| NVIDIA-SMI {DRIVER}   Driver Version: {DRIVER}   CUDA Version: {CUDA}     |")
        print("| GPU  Name                        | Memory-Usage         | GPU-Util |")
        for gpu in gpus():
            print(f"|  {gpu['index']:>2}  {gpu['name']:<28}|   0MiB / {gpu['memory.total']}MiB |      0% |")
        print("| Processes: none                                                    |")
        return 0
    if argv in (["-L"], ["--list-gpus"]):
        for gpu in gpus():
            print(f"GPU {gpu['index']}: {gpu['name']} (UUID: {gpu['uuid']})")
        return 0
    query = [a.split("=", 1)[1] for a in argv if a.startswith("--query-gpu=")]
    formats = [a.split("=", 1)[1] for a in argv if a.startswith("--format=")]
    if len(query) == 1 and len(formats) == 1 and len(argv) == 2 and formats[0].startswith("csv"):
        fields = [f.strip() for f in query[0].split(",")]
        options = formats[0].split(",")[1:]
        known = set(gpus()[0]) if gpus() else set()
        unknown = [f for f in fields if f not in known]
        if unknown:
            print(f'Field "{unknown[0]}" is not a valid field to query.', file=sys.stderr)
            return 1
        units = {"memory.total": " MiB", "memory.used": " MiB", "memory.free": " MiB", "utilization.gpu": " %"}
        if "noheader" not in options:
            print(
                ", ".join(
                    f + (f" [{units[f].strip()}]" if f in units and "nounits" not in options else "") for f in fields
                )
            )
        for gpu in gpus():
            print(", ".join(gpu[f] + ("" if "nounits" in options else units.get(f, "")) for f in fields))
        return 0
    print(f"nvidia-smi (fake Mithril shim): unsupported arguments {argv}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
