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

from flow.domain.instance_types import InstanceType, parse_instance_type
from flow.domain.matching import Offer, Requirements, match_offers

PARSE_COUNT = 100_000
OFFER_COUNT = 10_000
MATCH_RUNS = 50
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
        price = (
            (index * 7919 % 4000 + 100) * 10_000 * gpus
        )  # $1.00..$41.00 per GPU-hour
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
    request = Requirements(
        gpu_memory_gb=80, max_price_micros=10_000_000, region="us-central1-b"
    )
    tuples = [(o.price_per_hour_micros, o.offer_id) for o in offers]
    matched = match_offers(request, offers)

    rows = [
        (
            f"parse {PARSE_COUNT:,} instance types",
            median_seconds(lambda: [parse_instance_type(t) for t in texts], PARSE_RUNS),
            "str.lower() each",
            median_seconds(lambda: [t.lower() for t in texts], PARSE_RUNS),
        ),
        (
            f"match 1 request x {OFFER_COUNT:,} offers",
            median_seconds(lambda: match_offers(request, offers), MATCH_RUNS),
            f"sorted() {OFFER_COUNT:,} tuples",
            median_seconds(lambda: sorted(tuples), MATCH_RUNS),
        ),
    ]
    print(
        f"{'benchmark':<34} {'median':>10}   {'floor':<22} {'median':>10} {'ratio':>7}"
    )
    for name, seconds, floor_name, floor_seconds in rows:
        ratio = seconds / floor_seconds
        print(
            f"{name:<34} {seconds * 1e3:>8.2f}ms   {floor_name:<22} "
            f"{floor_seconds * 1e3:>8.2f}ms {ratio:>6.1f}x"
        )
    print(
        f"(match request: gpu_memory_gb=80, max_price=$10/h, region=us-central1-b -> "
        f"{len(matched.matches)} matches, {len(matched.rejections)} rejections)"
    )


if __name__ == "__main__":
    main()
