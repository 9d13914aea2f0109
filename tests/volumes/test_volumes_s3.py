"""s3:// data mounts against a real S3-compatible server on 127.0.0.1 (tools/s3-server), through
a real flowd whose environment holds the AWS settings, as a user's would."""

from __future__ import annotations

import json
import os
from typing import Any

from conftest import Daemon
from flow import MountSpec, TaskConfig
from flow.task import TaskStatus
from volumes.conftest import S3_ENV
from volumes.volume_helpers import finished

SECRET = S3_ENV["AWS_SECRET_ACCESS_KEY"]


def test_s3_data_is_at_the_target_before_the_command_starts(s3_daemon: Daemon, s3: Any) -> None:
    s3.create_bucket(Bucket="bucket")
    s3.put_object(Bucket="bucket", Key="train/a.txt", Body=b"alpha\n")
    s3.put_object(Bucket="bucket", Key="train/sub/b.txt", Body=b"beta\n")
    s3.put_object(Bucket="bucket", Key="train2/not-mine.txt", Body=b"other prefix\n")
    s3.put_object(Bucket="bucket", Key="val/v.txt", Body=b"val\n")
    flow: Any = s3_daemon.client()
    task = finished(
        flow.run(
            TaskConfig(
                # The first thing the command does is read the data: it must be there already.
                command="cat /train/a.txt /train/sub/b.txt /val/v.txt; find /train -type f | sort; touch /train/new",
                data_mounts=[
                    MountSpec(source="s3://bucket/train", target="/train"),
                    MountSpec(source="s3://bucket/val", target="/val"),
                ],
                upload_code=False,
            )
        )
    )
    text = "".join(task.logs())
    assert text.startswith("alpha\nbeta\nval\n/train/a.txt\n/train/sub/b.txt\n"), text
    assert "Read-only file system" in text  # the data is read-only
    assert task.status is TaskStatus.FAILED  # (because of that touch)
    # Credentials never reach the task's spec, the daemon's log or the listing.
    listed = json.dumps(task.to_dict()) + repr(task.config)
    assert SECRET not in listed
    assert S3_ENV["AWS_ACCESS_KEY_ID"] not in listed
    daemon_log = (s3_daemon.home.root / "flowd.log").read_text()
    assert SECRET not in daemon_log
    flow.close()


def test_a_missing_bucket_fails_the_task_saying_where_without_secrets(s3_daemon: Daemon) -> None:
    flow: Any = s3_daemon.client()
    task = finished(
        flow.run(
            TaskConfig(
                command="echo must-not-run",
                data_mounts=[MountSpec(source="s3://no-such-bucket/data", target="/data")],
                upload_code=False,
            )
        )
    )
    assert task.status is TaskStatus.FAILED
    assert "s3://no-such-bucket/data" in task.state_reason
    assert "NoSuchBucket" in task.state_reason
    assert SECRET not in task.state_reason
    assert "must-not-run" not in "".join(task.logs())
    flow.close()


def test_one_large_object_and_many_small_ones_arrive_intact(s3_daemon: Daemon, s3: Any) -> None:
    s3.create_bucket(Bucket="many")
    for i in range(200):
        s3.put_object(Bucket="many", Key=f"small/{i:04d}.txt", Body=f"{i}\n".encode())
    big = os.urandom(65 * 2**20 + 12345)  # 65 MiB and a bit: streamed in 1 MiB pieces, the last short
    s3.put_object(Bucket="many", Key="big/blob.bin", Body=big)
    flow: Any = s3_daemon.client()
    task = finished(
        flow.run(
            TaskConfig(
                command="ls /small | wc -l; cat /small/* | awk '{s+=$1} END {print s}'; sha256sum < /big/blob.bin",
                data_mounts=[
                    MountSpec(source="s3://many/small/", target="/small"),
                    MountSpec(source="s3://many/big", target="/big"),
                ],
                upload_code=False,
            )
        )
    )
    import hashlib

    count, total, digest = "".join(task.logs()).split()[:3]
    assert (count, total) == ("200", str(sum(range(200))))
    assert digest == hashlib.sha256(big).hexdigest()
    flow.close()
