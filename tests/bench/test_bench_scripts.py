"""The benchmark scripts run and print their tables. Timings are not checked: on a shared
machine they say nothing about correctness; read them with `make bench`."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RATIO = re.compile(r"\s\d+(\.\d+)?x$")

SPINE_ROWS = (
    "sdk run(true)+wait",
    "cli flow run --no-upload true",
    "logs 200k lines (20 MB)",
    "cli flow --version",
    "cli flow status (5 tasks)",
    "cli flow status, grpcio path",
    "python: import grpc+flowapi stubs",
    "python: import flow.client",
    "sdk get_task(id)",
)
FUNCTIONS_ROWS = (
    ".remote() noop",
    "cold .remote() noop",
    "invoke() noop",
    "warm .remote() noop",
    "upload_code first",
    "upload_code unchanged",
    "materialize snapshot",
)
DOMAIN_ROWS = (
    "parse 100,000 instance types",
    "match seed request x 10,000",
    "match {} x 10,000 (rank all)",
    "no match + explain x 10,000",
)


def run_script(*args: str, timeout: float) -> str:
    env = dict(os.environ)
    env.pop("FLOW_HOME", None)
    env.pop("FLOW_PROVIDER", None)
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[0]} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def row(output: str, name: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(name + " ")]
    assert len(lines) == 1, f"no single row {name!r} in:\n{output}"
    return lines[0]


def processes_mentioning(text: str) -> list[int]:
    found = []
    needle = text.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if needle in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_spine_quick_prints_every_row_with_a_ratio_and_cleans_up() -> None:
    output = run_script("bench/bench_spine.py", "--quick", timeout=240)
    for name in SPINE_ROWS:
        assert RATIO.search(row(output, name)), row(output, name)
    assert re.search(r"\d", row(output, "raw GetDaemonInfo (unary)"))  # a floor itself: no ratio
    budgets = [line for line in output.splitlines() if line.startswith("budget ")]
    # A budget per goal: the SDK's submit->done, the log stream, every CLI command, the cold start.
    for subject in ("sdk run(true)+wait", "logs 200k lines", "cli flow status (5 tasks)", "cold flow status"):
        assert [line for line in budgets if f"({subject}" in line], (subject, budgets)
    assert all(re.search(r": \d+(\.\d+)? (us|ms|s) \((ok|over)\)$", line) for line in budgets), budgets
    # The daemon is stopped, its home removed, and nothing it started is left.
    home = re.search(r"FLOW_HOME=(/tmp/\S+):", output)
    assert home, output
    assert not Path(home.group(1)).exists()
    assert processes_mentioning(home.group(1)) == []


@pytest.mark.slow
def test_functions_quick_prints_every_row_with_a_ratio_and_cleans_up() -> None:
    output = run_script("bench/bench_functions.py", "--quick", timeout=240)
    for name in FUNCTIONS_ROWS:
        assert RATIO.search(row(output, name)), row(output, name)
    assert re.search(r"\d", row(output, "run(true), no upload"))  # context for materialize: no ratio
    assert "sent by upload_code unchanged: 0 bytes in 0 blobs" in output  # what it sends, not how fast
    budgets = [line for line in output.splitlines() if line.startswith("budget ")]
    assert len(budgets) == 3, output  # .remote(), warm .remote() and the unchanged upload
    for budget in budgets:
        assert re.search(r": \d+(\.\d+)? (us|ms|s) \((ok|over)\)$", budget), output
    # Every daemon is stopped with its home removed, the project and tree are gone, nothing is left.
    homes = re.findall(r"FLOW_HOME=(/tmp/\S+):", output)
    work = re.search(r"project and tree in (/tmp/\S+): removed", output)
    assert homes and work, output
    for path in [*homes, work.group(1)]:
        assert not Path(path).exists(), path
        assert processes_mentioning(path) == [], path


@pytest.mark.slow
def test_domain_prints_every_row_with_a_ratio() -> None:
    output = run_script("bench/bench_domain.py", timeout=120)
    for name in DOMAIN_ROWS:
        assert RATIO.search(row(output, name)), row(output, name)


SLURM_ROWS = (
    "submit->RUNNING (1 task)",
    "20 tasks submit->all RUNNING",
    "squeue calls per poll (20 live)",
)


@pytest.mark.slow
def test_slurm_quick_prints_every_row_with_a_ratio_and_cleans_up() -> None:
    if os.geteuid() != 0:
        pytest.skip("bench_slurm starts the test Slurm (tools/test-stack), which needs root; CI runs as root")
    output = run_script("bench/bench_slurm.py", "--quick", timeout=600)
    for name in SLURM_ROWS:
        assert RATIO.search(row(output, name)), row(output, name)
    assert re.search(r"squeue calls, 20 job ids each", output), output  # one query for every live job
    home = re.search(r"FLOW_HOME=(/tmp/\S+):", output)
    assert home, output
    assert not Path(home.group(1)).exists()
    assert processes_mentioning(home.group(1)) == []


LOCAL_GPUS_ROWS = (
    "schedule 1,000 on 8 GPUs",
    "one scheduling decision",
    'exec "true" round trip',
    "2-node run(true)+wait",
)


@pytest.mark.slow
def test_local_gpus_quick_prints_every_row_with_a_ratio_and_cleans_up() -> None:
    output = run_script("bench/bench_local_gpus.py", "--quick", timeout=240)
    for name in LOCAL_GPUS_ROWS:
        assert RATIO.search(row(output, name)), row(output, name)
    home = re.search(r"FLOW_HOME=(/tmp/\S+):", output)
    assert home, output
    assert not Path(home.group(1)).exists()
    assert processes_mentioning(home.group(1)) == []


VOLUMES_ROWS = (
    "run(true) + 2 volumes",
    "task + s3 mount (small)",
    "s3 sync N small files",
    "s3 sync one large file",
)


@pytest.mark.slow
def test_volumes_quick_prints_every_row_with_a_ratio_and_cleans_up() -> None:
    before = subprocess.run(["losetup", "-nO", "NAME", "-l"], capture_output=True, text=True).stdout.split()
    output = run_script("bench/bench_volumes.py", "--quick", timeout=300)
    for name in VOLUMES_ROWS:
        assert RATIO.search(row(output, name)), row(output, name)
    assert re.search(r"s3 sync throughput: \d+ files/s", output), output
    home = re.search(r"FLOW_HOME=(/tmp/\S+):", output)
    work = re.search(r"S3 server and data in (/tmp/\S+):", output)
    assert home and work, output
    for path in (home.group(1), work.group(1)):
        assert not Path(path).exists(), path
        assert processes_mentioning(path) == [], path
    # Every loop device the volumes used is released.
    after = subprocess.run(["losetup", "-nO", "NAME", "-l"], capture_output=True, text=True).stdout.split()
    assert sorted(after) == sorted(before)


MITHRIL_ROWS = (
    "submit->RUNNING (1 task)",
    "submit->first log line",
    "API requests per poll (20 live)",
    "SSH commands per poll (20 live)",
)


@pytest.mark.slow
def test_mithril_quick_prints_every_row_with_a_ratio_and_cleans_up() -> None:
    output = run_script("bench/bench_mithril.py", "--quick", timeout=600)
    for name in MITHRIL_ROWS:
        assert RATIO.search(row(output, name)), row(output, name)
    # Each poll is batched listings, never a request per task (dict order is arrival order: any).
    listed = re.search(r"requests by path: (\{.*\})", output)
    assert listed, output
    by_path = ast.literal_eval(listed.group(1))
    assert "GET /v2/spot/bids" in by_path, by_path
    assert not [path for path in by_path if path.startswith(("GET /v2/spot/bids/", "GET /v2/instances/"))], by_path
    assert "20 tasks on 10 instance addresses" in output  # one kept-open connection per address
    assert "violations: 0" in output  # every request the provider made fits the spec
    home = re.search(r"FLOW_HOME=(/tmp/\S+):", output)
    assert home, output
    assert not Path(home.group(1)).exists()
    assert processes_mentioning(home.group(1)) == []


STREAMS_ROWS = (
    "health p99, 200 followers+200 waiters",
    "flowd peak RSS, tail_lines=10 on 64 MB log",
    "stream 64 MB log with a 4 MB line",
)


@pytest.mark.slow
def test_streams_quick_prints_every_row_with_a_ratio_and_cleans_up() -> None:
    output = run_script("bench/bench_streams.py", "--quick", timeout=600)
    for name in STREAMS_ROWS:
        assert RATIO.search(row(output, name)), row(output, name)
    home = re.search(r"FLOW_HOME=(\S+): stopped, home removed", output)
    assert home is not None and not Path(home.group(1)).exists()


SUBMITIT_ROWS = ("flow submit->result", "flow map_array(10)->results")


@pytest.mark.slow
def test_submitit_quick_prints_every_row_against_local_executor_and_cleans_up() -> None:
    pytest.importorskip("submitit")
    output = run_script("bench/bench_submitit.py", "--quick", timeout=600)
    for name in SUBMITIT_ROWS:
        assert RATIO.search(row(output, name)) and "LocalExecutor" in row(output, name), row(output, name)
    home = re.search(r"FLOW_HOME=(/tmp/\S+):", output)
    work = re.search(r"job folders in (/tmp/\S+): removed", output)
    assert home and work, output
    for path in (home.group(1), work.group(1)):
        assert not Path(path).exists(), path
        assert processes_mentioning(path) == [], path


K8S_ROWS = ("submit->RUNNING (1 task)", "submit->first log line", "API requests/s (20 live)")


@pytest.mark.slow
def test_k8s_quick_prints_every_row_with_a_ratio_and_cleans_up() -> None:
    if os.geteuid() != 0:
        pytest.skip("bench_k8s starts the test cluster (tools/k8s-stack), which needs root; CI runs as root")
    output = run_script("bench/bench_k8s.py", "--quick", timeout=600)
    for name in K8S_ROWS:
        assert RATIO.search(row(output, name)), row(output, name)
    home = re.search(r"FLOW_HOME=(/tmp/\S+):", output)
    assert home, output
    assert not Path(home.group(1)).exists()
    assert processes_mentioning(home.group(1)) == []


WAITS_ROWS = (
    "sdk run(true)+wait",
    'task.exec("true")',
    "1,000 true tasks, 16 thr (/task)",
    ".remote() noop, warm worker",
    ".remote() noop, default",
    "upload first",
    "upload unchanged",
    "materialize snapshot",
)
WAITS_VERDICT = re.compile(r"\s\d+(\.\d+)?x\s+(.+ \((ok|over)\)|\(context\))$")


@pytest.mark.slow
def test_waits_quick_prints_a_row_per_goal_with_its_floor_and_cleans_up() -> None:
    output = run_script("bench/bench_waits.py", "--quick", timeout=600)
    assert re.search(r"load average \d+\.\d before, \d+\.\d after", output), output
    for name in WAITS_ROWS:
        assert WAITS_VERDICT.search(row(output, name)), row(output, name)
    assert "again: unchanged uploads sent 0 bytes in all" in output  # what it sends, not how fast
    # Every daemon is stopped with its home removed, the project and tree are gone, nothing is left.
    removed = re.findall(r"^removed: (/tmp/\S+)$", output, re.MULTILINE)
    assert len(removed) >= 3, output
    for path in removed:
        assert not Path(path).exists(), path
        assert processes_mentioning(path) == [], path


DEPENDENCIES_ROWS = (
    "core: check 1,000-task DAG",
    "local: end -> dependent start",
    "flowd: 200-task DAG",
)
DEPENDENCIES_SLURM_ROWS = (
    "slurm: end -> dependent start",
    "slurm after local (held)",
)


@pytest.mark.slow
def test_dependencies_quick_prints_every_row_with_a_ratio_and_cleans_up() -> None:
    output = run_script("bench/bench_dependencies.py", "--quick", timeout=600)
    slurm = DEPENDENCIES_SLURM_ROWS if os.geteuid() == 0 else ()
    if not slurm:
        assert "slurm rows left out: they need the test Slurm" in output, output
    for name in (*DEPENDENCIES_ROWS, *slurm):
        assert RATIO.search(row(output, name)), row(output, name)
    assert re.search(r"flowd: 200-task DAG: 300 dependencies, 2 layers of 100 behind one root", output), output
    homes = re.findall(r"FLOW_HOME=(/tmp/\S+): stopped, home removed", output)
    assert len(homes) == (2 if slurm else 1), output
    for home in homes:
        assert not Path(home).exists(), home
        assert processes_mentioning(home) == [], home
