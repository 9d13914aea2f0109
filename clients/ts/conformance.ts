// Checks tests/conformance/instance_types.json through the daemon's own validation:
//
//   npx tsx clients/ts/conformance.ts tests/conformance/instance_types.json    (FLOW_HOME selects the daemon)
//
// For each vector it sends CreateTask(validate_only, spec.instance_type = input, command ["true"]).
// An {input, error_reason} vector must fail with INVALID_ARGUMENT and that ErrorInfo reason. An
// {input, canonical} vector must succeed (only "cpu" can on a machine without that GPU, and then
// the task's instance_type is the canonical name) or fail with RESOURCE_NOT_AVAILABLE: never with
// VALIDATION_FAILED. The input "" cannot be sent: in proto3 an empty string is an unset field,
// which means "run on the CPUs". Prints one line per mismatch, then the summary line
// `conformance: N vectors, M checked, K mismatches`; exits 1 on any mismatch.
import { readFileSync } from "node:fs";
import { Code } from "@connectrpc/connect";
import { connectFlow, FlowError } from "./src/index.js";

interface Vector {
  input: string;
  canonical?: string;
  error_reason?: string;
}

async function verdict(flow: ReturnType<typeof connectFlow>, vector: Vector): Promise<string | undefined> {
  try {
    const { task } = await flow.tasks.createTask({
      spec: { instanceType: vector.input, command: ["true"] },
      validateOnly: true,
    });
    const placed = task?.instanceType ?? "";
    if (vector.error_reason !== undefined) {
      return `accepted (instance_type ${JSON.stringify(placed)})`;
    }
    if (placed === "" || (vector.canonical === "cpu" && placed !== "cpu")) {
      return `accepted with instance_type ${JSON.stringify(placed)}`;
    }
    return undefined;
  } catch (error) {
    const err = FlowError.from(error);
    const outcome = `${err.codeName} ${err.reason || "(no reason)"}: ${err.rawMessage.split("\n")[0]}`;
    if (vector.error_reason !== undefined) {
      return err.code === Code.InvalidArgument && err.reason === vector.error_reason ? undefined : outcome;
    }
    return err.reason === "RESOURCE_NOT_AVAILABLE" ? undefined : outcome;
  }
}

async function main(): Promise<void> {
  const path = process.argv[2];
  if (path === undefined) {
    throw new Error("usage: conformance.ts VECTORS.json");
  }
  const vectors = JSON.parse(readFileSync(path, "utf8")) as Vector[];
  const flow = connectFlow();
  let checked = 0;
  let mismatches = 0;
  for (const vector of vectors) {
    if (vector.input === "") {
      continue; // not expressible on the wire (see above)
    }
    checked++;
    const problem = await verdict(flow, vector);
    if (problem !== undefined) {
      mismatches++;
      const expected = vector.error_reason ?? `valid (${vector.canonical})`;
      console.log(`mismatch: input=${JSON.stringify(vector.input)} expected ${expected}, got ${problem}`);
    }
  }
  console.log(`conformance: ${vectors.length} vectors, ${checked} checked, ${mismatches} mismatches`);
  process.exitCode = mismatches === 0 ? 0 : 1;
}

main().catch((error: unknown) => {
  const err = FlowError.from(error);
  console.error(`error: ${err.codeName} ${err.reason}: ${err.rawMessage}`);
  process.exit(2);
});
