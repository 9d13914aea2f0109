"""The container command line of image tasks: user values pass verbatim, GPU flags match the
assignment, secrets stay out of the command line, and what cannot be carried is refused."""

from __future__ import annotations

import shlex

from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure

from flow.domain.task.container_command import (
    ContainerSpec,
    Mount,
    container_argv,
    container_env,
    container_workdir,
    display_command,
)

engines = st.sampled_from(["docker", "podman"])
images = st.from_regex(r"[a-z0-9][a-z0-9./_-]{0,30}(:[A-Za-z0-9._-]{1,20})?", fullmatch=True)
args = st.lists(
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20), max_size=6
)
paths = st.from_regex(r"(/[A-Za-z0-9 ._'$;&|()*?-]{1,12}){1,4}", fullmatch=True)
gpu_sets = st.lists(st.integers(min_value=0, max_value=15), unique=True, max_size=8).map(lambda g: tuple(sorted(g)))
names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,15}", fullmatch=True)


def spec(**overrides: object) -> ContainerSpec:
    base: dict[str, object] = {
        "engine": "docker",
        "image": "pytorch/pytorch:2.1.0",
        "argv": ("python", "train.py"),
        "name": "flow-t-1",
        "workdir": "/workspace",
        "env_names": (),
    }
    base.update(overrides)
    return ContainerSpec(**base)


@given(engines, images, args, paths, paths, st.lists(names, unique=True, max_size=5), gpu_sets, st.booleans())
def test_every_user_value_survives_verbatim(
    engine: str,
    image: str,
    argv: list[str],
    source: str,
    workdir: str,
    env_names: list[str],
    gpus: tuple[int, ...],
    host_network: bool,
) -> None:
    built = container_argv(
        spec(
            engine=engine,
            image=image,
            argv=tuple(argv),
            workdir=workdir,
            env_names=tuple(env_names),
            mounts=(Mount(source, "/workspace"),),
            gpus=gpus,
            host_network=host_network,
        )
    ).unwrap()
    assert built[:3] == (engine, "run", "--rm")
    at = built.index(image)
    assert list(built[at + 1 :]) == argv  # the program follows the image, untouched
    assert built[built.index("--workdir") + 1] == workdir
    assert f"type=bind,source={source},target=/workspace" in built
    assert sorted(built[i + 1] for i, a in enumerate(built[:at]) if a == "--env") == sorted(env_names)
    assert ("--network" in built[:at]) == host_network
    assert shlex.split(display_command(built)) == list(built)  # the shown line is the same command


@given(gpu_sets)
def test_gpu_flags_match_the_assignment(gpus: tuple[int, ...]) -> None:
    docker = container_argv(spec(engine="docker", gpus=gpus)).unwrap()
    podman = container_argv(spec(engine="podman", gpus=gpus)).unwrap()
    if not gpus:
        assert "--gpus" not in docker and "--device" not in podman
        return
    value = docker[docker.index("--gpus") + 1]
    assert value.startswith('"device=') and value.endswith('"')
    assert tuple(int(i) for i in value[len('"device=') : -1].split(",")) == gpus
    devices = [podman[i + 1] for i, a in enumerate(podman) if a == "--device"]
    assert devices == [f"nvidia.com/gpu={i}" for i in gpus]


@given(st.dictionaries(names, st.text(max_size=20), max_size=6), gpu_sets)
def test_the_container_numbers_its_gpus_from_zero_and_keeps_the_tasks_variables(
    env: dict[str, str], gpus: tuple[int, ...]
) -> None:
    inside = container_env({**env, "NVIDIA_VISIBLE_DEVICES": "3"}, gpus)
    assert inside["CUDA_VISIBLE_DEVICES"] == ",".join(str(i) for i in range(len(gpus)))
    assert "NVIDIA_VISIBLE_DEVICES" not in inside  # the engine sets it from the GPU flags
    assert all(inside[k] == v for k, v in env.items() if k not in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"))


@given(st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s))
def test_values_of_variables_never_reach_the_command_line(secret: str) -> None:
    built = container_argv(spec(env_names=("WANDB_API_KEY",))).unwrap()
    inside = container_env({"WANDB_API_KEY": "k-" + secret}, ())
    assert built[built.index("--env") : built.index("--env") + 2] == ("--env", "WANDB_API_KEY")
    assert not any(inside["WANDB_API_KEY"] in arg for arg in built)


def test_working_dir_is_relative_to_the_code_in_the_container() -> None:
    assert container_workdir(None) == "/workspace"
    assert container_workdir("src") == "/workspace/src"
    assert container_workdir("/opt/app") == "/opt/app"


def test_what_the_command_cannot_carry_is_refused_naming_the_field() -> None:
    cases = {
        "image": spec(image="-v/:/host"),
        "mount source": spec(mounts=(Mount("/home/a,b", "/workspace"),)),
        "mount target": spec(mounts=(Mount("/code", "relative"),)),
        "engine": spec(engine="lxc"),
        "working_dir": spec(workdir="relative"),
        "command[1]": spec(argv=("python", "a\x00b")),
    }
    for field, bad in cases.items():
        built = container_argv(bad)
        assert isinstance(built, Failure), field
        assert built.failure().violations[0].field == field
        assert built.failure().violations[0].fix
