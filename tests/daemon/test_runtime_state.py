"""Providers' runtime states through the one converter: every state round-trips through JSON, and
the untagged dicts older flowds stored still read (existing homes keep their tasks)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowd.providers.local_state import LOCAL_STATES, LocalGroup, LocalNode, LocalProcess, LocalWaiting
from flowd.providers.mithril import MITHRIL_STATES, MithrilBid
from flowd.providers.runtime_state import StateFormatError, dump_state, load_state
from flowd.providers.slurm import SLURM_STATES, SlurmJob

text = st.text(max_size=20)
pids = st.integers(min_value=1, max_value=2**22)
ticks = st.none() | st.integers(min_value=0, max_value=2**40)
gpus = st.lists(st.integers(min_value=0, max_value=7), max_size=4).map(tuple)
local_states = st.one_of(
    st.builds(LocalWaiting, task_dir=text, syncing=st.booleans()),
    st.builds(LocalProcess, pid=pids, start_ticks=ticks, task_dir=text, gpus=gpus, cwd=text),
    st.builds(
        LocalGroup,
        task_dir=text,
        nodes=st.lists(st.builds(LocalNode, pid=pids, start_ticks=ticks, gpus=gpus), min_size=1, max_size=3).map(tuple),
        gpus=gpus,
        cwd=text,
        master_port=st.integers(min_value=0, max_value=65535),
    ),
)


@given(local_states)
def test_local_states_round_trip(state: object) -> None:
    stored = json.loads(json.dumps(dump_state(state)))
    assert load_state(stored, LOCAL_STATES) == state


@given(st.builds(SlurmJob, job_id=st.integers(1, 10**9).map(str), task_dir=text))
def test_slurm_states_round_trip(state: SlurmJob) -> None:
    assert load_state(json.loads(json.dumps(dump_state(state))), SLURM_STATES) == state


@given(st.builds(MithrilBid, bid_fid=text, bid_name=text, region=text, uploads_pending=st.booleans()))
def test_mithril_states_round_trip(state: MithrilBid) -> None:
    assert load_state(json.loads(json.dumps(dump_state(state))), MITHRIL_STATES) == state


def test_old_untagged_states_still_load() -> None:
    assert load_state({}, LOCAL_STATES) is None
    assert load_state({"queued": True, "task_dir": "/t"}, LOCAL_STATES) == LocalWaiting("/t")
    assert load_state({"queued": True, "syncing": True, "task_dir": "/t"}, LOCAL_STATES) == LocalWaiting("/t", True)
    old_process = {"pid": 12, "start_ticks": 99, "task_dir": "/t", "gpus": [1], "cwd": "/t/code"}
    assert load_state(old_process, LOCAL_STATES) == LocalProcess(12, 99, "/t", (1,), "/t/code")
    old_group = {
        "pid": 12,
        "start_ticks": 99,
        "task_dir": "/t",
        "gpus": [0, 1],
        "cwd": "/t",
        "master_port": 2900,
        "nodes": [{"pid": 12, "start_ticks": 99, "gpus": [0]}, {"pid": 13, "start_ticks": 100, "gpus": [1]}],
    }
    group = load_state(old_group, LOCAL_STATES)
    assert isinstance(group, LocalGroup) and [n.pid for n in group.nodes] == [12, 13] and group.master_port == 2900
    assert load_state({"job_id": "77", "task_dir": "/w/t", "queued": True}, SLURM_STATES) == SlurmJob("77", "/w/t")
    assert load_state({"task_dir": "/w/t"}, SLURM_STATES) is None  # stopped while submitting
    old_bid = {"bid_fid": "bid_1", "bid_name": "n-t", "region": "r", "uploads_pending": True, "queued": True}
    assert load_state(old_bid, MITHRIL_STATES) == MithrilBid("bid_1", "n-t", "r", True)
    assert load_state({"bid_name": "n-t"}, MITHRIL_STATES) is None  # stopped while posting


def test_a_state_of_another_kind_is_refused_by_name() -> None:
    with pytest.raises(StateFormatError, match="SlurmJob"):
        load_state(dump_state(SlurmJob("1", "/t")), LOCAL_STATES)
