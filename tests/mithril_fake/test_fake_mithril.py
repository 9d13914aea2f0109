"""The fake Mithril server itself: it keeps Mithril's contract (the OpenAPI spec, the platform
doc's error shapes), simulates the lifecycle, injects faults, and its instances are real processes
reachable over the test stack's sshd. The provider's tests trust it, so these tests check what
they rely on: a wrong request is caught, a right one is answered as the platform would."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest
from fakes.fixtures import fake_mithril, mithril_stack  # noqa: F401 - pytest finds fixtures by name
from fakes.mithril import FakeMithril, dollars, parse_dollars
from fakes.openapi import validate, validator_at
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, wait_until

A100 = "a100-80gb.sxm.1x"
REGION = "us-central1-a"


# --- helpers ---------------------------------------------------------------------------------


def client(fake: FakeMithril, timeout: float = 10.0) -> httpx.Client:
    return httpx.Client(base_url=fake.base_url, headers={"Authorization": f"Bearer {fake.api_key}"}, timeout=timeout)


def ssh_key(http: httpx.Client, fake: FakeMithril, stack: dict[str, str]) -> str:
    public = Path(stack["FLOW_TEST_SSH_KEY"] + ".pub").read_text()
    reply = http.post(
        "/v2/ssh-keys", json={"project": fake.project_fid, "name": f"k-{uuid.uuid4().hex[:6]}", "public_key": public}
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["fid"])


def bid_body(fake: FakeMithril, key: str, name: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "project": fake.project_fid,
        "region": REGION,
        "instance_type": fake.instance_type_fid(A100),
        "limit_price": "$2.00",
        "instance_quantity": 1,
        "name": name,
        "launch_specification": {"ssh_keys": [key], "volumes": []},
    }
    script = overrides.pop("startup_script", None)
    if script is not None:
        body["launch_specification"]["startup_script"] = script
    body.update(overrides)
    return body


def create_bid(http: httpx.Client, fake: FakeMithril, key: str, name: str, **overrides: Any) -> dict[str, Any]:
    reply = http.post("/v2/spot/bids", json=bid_body(fake, key, name, **overrides))
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def instances_of(http: httpx.Client, fake: FakeMithril, bid_fid: str) -> list[dict[str, Any]]:
    reply = http.get("/v2/instances", params={"project": fake.project_fid, "bid_fid_in": bid_fid})
    assert reply.status_code == 200, reply.text
    return list(reply.json()["data"])


def running_instance(http: httpx.Client, fake: FakeMithril, bid_fid: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def ready() -> bool:
        found[:] = [i for i in instances_of(http, fake, bid_fid) if i["status"] == "STATUS_RUNNING"]
        return bool(found)

    wait_until(ready, 20, 0.05)
    return found[0]


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def stack(mithril_stack: dict[str, str]) -> dict[str, str]:  # noqa: F811 - the imported fixture, by name
    return mithril_stack


@pytest.fixture
def fake(fake_mithril: FakeMithril) -> FakeMithril:  # noqa: F811 - the imported fixture, by name
    return fake_mithril


@pytest.fixture
def http(fake: FakeMithril) -> Iterator[httpx.Client]:
    with client(fake) as session:
        yield session


@pytest.fixture
def tag(stack: dict[str, str]) -> Iterator[str]:
    """A unique tag for what a test's startup scripts write in the shared home; removed after."""
    value = uuid.uuid4().hex[:8]
    yield value
    for path in Path(stack["FLOW_TEST_MITHRIL_SSH_HOME"]).glob(f"*{value}*"):
        shutil.rmtree(path, ignore_errors=True)


# --- the contract ----------------------------------------------------------------------------


def test_a_spec_invalid_bid_gets_fastapis_422_is_recorded_and_creates_nothing(
    fake: FakeMithril, http: httpx.Client, stack: dict[str, str]
) -> None:
    key = ssh_key(http, fake, stack)
    body = bid_body(fake, key, "bad", instance_quantity="two")
    del body["launch_specification"]
    reply = http.post("/v2/spot/bids", json=body)
    assert reply.status_code == 422
    detail = reply.json()["detail"]
    assert {
        "loc": ["body", "instance_quantity"],
        "msg": "Input should be a valid integer",
        "type": "int_type",
    } in detail
    assert {"loc": ["body", "launch_specification"], "msg": "Field required", "type": "missing"} in detail
    assert reply.headers["x-request-id"]
    assert fake.bids == {}
    # Nested fields and enum query parameters are checked too.
    nested = bid_body(fake, key, "bad2")
    nested["launch_specification"]["volumes"] = [7]
    assert http.post("/v2/spot/bids", json=nested).status_code == 422
    listing = http.get("/v2/spot/bids", params={"status": "Running", "limit": 500})
    assert listing.status_code == 422
    locs = [e["loc"] for e in listing.json()["detail"]]
    assert locs == [["query", "status"], ["query", "limit"]]  # in the spec's order, as FastAPI reports
    found = fake.take_violations()
    assert len(found) == 3
    assert "body.instance_quantity: Input should be a valid integer" in found[0]
    assert "body.launch_specification.volumes.0" in found[1]
    with pytest.raises(AssertionError, match="contract violation"):
        http.post("/v2/spot/bids", content=b"{not json", headers={"Content-Type": "application/json"})
        fake.assert_clean()
    assert any("JSON decode error" in v for v in fake.take_violations())


