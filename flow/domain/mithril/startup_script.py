"""The startup script of a Mithril task, from pure functions.

The platform runs `launch_specification.startup_script` once, at first boot, and keeps it where
anyone with access to the project can read it: it never holds a secret (secret_env values, API
keys, storage credentials). It must stay under 10,000 characters; Flow keeps a 1 KB margin.

Every node of a task has a directory on its instance, `~<ssh user>/.flow/tasks/<task id>/nodes/<K>`
(K: the node's rank, from the /etc/hosts rendezvous; 0 for a one-node task), that the SSH user
owns and Flow reads over SSH (flow.runtime.task_watch pushes what changes):

    output.log    what the command prints (stdout and stderr): the node's log
    startup.log   Flow's own setup messages (code unpacking, GPU check, docker, data sync)
    exit_status   the command's exit status, written once it has ended (atomically)
    timed_out     present when max_run_time_hours stopped it
    start_failed  why the node could not start (a volume that did not appear, data that could
                  not be synced); the task then ends FAILED "could not start: ..."
    pid           the command's process group; `stop` (created by Flow) makes the script send it
                  SIGTERM, so a cancel lets the program say its last words before the bid goes
    code/         the code snapshot, the command's working directory

Two ways to deliver the work, chosen by `startup_plan`:

- inline: the whole script (with the code snapshot when it is tiny), gzipped and base64-encoded
  inside a one-line bash bootstrap;
- upload: when the inline script would not fit, or the code is not tiny, or there are secrets or
  s3:// data mounts, the startup script only makes the node's directory and waits for `ready`;
  flowd uploads `payload.sh`, `code.tar.gz`, `secrets.env` and the data mounts' credentials
  (0600) into it over SFTP once SSH answers, then creates `ready`. Credentials are deleted as
  soon as the data is synced, secrets as soon as they are read.

Every user value is quoted for bash (`shlex.quote`); nothing is a heredoc.
"""

from __future__ import annotations

import base64
import gzip
import posixpath
import shlex
from collections.abc import Mapping
from typing import Final

from attrs import field, frozen

from flow.domain.mithril.data_mounts import CREDENTIALS_FILE, SYNCER_FILE, DataMountPlan, sync_lines
from flow.domain.mithril.volumes import VolumeAttachment, mount_lines
from flow.domain.task import task_files
from flow.domain.task.config import TaskConfig, program_argv

SCRIPT_LIMIT: Final = 10_000
SCRIPT_MARGIN: Final = 1_024
MAX_SCRIPT: Final = SCRIPT_LIMIT - SCRIPT_MARGIN
EMBED_CODE_LIMIT: Final = 8 * 1024  # compressed bytes of code that may ride in the script
TASKS_DIR: Final = ".flow/tasks"  # under the SSH user's home
# A task's files on its instance: named once, in flow.domain.task.task_files.
OUTPUT_FILE: Final = task_files.OUTPUT
STARTUP_LOG: Final = "startup.log"
EXIT_FILE: Final = task_files.EXIT_STATUS
TIMED_OUT_FILE: Final = task_files.TIMED_OUT
START_FAILED_FILE: Final = "start_failed"
PID_FILE: Final = "pid"
STOP_FILE: Final = "stop"
NODES_DIR: Final = task_files.NODES_DIR
READY_FILE: Final = task_files.READY
PAYLOAD_FILE: Final = task_files.PAYLOAD
CODE_ARCHIVE: Final = "code.tar.gz"
SECRETS_FILE: Final = task_files.SECRETS
RUNNER_FILE: Final = task_files.RUNNER
INVOCATION_FILE: Final = task_files.INVOCATION
RESULT_FILE: Final = task_files.RESULT
DEFAULT_MASTER_PORT: Final = 29500
KILL_GRACE_SECONDS: Final = 30
READY_WAIT_SECONDS: Final = 3600

q = shlex.quote

# The non-loopback IPv4 lines of /etc/hosts ("ip name"), and a node's rank among them.
_HOSTS_AWK: Final = '$1 ~ /^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+$/ && $1 !~ /^127[.]/ {print $1 " " $2}'
_RANK_AWK: Final = '$2 == h || index($2, h ".") == 1 {print NR-1; exit}'
_REVERSED_AWK: Final = "{line[NR] = $0} END {for (i = NR; i > 0; i--) print line[i]}"  # tac needs a writable /tmp


