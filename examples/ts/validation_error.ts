// Shows what a rejected request looks like: flowd validates every field at once and names each
// problem, and FlowError decodes that from the gRPC status (google.rpc ErrorInfo + BadRequest
// + flowapi.v1.ErrorSuggestions).
//
//   npx tsx examples/ts/validation_error.ts     (flowd must be running: `flow daemon start`)
import { connectFlow, FlowError } from "@flow/client";

async function main(): Promise<void> {
  const flow = connectFlow();
  try {
    await flow.tasks.createTask({
      spec: { name: "bad name!", instanceType: "a1000", numInstances: -1, command: ["true"] },
      validateOnly: true,
    });
  } catch (error) {
    const err = FlowError.from(error);
    console.log(`code=${err.codeName} reason=${err.reason}`);
    console.log(`message: ${err.rawMessage.split("\n")[0]}`);
    for (const v of err.violations) {
      console.log(`violation: ${v.field}: ${v.description}`);
    }
    for (const tip of err.suggestions) {
      console.log(`suggestion: ${tip}`);
    }
    return;
  }
  console.error("error: flowd accepted an invalid spec");
  process.exit(1);
}

main().catch((error: unknown) => {
  const err = FlowError.from(error);
  console.error(`error: ${err.codeName} ${err.reason}: ${err.rawMessage}`);
  process.exit(1);
});
