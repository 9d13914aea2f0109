"""Finding this machine's GPUs: NVML (nvidia-ml-py), else `nvidia-smi`, else none.

FLOW_LOCAL_GPUS replaces discovery with a declared inventory, a JSON list such as
`[{"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920}]`: for machines whose driver hides
devices from flowd, and for tests that drive the scheduler with synthetic inventories. (Tasks
then see those indexes in CUDA_VISIBLE_DEVICES whether or not the devices exist.)
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Mapping

from flow.domain.instances.gpu_inventory import Gpu, gpu_from_device

log = logging.getLogger(__name__)
DECLARED_ENV = "FLOW_LOCAL_GPUS"
NVML_LIBRARY = "libnvidia-ml.so.1"  # the name pynvml loads on Linux


class InventoryError(Exception):
    """FLOW_LOCAL_GPUS is not a valid inventory."""


def declared_gpus(text: str) -> tuple[Gpu, ...]:
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise InventoryError(f"{DECLARED_ENV} is not JSON: {exc}") from None
    if not isinstance(items, list):
        raise InventoryError(f"{DECLARED_ENV} must be a JSON list of GPUs")
    gpus = []
    for index, item in enumerate(items):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("name"), str)
            or not isinstance(item.get("memory_mib"), int)
        ):
            raise InventoryError(
                f'{DECLARED_ENV}[{index}] must look like {{"name": "NVIDIA H100", "memory_mib": 81559}}'
            )
        gpus.append(
            gpu_from_device(index, str(item.get("uuid", f"GPU-declared-{index}")), item["name"], item["memory_mib"])
        )
    return tuple(gpus)


def nvml_gpus() -> tuple[Gpu, ...] | None:
    """The GPUs NVML reports; None when NVML is unavailable (no driver, no library)."""
    import ctypes

    try:
        # The driver's library first: importing pynvml costs flowd's start-up more than this
        # probe, and on a machine without NVIDIA's driver it would find nothing anyway.
        ctypes.CDLL(NVML_LIBRARY)
    except OSError:
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            gpus.append(
                gpu_from_device(
                    index,
                    uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                    name.decode() if isinstance(name, bytes) else str(name),
                    int(memory) // 2**20,
                )
            )
        return tuple(gpus)
    except pynvml.NVMLError as exc:
        log.warning("NVML failed while listing GPUs: %s", exc)
        return None
    finally:
        pynvml.nvmlShutdown()


def smi_gpus() -> tuple[Gpu, ...] | None:
    """The GPUs `nvidia-smi` reports; None when it is missing or fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run(
            [smi, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    gpus = []
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[0].isdigit() and parts[3].isdigit():
            gpus.append(gpu_from_device(int(parts[0]), parts[1], parts[2], int(parts[3])))
    return tuple(gpus)


def discover_gpus(env: Mapping[str, str]) -> tuple[tuple[Gpu, ...], str]:
    """The inventory and where it came from ("declared", "nvml", "nvidia-smi" or "none")."""
    declared = env.get(DECLARED_ENV)
    if declared:
        return declared_gpus(declared), "declared"
    found = nvml_gpus()
    if found is not None:
        return found, "nvml"
    found = smi_gpus()
    if found is not None:
        return found, "nvidia-smi"
    return (), "none"