@frozen
class StartupRequest:
    task_id: str
    task_name: str
    config: TaskConfig
    ssh_user: str
    code_archive: bytes | None = None  # the snapshot as tar.gz, when the task has one
    secrets: Mapping[str, str] = field(factory=dict, repr=False)
    # A function call (.remote(), invoke): the runner and its invocation, uploaded over SFTP;
    # the runner writes result.json, which flowd fetches when the task ends.
    runner: bytes | None = None
    invocation: bytes | None = None
    python: str = "python3"
    # The bid's volumes (launch_specification.volumes), mounted before the command runs.
    volumes: tuple[VolumeAttachment, ...] = ()
    # s3:// data mounts: synced on the instance before the command runs (credentials uploaded).
    data: DataMountPlan | None = None


@frozen
class StartupPlan:
    """`startup_script` goes into the bid; in upload mode, `uploads` (name -> content, mode) go
    to the task directory over SFTP, then `ready`."""

    startup_script: str
    uploads: tuple[tuple[str, bytes, int], ...] = ()

    @property
    def needs_upload(self) -> bool:
        return bool(self.uploads)


def task_dir(task_id: str) -> str:
    """The task directory, relative to the SSH user's home (SFTP and SSH commands start there)."""
    return f"{TASKS_DIR}/{task_id}"


def node_dir(task_id: str, rank: int) -> str:
    """Node `rank`'s directory, relative to the SSH user's home."""
    return f"{TASKS_DIR}/{task_id}/{NODES_DIR}/{rank}"


def _prelude(request: StartupRequest) -> list[str]:
    """Finds this node's rank, and makes its directory; the script runs as root on Mithril, as
    the SSH user elsewhere: either way the SSH user owns what Flow reads."""
    return [
        f"T={q(request.task_id)}",
        f"U={q(request.ssh_user)}",
        'H="$(getent passwd "$U" | cut -d: -f6)"',
        '[ -n "$H" ] || H="$HOME"',
        *_rank(request.config),
        f'R="$H/{TASKS_DIR}/$T"',
        f'D="$R/{NODES_DIR}/$NODE_RANK"',
        f'mkdir -p "$D" && chmod 700 "$R" "$R/{NODES_DIR}" "$D" || exit 1',
        # Only this run's record: a machine that ran the task before must not show the old run.
        f'rm -f "$D/{OUTPUT_FILE}" "$D/{EXIT_FILE}" "$D/{TIMED_OUT_FILE}" "$D/{START_FAILED_FILE}" '
        f'"$D/{STOP_FILE}" "$D/{RESULT_FILE}"',
        f'touch "$D/{OUTPUT_FILE}" "$D/{STARTUP_LOG}"',
        'if [ "$(id -u)" = 0 ] && [ "$U" != root ]; then chown -R "$U" "$H/.flow"; fi',
        f'exec 3>>"$D/{STARTUP_LOG}"',
    ]


def _quoted_argv(argv: tuple[str, ...] | list[str]) -> str:
    return " ".join(q(a) for a in argv)


def _working_dir(config: TaskConfig, inside: str) -> str:
    wanted = config.working_dir
    if not wanted:
        return inside
    return posixpath.normpath(posixpath.join(inside, wanted))


def _rank(config: TaskConfig) -> list[str]:
    """NODE_RANK and MASTER_ADDR. One node: rank 0 on localhost. Several: the /etc/hosts
    rendezvous (the platform writes every instance of the bid there; the last non-loopback line
    is the head, ranks count up from the bottom)."""
    n = config.num_instances
    if n == 1:
        return ["NODE_RANK=0", 'MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"']
    return [
        f"hosts=$(awk {q(_HOSTS_AWK)} /etc/hosts | awk {q(_REVERSED_AWK)})",
        f'NODE_RANK=$(printf "%s\\n" "$hosts" | awk -v h="$(hostname -s)" {q(_RANK_AWK)})',
        'NODE_RANK="${NODE_RANK:-0}"',
        'MASTER_ADDR="${MASTER_ADDR:-$(printf "%s\\n" "$hosts" | head -n 1 | cut -d" " -f1)}"',
    ]


def _multi_node(config: TaskConfig) -> list[str]:
    """torchrun's variables (the rank was found by the prelude)."""
    n = config.num_instances
    lines = [
        f"export NUM_NODES={n} NNODES={n} WORLD_SIZE={n}",
        f'export MASTER_PORT="${{MASTER_PORT:-{DEFAULT_MASTER_PORT}}}"',
        'export NODE_RANK RANK="$NODE_RANK" MASTER_ADDR',
    ]
    if n > 1:
        lines.insert(
            0, f'[ "$(printf "%s\\n" "$hosts" | grep -c .)" = {n} ] || echo "flow: /etc/hosts lists not {n} nodes" >&3'
        )
    return lines


