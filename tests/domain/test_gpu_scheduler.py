"""The local GPU scheduler and inventory, driven by synthetic inventories."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from flow.domain.instances.gpu_inventory import Gpu, describe_inventory, gpu_from_device, local_offers
from flow.domain.instances.gpu_scheduler import GpuRequest, choose_gpus, fits_ever, next_starts
from flow.domain.instances.matching import Requirements, match_offers


def gpu(index: int, model: str = "a100", memory: int = 80) -> Gpu:
    return Gpu(index, f"GPU-{index}", model, memory, "sxm", f"NVIDIA {model.upper()}")


EIGHT_A100 = tuple(gpu(i) for i in range(8))
MIXED = (gpu(0, "a100", 40), gpu(1, "a100", 80), gpu(2, "t4", 16), gpu(3, "a100", 80))


def test_device_names_map_onto_the_catalog() -> None:
    cases = {
        ("NVIDIA H200", 143771): ("h200", 141, "sxm"),
        ("NVIDIA H100 80GB HBM3", 81559): ("h100", 80, "sxm"),
        ("NVIDIA H100 PCIe", 81559): ("h100", 80, "pcie"),
        ("NVIDIA A100-SXM4-80GB", 81920): ("a100", 80, "sxm"),
        ("NVIDIA A100-PCIE-40GB", 40960): ("a100", 40, "pcie"),
        ("NVIDIA A10G", 23028): ("a10g", 24, "pcie"),
        ("NVIDIA A10", 23028): ("a10", 24, "pcie"),
        ("Tesla T4", 15360): ("t4", 16, "pcie"),
        ("NVIDIA L40S", 46068): ("l40s", 48, "pcie"),
        ("Tesla V100-SXM2-32GB", 32768): ("v100", 32, "sxm"),
        ("NVIDIA RTX A6000", 49140): ("a6000", 48, "pcie"),
    }
    for (name, mib), expected in cases.items():
        found = gpu_from_device(0, "GPU-x", name, mib)
        assert (found.model, found.memory_gb, found.form_factor) == expected, name


def test_an_unknown_device_is_kept_with_its_own_name() -> None:
    found = gpu_from_device(3, "GPU-y", "NVIDIA GeForce RTX 4090", 24564)
    assert (found.index, found.model, found.memory_gb) == (3, "4090", 24)


def test_offers_are_cpu_plus_one_to_n_of_each_kind() -> None:
    names = [o.offer_id for o in local_offers(MIXED, "local")]
    assert names == ["local-cpu", "local-a100-40gb-1x", "local-a100-80gb-1x", "local-a100-80gb-2x", "local-t4-16gb-1x"]
    assert describe_inventory(MIXED) == "1x a100-40gb (GPU 0), 2x a100-80gb (GPUs 1, 3), 1x t4-16gb (GPU 2)"
    assert describe_inventory(()) == "no GPUs"


def test_placement_picks_the_smallest_fitting_instance_through_the_matcher() -> None:
    offers = local_offers(EIGHT_A100, "local")
    best = match_offers(Requirements(gpu_type="a100", gpu_memory_gb=80, min_gpu_count=2), offers).matches[0]
    assert best.instance_type.count == 2
    by_memory = match_offers(Requirements(gpu_memory_gb=40), local_offers(MIXED, "local")).matches[0]
    assert (by_memory.instance_type.model, by_memory.instance_type.memory_gb, by_memory.instance_type.count) == (
        "a100",
        40,
        1,
    )


def test_requests_this_machine_can_never_run_are_known_at_once() -> None:
    assert fits_ever(GpuRequest("t", 8, "a100", 80), EIGHT_A100)
    assert not fits_ever(GpuRequest("t", 9, "a100", 80), EIGHT_A100)
    assert not fits_ever(GpuRequest("t", 1, "h100", 80), EIGHT_A100)
    assert not fits_ever(GpuRequest("t", 3, "a100", 80), MIXED)  # only two 80 GB A100s
    assert fits_ever(GpuRequest("t", 3, "a100", 40), MIXED)


def test_the_smallest_qualifying_gpus_are_chosen() -> None:
    assert choose_gpus(GpuRequest("t", 1, None, 16), MIXED) == (2,)  # the T4, keeping the A100s
    assert choose_gpus(GpuRequest("t", 2, "a100", 40), MIXED) == (0, 1)


def test_fifo_the_head_waits_and_nothing_overtakes_it() -> None:
    busy = {"running": (0, 1, 2, 3, 4, 5, 6)}
    queue = [GpuRequest("big", 2), GpuRequest("small", 1)]
    assert next_starts(EIGHT_A100, busy, queue) == ()  # one GPU free: "big" waits, "small" too
    assert next_starts(EIGHT_A100, {}, queue) == (("big", (0, 1)), ("small", (2,)))


def test_a_gpu_freed_starts_the_next_in_line() -> None:
    one = (gpu(0),)
    queue = [GpuRequest("second", 1), GpuRequest("third", 1)]
    assert next_starts(one, {"first": (0,)}, queue) == ()
    assert next_starts(one, {}, queue) == (("second", (0,)),)


requests = st.lists(
    st.builds(
        GpuRequest,
        task_id=st.uuids().map(str),
        count=st.integers(1, 4),
        model=st.sampled_from([None, "a100", "t4"]),
        min_memory_gb=st.sampled_from([0, 16, 40, 80]),
    ),
    max_size=12,
)


@settings(max_examples=300)
@given(requests, st.data())
def test_no_gpu_is_ever_given_to_two_running_tasks(queue: list[GpuRequest], data: st.DataObject) -> None:
    """Simulate arrivals and departures; at every step the running tasks' GPUs are disjoint."""
    inventory = (*MIXED, gpu(4, "t4", 16), gpu(5))
    busy: dict[str, tuple[int, ...]] = {}
    waiting = [r for r in queue if fits_ever(r, inventory)]
    for _ in range(30):
        for task_id, gpus in next_starts(inventory, busy, waiting):
            busy[task_id] = gpus
            waiting = [r for r in waiting if r.task_id != task_id]
        held = [i for gpus in busy.values() for i in gpus]
        assert len(held) == len(set(held))
        assert set(held) <= {g.index for g in inventory}
        for task_id, gpus in busy.items():
            request = next(r for r in queue if r.task_id == task_id)
            assert len(gpus) == request.count
            assert all(request.accepts(next(g for g in inventory if g.index == i)) for i in gpus)
        if not busy:
            # An idle machine always starts the head (it fits by construction): nobody starves.
            assert not waiting
            break
        done = data.draw(st.sampled_from(sorted(busy)))
        del busy[done]
