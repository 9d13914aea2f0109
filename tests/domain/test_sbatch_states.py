"""What Slurm prints, read into Flow's terms: job states as task events (one table), squeue,
sacct and jobcomp lines, sinfo as offers, GRES as GPUs, and the poll script's output protocol."""

from __future__ import annotations

import pytest

from flow.domain.code.manifest import ManifestEntry
from flow.domain.instances.instance_types import InstanceType, short_name
from flow.domain.slurm.scripts import (
    ElementRegistration,
    PolledJob,
    SubmitPlan,
    final_states_script,
    missing_blobs_script,
    parse_poll_output,
    poll_script,
    register_script,
    split_sections,
    submit_script,
)
from flow.domain.slurm.states import (
    GpuGres,
    array_record_ids,
    event_for,
    gpu_of,
    model_of_gres_type,
    offers_of,
    parse_exit_code,
    parse_gres,
    parse_jobcomp,
    parse_sacct,
    parse_scontrol_config,
    parse_sinfo,
    parse_squeue,
    phase_of,
    squeue_says_gone,
)
from flow.domain.task.config import TaskConfig
from flow.domain.task.lifecycle import (
    CancelRequested,
    Exited,
    Lost,
    Preempted,
    Started,
    TaskRecord,
    TaskState,
    TimedOut,
    apply,
)

# Slurm state, exit code we know -> (the event, then the task's state and reason once applied)
TABLE = [
    ("PENDING", None, None, TaskState.PENDING, ""),
    ("CONFIGURING", None, None, TaskState.PENDING, ""),
    ("REQUEUED", None, None, TaskState.PENDING, ""),
    ("RUNNING", None, Started(), TaskState.RUNNING, ""),
    ("COMPLETING", None, Started(), TaskState.RUNNING, ""),
    ("SUSPENDED", None, Started(), TaskState.RUNNING, ""),
    ("COMPLETED", 0, Exited(0), TaskState.COMPLETED, "exited with code 0"),
    ("FAILED", 3, Exited(3), TaskState.FAILED, "exited with code 3"),
    ("FAILED", 137, Exited(137), TaskState.FAILED, "exited with code 137 (killed by signal 9)"),
    ("FAILED", None, None, TaskState.FAILED, "FAILED: Slurm reports the job failed"),
    ("CANCELLED", None, None, TaskState.FAILED, "CANCELLED: the Slurm job was cancelled outside Flow"),
    ("CANCELLED by 0", None, None, TaskState.FAILED, "CANCELLED: the Slurm job was cancelled outside Flow"),
    ("TIMEOUT", None, TimedOut(None), TaskState.FAILED, "TIMEOUT: ran past max_run_time_hours=0.5"),
    ("DEADLINE", None, TimedOut(None), TaskState.FAILED, "TIMEOUT: ran past max_run_time_hours=0.5"),
    ("PREEMPTED", None, None, TaskState.PREEMPTED, "PREEMPTED: Slurm preempted the job"),
    ("NODE_FAIL", None, None, TaskState.FAILED, "NODE_FAIL: a node of the Slurm job failed"),
    ("BOOT_FAIL", None, None, TaskState.FAILED, "BOOT_FAIL: Slurm could not boot"),
    ("OUT_OF_MEMORY", None, None, TaskState.FAILED, "OUT_OF_MEMORY: the job used more memory"),
]


def running_record() -> TaskRecord:
    record = TaskRecord(task_id="t-1", config=TaskConfig(max_run_time_hours=0.5), provider="s", created_at=0.0)
    return apply(record, Started(), 1.0).unwrap()


@pytest.mark.parametrize(("state", "code", "event", "final", "reason"), TABLE)
def test_slurm_states_map_to_events_with_a_human_reason(
    state: str, code: int | None, event: object, final: TaskState, reason: str
) -> None:
    got = event_for(state, code)
    if event is not None:
        assert got == event
    if final is TaskState.PENDING:
        assert got is None and phase_of(state) == "pending"
        return
    record = running_record()
    after = record if isinstance(got, Started) else apply(record, got, 2.0).unwrap()
    assert after.state is final
    assert after.state_reason.startswith(reason)


def test_a_job_cancelled_through_flow_ends_cancelled() -> None:
    asked = apply(running_record(), CancelRequested(), 2.0).unwrap()
    event = event_for("CANCELLED", None)
    assert isinstance(event, Lost)
    assert apply(asked, event, 3.0).unwrap().state is TaskState.CANCELLED


