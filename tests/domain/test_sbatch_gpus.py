"""GPU requests as written in scripts: invalid GRES refused as such (gpu:zero, also when -i is
given), typed GRES naming their model (a800, which Flow does not know, is still named), and -i
at submission that contradicts the script warned about, naming both."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure

from flow.domain.errors import ErrorReason
from flow.domain.slurm.gpu_requests import GpuAsk, GpuSpecProblem, GresRequest, parse_gpu_count, parse_gres_request
from flow.domain.slurm.sbatch import gpu_model_needed, read_directives, sbatch_to_configs


def script(directives: str) -> str:
    return f"#!/bin/bash\n#SBATCH {directives}\ntrue\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpu", GresRequest(gpu=GpuAsk(1))),
        ("gpu:0", GresRequest(gpu=GpuAsk(0))),
        ("gpu:4", GresRequest(gpu=GpuAsk(4))),
        ("gpu:a100", GresRequest(gpu=GpuAsk(1, "a100"))),
        ("gpu:a800:1", GresRequest(gpu=GpuAsk(1, "a800"))),
        ("gpu:nvidia_a100-sxm4-80gb:8", GresRequest(gpu=GpuAsk(8, "nvidia_a100-sxm4-80gb"))),
        ("gres/gpu:2", GresRequest(gpu=GpuAsk(2))),
        ("gpu:2,nvme:1", GresRequest(gpu=GpuAsk(2), others=("nvme",))),
        ("none", GresRequest(gpu=None)),
    ],
)
def test_gres_requests(text: str, expected: GresRequest) -> None:
    assert parse_gres_request(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("gpu:zero", "names a GPU type 'zero' and no count"),
        ("gpu:two:2", "names a GPU type 'two' and no count"),
        ("gpu:1:2", "names a GPU type '1', a number"),
        ("gpu:a100:x", "has a count 'x' that is not a whole number"),
        ("gpu:2:a100", "has a count 'a100' that is not a whole number"),  # sbatch: Invalid generic resource
        ("gpu:a:b:c", "has 4 parts"),
        ("gpu:bad type", "is not a GRES type name"),
    ],
)
def test_invalid_gres(text: str, problem: str) -> None:
    found = parse_gres_request(text)
    assert isinstance(found, GpuSpecProblem) and problem in found.problem and found.fix


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4", GpuAsk(4)), ("a100:4", GpuAsk(4, "a100")), ("a100", GpuAsk(1, "a100")), ("0", GpuAsk(0))],
)
def test_gpu_counts(text: str, expected: GpuAsk) -> None:
    assert parse_gpu_count(text, "gpus") == expected


@pytest.mark.parametrize("text", ["zero", "a100:zero", "a100:x", "", "8:8"])
def test_invalid_gpu_counts(text: str) -> None:
    assert isinstance(parse_gpu_count(text, "gpus"), GpuSpecProblem)


@pytest.mark.parametrize("instance_type", [None, "a100", "4xh100", "cpu"])
def test_gpu_zero_is_an_invalid_gres_whatever_the_instance_type(instance_type: str | None) -> None:
    parsed = sbatch_to_configs(script("--gres=gpu:zero"), instance_type=instance_type)
    assert isinstance(parsed, Failure)
    (found,) = parsed.failure().violations
    assert found.field == "#SBATCH --gres (line 2)"
    assert found.problem.startswith("is not a valid GRES: names a GPU type 'zero' and no count")
    assert "in digits" in found.fix


def test_a_gpu_count_spelled_out_in_gpus_is_refused_too() -> None:
    parsed = sbatch_to_configs(script("--gpus-per-node=eight"))
    assert isinstance(parsed, Failure)
    assert "names a GPU type 'eight'" in parsed.failure().violations[0].problem


def test_a_typed_gres_names_its_model_even_one_flow_does_not_know() -> None:
    job = sbatch_to_configs(script("--job-name=gpt-1.3b-pretrain --gres=gpu:a800:1")).unwrap()
    assert (job.generic_gpus, job.gpu_type) == (1, "a800")
    error = gpu_model_needed(job, "local", "pretrain.sbatch")
    assert error is not None and error.reason is ErrorReason.VALIDATION_FAILED
    assert error.message == (
        "pretrain.sbatch: #SBATCH --gres gpu:a800:1 (line 2) asks for 1 GPU(s) of type a800 per node, a model "
        "Flow does not know, and provider local needs one it knows (only a Slurm cluster knows what its a800 "
        "GPUs are)"
    )
    assert "without naming a model" not in error.message
    assert any("--instance-type 1xa100" in s for s in error.suggestions)


def test_an_untyped_gres_says_it_names_no_model() -> None:
    job = sbatch_to_configs(script("--gres=gpu:8")).unwrap()
    error = gpu_model_needed(job, "mithril")
    assert job.gpu_type is None and error is not None
    assert error.message.startswith("#SBATCH --gres gpu:8 (line 2) asks for 8 GPU(s) without naming a model")


def test_a_known_typed_gres_needs_nothing_more() -> None:
    job = sbatch_to_configs(script("--gres=gpu:h100:8")).unwrap()
    assert job.configs[0].instance_type == "8xh100" and gpu_model_needed(job, "local") is None


def test_the_provider_gpu_model_names_untyped_gpus_only() -> None:
    untyped = sbatch_to_configs(script("--gres=gpu:4"), gpu_model="h100").unwrap()
    assert untyped.configs[0].instance_type == "4xh100"
    typed = sbatch_to_configs(script("--gres=gpu:a800:4"), gpu_model="h100").unwrap()
    assert typed.configs[0].instance_type is None and typed.gpu_type == "a800"


@pytest.mark.parametrize(
    ("directives", "given_type", "warning"),
    [
        (
            "--gres=gpu:a100:2",
            "4xa100",
            "-i 4xa100 overrides #SBATCH --gres gpu:a100:2 (line 2): the script asks for 2x a100 per node; "
            "the task gets 4x a100 per node",
        ),
        (
            "--gres=gpu:a100:2",
            "2xh100",
            "-i 2xh100 overrides #SBATCH --gres gpu:a100:2 (line 2): the script asks for 2x a100 per node; "
            "the task gets 2x h100 per node",
        ),
        (
            "--gres=gpu:2",
            "a100",
            "-i a100 overrides #SBATCH --gres gpu:2 (line 2): the script asks for 2 GPUs per node; "
            "the task gets 1x a100 per node",
        ),
        (
            "--gres=gpu:a800:1",
            "a100",
            "-i a100 overrides #SBATCH --gres gpu:a800:1 (line 2): the script asks for 1x a800 per node; "
            "the task gets 1x a100 per node",
        ),
        (
            "--time=10",
            "a100",
            "-i a100 overrides the script (no GPU directive): the script asks for no GPUs; "
            "the task gets 1x a100 per node",
        ),
        (
            "--gpus-per-node=h100:8",
            "cpu",
            "-i cpu overrides #SBATCH --gpus-per-node h100:8 (line 2): the script asks for 8x h100 per node; "
            "the task gets no GPUs",
        ),
    ],
)
def test_an_instance_type_that_contradicts_the_script_is_warned_naming_both(
    directives: str, given_type: str, warning: str
) -> None:
    job = sbatch_to_configs(script(directives), instance_type=given_type).unwrap()
    assert [c.instance_type for c in job.configs] == [given_type]
    assert job.warnings == (warning,)
    assert job.generic_gpus is None and job.instance_type_override == given_type


@pytest.mark.parametrize(
    ("directives", "given_type"),
    [("--gres=gpu:a100:2", "2xa100"), ("--gres=gpu:2", "2xh100"), ("--time=5", "cpu"), ("-N 2 --gpus=8", "4xa100")],
)
def test_an_instance_type_that_agrees_with_the_script_is_silent(directives: str, given_type: str) -> None:
    job = sbatch_to_configs(script(directives), instance_type=given_type).unwrap()
    assert job.warnings == () and job.configs[0].instance_type == given_type


def test_a_bad_instance_type_is_refused_by_name() -> None:
    parsed = sbatch_to_configs(script("--gres=gpu:2"), instance_type="9xnotagpu")
    assert isinstance(parsed, Failure)
    assert parsed.failure().violations[0].field == "-i/--instance-type"


WORDS = st.sampled_from(["gpu", "a100", "a800", "zero", "two", "1", "4", "x", "", "nvme", "h100", "none"])


@given(st.lists(st.lists(WORDS, min_size=1, max_size=4).map(":".join), min_size=1, max_size=3).map(",".join))
def test_any_gres_is_read_or_refused_with_a_fix(text: str) -> None:
    found = parse_gres_request(text)
    if isinstance(found, GpuSpecProblem):
        assert found.problem and found.fix
        return
    if found.gpu is not None:
        assert found.gpu.count >= 0
        assert found.gpu.type is None or not found.gpu.type.isdigit()
    parsed = sbatch_to_configs(script(f"--gres={text}"))
    assert not isinstance(parsed, Failure) or all(v.fix for v in parsed.failure().violations)


def _gpu_directives(text: str) -> list[str]:
    """The GPU requests of a script's directives (a --gres of other resources only is none)."""
    gpu_options = ("gres", "gpus", "gpus-per-node", "gpus-per-task")
    return [
        f"{d.spelled} {d.value}"
        for d in read_directives(text).directives
        if d.option in gpu_options and (d.option != "gres" or "gpu" in (d.value or ""))
    ]


