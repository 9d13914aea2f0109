"""The test cluster does what the kubernetes provider will rely on, with the provider's own
identity: Jobs run real pods of the local base image against fake GPU capacity, the scheduler
queues GPU requests and says why, logs and exec reach the pod, deletes cascade, GPU facts are on
the nodes as GPU feature discovery would put them, and the KWOK pool takes pods that tolerate it.
"""

from __future__ import annotations

import json
from typing import Any

from conftest import wait_until
from k8s.fixtures import Cluster


def _job(cluster: Cluster, name: str, script: str, gpus: int = 1, **pod_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"flow.test/job": name}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"flow.test/job": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "main",
                            "image": cluster.image,
                            "imagePullPolicy": "Never",  # no registry: the image was loaded on the node
                            "command": ["sh", "-c", script],
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                        }
                    ],
                    **pod_spec,
                },
            },
        },
    }


def _pods(cluster: Cluster, namespace: str, job: str) -> list[dict[str, Any]]:
    return cluster.items("pods", namespace, f"flow.test/job={job}")


def _phase(cluster: Cluster, namespace: str, job: str) -> str:
    pods = _pods(cluster, namespace, job)
    return str(pods[0]["status"].get("phase", "")) if pods else ""


def _job_done(cluster: Cluster, namespace: str, job: str) -> bool:
    conditions = cluster.get("job", job, namespace)["status"].get("conditions", [])
    return any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)


# Waits until /tmp/go exists in the container (the test execs `touch /tmp/go`), then exits 0.
GATED = "echo started; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo released"


def test_a_gpu_job_runs_logs_execs_and_deletes_with_the_providers_identity(
    k8s_cluster: Cluster, k8s_namespace: str
) -> None:
    c, ns = k8s_cluster, k8s_namespace
    c.create(_job(c, "train", "python3 -c 'import sys; print(\"py\", sys.version_info[:2])'; " + GATED), ns)
    wait_until(lambda: _phase(c, ns, "train") == "Running", timeout=120, interval=0.2)
    pod = _pods(c, ns, "train")[0]
    assert pod["spec"]["nodeName"] == c.node  # the real node: the only one without a taint
    name = pod["metadata"]["name"]
    wait_until(lambda: "started" in c.kubectl("-n", ns, "logs", name, admin=False).stdout, timeout=60, interval=0.2)
    done = c.kubectl("-n", ns, "exec", name, "--", "python3", "-c", "import os; print(os.getcwd())", admin=False)
    assert done.stdout == "/\n"
    c.kubectl("-n", ns, "exec", name, "--", "touch", "/tmp/go", admin=False)
    wait_until(lambda: _job_done(c, ns, "train"), timeout=120, interval=0.2)
    assert c.kubectl("-n", ns, "logs", name, admin=False).stdout == "py (3, 11)\nstarted\nreleased\n"
    c.kubectl("-n", ns, "delete", "job", "train", "--cascade=foreground", "--wait=true", "--timeout=120s", admin=False)
    assert _pods(c, ns, "train") == []  # foreground propagation: the pods went with the Job


def test_a_third_one_gpu_job_waits_with_the_schedulers_reason_while_two_hold_both_gpus(
    k8s_cluster: Cluster, k8s_namespace: str
) -> None:
    c, ns = k8s_cluster, k8s_namespace
    assert c.node_gpus == 2
    for name in ("gpu-a", "gpu-b"):
        c.create(_job(c, name, GATED), ns)
    wait_until(lambda: _phase(c, ns, "gpu-a") == _phase(c, ns, "gpu-b") == "Running", timeout=120, interval=0.2)
    c.create(_job(c, "gpu-c", GATED), ns)

    def unschedulable_reason() -> str:
        pods = _pods(c, ns, "gpu-c")
        conditions = pods[0]["status"].get("conditions", []) if pods else []
        return next((x.get("message", "") for x in conditions if x.get("reason") == "Unschedulable"), "")

    wait_until(lambda: "Insufficient nvidia.com/gpu" in unschedulable_reason(), timeout=60, interval=0.2)
    assert _phase(c, ns, "gpu-c") == "Pending"
    first = _pods(c, ns, "gpu-a")[0]["metadata"]["name"]
    c.kubectl("-n", ns, "exec", first, "--", "touch", "/tmp/go")
    wait_until(lambda: _phase(c, ns, "gpu-c") == "Running", timeout=120, interval=0.2)  # it takes the freed GPU


def test_the_nodes_carry_gpu_facts_as_gpu_feature_discovery_would(k8s_cluster: Cluster) -> None:
    c = k8s_cluster
    listed = json.loads(c.kubectl("get", "nodes", "-o", "json", admin=False).stdout)["items"]
    nodes = {n["metadata"]["name"]: n for n in listed}
    assert set(nodes) >= {c.node, *c.kwok_nodes}
    real = nodes[c.node]
    assert real["status"]["allocatable"]["nvidia.com/gpu"] == str(c.node_gpus)
    assert real["metadata"]["labels"]["nvidia.com/gpu.product"] == c.node_gpu_product
    assert real["metadata"]["labels"]["nvidia.com/gpu.count"] == str(c.node_gpus)
    for name in c.kwok_nodes:
        assert nodes[name]["status"]["allocatable"]["nvidia.com/gpu"] == str(c.kwok_gpus)
        assert nodes[name]["metadata"]["labels"]["nvidia.com/gpu.product"] == c.kwok_gpu_product


