"""The files of a task's directory, named once for every provider.

A task directory (`$FLOW_HOME/tasks/<id>` for the local provider, `<work_dir>/tasks/<id>` on a
Slurm cluster, `~/.flow/tasks/<id>` on a Mithril instance) holds the same files under the same
names, whoever writes them: the wrapper or job script writes EXIT_STATUS when the program ends,
the function runner writes RESULT, the program's output goes to OUTPUT. The shell side that
writes them (0600, 0700 for what must run) is flowd.providers.task_dir.
"""

from __future__ import annotations

from typing import Final

OUTPUT: Final = "output.log"  # stdout and stderr of the program, append-only
EXIT_STATUS: Final = "exit_status"  # "<status>\n" (128+N when killed by signal N)
PROCESS: Final = "process"  # "<pid> <start ticks>\n" of a warm function task's process (local)
RESULT: Final = "result.json"  # what a function call returned or raised
SCRIPT: Final = "script"  # TaskConfig.script
RUNNER: Final = "flow_runner.py"  # flow.runtime.runner, for function calls
INVOCATION: Final = "invocation.json"  # the function call (module, name, arguments)
SECRETS: Final = "secrets.env"  # secret_env values, read then removed by the job
CODE_DIR: Final = "code"  # the task's private copy of its code snapshot
WORK_DIR: Final = "work"  # where a task without code runs
NODES_DIR: Final = "nodes"  # nodes/<K>/ of a multi-node task (its OUTPUT and EXIT_STATUS)
TIMED_OUT: Final = "timed_out"  # present when max_run_time_hours stopped the program
# Slurm
JOB: Final = "job.sbatch"
JOB_ID: Final = "job_id"
# Kubernetes
OUTPUT_MARKS: Final = "output.marks"  # "<bytes of end marks left out> <indices seen>" (output_end)
# Mithril
READY: Final = "ready"  # the upload over SSH is complete
PAYLOAD: Final = "payload.sh"