@pytest.mark.parametrize(
    ("directives", "given_type", "edited", "nodes"),
    [
        ("--gres=gpu:a100:2 -t 5", "4xa100", "#SBATCH -t 5  # flow: -i 4xa100 replaces this GPU request", 1),
        ("--gres=gpu:2,nvme:1", "a100", "#SBATCH --gres=nvme:1  # flow: -i a100 replaces this GPU request", 1),
        ("--gpus=16", "8xa100", "#SBATCH --nodes=2  # flow: -i 8xa100 replaces this GPU request", 2),
        ("-n 4 --gpus-per-task=1", "cpu", "#SBATCH -n 4  # flow: -i cpu replaces this GPU request", 1),
        ("--gpus-per-node=h100:8 --cpus-per-gpu=4", "cpu", "# flow: -i cpu replaces this GPU request", 1),
        ("--gres=gpu:2", "2xh100", "# flow: -i 2xh100 replaces this GPU request", 1),  # untyped: -i names the model
    ],
)
def test_an_instance_type_given_at_submission_replaces_the_scripts_gpu_directives(
    directives: str, given_type: str, edited: str, nodes: int
) -> None:
    """As an option on sbatch's command line wins over the script's: the task runs with the GPUs
    -i names on every provider (on Slurm, the job asks for the instance type's GRES), on the
    nodes the script's counts come to."""
    job = sbatch_to_configs(script(directives), instance_type=given_type).unwrap()
    text = job.configs[0].script
    assert text is not None and text.split("\n")[1] == edited
    assert _gpu_directives(text) == []
    again = sbatch_to_configs(text).unwrap()
    assert (again.layout.nodes, again.layout.gpus_per_node) == (nodes, 0)
    assert job.layout.nodes == nodes and job.configs[0].num_instances == nodes


