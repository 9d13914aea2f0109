"""The job scripts the slurm provider submits: what they ask Slurm for, and that no value a user
gives can change what runs. The quoting is proven by running the rendered script with real bash
(the #SBATCH lines are comments to it) and a stub program that writes what it received."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from returns.result import Failure

from flow.domain.slurm.sbatch import (
    ELEMENT_TASK_FILE,
    EXIT_FILE,
    SECRETS_FILE,
    ArrayJob,
    JobFiles,
    JobRequest,
    output_dirs,
    render_job,
    sbatch_to_configs,
)
from flow.domain.task.config import TaskConfig

STUB = (
    "import json, os, sys\n"
    "json.dump({'argv': sys.argv[2:], 'env': {k: v for k, v in os.environ.items() if k.startswith('FLOW_T_')},"
    " 'cwd': os.getcwd()}, open(sys.argv[1], 'w'))\n"
)
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
ENV_NAMES = st.from_regex(r"FLOW_T_[A-Za-z0-9_]{1,12}", fullmatch=True)


def render(config: TaskConfig, task_dir: Path, **kwargs: object) -> JobFiles:
    request = JobRequest(task_id="t-test", name="job", config=config, task_dir=str(task_dir), **kwargs)
    rendered = render_job(request)
    assert not isinstance(rendered, Failure), rendered
    return rendered.unwrap()


def run_job(files: JobFiles, task_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    (task_dir / "work").mkdir(parents=True, exist_ok=True)
    job = task_dir / "job.sbatch"
    job.write_text(files.job_script)
    if files.secrets is not None:
        (task_dir / SECRETS_FILE).write_text(files.secrets)
    if files.user_script is not None:
        (task_dir / "script").write_text(files.user_script)
        (task_dir / "script").chmod(0o700)
    base = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"}
    return subprocess.run(["bash", str(job)], capture_output=True, text=True, env={**base, **(env or {})}, timeout=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(TEXT, max_size=6), env=st.dictionaries(ENV_NAMES, TEXT, max_size=4), secret=TEXT)
def test_any_argument_env_value_or_secret_reaches_the_program_unchanged(
    tmp_path: Path, args: list[str], env: dict[str, str], secret: str
) -> None:
    task_dir = tmp_path / "task"
    out = tmp_path / "out.json"
    out.unlink(missing_ok=True)
    config = TaskConfig(command=["python3", "-S", "-c", STUB, str(out), *args], env=env)
    files = render(config, task_dir, secrets={"FLOW_T_SECRET": secret} if secret else {})
    done = run_job(files, task_dir)
    assert done.returncode == 0, done.stderr
    got = json.loads(out.read_bytes())
    expected_env = {**env, **({"FLOW_T_SECRET": secret} if secret else {})}
    assert got == {"argv": args, "env": expected_env, "cwd": str(task_dir / "work")}
    assert (task_dir / EXIT_FILE).read_text() == "0\n"
    assert "FLOW_T_SECRET" not in files.job_script  # secrets travel in their own file


def test_the_exit_status_is_recorded_and_returned(tmp_path: Path) -> None:
    files = render(TaskConfig(command="echo out; echo err >&2; exit 7"), tmp_path)
    done = run_job(files, tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (7, "out\n", "err\n")
    assert (tmp_path / EXIT_FILE).read_text() == "7\n"


def test_a_missing_working_directory_fails_clearly(tmp_path: Path) -> None:
    files = render(TaskConfig(command="true", working_dir="/nonexistent/dir"), tmp_path)
    done = run_job(files, tmp_path)
    assert done.returncode == 1
    assert "flow: cannot enter the working directory /nonexistent/dir" in done.stderr
    assert (tmp_path / EXIT_FILE).read_text() == "1\n"


def test_scripts_run_by_their_interpreter_line(tmp_path: Path) -> None:
    files = render(TaskConfig(script="#!/bin/sh\necho from-sh\n"), tmp_path)
    assert files.user_script == "#!/bin/sh\necho from-sh\n"
    assert run_job(files, tmp_path).stdout == "from-sh\n"
    python = render(TaskConfig(script="print('from python')\n"), tmp_path / "py")
    assert run_job(python, tmp_path / "py").stdout == "from python\n"


def test_what_the_job_asks_slurm_for(tmp_path: Path) -> None:
    config = TaskConfig(
        command=["python", "train.py"], name="train", num_instances=1, max_run_time_hours=0.26, memory_mb=4096
    )
    script = render(config, Path("/w/tasks/t-test"), gres="gpu:a100:2", partition="gpu", account="proj", qos="hi")
    directives = [line for line in script.job_script.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj",
        "#SBATCH --qos=hi",
        "#SBATCH --job-name=job",
        "#SBATCH --nodes=1",
        "#SBATCH --gres=gpu:a100:2",
        "#SBATCH --time=16",
        "#SBATCH --mem=4096M",
        "#SBATCH --no-requeue",
        "#SBATCH --output=/w/tasks/t-test/output.log",
        "#SBATCH --error=/w/tasks/t-test/output.log",
        "#SBATCH --open-mode=append",
    ]
    with_region = render(TaskConfig(command="true", region="debug"), Path("/w/t"), partition="gpu")
    assert "#SBATCH --partition=debug" in with_region.job_script
    assert "#SBATCH --partition=gpu" not in with_region.job_script


def test_a_scripts_own_directives_are_submitted_as_they_are(tmp_path: Path) -> None:
    script = (
        "#!/bin/bash\n#SBATCH -J mine --time=90\n#SBATCH --gpus-per-node=4 # four\n#SBATCH --mem-per-cpu=2G\nsrun x\n"
    )
    files = render(
        TaskConfig(script=script, instance_type="4xa100", max_run_time_hours=1.5, memory_mb=10),
        Path("/w/t"),
        gres="gpu:4",
        partition="default-part",
    )
    directives = [line for line in files.job_script.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --partition=default-part",  # the provider's default first: the script's own wins
        "#SBATCH -J mine --time=90",
        "#SBATCH --gpus-per-node=4 # four",
        "#SBATCH --mem-per-cpu=2G",
        "#SBATCH --nodes=1",
        "#SBATCH --no-requeue",
        "#SBATCH --output=/w/t/output.log",
        "#SBATCH --error=/w/t/output.log",
        "#SBATCH --open-mode=append",
    ]
    assert files.user_script == script


def test_a_scripts_own_task_counts_decide_its_nodes_no_nodes_directive_is_added() -> None:
    script = "#!/bin/bash\n#SBATCH --ntasks=4 --tasks-per-node=2\nsrun x\n"
    config = sbatch_to_configs(script).unwrap().configs[0]
    assert config.num_instances == 2  # what Slurm derives; other providers start two nodes
    files = render(config, Path("/w/t"))
    directives = [line for line in files.job_script.splitlines() if line.startswith("#SBATCH")]
    assert not any("--nodes" in line for line in directives)  # sbatch derives 2 from the script's counts


def test_secrets_stay_out_of_the_job_script(tmp_path: Path) -> None:
    files = render(TaskConfig(command="true", env={"PLAIN": "visible"}), tmp_path, secrets={"TOKEN": "s3cr3t"})
    assert "s3cr3t" not in files.job_script and "visible" in files.job_script
    assert files.secrets == "export TOKEN=s3cr3t\n"


def test_flow_identity_wins_over_user_env(tmp_path: Path) -> None:
    files = render(TaskConfig(command="echo $FLOW_TASK_ID", env={"FLOW_TASK_ID": "spoof"}), tmp_path)
    assert run_job(files, tmp_path).stdout == "t-test\n"


def test_function_calls_run_the_runner(tmp_path: Path) -> None:
    files = render(TaskConfig(), Path("/w/t"), function_call=True, python="/opt/py/bin/python")
    assert "/opt/py/bin/python /w/t/flow_runner.py /w/t/invocation.json /w/t/result.json" in files.job_script


def test_arrays_outside_flow_slurm_submit_and_unplain_paths_are_refused() -> None:
    array = render_job(JobRequest("t", "n", TaskConfig(script="#!/bin/bash\n#SBATCH -a 0-3\ntrue\n"), "/w/t"))
    assert isinstance(array, Failure)
    assert "flow slurm submit" in array.failure().violations[0].fix
    spaced = render_job(JobRequest("t", "n", TaskConfig(command="true"), "/w/my dir/t"))
    assert isinstance(spaced, Failure)
    assert spaced.failure().violations[0].field == "work_dir"


def test_multi_node_tasks_run_once_per_node_with_torchrun_variables(tmp_path: Path) -> None:
    """srun and scontrol are stubs here (two nodes); the variables come from Slurm's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && printf "gpu-a\\ngpu-b\\n"\n')
    (bin_dir / "srun").write_text(
        "#!/bin/bash\n"
        'while [ "${1#--}" != "$1" ]; do shift; done\n'  # drop srun's own options
        'for n in 0 1; do SLURM_NODEID=$n "$@" || exit $?; done\n'
    )
    for tool in ("scontrol", "srun"):
        (bin_dir / tool).chmod(stat.S_IRWXU)
    out = tmp_path / "nodes"
    program = f'echo $NODE_RANK $MASTER_ADDR $MASTER_PORT $WORLD_SIZE $NNODES "$1" >> {out}'
    config = TaskConfig(command=["bash", "-c", program, "prog", "an arg"], num_instances=2)
    files = render(config, tmp_path / "task")
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "gpu-[a-b]",
        "SLURM_NNODES": "2",
        "SLURM_JOB_ID": "1234",
    }
    done = run_job(files, tmp_path / "task", env)
    assert done.returncode == 0, done.stderr
    assert out.read_text().splitlines() == ["0 gpu-a 21234 2 2 an arg", "1 gpu-a 21234 2 2 an arg"]
    assert "#SBATCH --nodes=2" in files.job_script


