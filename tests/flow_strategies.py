"""Hypothesis strategies for the pure core: valid TaskConfigs, JSON-like junk, junk config dicts.

`valid_task_configs()` draws configs that every rule of `flow.domain.task.config` accepts, covering
each field and each program form. `json_like()` and `arbitrary_config_dicts()` draw what a user,
a YAML file or another-language client might send instead.
"""

from __future__ import annotations

import operator
from typing import Any

import attrs
from hypothesis import strategies as st

from flow.domain.task.config import (
    MAX_GPU_MEMORY_GB,
    MAX_IOPS,
    MAX_NUM_INSTANCES,
    MAX_PRICE_PER_HOUR,
    MAX_RUN_TIME_HOURS,
    MAX_VOLUME_GB,
    MountSpec,
    TaskConfig,
    VolumeSpec,
)
from flow.domain.task.dependencies import MAX_INSTANT, MAX_PRIORITY, MIN_PRIORITY, SINGLETON, Condition, Dependency

# A sample of the spellings users type, all of which parse_instance_type accepts.
VALID_INSTANCE_TYPES = (
    "a100",
    "h100",
    "2xa100",
    "4xa100",
    "8xh100",
    "8x H100",
    "A100:8",
    "a100x8",
    "a100-40gb",
    "4xa100-40gb",
    "a100-80gb.sxm.4x",
    "h100.pcie",
    "h200.8x",
    "rtx-a6000",
    "l4",
    "t4",
    "cpu",
)

TASK_CONFIG_FIELDS = tuple(f.name for f in attrs.fields(TaskConfig))
VOLUME_SPEC_FIELDS = tuple(f.name for f in attrs.fields(VolumeSpec))
MOUNT_SPEC_FIELDS = tuple(f.name for f in attrs.fields(MountSpec))

# Any Unicode text a program can receive: no NUL, no lone surrogate (not encodable as UTF-8).
_ANY_CHAR = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
_ONE_LINE_CHAR = st.characters(exclude_categories=("Cs",), exclude_characters="\x00\n\r")


def any_text(min_size: int = 0, max_size: int = 30) -> st.SearchStrategy[str]:
    return st.text(_ANY_CHAR, min_size=min_size, max_size=max_size)


def non_blank_text(max_size: int = 30) -> st.SearchStrategy[str]:
    return any_text(min_size=1, max_size=max_size).filter(lambda s: s.strip() != "")


def one_line_text(min_size: int = 0, max_size: int = 30) -> st.SearchStrategy[str]:
    return st.text(_ONE_LINE_CHAR, min_size=min_size, max_size=max_size)


_DIGITS = "0123456789"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_LETTERS = _LOWER + _LOWER.upper()


def _word(first: str, rest: str, max_rest: int, min_rest: int = 0) -> st.SearchStrategy[str]:
    """A first character from `first`, then min_rest..max_rest characters from `rest` (a fast
    stand-in for st.from_regex)."""
    return st.builds(operator.add, st.sampled_from(first), st.text(rest, min_size=min_rest, max_size=max_rest))


def names() -> st.SearchStrategy[str]:
    """Task and volume names: [A-Za-z0-9][A-Za-z0-9_-]{0,62}, including the longest."""
    alnum = _LETTERS + _DIGITS
    return _word(alnum, alnum + "_-", 20) | _word(alnum, alnum + "_-", 62, min_rest=62)


def env_names() -> st.SearchStrategy[str]:
    return _word(_LETTERS + "_", _LETTERS + _DIGITS + "_", 15)


def dependencies() -> st.SearchStrategy[Dependency]:
    """Any valid dependency: a task id with a condition, or singleton."""
    ids = st.text("abcdefghjkmnpqrstvwxyz0123456789-_", min_size=1, max_size=20)
    conditions = st.sampled_from([c for c in Condition if c is not Condition.SINGLETON])
    return st.builds(Dependency, task_id=ids, condition=conditions) | st.just(SINGLETON)


def regions() -> st.SearchStrategy[str]:
    parts = st.lists(st.text(_LOWER + _DIGITS, min_size=1, max_size=8), min_size=1, max_size=4)
    return st.sampled_from(["us-central1-b", "eu-west1", "local"]) | parts.map("-".join)