def _fail_function() -> str:
    """`flow_fail MESSAGE`: the node cannot start; says why (in start_failed and in its log)."""
    failed = f'"$D/{START_FAILED_FILE}"'
    return (
        f'flow_fail() {{ echo "flow: $1" >>"$D/{OUTPUT_FILE}"; printf \'%s\\n\' "$1" > {failed}.tmp; '
        f"mv {failed}.tmp {failed}; exit 1; }}"
    )


def _run_lines(command: str, cwd: str, limit: float | None) -> list[str]:
    """Runs the command in a process group of its own (job control), records its pid, turns Flow's
    `stop` request into a SIGTERM to that group, and writes the exit record once it has ended."""
    exit_file = f'"$D/{EXIT_FILE}"'
    lines = [
        f"cd -- {cwd} || flow_fail 'cannot enter the working directory'",
        "set -m",
        f'{command} >>"$D/{OUTPUT_FILE}" 2>&1 </dev/null &',
        "pid=$!",
        f'printf \'%s\\n\' "$pid" > "$D/{PID_FILE}"',
        f'( while kill -0 "$pid" 2>/dev/null; do if [ -e "$D/{STOP_FILE}" ]; then kill -TERM -- -"$pid"; exit; fi; '
        "sleep 0.2; done ) >/dev/null 2>&1 </dev/null &",
        # Not `wait -f`: bash's -f can miss an end it already reaped and wait forever (seen about
        # one run in three of a 40-example test); a headless task is never stopped by a terminal.
        'wait "$pid"',
        "rc=$?",
    ]
    if limit:
        lines.append(f'if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then touch "$D/{TIMED_OUT_FILE}"; fi')
    lines += [f"printf '%s\\n' \"$rc\" > {exit_file}.tmp && mv {exit_file}.tmp {exit_file}", 'exit "$rc"']
    return lines


def _body(request: StartupRequest, code_b64: str | None, uploaded: bool) -> list[str]:
    """What runs the task, after the prelude. `code_b64`: the snapshot embedded; `uploaded`: the
    code, secrets and credentials arrive as files."""
    cfg = request.config
    lines = [
        _fail_function(),
        "nvidia-smi -L >&3 2>&1 || echo 'flow: nvidia-smi failed' >&3",
        'mkdir -p "$D/code"',
    ]
    lines += mount_lines(request.volumes, "flow_fail")
    if request.data is not None:
        lines += sync_lines(request.data, "flow_fail")
    if code_b64 is not None:
        lines.append(f'printf %s {q(code_b64)} | base64 -d | tar -xzf - -C "$D/code" >&3 2>&1 || exit 1')
    elif uploaded and request.code_archive is not None:
        lines.append(
            f'tar -xzf "$D/{CODE_ARCHIVE}" -C "$D/code" >&3 2>&1 && rm -f "$D/{CODE_ARCHIVE}" '
            "|| flow_fail 'cannot unpack the code snapshot'"
        )
    if uploaded and request.secrets:
        lines.append(f'set -a; . "$D/{SECRETS_FILE}" || exit 1; set +a; rm -f "$D/{SECRETS_FILE}"')
    lines += [f"export {key}={q(value)}" for key, value in cfg.env.items()]
    lines += [
        "export PYTHONUNBUFFERED=1",
        f"export FLOW_TASK_ID={q(request.task_id)} FLOW_TASK_NAME={q(request.task_name)}",
        *_multi_node(cfg),
    ]
    argv = program_argv(cfg)
    runner = None
    if request.runner is not None:
        runner = f'{q(request.python)} "$D/{RUNNER_FILE}" "$D/{INVOCATION_FILE}" "$D/{RESULT_FILE}"'
    if cfg.image:
        inside = _working_dir(cfg, "/workspace")
        names = [
            *cfg.env,
            *(request.secrets if uploaded else {}),
            "PYTHONUNBUFFERED",
            "FLOW_TASK_ID",
            "FLOW_TASK_NAME",
            "NUM_NODES",
            "NNODES",
            "WORLD_SIZE",
            "MASTER_PORT",
            "NODE_RANK",
            "RANK",
            "MASTER_ADDR",
        ]
        env_flags = " ".join(f"-e {q(n)}" for n in dict.fromkeys(names))  # values from the environment
        program = _quoted_argv(argv) if runner is None else runner.replace('"$D/', '"/flow/')
        volume_flags = "".join(f"-v {q(v.mount_path + ':' + v.mount_path)} " for v in request.volumes)
        if request.data is not None:
            volume_flags += "".join(f"-v {q(m.target + ':' + m.target + ':ro')} " for m in request.data.mounts)
        command = (
            f"docker run --rm --name flow-$T-$NODE_RANK --gpus all --network host "
            "-e NVIDIA_VISIBLE_DEVICES=all -e NVIDIA_DRIVER_CAPABILITIES=compute,utility "
            f'{env_flags} {volume_flags}-v "$D/code:/workspace" -v "$D:/flow" -w {q(inside)} {q(cfg.image)} {program}'
        )
        lines.append(f"docker pull {q(cfg.image)} >&3 2>&1 || echo 'flow: docker pull failed' >&3")
        cwd = '"$D/code"'
    else:
        command = _quoted_argv(argv) if runner is None else runner
        wd = cfg.working_dir
        if wd and wd.startswith("/"):
            cwd = q(posixpath.normpath(wd))
        elif wd:
            cwd = f'"$D/code"/{q(posixpath.normpath(wd))}'
        else:
            cwd = '"$D/code"'
    limit = cfg.max_run_time_hours
    if limit:
        seconds = max(1, int(limit * 3600))
        command = f"timeout -k {KILL_GRACE_SECONDS} {seconds} {command}"
    return lines + _run_lines(command, cwd, limit)