def test_fields_and_parameters_outside_the_spec_are_recorded_though_answered(
    fake: FakeMithril, http: httpx.Client, stack: dict[str, str]
) -> None:
    # The published SDK sent query parameters /v2/spot/availability does not define, and an
    # auction_id in the bid body: FastAPI ignores them, the fake flags them.
    assert http.get("/v2/spot/availability", params={"region": REGION}).status_code == 200
    key = ssh_key(http, fake, stack)
    body = bid_body(fake, key, "extra")
    body["auction_id"] = "auc_x"
    assert http.post("/v2/spot/bids", json=body).status_code == 201
    found = fake.take_violations()
    assert found == [
        "GET /v2/spot/availability: query parameters the spec does not define: region",
        "POST /v2/spot/bids: body fields the spec does not define: auction_id",
    ]


def test_responses_are_checked_against_the_spec_models() -> None:
    # The validator the fake runs on each of its responses catches a model that breaks the spec.
    bid_model = validator_at("components", "schemas", "BidModel")
    problems = validate(bid_model, {"fid": "bid_x", "status": "Done", "instances": [{"fid": "inst_x"}]}, ["response"])
    messages = {(".".join(map(str, p["loc"])), p["type"]) for p in problems}
    assert ("response.status", "enum") in messages
    assert ("response.instances.0", "string_type") in messages
    assert ("response.limit_price", "missing") in messages
    # Nullable fields (the spec's 3.0-style `nullable`) accept null and still check the type.
    instance = validator_at("components", "schemas", "InstanceModel")
    good = {
        "fid": "inst_a", "name": "n", "project": "proj_a", "created_at": "2024-01-01T00:00:00Z",
        "created_by": "user_a", "instance_type": "it_a", "status": "STATUS_NEW", "ssh_destination": None,
    }  # fmt: skip
    assert validate(instance, good, []) == []
    assert validate(instance, {**good, "ssh_destination": 22}, [])[0]["type"] == "string_type"
    assert validate(instance, {**good, "created_at": "yesterday"}, [])[0]["loc"] == ["created_at"]


def test_every_call_needs_a_valid_key(fake: FakeMithril) -> None:
    with httpx.Client(base_url=fake.base_url, timeout=10) as anonymous:
        missing = anonymous.get("/v2/projects")
        assert missing.status_code == 401
        assert isinstance(missing.json()["detail"], str)
        assert missing.headers["x-request-id"].startswith("req_")
        for header in ("Bearer mithril-abc", f"Basic {fake.api_key}", "Bearer fkey_" + "A" * 40):
            reply = anonymous.get("/v2/projects", headers={"Authorization": header})
            assert reply.status_code == 401, header
        good = anonymous.get("/v2/projects", headers={"Authorization": f"Bearer {fake.api_key}"})
        assert good.status_code == 200


def test_paths_outside_the_spec_are_404_and_wrong_methods_405(http: httpx.Client) -> None:
    assert http.get("/v2/spot/instances").json() == {"detail": "Not Found"}
    assert http.get("/v2/spot/instances").status_code == 404
    assert http.get("/auctions").status_code == 404
    # /v2/volumes/{fid} has PATCH and DELETE in the spec, no GET.
    reply = http.get("/v2/volumes/vol_abc")
    assert (reply.status_code, reply.json()) == (405, {"detail": "Method Not Allowed"})


