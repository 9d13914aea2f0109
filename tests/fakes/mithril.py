"""A contract-faithful fake of Mithril's REST API, on 127.0.0.1, for the Mithril provider's tests
and benchmarks (the cloud cannot be reached from here).

    from fakes.mithril import FakeMithril
    with FakeMithril(ssh_port=2822) as fake:          # or fake.start() / fake.stop()
        httpx.get(f"{fake.base_url}/v2/projects", headers={"Authorization": f"Bearer {fake.api_key}"})
        ...
        fake.assert_clean()                           # no request or response broke the spec

By hand: `python tests/fakes/mithril.py --port 8080` prints the base URL and a valid API key.

**The contract.** Paths, methods, parameters, bodies and response models come from the OpenAPI
spec (tests/fakes/mithril-openapi.json, a copy of ../shared/reference/mithril-openapi.json; facts
in ../shared/reference/mithril-platform.md). Every request is validated against it (path, query,
body) as FastAPI does; one it would reject gets FastAPI's 422
`{"detail": [{"loc", "msg", "type"}]}` and is recorded in `fake.violations`. Query parameters and
body fields the spec does not declare are answered as FastAPI does (ignored) but recorded too: a
client that sends them codes against something else than the spec. Every response the fake sends
is validated against the spec's model for its status; a mismatch is a bug in the fake, recorded
as well. Errors the spec leaves out answer FastAPI's `{"detail": "<message>"}` with the
substrings the platform doc lists: 400 "limit price below minimum", 400 "name already used",
400 "... quota ..." (quota exceeded), 400 "ssh key required" / "no ssh keys", 401 (missing or
unknown key), 404 (unknown fid, or `{"detail": "Not Found"}` for a path the spec lacks), 405,
422, 429 (`Retry-After`), 5xx. Every response carries `x-request-id`. A path of the spec the fake
does not implement answers 501 and records a violation. Checks the spec cannot express and the
platform doc states are enforced as 422 + violation: money as "$x.xx" strings, a startup script
of at most 10,000 characters, volume `size_gb` a positive integer (the spec's schema for it is
malformed).

**State.** Two projects ("flow-test", the default, and "other-project"); instance types
a100-80gb.sxm.{1,2,4,8}x, h100-80gb.sxm.8x, h200-141gb.sxm.8x; spot auctions (one per type and
region) with a capacity, a market price and a minimum price; quotas (Spot instances per type,
Storage GB) per project; SSH keys, volumes, bids, instances, API keys, with fids of the platform's
prefixes. Bid names are unique among the project's bids that are not Terminated. List endpoints
sort by `created_at` descending unless asked otherwise; `limit` defaults to 100; cursors are
opaque and stable under inserts.

**Lifecycle.** A bid is `Open` until its auction has capacity for `instance_quantity`
instances (it stays Open while capacity is short: `set_capacity` later allocates it), then
`Allocated`: its instances are `STATUS_NEW`, `STATUS_STARTING` after half of
`provisioning_delay_s`, `STATUS_RUNNING` after all of it (at once with the default 0), and only
then get `ssh_destination` ("127.0.0.1:<ssh_port>") and run the startup script. Allocation takes
capacity; a DELETE gives it back. DELETE -> 204; the bid becomes `Terminated` with
`deactivated_at` and stays readable; its instances `STATUS_TERMINATED` with their processes
killed. PATCH `paused: true` -> `Paused`, instances `STATUS_PAUSED`, processes SIGSTOPped (and
SIGCONT on resume; the script is not run again). `preempt(bid_fid, notice_s=0, reallocate=False)`:
the bid goes `Preempting` and its instances `STATUS_PREEMPTING` at once; after `notice_s` the
processes are killed and the instances become `STATUS_PREEMPTED` (the capacity is reclaimed, not
given back); then the bid is `Terminated` (with `deactivated_at`), or with `reallocate=True`
`Open` again, to be allocated new instances (new fids, the startup script run again) when
capacity allows. `/history` records Placed, Allocated, Preempted, Paused, Resumed, Limit Price
Changed, Volumes Attached/Removed and Terminated.

**Instances are real.** All instances share this host, the test stack's sshd and its user
(`ubuntu`, see tools/test-stack); the stack's client key logs in, whatever keys the bid names.
At RUNNING the fake runs the bid's `launch_specification.startup_script` as that user (the real
platform runs it as root, which the tests cannot give), in its own session and process group,
with cwd `/`, stdin /dev/null, output to `<tmpdir>/instances/<inst_fid>/startup_script.log`
(`fake.startup_log(fid)`; on the platform /var/log/foundry/startup_script.log), and the
environment of a fresh VM: HOME, USER, LOGNAME, SHELL=/bin/bash, LANG=C.UTF-8,
PATH=~/.fake-mithril/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin, plus
FAKE_MITHRIL_INSTANCE=<inst_fid> and FAKE_MITHRIL_GPU_{NAME,COUNT,MEMORY_MIB} (read by the
nvidia-smi shim). A script with a `#!` line runs by it, else by bash. Terminating an instance
(DELETE, preemption, `stop()`) SIGKILLs its process group, every process of the user whose
environment carries its FAKE_MITHRIL_INSTANCE (what escaped with setsid) and its docker-shim
containers. ~/.fake-mithril/bin holds the `docker` and `nvidia-smi` shims (tests/fakes/shims/;
their docstrings say exactly what they emulate), and `lsblk`, `blkid`, `mkfs.ext4` and `mount`
(shims/disks.py): the bid's volumes appear to the startup script as the platform doc describes
(Block volumes as virtio disks of their exact size, lettered in the REVERSE of the attach order;
File volumes as NFS shares), stored per volume fid in `fake.volume_dir(fid)` so their data
outlives instances; a mount makes the mount point a link to that storage (the instances share a
host and run as `ubuntu`, so the tests mount below its home). FAKE_MITHRIL_DISKS (in the startup
script's environment) names the instance's disk table; without it the disk shims run the real
programs. The stack puts ~/.fake-mithril/bin first on PATH for SSH commands too. Nothing assumes
one instance per host: key what you write by task or bid.

**Fault injection** (thread-safe): `inject(method, path_regex, status=None, count=1, delay_s=0.0,
body=None, headers=None)`: the next `count` requests whose method matches (or "*") and whose path
matches `path_regex` in full are delayed by `delay_s`, then answered with `status` (429 with
`Retry-After` from `headers` or "1"; other statuses with `body` or `{"detail": ...}`), or, with
`status=None`, processed normally after the delay (a client timeout while the server still
creates the bid). Also `set_capacity`, `set_min_price`, `set_price`, `set_quota`, `preempt`.

**Inspection.** `base_url`, `api_key` (valid; `POST /v2/api-keys` mints more, revocable),
`project_fid`, `project_name`, `instance_type_fid(name)`, `requests` (RequestRecord: method,
path, query, status, body, request_id, at; in arrival order), `bids` / `instances` / `volumes` /
`ssh_keys` (fid -> the model as the API returns it now), `startup_log(inst_fid)`,
`startup_pid(inst_fid)`, `startup_exit_code(inst_fid)` (-9 once terminated), `violations`,
`take_violations()` (returns and forgets them, for tests that break the spec on purpose) and
`assert_clean()`. Fixtures: tests/fakes/fixtures.py (`fake_mithril` asserts clean at teardown).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import fcntl
import json
import os
import pwd
import queue
import re
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

if __package__ in (None, ""):  # run as a script: python tests/fakes/mithril.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes.openapi import (
    PARSE_MESSAGES,
    Operation,
    Router,
    coerce_query,
    join_locs,
    unknown_fields,
    validate,
    validate_response,
)

JSON = Any
SHIMS = Path(__file__).resolve().parent / "shims"
DISK_SHIMS = ("lsblk", "blkid", "mkfs.ext4", "mount")  # shims/disks.py: a bid's volumes as disks
ROOT_DISK_BYTES = 100 * 10**9
STARTUP_SCRIPT_LIMIT = 10_000
API_KEY = re.compile(r"^fkey_[A-Za-z0-9]{20,}$")
MONEY = re.compile(r"^\$(\d+|\d{1,3}(,\d{3})+)\.\d{2}$")
VM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LIVE_INSTANCE = ("STATUS_NEW", "STATUS_CONFIRMED", "STATUS_INITIALIZING", "STATUS_STARTING", "STATUS_RUNNING")


def _alnum(n: int) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def new_fid(prefix: str) -> str:
    return f"{prefix}_{_alnum(16)}"


def machine_address() -> str:
    """A non-loopback IPv4 address of this machine: the fake instances' private_ip (they all run
    here), which the /etc/hosts rendezvous of multi-node tasks needs (it skips loopback lines)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout.split()
        for address in found:
            if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", address) and not address.startswith("127."):
                return address
    return "127.0.0.1"


def instance_hostname(inst_fid: str) -> str:
    return inst_fid.replace("_", "-")


def new_api_key() -> str:
    return "fkey_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))


def iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def dollars(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


def parse_dollars(text: str) -> int | None:
    """ "$1,234.50" -> 123450 cents; None when it is not the platform's money format."""
    if not MONEY.match(text):
        return None
    return int(Decimal(text[1:].replace(",", "")) * 100)


@dataclass(frozen=True)
class InstanceType:
    name: str
    num_gpus: int
    gpu_type: str
    gpu_memory_gb: int
    gpu_name: str  # what nvidia-smi prints
    num_cpus: int
    ram_gb: int
    local_storage_gb: int
    # (region, capacity, market price in cents, minimum price in cents) per auction
    auctions: tuple[tuple[str, int, int, int], ...]


CATALOG = (
    InstanceType(
        "a100-80gb.sxm.1x", 1, "A100", 80, "NVIDIA A100-SXM4-80GB", 30, 225, 1000,
        (("us-central1-a", 64, 180, 100), ("us-central1-b", 8, 160, 100), ("eu-central1-a", 0, 210, 120)),
    ),
    InstanceType(
        "a100-80gb.sxm.2x", 2, "A100", 80, "NVIDIA A100-SXM4-80GB", 60, 450, 2000,
        (("us-central1-a", 16, 360, 200), ("us-central1-b", 4, 320, 200)),
    ),
    InstanceType(
        "a100-80gb.sxm.4x", 4, "A100", 80, "NVIDIA A100-SXM4-80GB", 120, 900, 4000,
        (("us-central1-a", 8, 720, 400), ("us-central1-b", 2, 640, 400)),
    ),
    InstanceType(
        "a100-80gb.sxm.8x", 8, "A100", 80, "NVIDIA A100-SXM4-80GB", 240, 1800, 8000,
        (("us-central1-a", 4, 1440, 800), ("us-central1-b", 1, 1280, 800)),
    ),
    InstanceType(
        "h100-80gb.sxm.8x", 8, "H100", 80, "NVIDIA H100 80GB HBM3", 208, 1800, 7800,
        (("us-central1-b", 4, 2400, 1200), ("eu-central1-a", 2, 2600, 1200)),
    ),
    InstanceType(
        "h200-141gb.sxm.8x", 8, "H200", 141, "NVIDIA H200", 224, 2000, 30000,
        (("us-central1-a", 1, 3600, 2000),),
    ),
)  # fmt: skip


@dataclass(frozen=True)
class RequestRecord:
    """One request the fake answered (injected answers included), in arrival order."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    body: JSON = None
    request_id: str = ""
    at: float = 0.0


@dataclass
class Injection:
    method: str
    pattern: re.Pattern[str]
    status: int | None
    count: int
    delay_s: float
    body: JSON
    headers: dict[str, str]


@dataclass
class _Auction:
    fid: str
    type_fid: str
    type_name: str
    region: str
    capacity: int
    price_cents: int
    min_cents: int
    allocated: int = 0


@dataclass
class _InstanceRun:
    alloc_at: float
    proc: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None
    log_path: Path | None = None
    paused: bool = False
    killed: bool = False


@dataclass
class _BidMeta:
    seq: int
    alloc_at: float | None = None
    preempt_at: float | None = None
    reallocate: bool = False
    preempt_status: str = "STATUS_PREEMPTED"
    history: list[dict[str, Any]] = field(default_factory=list)


class HTTPError(Exception):
    def __init__(self, status: int, detail: JSON, *, violation: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.violation = violation


class FakeMithril:
    """The fake server. See the module docstring for what it does."""

    def __init__(
        self,
        *,
        ssh_port: int | None = None,
        ssh_user: str = "ubuntu",
        ssh_host: str = "127.0.0.1",
        provisioning_delay_s: float = 0.0,
        port: int = 0,
        run_startup_scripts: bool = True,
        default_quota: int = 1000,
    ) -> None:
        self.ssh_port = int(ssh_port if ssh_port is not None else os.environ.get("FLOW_TEST_SSH_PORT", "2822"))
        self.ssh_user = ssh_user
        self.ssh_host = ssh_host
        # Where more than one: instances get them in turn, as a fleet's machines have addresses
        # of their own (the benchmark gives spellings of 127.0.0.1, which reach the one sshd).
        self.ssh_hosts: tuple[str, ...] = (ssh_host,)
        self._booted = 0
        self.provisioning_delay_s = provisioning_delay_s
        self.run_startup_scripts = run_startup_scripts
        self._port = port
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._router = Router()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._boot_queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._stopping = False
        self._seq = 0
        self._requests: list[RequestRecord] = []
        self._violations: list[str] = []
        self._injections: list[Injection] = []
        self.tmpdir: Path | None = None
        self.private_ip = machine_address()
        self._key_tag = f"fake-mithril-{os.getpid()}-{_alnum(8)}"  # our lines in authorized_keys
        self._namespaces = False  # instances get their own hostname and /etc/hosts (start() checks)
        now = time.time()

        self.api_key = new_api_key()
        self.user_fid = new_fid("user")
        self._me = {
            "id": self.user_fid.removeprefix("user_"),
            "fid": self.user_fid,
            "email": "flow-test@example.com",
            "user_name": "flow-test",
            "organization_id": "org_" + _alnum(12),
            "organization_role": "admin",
        }
        # key -> (api key fid or "", expires_at epoch or None, revoked)
        self._keys: dict[str, dict[str, Any]] = {self.api_key: {"fid": "", "expires": None, "revoked": False}}
        self._api_keys: dict[str, dict[str, Any]] = {}
        self.project_name = "flow-test"
        self.project_fid = new_fid("proj")
        self._projects = {
            self.project_fid: {"fid": self.project_fid, "name": self.project_name, "created_at": iso(now - 86400)},
        }
        other = new_fid("proj")
        self._projects[other] = {"fid": other, "name": "other-project", "created_at": iso(now - 86400)}
        self._types: dict[str, dict[str, Any]] = {}
        self._type_specs: dict[str, InstanceType] = {}
        self._auctions: dict[tuple[str, str], _Auction] = {}
        for spec in CATALOG:
            fid = new_fid("it")
            self._type_specs[fid] = spec
            self._types[fid] = {
                "fid": fid,
                "name": spec.name,
                "num_cpus": spec.num_cpus,
                "cpu_type": "Intel",
                "ram_gb": spec.ram_gb,
                "num_gpus": spec.num_gpus,
                "gpu_type": spec.gpu_type,
                "gpu_memory_gb": spec.gpu_memory_gb,
                "gpu_socket": "SXM5" if spec.gpu_type != "A100" else "SXM4",
                "local_storage_gb": spec.local_storage_gb,
                "network_type": "InfiniBand",
                "ib_count": spec.num_gpus,
                "bridge_count": max(1, spec.num_gpus // 2),
                "hourly_price": min(a[2] for a in spec.auctions) / 100,
            }
            for region, capacity, price, minimum in spec.auctions:
                self._auctions[(fid, region)] = _Auction(
                    new_fid("auc"), fid, spec.name, region, capacity, price, minimum
                )
        # (project fid, instance type fid) -> total Spot instances
        self._quotas: dict[tuple[str, str], int] = {
            (project, type_fid): default_quota for project in self._projects for type_fid in self._types
        }
        self._storage_quota_gb = {project: 100_000 for project in self._projects}
        self._quota_fids: dict[tuple[str, str], str] = {}
        self._ssh_keys: dict[str, dict[str, Any]] = {}
        self._volumes: dict[str, dict[str, Any]] = {}
        self._bids: dict[str, dict[str, Any]] = {}
        self._bid_meta: dict[str, _BidMeta] = {}
        self._active: dict[str, None] = {}  # bids not Terminated, in creation order
        self._instances: dict[str, dict[str, Any]] = {}
        self._runs: dict[str, _InstanceRun] = {}
        self._seqs: dict[str, int] = {}

    # --- lifecycle of the fake -------------------------------------------------------------------

    def start(self) -> str:
        """Binds 127.0.0.1 (port 0 unless given), serves in threads; returns the base URL."""
        self.tmpdir = Path(tempfile.mkdtemp(prefix="fake-mithril-"))
        self._namespaces = _namespaces_work()
        self.tmpdir.chmod(0o755)
        (self.tmpdir / "instances").mkdir(mode=0o755)
        self._install_shims()
        handler = _make_handler(self)
        server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        server.daemon_threads = True
        self._server = server
        serve = threading.Thread(target=server.serve_forever, name="fake-mithril-http", daemon=True)
        ticker = threading.Thread(target=self._ticker, name="fake-mithril-clock", daemon=True)
        booter = threading.Thread(target=self._booter, name="fake-mithril-boot", daemon=True)
        self._threads = [serve, ticker, booter]
        for thread in self._threads:
            thread.start()
        return self.base_url

    def stop(self) -> None:
        """Terminates every instance (killing its processes), stops serving, removes the temp dir."""
        with self._lock:
            self._stopping = True
            fids = [fid for fid, run in self._runs.items() if not run.killed]
            self._wake.notify_all()
        self._boot_queue.put(None)
        self._kill_instances(fids)
        with self._lock:
            for fid in fids:
                inst = self._instances[fid]
                if inst["status"] in LIVE_INSTANCE or inst["status"] in ("STATUS_PAUSED", "STATUS_PREEMPTING"):
                    inst["status"] = "STATUS_TERMINATED"
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=5)
        for run in list(self._runs.values()):
            if run.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    run.proc.wait(timeout=5)
        self._edit_authorized(lambda lines: [x for x in lines if not x.endswith(" " + self._key_tag)])
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self) -> FakeMithril:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- inspection ------------------------------------------------------------------------------

    @property
    def violations(self) -> list[str]:
        with self._lock:
            return list(self._violations)

    def take_violations(self) -> list[str]:
        """Returns the violations seen so far and forgets them (for tests that break the spec on
        purpose and then check the fake noticed)."""
        with self._lock:
            found, self._violations = self._violations, []
            return found

    def assert_clean(self) -> None:
        """Raises AssertionError listing every spec violation seen (requests and responses)."""
        found = self.violations
        if found:
            raise AssertionError(f"{len(found)} Mithril API contract violation(s):\n- " + "\n- ".join(found))

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    @property
    def bids(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            self._advance(time.time())
            return {fid: json.loads(json.dumps(bid)) for fid, bid in self._bids.items()}

    @property
    def instances(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            self._advance(time.time())
            return {fid: json.loads(json.dumps(inst)) for fid, inst in self._instances.items()}

    @property
    def volumes(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {fid: json.loads(json.dumps(vol)) for fid, vol in self._volumes.items()}

    @property
    def ssh_keys(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {fid: json.loads(json.dumps(key)) for fid, key in self._ssh_keys.items()}

    def instance_type_fid(self, name: str) -> str:
        for fid, row in self._types.items():
            if row["name"] == name:
                return fid
        raise KeyError(f"no instance type {name!r}; the fake has {sorted(t['name'] for t in self._types.values())}")

    def startup_log(self, instance_fid: str) -> str:
        """What the instance's startup script has printed so far ("" before it runs)."""
        with self._lock:
            run = self._runs.get(instance_fid)
            path = run.log_path if run else None
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")

    def startup_exit_code(self, instance_fid: str) -> int | None:
        """The startup script's exit status once it ended (-N: killed by signal N), else None."""
        with self._lock:
            run = self._runs.get(instance_fid)
            return None if run is None else run.exit_code

    def startup_pid(self, instance_fid: str) -> int | None:
        """The startup script's pid (also its process group and session), once it runs."""
        with self._lock:
            run = self._runs.get(instance_fid)
            return None if run is None or run.proc is None else run.proc.pid

    # --- control ---------------------------------------------------------------------------------

    def inject(
        self,
        method: str,
        path_regex: str,
        status: int | None = None,
        count: int = 1,
        delay_s: float = 0.0,
        body: JSON = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        with self._lock:
            self._injections.append(
                Injection(method.upper(), re.compile(path_regex), status, count, delay_s, body, dict(headers or {}))
            )

    def _auction(self, instance_type_name: str, region: str) -> _Auction:
        key = (self.instance_type_fid(instance_type_name), region)
        if key not in self._auctions:
            # A new (type, region) row: the market opens there.
            spec = self._type_specs[key[0]]
            base = min(a[2] for a in spec.auctions)
            floor = min(a[3] for a in spec.auctions)
            self._auctions[key] = _Auction(new_fid("auc"), key[0], instance_type_name, region, 0, base, floor)
        return self._auctions[key]

    def set_capacity(self, instance_type_name: str, region: str, n: int) -> None:
        """Free instances in this auction (Open bids there are allocated when it suffices)."""
        with self._lock:
            self._auction(instance_type_name, region).capacity = n
            self._advance(time.time())
            self._wake.notify_all()

    def set_min_price(self, instance_type_name: str, region: str, dollars_per_hour: float | str) -> None:
        """Bids below this limit price are refused with 400 "limit price below minimum"."""
        with self._lock:
            self._auction(instance_type_name, region).min_cents = int(Decimal(str(dollars_per_hour)) * 100)

    def set_price(self, instance_type_name: str, region: str, dollars_per_hour: float | str) -> None:
        """The market (last instance) price of this auction."""
        with self._lock:
            self._auction(instance_type_name, region).price_cents = int(Decimal(str(dollars_per_hour)) * 100)

    def set_quota(self, instance_type_name: str, total_instances: int, project: str | None = None) -> None:
        """Spot instances of this type the project may hold in live bids (default: the fake's project)."""
        with self._lock:
            self._quotas[(project or self.project_fid, self.instance_type_fid(instance_type_name))] = total_instances

    def preempt(
        self,
        bid_fid: str,
        *,
        notice_s: float = 0.0,
        reallocate: bool = False,
        instance_status: str = "STATUS_PREEMPTED",
    ) -> None:
        """Reclaims the bid's instances: `Preempting` now, processes killed and instances
        `instance_status` after `notice_s`; then the bid ends `Terminated`, or with `reallocate`
        goes back to `Open` for a new allocation."""
        with self._lock:
            bid = self._bids[bid_fid]
            if bid["status"] not in ("Allocated", "Paused"):
                raise ValueError(f"bid {bid_fid} is {bid['status']}; only an allocated bid can be preempted")
            meta = self._bid_meta[bid_fid]
            bid["status"] = "Preempting"
            meta.preempt_at = time.time() + notice_s
            meta.reallocate = reallocate
            meta.preempt_status = instance_status
            for fid in bid["instances"]:
                if self._instances[fid]["status"] in (*LIVE_INSTANCE, "STATUS_PAUSED"):
                    self._instances[fid]["status"] = "STATUS_PREEMPTING"
            self._advance(time.time())
            self._wake.notify_all()

    # --- the clock -------------------------------------------------------------------------------

    def _ticker(self) -> None:
        with self._lock:
            while not self._stopping:
                now = time.time()
                self._advance(now)
                deadline = self._next_deadline()
                self._wake.wait(timeout=None if deadline is None else max(0.0, deadline - now) + 0.001)

    def _next_deadline(self) -> float | None:
        times: list[float] = []
        delay = self.provisioning_delay_s
        for fid in self._active:
            bid = self._bids[fid]
            meta = self._bid_meta[fid]
            if bid["status"] == "Preempting" and meta.preempt_at is not None:
                times.append(meta.preempt_at)
            if bid["status"] == "Allocated" and meta.alloc_at is not None:
                for inst_fid in bid["instances"]:
                    status = self._instances[inst_fid]["status"]
                    if status == "STATUS_NEW":
                        times.append(meta.alloc_at + delay / 2)
                    elif status == "STATUS_STARTING":
                        times.append(meta.alloc_at + delay)
        return min(times) if times else None

    def _advance(self, now: float) -> None:
        """Moves every bid and instance to where the clock says it is. Holds the lock."""
        if self._stopping:
            return
        for fid in list(self._active):
            bid = self._bids[fid]
            meta = self._bid_meta[fid]
            if bid["status"] == "Preempting" and meta.preempt_at is not None and now >= meta.preempt_at:
                self._finish_preemption(fid, now)
            if bid["status"] == "Open":
                auction = self._auctions[(bid["instance_type"], bid["region"])]
                if auction.capacity >= bid["instance_quantity"]:
                    self._allocate(fid, auction, now)
            if bid["status"] == "Allocated" and meta.alloc_at is not None:
                elapsed = now - meta.alloc_at
                for inst_fid in bid["instances"]:
                    inst = self._instances[inst_fid]
                    if inst["status"] == "STATUS_NEW" and elapsed >= self.provisioning_delay_s / 2:
                        inst["status"] = "STATUS_STARTING"
                    if inst["status"] == "STATUS_STARTING" and elapsed >= self.provisioning_delay_s:
                        self._authorize(bid)  # the bid's keys log in from now on
                        inst["status"] = "STATUS_RUNNING"
                        host = self.ssh_hosts[self._booted % len(self.ssh_hosts)]
                        self._booted += 1
                        inst["ssh_destination"] = f"{host}:{self.ssh_port}"
                        # Booted by the boot thread: a fork+setuid costs tens of ms, not to be
                        # paid inside a request or under the lock.
                        self._boot_queue.put((inst_fid, json.loads(json.dumps(bid))))

    def _allocate(self, bid_fid: str, auction: _Auction, now: float) -> None:
        bid = self._bids[bid_fid]
        meta = self._bid_meta[bid_fid]
        quantity = bid["instance_quantity"]
        auction.capacity -= quantity
        auction.allocated += quantity
        meta.alloc_at = now
        fids = []
        for index in range(quantity):
            fid = new_fid("inst")
            self._instances[fid] = {
                "fid": fid,
                "name": f"{bid['name']}-{index}",
                "project": bid["project"],
                "created_at": iso(now),
                "created_by": self.user_fid,
                "instance_type": bid["instance_type"],
                "region": bid["region"],
                "bid": bid_fid,
                "reservation": None,
                "ssh_destination": None,
                "private_ip": self.private_ip,
                "status": "STATUS_NEW",
            }
            self._seqs[fid] = self._next_seq()
            self._runs[fid] = _InstanceRun(alloc_at=now)
            fids.append(fid)
        bid["instances"] = bid["instances"] + fids
        bid["status"] = "Allocated"
        meta.history.append({"timestamp": iso(now), "event_type": "Allocated"})

    def _finish_preemption(self, bid_fid: str, now: float) -> None:
        bid = self._bids[bid_fid]
        meta = self._bid_meta[bid_fid]
        auction = self._auctions[(bid["instance_type"], bid["region"])]
        auction.allocated -= bid["instance_quantity"]  # reclaimed: the capacity is not given back
        reclaimed = [fid for fid in bid["instances"] if self._instances[fid]["status"] == "STATUS_PREEMPTING"]
        self._kill_instances(reclaimed)
        for fid in reclaimed:
            self._instances[fid]["status"] = meta.preempt_status
        meta.history.append({"timestamp": iso(now), "event_type": "Preempted"})
        meta.preempt_at = None
        meta.alloc_at = None
        if meta.reallocate:
            bid["status"] = "Open"
        else:
            bid["status"] = "Terminated"
            bid["deactivated_at"] = iso(now)
            meta.history.append({"timestamp": iso(now), "event_type": "Terminated"})
            self._active.pop(bid_fid, None)
            self._detach_volumes(bid_fid)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # --- real instances --------------------------------------------------------------------------

    def _user(self) -> pwd.struct_passwd | None:
        try:
            return pwd.getpwnam(self.ssh_user)
        except KeyError:
            return None

    def _install_shims(self) -> None:
        user = self._user()
        if user is None or os.geteuid() != 0:
            return
        home = Path(user.pw_dir)
        base = home / ".fake-mithril"
        for directory in (base, base / "bin", base / "docker"):
            directory.mkdir(exist_ok=True)
            os.chown(directory, user.pw_uid, user.pw_gid)
        shims = [(SHIMS / "docker.py", "docker"), (SHIMS / "nvidia_smi.py", "nvidia-smi")]
        shims += [(SHIMS / "disks.py", name) for name in DISK_SHIMS]
        for source, name in shims:
            tmp = base / "bin" / f".{name}.{os.getpid()}.{threading.get_ident()}"
            tmp.write_bytes(source.read_bytes())
            tmp.chmod(0o755)
            tmp.replace(base / "bin" / name)

    def _authorized_keys(self) -> Path | None:
        user = self._user()
        if user is None or os.geteuid() != 0:
            return None
        return Path(user.pw_dir) / ".ssh" / "authorized_keys"

    def _edit_authorized(self, edit: Callable[[list[str]], list[str]]) -> None:
        """Rewrites the instances' user's authorized_keys under a lock (fakes of other test
        sessions share that user)."""
        path = self._authorized_keys()
        user = self._user()
        if path is None or user is None or not path.parent.is_dir():
            return
        lock = path.parent / ".fake-mithril.lock"
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                lines = path.read_text().splitlines() if path.exists() else []
                changed = edit(lines)
                if changed != lines:
                    partial = path.with_name(f".authorized_keys.{os.getpid()}")
                    partial.write_text("".join(f"{line}\n" for line in changed))
                    os.chown(partial, user.pw_uid, user.pw_gid)
                    partial.chmod(0o600)
                    partial.replace(path)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _authorize(self, bid: dict[str, Any]) -> None:
        """The bid's SSH keys log in to its instances (the platform puts them in authorized_keys;
        here they join the stack's client key, tagged so that stop() takes them out again)."""
        wanted = []
        for fid in bid["launch_specification"]["ssh_keys"]:
            key = self._ssh_keys.get(fid)
            if key is not None:
                wanted.append(" ".join(str(key["public_key"]).split()[:2]) + " " + self._key_tag)
        if wanted:
            self._edit_authorized(lambda lines: lines + [w for w in wanted if w not in lines])

    def _booter(self) -> None:
        while True:
            item = self._boot_queue.get()
            if item is None:
                return
            try:
                self._boot(*item)
            except Exception as exc:  # noqa: BLE001  (a bug in the fake: the test fails)
                self._violation(f"booting {item[0]}: the fake crashed: {exc!r}")

    def _boot(self, inst_fid: str, bid: dict[str, Any]) -> None:
        """Runs the bid's startup script for this instance, as the platform does at first boot."""
        with self._lock:
            run = self._runs[inst_fid]
            if run.killed or self._stopping:
                return
        assert self.tmpdir is not None
        idir = self.tmpdir / "instances" / inst_fid
        idir.mkdir(mode=0o755, exist_ok=True)
        run.log_path = idir / "startup_script.log"
        script = bid["launch_specification"].get("startup_script")
        user = self._user()
        with open(run.log_path, "ab") as log:
            if not script:
                return
            if not self.run_startup_scripts or user is None or os.geteuid() != 0:
                why = "disabled" if not self.run_startup_scripts else f"needs root and the user {self.ssh_user}"
                log.write(f"fake-mithril: startup script not run ({why})\n".encode())
                return
            path = idir / "startup_script.sh"
            path.write_text(script)
            path.chmod(0o755)
            disks = idir / "disks.json"
            disks.write_text(json.dumps(self._disks_of(bid, user)))
            disks.chmod(0o644)
            spec = self._type_specs[bid["instance_type"]]
            env = {
                "HOME": user.pw_dir,
                "USER": user.pw_name,
                "LOGNAME": user.pw_name,
                "SHELL": "/bin/bash",
                "LANG": "C.UTF-8",
                "PATH": f"{user.pw_dir}/.fake-mithril/bin:{VM_PATH}",
                "FAKE_MITHRIL_INSTANCE": inst_fid,
                "FAKE_MITHRIL_DISKS": str(disks),
                "FAKE_MITHRIL_GPU_NAME": spec.gpu_name,
                "FAKE_MITHRIL_GPU_COUNT": str(spec.num_gpus),
                "FAKE_MITHRIL_GPU_MEMORY_MIB": str(spec.gpu_memory_gb * 1024),
            }
            argv = [str(path)] if script.startswith("#!") else ["/bin/bash", str(path)]
            identity: dict[str, Any] = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            if self._namespaces:
                # The VM's own hostname and /etc/hosts (every instance of the bid, the head last),
                # in namespaces of its own; then the user, as before.
                hosts = idir / "hosts"
                hosts.write_text(self._hosts_of(bid))
                hosts.chmod(0o644)
                argv = [
                    "/usr/bin/unshare", "--mount", "--uts", "--propagation", "private", "--", "/bin/sh", "-c",
                    'mount --bind "$1" /etc/hosts && hostname "$2" && shift 2 && exec /usr/bin/setpriv '
                    f'--reuid={user.pw_uid} --regid={user.pw_gid} --clear-groups -- "$@"',
                    "fake-mithril-boot", str(hosts), instance_hostname(inst_fid), *argv,
                ]  # fmt: skip
                identity = {}
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd="/",
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    **identity,
                )
            except OSError as exc:
                log.write(f"fake-mithril: cannot run the startup script: {exc}\n".encode())
                run.exit_code = 127
                return
        with self._lock:
            run.proc = proc
            killed = run.killed
        if killed:  # terminated while it was starting: _kill_instance did not see the process
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        reaper = threading.Thread(target=self._reap, args=(inst_fid, run), name=f"reap-{inst_fid}", daemon=True)
        reaper.start()

    def _hosts_of(self, bid: dict[str, Any]) -> str:
        """An instance's /etc/hosts: every instance of the bid, the head (the first) last, as the
        platform writes it (3.28.2's rendezvous counts ranks up from the bottom)."""
        lines = ["127.0.0.1 localhost"]
        lines += [f"{self.private_ip} {instance_hostname(fid)}" for fid in reversed(bid["instances"])]
        return "".join(f"{line}\n" for line in lines)

    def volume_dir(self, vol_fid: str) -> Path:
        """Where the fake keeps a volume's storage: `fs/` is its data, `label` its filesystem label
        (present once formatted), `mount.<inst_fid>` where an instance mounted it."""
        assert self.tmpdir is not None
        return self.tmpdir / "volumes" / vol_fid

    def _disks_of(self, bid: dict[str, Any], user: pwd.struct_passwd) -> dict[str, Any]:
        """The bid's volumes as the instance sees them (read by shims/disks.py): the root disk,
        then one virtio disk per Block volume in the reverse of the attach order, and the File
        volumes' NFS shares."""
        disks: list[dict[str, Any]] = [{"name": "/dev/vda", "size": ROOT_DISK_BYTES, "serial": "", "dir": None}]
        shares: dict[str, str] = {}
        with self._lock:
            volumes = [self._volumes[f] for f in bid["launch_specification"]["volumes"] if f in self._volumes]
        block = [v for v in volumes if v["interface"] == "Block"]
        for vol in volumes:
            where = self.volume_dir(vol["fid"])
            where.parent.mkdir(mode=0o755, exist_ok=True)
            where.mkdir(mode=0o700, exist_ok=True)
            os.chown(where, user.pw_uid, user.pw_gid)
        for i, vol in enumerate(reversed(block)):
            name = "/dev/vd" + string.ascii_lowercase[1 + i]
            disks.append(
                {
                    "name": name,
                    "size": vol["capacity_gb"] * 10**9,
                    "serial": "",
                    "dir": str(self.volume_dir(vol["fid"])),
                }
            )
        for vol in volumes:
            if vol["interface"] == "File":
                shares[f"fileshare-{vol['fid']}.mithril.internal:/"] = str(self.volume_dir(vol["fid"]))
        return {"disks": disks, "shares": shares}

    def _reap(self, inst_fid: str, run: _InstanceRun) -> None:
        assert run.proc is not None
        code = run.proc.wait()
        with self._lock:
            run.exit_code = code

    def _kill_instance(self, inst_fid: str) -> None:
        self._kill_instances([inst_fid])

    def _kill_instances(self, inst_fids: list[str]) -> None:
        """The VMs are gone: SIGKILL each one's startup script group, whatever carries its marker,
        and its docker-shim containers (one /proc scan for all of them)."""
        doomed: list[str] = []
        with self._lock:
            for inst_fid in inst_fids:
                run = self._runs.get(inst_fid)
                if run is None or run.killed:
                    continue
                run.killed = True
                doomed.append(inst_fid)
                if run.proc is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(run.proc.pid, signal.SIGKILL)
        user = self._user()
        if not doomed or user is None or os.geteuid() != 0:
            return
        # Until none is left: a terminated VM has no process running (a fork racing a pass, or a
        # process not dead yet a moment after its SIGKILL, is found by the next).
        deadline = time.monotonic() + 10
        while self._signal_marked(doomed, user.pw_uid, signal.SIGKILL) and time.monotonic() < deadline:
            time.sleep(0.005)
        wanted = set(doomed)
        state = Path(user.pw_dir) / ".fake-mithril" / "docker"
        for meta_path in state.glob("*/meta.json") if state.exists() else []:
            with contextlib.suppress(OSError, ValueError):
                meta = json.loads(meta_path.read_text())
                if meta.get("instance") in wanted:
                    if int(meta.get("pid") or 0) > 0:
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(int(meta["pid"]), signal.SIGKILL)
                    shutil.rmtree(meta_path.parent, ignore_errors=True)

    def _signal_instance(self, inst_fid: str, sig: signal.Signals) -> None:
        with self._lock:
            run = self._runs.get(inst_fid)
            pid = run.proc.pid if run is not None and run.proc is not None and not run.killed else None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
        user = self._user()
        if user is not None and os.geteuid() == 0:
            self._signal_marked([inst_fid], user.pw_uid, sig)

    @staticmethod
    def _signal_marked(inst_fids: list[str], uid: int, sig: signal.Signals) -> int:
        """Signals every live process carrying one of the instances' markers; returns how many."""
        markers = {f"FAKE_MITHRIL_INSTANCE={fid}".encode() for fid in inst_fids}
        signalled = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat().st_uid != uid:
                    continue
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if markers.intersection(environ.split(b"\0")) and not _is_zombie(int(entry.name)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), sig)
                    signalled += 1
        return signalled

    # --- HTTP ------------------------------------------------------------------------------------

    def _take_injection(self, method: str, path: str) -> Injection | None:
        with self._lock:
            for injection in self._injections:
                if injection.count > 0 and injection.method in ("*", method) and injection.pattern.fullmatch(path):
                    injection.count -= 1
                    if injection.count == 0:
                        self._injections.remove(injection)
                    return injection
        return None

    def _violation(self, text: str) -> None:
        with self._lock:
            self._violations.append(text)

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes
    ) -> tuple[int, JSON, dict[str, str]]:
        """One request -> (status, JSON body or None for no body, extra headers)."""
        split = urlsplit(raw_path)
        path = split.path
        query = parse_qs(split.query, keep_blank_values=True)
        request_id = "req_" + secrets.token_hex(12)
        extra = {"x-request-id": request_id}
        parsed_body: JSON = None
        status, body = 500, {"detail": "Internal Server Error"}
        try:
            if raw_body:
                with contextlib.suppress(ValueError):
                    parsed_body = json.loads(raw_body)
            injection = self._take_injection(method, path)
            if injection is not None:
                if injection.delay_s:
                    time.sleep(injection.delay_s)
                if injection.status is not None:
                    status = injection.status
                    body = injection.body if injection.body is not None else {"detail": _injected_detail(status)}
                    extra.update(injection.headers)
                    if status == 429 and not any(name.lower() == "retry-after" for name in injection.headers):
                        extra["Retry-After"] = "1"
                    return status, body, extra
            status, body = self._dispatch(method, path, query, headers, raw_body)
            return status, body, extra
        except HTTPError as err:
            if err.violation:
                self._violation(err.violation)
            status, body = err.status, {"detail": err.detail}
            return status, body, extra
        except Exception as exc:  # noqa: BLE001  (a bug in the fake: answer 500, and the test fails)
            self._violation(f"{method} {path}: the fake crashed: {exc!r}")
            status, body = 500, {"detail": "Internal Server Error"}
            return status, body, extra
        finally:
            with self._lock:
                self._requests.append(RequestRecord(method, path, query, status, parsed_body, request_id, time.time()))

    def _dispatch(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], raw_body: bytes
    ) -> tuple[int, JSON]:
        found = self._router.match(path)
        if found is None:
            raise HTTPError(404, "Not Found")
        template, path_params, ops = found
        op = ops.get(method)
        if op is None:
            raise HTTPError(405, "Method Not Allowed")
        self._authenticate(headers)
        where = f"{method} {template}"
        errors: list[dict[str, Any]] = []
        params: dict[str, JSON] = {}
        declared = set()
        for index, param in enumerate(op.parameters):
            name, location = param["name"], param["in"]
            declared.add((location, name))
            validator = op.param_validator(index)
            if location == "path":
                raw: list[str] | None = [path_params[name]]
            elif location == "query":
                raw = query.get(name)
            else:
                continue
            if raw is None:
                if param.get("required"):
                    errors.append({"loc": [location, name], "msg": "Field required", "type": "missing"})
                elif "default" in (param.get("schema") or {}):
                    params[name] = param["schema"]["default"]
                continue
            value, problem = coerce_query(param.get("schema") or {}, raw, validator)
            if problem is not None:
                errors.append({"loc": [location, name], "msg": PARSE_MESSAGES[problem], "type": problem})
                continue
            errors.extend(validate(validator, value, [location, name]))
            params[name] = value
        unknown = sorted(set(query) - {name for location, name in declared if location == "query"})
        if unknown:
            self._violation(f"{where}: query parameters the spec does not define: {', '.join(unknown)}")
        body: JSON = None
        if op.has_body:
            if not raw_body.strip():
                if op.body_required:
                    errors.append({"loc": ["body"], "msg": "Field required", "type": "missing"})
            else:
                try:
                    body = json.loads(raw_body)
                except ValueError as exc:
                    pos = getattr(exc, "pos", 0)
                    errors.append({"loc": ["body", pos], "msg": "JSON decode error", "type": "json_invalid"})
                else:
                    validator = op.body_validator()
                    errors.extend(validate(validator, body, ["body"]))
                    extra_fields = unknown_fields(validator, body, [])
                    if extra_fields:
                        self._violation(f"{where}: body fields the spec does not define: {', '.join(extra_fields)}")
        elif raw_body.strip():
            self._violation(f"{where}: a request body, which this operation does not take")
        if errors:
            self._violation(f"{where}: the spec rejects the request: {join_locs(errors)}")
            return self._respond(op, 422, {"detail": errors})
        handler = self._handlers().get((method, template))
        if handler is None:
            raise HTTPError(
                501, f"{where} is in the spec but not in the fake", violation=f"{where}: not implemented by the fake"
            )
        with self._lock:
            self._advance(time.time())
            status, result = handler(params, body)
            self._advance(time.time())
            self._wake.notify_all()
        return self._respond(op, status, result)

    def _respond(self, op: Operation, status: int, body: JSON) -> tuple[int, JSON]:
        where = f"{op.method} {op.template}"
        if 200 <= status < 300 and str(status) not in op.responses:
            self._violation(f"{where}: the fake answered {status}, which the spec does not list")
        problems = validate_response(op, status, body)
        if problems:
            self._violation(f"{where}: the fake's {status} response breaks the spec: {join_locs(problems)}")
        return status, body

    def _authenticate(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if not auth:
            raise HTTPError(401, "Not authenticated: send Authorization: Bearer fkey_...")
        if scheme.lower() != "bearer" or not API_KEY.match(token.strip()):
            raise HTTPError(401, "Invalid authentication credentials")
        with self._lock:
            key = self._keys.get(token.strip())
            if key is None or key["revoked"] or (key["expires"] is not None and key["expires"] < time.time()):
                raise HTTPError(401, "Invalid or expired API key")

    def _handlers(self) -> dict[tuple[str, str], Callable[[dict[str, JSON], JSON], tuple[int, JSON]]]:
        return {
            ("GET", "/v2/me"): lambda p, b: (200, dict(self._me)),
            ("GET", "/v2/projects"): lambda p, b: (200, list(self._projects.values())),
            ("GET", "/v2/instance-types"): lambda p, b: (200, list(self._types.values())),
            ("GET", "/v2/spot/availability"): self._availability,
            ("GET", "/v2/pricing/current"): self._pricing,
            ("GET", "/v2/quotas"): self._get_quotas,
            ("GET", "/v2/ssh-keys"): self._list_keys,
            ("POST", "/v2/ssh-keys"): self._create_key,
            ("PATCH", "/v2/ssh-keys/{ssh_key_fid}"): self._update_key,
            ("DELETE", "/v2/ssh-keys/{ssh_key_fid}"): self._delete_key,
            ("POST", "/v2/spot/bids"): self._create_bid,
            ("GET", "/v2/spot/bids"): self._list_bids,
            ("GET", "/v2/spot/bids/{bid_fid}"): lambda p, b: (200, self._bid(p["bid_fid"])),
            ("PATCH", "/v2/spot/bids/{bid_fid}"): self._update_bid,
            ("DELETE", "/v2/spot/bids/{bid_fid}"): self._delete_bid,
            ("GET", "/v2/spot/bids/{bid_fid}/status"): self._bid_status,
            ("GET", "/v2/spot/bids/{bid_fid}/history"): self._bid_history,
            ("GET", "/v2/instances"): self._list_instances,
            ("GET", "/v2/instances/{instance_fid}/status"): self._instance_status,
            ("GET", "/v2/volumes"): self._list_volumes,
            ("POST", "/v2/volumes"): self._create_volume,
            ("PATCH", "/v2/volumes/{volume_fid}"): self._rename_volume,
            ("DELETE", "/v2/volumes/{volume_fid}"): self._delete_volume,
            ("GET", "/v2/api-keys"): lambda p, b: (200, list(self._api_keys.values())),
            ("POST", "/v2/api-keys"): self._create_api_key,
            ("DELETE", "/v2/api-keys/{key_fid}"): self._revoke_api_key,
        }

    # --- handlers (called with the lock held) ----------------------------------------------------

    def _project(self, fid: str) -> dict[str, Any]:
        project = self._projects.get(fid)
        if project is None:
            raise HTTPError(404, f"Project {fid} not found (use a proj_ fid from GET /v2/projects)")
        return project

    def _type(self, fid: str) -> dict[str, Any]:
        row = self._types.get(fid)
        if row is None:
            raise HTTPError(404, f"Instance type {fid} not found (use an it_ fid from GET /v2/instance-types)")
        return row

    def _availability(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        rows = []
        for auction in self._auctions.values():
            lowest = self._lowest_allocated(auction)
            rows.append(
                {
                    "fid": auction.fid,
                    "instance_type": auction.type_fid,
                    "region": auction.region,
                    "capacity": max(0, auction.capacity),
                    "last_instance_price": dollars(auction.price_cents),
                    "lowest_allocated_price": None if lowest is None else dollars(lowest),
                    "adjustable_memory": False,
                    "default_image_version": None,
                }
            )
        return 200, rows

    def _lowest_allocated(self, auction: _Auction) -> int | None:
        prices = [
            parse_dollars(bid["limit_price"]) or 0
            for bid in self._bids.values()
            if bid["status"] == "Allocated"
            and (bid["instance_type"], bid["region"]) == (auction.type_fid, auction.region)
        ]
        return min(prices) if prices else None

    def _pricing(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        type_fid = params["instance_type"]
        self._type(type_fid)
        region = params.get("region")
        auctions = [a for a in self._auctions.values() if a.type_fid == type_fid and region in (None, a.region)]
        if not auctions:
            raise HTTPError(404, f"No spot market for instance type {type_fid} in region {region}")
        best = min(auctions, key=lambda a: a.price_cents)
        lowest = self._lowest_allocated(best)
        return 200, {
            "spot_price_cents": best.price_cents,
            "reserved_price_cents": None,
            "minimum_price_cents": best.min_cents,
            "lowest_allocated_bid_cents": lowest,
            "dynamic_win_price_cents": max(best.price_cents, best.min_cents),
            "available_capacity": sum(max(0, a.capacity) for a in auctions),
            "total_capacity": sum(max(0, a.capacity) + a.allocated for a in auctions),
        }

    def _quota_used(self, project: str, type_fid: str) -> int:
        return sum(
            bid["instance_quantity"]
            for bid in self._bids.values()
            if bid["project"] == project and bid["instance_type"] == type_fid and bid["status"] != "Terminated"
        )

    def _get_quotas(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        project = self._project(params["project"])["fid"]
        rows = []
        for (proj, type_fid), total in self._quotas.items():
            if proj != project:
                continue
            fid = self._quota_fids.setdefault((proj, type_fid), new_fid("quota"))
            rows.append(
                {
                    "fid": fid,
                    "project": proj,
                    "instance_type": type_fid,
                    "product_type": "Spot",
                    "total_quantity": total,
                    "used_quantity": self._quota_used(proj, type_fid),
                    "units": "instances",
                    "name": f"Spot {self._types[type_fid]['name']}",
                }
            )
        storage_fid = self._quota_fids.setdefault((project, "storage"), new_fid("quota"))
        rows.append(
            {
                "fid": storage_fid,
                "project": project,
                "instance_type": None,
                "product_type": "Storage",
                "total_quantity": self._storage_quota_gb[project],
                "used_quantity": self._storage_used(project),
                "units": "GB",
                "name": "Storage",
            }
        )
        return 200, rows

    def _storage_used(self, project: str) -> int:
        return sum(
            int(v["capacity_gb"]) for v in self._volumes.values() if v["project"] == project and v["deleted_at"] is None
        )

    # ssh keys

    def _list_keys(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        project = self._project(params["project"])["fid"]
        return 200, [
            {k: v for k, v in key.items() if k != "private_key"}
            for key in self._ssh_keys.values()
            if key["project"] == project
        ]

    def _create_key(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        project = self._project(body["project"])["fid"]
        public = body.get("public_key")
        private = None
        if public is None:
            public, private = _generate_rsa_pair()
        elif not re.match(
            r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp\d+|sk-\S+) [A-Za-z0-9+/=]+( .*)?$", public.strip()
        ):
            raise HTTPError(400, "Invalid public key: expected an OpenSSH public key line (ssh-ed25519 AAAA...)")
        if any(k["project"] == project and k["name"] == body["name"] for k in self._ssh_keys.values()):
            raise HTTPError(400, f"SSH key name already used in this project: {body['name']!r}")
        fid = new_fid("sshkey")
        key = {
            "fid": fid,
            "name": body["name"],
            "project": project,
            "public_key": public.strip(),
            "created_at": iso(time.time()),
            "required": bool(body.get("required", False)),
        }
        self._ssh_keys[fid] = key
        return 201, {**key, "private_key": private}

    def _ssh_key(self, fid: str) -> dict[str, Any]:
        key = self._ssh_keys.get(fid)
        if key is None:
            raise HTTPError(404, f"SSH key {fid} not found")
        return key

    def _update_key(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        key = self._ssh_key(params["ssh_key_fid"])
        key["required"] = body["required"]
        return 200, dict(key)

    def _delete_key(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        self._ssh_key(params["ssh_key_fid"])
        del self._ssh_keys[params["ssh_key_fid"]]
        return 204, None

    # bids

    def _bid(self, fid: str) -> dict[str, Any]:
        bid = self._bids.get(fid)
        if bid is None:
            raise HTTPError(404, f"Bid {fid} not found")
        return bid

    def _create_bid(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        project = self._project(body["project"])["fid"]
        type_row = self._type(body["instance_type"])
        region = body["region"]
        auction = self._auctions.get((type_row["fid"], region))
        if auction is None:
            regions = sorted(r for (t, r) in self._auctions if t == type_row["fid"])
            raise HTTPError(
                400,
                f"No spot market for {type_row['name']} in region {region!r}; it is offered in {', '.join(regions)}",
            )
        quantity = body["instance_quantity"]
        if quantity < 1:
            raise HTTPError(400, f"instance_quantity must be at least 1, not {quantity}")
        cents = parse_dollars(body["limit_price"])
        if cents is None:
            loc = ["body", "limit_price"]
            msg = f"Invalid price {body['limit_price']!r}: expected dollars like '$25.60'"
            detail = [{"loc": loc, "msg": msg, "type": "value_error"}]
            raise HTTPError(422, detail, violation=f"POST /v2/spot/bids: {msg}")
        if cents < auction.min_cents:
            raise HTTPError(
                400,
                f"Bid rejected: limit price below minimum. The minimum for {type_row['name']} in {region} is "
                f"{dollars(auction.min_cents)} per instance-hour; you bid {body['limit_price']}.",
            )
        if any(
            b["project"] == project and b["name"] == body["name"] and b["status"] != "Terminated"
            for b in self._bids.values()
        ):
            raise HTTPError(400, f"Bid name already used in this project: {body['name']!r}; choose a unique name")
        spec = body["launch_specification"]
        script = spec.get("startup_script")
        if script is not None and len(script) > STARTUP_SCRIPT_LIMIT:
            loc = ["body", "launch_specification", "startup_script"]
            msg = f"String should have at most {STARTUP_SCRIPT_LIMIT} characters"
            detail = [{"loc": loc, "msg": msg, "type": "string_too_long"}]
            raise HTTPError(
                422,
                detail,
                violation=f"POST /v2/spot/bids: startup_script is {len(script)} characters, over the "
                f"platform's {STARTUP_SCRIPT_LIMIT:,}",
            )
        keys = spec["ssh_keys"]
        for key_fid in keys:
            key = self._ssh_keys.get(key_fid)
            if key is None or key["project"] != project:
                raise HTTPError(400, f"SSH key {key_fid} not found in project {project}")
        if not keys:
            raise HTTPError(400, "No SSH keys provided: an ssh key is required to launch instances")
        required = [k["fid"] for k in self._ssh_keys.values() if k["project"] == project and k["required"]]
        missing = [fid for fid in required if fid not in keys]
        if missing:
            raise HTTPError(400, f"SSH key required by the project is missing from the bid: {', '.join(missing)}")
        for vol_fid in spec["volumes"]:
            self._check_volume_for(vol_fid, project, region)
        used = self._quota_used(project, type_row["fid"])
        total = self._quotas.get((project, type_row["fid"]), 0)
        if used + quantity > total:
            raise HTTPError(
                400,
                f"Spot quota exceeded for {type_row['name']}: {used} of {total} instances in use, "
                f"{quantity} more requested. Request a quota increase or cancel bids.",
            )
        now = time.time()
        fid = new_fid("bid")
        bid = {
            "fid": fid,
            "name": body["name"],
            "project": project,
            "created_by": self.user_fid,
            "created_at": iso(now),
            "deactivated_at": None,
            "limit_price": dollars(cents),
            "instance_quantity": quantity,
            "instance_type": type_row["fid"],
            "region": region,
            "instances": [],
            "launch_specification": {
                "volumes": list(spec["volumes"]),
                "ssh_keys": list(keys),
                "startup_script": script,
                "kubernetes_cluster": spec.get("kubernetes_cluster"),
                "image_version": spec.get("image_version"),
                "memory_gb": spec.get("memory_gb"),
            },
            "status": "Open",
        }
        self._bids[fid] = bid
        self._active[fid] = None
        meta = _BidMeta(seq=self._next_seq())
        meta.history.append({"timestamp": iso(now), "event_type": "Placed", "limit_price": dollars(cents)})
        self._bid_meta[fid] = meta
        self._seqs[fid] = meta.seq
        for vol_fid in spec["volumes"]:
            self._volumes[vol_fid]["bids"].append(fid)
        return 201, json.loads(json.dumps(bid))

    def _check_volume_for(self, vol_fid: str, project: str, region: str) -> None:
        vol = self._volumes.get(vol_fid)
        if vol is None or vol["project"] != project or vol["deleted_at"] is not None:
            raise HTTPError(400, f"Volume {vol_fid} not found in project {project}")
        if vol["region"] != region:
            raise HTTPError(400, f"Volume {vol_fid} is in region {vol['region']}, not in the bid's region {region}")
        if vol["interface"] == "Block":
            holders = [b for b in vol["bids"] if self._bids[b]["status"] != "Terminated"]
            if holders:
                raise HTTPError(400, f"Block volume {vol_fid} is already attached to bid {holders[0]}")

    def _page(self, items: list[dict[str, Any]], params: dict[str, JSON], key: Callable[[dict[str, Any]], Any]) -> JSON:
        descending = (params.get("sort_dir") or "desc") == "desc"
        ordered = sorted(items, key=lambda item: (key(item), self._seqs[item["fid"]]), reverse=descending)
        limit = params.get("limit") or 100
        cursor = params.get("next_cursor")
        if cursor:
            try:
                after = json.loads(base64.urlsafe_b64decode(str(cursor).encode()))
                last = (after[0], int(after[1]))
            except (ValueError, TypeError, IndexError) as exc:
                raise HTTPError(400, f"Invalid next_cursor {cursor!r}: pass back the value a page returned") from exc
            ordered = [
                item
                for item in ordered
                if (
                    (key(item), self._seqs[item["fid"]]) < last
                    if descending
                    else (key(item), self._seqs[item["fid"]]) > last
                )
            ]
        page = ordered[:limit]
        next_cursor = None
        if len(ordered) > limit:
            tail = page[-1]
            next_cursor = base64.urlsafe_b64encode(json.dumps([key(tail), self._seqs[tail["fid"]]]).encode()).decode()
        return {"data": json.loads(json.dumps(page)), "next_cursor": next_cursor}

    def _list_bids(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        project = params.get("project")
        if project is not None:
            self._project(project)
        bids = [
            bid
            for bid in self._bids.values()
            if (project is None or bid["project"] == project)
            and params.get("instance_type") in (None, bid["instance_type"])
            and params.get("region") in (None, bid["region"])
            and params.get("status") in (None, bid["status"])
            and params.get("name") in (None, bid["name"])
        ]
        sort_by = params.get("sort_by") or "created_at"
        return 200, self._page(bids, params, lambda bid: bid[sort_by])

    def _update_bid(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        bid = self._bid(params["bid_fid"])
        meta = self._bid_meta[bid["fid"]]
        now = time.time()
        if bid["status"] == "Terminated":
            raise HTTPError(400, f"Bid {bid['fid']} is terminated and cannot be changed")
        if body.get("limit_price") is not None:
            cents = parse_dollars(body["limit_price"])
            if cents is None:
                msg = f"Invalid price {body['limit_price']!r}: expected dollars like '$25.60'"
                raise HTTPError(
                    422,
                    [{"loc": ["body", "limit_price"], "msg": msg, "type": "value_error"}],
                    violation=f"PATCH /v2/spot/bids/{{bid_fid}}: {msg}",
                )
            auction = self._auctions[(bid["instance_type"], bid["region"])]
            if cents < auction.min_cents:
                raise HTTPError(
                    400, f"limit price below minimum: at least {dollars(auction.min_cents)} per instance-hour"
                )
            bid["limit_price"] = dollars(cents)
            meta.history.append(
                {"timestamp": iso(now), "event_type": "Limit Price Changed", "limit_price": dollars(cents)}
            )
        if body.get("volumes") is not None:
            if bid["status"] != "Paused" and not body.get("paused"):
                raise HTTPError(400, 'Pause the bid before changing its volumes (PATCH {"paused": true})')
            old = set(bid["launch_specification"]["volumes"])
            new = list(body["volumes"])
            for vol_fid in new:
                if vol_fid not in old:
                    self._check_volume_for(vol_fid, bid["project"], bid["region"])
            for vol_fid in old - set(new):
                self._volumes[vol_fid]["bids"].remove(bid["fid"])
            for vol_fid in new:
                if vol_fid not in old:
                    self._volumes[vol_fid]["bids"].append(bid["fid"])
            bid["launch_specification"]["volumes"] = new
            if set(new) - old:
                meta.history.append({"timestamp": iso(now), "event_type": "Volumes Attached"})
            if old - set(new):
                meta.history.append({"timestamp": iso(now), "event_type": "Volumes Removed"})
        if body.get("memory_gb") is not None:
            bid["launch_specification"]["memory_gb"] = body["memory_gb"]
            meta.history.append(
                {"timestamp": iso(now), "event_type": "Memory Adjusted", "memory_gb": body["memory_gb"]}
            )
        paused = body.get("paused")
        if paused is True and bid["status"] in ("Open", "Allocated"):
            bid["status"] = "Paused"
            for fid in bid["instances"]:
                if self._instances[fid]["status"] in LIVE_INSTANCE:
                    self._instances[fid]["status"] = "STATUS_PAUSED"
                    self._signal_instance(fid, signal.SIGSTOP)
            meta.history.append({"timestamp": iso(now), "event_type": "Paused"})
        elif paused is False and bid["status"] == "Paused":
            live = [fid for fid in bid["instances"] if self._instances[fid]["status"] == "STATUS_PAUSED"]
            bid["status"] = "Allocated" if live else "Open"
            for fid in live:
                self._instances[fid]["status"] = "STATUS_RUNNING"
                self._signal_instance(fid, signal.SIGCONT)
            meta.history.append({"timestamp": iso(now), "event_type": "Resumed"})
        return 200, json.loads(json.dumps(bid))

    def _delete_bid(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        bid = self._bid(params["bid_fid"])
        if bid["status"] == "Terminated":
            return 204, None
        now = time.time()
        auction = self._auctions[(bid["instance_type"], bid["region"])]
        live = [
            fid
            for fid in bid["instances"]
            if self._instances[fid]["status"] in (*LIVE_INSTANCE, "STATUS_PAUSED", "STATUS_PREEMPTING")
        ]
        if live and bid["status"] in ("Allocated", "Paused", "Preempting"):
            auction.capacity += bid["instance_quantity"]
            auction.allocated -= bid["instance_quantity"]
        self._kill_instances(live)  # SIGKILL ends SIGSTOPped (paused) processes too
        for fid in live:
            self._instances[fid]["status"] = "STATUS_TERMINATED"
        bid["status"] = "Terminated"
        bid["deactivated_at"] = iso(now)
        self._active.pop(bid["fid"], None)
        self._bid_meta[bid["fid"]].history.append({"timestamp": iso(now), "event_type": "Terminated"})
        self._detach_volumes(bid["fid"])
        return 204, None

    def _detach_volumes(self, bid_fid: str) -> None:
        for vol in self._volumes.values():
            if bid_fid in vol["bids"]:
                vol["bids"].remove(bid_fid)

    def _bid_status(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        bid = self._bid(params["bid_fid"])
        return 200, {"bid_fid": bid["fid"], "status": bid["status"]}

    def _bid_history(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        bid = self._bid(params["bid_fid"])
        return 200, {"bid_fid": bid["fid"], "events": list(self._bid_meta[bid["fid"]].history)}

    # instances

    def _list_instances(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        project = self._project(params["project"])["fid"]
        bid_in = params.get("bid_fid_in")
        status_in = params.get("status_in")
        order_in = params.get("order_type_in")
        items = [
            inst
            for inst in self._instances.values()
            if inst["project"] == project
            and (not bid_in or inst["bid"] in bid_in)
            and (not status_in or inst["status"] in status_in)
            and (not order_in or "Bid" in order_in)
            and params.get("instance_type") in (None, inst["instance_type"])
            and params.get("region") in (None, inst["region"])
        ]
        sort_by = params.get("sort_by") or "created_at"
        column = {"created_at": "created_at", "instance_status": "status", "instance_type_fid": "instance_type"}[
            sort_by
        ]
        return 200, self._page(items, params, lambda inst: inst[column])

    def _instance_status(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        inst = self._instances.get(params["instance_fid"])
        if inst is None:
            raise HTTPError(404, f"Instance {params['instance_fid']} not found")
        bid = self._bids.get(inst["bid"] or "")
        ended = inst["status"] in ("STATUS_TERMINATED", "STATUS_PREEMPTED")
        return 200, {
            "fid": inst["fid"],
            "name": inst["name"],
            "status": inst["status"],
            "bid": inst["bid"],
            "reservation": None,
            "end_time": bid["deactivated_at"] if ended and bid is not None else None,
        }

    # volumes

    def _volume(self, fid: str) -> dict[str, Any]:
        vol = self._volumes.get(fid)
        if vol is None or vol["deleted_at"] is not None:
            raise HTTPError(404, f"Volume {fid} not found")
        return vol

    def _list_volumes(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        project = self._project(params["project"])["fid"]
        include_deleted = bool(params.get("include_deleted"))
        return 200, [
            json.loads(json.dumps(vol))
            for vol in self._volumes.values()
            if vol["project"] == project
            and params.get("region") in (None, vol["region"])
            and (include_deleted or vol["deleted_at"] is None)
        ]

    def _create_volume(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        size = body["size_gb"]
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            msg = f"size_gb must be a whole number of GB greater than 0, not {size!r}"
            raise HTTPError(
                422,
                [{"loc": ["body", "size_gb"], "msg": msg, "type": "value_error"}],
                violation=f"POST /v2/volumes: {msg}",
            )
        project = self._project(body["project"])["fid"]
        if not any(region == body["region"] for (_, region) in self._auctions):
            raise HTTPError(400, f"Unknown region {body['region']!r}")
        if any(
            v["project"] == project and v["name"] == body["name"] and v["deleted_at"] is None
            for v in self._volumes.values()
        ):
            raise HTTPError(400, f"Volume name already used in this project: {body['name']!r}")
        if self._storage_used(project) + size > self._storage_quota_gb[project]:
            raise HTTPError(400, f"Storage quota exceeded: {self._storage_quota_gb[project]} GB")
        fid = new_fid("vol")
        vol = {
            "fid": fid,
            "name": body["name"],
            "region": body["region"],
            "created_at": iso(time.time()),
            "deleted_at": None,
            "capacity_gb": size,
            "project": project,
            "interface": body["disk_interface"],
            "bids": [],
            "reservations": [],
            "attachments": {},
        }
        self._volumes[fid] = vol
        self._seqs[fid] = self._next_seq()
        return 201, json.loads(json.dumps(vol))

    def _rename_volume(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        vol = self._volume(params["volume_fid"])
        vol["name"] = body["name"]
        return 200, json.loads(json.dumps(vol))

    def _delete_volume(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        vol = self._volume(params["volume_fid"])
        holders = [b for b in vol["bids"] if self._bids[b]["status"] != "Terminated"]
        if holders:
            raise HTTPError(400, f"Volume {vol['fid']} is attached to bid {holders[0]}: cancel or detach it first")
        vol["deleted_at"] = iso(time.time())
        return 204, None

    # api keys

    def _create_api_key(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        expires = dt.datetime.fromisoformat(body["expires_at"])
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        if expires.timestamp() <= time.time():
            raise HTTPError(400, "expires_at must be in the future")
        secret = new_api_key()
        fid = new_fid("apikey")
        model = {
            "fid": fid,
            "name": body["name"],
            "created_at": iso(time.time()),
            "expires_at": iso(expires.timestamp()),
            "deactivated_at": None,
            "snippet": secret[:9] + "...",
        }
        self._api_keys[fid] = model
        self._keys[secret] = {"fid": fid, "expires": expires.timestamp(), "revoked": False}
        return 201, {**model, "secret": secret}

    def _revoke_api_key(self, params: dict[str, JSON], body: JSON) -> tuple[int, JSON]:
        model = self._api_keys.get(params["key_fid"])
        if model is None:
            raise HTTPError(404, f"API key {params['key_fid']} not found")
        model["deactivated_at"] = iso(time.time())
        for key in self._keys.values():
            if key["fid"] == model["fid"]:
                key["revoked"] = True
        return 204, None


def _namespaces_work() -> bool:
    """Whether this machine lets the fake give each instance mount and UTS namespaces."""
    if os.geteuid() != 0 or not Path("/usr/bin/unshare").exists() or not Path("/usr/bin/setpriv").exists():
        return False
    done = subprocess.run(
        ["/usr/bin/unshare", "--mount", "--uts", "--propagation", "private", "--", "/bin/hostname", "fake-check"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.returncode == 0


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


def _injected_detail(status: int) -> str:
    if status == 429:
        return "Too many requests: rate limit exceeded"
    if status >= 500:
        return f"Injected server error ({status})"
    return f"Injected error ({status})"


def _generate_rsa_pair() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return public, private


def _make_handler(fake: FakeMithril) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fake-mithril"
        disable_nagle_algorithm = True  # headers and body go in separate writes: no 40 ms ACK stalls

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler names it so
            del format, args

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _serve(self) -> None:
            raw = self._body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body, extra = fake.handle(self.command, self.path, headers, raw)
            payload = b"" if body is None or status == 204 else json.dumps(body).encode()
            self.send_response(status)
            if payload:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            if payload and self.command != "HEAD":
                self.wfile.write(payload)

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PATCH(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def do_HEAD(self) -> None:
            self._serve()

        def do_OPTIONS(self) -> None:
            self._serve()

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the fake Mithril API server until interrupted.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ssh-port", type=int, default=None, help="the sshd instances point at (default 2822)")
    parser.add_argument("--ssh-user", default="ubuntu")
    parser.add_argument("--provisioning-delay", type=float, default=0.0)
    parser.add_argument("--no-startup-scripts", action="store_true")
    args = parser.parse_args(argv)
    fake = FakeMithril(
        port=args.port,
        ssh_port=args.ssh_port,
        ssh_user=args.ssh_user,
        provisioning_delay_s=args.provisioning_delay,
        run_startup_scripts=not args.no_startup_scripts,
    )
    fake.start()
    print(f"MITHRIL_API_URL={fake.base_url}")
    print(f"MITHRIL_API_KEY={fake.api_key}")
    print(f"MITHRIL_PROJECT={fake.project_name}  ({fake.project_fid})", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(3600):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
        for violation in fake.violations:
            print(f"violation: {violation}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