def _script(lines: list[str]) -> str:
    return "#!/bin/bash\n" + "\n".join(lines) + "\n"


def bootstrap(script: str) -> str:
    """A one-line bash script that runs `script`, gzipped and base64-encoded."""
    packed = base64.b64encode(gzip.compress(script.encode(), mtime=0)).decode()
    return f'#!/bin/bash\nexec bash -c "$(printf %s {packed} | base64 -d | gzip -dc)" flow-startup\n'


def inline_script(request: StartupRequest) -> str | None:
    """The whole task in the startup script, or None when it cannot go there (secrets, code that
    is not tiny, or a script over the limit)."""
    if request.secrets or request.runner is not None or request.data is not None:
        return None
    code_b64 = None
    if request.code_archive is not None:
        if len(request.code_archive) > EMBED_CODE_LIMIT:
            return None
        code_b64 = base64.b64encode(request.code_archive).decode()
    script = bootstrap(_script([*_prelude(request), *_body(request, code_b64, uploaded=False)]))
    return script if len(script) <= MAX_SCRIPT else None


def waiting_script(request: StartupRequest) -> str:
    """The startup script of upload mode: the task directory, then wait for flowd's upload."""
    ready = f'"$D/{READY_FILE}"'
    lines = [
        *_prelude(request),
        "echo 'flow: waiting for the upload over SSH' >&3",
        f"i=0; while [ ! -e {ready} ]; do sleep 0.1; i=$((i+1)); "
        f"if [ $i -ge {READY_WAIT_SECONDS * 10} ]; then echo 'flow: no upload came' >&3; exit 1; fi; done",
        f'exec bash "$D/{PAYLOAD_FILE}"',
    ]
    return bootstrap(_script(lines))


def startup_plan(request: StartupRequest) -> StartupPlan:
    """The startup script, and what must be uploaded when it cannot carry everything."""
    inline = inline_script(request)
    if inline is not None:
        return StartupPlan(startup_script=inline)
    payload = _script([*_prelude(request), *_body(request, None, uploaded=True)])
    uploads: list[tuple[str, bytes, int]] = [(PAYLOAD_FILE, payload.encode(), 0o700)]
    if request.code_archive is not None:
        uploads.append((CODE_ARCHIVE, request.code_archive, 0o600))
    if request.runner is not None and request.invocation is not None:
        uploads += [(RUNNER_FILE, request.runner, 0o600), (INVOCATION_FILE, request.invocation, 0o600)]
    if request.secrets:
        text = "".join(f"{key}={q(value)}\n" for key, value in sorted(request.secrets.items()))
        uploads.append((SECRETS_FILE, text.encode(), 0o600))
    if request.data is not None:
        uploads += [(SYNCER_FILE, request.data.syncer, 0o600), (CREDENTIALS_FILE, request.data.credentials, 0o600)]
    return StartupPlan(startup_script=waiting_script(request), uploads=tuple(uploads))
