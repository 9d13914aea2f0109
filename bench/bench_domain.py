"""Times the instance-type core: parsing and offer matching, each against a floor.

Run: python bench/bench_domain.py

Each figure is a median of repeated runs. The floor is the cheapest Python doing the same number
of items (a `str.lower()` per string, a bare `sorted()` of 10,000 tuples), measured in the same
run on the same machine, so the ratio says how much the real work costs over Python's own
baseline, whatever the machine. Nothing is asserted; read the table.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flow.domain.instances.instance_types import InstanceType, parse_instance_type
from flow.domain.instances.matching import Offer, Requirements, explain_no_match, match_offers

PARSE_COUNT = 100_000
OFFER_COUNT = 10_000
MATCH_RUNS = 50
EXPLAIN_RUNS = 11
PARSE_RUNS = 7

# What users and providers write, typos included, in rough proportion.
REALISTIC_TEXTS = (
    "a100",
    "4xa100",
    "8xh100",
    "h100",
    "A100:8",
    "2x a100",
    "8x H100",
    "a100-40gb",
    "4xa100-40gb",
    "a100-80gb.sxm.4x",
    "h100-80gb.pcie.1x",
    "l40s",
    "t4",
    "cpu",
    "rtx-a6000",
    "h200.8x",
    "a10o",  # typo: goes through the "did you mean" path
    "0xa100",  # error: bad count
)

MODELS = (
    ("h100", 80, "sxm"),
    ("a100", 80, "sxm"),
    ("a100", 40, "sxm"),
    ("l40s", 48, "pcie"),
    ("a10", 24, "pcie"),
    ("t4", 16, "pcie"),
)
REGIONS = (
    "us-central1-a",
    "us-central1-b",
    "us-east1-a",
    "eu-central1-a",
    "me-central1-a",
)


def synthetic_offers(count: int) -> list[Offer]:
    """A deterministic catalog with a realistic spread of sizes, prices, regions and capacity."""
    offers = []
    for index in range(count):
        model, memory, form = MODELS[index % len(MODELS)]
        gpus = (1, 2, 4, 8)[index // 7 % 4]
        price = (index * 7919 % 4000 + 100) * 10_000 * gpus  # $1.00..$41.00 per GPU-hour
        offers.append(
            Offer(
                offer_id=f"offer-{index:05d}",
                provider=("mithril", "local", "slurm")[index % 3],
                instance_type=InstanceType(model, memory, form, gpus),
                price_per_hour_micros=price,
                region=REGIONS[index // 3 % len(REGIONS)],
                available=(None, 0, 1, 4)[index // 11 % 4],
            )
        )
    return offers


def median_seconds(work: Callable[[], object], runs: int) -> float:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main() -> None:
    texts = [REALISTIC_TEXTS[i % len(REALISTIC_TEXTS)] for i in range(PARSE_COUNT)]
    offers = synthetic_offers(OFFER_COUNT)
    tuples = [(o.price_per_hour_micros, o.offer_id) for o in offers]
    seed = Requirements(gpu_memory_gb=80, max_price_micros=10_000_000, region="us-central1-b")
    everything = Requirements()
    hopeless = Requirements(gpu_memory_gb=80, max_price_micros=500_000, region="us-central1-b")

    def explain_hopeless() -> object:
        return explain_no_match(hopeless, match_offers(hopeless, offers))

    lower_floor = ("str.lower() each", lambda: [t.lower() for t in texts])
    sort_floor = (f"sorted() {OFFER_COUNT:,} tuples", lambda: sorted(tuples))
    cases: list[tuple[str, Callable[[], object], int, tuple[str, Callable[[], object]]]] = [
        (
            f"parse {PARSE_COUNT:,} instance types",
            lambda: [parse_instance_type(t) for t in texts],
            PARSE_RUNS,
            lower_floor,
        ),
        (
            f"match seed request x {OFFER_COUNT:,}",
            lambda: match_offers(seed, offers),
            MATCH_RUNS,
            sort_floor,
        ),
        (
            f"match {{}} x {OFFER_COUNT:,} (rank all)",
            lambda: match_offers(everything, offers),
            MATCH_RUNS,
            sort_floor,
        ),
        (
            f"no match + explain x {OFFER_COUNT:,}",
            explain_hopeless,
            EXPLAIN_RUNS,
            sort_floor,
        ),
    ]
    print(f"{'benchmark':<34} {'median':>10}   {'floor':<22} {'median':>10} {'ratio':>7}")
    for name, work, runs, (floor_name, floor_work) in cases:
        seconds = median_seconds(work, runs)
        floor_seconds = median_seconds(floor_work, runs)
        print(
            f"{name:<34} {seconds * 1e3:>8.2f}ms   {floor_name:<22} "
            f"{floor_seconds * 1e3:>8.2f}ms {seconds / floor_seconds:>6.1f}x"
        )
    seed_result = match_offers(seed, offers)
    print(
        f"(seed request: gpu_memory_gb=80, max_price=$10/h, region=us-central1-b -> "
        f"{len(seed_result.matches)} matches of {OFFER_COUNT:,}; reasons for the "
        "rejections are written only when asked for, as in the explain row)"
    )


if __name__ == "__main__":
    main()
