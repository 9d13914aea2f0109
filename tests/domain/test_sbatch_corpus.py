"""A corpus of realistic sbatch scripts (tests/fixtures/sbatch/*.sbatch) and the Flow tasks each
must become (the .json beside it): arrays, multi-node torchrun, every GRES form (typed ones such
as a800 included), heredocs, comments after directives, short and long options, aliases,
abbreviated options, nodes derived from task and GPU counts, output patterns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from returns.result import Success

from flow.domain.slurm.filename_patterns import PatternValues, expand_filename_pattern
from flow.domain.slurm.sbatch import JobRequest, has_directives, read_directives, render_job, sbatch_to_configs
from flow.domain.task.config import task_config_violations
from flow.domain.task.config_codec import task_config_to_dict

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "sbatch"
SCRIPTS = sorted(CORPUS.glob("*.sbatch"))
ENVIRON = {"PROJECT_NAME": "flow"}  # the submitting environment, for --export=NAME


def test_the_corpus_is_large_enough() -> None:
    assert len(SCRIPTS) >= 25
    assert all(path.with_suffix(".json").is_file() for path in SCRIPTS)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_each_script_becomes_the_expected_tasks(path: Path) -> None:
    text = path.read_text()
    expected = json.loads(path.with_suffix(".json").read_text())
    parsed = sbatch_to_configs(text, name=path.stem, environ=ENVIRON)
    assert isinstance(parsed, Success), parsed
    job = parsed.unwrap()
    tasks = [{k: v for k, v in task_config_to_dict(c).items() if k != "script"} for c in job.configs]
    assert tasks == expected["tasks"]
    assert [d.spelled for d in job.native_only] == expected["native_only"]
    assert job.generic_gpus == expected["generic_gpus"]
    assert list(job.warnings) == expected["warnings"]
    assert job.job_name == expected["job_name"]
    layout = {"nodes": job.layout.nodes, "ntasks": job.layout.ntasks, "gpus_per_node": job.layout.gpus_per_node}
    assert layout == expected["layout"]
    assert job.gpu_type == expected.get("gpu_type")
    for option, files in expected.get("outputs", {}).items():
        # Element k of the array is job 1000 + k of array job 1000, on node1, for user alice.
        pattern = next(d.value for d in job.directives if d.option == option)
        values = [
            PatternValues(
                job_id=1000 + k,
                job_name=job.job_name or "",
                user="alice",
                node="node1",
                array_job_id=1000,
                array_index=index,
            )
            for k, index in enumerate(job.array.indices if job.array else [None])
        ]
        assert [expand_filename_pattern(pattern or "", v) for v in values] == files
    for config in job.configs:
        assert task_config_violations(config) == ()
        assert config.script is not None and has_directives(config.script)
        # The slurm provider submits each one natively: it renders without complaint.
        request = JobRequest(task_id="t-corpus", name=config.name or "t-corpus", config=config, task_dir="/w/t")
        assert isinstance(render_job(request), Success)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.stem)
def test_the_script_runs_as_written(path: Path) -> None:
    """The task's script is the file itself; an array element only loses its --array option."""
    text = path.read_text()
    job = sbatch_to_configs(text, name=path.stem, environ=ENVIRON).unwrap()
    array = [d for d in read_directives(text).directives if d.option == "array"]
    if not array:
        assert [c.script for c in job.configs] == [text]
        return
    n = array[0].line - 1
    original = text.split("\n")
    for config in job.configs:
        assert config.script is not None
        lines = config.script.split("\n")
        assert lines[:n] + lines[n + 1 :] == original[:n] + original[n + 1 :]
        assert "flow: --array expanded" in lines[n]
        assert not [d for d in read_directives(config.script).directives if d.option == "array"]
        # Other options of the same line stay directives.
        kept = {d.option for d in read_directives(original[n] + "\n").directives} - {"array"}
        assert kept == {d.option for d in read_directives(lines[n] + "\n").directives}