def test_a_script_that_names_its_output_files_keeps_them_and_flow_reads_its_output(tmp_path: Path) -> None:
    """No --output/--error/--open-mode of Flow's: Slurm writes the script's files, and the task's
    output in its directory is a link to the file the job's output goes to (here: where bash's
    stdout goes, as slurmstepd opens the file before the script runs)."""
    script = "#!/bin/bash\n#SBATCH --out=logs/%x-%j.out -J mine\necho hello\n"
    files = render(TaskConfig(script=script), tmp_path / "task")
    directives = [line for line in files.job_script.splitlines() if line.startswith("#SBATCH")]
    assert not any(line.startswith(("#SBATCH --output", "#SBATCH --error", "#SBATCH --open")) for line in directives)
    assert "#SBATCH --out=logs/%x-%j.out -J mine" in directives
    task_dir = tmp_path / "task"
    (task_dir / "work").mkdir(parents=True)
    (task_dir / "job.sbatch").write_text(files.job_script)
    (task_dir / "script").write_text(script)
    (task_dir / "script").chmod(0o700)
    user_file = tmp_path / "mine-7.out"
    with user_file.open("w") as stdout:
        done = subprocess.run(["bash", str(task_dir / "job.sbatch")], stdout=stdout, timeout=30)
    assert done.returncode == 0
    assert (task_dir / "output.log").resolve() == user_file.resolve()
    assert (task_dir / "output.log").read_text() == "hello\n"


