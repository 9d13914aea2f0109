"""Existing sbatch scripts on a provider that is not Slurm (the local one): the directives Flow
understands become the task's settings; the rest is named in warnings or refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Daemon
from flow import Flow, TaskStatus
from flow.errors import ValidationError
from flow.slurm import SbatchWarning, submit_sbatch


def test_the_cli_runs_a_script_on_the_local_provider(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "cpu.sbatch"
    script.write_text(
        "#!/bin/bash\n#SBATCH -J cpu-only -t 1:00 --mail-type=END\n#SBATCH --export=ALL,GREETING=hi\n"
        'echo "$GREETING from $(cat where.txt)"\n'
    )
    (tmp_path / "where.txt").write_text("the submit directory\n")
    done = daemon.flow_cli("slurm", "submit", str(script), "--provider", "local", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hi from the submit directory\n"  # it runs in a snapshot of it
    assert "warning: #SBATCH --mail-type END (line 2) only applies on Slurm; provider local ignores it" in done.stderr


def test_untyped_gpus_need_a_model_outside_slurm(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "gpu.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --gres=gpu:8\npython train.py\n")
    done = daemon.flow_cli("slurm", "submit", str(script), cwd=tmp_path)
    assert done.returncode == 2
    assert "#SBATCH --gres gpu:8 (line 2) asks for 8 GPU(s) without naming a model" in done.stderr
    assert "--instance-type 8xa100" in done.stderr
    dry = daemon.flow_cli("slurm", "submit", str(script), "-i", "8xa100", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 1 and "No offer matches" in dry.stderr  # this machine has no GPUs


def test_the_sdk_entry_point_returns_one_task_per_array_element(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "sweep.sbatch"
    script.write_text("#!/bin/sh\n#SBATCH --array=1-3%1 --job-name=sweep\necho element $SLURM_ARRAY_TASK_ID\n")
    flow: Flow = daemon.client()
    with pytest.warns(SbatchWarning, match="the %1 limit is not applied"):
        tasks = submit_sbatch(flow, script, code_root=tmp_path)
    assert [t.name for t in tasks] == ["sweep-1", "sweep-2", "sweep-3"]
    assert [t.wait(timeout=30).last_status for t in tasks] == [TaskStatus.COMPLETED] * 3
    assert [t.logs() for t in tasks] == ["element 1\n", "element 2\n", "element 3\n"]
    assert flow.provider == ""  # the client's own provider is left as it was


def test_a_missing_or_broken_script_is_a_validation_error(daemon: Daemon, tmp_path: Path) -> None:
    flow: Flow = daemon.client()
    with pytest.raises(ValidationError, match="No sbatch script at"):
        submit_sbatch(flow, tmp_path / "nope.sbatch")
    bad = tmp_path / "bad.sbatch"
    bad.write_text("#!/bin/bash\n#SBATCH --nodes=two\n")
    with pytest.raises(ValidationError) as raised:
        submit_sbatch(flow, bad)
    assert raised.value.message.startswith(f"Invalid sbatch script in {bad}: 1 problem")
    assert [v.field for v in raised.value.violations] == ["#SBATCH --nodes (line 2)"]