def test_the_kwok_pool_takes_pods_that_tolerate_it_and_no_others(k8s_cluster: Cluster, k8s_namespace: str) -> None:
    c, ns = k8s_cluster, k8s_namespace
    on_pool = {
        "tolerations": [c.kwok_toleration],
        "nodeSelector": {"nvidia.com/gpu.product": c.kwok_gpu_product},
    }
    # Two 8-GPU "nodes" of an Indexed job: each lands on a whole simulated node. KWOK completes
    # the pods of Jobs 1-6 s after they run, unless an annotation sets how long they "run".
    job = _job(c, "pool", "true", gpus=c.kwok_gpus, **on_pool)
    job["spec"].update({"completionMode": "Indexed", "completions": 2, "parallelism": 2})
    job["spec"]["template"]["metadata"]["annotations"] = {"pod-complete.stage.kwok.x-k8s.io/delay": "1h"}
    c.create(job, ns)

    def running_on_pool() -> set[str]:
        pods = _pods(c, ns, "pool")
        return {p["spec"].get("nodeName", "") for p in pods if p["status"].get("phase") == "Running"}

    wait_until(lambda: len(running_on_pool()) == 2, timeout=120, interval=0.2)
    assert running_on_pool() <= set(c.kwok_nodes)
    # Without the toleration nothing fits: the real node has 2 GPUs, the pool is tainted.
    c.create(_job(c, "nowhere", "true", gpus=c.kwok_gpus), ns)

    def reason() -> str:
        pods = _pods(c, ns, "nowhere")
        conditions = pods[0]["status"].get("conditions", []) if pods else []
        return next((x.get("message", "") for x in conditions if x.get("reason") == "Unschedulable"), "")

    wait_until(lambda: "untolerated taint" in reason(), timeout=60, interval=0.2)
    assert "Insufficient nvidia.com/gpu" in reason()


def test_the_providers_identity_launches_jobs_but_is_not_an_administrator(
    k8s_cluster: Cluster, k8s_namespace: str
) -> None:
    c, ns = k8s_cluster, k8s_namespace

    def can(verb: str, what: str, *where: str) -> bool:
        done = c.kubectl("auth", "can-i", verb, what, *where, admin=False, check=False)
        return done.stdout.strip() == "yes"

    for verb, what in [
        ("create", "jobs.batch"),
        ("watch", "pods"),
        ("get", "pods/log"),
        ("create", "pods/exec"),
        ("create", "secrets"),
        ("create", "services"),
        ("create", "persistentvolumeclaims"),
        ("list", "events"),
    ]:
        assert can(verb, what, "-n", ns), f"the provider cannot {verb} {what}"
    assert can("list", "nodes")  # find_instances: the nodes' allocatable GPUs
    assert not can("create", "namespaces")
    assert not can("patch", "nodes")
    assert not can("create", "clusterrolebindings.rbac.authorization.k8s.io")


def test_the_pods_of_an_indexed_job_find_each_other_by_name_through_a_headless_service(
    k8s_cluster: Cluster, k8s_namespace: str
) -> None:
    """What a multi-node task needs: each pod knows its index, and reaches index 0 by the
    hostname the Job gives it (<job>-0) under a headless Service, through the cluster's DNS."""
    c, ns = k8s_cluster, k8s_namespace
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "nodes"},
        "spec": {
            "clusterIP": "None",
            "selector": {"flow.test/job": "ranks"},
            "publishNotReadyAddresses": True,  # names resolve while the pods start
        },
    }
    c.create(service, ns)
    script = (
        "import os, socket, time\n"
        "rank = int(os.environ['JOB_COMPLETION_INDEX'])\n"
        "addr = ('ranks-0.nodes', 29500)\n"
        "if rank == 0:\n"
        "    conn, _ = socket.create_server(('', 29500)).accept()\n"
        "    print('rank 0 got', conn.recv(100).decode(), flush=True)\n"
        "else:\n"
        "    deadline = time.monotonic() + 60\n"
        "    while True:\n"
        "        try:\n"
        "            socket.create_connection(addr, timeout=5).sendall(f'hello from rank {rank}'.encode())\n"
        "            break\n"
        "        except OSError:\n"
        "            if time.monotonic() > deadline:\n"
        "                raise\n"
        "            time.sleep(0.2)\n"
        "    print('rank', rank, 'sent', flush=True)\n"
    )
    job = _job(c, "ranks", 'exec python3 -c "$SCRIPT"', gpus=1, subdomain="nodes")
    job["spec"].update({"completionMode": "Indexed", "completions": 2, "parallelism": 2})
    job["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "SCRIPT", "value": script}]
    c.create(job, ns)
    wait_until(lambda: _job_done(c, ns, "ranks"), timeout=180, interval=0.2)
    logs = {
        p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: c.kubectl(
            "-n", ns, "logs", p["metadata"]["name"]
        ).stdout
        for p in _pods(c, ns, "ranks")
    }
    assert logs == {"0": "rank 0 got hello from rank 1\n", "1": "rank 1 sent\n"}