def test_catalog_prices_and_quotas_are_in_the_platforms_units(fake: FakeMithril, http: httpx.Client) -> None:
    types = http.get("/v2/instance-types").json()
    names = {t["name"] for t in types}
    assert {A100, "a100-80gb.sxm.8x", "h100-80gb.sxm.8x"} <= names
    assert all(t["fid"].startswith("it_") and isinstance(t["hourly_price"], float) for t in types)
    rows = http.get("/v2/spot/availability").json()
    assert all(r["fid"].startswith("auc_") and r["last_instance_price"].startswith("$") for r in rows)
    a100 = fake.instance_type_fid(A100)
    fake.set_price(A100, REGION, "3.10")
    fake.set_min_price(A100, REGION, 1.25)
    prices = http.get("/v2/pricing/current", params={"instance_type": a100, "region": REGION}).json()
    assert prices["spot_price_cents"] == 310
    assert prices["minimum_price_cents"] == 125
    row = next(
        r for r in http.get("/v2/spot/availability").json() if (r["instance_type"], r["region"]) == (a100, REGION)
    )
    assert row["last_instance_price"] == "$3.10"
    assert http.get("/v2/pricing/current", params={"instance_type": a100, "instance_quantity": 0}).status_code == 422
    assert http.get("/v2/pricing/current").status_code == 422
    assert len(fake.take_violations()) == 2
    quotas = http.get("/v2/quotas", params={"project": fake.project_fid}).json()
    spot = next(q for q in quotas if q["instance_type"] == a100)
    assert (spot["product_type"], spot["units"], spot["used_quantity"]) == ("Spot", "instances", 0)
    assert any(q["product_type"] == "Storage" and q["units"] == "GB" for q in quotas)


def test_bid_refusals_carry_the_platforms_substrings(
    fake: FakeMithril, http: httpx.Client, stack: dict[str, str]
) -> None:
    key = ssh_key(http, fake, stack)
    fake.set_min_price(A100, REGION, "2.50")
    low = http.post("/v2/spot/bids", json=bid_body(fake, key, "low", limit_price="$2.49"))
    assert low.status_code == 400
    assert "limit price below minimum" in low.json()["detail"].lower()
    assert "$2.50" in low.json()["detail"]
    create_bid(http, fake, key, "dup", limit_price="$2.50")
    dup = http.post("/v2/spot/bids", json=bid_body(fake, key, "dup", limit_price="$3.00"))
    assert (dup.status_code, "name already used" in dup.json()["detail"]) == (400, True)
    fake.set_quota(A100, 2)
    over = http.post("/v2/spot/bids", json=bid_body(fake, key, "big", limit_price="$3.00", instance_quantity=2))
    assert over.status_code == 400
    assert "quota" in over.json()["detail"]
    no_keys = bid_body(fake, key, "nokeys", limit_price="$3.00")
    no_keys["launch_specification"]["ssh_keys"] = []
    assert "ssh key is required" in http.post("/v2/spot/bids", json=no_keys).json()["detail"]
    money = http.post("/v2/spot/bids", json=bid_body(fake, key, "money", limit_price="3"))
    assert money.status_code == 422
    assert money.json()["detail"][0]["loc"] == ["body", "limit_price"]
    long_script = http.post(
        "/v2/spot/bids", json=bid_body(fake, key, "long", limit_price="$3.00", startup_script="x" * 10_001)
    )
    assert long_script.status_code == 422
    found = fake.take_violations()
    assert len(found) == 2
    assert "10,000" in found[1]
    assert [b["name"] for b in fake.bids.values()] == ["dup"]


# --- paging ------------------------------------------------------------------------------------