def test_preemption_and_oom_keep_their_slurm_name() -> None:
    assert isinstance(event_for("PREEMPTED"), Preempted)
    oom = event_for("OUT_OF_MEMORY")
    assert isinstance(oom, Lost) and "--mem" in oom.reason


@pytest.mark.parametrize(
    ("text", "code"), [("0:0", 0), ("3:0", 3), ("0:15", 143), ("0:9", 137), ("1:9", 1), ("x", None)]
)
def test_exit_codes(text: str, code: int | None) -> None:
    assert parse_exit_code(text) == code


def test_squeue_sacct_and_jobcomp_lines() -> None:
    squeue = parse_squeue("12|RUNNING|None\n13|PENDING|Resources\n\n")
    assert (squeue["12"].state, squeue["13"].reason) == ("RUNNING", "Resources")
    sacct = parse_sacct("12|COMPLETED|0:0\n13|CANCELLED by 0|0:15\n13.batch|CANCELLED|0:15\n")
    assert (sacct["12"].exit_code, sacct["13"].state, sacct["13"].exit_code) == (0, "CANCELLED", 143)
    jobcomp = parse_jobcomp(
        "JobId=7 UserId=root(0) GroupId=root(0) Name=wrap JobState=FAILED Partition=debug TimeLimit=UNLIMITED "
        "NodeList=localhost DerivedExitCode=0:0 ExitCode=3:0\n"
        "JobId=8 UserId=u(1) Name=x JobState=TIMEOUT ExitCode=0:15\n"
    )
    assert (jobcomp["7"].state, jobcomp["7"].exit_code) == ("FAILED", 3)
    assert (jobcomp["8"].state, jobcomp["8"].exit_code) == ("TIMEOUT", 143)
    assert squeue_says_gone(1, "slurm_load_jobs error: Invalid job id specified")
    assert not squeue_says_gone(1, "slurm_load_jobs error: Unable to contact slurm controller")


def test_cluster_config() -> None:
    text = (
        "AccountingStorageType   = accounting_storage/none\n"
        "JobCompLoc              = /var/log/slurm/jobcomp.log\n"
        "JobCompType             = jobcomp/filetxt\n"
        "MinJobAge               = 300 sec\n"
    )
    config = parse_scontrol_config(text)
    assert (config.accounting, config.jobcomp_file, config.min_job_age) == (False, "/var/log/slurm/jobcomp.log", 300)
    assert parse_scontrol_config("AccountingStorageType = accounting_storage/slurmdbd\n").accounting


@pytest.mark.parametrize(
    ("text", "gpu", "others"),
    [
        ("gpu:2", GpuGres(2), ()),
        ("gpu:a100:4(S:0-1)", GpuGres(4, "a100"), ()),
        ("gpu:tesla:2,mps:200", GpuGres(2, "tesla"), ("mps",)),
        ("gres/gpu:1", GpuGres(1), ()),
        ("gpu", GpuGres(1), ()),
        ("(null)", None, ()),
        ("nvme:1", None, ("nvme",)),
    ],
)
def test_gres(text: str, gpu: GpuGres | None, others: tuple[str, ...]) -> None:
    assert parse_gres(text) == (gpu, others)


@pytest.mark.parametrize(
    ("gres_type", "short"),
    [
        ("a100", "a100"),
        ("A100", "a100"),
        ("nvidia_a100-sxm4-40gb", "a100-40gb"),
        ("a100_80g", "a100"),
        ("h100", "h100"),
        ("h100_pcie", "h100.pcie"),
        ("a10", "a10"),
        ("l40s", "l40s"),
        ("tesla", None),
        ("rtx8000", None),
    ],
)
def test_gres_types_name_catalog_gpus_or_nothing(gres_type: str, short: str | None) -> None:
    found = model_of_gres_type(gres_type)
    assert (short_name(found) if found else None) == short


def test_untyped_gpus_are_the_configured_model_or_honestly_unknown() -> None:
    a100 = InstanceType("a100", 80, "sxm", 1)
    assert gpu_of(GpuGres(2), a100) == a100
    unknown = gpu_of(GpuGres(2), None)
    assert (unknown.model, unknown.memory_gb) == ("gpu", 0)
    assert gpu_of(GpuGres(1, "tesla"), a100).model == "tesla"


