"""Usage examples of the Mithril platform's SDK (flow-compute 3.28.2, import name `flow`), written
here from its README, its bundled guide and its docstrings (our own code: the calls as a user of
that SDK writes them). Each runs as a script in a project directory, as a user runs it.

`where`: "local" (the local provider; GPU instance types replaced by "cpu", which flow-compute
accepts too), "root" (local, with volumes or mounts: needs root) or "mithril" (the fake Mithril
server, as written, except that mount paths are below $MOUNT_ROOT, a directory of the fake
instance's user: the fake mounts volumes there, not at /).

`expected`: the lines it prints; a str line is compared as text, anything else with the line
read as a Python literal (dicts print their keys in another order here, and an integral float
comes back as an int: JSON numbers). `refused`: the text of the documented refusal the script
fails with instead (README, "Coming from flow-compute"). `before`: how the script fared on main
before issue 24 (measured with FLOW_COMPAT_PYTHON=main's interpreter, see compat.example_runs):
"unchanged", "refused" (already with the same refusal) or "needs edits" (failed otherwise; BEFORE).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any, Literal

Where = Literal["local", "root", "mithril"]
Before = Literal["unchanged", "needs edits", "refused"]


@dataclass(frozen=True)
class Example:
    name: str
    origin: str  # where in flow-compute's documentation the usage comes from
    where: Where
    code: str
    expected: list[Any] = field(default_factory=list)
    refused: str = ""  # the refusal's text (the script fails with it) when not empty

    @property
    def before(self) -> Before:
        return BEFORE.get(self.name, "needs edits")

    @property
    def script(self) -> str:
        return textwrap.dedent(self.code).lstrip()


# The helper modules the examples import, written into the project directory.
MODULES = {
    "appmod.py": """
        import flow

        app = flow.FlowApp()


        @app.function(instance_type="cpu")
        def train(lr: float = 0.001, batch: int = 32) -> dict:
            return {"lr": lr, "batch": batch, "loss": round(lr * 10, 4)}


        @app.function(instance_type="cpu")
        def square(i: int) -> int:
            print(f"squaring {i}")
            return i * i
        """,
    "clsmod.py": """
        import flow

        app = flow.FlowApp()


        @app.cls(instance_type="cpu")
        class Predictor:
            prefix: str = flow.param(default=">>")

            @flow.on_enter()
            def load(self):
                self.table = {"hi": "hello"}

            @flow.remote()
            def predict(self, text: str) -> str:
                return f"{self.prefix} {self.table.get(text, text)}"


        @app.cls(instance_type="cpu")
        class Counter:
            start: int = flow.param()

            @flow.on_enter()
            def open(self):
                self.count = self.start

            @flow.remote()
            def bump(self) -> int:
                self.count += 1
                return self.count

            @flow.remote()
            def fail(self) -> None:
                raise KeyError("no such key")

            @flow.on_exit()
            def close(self):
                print(f"closing at {self.count}")
        """,
    "secmod.py": """
        import flow

        app = flow.FlowApp()


        @app.function(instance_type="cpu", secrets=[flow.Secret.from_env("WANDB_API_KEY")])
        def has_key() -> bool:
            import os

            return os.environ.get("WANDB_API_KEY") == "k-123"
        """,
    "work.py": """
        import os


        def scale(values, factor=2):
            return [v * factor for v in values]


        def greet(name):
            return f"hello {name} mode={os.environ.get('MODE')}"
        """,
    "job.yaml": """
        name: yaml-job
        instance_type: cpu
        command: echo from-yaml
        """,
}

LOCAL = [
    Example(
        "U01",
        "README, first hour from Python",
        "local",
        """
        import flow
        task = flow.run("echo first-hour", instance_type="cpu")
        for line in task.log_stream():
            print(line)
        """,
        ["first-hour"],
    ),
    Example(
        "U02",
        "README, advanced task configuration (distributed)",
        "local",
        """
        import flow
        t = flow.run('echo "rank=$NODE_RANK debug=$NCCL_DEBUG"', instance_type="cpu", num_instances=2,
                     env={"NCCL_DEBUG": "INFO"})
        t.wait()
        print(sorted(t.logs().splitlines()))
        """,
        [["[node 0] rank=0 debug=INFO", "[node 1] rank=1 debug=INFO"]],
    ),
    Example(
        "U05",
        "guide, one-liner with a YAML file",
        "local",
        """
        import flow
        task = flow.run("job.yaml")
        print(task.name)
        task.wait()
        print(task.logs().strip())
        """,
        ["yaml-job", "from-yaml"],
    ),
    Example(
        "U06",
        "guide, one-liner waiting with wait_until",
        "local",
        """
        import flow
        task = flow.run("echo done", instance_type="cpu", wait_until="terminal")
        print(task.status == "completed", task.is_terminal)
        """,
        ["True True"],
    ),
    Example(
        "U07",
        "guide, the client (context manager, filtered listing, logs, cancel)",
        "local",
        """
        import os
        from flow import Flow, TaskConfig, TaskStatus
        gate = os.path.abspath("gate")
        with Flow() as f:
            task = f.run(TaskConfig(command=f"echo one; while [ ! -e {gate} ]; do sleep 0.1; done; echo two",
                                    instance_type="cpu"), wait_until="running")
            print(task.task_id in [t.task_id for t in f.list_tasks(status=TaskStatus.RUNNING)])
            lines = task.log_stream()
            print(next(lines))
            open(gate, "w").close()
            for line in lines:
                print(line)
            print(repr(f.logs(task.task_id, tail=200)))
            f.cancel(task.task_id)
        """,
        ["True", "one", "two", "one\ntwo\n"],
    ),
    Example(
        "U08",
        "Flow.status docstring: statuses are lower case there",
        "local",
        """
        from flow import Flow, TaskConfig
        with Flow() as f:
            t = f.run(TaskConfig(command="true", instance_type="cpu"))
            t.wait(timeout=120)
            print(f.status(t.task_id) == "completed", t.status == "completed", t.status in ("completed", "failed"))
        """,
        ["True True True"],
    ),
    Example(
        "U10",
        "Task.wait docstring: waiting until running, never raising for a failure",
        "local",
        """
        from flow import Flow, TaskConfig
        t = Flow().run(TaskConfig(command="exit 3", instance_type="cpu"))
        t.wait(timeout=120, until="running")
        t.wait(120)
        print(t.status == "failed", t.exit_code)
        """,
        ["True 3"],
    ),
    Example(
        "U10b",
        "Task.wait docstring: the TaskWaitResult it returns there",
        "local",
        """
        from flow import Flow, TaskConfig
        result = Flow().run(TaskConfig(command="exit 3", instance_type="cpu")).wait(120)
        if result.failed:
            print("failed with", result.status)
        """,
        refused="flow-compute's Task.failed is not provided here; task.wait() returns the Task here",
    ),
    Example(
        "U11",
        "Flow.run docstring: TaskConfig.from_command",
        "local",
        """
        from flow import TaskConfig
        cfg = TaskConfig.from_command("python train.py --epochs 3", instance_type="cpu", env={"SEED": "1"})
        print(cfg.command)
        print(cfg.env)
        """,
        ["python train.py --epochs 3", {"SEED": "1"}],
    ),
    Example(
        "U12",
        "guide, errors: flow.ValidationError is a ValueError",
        "local",
        """
        from flow import TaskConfig
        try:
            TaskConfig(command="python train.py", instance_type="a100", min_gpu_memory_gb=40)
        except ValueError:
            print("invalid")
        """,
        ["invalid"],
    ),
    Example(
        "U12b",
        "guide, TaskConfig fields: the retired gpu= keyword is a TypeError there",
        "local",
        """
        from flow import TaskConfig
        try:
            TaskConfig(command="python train.py", gpu="a100")
        except TypeError as e:
            print(e)
        """,
        refused="gpu: is not a known field",
    ),
    Example(
        "U15",
        "guide, SDK operations: mounting a volume on a running task",
        "local",
        """
        from flow import Flow, TaskConfig
        with Flow() as f:
            t = f.run(TaskConfig(command="sleep 30", instance_type="cpu"))
            try:
                f.volumes.mount("vol-0123456789", t.task_id, mount_point="/data")
            finally:
                t.cancel()
        """,
        refused="ProviderCapabilityError",
    ),
    Example(
        "U16",
        "guide, decorator API: .remote()",
        "local",
        """
        from appmod import train
        print(train.remote(lr=0.01))
        """,
        [{"lr": 0.01, "batch": 32, "loss": 0.1}],
    ),
    Example(
        "U17",
        "guide, decorator API: .spawn()",
        "local",
        """
        from appmod import train
        task = train.spawn(lr=0.1, batch=64)
        task.wait()
        print(task.status == "completed")
        print(task.result())
        """,
        ["True", {"lr": 0.1, "batch": 64, "loss": 1.0}],
    ),
    Example(
        "U18",
        "guide, decorator API: .map() with max_concurrent",
        "local",
        """
        from appmod import train
        print(list(train.map([0.1, 0.01, 0.001])))
        print(list(train.map([0.5, 0.05], max_concurrent=2)))
        """,
        [
            [{"lr": lr, "batch": 32, "loss": round(lr * 10, 4)} for lr in (0.1, 0.01, 0.001)],
            [{"lr": lr, "batch": 32, "loss": round(lr * 10, 4)} for lr in (0.5, 0.05)],
        ],
    ),
    Example(
        "U19",
        "guide, decorator API: .starmap()",
        "local",
        """
        from appmod import train
        print(list(train.starmap([(0.1, 32), (0.01, 64)])))
        """,
        [[{"lr": 0.1, "batch": 32, "loss": 1.0}, {"lr": 0.01, "batch": 64, "loss": 0.1}]],
    ),
    Example(
        "U20",
        "RemoteFunction.local docstring",
        "local",
        """
        from appmod import train
        print(train(0.5))
        print(train.local(0.5))
        """,
        [{"lr": 0.5, "batch": 32, "loss": 5.0}, {"lr": 0.5, "batch": 32, "loss": 5.0}],
    ),
    Example(
        "U21",
        "RemoteFunction.spawn docstring: fan out, then each task's logs and result",
        "local",
        """
        from appmod import square
        tasks = [square.spawn(i) for i in range(4)]
        for t in tasks:
            t.wait()
            print(t.logs(tail=10).strip(), t.result())
        """,
        ["squaring 0 0", "squaring 1 1", "squaring 2 4", "squaring 3 9"],
    ),
    Example(
        "U22",
        "guide, class-based functions: @app.cls with flow.param and @flow.on_enter()",
        "local",
        """
        from clsmod import Predictor
        print(Predictor(prefix="=>").predict.remote("hi"))
        print(Predictor().predict.remote("bye"))
        """,
        ["=> hello", ">> bye"],
    ),
    Example(
        "U22b",
        "sdk/cls.py docstring: each .remote() call is its own task, on_exit runs after a failure",
        "local",
        """
        from clsmod import Counter
        counter = Counter(start=10)
        print(counter.bump.remote(), counter.bump.remote())
        task = counter.fail.spawn()
        task.wait()
        print(task.status == "failed", "closing at 10" in task.logs())
        try:
            counter.fail.remote()
        except KeyError:
            print("KeyError raised")
        """,
        ["11 11", "True True", "KeyError raised"],
    ),
    Example(
        "U23",
        "guide, scheduling and secrets: Secret.from_env with secrets=[...]",
        "local",
        """
        from secmod import has_key
        print(has_key.remote())
        """,
        [True],
    ),
    Example(
        "U24",
        "guide, scheduling and secrets: schedule=flow.Cron(...)",
        "local",
        """
        import flow
        app = flow.FlowApp()
        @app.function(instance_type="a100", schedule=flow.Cron("0 9 * * 1-5"))
        def nightly():
            pass
        """,
        refused="flow-compute's Cron is not provided here (there is no scheduler",
    ),
    Example(
        "U25",
        "invoke docstring: keyword arguments",
        "local",
        """
        from flow import invoke
        print(invoke("work.py", "scale", kwargs={"values": [1, 2], "factor": 3}, instance_type="cpu"))
        """,
        [[3, 6]],
    ),
    Example(
        "U26",
        "invoke docstring: task parameters",
        "local",
        """
        from flow import invoke
        print(invoke("work.py", "greet", args=["ada"], env={"MODE": "prod"}, instance_type="cpu"))
        """,
        ["hello ada mode=prod"],
    ),
    Example(
        "U27",
        "invoke_async docstring",
        "local",
        """
        import flow
        job = flow.invoke_async("work.py", "scale", args=[[1, 2, 3]], instance_type="cpu")
        print(bool(job.task.task_id))
        print(job.get_result())
        """,
        ["True", [2, 4, 6]],
    ),
    Example(
        "U28",
        "flow.run docstring: dry_run",
        "local",
        """
        import flow
        t = flow.run("echo never", instance_type="cpu", dry_run=True)
        print(repr(t.task_id), t.status == "pending", bool(t.dry_run), t.is_terminal)
        """,
        ["'' True True False"],
    ),
    Example(
        "U29",
        "guide, multi-node distributed training: distributed_mode and its variables",
        "local",
        """
        from flow import Flow, TaskConfig
        cfg = TaskConfig(command='echo "rank=$NODE_RANK nodes=$NUM_NODES head=$HEAD_NODE_IP"',
                         instance_type="cpu", num_instances=2, distributed_mode="auto")
        print(Flow().run(cfg).wait().logs())
        """,
        refused="distributed_mode: is not a known field",
    ),
    Example(
        "U30",
        "guide, image builder",
        "local",
        """
        import flow
        img = flow.Image.debian_slim("3.11").pip_install("requests")
        """,
        refused="flow-compute's Image is not provided here (there is no image builder",
    ),
    Example(
        "U32",
        "RemoteFunction.remote docstring: retries",
        "local",
        """
        import flow
        app = flow.FlowApp()
        @app.function(instance_type="cpu", retries=3, max_run_time_hours=1)
        def one() -> int:
            return 1
        print(one.remote())
        """,
        refused="retries: is not a known field",
    ),
    Example(
        "U33",
        "guide, the Task object's attributes",
        "local",
        """
        from flow import Flow, TaskConfig
        with Flow() as f:
            t = f.run(TaskConfig(command="sleep 1", instance_type="cpu"))
            print(bool(t.task_id), t.is_running or not t.is_terminal, t.cost_per_hour == 0)
            t.wait()
            t.refresh()
            print(t.is_terminal, t.status == "completed")
            print(t.total_cost)
        """,
        ["True True True", "True True"],
        refused="flow-compute's Task.total_cost is not provided here; only cost_per_hour",
    ),
    Example(
        "U34",
        "guide, the Task object: task.shell",
        "local",
        """
        from flow import Flow
        with Flow() as f:
            t = f.run("sleep 30", instance_type="cpu", wait_until="running")
            print(repr(t.shell("echo inside", capture_output=True)))
            t.cancel()
        """,
        ["inside\n"],
    ),
    Example(
        "U35",
        "Flow.logs and Task.logs signatures: tail by keyword and by position",
        "local",
        """
        from flow import Flow, TaskConfig
        with Flow() as f:
            t = f.run(TaskConfig(command="for i in 1 2 3 4 5; do echo l$i; done", instance_type="cpu"))
            t.wait()
            print(repr(t.logs(tail=2)), repr(f.logs(t.task_id, tail=2)))
            print(repr(t.logs(2)), repr(f.logs(t.task_id, 2)))
        """,
        ["'l4\\nl5\\n' 'l4\\nl5\\n'", "'l4\\nl5\\n' 'l4\\nl5\\n'"],
    ),
    Example(
        "U36",
        "flow.run docstring: the returned Task outlives the client that made it",
        "local",
        """
        from flow import Flow
        with Flow() as f:
            t = f.run("echo after-close", instance_type="cpu")
            lines = t.log_stream()
        print(list(lines), t.wait().status == "completed")
        """,
        ["['after-close'] True"],
    ),
    Example(
        "U37",
        "Flow.list_tasks docstring: a status as a string",
        "local",
        """
        from flow import Flow
        with Flow() as f:
            t = f.run("true", instance_type="cpu", wait_until="terminal")
            print(t.task_id in [x.task_id for x in f.list_tasks(status="completed")])
            print(t.task_id in [x.task_id for x in f.list_tasks(status=["COMPLETED", "failed"], force_refresh=True)])
        """,
        ["True", "True"],
    ),
    Example(
        "U38",
        "flow.run docstring: max_wait_seconds and FlowTimeoutError",
        "local",
        """
        import flow
        try:
            flow.run("sleep 5", instance_type="cpu", wait_until="terminal", max_wait_seconds=1)
        except flow.FlowTimeoutError:
            print("timed out")
        """,
        ["timed out"],
    ),
    Example(
        "U39",
        "TaskConfig.from_yaml/to_yaml docstrings: overrides and writing a file",
        "local",
        """
        from flow import TaskConfig
        cfg = TaskConfig.from_yaml("job.yaml", env={"A": "1"})
        cfg.to_yaml("copy.yaml")
        print(cfg.name, cfg.env, TaskConfig.from_yaml("copy.yaml") == cfg)
        """,
        ["yaml-job {'A': '1'} True"],
    ),
    Example(
        "U40",
        "sdk/secrets.py docstring: Secret.from_name",
        "local",
        """
        import flow
        app = flow.FlowApp()
        @app.function(instance_type="cpu", secrets=[flow.Secret.from_name("hf-token", env_var="HF_TOKEN")])
        def download() -> None:
            pass
        """,
        refused="Secret.from_name('hf-token'): there is no secret store here",
    ),
    Example(
        "U41",
        "TaskStatus enum: lower-case values",
        "local",
        """
        from flow import TaskStatus
        print(TaskStatus("completed") is TaskStatus.COMPLETED, TaskStatus.RUNNING == "running")
        print(TaskStatus.COMPLETED)
        """,
        ["True True", "COMPLETED"],
    ),
]

ROOT = [
    Example(
        "U03",
        "README, data mounts (a local directory instead of S3)",
        "root",
        """
        import os, tempfile
        import flow
        d = tempfile.mkdtemp()
        open(os.path.join(d, "a.txt"), "w").write("data")
        task = flow.run("ls /datasets", instance_type="cpu", data_mounts={"/datasets": d}, wait_until="terminal")
        print(task.status == "completed", task.logs().strip())
        """,
        ["True a.txt"],
    ),
    Example(
        "U13",
        "guide, volumes: VolumeSpec(create_if_missing=True)",
        "root",
        """
        from flow import Flow, TaskConfig, VolumeSpec
        vol = VolumeSpec(name="checkpoints", size_gb=2, mount_path="/ckpt", interface="file", create_if_missing=True)
        with Flow() as f:
            t = f.run(TaskConfig(command="touch /ckpt/x && ls /ckpt", instance_type="cpu", volumes=[vol]),
                      wait_until="terminal")
            print(t.status == "completed", "x" in t.logs().split())
        """,
        ["True True"],
    ),
    Example(
        "U14",
        "guide, SDK operations: the volumes sub-client",
        "root",
        """
        from flow import Flow
        with Flow() as f:
            vol = f.volumes.create(size_gb=1, name="scratch-data", interface="block")
            names = [v.name for v in f.volumes.list()]
            print("scratch-data" in names, f.volumes.get("scratch-data").id == vol.volume_id)
            print(f.volumes.delete(vol.volume_id))
            print("scratch-data" in [v.name for v in f.volumes.list()])
        """,
        ["True True", "None", "False"],
    ),
    Example(
        "U31",
        "FlowApp.function docstring: volumes={mount_path: volume}",
        "root",
        """
        import flow
        app = flow.FlowApp()

        @app.function(instance_type="cpu",
                      volumes={"/data": {"name": "datasets", "size_gb": 1}, "/ckpts": "model-checkpoints"})
        def mounted() -> list:
            import os
            return [os.path.isdir("/data"), os.path.isdir("/ckpts")]

        if __name__ == "__main__":
            with flow.Flow() as f:
                f.volumes.create(size_gb=1, name="model-checkpoints")
            print(mounted.remote())
        """,
        [[True, True]],
    ),
    Example(
        "U31b",
        "Volume.from_name docstring: a missing volume is refused unless create_if_missing",
        "root",
        """
        import flow
        app = flow.FlowApp()

        @app.function(instance_type="cpu", volumes={"/w": flow.Volume.from_name("no-such-weights")})
        def noop() -> int:
            return 1

        if __name__ == "__main__":
            noop.remote()
        """,
        refused="No volume named 'no-such-weights'",
    ),
]

MITHRIL = [
    Example(
        "M01",
        "README, first hour from Python (as written: a100)",
        "mithril",
        """
        import flow
        task = flow.run("echo first-hour", instance_type="a100")
        for line in task.log_stream():
            print(line)
        """,
        ["first-hour"],
    ),
    Example(
        "M02",
        "README, advanced task configuration: multi-node on 8xa100",
        "mithril",
        """
        import flow
        t = flow.run('echo "rank=$NODE_RANK debug=$NCCL_DEBUG"', instance_type="8xa100", num_instances=4,
                     env={"NCCL_DEBUG": "INFO"}, wait_until="terminal")
        print(t.status == "completed", t.config.num_instances, "rank=0 debug=INFO" in t.logs())
        """,
        ["True 4 True"],
    ),
    Example(
        "M03",
        "README, data mounts: S3 and a volume, on Mithril (s3:// mounts work there now; the volume it names"
        " does not exist on the fake, and flow-compute fails the same way: M03b mounts one that does)",
        "mithril",
        """
        import flow
        t = flow.run("ls /datasets /models", instance_type="a100",
                     data_mounts={"/datasets": "s3://ml-bucket/imagenet", "/models": "volume://pretrained-models"})
        """,
        refused="No volume named 'pretrained-models'",
    ),
    Example(
        "M03b",
        "README, data mounts: an existing volume by volume://name, on Mithril",
        "mithril",
        """
        import os
        import flow
        models = os.environ["MOUNT_ROOT"] + "/models"
        with flow.Flow() as f:
            f.volumes.create(size_gb=1, name="pretrained-models", interface="file")
        t = flow.run(f"ls -d {models}", instance_type="a100", data_mounts={models: "volume://pretrained-models"},
                     wait_until="terminal")
        print(t.status == "completed", t.logs().strip() == models)
        """,
        ["True True"],
    ),
    Example(
        "M04",
        "guide, one-liner: h100:8 under a price cap",
        "mithril",
        """
        import flow
        t = flow.run("echo training", instance_type="h100:8", max_price_per_hour=3.50, wait_until="terminal")
        print(t.status == "completed", t.instance_type, t.logs().strip())
        """,
        ["True h100-80gb.sxm.8x training"],
    ),
    Example(
        "M09",
        "flow/sdk/client.py docstring: full TaskConfig, wait_until='running', following the log",
        "mithril",
        """
        import os
        import flow
        from flow import TaskConfig, VolumeSpec
        cfg = TaskConfig(name="ddp-train", instance_type="8xa100",
                         command=["sh", "-c", "for i in 1 2 3; do echo loss: $i; done"],
                         env={"EPOCHS": "100"},
                         volumes=[VolumeSpec(name="datasets", size_gb=500,
                                             mount_path=os.environ["MOUNT_ROOT"] + "/data")],
                         image="pytorch/pytorch:2.2.2-cuda12.1-cudnn8", code_root="./src", max_price_per_hour=25.0)
        task = flow.run(cfg, wait_until="running")
        for line in task.log_stream():
            if "loss:" in line:
                print(line)
                break
        print(task.wait().status == "completed", task.name)
        """,
        ["loss: 1", "True ddp-train"],
    ),
    Example(
        "M16",
        "guide, decorator API on a GPU instance (flow is not installed there)",
        "mithril",
        """
        import flow
        app = flow.FlowApp()

        @app.function(instance_type="a100")
        def train(lr: float = 0.001) -> dict:
            return {"lr": lr, "loss": round(lr * 10, 4)}

        if __name__ == "__main__":
            print(train.remote(lr=0.01))
            print(list(train.starmap([(0.1,), (0.2,)])))
        """,
        [{"lr": 0.01, "loss": 0.1}, [{"lr": 0.1, "loss": 1.0}, {"lr": 0.2, "loss": 2.0}]],
    ),
    Example(
        "M22",
        "guide, class-based functions on a GPU instance (flow is not installed there)",
        "mithril",
        """
        import flow
        app = flow.FlowApp()

        @app.cls(instance_type="a100")
        class Inference:
            model_name: str = flow.param()

            @flow.on_enter()
            def load(self):
                self.model = lambda text: f"{self.model_name}: {text[::-1]}"

            @flow.remote()
            def predict(self, text: str) -> str:
                return self.model(text)

            @flow.on_exit()
            def cleanup(self):
                del self.model

        if __name__ == "__main__":
            print(Inference(model_name="gpt2").predict.remote("hello"))
        """,
        ["gpt2: olleh"],
    ),
    Example(
        "M23",
        "guide, secrets on a GPU instance",
        "mithril",
        """
        import flow
        app = flow.FlowApp()

        @app.function(instance_type="a100", secrets=[flow.Secret.from_env("WANDB_API_KEY")])
        def key_length() -> int:
            import os
            return len(os.environ["WANDB_API_KEY"])

        if __name__ == "__main__":
            print(key_length.remote())
        """,
        [5],
    ),
    Example(
        "M14",
        "guide, SDK operations: the volumes sub-client on Mithril",
        "mithril",
        """
        from flow import Flow
        with Flow() as f:
            vol = f.volumes.create(size_gb=1, name="scratch-data", interface="file")
            print([v.name for v in f.volumes.list()], f.volumes.get(vol.id).name)
            f.volumes.delete(vol.volume_id)
            print([v.name for v in f.volumes.list()])
        """,
        ["['scratch-data'] scratch-data", []],
    ),
]

ALL = [*LOCAL, *ROOT, *MITHRIL]

# How main (1301822) fared before issue 24, measured as the module docstring says; the rest: "needs edits".
BEFORE: dict[str, Before] = {
    **dict.fromkeys(["U16", "U21", "U25", "U26"], "unchanged"),
    **dict.fromkeys(["U12b", "U29", "U32"], "refused"),
}
