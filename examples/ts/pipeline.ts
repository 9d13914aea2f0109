// A two-step pipeline: the second task starts only once the first has completed (depends_on,
// with Slurm's afterok); flowd holds it meanwhile, or cancels it if the first does not complete.
//
//   npx tsx examples/ts/pipeline.ts ["first step's shell command"]   (flowd must be running)
//
// Prints each task as it is created, what the second waits for, then how each ended:
// `<task id>: state=<TaskState> reason=<state_reason>`.
import { randomUUID } from "node:crypto";
import {
  connectFlow,
  DependencyCondition,
  DependencyConditionSchema,
  FlowError,
  type FlowClients,
  isTerminal,
  stateName,
  type Task,
} from "@flow/client";

const first = process.argv[2] ?? "sleep 1; echo step one";

async function waitFor(flow: FlowClients, task: Task): Promise<Task> {
  // WaitTask waits on the server for at most its timeout (capped at 60 s): ask until terminal.
  let current = task;
  while (!isTerminal(current.state)) {
    const waited = await flow.tasks.waitTask({ name: task.name, timeout: { seconds: 30n } });
    current = waited.task ?? current;
  }
  return current;
}

async function main(): Promise<void> {
  const flow = connectFlow();
  const one = (await flow.tasks.createTask({ spec: { shell: first, name: "step-one" }, requestId: randomUUID() }))
    .task;
  if (one === undefined) {
    throw new Error("flowd returned no task");
  }
  console.log(`created ${one.taskId}`);
  const two = (
    await flow.tasks.createTask({
      spec: {
        shell: "echo step two",
        name: "step-two",
        dependsOn: [{ taskId: one.taskId, condition: DependencyCondition.AFTER_OK }],
        priority: 5,
      },
      requestId: randomUUID(),
    })
  ).task;
  if (two === undefined) {
    throw new Error("flowd returned no task");
  }
  const after = two.spec?.dependsOn.map((d) => `${d.taskId}:${DependencyConditionSchema.value[d.condition]?.name}`).join(",");
  console.log(`created ${two.taskId} after ${after}`);
  console.log(`${two.taskId}: state=${stateName(two.state)} reason=${two.stateReason}`);
  for (const task of [one, two]) {
    const ended = await waitFor(flow, task);
    console.log(`${ended.taskId}: state=${stateName(ended.state)} reason=${ended.stateReason}`);
  }
}

main().catch((error: unknown) => {
  const err = FlowError.from(error);
  console.error(`error: ${err.codeName} ${err.reason}: ${err.rawMessage}`);
  process.exit(1);
});
