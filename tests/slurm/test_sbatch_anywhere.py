"""Existing sbatch scripts on a provider that is not Slurm (the local one): the directives Flow
understands become the task's settings; the rest is named in warnings or refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import Daemon
from flow import Flow, TaskStatus
from flow.errors import ValidationError
from flow.slurm import SbatchWarning, read_sbatch, submit_sbatch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sbatch"


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
    typed = tmp_path / "a800.sbatch"
    typed.write_text("#!/bin/bash\n#SBATCH --gres=gpu:a800:1\npython train.py\n")
    done = daemon.flow_cli("slurm", "submit", str(typed), cwd=tmp_path)
    assert done.returncode == 2
    assert f"{typed}: #SBATCH --gres gpu:a800:1 (line 2) asks for 1 GPU(s) of type a800" in done.stderr
    assert "without naming a model" not in done.stderr  # it names one: a model Flow does not know
    dry = daemon.flow_cli("slurm", "submit", str(script), "-i", "8xa100", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 1 and "No offer matches" in dry.stderr  # this machine has no GPUs


def test_the_sdk_entry_point_returns_one_task_per_array_element(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "sweep.sbatch"
    script.write_text("#!/bin/sh\n#SBATCH --array=1-3%1 --job-name=sweep\necho element $SLURM_ARRAY_TASK_ID\n")
    flow: Flow = daemon.client()
    with pytest.warns(SbatchWarning, match="the %1 limit applies on Slurm only"):
        tasks = submit_sbatch(flow, script, code_root=tmp_path)
    assert [t.name for t in tasks] == ["sweep-1", "sweep-2", "sweep-3"]
    assert [t.wait(timeout=30).last_status for t in tasks] == [TaskStatus.COMPLETED] * 3
    assert [t.logs() for t in tasks] == ["element 1\n", "element 2\n", "element 3\n"]
    assert len({t.config.env["FLOW_ARRAY_ID"] for t in tasks}) == 1  # one submission
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


def test_a_multi_node_script_runs_once_and_srun_starts_every_task_with_its_ranks(
    daemon: Daemon, tmp_path: Path
) -> None:
    """As under sbatch on two nodes of two tasks each: the body runs once, on the first node;
    `srun CMD` runs CMD once per task with Slurm's rank variables; scontrol lists the nodes."""
    script = tmp_path / "mn.sbatch"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH -J gpt-1.3b --nodes=2 --ntasks-per-node=2 --cpus-per-task=3\n"
        'echo "body $SLURM_JOB_NAME $SLURM_NNODES $SLURM_NTASKS $SLURM_NTASKS_PER_NODE $SLURM_CPUS_PER_TASK'
        ' $SLURM_NODEID $SLURM_PROCID $SLURM_JOB_ID $SLURM_SUBMIT_DIR"\n'
        'scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/^/host /"\n'
        "srun bash -c 'echo \"task $SLURM_PROCID node $SLURM_NODEID local $SLURM_LOCALID of $SLURM_NTASKS"
        " on $SLURMD_NODENAME\"' | sort\n"
        "srun -N1 -l bash -c 'echo one $SLURM_STEP_ID'\n"
    )
    flow: Flow = daemon.client()
    (task,) = submit_sbatch(flow, script, code_root=tmp_path, on_warning=lambda _: None)
    assert task.wait(timeout=60).last_status is TaskStatus.COMPLETED, task.logs()
    assert task.config.num_instances == 2
    lines = task.logs().splitlines()
    body = [line.split("] ", 1)[1] for line in lines if "] body " in line]
    assert len(body) == 1  # once, not once per node
    words = body[0].split()
    assert words[1:8] == ["gpt-1.3b", "2", "4", "2", "3", "0", "0"]
    assert words[8].isdigit() and words[9].endswith(f"/tasks/{task.task_id}/code")
    hosts = [line.split("host ", 1)[1] for line in lines if "] host " in line]
    tasks = [line.split("] ", 1)[1] for line in lines if "] task " in line]
    assert tasks == [f"task {rank} node {rank // 2} local {rank % 2} of 4 on {hosts[rank // 2]}" for rank in range(4)]
    assert len(set(hosts)) == 2
    assert any(line.endswith("0: one 1") for line in lines)  # the second step, one task, labelled