def test_an_instance_type_that_names_the_scripts_own_request_leaves_the_script_as_it_is() -> None:
    text = script("--gres=gpu:a100:2")
    assert sbatch_to_configs(text, instance_type="2xa100").unwrap().configs[0].script == text


@given(
    gres=st.sampled_from(["", "--gres=gpu:2", "--gres=gpu:a100:1", "--gres=gpu:h100:4,nvme:1"]),
    gpus=st.sampled_from(["", "--gpus=4", "--gpus=a100:2"]),
    per_task=st.sampled_from(["", "--gpus-per-task=1"]),
    tasks=st.sampled_from(["", "-n 4", "--ntasks-per-node=2", "-N 2"]),
    given_type=st.sampled_from(["cpu", "a100", "8xh100", "2xa100"]),
)
def test_after_an_override_no_gpu_directive_is_left_and_the_nodes_stay(
    gres: str, gpus: str, per_task: str, tasks: str, given_type: str
) -> None:
    text = f"#!/bin/bash\n#SBATCH {tasks} {gres} -J x\n#SBATCH {gpus} {per_task} --time=5\ntrue\n"
    read = sbatch_to_configs(text, instance_type=given_type)
    if isinstance(read, Failure):
        return  # counts Slurm refuses (e.g. --gpus-per-task without a task count)
    job = read.unwrap()
    edited = job.configs[0].script or ""
    if not job.warnings and not _gpu_directives(text):
        assert edited == text
        return
    kept = read_directives(edited)
    if edited != text:
        assert _gpu_directives(edited) == []
        assert {d.option for d in kept.directives} >= {"job-name", "time"}  # the rest stays
        assert sbatch_to_configs(edited).unwrap().layout.nodes == job.layout.nodes
