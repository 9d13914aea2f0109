"""Reading #SBATCH directives as sbatch does, and refusing what Flow cannot honour with the line,
the value and a fix."""

from __future__ import annotations

import pytest
from returns.result import Failure, Success

from flow.domain.slurm.sbatch import (
    parse_array,
    parse_memory_mb,
    parse_time_minutes,
    read_directives,
    sbatch_to_configs,
    time_limit_minutes,
)


def options(text: str) -> list[tuple[str, str | None, int]]:
    return [(d.option, d.value, d.line) for d in read_directives(text).directives]


def problems(text: str, **kwargs: object) -> list[str]:
    parsed = sbatch_to_configs(text, **kwargs)
    assert isinstance(parsed, Failure), parsed
    return [v.render() for v in parsed.failure().violations]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("#SBATCH --time=10", [("time", "10", 1)]),
        ("#SBATCH --time 10", [("time", "10", 1)]),
        ("#SBATCH -t10", [("time", "10", 1)]),
        ("#SBATCH -t 10 -N2", [("time", "10", 1), ("nodes", "2", 1)]),
        ('#SBATCH -J "a b c"', [("job-name", "a b c", 1)]),
        ("#SBATCH -J 'x y'", [("job-name", "x y", 1)]),
        ('#SBATCH -J a\\"b', [("job-name", 'a"b', 1)]),
        ("#SBATCH --time=10 # ten minutes", [("time", "10", 1)]),
        ("#SBATCH --time=10#comment", [("time", "10", 1)]),
        ('#SBATCH -J "with # inside"', [("job-name", "with # inside", 1)]),
        ("#SBATCH --exclusive --requeue", [("exclusive", None, 1), ("requeue", None, 1)]),
        ("#SBATCH --exclusive=user", [("exclusive", "user", 1)]),
        ("#SBATCH -HO", [("hold", None, 1), ("overcommit", None, 1)]),
        ("#SBATCH\t--nodes=3\r", [("nodes", "3", 1)]),
        ("#SBATCH", []),
        ("# SBATCH --time=5", []),  # not a directive: the magic word is at column 0 only
        (" #SBATCH --time=5", []),
    ],
)
def test_directives_are_read_as_sbatch_reads_them(line: str, expected: list[tuple[str, str | None, int]]) -> None:
    assert options("#!/bin/bash\n" + line + "\n") == [(o, v, n + 1) for o, v, n in expected]


def test_directives_end_at_the_first_command_not_at_blank_lines_or_comments() -> None:
    text = "#!/bin/bash\n\n# note\n#SBATCH -N 2\n   \n#SBATCH -t 5\necho hi\n#SBATCH --gres=gpu:8\n"
    assert options(text) == [("nodes", "2", 4), ("time", "5", 6)]
    assert read_directives(text).directive_lines == (4, 6)


def test_a_later_directive_overrides_an_earlier_one() -> None:
    job = sbatch_to_configs("#!/bin/bash\n#SBATCH -t 5\n#SBATCH --time=10\ntrue\n").unwrap()
    assert job.configs[0].max_run_time_hours == 10 / 60


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("10", 10),
        ("10:30", 11),  # minutes:seconds, rounded up
        ("1:00:00", 60),
        ("2-00:00:00", 2880),
        ("1-12", 2160),
        ("1-2:30", 1590),
        ("0:0:1", 1),
        ("UNLIMITED", 0),
        ("infinite", 0),
    ],
)
def test_time_limits(text: str, minutes: int) -> None:
    assert parse_time_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "soon", "1:2:3:4", "-5", "1-", "a-1", "1:x"])
def test_bad_time_limits(text: str) -> None:
    assert parse_time_minutes(text) is None


def test_max_run_time_becomes_whole_minutes_rounded_up() -> None:
    assert time_limit_minutes(1 / 60) == 1
    assert time_limit_minutes(0.001) == 1
    assert time_limit_minutes(0.5) == 30
    assert time_limit_minutes(0.51) == 31
    assert time_limit_minutes(24) == 1440