SINFO = """\
node1|gpu*|up|gpu:a100:4(S:0-1)|idle|64|512000
node2|gpu*|up|gpu:a100:4(S:0-1)|mix|64|512000
node3|gpu*|up|gpu:a100:2|drain|64|512000
node1|debug|up|gpu:a100:4(S:0-1)|idle|64|512000
cpu1|cpu|up|(null)|alloc|128|256000
cpu2|cpu|down|(null)|down*|128|256000
x1|maint|down|(null)|idle|8|1000
"""


def test_sinfo_becomes_partitions_and_offers() -> None:
    partitions = parse_sinfo(SINFO)
    gpu = partitions[0]
    assert (gpu.name, gpu.default, gpu.nodes, gpu.memory_mb) == ("gpu", True, 2, 512000)
    assert [(g.gres_type, g.per_node, g.nodes) for g in gpu.gpus] == [("a100", 4, 2)]
    assert [p.name for p in partitions] == ["gpu", "debug", "cpu", "maint"]
    offers = offers_of(partitions, "cluster", None)
    found = {(o.partition, short_name(o.offer.instance_type), o.gres, o.offer.available) for o in offers}
    assert ("gpu", "4xa100", "gpu:a100:4", 2) in found
    assert ("gpu", "a100", "gpu:a100:1", 2) in found
    assert ("debug", "2xa100", "gpu:a100:2", 1) in found
    assert ("cpu", "cpu", None, 1) in found  # cpu2 is down: one usable node
    assert ("maint", "cpu", None, 0) in found  # the partition is down
    assert all(o.offer.price_per_hour_micros == 0 and o.offer.region == o.partition for o in offers)


def test_submit_script_is_idempotent_and_quotes_paths() -> None:
    plan = SubmitPlan(
        task_dir="/w/tasks/t-1",
        submit_dir="/w/tasks/t-1/code",
        pack="/w/incoming/t-1.tar.gz",
        blob_dir="/w/blobs/sha256",
        snapshot=(ManifestEntry(path="a b/c'd.py", digest="sha256:" + "a" * 64, size=1, executable=True),),
        code_dir="/w/tasks/t-1/code",
    )
    text = submit_script(plan)
    assert "if [ -s /w/tasks/t-1/job_id ]; then cat -- /w/tasks/t-1/job_id; exit 0; fi" in text
    assert "'/w/tasks/t-1/code/a b/c'\"'\"'d.py'" in text
    assert "sbatch --parsable -- /w/tasks/t-1/job.sbatch" in text


def test_a_task_that_runs_again_gets_a_new_job_and_forgets_how_the_last_run_ended() -> None:
    first = SubmitPlan(task_dir="/w/tasks/t-1", submit_dir="/w/tasks/t-1/work")
    again = SubmitPlan(task_dir="/w/tasks/t-1", submit_dir="/w/tasks/t-1/work", run=2)
    assert "rm -f" not in submit_script(first)
    text = submit_script(again)
    # idempotent per run: a crash after sbatch prints this run's job again, never the last run's
    assert "if [ -s /w/tasks/t-1/job_id.2 ]; then cat -- /w/tasks/t-1/job_id.2; exit 0; fi" in text
    assert "mv -f -- /w/tasks/t-1/job_id.2.tmp /w/tasks/t-1/job_id.2" in text
    cleared = text.index("rm -f -- /w/tasks/t-1/exit_status /w/tasks/t-1/timed_out /w/tasks/t-1/result.json")
    assert text.index("if [ -s /w/tasks/t-1/job_id.2 ]") < cleared < text.index("sbatch --parsable")


def test_missing_blob_query_names_each_digest_once() -> None:
    text = missing_blobs_script("/w/blobs/sha256", ["sha256:" + "b" * 64, "sha256:" + "a" * 64, "sha256:" + "a" * 64])
    assert text.count("a" * 64) == 2  # the fallback list and the loop
    assert '[ -f "$d" ]' in text


def test_one_poll_asks_squeue_once_for_every_job() -> None:
    jobs = [PolledJob(task_id=f"t-{i}", job_id=str(100 + i), task_dir=f"/w/t-{i}", log_offset=i) for i in range(50)]
    text = poll_script(jobs)
    assert text.count("squeue -h") == 1
    assert "-j 100,101,102" in text


