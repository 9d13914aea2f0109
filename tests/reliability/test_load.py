"""50 concurrent clients, each with its own channel, submitting, polling, listing, following and
cancelling tasks: flowd keeps answering its health check, its memory stays bounded and every task
ends with its output. Figures (requests/s, GetTask p50/p99, the slowest health answer) come from
`bench/bench_reliability.py`; here only what must hold on any machine is asserted."""

from __future__ import annotations

import pytest
from reliability_support import bench_reliability as load

from conftest import Daemon


@pytest.mark.slow
def test_fifty_clients_at_once_lose_nothing_and_flowd_stays_responsive(daemon: Daemon) -> None:
    report = load.load_run(daemon, clients=50, tasks_per_client=4, say=print)
    load.print_load(report)
    assert report.errors == [], "\n".join(report.errors[:40])
    assert report.tasks_checked == 200
    # Liveness, not speed: every health check was answered, SERVING.
    assert report.health_checks > 0
    assert report.health_failures == []
    assert report.health_worst < 30
    assert report.rss_after_kb < 1024 * 1024  # 1 GiB: bounded, generously
