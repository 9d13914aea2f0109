"""The startup script: every user value quoted (checked by a real bash, with hostile values), the
exit record, the log file, torchrun's variables, the 10,000-character limit and the SFTP fallback,
and no secret ever in the script the platform keeps."""

from __future__ import annotations

import base64
import gzip
import io
import os
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flow.domain.mithril.startup_script import (
    CODE_ARCHIVE,
    EMBED_CODE_LIMIT,
    MAX_SCRIPT,
    PAYLOAD_FILE,
    SECRETS_FILE,
    StartupRequest,
    bootstrap,
    startup_plan,
)
from flow.domain.task.config import TaskConfig

NO_USER = "flow-no-such-user"  # getent fails: the script falls back to $HOME


def unpacked(script: str) -> str:
    found = re.search(r"printf %s ([A-Za-z0-9+/=]+) \|", script)
    assert found is not None, script
    return gzip.decompress(base64.b64decode(found.group(1))).decode()


def run_script(script: str, home: Path, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, timeout=timeout)


def task_dir(home: Path, task_id: str) -> Path:
    """A one-node task's directory (its node 0's)."""
    return home / ".flow" / "tasks" / task_id / "nodes" / "0"


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


hostile = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=0, max_size=40
) | st.sampled_from(["$(touch /tmp/pwned)", "`id`", "'; exit 7; '", '"$HOME"', "a\nb", "\\", "%s%n"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=hostile, name=hostile, arg=hostile)
def test_hostile_values_arrive_exactly_and_run_nothing(value: str, name: str, arg: str) -> None:
    config = TaskConfig(
        command=("python3", "-c", "import os,sys; print(repr((os.environ['V'], sys.argv[1])))", arg),
        env={"V": value},
    )
    request = StartupRequest(task_id="t-hostile0001", task_name=name, config=config, ssh_user=NO_USER)
    plan = startup_plan(request)
    assert not plan.needs_upload
    assert subprocess.run(["bash", "-n"], input=plan.startup_script.encode()).returncode == 0
    assert subprocess.run(["bash", "-n"], input=unpacked(plan.startup_script).encode()).returncode == 0
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        done = run_script(plan.startup_script, home)
        d = task_dir(home, "t-hostile0001")
        assert done.returncode == 0, (done.stderr, (d / "output.log").read_text())
        assert (d / "output.log").read_text() == repr((value, arg)) + "\n"
        assert (d / "exit_status").read_text() == "0\n"


def test_exit_code_code_and_torchrun_variables(tmp_path: Path) -> None:
    code = tar_of({"train.py": b"import os\nprint(os.environ['NODE_RANK'], os.environ['WORLD_SIZE'])\n"})
    config = TaskConfig(shell="python3 train.py; echo master=$MASTER_ADDR:$MASTER_PORT; exit 3", env={"A": "1"})
    plan = startup_plan(StartupRequest("t-exit000001", "n", config, NO_USER, code_archive=code))
    assert not plan.needs_upload  # tiny code rides in the script
    done = run_script(plan.startup_script, tmp_path)
    d = task_dir(tmp_path, "t-exit000001")
    assert done.returncode == 3
    assert (d / "output.log").read_text() == "0 1\nmaster=127.0.0.1:29500\n"
    assert (d / "exit_status").read_text() == "3\n"
    assert (d / "code" / "train.py").is_file()


def test_max_run_time_stops_the_command_and_says_so(tmp_path: Path) -> None:
    config = TaskConfig(command=("sleep", "30"), max_run_time_hours=1 / 3600)  # one second
    plan = startup_plan(StartupRequest("t-time000001", "n", config, NO_USER))
    run_script(plan.startup_script, tmp_path)
    d = task_dir(tmp_path, "t-time000001")
    assert (d / "exit_status").read_text() == "124\n"
    assert (d / "timed_out").exists()


def test_image_runs_through_docker_with_gpus() -> None:
    config = TaskConfig(command=("python", "train.py"), image="pytorch/pytorch:2.1 ; rm -rf /", working_dir="src")
    script = unpacked(startup_plan(StartupRequest("t-img0000001", "n", config, NO_USER)).startup_script)
    line = next(x for x in script.splitlines() if "docker run" in x)
    assert "--gpus all" in line and "-w /workspace/src" in line
    assert "'pytorch/pytorch:2.1 ; rm -rf /' python train.py" in line


def test_multi_node_reads_the_hosts_file() -> None:
    config = TaskConfig(command=("true",), instance_type="a100", num_instances=4)
    script = unpacked(startup_plan(StartupRequest("t-mn00000001", "n", config, NO_USER)).startup_script)
    assert "export NUM_NODES=4 NNODES=4 WORLD_SIZE=4" in script
    assert "/etc/hosts" in script and "NODE_RANK" in script and "MASTER_ADDR" in script


def test_the_one_line_bootstrap_runs_its_script(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = bootstrap(f'#!/bin/bash\necho "$0" > {marker}\n')
    assert len(script.splitlines()) == 2  # the #! line and one command
    subprocess.run(["bash", "-c", script], check=True)
    assert marker.read_text() == "flow-startup\n"


def test_big_code_and_scripts_over_the_limit_fall_back_to_upload(tmp_path: Path) -> None:
    big_code = os.urandom(EMBED_CODE_LIMIT + 1)
    plan = startup_plan(StartupRequest("t-big0000001", "n", TaskConfig(command="true"), NO_USER, code_archive=big_code))
    assert plan.needs_upload and [u[0] for u in plan.uploads] == [PAYLOAD_FILE, CODE_ARCHIVE]
    # A command that compresses badly past the limit: the script waits for the upload instead.
    noise = base64.b64encode(os.urandom(12_000)).decode()
    plan = startup_plan(StartupRequest("t-big0000002", "n", TaskConfig(command=f"echo {noise}"), NO_USER))
    assert plan.needs_upload and len(plan.startup_script) <= MAX_SCRIPT
    assert noise not in plan.startup_script
    # The waiting script runs the payload once it is there and `ready` exists.
    d = task_dir(tmp_path, "t-big0000002")
    d.mkdir(parents=True)  # (made by the waiting script too, as the instance boots)
    for name, data, _ in plan.uploads:
        (d / name).write_bytes(data)
    (d / "ready").touch()
    run_script(plan.startup_script, tmp_path)
    assert (d / "output.log").read_text() == noise + "\n"
    assert (d / "exit_status").read_text() == "0\n"


def test_secrets_never_go_into_the_startup_script(tmp_path: Path) -> None:
    secret = "s3cr3t-'$(id)'-value"
    config = TaskConfig(command=("bash", "-c", 'printf "%s" "$TOKEN"'), secret_env=("TOKEN",))
    plan = startup_plan(StartupRequest("t-sec0000001", "n", config, NO_USER, secrets={"TOKEN": secret}))
    assert plan.needs_upload
    assert secret not in plan.startup_script and secret not in unpacked(plan.startup_script)
    uploads = {name: data for name, data, _ in plan.uploads}
    assert secret.encode() not in uploads[PAYLOAD_FILE]
    assert {mode for name, _, mode in plan.uploads if name == SECRETS_FILE} == {0o600}
    d = task_dir(tmp_path, "t-sec0000001")
    d.mkdir(parents=True)
    for name, data in uploads.items():
        (d / name).write_bytes(data)
    (d / "ready").touch()
    run_script(plan.startup_script, tmp_path)
    assert (d / "output.log").read_text() == secret
    assert not (d / SECRETS_FILE).exists()  # read once, then removed


def test_a_function_call_uploads_the_runner_and_its_invocation() -> None:
    request = StartupRequest(
        "t-fn00000001", "n", TaskConfig(), NO_USER, runner=b"# runner", invocation=b"{}", python="python3.11"
    )
    plan = startup_plan(request)
    names = [name for name, _, _ in plan.uploads]
    assert names == [PAYLOAD_FILE, "flow_runner.py", "invocation.json"]
    payload = dict((name, data) for name, data, _ in plan.uploads)[PAYLOAD_FILE].decode()
    assert 'python3.11 "$D/flow_runner.py" "$D/invocation.json" "$D/result.json"' in payload