def test_poll_output_carries_any_log_bytes() -> None:
    payload = b"line one\n@@flow exit t-x 9\n\x00\xff binary\n"
    out = parse_poll_output(
        b"12|RUNNING|None\n13|COMPLETED|None\n@@flow squeue 0\n@@flow exit t-b 0\n"
        + f"@@flow log t-a 5 {len(payload)} {5 + len(payload)}\n".encode()
        + payload
        + b"@@flow log t-b 0 3 10\nabc@@flow end\n"
    )
    assert out.complete and out.squeue_rc == 0
    assert out.squeue == "12|RUNNING|None\n13|COMPLETED|None"
    assert out.exits == {"t-b": 0}
    assert out.logs["t-a"].data == payload and out.logs["t-a"].complete
    assert out.logs["t-b"].data == b"abc" and not out.logs["t-b"].complete
    cut = parse_poll_output(b"@@flow squeue 0\n@@flow log t-a 0 100 100\nshort")
    assert not cut.complete and cut.logs == {}


def test_final_state_sources() -> None:
    text = final_states_script(["12", "9"], accounting=True, jobcomp_file="/var/log/jobcomp.log")
    assert "sacct -n -P -X -j 9,12" in text
    assert "'^JobId=(9|12) '" in text
    assert split_sections("@@flow sacct\n12|COMPLETED|0:0\n@@flow jobcomp\n@@flow end\n") == {
        "sacct": "12|COMPLETED|0:0",
        "jobcomp": "",
        "end": "",
    }


def test_squeue_records_of_array_elements() -> None:
    """Slurm lists an array's pending elements as one compressed record until it starts them; each
    element's task reads its own state from it (ids as `<array job>_<index>`)."""
    squeue = parse_squeue(
        "20_[2-5%2]|PENDING|JobArrayTaskLimit\n20_0|RUNNING|None\n20_1|COMPLETED|None\n21_[0,7]|PENDING|None\n"
    )
    assert {k: v.state for k, v in squeue.items()} == {
        "20_0": "RUNNING",
        "20_1": "COMPLETED",
        **{f"20_{k}": "PENDING" for k in range(2, 6)},
        "21_0": "PENDING",
        "21_7": "PENDING",
    }
    assert squeue["20_4"].reason == "JobArrayTaskLimit"
    assert array_record_ids("30_[0-8:4]") == ["30_0", "30_4", "30_8"]
    assert array_record_ids("31") == ["31"]
    assert parse_sacct("20_3|FAILED|2:0\n20_3.batch|FAILED|2:0\n")["20_3"].exit_code == 2
    jobcomp = parse_jobcomp(
        "JobId=1840 UserId=root(0) Name=wrap JobState=COMPLETED ArrayJobId=1838 ArrayTaskId=1 ExitCode=0:0\n"
        "JobId=1841 UserId=root(0) Name=wrap JobState=FAILED ExitCode=4:0\n"
    )
    assert (jobcomp["1838_1"].state, jobcomp["1840"].state, jobcomp["1841"].exit_code) == ("COMPLETED", "COMPLETED", 4)
    assert "1841_0" not in jobcomp
    text = final_states_script(["12", "1838_1"], accounting=False, jobcomp_file="/j.log")
    assert "grep -E -e '^JobId=(12) ' -e ' ArrayJobId=1838 ArrayTaskId=1 ' -- /j.log" in text


def test_array_elements_register_their_task() -> None:
    element = ElementRegistration(
        array_dir="/w/arrays/a1", index=3, task_id="t-3", task_name="sweep-3", task_dir="/w/tasks/t-3"
    )
    text = register_script(element)
    assert "[ -s /w/arrays/a1/job_id ] || exit 97" in text
    assert "ln -sfn -- /w/arrays/a1/3 /w/tasks/t-3" in text
    first = submit_script(
        SubmitPlan(
            task_dir="/w/arrays/a1",
            submit_dir="/w/arrays/a1/work",
            make_work_dir="/w/arrays/a1/work",
            register=element,
            element_dirs=("/w/arrays/a1/0", "/w/arrays/a1/3"),
        )
    )
    # Registered before the idempotency check: an element submitted again still registers.
    assert first.index("ln -sfn") < first.index("if [ -s /w/arrays/a1/job_id ]") < first.index("sbatch")
    assert "mkdir -p -- /w/arrays/a1/0 /w/arrays/a1/3 || exit 90" in first


def test_the_poll_follows_a_tasks_output_link() -> None:
    text = poll_script([PolledJob(task_id="t-1", job_id="20_3", task_dir="/w/tasks/t-1", log_offset=0)])
    assert "stat -L -c" in text and "-j 20_3" in text
