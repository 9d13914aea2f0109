"""A small Mithril catalog as the API returns it (plain JSON), for the pure tests."""

from __future__ import annotations

from typing import Any

TYPES: list[dict[str, Any]] = [
    {
        "fid": "it_A1",
        "name": "a100-80gb.sxm.1x",
        "num_cpus": 24,
        "cpu_type": "AMD",
        "ram_gb": 200,
        "num_gpus": 1,
        "gpu_type": "A100",
        "gpu_memory_gb": 80,
        "gpu_socket": "SXM4",
        "local_storage_gb": 1000,
        "ib_count": 0,
        "bridge_count": 0,
        "hourly_price": 1.5,
    },
    {
        "fid": "it_A4",
        "name": "a100-80gb.sxm.4x",
        "num_cpus": 96,
        "cpu_type": "AMD",
        "ram_gb": 800,
        "num_gpus": 4,
        "gpu_type": "A100",
        "gpu_memory_gb": 80,
        "gpu_socket": "SXM4",
        "local_storage_gb": 4000,
        "ib_count": 0,
        "bridge_count": 0,
        "hourly_price": 6.0,
    },
    {
        "fid": "it_H8",
        "name": "h100-80gb.sxm.8x",
        "num_cpus": 192,
        "cpu_type": "Intel",
        "ram_gb": 1800,
        "num_gpus": 8,
        "gpu_type": "H100",
        "gpu_memory_gb": 80,
        "gpu_socket": "SXM5",
        "local_storage_gb": 7800,
        "ib_count": 8,
        "bridge_count": 4,
        "hourly_price": 20.0,
    },
    {
        "fid": "it_L4",
        "name": "l4-24gb.pcie.1x",
        "num_cpus": 8,
        "cpu_type": "Intel",
        "ram_gb": 64,
        "num_gpus": 1,
        "gpu_type": "L4",
        "gpu_memory_gb": 24,
        "gpu_socket": "PCIe",
        "local_storage_gb": 100,
        "ib_count": 0,
        "bridge_count": 0,
        "hourly_price": 0.5,
    },
    {
        "fid": "it_X",
        "name": "mystery.1x",
        "num_cpus": 8,
        "cpu_type": "Intel",
        "ram_gb": 64,
        "num_gpus": 1,
        "gpu_type": "Z9000",
        "gpu_memory_gb": 12,
        "gpu_socket": "PCIe",
        "local_storage_gb": 100,
        "ib_count": 0,
        "bridge_count": 0,
        "hourly_price": 0.5,
    },
]


def auction(fid: str, type_fid: str, region: str, capacity: int, price: str) -> dict[str, Any]:
    return {
        "fid": fid,
        "instance_type": type_fid,
        "region": region,
        "capacity": capacity,
        "last_instance_price": price,
        "adjustable_memory": False,
    }


AVAILABILITY: list[dict[str, Any]] = [
    auction("auc_1", "it_A1", "us-central1-a", 4, "$1.80"),
    auction("auc_2", "it_A1", "us-central1-b", 0, "$1.20"),
    auction("auc_3", "it_A1", "eu-central1-a", 2, "$1,001.00"),
    auction("auc_4", "it_A4", "us-central1-a", 1, "$7.00"),
    auction("auc_5", "it_H8", "us-central1-b", 3, "$24.00"),
    auction("auc_6", "it_L4", "us-central1-a", 5, "$0.60"),
    auction("auc_7", "it_X", "us-central1-a", 5, "$0.10"),
    auction("auc_8", "it_A1", "me-central1-a", 1, "not a price"),
]