@pytest.mark.parametrize(
    ("text", "mb"), [("4000", 4000), ("32G", 32768), ("500M", 500), ("1T", 1048576), ("2048K", 2), ("16gb", 16384)]
)
def test_memory(text: str, mb: int) -> None:
    assert parse_memory_mb(text) == mb


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-3", ((0, 1, 2, 3), None, None)),
        ("1,3,5", ((1, 3, 5), None, None)),
        ("0-15:4", ((0, 4, 8, 12), 4, None)),
        ("1-5%2", ((1, 2, 3, 4, 5), None, 2)),
        ("7", ((7,), None, None)),
    ],
)
def test_array_specs(text: str, expected: object) -> None:
    assert parse_array(text) == expected


@pytest.mark.parametrize("text", ["", "a", "3-1", "0-100000", "1-5%x", "0-4:0"])
def test_bad_array_specs(text: str) -> None:
    assert parse_array(text) is None


def test_array_elements_are_tasks_with_slurm_array_variables() -> None:
    job = sbatch_to_configs("#!/bin/bash\n#SBATCH --array=2-4 -J sweep\necho $SLURM_ARRAY_TASK_ID\n").unwrap()
    assert [c.name for c in job.configs] == ["sweep-2", "sweep-3", "sweep-4"]
    assert [c.env["SLURM_ARRAY_TASK_ID"] for c in job.configs] == ["2", "3", "4"]
    assert {c.env["SLURM_ARRAY_TASK_COUNT"] for c in job.configs} == {"3"}
    assert all("#SBATCH -J sweep  # flow: --array expanded into 3 tasks" in (c.script or "") for c in job.configs)


def test_gpu_requests_in_every_form() -> None:
    def instance(directives: str) -> tuple[str | None, int | None]:
        job = sbatch_to_configs(f"#!/bin/bash\n{directives}\ntrue\n").unwrap()
        return job.configs[0].instance_type, job.generic_gpus

    assert instance("#SBATCH --gres=gpu:a100:2") == ("2xa100", None)
    assert instance("#SBATCH --gres=gpu:A100:1") == ("a100", None)
    assert instance("#SBATCH --gres=gpu:nvidia_a100-sxm4-40gb:4") == ("4xa100-40gb", None)
    assert instance("#SBATCH --gres=gpu:2") == (None, 2)
    assert instance("#SBATCH --gres=gpu") == (None, 1)
    assert instance("#SBATCH --gpus-per-node=h100:8") == ("8xh100", None)
    assert instance("#SBATCH -N 2 --gpus=8") == (None, 4)
    assert instance("#SBATCH -N 2 -G a100:8") == ("4xa100", None)
    assert instance("#SBATCH --ntasks-per-node=2 --gpus-per-task=2") == (None, 4)
    assert instance("#SBATCH --gres=gpu:2 --gpus-per-node=2") == (None, 2)
    assert instance("#SBATCH --gres=gpu:tesla:2") == (None, 2)  # a type Flow does not know
    generic = sbatch_to_configs("#!/bin/bash\n#SBATCH --gres=gpu:4\ntrue\n", gpu_model="h100").unwrap()
    assert generic.configs[0].instance_type == "4xh100"


def test_exports_take_values_and_the_submitting_environment() -> None:
    text = "#!/bin/bash\n#SBATCH --export=ALL,A=1,B=x=y,HOME,MISSING\ntrue\n"
    job = sbatch_to_configs(text, environ={"HOME": "/home/me"}).unwrap()
    assert job.configs[0].env == {"A": "1", "B": "x=y", "HOME": "/home/me"}
    assert any("MISSING is not set" in w for w in job.warnings)


@pytest.mark.parametrize(
    ("job_name", "task_name"),
    [("gpt-1.3b-pretrain", "gpt-1-3b-pretrain"), ("my run (v2)", "my-run-v2"), ("plain_name-1", "plain_name-1")],
)
def test_a_job_keeps_its_name_and_its_tasks_get_a_valid_task_name(job_name: str, task_name: str) -> None:
    job = sbatch_to_configs(f"#!/bin/bash\n#SBATCH -J '{job_name}'\ntrue\n").unwrap()
    assert job.job_name == job_name  # Slurm's job name (SLURM_JOB_NAME), as written
    assert job.configs[0].name == task_name  # the task's name: letters, digits, - and _ (the spec's rule)
    assert job.warnings == ()
    assert "#SBATCH -J " in (job.configs[0].script or "")  # the script (and so Slurm) keeps the directive


