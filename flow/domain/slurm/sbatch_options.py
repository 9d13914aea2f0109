"""The options sbatch 22.05 knows, and how it finds one from what a script wrote.

The table is sbatch's own: every long option its getopt_long accepts (listed by `sbatch --x`, which
getopt answers with every option starting with x, and by `man sbatch`), with its short letter and
whether it takes an argument (`sbatch --opt` says "requires an argument", `sbatch --opt=x` "doesn't
allow an argument"). Aliases are further names of one option: `--tasks-per-node` is
`--ntasks-per-node`, `--cluster` is `--clusters`, `--ntasks-per-tres` is `--ntasks-per-gpu`.

Like getopt_long, a long option may be abbreviated to any prefix that names one option (`--out=`,
`--err=`, `--part=`); an exact name wins over longer ones (`--gpus` is not `--gpus-per-node`), and
a prefix matching several options is ambiguous (sbatch: "option '--mem-' is ambiguous;
possibilities: '--mem-bind' '--mem-per-cpu' '--mem-per-gpu'") unless they are all names of one
option.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from attrs import frozen

Argument = Literal["required", "optional", "none"]
REQUIRED: Final = "required"
OPTIONAL: Final = "optional"
NONE: Final = "none"

# long name -> (short letter, argument)
OPTIONS: Final[Mapping[str, tuple[str | None, Argument]]] = {
    "account": ("A", REQUIRED),
    "acctg-freq": (None, REQUIRED),
    "array": ("a", REQUIRED),
    "batch": (None, REQUIRED),
    "bb": (None, REQUIRED),
    "bbf": (None, REQUIRED),
    "begin": ("b", REQUIRED),
    "chdir": ("D", REQUIRED),
    "cluster-constraint": (None, REQUIRED),
    "clusters": ("M", REQUIRED),
    "comment": (None, REQUIRED),
    "constraint": ("C", REQUIRED),
    "container": (None, REQUIRED),
    "context": (None, REQUIRED),
    "contiguous": (None, NONE),
    "core-spec": ("S", REQUIRED),
    "cores-per-socket": (None, REQUIRED),
    "cpu-freq": (None, REQUIRED),
    "cpus-per-gpu": (None, REQUIRED),
    "cpus-per-task": ("c", REQUIRED),
    "deadline": (None, REQUIRED),
    "delay-boot": (None, REQUIRED),
    "dependency": ("d", REQUIRED),
    "distribution": ("m", REQUIRED),
    "error": ("e", REQUIRED),
    "exclude": ("x", REQUIRED),
    "exclusive": (None, OPTIONAL),
    "export": (None, REQUIRED),
    "export-file": (None, REQUIRED),
    "extra-node-info": ("B", REQUIRED),
    "get-user-env": (None, OPTIONAL),
    "gid": (None, REQUIRED),
    "gpu-bind": (None, REQUIRED),
    "gpu-freq": (None, REQUIRED),
    "gpus": ("G", REQUIRED),
    "gpus-per-node": (None, REQUIRED),
    "gpus-per-socket": (None, REQUIRED),
    "gpus-per-task": (None, REQUIRED),
    "gres": (None, REQUIRED),
    "gres-flags": (None, REQUIRED),
    "help": ("h", NONE),
    "hint": (None, REQUIRED),
    "hold": ("H", NONE),
    "ignore-pbs": (None, NONE),
    "input": ("i", REQUIRED),
    "job-name": ("J", REQUIRED),
    "kill-on-invalid-dep": (None, REQUIRED),
    "licenses": ("L", REQUIRED),
    "mail-type": (None, REQUIRED),
    "mail-user": (None, REQUIRED),
    "mcs-label": (None, REQUIRED),
    "mem": (None, REQUIRED),
    "mem-bind": (None, REQUIRED),
    "mem-per-cpu": (None, REQUIRED),
    "mem-per-gpu": (None, REQUIRED),
    "mincpus": (None, REQUIRED),
    "network": (None, REQUIRED),
    "nice": (None, OPTIONAL),
    "no-kill": ("k", OPTIONAL),
    "no-requeue": (None, NONE),
    "nodefile": ("F", REQUIRED),
    "nodelist": ("w", REQUIRED),
    "nodes": ("N", REQUIRED),
    "ntasks": ("n", REQUIRED),
    "ntasks-per-core": (None, REQUIRED),
    "ntasks-per-gpu": (None, REQUIRED),
    "ntasks-per-node": (None, REQUIRED),
    "ntasks-per-socket": (None, REQUIRED),
    "open-mode": (None, REQUIRED),
    "output": ("o", REQUIRED),
    "overcommit": ("O", NONE),
    "oversubscribe": ("s", NONE),
    "parsable": (None, NONE),
    "partition": ("p", REQUIRED),
    "power": (None, REQUIRED),
    "prefer": (None, REQUIRED),
    "priority": (None, REQUIRED),
    "profile": (None, REQUIRED),
    "propagate": (None, OPTIONAL),
    "qos": ("q", REQUIRED),
    "quiet": ("Q", NONE),
    "reboot": (None, NONE),
    "requeue": (None, NONE),
    "reservation": (None, REQUIRED),
    "signal": (None, REQUIRED),
    "sockets-per-node": (None, REQUIRED),
    "spread-job": (None, NONE),
    "switches": (None, REQUIRED),
    "test-only": (None, NONE),
    "thread-spec": (None, REQUIRED),
    "threads-per-core": (None, REQUIRED),
    "time": ("t", REQUIRED),
    "time-min": (None, REQUIRED),
    "tmp": (None, REQUIRED),
    "uid": (None, REQUIRED),
    "usage": (None, NONE),
    "use-min-nodes": (None, NONE),
    "verbose": ("v", NONE),
    "version": ("V", NONE),
    "wait": ("W", NONE),
    "wait-all-nodes": (None, REQUIRED),
    "wckey": (None, REQUIRED),
    "wrap": (None, REQUIRED),
}
# Further names sbatch accepts for an option of the table (same argument, same effect).
ALIASES: Final[Mapping[str, str]] = {
    "cluster": "clusters",
    "ntasks-per-tres": "ntasks-per-gpu",
    "tasks-per-node": "ntasks-per-node",
}
# Every long name getopt_long sees, in one place: the table's and the aliases.
LONG_NAMES: Final[tuple[str, ...]] = tuple(sorted((*OPTIONS, *ALIASES)))
SHORT: Final[Mapping[str, str]] = {short: name for name, (short, _) in OPTIONS.items() if short}


def canonical(name: str) -> str:
    """The table's name of an option (an alias's target; itself otherwise)."""
    return ALIASES.get(name, name)


@frozen
class LongOption:
    """What getopt_long makes of `--name`: the option it names (None when it names none), and the
    long names it could mean when it is an ambiguous prefix."""

    option: str | None
    candidates: tuple[str, ...] = ()

    @property
    def ambiguous(self) -> bool:
        return self.option is None and len(self.candidates) > 1


def resolve_long(name: str) -> LongOption:
    """getopt_long's lookup: an exact long name; else the one option every long name starting with
    `name` belongs to; else ambiguous (candidates, in getopt's order) or unknown."""
    if name in OPTIONS or name in ALIASES:
        return LongOption(option=canonical(name))
    if not name:
        return LongOption(option=None)
    matches = tuple(long for long in LONG_NAMES if long.startswith(name))
    targets = {canonical(long) for long in matches}
    if len(targets) == 1:
        return LongOption(option=targets.pop(), candidates=matches)
    return LongOption(option=None, candidates=matches)


def argument_of(option: str) -> Argument:
    return OPTIONS[option][1]