def test_srun_exits_with_the_highest_task_status_and_can_stop_the_others(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "steps.sbatch"
    script.write_text(
        "#!/bin/bash\n#SBATCH -n 3\n"
        "srun bash -c 'exit $SLURM_PROCID'; echo \"step rc=$?\"\n"
        "srun -K bash -c '[ $SLURM_PROCID = 0 ] && exit 5; sleep 60'; echo \"killed rc=$?\"\n"
        'srun --bogus true; echo "bogus rc=$?"\n'
        "exit 7\n"
    )
    (task,) = submit_sbatch(daemon.client(), script, code_root=tmp_path, on_warning=lambda _: None)
    assert task.wait(timeout=60).last_status is TaskStatus.FAILED
    assert task.exit_code == 7
    logs = task.logs()
    assert "step rc=2\n" in logs and "killed rc=5\n" in logs and "bogus rc=1\n" in logs
    assert "srun: error: unrecognized option '--bogus'" in logs


def test_array_elements_share_their_array_job_id(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "arr.sbatch"
    script.write_text(
        "#!/bin/bash\n#SBATCH --array=4-5\n"
        'echo "$SLURM_ARRAY_JOB_ID $SLURM_JOB_ID $SLURM_ARRAY_TASK_ID $SLURM_ARRAY_TASK_COUNT $SLURM_JOB_NAME"\n'
    )
    tasks = submit_sbatch(daemon.client(), script, code_root=tmp_path)
    rows = [t.wait(timeout=60).logs().split() for t in tasks]
    assert rows[0][0] == rows[1][0] and rows[0][1] != rows[1][1]  # one array, an id per element
    assert [r[2:] for r in rows] == [["4", "2", "arr.sbatch"], ["5", "2", "arr.sbatch"]]


def test_dry_run_json_shows_the_whole_plan_and_where_each_task_runs(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "plan.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH -J gpt-1.3b-pretrain -a 0-1 -t 30 --mail-type=END\necho hi\n")
    done = daemon.flow_cli("slurm", "submit", str(script), "--dry-run", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert (plan["valid"], plan["job_name"], plan["provider"], plan["provider_kind"]) == (
        True,
        "gpt-1.3b-pretrain",
        "local",
        "local",
    )
    assert [(t["name"], t["array_index"], t["max_run_time_hours"]) for t in plan["tasks"]] == [
        ("gpt-1-3b-pretrain-0", 0, 0.5),
        ("gpt-1-3b-pretrain-1", 1, 0.5),
    ]
    assert all(t["validation"] == {"valid": True, "provider": "local", "instance_type": "cpu"} for t in plan["tasks"])
    assert plan["tasks"][0]["env"]["SLURM_JOB_NAME"] == "gpt-1.3b-pretrain"
    assert [d["option"] for d in plan["slurm_directives"]["ignored"]] == ["--mail-type"]
    assert daemon.client().list_tasks() == []  # nothing ran


def test_an_invalid_gres_is_refused_also_with_an_instance_type(daemon: Daemon, tmp_path: Path) -> None:
    script = tmp_path / "zero.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --gres=gpu:zero\ntrue\n")
    for extra in ([], ["-i", "a100"]):
        done = daemon.flow_cli("slurm", "submit", str(script), "--dry-run", *extra, cwd=tmp_path)
        assert done.returncode == 2, done.stdout
        assert "#SBATCH --gres (line 2): is not a valid GRES" in done.stderr
        assert "valid:" not in done.stdout


def test_read_sbatch_gives_each_elements_config_and_the_warnings_without_a_daemon() -> None:
    """flow.slurm.read_sbatch: what a script would become, per provider kind, submitting nothing."""
    script = FIXTURES / "array_throttle.sbatch"
    elsewhere, notes = read_sbatch(script, provider_kind="local", provider_name="laptop")
    assert [c.name for c in elsewhere] == ["sweep-0", "sweep-1", "sweep-2", "sweep-3"]
    assert elsewhere[2].env["SLURM_ARRAY_TASK_ID"] == "2"
    assert elsewhere[2].env["SLURM_ARRAY_TASK_COUNT"] == "4"  # what sbatch sets, set elsewhere
    assert len({c.env["FLOW_ARRAY_ID"] for c in elsewhere}) == 1  # one array: cancelled together
    assert any("%2" in n and "laptop" in n for n in notes)
    assert any("sweep_%A_%a.out" in n for n in notes)
    on_slurm, slurm_notes = read_sbatch(script)
    assert slurm_notes == []  # on Slurm the throttle and the output file are Slurm's own
    assert "SLURM_ARRAY_TASK_COUNT" not in on_slurm[2].env  # Slurm sets it itself
    typed, typed_notes = read_sbatch(FIXTURES / "typed_gres_a800.sbatch", provider_kind="local", instance_type="1xa100")
    assert typed[0].instance_type == "1xa100"
    assert any("a800" in n and "a100" in n for n in typed_notes)  # -i against the script: both named
