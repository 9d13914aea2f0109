"""Pure placement: the local machine and a Slurm cluster, the closest offer along the constraint
that failed, and `region` meaning the same to run and to find_instances."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from flow.domain.daemon_config import SlurmSettings
from flow.domain.errors import ErrorReason
from flow.domain.instances.gpu_inventory import Gpu, local_offers
from flow.domain.instances.instance_types import parse_instance_type
from flow.domain.instances.local_placement import Machine, local_requirements, place_locally
from flow.domain.instances.matching import Offer, Requirements, explain_no_match, match_offers
from flow.domain.instances.placement import choose_offer
from flow.domain.slurm.placement import ArrayElement, array_element, place_on_cluster
from flow.domain.slurm.refusals import submit_refusal
from flow.domain.slurm.states import Partition, offers_of
from flow.domain.task.config import TaskConfig, VolumeSpec

A100 = Gpu(index=0, uuid="GPU-0", name="NVIDIA A100-SXM4-80GB", model="a100", memory_gb=80, form_factor="sxm")
TWO_A100 = Machine(
    provider="local", gpus=(A100, Gpu(1, "GPU-1", "a100", 80, "sxm", "NVIDIA A100-SXM4-80GB")), memory_mb=64_000
)
CPU_ONLY = Machine(provider="local", gpus=(), memory_mb=64_000)


def refusal(config: TaskConfig, machine: Machine = TWO_A100) -> str:
    placed = place_locally(config, machine)
    assert isinstance(placed, Failure), placed
    assert placed.failure().reason is ErrorReason.RESOURCE_NOT_AVAILABLE
    error = placed.failure()
    return error.message + " | " + " | ".join(error.suggestions)


def test_100_gb_on_80_gb_gpus_names_the_80_gb_gpu_not_the_cpus() -> None:
    said = refusal(TaskConfig(command=("x",), min_gpu_memory_gb=100))
    assert "the closest offer, a100" in said and "80 GB" in said
    assert "the closest offer, cpu" not in said and "cpu has" not in said


def test_three_a100s_on_a_machine_with_two_suggests_two() -> None:
    said = refusal(TaskConfig(command=("x",), instance_type="3xa100"))
    assert "2xa100" in said and "closest offer, cpu" not in said


def test_an_exact_instance_type_is_closest_to_the_same_model_with_the_nearest_count() -> None:
    offers = local_offers(TWO_A100.gpus, "p")
    chosen = choose_offer(TaskConfig(command=("x",), instance_type="3xa100"), offers)
    assert isinstance(chosen, Failure)
    assert dict(chosen.failure().metadata)["closest_offer"] == "p-a100-80gb-2x"


def test_a_gpu_request_where_there_are_no_gpus_says_so() -> None:
    said = refusal(TaskConfig(command=("x",), instance_type="a100"), CPU_ONLY)
    assert "offers no GPUs" in said


@given(st.integers(min_value=81, max_value=4000), st.integers(min_value=1, max_value=8))
def test_the_closest_gpu_offer_is_never_a_cpu(memory: int, count: int) -> None:
    wanted = parse_instance_type(f"{count}xa100").unwrap()
    req = Requirements(gpu_memory_gb=memory, min_gpu_count=count, gpu_type=wanted.model)
    offers = local_offers(TWO_A100.gpus, "p")
    error = explain_no_match(req, match_offers(req, offers))
    assert dict(error.metadata)["closest_offer"] != "p-cpu"


def test_region_means_the_same_to_run_and_to_find_instances_on_the_local_machine() -> None:
    offers = local_offers(TWO_A100.gpus, "local")
    assert {o.region for o in offers} == {"local"}
    for region, runs in (("local", True), ("us-central1-b", False), (None, True)):
        config = TaskConfig(command=("x",), region=region)
        found = match_offers(local_requirements(config).unwrap(), offers).matches
        assert isinstance(place_locally(config, TWO_A100), Success) is runs
        assert bool(found) is runs


PART = Partition(name="debug", default=True, up=True, nodes=1, cpus=8, memory_mb=16_000)
SETTINGS = SlurmSettings(name="slurm", gpu=parse_instance_type("a100").unwrap())


def test_slurm_placement_refuses_an_unknown_partition_and_what_slurm_cannot_do() -> None:
    offers = offers_of([PART], "slurm", SETTINGS.gpu)
    placed = place_on_cluster(TaskConfig(command=("x",), region="nope"), [PART], offers, SETTINGS)
    assert isinstance(placed, Failure) and placed.failure().reason is ErrorReason.RESOURCE_NOT_AVAILABLE
    assert "no partition 'nope'" in placed.failure().message and "debug" in placed.failure().message
    config = TaskConfig(command=("x",), volumes=[VolumeSpec(name="d", size_gb=1)], image="ubuntu")
    placed = place_on_cluster(config, [PART], offers, SETTINGS)
    assert isinstance(placed, Failure)
    assert [v.field for v in placed.failure().violations] == ["volumes[0]", "image"]
    fits = place_on_cluster(TaskConfig(command=("x",), region="debug"), [PART], offers, SETTINGS)
    assert isinstance(fits, Success) and fits.unwrap().partition == PART
    assert isinstance(place_on_cluster(TaskConfig(command=("x",), num_instances=2), [PART], offers, SETTINGS), Failure)


def test_sbatch_refusals_become_the_seeds_exceptions() -> None:
    partition = submit_refusal(95, "sbatch: error: invalid partition name specified", "", "slurm")
    assert partition.reason is ErrorReason.RESOURCE_NOT_AVAILABLE and "invalid partition" in partition.message
    gres = submit_refusal(95, "sbatch: error: Invalid generic resource (gres) specification", "", "slurm")
    assert gres.reason is ErrorReason.RESOURCE_NOT_AVAILABLE
    option = submit_refusal(95, "sbatch: error: Invalid --distribution specification", "", "slurm")
    assert option.reason is ErrorReason.VALIDATION_FAILED and option.suggestions
    workdir = submit_refusal(94, "", "pkg", "slurm")
    assert workdir.reason is ErrorReason.VALIDATION_FAILED and workdir.violations[0].field == "working_dir"
    assert submit_refusal(90, "disk full", "", "slurm").reason is ErrorReason.PROVIDER_ERROR


def test_offers_never_match_another_region() -> None:
    offer = Offer("o", "p", parse_instance_type("a100").unwrap(), 0, "r1", 1)
    assert not match_offers(Requirements(region="r2"), [offer]).matches


def test_a_partition_the_script_names_is_blamed_on_its_directive() -> None:
    """Only the script can change its own --partition (a provider setting comes before it)."""
    offers = offers_of([PART], "slurm", SETTINGS.gpu)
    script = "#!/bin/bash\n#SBATCH -t 5\n#SBATCH --part=nope\ntrue\n"
    placed = place_on_cluster(TaskConfig(script=script), [PART], offers, SETTINGS)
    assert isinstance(placed, Failure)
    assert placed.failure().suggestions == ("change #SBATCH --part nope (line 3) in the script to one of: debug",)


def test_sbatch_refusals_name_the_scripts_directive() -> None:
    script = "#!/bin/bash\n#SBATCH -A ml --qos=high\n#SBATCH --constraint=ib\ntrue\n"
    qos = submit_refusal(95, "sbatch: error: Invalid qos specification", "", "slurm", script)
    assert qos.suggestions[0] == "fix or remove #SBATCH --qos high (line 2) in the script"
    account = submit_refusal(95, "sbatch: error: Invalid account or account/partition combination", "", "s", script)
    assert account.suggestions[0] == "fix or remove #SBATCH -A ml (line 2) in the script"
    feature = submit_refusal(95, "allocation failure: Invalid feature specification", "", "s", script)
    assert feature.suggestions[0] == "fix or remove #SBATCH --constraint ib (line 3) in the script"
    plain = submit_refusal(95, "sbatch: error: Invalid qos specification", "", "s", None)
    assert "in the task's settings or its #SBATCH lines" in plain.suggestions[0]


def test_an_array_is_placed_only_as_an_element_of_a_flow_slurm_submission() -> None:
    offers = offers_of([PART], "slurm", SETTINGS.gpu)
    script = "#!/bin/bash\n#SBATCH --array=0-3\ntrue\n"
    alone = place_on_cluster(TaskConfig(script=script), [PART], offers, SETTINGS)
    assert isinstance(alone, Failure) and "flow slurm submit" in alone.failure().violations[0].fix
    element = TaskConfig(script=script, env={"FLOW_ARRAY_ID": "a1", "SLURM_ARRAY_TASK_ID": "2"})
    assert isinstance(place_on_cluster(element, [PART], offers, SETTINGS), Success)
    assert array_element(element) == ArrayElement(array_id="a1", index=2, indices=(0, 1, 2, 3))
    outside = TaskConfig(script=script, env={"FLOW_ARRAY_ID": "../x", "SLURM_ARRAY_TASK_ID": "9"})
    refused = place_on_cluster(outside, [PART], offers, SETTINGS)
    assert isinstance(refused, Failure)
    assert [v.field for v in refused.failure().violations] == ["env.FLOW_ARRAY_ID", "env.SLURM_ARRAY_TASK_ID"]