def volume_ids() -> st.SearchStrategy[str]:
    alnum = _LETTERS + _DIGITS
    return st.sampled_from(["vol-abc123", "vol_1.2:3"]) | _word(alnum, alnum + "_.:-", 20)


def _path_segments() -> st.SearchStrategy[str]:
    # "volumes" is reserved: new volumes mount at /volumes/<name> by default.
    return _word(_LOWER + _DIGITS + "_", _LOWER + _DIGITS + "_.-", 10).filter(lambda s: s != "volumes")


def _sub_path() -> st.SearchStrategy[str]:
    """What may follow a mount point's unique first segment: nothing, deeper dirs, a trailing /."""
    deeper = st.lists(st.text(_LETTERS + _DIGITS + "_ é-", min_size=1, max_size=6), max_size=2).map(
        lambda parts: "".join("/" + p for p in parts)
    )
    return st.tuples(deeper, st.sampled_from(["", "/"])).map(lambda t: t[0] + t[1])


def _s3_sources() -> st.SearchStrategy[str]:
    bucket = _word(_LOWER + _DIGITS, _LOWER + _DIGITS + ".-", 18, min_rest=2)
    prefix = st.sampled_from(["", "/", "/data", "/train/part-0001"]) | one_line_text(max_size=10).map(lambda s: "/" + s)
    return st.tuples(bucket, prefix).map(lambda t: f"s3://{t[0]}{t[1]}")


def mount_sources() -> st.SearchStrategy[str]:
    abs_path = one_line_text(max_size=15).map(lambda s: "/" + s)
    return _s3_sources() | abs_path.map(lambda p: "file://" + p) | abs_path


# Strategies are built once: building them inside a composite on every draw is slow.
_SEGMENTS = _path_segments()
_NAMES = names()
_SUB_PATHS = _sub_path()
_VOLUME_IDS = volume_ids()
_SOURCES = mount_sources()
_SIZES = st.integers(1, MAX_VOLUME_GB)
_IOPS = st.none() | st.integers(1, MAX_IOPS)
_INTERFACES = st.sampled_from(["block", "file"])


@st.composite
def _volumes_and_mounts(draw: st.DrawFn) -> tuple[tuple[VolumeSpec, ...], tuple[MountSpec, ...]]:
    n_volumes = draw(st.integers(0, 3))
    n_mounts = draw(st.integers(0, 3))
    # Every explicit mount point starts with its own first segment, so none equals or contains
    # another; volumes on their default path live under /volumes/<unique name>.
    segments = draw(st.lists(_SEGMENTS, min_size=n_volumes + n_mounts, max_size=n_volumes + n_mounts, unique=True))
    vol_names = draw(st.lists(_NAMES, min_size=n_volumes, max_size=n_volumes, unique=True))
    volumes = []
    for i in range(n_volumes):
        explicit_path = "/" + segments[i] + draw(_SUB_PATHS)
        interface = draw(_INTERFACES)
        if draw(st.booleans()):  # a new volume: name + size, on its default path or an explicit one
            volumes.append(
                VolumeSpec(
                    name=vol_names[i],
                    size_gb=draw(_SIZES),
                    mount_path=explicit_path if draw(st.booleans()) else None,
                    interface=interface,
                    iops=draw(_IOPS),
                )
            )
        else:  # an existing volume: volume_id + mount_path (a name is allowed too)
            volumes.append(
                VolumeSpec(
                    volume_id=draw(_VOLUME_IDS),
                    mount_path=explicit_path,
                    name=vol_names[i] if draw(st.booleans()) else None,
                    interface=interface,
                )
            )
    mounts = [
        MountSpec(source=draw(_SOURCES), target="/" + segments[n_volumes + j] + draw(_SUB_PATHS))
        for j in range(n_mounts)
    ]
    return tuple(volumes), tuple(mounts)


def prices() -> st.SearchStrategy[float]:
    # The wire carries prices as integer micro-dollars, so the smallest price is one micro-dollar.
    return st.floats(min_value=0.000001, max_value=MAX_PRICE_PER_HOUR) | st.sampled_from([0.01, 2.5, 10.0, 100_000.0])


def run_times() -> st.SearchStrategy[float]:
    return st.floats(min_value=0.0, max_value=MAX_RUN_TIME_HOURS, exclude_min=True) | st.sampled_from([0.5, 24.0])