def test_relative_output_directories_are_made_in_the_code_copy() -> None:
    script = "#!/bin/bash\n#SBATCH -o logs/%j.out -e /abs/err/%j.err\n#SBATCH -D run\ntrue\n"
    config = sbatch_to_configs(script).unwrap().configs[0]
    request = JobRequest("t", "n", config, "/w/t", code_dir="/w/t/code")
    assert output_dirs(request) == ("/w/t/code/run/logs",)  # an absolute one is the script's own
    patterned = JobRequest("t", "n", TaskConfig(script="#!/bin/bash\n#SBATCH -o %x/o\ntrue\n"), "/w/t")
    assert output_dirs(patterned) == ()  # a pattern names it only once the job runs, as on Slurm


def test_an_array_job_runs_each_element_in_its_own_directory_as_the_task_that_took_it(tmp_path: Path) -> None:
    """One job script for the array: an element finds the Flow task that took it in its
    directory, and records its exit status there; Slurm's own array variables are not
    overwritten by the first element's."""
    script = "#!/bin/bash\n#SBATCH -J sweep --array=0-3%2\necho $FLOW_TASK_ID $FLOW_TASK_NAME $SLURM_ARRAY_TASK_ID\n"
    config = TaskConfig(
        script=script, name="sweep-0", env={"SLURM_ARRAY_TASK_ID": "0", "FLOW_ARRAY_ID": "a1", "LR": "0.1"}
    )
    array_dir = tmp_path / "arr"
    files = render(config, array_dir, array=ArrayJob(indices=(0, 1, 2, 3)))
    directives = [line for line in files.job_script.splitlines() if line.startswith("#SBATCH")]
    assert f"#SBATCH --output={array_dir}/%a/output.log" in directives
    assert "#SBATCH -J sweep --array=0-3%2" in directives
    assert "export SLURM_ARRAY_TASK_ID" not in files.job_script and "export LR=0.1" in files.job_script
    element = array_dir / "2"
    element.mkdir(parents=True)
    (element / ELEMENT_TASK_FILE).write_text("t-two sweep-2\n")
    done = run_job(files, array_dir, {"SLURM_ARRAY_TASK_ID": "2"})
    assert (done.returncode, done.stdout) == (0, "t-two sweep-2 2\n")
    assert (element / EXIT_FILE).read_text() == "0\n"
