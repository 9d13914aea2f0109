"""Times volumes and s3:// data mounts against a real flowd and a real S3-compatible server.

Run: .venv/bin/python bench/bench_volumes.py [--quick]   (as root: volumes are loop-mounted images)

The daemon is private, in a fresh FLOW_HOME directly under /tmp (harness.BenchDaemon), and is
stopped with its home removed at the end; the S3 server (tools/s3-server, moto) is started for
the run and stopped after it, and every loop device and mount is released. Every row is measured
against a floor measured in the same run, on the same machine; one table is printed (median,
p90, floor, ratio), then throughputs. Nothing is asserted.

Rows:
  run(true) + 2 volumes     submit -> COMPLETED of `true` with two volumes attached (a private
                            mount namespace, a tmpfs on /volumes and two binds); floor: the same
                            task without volumes, interleaved run by run
  task + s3 mount (small)   submit -> COMPLETED of `true` with an s3:// mount of N small files
                            (the sync happens before the command starts); floor: run(true)
  s3 sync N small files     flowd's own sync function (flowd.volume_s3.sync_s3) of N 4 KB objects
                            into a fresh directory; floor: the plainest copy of the same bytes from
                            the same server (one boto3 client, one GET after another)
  s3 sync one large file    the same for one object of 1 GB (--quick: 32 MB); floor: one streamed GET
  (then, for context, `cp` of the same bytes on local disk)

N is 1,000 (--quick: 100).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from flow.client import Flow
from flow.config import MountSpec, TaskConfig, VolumeSpec
from flow.task import TaskStatus

if TYPE_CHECKING:  # mypy resolves bench/ as a namespace package; as a script, bench/ is sys.path[0]
    from bench.harness import Row, Sample, fmt, interleaved, running_daemon
else:
    from harness import Row, Sample, fmt, interleaved, running_daemon

REPO = Path(__file__).resolve().parents[1]
SMALL_BYTES = 4096
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAFLOWBENCHKEY0001",
    "AWS_SECRET_ACCESS_KEY": "flow-bench-secret-0123456789",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def release_storage(root: Path) -> None:
    """Unmounts what is left below `root` and detaches loop devices backed by files below it."""
    prefix = str(root) + "/"
    with open("/proc/self/mountinfo") as info:
        targets = [line.split()[4] for line in info if line.split()[4].startswith(prefix)]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)
    listed = subprocess.run(["losetup", "-nO", "NAME,BACK-FILE", "-l"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        name, _, backing = line.strip().partition(" ")
        if backing.strip().startswith(prefix):
            subprocess.run(["losetup", "-d", name], capture_output=True, check=False)


def completed(flow: Flow, config: TaskConfig) -> None:
    task = flow.run(config).wait(timeout=600)
    if task.status is not TaskStatus.COMPLETED:
        raise RuntimeError(f"bench task {task.task_id} ended {task.status}: {task.state_reason}\n{task.logs()}")


def seed_bucket(endpoint: str, work: Path, files: int, large_bytes: int) -> None:
    """Objects in the server, and the same bytes on local disk for the floors."""
    import boto3  # type: ignore[import-untyped]  # boto3 ships no type information

    client = boto3.session.Session().client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="bench")
    small = work / "small"
    small.mkdir()
    for i in range(files):
        data = os.urandom(SMALL_BYTES)
        (small / f"{i:05d}.bin").write_bytes(data)
        client.put_object(Bucket="bench", Key=f"small/{i:05d}.bin", Body=data)
    large = work / "large"
    large.mkdir()
    with open(large / "blob.bin", "wb") as out:
        left = large_bytes
        while left:
            chunk = os.urandom(min(left, 1 << 24))
            out.write(chunk)
            left -= len(chunk)
    client.upload_file(str(large / "blob.bin"), "bench", "large/blob.bin")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repetitions (a smoke run)")
    args = parser.parse_args()
    runs = 3 if args.quick else 5
    files = 100 if args.quick else 1000
    large_bytes = (32 if args.quick else 1024) * 2**20

    work = Path(tempfile.mkdtemp(prefix="flow-bv-", dir="/tmp"))
    server = [sys.executable, str(REPO / "tools" / "s3-server")]
    started = subprocess.run([*server, "start", str(work / "s3")], capture_output=True, text=True, check=False)
    if started.returncode != 0:
        raise SystemExit(f"the S3 server did not start: {started.stderr.strip()}")
    endpoint = started.stdout.strip()
    os.environ.update({**S3_ENV, "AWS_ENDPOINT_URL": endpoint})  # flowd inherits them
    home = ""
    try:
        (work / "local").mkdir()
        seed_bucket(endpoint, work / "local", files, large_bytes)
        rows: list[Row] = []
        with running_daemon() as daemon:
            home = str(daemon.home.root)
            try:
                flow = Flow(flow_home=daemon.home.root)
                plain = TaskConfig(command=["true"], upload_code=False)
                two = TaskConfig(
                    command=["true"],
                    upload_code=False,
                    volumes=[
                        VolumeSpec(name="bench-a", size_gb=1, interface="file"),
                        VolumeSpec(name="bench-b", size_gb=1, interface="file"),
                    ],
                )
                s3_task = TaskConfig(
                    command=["true"],
                    upload_code=False,
                    data_mounts=[MountSpec(source="s3://bench/small", target="/data")],
                )
                completed(flow, two)  # the volumes are created on first use: not what is timed
                timed = interleaved(
                    {
                        "run(true)": lambda: completed(flow, plain),
                        "run(true) + 2 volumes": lambda: completed(flow, two),
                        "task + s3 mount (small)": lambda: completed(flow, s3_task),
                    },
                    runs,
                )
                rows.append(Row(timed["run(true) + 2 volumes"], timed["run(true)"]))
                rows.append(Row(timed["task + s3 mount (small)"], timed["run(true)"]))
                flow.close()
            finally:
                release_storage(daemon.home.root)
        synced, disk = sync_rows(work, endpoint, runs)
        rows += synced
    finally:
        subprocess.run([*server, "stop", str(work / "s3")], check=False)
        shutil.rmtree(work, ignore_errors=True)
    print_table(rows, disk, args.quick, files, large_bytes, home, str(work))


def sync_rows(work: Path, endpoint: str, runs: int) -> tuple[list[Row], dict[str, Sample]]:
    """flowd's sync against the plainest copy of the same bytes from the same server: one
    client, one GET after another (small files) or one streamed GET (the large file)."""
    import boto3

    from flowd.volume_s3 import sync_s3

    client = boto3.session.Session().client("s3", endpoint_url=endpoint)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="small/")
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    counter = iter(range(10**6))

    def fresh() -> Path:
        return work / "out" / str(next(counter))

    def get_loop() -> None:
        out = fresh()
        out.mkdir(parents=True)
        for key in keys:
            (out / key.rsplit("/", 1)[-1]).write_bytes(client.get_object(Bucket="bench", Key=key)["Body"].read())

    def one_get() -> None:
        out = fresh()
        out.mkdir(parents=True)
        with open(out / "blob.bin", "wb") as sink:
            shutil.copyfileobj(client.get_object(Bucket="bench", Key="large/blob.bin")["Body"], sink, 1 << 20)

    def local_copy(what: str) -> None:
        subprocess.run(["cp", "-r", str(work / "local" / what), str(fresh())], check=True)

    small = interleaved(
        {
            "s3 sync N small files": lambda: sync_s3("s3://bench/small", fresh()),
            "GET loop, 1 client": get_loop,
            "cp -r the same files": lambda: local_copy("small"),
        },
        runs,
    )
    shutil.rmtree(work / "out", ignore_errors=True)
    large = interleaved(
        {
            "s3 sync one large file": lambda: sync_s3("s3://bench/large", fresh()),
            "one streamed GET": one_get,
            "cp the same file": lambda: local_copy("large"),
        },
        max(2, runs // 2),
    )
    shutil.rmtree(work / "out", ignore_errors=True)
    rows = [
        Row(small["s3 sync N small files"], small["GET loop, 1 client"]),
        Row(large["s3 sync one large file"], large["one streamed GET"]),
    ]
    return rows, {"small": small["cp -r the same files"], "large": large["cp the same file"]}


def print_table(
    rows: list[Row], disk: dict[str, Sample], quick: bool, files: int, large_bytes: int, home: str, work: str
) -> None:
    mode = "quick" if quick else "full"
    print(f"flow volumes benchmark ({mode}; python {sys.version.split()[0]}, {os.cpu_count()} cpus)")
    print(f"{'benchmark':<26} {'n':>4} {'median':>10} {'p90':>10}   {'floor':<24} {'median':>10} {'ratio':>8}")
    for row in rows:
        s, f = row.sample, row.floor
        assert f is not None
        ratio = s.median / f.median if f.median else float("inf")
        print(
            f"{s.name:<26} {len(s.seconds):>4} {fmt(s.median):>10} {fmt(s.p90):>10}   "
            f"{f.name:<24} {fmt(f.median):>10} {ratio:>7.1f}x"
        )
    by_name: dict[str, Sample] = {r.sample.name: r.sample for r in rows}
    small, large = by_name["s3 sync N small files"], by_name["s3 sync one large file"]
    print(f"N = {files} files of {SMALL_BYTES} B; large file = {large_bytes // 2**20} MiB")
    print(
        f"s3 sync throughput: {files / small.median:.0f} files/s ({files * SMALL_BYTES / small.median / 1e6:.1f} MB/s) "
        f"small; {large_bytes / large.median / 1e6:.0f} MB/s large"
    )
    print(
        f"local disk, same bytes: cp -r of the small files {fmt(disk['small'].median)}, "
        f"cp of the large file {fmt(disk['large'].median)}"
    )
    print("(medians of repeated runs; floors measured in this run; nothing is asserted)")
    print(f"flowd for FLOW_HOME={home}: stopped, home removed")
    print(f"S3 server and data in {work}: stopped, removed")


if __name__ == "__main__":
    main()
