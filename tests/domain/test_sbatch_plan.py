"""The plan behind `flow slurm submit --dry-run --json`: what Flow read in a script and would do
with it on one provider, as plain JSON a user or a script can check."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from flow.domain.slurm.sbatch import sbatch_to_configs
from flow.domain.slurm.submission_plan import submission_plan

SCRIPT = """#!/bin/bash
#SBATCH --job-name=gpt-1.3b-pretrain
#SBATCH --part=gpu --account=ml
#SBATCH --ntasks=4 --tasks-per-node=2
#SBATCH --gpus-per-task=a100:1
#SBATCH --time=2:00:00 --mem=64G
#SBATCH --array=0-2%1
#SBATCH --export=ALL,LR=3e-4
#SBATCH --chdir=runs
srun python train.py
"""


def plan_for(provider: str, kind: str, **kwargs: object) -> dict[str, object]:
    job = sbatch_to_configs(SCRIPT, name="pretrain", **kwargs).unwrap()  # type: ignore[arg-type]
    plan = submission_plan(job, source="pretrain.sbatch", provider=provider, provider_kind=kind)
    assert isinstance(plan, Success), plan
    shown = plan.unwrap().to_dict()
    assert json.loads(json.dumps(shown)) == shown  # plain JSON
    return shown


def test_a_plan_shows_each_task_as_its_task_config_with_its_array_index() -> None:
    shown = plan_for("cluster", "slurm")
    assert (shown["source"], shown["provider"], shown["provider_kind"]) == ("pretrain.sbatch", "cluster", "slurm")
    assert shown["job_name"] == "gpt-1.3b-pretrain"
    assert shown["layout"] == {"nodes": 2, "ntasks": 4, "gpus_per_node": 2}
    assert shown["array"] == {
        "indices": [0, 1, 2],
        "step": None,
        "throttle": 1,
        "directive": {"option": "--array", "written": "--array", "value": "0-2%1", "line": 7},
    }
    tasks = shown["tasks"]
    assert isinstance(tasks, list) and [t["array_index"] for t in tasks] == [0, 1, 2]
    first = tasks[0]
    assert first["name"] == "gpt-1-3b-pretrain-0"
    assert (first["num_instances"], first["instance_type"]) == (2, "2xa100")
    assert (first["max_run_time_hours"], first["memory_mb"], first["working_dir"]) == (2.0, 65536, "runs")
    assert first["env"]["LR"] == "3e-4" and first["env"]["SLURM_ARRAY_TASK_ID"] == "0"
    assert "script" not in first


def test_on_slurm_the_slurm_only_directives_pass_through() -> None:
    shown = plan_for("cluster", "slurm")
    directives = shown["slurm_directives"]
    assert isinstance(directives, dict)
    assert [(d["option"], d["written"], d["value"]) for d in directives["passed_through"]] == [
        ("--partition", "--part", "gpu"),
        ("--account", "--account", "ml"),
        ("--ntasks", "--ntasks", "4"),
        ("--ntasks-per-node", "--tasks-per-node", "2"),
    ]
    assert directives["ignored"] == []
    assert not any("only applies on Slurm" in w for w in shown["warnings"])  # type: ignore[union-attr]


def test_elsewhere_they_are_ignored_with_a_warning_each() -> None:
    shown = plan_for("local", "local")
    directives = shown["slurm_directives"]
    assert isinstance(directives, dict) and directives["passed_through"] == []
    assert [d["written"] for d in directives["ignored"]] == ["--part", "--account", "--ntasks", "--tasks-per-node"]
    assert "#SBATCH --part gpu (line 3) only applies on Slurm; provider local ignores it" in shown["warnings"]  # type: ignore[operator]
    assert any("the %1 limit applies on Slurm only" in w for w in shown["warnings"])  # type: ignore[union-attr]


def test_an_instance_type_given_at_submission_is_shown_with_its_warning() -> None:
    shown = plan_for("local", "local", instance_type="2xh100")
    assert shown["instance_type_override"] == "2xh100"
    assert {t["instance_type"] for t in shown["tasks"]} == {"2xh100"}  # type: ignore[union-attr]
    assert any(w.startswith("-i 2xh100 overrides #SBATCH --gpus-per-task a100:1") for w in shown["warnings"])  # type: ignore[union-attr]


def test_a_model_only_slurm_knows_fails_the_plan_elsewhere_and_not_on_slurm() -> None:
    job = sbatch_to_configs("#!/bin/bash\n#SBATCH --gres=gpu:a800:1\ntrue\n").unwrap()
    elsewhere = submission_plan(job, source="x.sbatch", provider="local", provider_kind="local")
    assert isinstance(elsewhere, Failure)
    assert "of type a800" in elsewhere.failure().message
    on_slurm = submission_plan(job, source="x.sbatch", provider="cluster", provider_kind="slurm")
    assert isinstance(on_slurm, Success)
    assert on_slurm.unwrap().to_dict()["tasks"][0]["instance_type"] is None  # Slurm reads the GRES itself


@given(st.sampled_from(["slurm", "local", "mithril"]), st.integers(1, 5), st.booleans())
def test_every_plan_is_json_and_lists_every_task(kind: str, elements: int, gpus: bool) -> None:
    gres = "#SBATCH --gres=gpu:h100:2\n" if gpus else ""
    text = f"#!/bin/bash\n#SBATCH -J sweep -a 1-{elements} -p q\n{gres}echo $SLURM_ARRAY_TASK_ID\n"
    job = sbatch_to_configs(text).unwrap()
    shown = submission_plan(job, source="s", provider="p", provider_kind=kind).unwrap().to_dict()
    assert json.loads(json.dumps(shown)) == shown
    assert [t["array_index"] for t in shown["tasks"]] == list(range(1, elements + 1))
    assert len(shown["slurm_directives"]["passed_through" if kind == "slurm" else "ignored"]) == 1