def test_without_a_usable_job_name_the_file_name_names_the_task() -> None:
    assert sbatch_to_configs("#!/bin/bash\ntrue\n", name="from file").unwrap().configs[0].name == "from-file"
    job = sbatch_to_configs("#!/bin/bash\n#SBATCH -J '日本'\ntrue\n", name="run").unwrap()
    assert (job.job_name, job.configs[0].name) == ("日本", "run")
    array = sbatch_to_configs("#!/bin/bash\n#SBATCH -J a.b --array=1-2\ntrue\n").unwrap()
    assert [c.name for c in array.configs] == ["a-b-1", "a-b-2"] and array.job_name == "a.b"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("echo hi\n", "script (line 1): does not start with #!"),
        ("#!/bin/bash\r\n#SBATCH -t 5\r\necho hi\r\n", "script (line 1): has DOS line breaks"),
        (
            "#!/bin/bash\n#SBATCH --tme=5\n",
            "#SBATCH --tme (line 2): is not an sbatch option (got '--tme=5'); did you mean --time?",
        ),
        ("#!/bin/bash\n#SBATCH -Z 5\n", "#SBATCH -Z (line 2): is not an sbatch option"),
        ("#!/bin/bash\n#SBATCH --time=soon\n", "#SBATCH --time (line 2): is not a time limit (got 'soon')"),
        ("#!/bin/bash\n#SBATCH --nodes=2-4\n", "#SBATCH --nodes (line 2): is a range of node counts"),
        ("#!/bin/bash\n#SBATCH --mem=lots\n", "#SBATCH --mem (line 2): is not an amount of memory"),
        ("#!/bin/bash\n#SBATCH --wrap='echo hi'\n", "#SBATCH --wrap (line 2): is not supported"),
        ("#!/bin/bash\n#SBATCH -J 'open\n", "#SBATCH (line 2): has an unmatched '"),
        ("#!/bin/bash\n#SBATCH -N 1\n#SBATCH hetjob\n#SBATCH -N 2\n", "#SBATCH (line 3): heterogeneous jobs"),
        ("#!/bin/bash\n#SBATCH --gpus-per-task=1\n", "#SBATCH --gpus-per-task (line 2): needs a task count"),
        ("#!/bin/bash\n#SBATCH --gres=gpu:zero\n", "#SBATCH --gres (line 2): is not a valid GRES: names a GPU type"),
        ("#!/bin/bash\n#SBATCH --mem- 4G\n", "#SBATCH --mem- (line 2): is ambiguous: it could be --mem-bind, "),
        ("#!/bin/bash\n#SBATCH -N 1 -n 4 --ntasks-per-node=2\n", "#SBATCH -n (line 2): 4 tasks do not fit on 1 nodes"),
        ("#!/bin/bash\n#SBATCH --gres=gpu:2 --gpus-per-node=4\n", "disagrees with the other GPU requests"),
        ("#!/bin/bash\n#SBATCH --gres=gpu:a100:80\n", "asks for 80 GPUs on one node"),
        ("#!/bin/bash\n#SBATCH --array=1-x\n", "#SBATCH --array (line 2): is not an array spec"),
        ("#!/bin/bash\n#SBATCH --time\n", "#SBATCH --time (line 2): needs a value"),
        ("#!/bin/bash\n#SBATCH --requeue=yes\n", "#SBATCH --requeue (line 2): takes no value"),
        ("#!/bin/bash\n#SBATCH --export=ALL,1BAD=x\n", "is not an environment variable name"),
        ("#!/bin/bash\n#SBATCH debug\n", "#SBATCH (line 2): is not an option (got 'debug')"),
    ],
)
def test_problems_name_the_line_the_value_and_a_fix(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found
    parsed = sbatch_to_configs(text)
    assert isinstance(parsed, Failure)
    assert all(v.fix for v in parsed.failure().violations)


def test_every_problem_is_reported_at_once() -> None:
    found = problems("#!/bin/bash\n#SBATCH --time=soon --nodes=0\n#SBATCH --bogus\n")
    assert len(found) == 3


def test_slurm_only_directives_are_listed_for_other_providers() -> None:
    text = "#!/bin/bash\n#SBATCH -p gpu -A proj --qos=high --mail-type=END -n 4 --constraint=a100\ntrue\n"
    job = sbatch_to_configs(text)
    assert isinstance(job, Success)
    assert [d.spelled for d in job.unwrap().native_only] == ["-p", "-A", "--qos", "--mail-type", "-n", "--constraint"]
