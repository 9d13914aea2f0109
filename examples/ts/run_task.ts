// Runs a shell command as a Flow task, streams its output, waits for it and prints how it ended.
//
//   npx tsx examples/ts/run_task.ts ["shell command"]     (flowd must be running: `flow daemon start`)
//
// Talks to the daemon at $FLOW_HOME/flowd.sock (default ~/.flow). The last line is always
// `state=<TaskState> exit_code=<n>`; the program exits 0 once the task is terminal, whatever
// its outcome (exit code 1 means the call itself failed).
import { randomUUID } from "node:crypto";
import { connectFlow, FlowError, isTerminal, stateName } from "@flow/client";

const shell = process.argv[2] ?? "echo hello from flow; echo bye from flow; exit 3";

async function main(): Promise<void> {
  const flow = connectFlow();
  // request_id makes the submission idempotent: a retry with the same id never launches twice.
  const { task } = await flow.tasks.createTask({
    spec: { shell, name: "ts-example" },
    requestId: randomUUID(),
  });
  if (task === undefined) {
    throw new Error("flowd returned no task");
  }
  console.log(`created ${task.name}`);

  // Follow the output until the task is terminal; the stream ends by itself then.
  let atLineStart = true;
  for await (const chunk of flow.tasks.streamTaskLogs({ name: task.name, follow: true })) {
    process.stdout.write(chunk.data);
    atLineStart = chunk.data.length === 0 ? atLineStart : chunk.data[chunk.data.length - 1] === 10;
  }
  if (!atLineStart) {
    process.stdout.write("\n"); // the task's last line had no newline: keep ours on its own line
  }

  // WaitTask waits on the server for at most its timeout (capped at 60 s): ask until terminal.
  let current = task;
  while (!isTerminal(current.state)) {
    const waited = await flow.tasks.waitTask({ name: task.name, timeout: { seconds: 30n } });
    current = waited.task ?? current;
  }
  console.log(`state=${stateName(current.state)} exit_code=${current.exitCode ?? "none"}`);
}

main().catch((error: unknown) => {
  const err = FlowError.from(error);
  console.error(`error: ${err.codeName} ${err.reason}: ${err.rawMessage}`);
  process.exit(1);
});