_NON_BLANK = non_blank_text()
_PROGRAMS = st.one_of(
    st.tuples(any_text(min_size=1), st.lists(any_text(), max_size=5)).map(lambda t: {"command": (t[0], *t[1])}),
    _NON_BLANK.map(lambda s: {"command": s}),  # a string command is a shell string
    _NON_BLANK.map(lambda s: {"shell": s}),
    (st.just("import torch\nprint(torch.cuda.is_available())\n") | _NON_BLANK).map(lambda s: {"script": s}),
    st.just({}),  # no program: sleep infinity
)
_PLACEMENTS = st.one_of(
    st.sampled_from(VALID_INSTANCE_TYPES).map(lambda t: {"instance_type": t}),
    st.integers(1, MAX_GPU_MEMORY_GB).map(lambda m: {"min_gpu_memory_gb": m}),
    st.just({}),
)
_IMAGES = (
    st.none()
    | st.sampled_from(["pytorch/pytorch:2.1.0-cuda12.1-cudnn8", "ubuntu:22.04"])
    | st.text(st.characters(exclude_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=20).filter(
        lambda s: not any(c.isspace() for c in s)
    )
)
_FIELDS = st.fixed_dictionaries(
    {
        "name": st.none() | _NAMES,
        "image": _IMAGES,
        "env": st.dictionaries(env_names(), any_text(), max_size=5),
        "working_dir": st.none() | st.just("/workspace") | one_line_text(min_size=1),
        "max_price_per_hour": st.none() | prices(),
        "max_run_time_hours": st.none() | run_times(),
        "region": st.none() | regions(),
        "num_instances": st.integers(1, MAX_NUM_INSTANCES),
        "ssh_keys": st.lists(one_line_text(min_size=1, max_size=15).filter(lambda s: s.strip() != ""), max_size=3).map(
            tuple
        ),
        "upload_code": st.booleans(),
        "code_root": st.none() | st.just("/home/me/project") | one_line_text(),
        "depends_on": st.lists(dependencies(), max_size=4, unique=True).map(tuple),
        # Whole and quarter seconds: what the wire's Timestamp gives back exactly (sub-second floats drift).
        "start_after": st.none()
        | st.integers(0, MAX_INSTANT - 1).map(float)
        | st.integers(0, MAX_INSTANT * 4 - 1).map(lambda q: q / 4),
        "priority": st.integers(MIN_PRIORITY, MAX_PRIORITY),
    }
)


@st.composite
def valid_task_configs(draw: st.DrawFn) -> TaskConfig:
    """A TaskConfig that task_config_violations accepts, drawing every field and program form."""
    volumes, mounts = draw(_volumes_and_mounts())
    return TaskConfig(
        **draw(_FIELDS),
        **draw(_PLACEMENTS),
        **draw(_PROGRAMS),
        volumes=volumes,
        data_mounts=mounts,
    )


# --- junk --------------------------------------------------------------------------------------


def json_like() -> st.SearchStrategy[Any]:
    """Anything JSON or YAML could hold, and a bit more: huge ints, nan/inf, NUL in text."""
    huge = st.integers(min_value=1, max_value=20000).map(lambda e: 2**e) | st.integers(
        min_value=1, max_value=20000
    ).map(lambda e: -(2**e))
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | huge
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
        max_leaves=8,
    )


def _spec_dicts(fields: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from(fields) | st.text(max_size=8)
    return st.dictionaries(keys, json_like(), max_size=5)


def arbitrary_config_dicts() -> st.SearchStrategy[dict[Any, Any]]:
    """Config dicts as users get them wrong: real field names with junk values, junk keys, nested
    volumes/data_mounts of junk, and sometimes a non-text key."""
    value = (
        json_like()
        | st.lists(_spec_dicts(VOLUME_SPEC_FIELDS) | json_like(), max_size=3)
        | st.lists(_spec_dicts(MOUNT_SPEC_FIELDS) | json_like(), max_size=3)
    )
    keys: st.SearchStrategy[Any] = st.sampled_from(TASK_CONFIG_FIELDS) | st.text(max_size=16) | st.integers()
    return st.dictionaries(keys, value, max_size=8)
