"""`flow run job.yaml`: the seed's YAML, errors that name the line, and the same job on Slurm."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Daemon
from flow.config import TaskConfig
from flow.errors import ValidationError

SEED = """\
name: distributed-training
instance_type: 8xa100
command: |
  torchrun --nproc_per_node=8 train.py \\
    --batch-size 256 \\
    --epochs 100
volumes:
  - name: datasets
    size_gb: 500
max_price_per_hour: 100.0
env:
  WANDB_API_KEY: "..."
"""


def test_errors_name_the_yaml_line_of_each_field(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: ok\ninstance_type: a1000\nenv:\n  BATCH: 256\nvolumes:\n  - name: data\n    size_gb: -5\nnmae: x\n"
    )
    with pytest.raises(ValidationError) as raised:
        TaskConfig.from_yaml(job)
    message = raised.value.message
    assert message.startswith(f"Invalid task configuration in {job}: 4 problems")
    assert "  - line 2: instance_type: unknown GPU model 'a1000'" in message
    assert "  - line 4: env['BATCH']: must be a string, not int" in message
    assert "  - line 7: volumes[0].size_gb: must be at least 1" in message
    assert "  - line 8: nmae: is not a known field (got 'x'); did you mean 'name'?" in message
    # The violations keep their plain field paths for programs.
    assert [v.field for v in raised.value.violations] == ["nmae", "instance_type", "env['BATCH']", "volumes[0].size_gb"]


def test_broken_yaml_names_the_line_and_column(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: x\ncommand: [echo, hi\n")
    with pytest.raises(ValidationError) as raised:
        TaskConfig.from_yaml(job)
    assert raised.value.message.startswith(f"Invalid YAML in {job} at line 3")


def test_the_cli_shows_the_line_and_refuses_a_missing_file(slurm_daemon: Daemon, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: yaml-job\nnum_instances: zero\n")
    done = slurm_daemon.flow_cli("run", str(job))
    assert done.returncode == 2
    assert "line 2: num_instances: must be a whole number" in done.stderr
    missing = slurm_daemon.flow_cli("run", "nope.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and "No job file 'nope.yaml'" in missing.stderr


def test_the_seed_yaml_is_read_and_volumes_are_refused_where_they_do_not_exist(
    slurm_daemon: Daemon, tmp_path: Path
) -> None:
    (tmp_path / "job.yaml").write_text(SEED)
    config = TaskConfig.from_yaml(tmp_path / "job.yaml")
    assert config.command == "torchrun --nproc_per_node=8 train.py \\\n  --batch-size 256 \\\n  --epochs 100\n"
    done = slurm_daemon.flow_cli("run", "--provider", "slurm-ssh", "--dry-run", "job.yaml", cwd=tmp_path)
    assert done.returncode == 2
    assert "volumes[0]: is not supported by the slurm provider (Slurm has no volumes)" in done.stderr


def test_a_multi_line_command_runs_as_a_shell_script_on_slurm(slurm_daemon: Daemon, tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(
        'name: multi-line\ncommand: |\n  x=$((6 * 7))\n  echo "answer $x" \\\n    from-yaml\nupload_code: false\n'
    )
    done = slurm_daemon.flow_cli("run", "--provider", "slurm-local", "job.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "answer 42 from-yaml\n"
