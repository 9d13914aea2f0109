// Small facts about tasks that every client needs and the generated code does not say.
import { TaskState, TaskStateSchema } from "../../../gen/ts/flowapi/v1/task_pb.js";

const TERMINAL: ReadonlySet<TaskState> = new Set([
  TaskState.COMPLETED,
  TaskState.FAILED,
  TaskState.CANCELLED,
  TaskState.PREEMPTED,
]);

/** Whether a task in this state is done for good. */
export function isTerminal(state: TaskState): boolean {
  return TERMINAL.has(state);
}

/** The contract's name of a state, e.g. "TASK_STATE_FAILED". */
export function stateName(state: TaskState): string {
  return TaskStateSchema.value[state]?.name ?? `TASK_STATE_${state}`;
}
