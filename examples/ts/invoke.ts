// Calls a Python function as a Flow task from TypeScript: examples/train.py's train_model, once
// with good arguments (prints its JSON result) and once with a bad one (prints what it raised).
//
//   npx tsx examples/ts/invoke.ts [CODE_ROOT]      (flowd must be running: `flow daemon start`)
//
// CODE_ROOT is the directory whose snapshot the task runs in; by default the `examples/`
// directory next to this file's folder (found from this file, not from the current directory).
// It must hold train.py. Output, one `key=value` per line:
//
//   snapshot=sha256:...                                the code snapshot's digest
//   result={"accuracy":0.1813,"loss":1.62}             the JSON result, keys sorted
//   remote_error type=builtins.TypeError message=...   what the second call raised
//   remote_traceback=File ".../train.py", line N, in train_model   where it raised
import { fileURLToPath } from "node:url";
import { connectFlow, FlowError, RemoteCallError, type JsonValue } from "@flow/client";

const root = process.argv[2] ?? fileURLToPath(new URL("..", import.meta.url));

/** JSON with object keys sorted, so that every language prints the same line. */
function sortedJson(value: JsonValue): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

async function main(): Promise<void> {
  const flow = connectFlow(); // $FLOW_HOME/flowd.sock
  // invoke uploads the snapshot itself; this shows its digest (only new files are ever sent).
  console.log(`snapshot=${await flow.uploadCode(root)}`);

  const result = await flow.invoke(root, "train.py", "train_model", ["s3://bucket/data"], { epochs: 2, steps: 1 });
  console.log(`result=${sortedJson(result)}`);

  try {
    await flow.invoke(root, "train.py", "train_model", ["s3://bucket/data"], { epochs: "not a number" });
    throw new Error("train_model(epochs='not a number') returned instead of raising");
  } catch (error) {
    if (!(error instanceof RemoteCallError)) {
      throw error;
    }
    console.log(`remote_error type=${error.type} message=${error.remoteMessage}`);
    const frames = error.traceback.split("\n").filter((line) => line.trimStart().startsWith("File "));
    console.log(`remote_traceback=${frames.at(-1)?.trim() ?? "(none)"}`);
  }
}

main().catch((error: unknown) => {
  if (error instanceof RemoteCallError) {
    console.error(`error: ${error.message}\n${error.traceback}`);
  } else {
    const err = FlowError.from(error);
    console.error(`error: ${err.codeName} ${err.reason}: ${err.rawMessage}`);
  }
  process.exit(1);
});
