// Calling a Python function as a task from TypeScript (README.md, "Functions: FlowApp and invoke").
import { randomUUID } from "node:crypto";
import { resolve } from "node:path";
import {
  clone,
  create,
  fromJson,
  isMessage,
  toJson,
  type JsonObject,
  type JsonValue,
  type MessageInitShape,
} from "@bufbuild/protobuf";
import { ListValueSchema, ValueSchema } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import type { CodeService } from "../../../gen/ts/flowapi/v1/code_service_pb.js";
import { FunctionCallSchema, TaskSpecSchema, ValueEncoding } from "../../../gen/ts/flowapi/v1/task_pb.js";
import type { RemoteError, TaskService } from "../../../gen/ts/flowapi/v1/task_service_pb.js";
import { uploadCode } from "./code.js";
import { isTerminal, stateName } from "./task.js";

/** How to run an invocation; everything is optional. */
export interface InvokeOptions {
  /** A base spec (instanceType, env, maxRunTimeHours, ...); invoke sets the code and the call. */
  readonly spec?: MessageInitShape<typeof TaskSpecSchema>;
  /** The interpreter that runs the function in the task; default "python3" on the task's PATH. */
  readonly python?: string;
  /** The provider, e.g. "local"; default flowd's. */
  readonly provider?: string;
}

/**
 * What the Python function raised, as the task reported it: `type` is the exception's qualified
 * class ("builtins.TypeError"), `remoteMessage` its str(), `traceback` the formatted traceback.
 * A function that could not be called at all (missing file or function, arguments it cannot
 * take) raises type "__main__.CallError". Failed flowd calls throw FlowError instead.
 */
export class RemoteCallError extends Error {
  readonly task: string;
  readonly type: string;
  readonly remoteMessage: string;
  readonly traceback: string;

  constructor(task: string, error: RemoteError) {
    super(`${task}: the function raised ${error.type}: ${error.message}`);
    this.name = "RemoteCallError";
    this.task = task;
    this.type = error.type;
    this.remoteMessage = error.message;
    this.traceback = error.traceback;
  }
}

interface Services {
  readonly tasks: Client<typeof TaskService>;
  readonly code: Client<typeof CodeService>;
}

/**
 * Runs `fn(*args, **kwargs)` from the Python file `path` (relative to `root`) in a task that runs
 * in a snapshot of `root`, and returns what it returned (JSON). Throws a RemoteCallError when it
 * raised, a FlowError when a flowd call failed (e.g. TASK_EXECUTION_FAILED: the task ended
 * without a result, such as when it was cancelled). Unlike the Python SDK, nothing is checked
 * before submitting: a wrong path, name or signature comes back as the task's error.
 */
export async function invoke(
  flow: Services,
  root: string,
  path: string,
  fn: string,
  args: readonly JsonValue[] = [],
  kwargs: JsonObject = {},
  options: InvokeOptions = {},
): Promise<JsonValue> {
  const codeRoot = resolve(root);
  const base = options.spec ?? {};
  const spec = isMessage(base, TaskSpecSchema) ? clone(TaskSpecSchema, base) : create(TaskSpecSchema, base);
  spec.name ||= fn.replaceAll("_", "-").slice(0, 63);
  spec.uploadCode = true;
  spec.codeRoot = codeRoot;
  spec.codeDigest = await uploadCode(flow.code, codeRoot);
  spec.functionCall = create(FunctionCallSchema, {
    path,
    function: fn,
    args: fromJson(ListValueSchema, [...args]),
    kwargs,
    encoding: ValueEncoding.JSON,
    python: options.python ?? "",
  });
  const { task } = await flow.tasks.createTask({
    spec,
    requestId: randomUUID(), // a retried create never launches twice
    provider: options.provider ?? "",
  });
  if (task === undefined) {
    throw new Error("flowd returned no task");
  }
  // WaitTask waits on the server for at most its timeout (capped at 60 s): ask until terminal.
  let current = task;
  while (!isTerminal(current.state)) {
    current = (await flow.tasks.waitTask({ name: task.name, timeout: { seconds: 30n } })).task ?? current;
  }
  const result = await flow.tasks.getTaskResult({ name: task.name });
  if (result.error !== undefined) {
    throw new RemoteCallError(task.name, result.error);
  }
  if (result.encoding === ValueEncoding.PICKLE) {
    throw new Error(`${task.name} (${stateName(current.state)}) returned a pickled value, which only Python reads`);
  }
  return result.jsonValue === undefined ? null : toJson(ValueSchema, result.jsonValue);
}