def test_bids_and_instances_page_with_cursors_and_filter(
    fake: FakeMithril, http: httpx.Client, stack: dict[str, str]
) -> None:
    key = ssh_key(http, fake, stack)
    made = [create_bid(http, fake, key, f"page-{i}")["fid"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"project": fake.project_fid, "limit": 3}
        if cursor:
            params["next_cursor"] = cursor
        page = http.get("/v2/spot/bids", params=params).json()
        seen += [b["fid"] for b in page["data"]]
        pages += 1
        if pages == 1:
            create_bid(http, fake, key, "late")  # a new bid does not shift the pages being read
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 3
    assert seen == list(reversed(made))  # created_at descending by default
    ascending = http.get("/v2/spot/bids", params={"sort_dir": "asc", "limit": 2}).json()
    assert [b["fid"] for b in ascending["data"]] == made[:2]
    by_name = http.get("/v2/spot/bids", params={"project": fake.project_fid, "name": "page-3"}).json()["data"]
    assert [b["fid"] for b in by_name] == [made[3]]
    assert http.get("/v2/spot/bids", params={"next_cursor": "garbage!"}).status_code == 400
    # Instances: bid_fid_in comma-joined or repeated, both work.
    wait_until(lambda: all(fake.bids[f]["status"] == "Allocated" for f in made), 10)
    joined = http.get("/v2/instances", params={"project": fake.project_fid, "bid_fid_in": f"{made[0]},{made[1]}"})
    repeated = http.get(
        "/v2/instances", params=[("project", fake.project_fid), ("bid_fid_in", made[0]), ("bid_fid_in", made[1])]
    )
    assert {i["bid"] for i in joined.json()["data"]} == {made[0], made[1]}
    assert joined.json()["data"] == repeated.json()["data"]
    instances: list[str] = []
    cursor = None
    while True:
        params = {"project": fake.project_fid, "limit": 2, "status_in": "STATUS_RUNNING"}
        if cursor:
            params["next_cursor"] = cursor
        page = http.get("/v2/instances", params=params).json()
        instances += [i["fid"] for i in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(instances) == len(set(instances)) == 8
    assert http.get("/v2/instances", params={"project": fake.project_fid, "status_in": "RUNNING"}).status_code == 422
    assert http.get("/v2/instances").status_code == 422  # project is required
    assert len(fake.take_violations()) == 2
    for fid in [*made, *[b for b in fake.bids if b not in made]]:
        assert http.delete(f"/v2/spot/bids/{fid}").status_code == 204


# --- fault injection ---------------------------------------------------------------------------


def test_injected_429s_carry_retry_after_then_requests_go_through(
    fake: FakeMithril, http: httpx.Client, stack: dict[str, str]
) -> None:
    key = ssh_key(http, fake, stack)
    fake.inject("POST", "/v2/spot/bids", status=429, count=2, headers={"Retry-After": "3"})
    fake.inject("GET", r"/v2/spot/bids/bid_\w+", status=429)
    first = http.post("/v2/spot/bids", json=bid_body(fake, key, "limited"))
    second = http.post("/v2/spot/bids", json=bid_body(fake, key, "limited"))
    assert [first.status_code, second.status_code] == [429, 429]
    assert first.headers["Retry-After"] == "3"
    assert isinstance(first.json()["detail"], str)
    bid = create_bid(http, fake, key, "limited")
    got = http.get(f"/v2/spot/bids/{bid['fid']}")
    assert (got.status_code, got.headers["Retry-After"]) == (429, "1")
    assert http.get(f"/v2/spot/bids/{bid['fid']}").status_code == 200
    assert len(fake.bids) == 1
    fake.inject("*", "/v2/instances", status=503, body={"detail": "upstream down"})
    reply = http.get("/v2/instances", params={"project": fake.project_fid})
    assert (reply.status_code, reply.json()) == (503, {"detail": "upstream down"})
    statuses = [r.status for r in fake.requests if r.path == "/v2/spot/bids" and r.method == "POST"]
    assert statuses == [429, 429, 201]


def test_a_delayed_create_times_out_the_client_but_still_creates_the_bid(
    fake: FakeMithril, http: httpx.Client, stack: dict[str, str]
) -> None:
    key = ssh_key(http, fake, stack)
    fake.inject("POST", "/v2/spot/bids", delay_s=1.0)
    with client(fake, timeout=0.2) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post("/v2/spot/bids", json=bid_body(fake, key, "slow-create"))
    wait_until(lambda: len(fake.bids) == 1, 10)
    # The classic duplicate-bid trap: blindly re-posting the same name is refused; looking it up works.
    assert "name already used" in http.post("/v2/spot/bids", json=bid_body(fake, key, "slow-create")).json()["detail"]
    found = http.get("/v2/spot/bids", params={"project": fake.project_fid, "name": "slow-create"}).json()["data"]
    assert [b["fid"] for b in found] == list(fake.bids)


# --- lifecycle ---------------------------------------------------------------------------------


def test_lifecycle_with_a_provisioning_delay_and_capacity(mithril_stack: dict[str, str]) -> None:  # noqa: F811 - the imported fixture, by name
    stack = mithril_stack
    with FakeMithril(ssh_port=int(stack["FLOW_TEST_SSH_PORT"]), provisioning_delay_s=1.0) as fake, client(fake) as http:
        key = ssh_key(http, fake, stack)
        fake.set_capacity(A100, REGION, 0)
        bid = create_bid(http, fake, key, "life", startup_script="#!/bin/bash\nsleep 600\n")
        assert (bid["status"], bid["instances"], bid["deactivated_at"]) == ("Open", [], None)
        time.sleep(0.3)
        assert http.get(f"/v2/spot/bids/{bid['fid']}/status").json() == {"bid_fid": bid["fid"], "status": "Open"}
        fake.set_capacity(A100, REGION, 1)
        seen: list[tuple[str, str | None]] = []
        deadline = time.monotonic() + 60  # generous: a busy machine starts the instance late
        while time.monotonic() < deadline:
            instances = instances_of(http, fake, bid["fid"])
            if instances:
                state = (instances[0]["status"], instances[0]["ssh_destination"])
                if not seen or seen[-1] != state:
                    seen.append(state)
                if state[0] == "STATUS_RUNNING":
                    break
            time.sleep(0.05)
        assert [s for s, _ in seen] == ["STATUS_NEW", "STATUS_STARTING", "STATUS_RUNNING"]
        assert [d for _, d in seen] == [None, None, f"127.0.0.1:{stack['FLOW_TEST_SSH_PORT']}"]
        got = http.get(f"/v2/spot/bids/{bid['fid']}").json()
        assert got["status"] == "Allocated"
        assert got["instances"] == [i["fid"] for i in instances]
        capacity = next(
            r["capacity"]
            for r in http.get("/v2/spot/availability").json()
            if (r["instance_type"], r["region"]) == (bid["instance_type"], REGION)
        )
        assert capacity == 0
        inst = instances[0]["fid"]
        status = http.get(f"/v2/instances/{inst}/status").json()
        assert (status["status"], status["bid"], status["end_time"]) == ("STATUS_RUNNING", bid["fid"], None)
        deleted = http.delete(f"/v2/spot/bids/{bid['fid']}")
        assert (deleted.status_code, deleted.content) == (204, b"")
        after = http.get(f"/v2/spot/bids/{bid['fid']}").json()
        assert after["status"] == "Terminated"
        assert after["deactivated_at"] is not None
        assert instances_of(http, fake, bid["fid"])[0]["status"] == "STATUS_TERMINATED"
        assert http.get(f"/v2/instances/{inst}/status").json()["end_time"] == after["deactivated_at"]
        events = [e["event_type"] for e in http.get(f"/v2/spot/bids/{bid['fid']}/history").json()["events"]]
        assert events == ["Placed", "Allocated", "Terminated"]
        assert http.delete(f"/v2/spot/bids/{bid['fid']}").status_code == 204  # idempotent
        assert http.get("/v2/spot/bids/bid_nosuchbid").status_code == 404
        fake.assert_clean()


# --- real instances ----------------------------------------------------------------------------


def ssh_connect(stack: dict[str, str], destination: str) -> paramiko.SSHClient:
    host, _, port = destination.partition(":")
    ssh = paramiko.SSHClient()
    ssh.load_host_keys(stack["FLOW_TEST_SSH_KNOWN_HOSTS"])
    ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
    ssh.connect(
        host,
        port=int(port or 22),
        username=stack["FLOW_TEST_MITHRIL_SSH_USER"],
        key_filename=stack["FLOW_TEST_SSH_KEY"],
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return ssh


def ssh_run(ssh: paramiko.SSHClient, command: str) -> tuple[int, str]:
    _, out, err = ssh.exec_command(command, timeout=30)
    text = out.read().decode() + err.read().decode()
    return out.channel.recv_exit_status(), text


def test_the_startup_script_runs_as_ubuntu_and_the_instance_answers_over_ssh(
    fake: FakeMithril, http: httpx.Client, stack: dict[str, str], tag: str
) -> None:
    script = f"""#!/bin/bash
set -eu
mkdir -p "$HOME/flow-{tag}"
cd "$HOME/flow-{tag}"
{{ id -un; echo "$HOME"; echo "$PATH"; nvidia-smi --list-gpus; }} > whoami.txt
docker pull ubuntu:24.04
docker run -d --name "task-{tag}" --gpus all -e GREETING=hello -v "$PWD:/workspace" -w /workspace ubuntu:24.04 \\
  bash -c 'echo "$GREETING from $PWD"; sleep 600' > cid.txt
echo started
"""
    bid = create_bid(http, fake, key := ssh_key(http, fake, stack), f"ssh-{tag}", startup_script=script)
    del key
    inst = running_instance(http, fake, bid["fid"])
    assert inst["ssh_destination"] == f"127.0.0.1:{stack['FLOW_TEST_SSH_PORT']}"
    wait_until(lambda: "started" in fake.startup_log(inst["fid"]), 20)
    assert fake.startup_exit_code(inst["fid"]) is not None or "started" in fake.startup_log(inst["fid"])
    ssh = ssh_connect(stack, inst["ssh_destination"])
    try:
        code, text = ssh_run(ssh, f"cat ~/flow-{tag}/whoami.txt")
        assert code == 0, text
        lines = text.splitlines()
        assert lines[0] == "ubuntu"
        assert lines[1] == stack["FLOW_TEST_MITHRIL_SSH_HOME"]
        assert lines[2].startswith(f"{stack['FLOW_TEST_MITHRIL_SSH_HOME']}/.fake-mithril/bin:")
        assert lines[3].startswith("GPU 0: NVIDIA A100-SXM4-80GB")
        # The shims are on PATH for SSH commands too; the container's log is readable by name.
        wait_until(lambda: "hello from" in ssh_run(ssh, f"docker logs task-{tag}")[1], 10)
        code, text = ssh_run(ssh, f"docker logs --tail 1 task-{tag}")
        assert text.strip() == f"hello from {stack['FLOW_TEST_MITHRIL_SSH_HOME']}/flow-{tag}"
        code, text = ssh_run(ssh, f"docker inspect -f '{{{{.State.Running}}}}' task-{tag}")
        assert (code, text.strip()) == (0, "true")
        code, text = ssh_run(ssh, "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader")
        assert (code, text.strip()) == (0, "NVIDIA A100-SXM4-80GB, 81920 MiB")
        code, text = ssh_run(ssh, f"docker rm task-{tag}")
        assert code == 1 and "is running" in text
        code, _ = ssh_run(ssh, f"docker stop -t 1 task-{tag} && docker wait task-{tag} && docker rm task-{tag}")
        assert code == 0
        # Foreground runs stream and exit with the command's code; what the shim cannot do is refused.
        code, text = ssh_run(ssh, "docker run --rm -e X=7 img sh -c 'echo x=$X; exit 3'")
        assert (code, text) == (3, "x=7\n")
        assert ssh_run(ssh, "docker run --rm img")[0] == 125
        code, text = ssh_run(ssh, "docker build .")
        assert code == 125 and "unsupported" in text
        assert ssh_run(ssh, f"docker inspect task-{tag}")[0] == 1  # removed above
    finally:
        ssh.close()


def test_termination_kills_every_process_of_the_instance(
    fake: FakeMithril, http: httpx.Client, stack: dict[str, str], tag: str
) -> None:
    key = ssh_key(http, fake, stack)
    home = stack["FLOW_TEST_MITHRIL_SSH_HOME"]
    script = f"""#!/bin/bash
d="$HOME/kill-{tag}-$FAKE_MITHRIL_INSTANCE"; mkdir -p "$d"
sleep 600 & echo $! >> "$d/pids"
setsid sleep 600 < /dev/null > /dev/null 2>&1 & echo $! >> "$d/pids"
docker run -d --name "kill-{tag}-$FAKE_MITHRIL_INSTANCE" img sleep 600 > /dev/null
docker inspect -f '{{{{.Id}}}}' "kill-{tag}-$FAKE_MITHRIL_INSTANCE" > /dev/null
echo $$ >> "$d/pids"
echo ready > "$d/ready"
wait
"""
    cancelled = create_bid(http, fake, key, f"kill-{tag}", startup_script=script)
    preempted = create_bid(http, fake, key, f"preempt-{tag}", startup_script=script)
    again = create_bid(http, fake, key, f"again-{tag}", startup_script=script)

    def pids_of(inst: dict[str, Any]) -> list[int]:
        d = Path(home) / f"kill-{tag}-{inst['fid']}"
        wait_until(lambda: (d / "ready").exists(), 20)
        pids = [int(p) for p in (d / "pids").read_text().split()]
        meta = Path(home) / ".fake-mithril" / "docker" / f"kill-{tag}-{inst['fid']}" / "meta.json"
        wait_until(lambda: int(json.loads(meta.read_text())["pid"]) > 0, 5)
        return [*pids, int(json.loads(meta.read_text())["pid"])]

    first = running_instance(http, fake, cancelled["fid"])
    pids = pids_of(first)
    assert len(pids) == 4 and all(pid_alive(p) for p in pids)
    assert http.delete(f"/v2/spot/bids/{cancelled['fid']}").status_code == 204
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10)
    assert not (Path(home) / ".fake-mithril" / "docker" / f"kill-{tag}-{first['fid']}").exists()
    wait_until(lambda: fake.startup_exit_code(first["fid"]) == -signal.SIGKILL, 10)  # (its reaper records it)

    # Preemption: Preempting during the notice, then the processes die and the bid ends.
    second = running_instance(http, fake, preempted["fid"])
    pids = pids_of(second)
    fake.preempt(preempted["fid"], notice_s=0.5)
    assert http.get(f"/v2/spot/bids/{preempted['fid']}").json()["status"] == "Preempting"
    assert instances_of(http, fake, preempted["fid"])[0]["status"] == "STATUS_PREEMPTING"
    assert all(pid_alive(p) for p in pids)
    wait_until(lambda: http.get(f"/v2/spot/bids/{preempted['fid']}").json()["status"] == "Terminated", 10)
    assert instances_of(http, fake, preempted["fid"])[0]["status"] == "STATUS_PREEMPTED"
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10)
    history = http.get(f"/v2/spot/bids/{preempted['fid']}/history").json()["events"]
    assert [e["event_type"] for e in history] == ["Placed", "Allocated", "Preempted", "Terminated"]

    # Preemption with reallocation: new instance, the script runs again there.
    third = running_instance(http, fake, again["fid"])
    old = pids_of(third)
    fake.preempt(again["fid"], reallocate=True)
    wait_until(lambda: len(http.get(f"/v2/spot/bids/{again['fid']}").json()["instances"]) == 2, 10)
    fresh = running_instance(http, fake, again["fid"])
    assert fresh["fid"] != third["fid"]
    new = pids_of(fresh)
    wait_until(lambda: not any(pid_alive(p) for p in old), 10)
    assert all(pid_alive(p) for p in new)
    assert http.get(f"/v2/spot/bids/{again['fid']}").json()["status"] == "Allocated"
    # stop() (the fixture's teardown) kills what is still running: checked here by hand.
    fake.stop()
    wait_until(lambda: not any(pid_alive(p) for p in new), 10)


# --- volumes, keys, api keys ---------------------------------------------------------------------


def test_volumes_keys_and_api_keys(fake: FakeMithril, http: httpx.Client, stack: dict[str, str]) -> None:
    made = http.post(
        "/v2/volumes",
        json={"name": "data", "project": fake.project_fid, "disk_interface": "Block", "region": REGION, "size_gb": 100},
    )
    assert made.status_code == 201
    vol = made.json()
    assert vol["fid"].startswith("vol_") and vol["deleted_at"] is None and vol["capacity_gb"] == 100
    bad = http.post(
        "/v2/volumes",
        json={"name": "9data", "project": fake.project_fid, "disk_interface": "Block", "region": REGION, "size_gb": 1},
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["type"] == "string_pattern_mismatch"
    assert len(fake.take_violations()) == 1
    renamed = http.patch(f"/v2/volumes/{vol['fid']}", json={"name": "data-2"})
    assert renamed.json()["name"] == "data-2"
    key = ssh_key(http, fake, stack)
    bid = create_bid(http, fake, key, "with-volume")
    bid_with = http.post(
        "/v2/spot/bids",
        json={**bid_body(fake, key, "vol-bid"), "launch_specification": {"ssh_keys": [key], "volumes": [vol["fid"]]}},
    )
    assert bid_with.status_code == 201
    assert http.get("/v2/volumes", params={"project": fake.project_fid}).json()[0]["bids"] == [bid_with.json()["fid"]]
    assert "attached" in http.delete(f"/v2/volumes/{vol['fid']}").json()["detail"]
    assert http.delete(f"/v2/spot/bids/{bid_with.json()['fid']}").status_code == 204
    assert http.delete(f"/v2/volumes/{vol['fid']}").status_code == 204
    assert http.get("/v2/volumes", params={"project": fake.project_fid}).json() == []
    assert len(http.get("/v2/volumes", params={"project": fake.project_fid, "include_deleted": "true"}).json()) == 1
    assert http.delete(f"/v2/spot/bids/{bid['fid']}").status_code == 204

    generated = http.post("/v2/ssh-keys", json={"project": fake.project_fid, "name": "gen", "required": True})
    assert generated.status_code == 201
    assert generated.json()["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    listed = http.get("/v2/ssh-keys", params={"project": fake.project_fid}).json()
    assert all("private_key" not in k for k in listed)
    missing_required = http.post("/v2/spot/bids", json=bid_body(fake, key, "needs-required"))
    assert "required" in missing_required.json()["detail"].lower()
    assert http.delete(f"/v2/ssh-keys/{generated.json()['fid']}").status_code == 204

    minted = http.post("/v2/api-keys", json={"name": "task", "expires_at": "2099-01-01T00:00:00Z"})
    assert minted.status_code == 201
    secret = minted.json()["secret"]
    with httpx.Client(base_url=fake.base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=10) as task:
        assert task.get("/v2/me").status_code == 200
        assert http.delete(f"/v2/api-keys/{minted.json()['fid']}").status_code == 204
        assert task.get("/v2/me").status_code == 401
    assert http.get("/v2/api-keys").json()[0]["deactivated_at"] is not None


# --- parsers and hostile input -------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=10**9))
def test_dollar_strings_round_trip(cents: int) -> None:
    text = dollars(cents)
    assert text.startswith("$") and len(text.split(".")[1]) == 2
    assert parse_dollars(text) == cents


@given(st.text(max_size=12))
def test_dollar_parser_takes_only_the_platforms_format(text: str) -> None:
    parsed = parse_dollars(text)
    if parsed is not None:
        assert dollars(parsed) == text.replace(",", "")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def quiet_fake() -> Iterator[FakeMithril]:
    with FakeMithril(run_startup_scripts=False) as fake:
        yield fake


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["/v2/spot/bids", "/v2/volumes", "/v2/ssh-keys", "/v2/api-keys"]),
    st.dictionaries(
        st.sampled_from(["project", "region", "instance_type", "limit_price", "instance_quantity", "name",
                         "launch_specification", "size_gb", "disk_interface", "public_key", "expires_at"]),
        json_values,
        max_size=8,
    ),
)  # fmt: skip
def test_no_body_crashes_the_fake(quiet_fake: FakeMithril, path: str, body: dict[str, Any]) -> None:
    with client(quiet_fake) as http:
        reply = http.post(path, json=body)
    assert reply.status_code in (201, 400, 404, 422), reply.text
    assert isinstance(reply.json()["detail"] if reply.status_code != 201 else reply.json(), (str, list, dict))
    crashes = [v for v in quiet_fake.take_violations() if "crashed" in v or "response breaks" in v]
    assert crashes == []


def test_runs_by_hand_and_prints_its_url_and_key(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "fakes" / "mithril.py"), "--port", "0", "--no-startup-scripts"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().removeprefix("MITHRIL_API_URL=")
        key = proc.stdout.readline().strip().removeprefix("MITHRIL_API_KEY=")
        assert url.startswith("http://127.0.0.1:") and key.startswith("fkey_")
        reply = httpx.get(f"{url}/v2/projects", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert reply.status_code == 200
        assert reply.json()[0]["name"] == "flow-test"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["/v2/spot/bids", "/v2/spot/bids/bid_x", "/v2/volumes/vol_x", "/v2/ssh-keys/sshkey_x"]),
    st.sampled_from(["POST", "PATCH"]),
    st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
    st.text(alphabet="abcdefghij_=&%0123456789,", max_size=40),
)
def test_no_raw_request_crashes_the_fake(
    quiet_fake: FakeMithril, path: str, method: str, raw: bytes, query: str
) -> None:
    with client(quiet_fake) as http:
        reply = http.request(method, f"{path}?{query}", content=raw, headers={"Content-Type": "application/json"})
    assert reply.status_code in (201, 400, 404, 405, 422), reply.text
    crashes = [v for v in quiet_fake.take_violations() if "crashed" in v or "response breaks" in v]
    assert crashes == []


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def test_multi_instance_bids_pause_resume_and_attach_volumes(
    fake: FakeMithril, http: httpx.Client, stack: dict[str, str]
) -> None:
    key = ssh_key(http, fake, stack)
    bid = create_bid(http, fake, key, "pair", instance_quantity=2, startup_script="exec sleep 600\n")
    wait_until(
        lambda: len([i for i in instances_of(http, fake, bid["fid"]) if i["status"] == "STATUS_RUNNING"]) == 2, 20
    )
    fids = http.get(f"/v2/spot/bids/{bid['fid']}").json()["instances"]
    assert len(set(fids)) == 2
    wait_until(lambda: all(fake.startup_pid(f) is not None for f in fids), 10)
    pids = [fake.startup_pid(f) or 0 for f in fids]
    vol = http.post(
        "/v2/volumes",
        json={"name": "shared", "project": fake.project_fid, "disk_interface": "File", "region": REGION, "size_gb": 10},
    ).json()
    refused = http.patch(f"/v2/spot/bids/{bid['fid']}", json={"volumes": [vol["fid"]]})
    assert (refused.status_code, "paused" in refused.json()["detail"].lower()) == (400, True)
    paused = http.patch(f"/v2/spot/bids/{bid['fid']}", json={"paused": True})
    assert paused.json()["status"] == "Paused"
    assert {i["status"] for i in instances_of(http, fake, bid["fid"])} == {"STATUS_PAUSED"}
    wait_until(lambda: all(process_state(p) == "T" for p in pids), 10)
    attached = http.patch(f"/v2/spot/bids/{bid['fid']}", json={"volumes": [vol["fid"]]})
    assert attached.json()["launch_specification"]["volumes"] == [vol["fid"]]
    resumed = http.patch(f"/v2/spot/bids/{bid['fid']}", json={"paused": False, "limit_price": "$2.40"})
    assert (resumed.json()["status"], resumed.json()["limit_price"]) == ("Allocated", "$2.40")
    assert {i["status"] for i in instances_of(http, fake, bid["fid"])} == {"STATUS_RUNNING"}
    wait_until(lambda: all(process_state(p) == "S" for p in pids), 10)
    events = [e["event_type"] for e in http.get(f"/v2/spot/bids/{bid['fid']}/history").json()["events"]]
    assert events == ["Placed", "Allocated", "Paused", "Volumes Attached", "Limit Price Changed", "Resumed"]
    assert http.delete(f"/v2/spot/bids/{bid['fid']}").status_code == 204
    wait_until(lambda: not any(pid_alive(p) for p in pids), 10)
