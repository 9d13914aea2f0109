"""The plan behind `flow slurm submit --dry-run --json`: what Flow read in a script and would do
with it on one provider, as plain JSON a user or a script can check."""

from __future__ import annotations

import json
import subprocess

from hypothesis import given, settings
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
    assert [d["written"] for d in directives["ignored"]] == ["--part", "--account"]
    assert [d["written"] for d in directives["emulated"]] == ["--ntasks", "--tasks-per-node"]  # srun reads them
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
    assert shown["slurm_directives"]["emulated"] == []


SWEEP = "#!/bin/bash\n#SBATCH -J sweep --array=0-3%2 -p q\n#SBATCH -o logs/%A_%a.out\necho $SLURM_ARRAY_TASK_ID\n"


def test_on_slurm_an_array_is_one_array_job_whose_elements_are_tasks() -> None:
    job = sbatch_to_configs(SWEEP).unwrap()
    plan = submission_plan(job, source="s.sbatch", provider="c", provider_kind="slurm", array_id="a1b2").unwrap()
    assert [t.array_index for t in plan.tasks] == [0, 1, 2, 3]
    assert [t.config.name for t in plan.tasks] == ["sweep-0", "sweep-1", "sweep-2", "sweep-3"]
    # Each element carries the whole script, --array and its throttle included: Slurm runs it.
    assert {t.config.script for t in plan.tasks} == {SWEEP}
    assert [t.config.env for t in plan.tasks] == [
        {"FLOW_ARRAY_ID": "a1b2", "SLURM_ARRAY_TASK_ID": str(k)} for k in range(4)
    ]
    shown = plan.to_dict()
    assert [d["written"] for d in shown["slurm_directives"]["passed_through"]] == ["-p", "-o"]
    assert not any("limit" in w or "not written" in w for w in shown["warnings"])


def test_elsewhere_each_element_gets_the_variables_sbatch_sets_and_runs_through_the_shim() -> None:
    job = sbatch_to_configs(SWEEP).unwrap()
    plan = submission_plan(
        job, source="dir/s.sbatch", provider="local", provider_kind="local", array_id="a1b2", shim_source="# shim\n"
    ).unwrap()
    first = plan.tasks[0].config
    assert {k: v for k, v in first.env.items() if k.startswith(("SLURM_", "FLOW_"))} == {
        "SLURM_JOB_NAME": "sweep",
        "SLURM_NNODES": "1",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NTASKS": "1",
        "SLURM_NPROCS": "1",
        "SLURM_ARRAY_TASK_COUNT": "4",
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_MAX": "3",
        "SLURM_ARRAY_TASK_ID": "0",
        "FLOW_ARRAY_ID": "a1b2",
    }
    assert first.script is not None and first.script.startswith("#!/bin/bash\n# Written by Flow")
    assert "flow_slurm.py" in first.script and "# shim" in first.script
    output = "#SBATCH -o logs/%A_%a.out (line 3): on provider local the output is the task's log (flow logs)"
    assert any(w.startswith(output) for w in plan.warnings)
    assert "the %2 limit applies on Slurm only" in plan.warnings[-1]


def test_the_job_name_is_the_file_name_without_one() -> None:
    job = sbatch_to_configs("#!/bin/bash\n#SBATCH -t 5\ntrue\n", name="train").unwrap()
    plan = submission_plan(job, source="x/train.sbatch", provider="l", provider_kind="local").unwrap()
    assert plan.tasks[0].config.env["SLURM_JOB_NAME"] == "train.sbatch"  # sbatch's default
    assert plan.tasks[0].config.name == "train"


@settings(max_examples=30, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_characters="\x00\r"), max_size=200))
def test_the_wrapper_carries_the_script_byte_for_byte(body: str) -> None:
    """The wrapper is bash that writes the script into a file; run with a stub shim, the file it
    wrote is the script exactly."""
    from flow.domain.slurm.emulation import wrapped_script

    text = f"#!/bin/bash\n#SBATCH -t 5\n{body}"
    stub = "import os, sys; sys.stdout.write(open(os.path.join(sys.argv[2], 'job.sbatch')).read())\n"
    wrapper = wrapped_script(text, stub, "s.sbatch")
    done = subprocess.run(["bash", "-c", wrapper], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == text
