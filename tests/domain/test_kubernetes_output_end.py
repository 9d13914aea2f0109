"""A Kubernetes task's output ends with two marks its wrapper writes (flow.domain.kubernetes.output_end):
flowd leaves them out of the log, however the stream is cut, and the wrapper, run here by a real sh,
keeps the program's output, exit status and signals as they were and waits for flowd's answer."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
from pathlib import Path

from hypothesis import assume, given
from hypothesis import strategies as st

from conftest import wait_until
from flow.domain.daemon_config import KubernetesSettings
from flow.domain.kubernetes.manifests import WRAPPER, PodPlan, escape, job_manifest
from flow.domain.kubernetes.output_end import OUTPUT_IN, MarkScan, end_marks, release, scan
from flow.domain.task.config import TaskConfig

MARKS = end_marks("t-abc")
# Output that looks like marks: record separators, the marks' text, a mark's start at the end.
OUTPUT = st.lists(
    st.sampled_from([b"\x1e", b"\x1eflow: the ", MARKS[0][:-1], b"\n", b"x" * 7, b"\r50%", b"\x1eflow: the stdout"])
    | st.binary(max_size=40),
    max_size=12,
).map(b"".join)


def _cuts(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({min(p, len(data)) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(OUTPUT, OUTPUT, st.lists(st.integers(min_value=0, max_value=400), max_size=10), st.booleans())
def test_the_log_is_exactly_the_output_however_the_stream_is_cut(
    program: bytes, between: bytes, points: list[int], stderr_first: bool
) -> None:
    assume(not any(m in program + between for m in MARKS))  # (a program that prints one loses it)
    first, second = (MARKS[1], MARKS[0]) if stderr_first else MARKS
    stream = program + first + between + second  # the other stream's tail may come between the marks
    state, out = MarkScan(MARKS), b""
    for chunk in _cuts(stream, points):
        state, data = scan(state, chunk)
        out += data
    assert state.complete and state.stripped == sum(map(len, MARKS))
    state, rest = release(state)
    assert out + rest == program + between


@given(OUTPUT, st.lists(st.integers(min_value=0, max_value=400), max_size=10))
def test_without_marks_every_byte_is_output_once_the_stream_ends(program: bytes, points: list[int]) -> None:
    assume(not any(m in program for m in MARKS))
    state, out = MarkScan(MARKS), b""
    for chunk in _cuts(program, points):
        state, data = scan(state, chunk)
        out += data
    assert not state.complete
    assert out + release(state)[1] == program


def test_only_a_possible_start_of_a_mark_is_held_back() -> None:
    state, out = scan(MarkScan(MARKS), b"epoch 1\r 50%")
    assert out == b"epoch 1\r 50%" and state.held == b""  # a live reader sees a progress bar at once
    state, out = scan(state, b"\n\x1eflow: the std")
    assert out == b"\n" and state.held == b"\x1eflow: the std"
    state, out = scan(state, b"out of t-abc ends here\n")
    assert out == b"" and state.seen == {0}


def _wrapper(tmp_path: Path, *program: str, result: str = "") -> list[str]:
    script = WRAPPER.replace(OUTPUT_IN, str(tmp_path / "output-in")).replace(
        "/dev/termination-log", str(tmp_path / "term")
    )
    return ["sh", "-c", script, "flow-task", "t-abc", result, *program]


def test_the_wrapper_keeps_output_and_status_and_waits_for_flowds_answer(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _wrapper(tmp_path, "bash", "-c", "echo out; echo err >&2; kill -USR1 $$"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    out = proc.stdout.readline() + proc.stdout.readline()  # the program's line, then the mark
    assert out == b"out\n" + MARKS[0]
    assert proc.poll() is None  # the program has ended, and the wrapper waits for flowd's answer
    (tmp_path / "output-in").touch()
    rest, err = proc.communicate(timeout=30)
    out += rest
    assert proc.returncode == 128 + signal.SIGUSR1
    assert (out, err) == (b"out\n" + MARKS[0], b"err\n" + MARKS[1])  # nothing of the shell's own


def test_the_wrapper_passes_sigterm_to_the_program(tmp_path: Path) -> None:
    started = tmp_path / "started"
    program = f"trap 'echo got TERM; exit 7' TERM; touch {started}; while :; do sleep 0.1; done"
    proc = subprocess.Popen(_wrapper(tmp_path, "bash", "-c", program), stdout=subprocess.PIPE)
    wait_until(started.exists, 30)
    proc.send_signal(signal.SIGTERM)
    # Stopped, it does not wait for flowd's answer (no output-in is ever made here).
    assert proc.wait(timeout=30) == 7
    assert not (tmp_path / "output-in").exists()
    assert proc.returncode == 7 and proc.stdout is not None and proc.stdout.read() == b"got TERM\n" + MARKS[0]


def test_a_function_calls_result_becomes_the_termination_message(tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    (tmp_path / "output-in").touch()
    argv = _wrapper(tmp_path, "sh", "-c", f"echo '{{\"ok\": 1}}' > {result}", result=str(result))
    assert subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
    assert (tmp_path / "term").read_text() == '{"ok": 1}\n'


def test_the_pod_runs_the_program_under_the_wrapper_with_its_user_values_verbatim() -> None:
    config = TaskConfig(command=["echo", "$(HOME)", "it's"])
    job = job_manifest(
        PodPlan(task_id="t-abc", task_name="n", config=config, image="i"), KubernetesSettings(name="k8s", image="i")
    )
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == [
        escape(a) for a in ["sh", "-c", WRAPPER, "flow-task", "t-abc", "", "echo", "$(HOME)", "it's"]
    ]
    assert {"name": "flow-out", "mountPath": os.path.dirname(OUTPUT_IN)} in container["volumeMounts"]
