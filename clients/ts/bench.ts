// The TypeScript side of bench/bench_clients.py: times GetTask round trips and full reads of a
// finished task's log over flowd's Unix socket, and prints the raw timings as one JSON object.
//
//   npx tsx clients/ts/bench.ts SOCKET TASK_NAME [UNARY_CALLS=500] [STREAM_READS=5]
//
// Output: {"client", "unary_s": [...], "stream_s": [...], "stream_bytes", "stream_lines"}; the
// byte and line counts are of the last read and are checked by the caller, after the timing.
import { performance } from "node:perf_hooks";
import { connectFlow } from "./src/index.js";

async function main(): Promise<void> {
  const [socket, name, unaryArg = "500", streamArg = "5"] = process.argv.slice(2);
  if (socket === undefined || name === undefined) {
    throw new Error("usage: bench.ts SOCKET TASK_NAME [UNARY_CALLS] [STREAM_READS]");
  }
  const flow = connectFlow(socket);
  for (let i = 0; i < 20; i++) {
    await flow.tasks.getTask({ name });
  }
  const unary: number[] = [];
  for (let i = 0; i < Number(unaryArg); i++) {
    const started = performance.now();
    await flow.tasks.getTask({ name });
    unary.push((performance.now() - started) / 1000);
  }

  const stream: number[] = [];
  let chunks: Uint8Array[] = [];
  for (let i = 0; i < Number(streamArg) + 1; i++) {
    chunks = [];
    const started = performance.now();
    for await (const chunk of flow.tasks.streamTaskLogs({ name })) {
      chunks.push(chunk.data);
    }
    if (i > 0) {
      stream.push((performance.now() - started) / 1000); // the first read warms up
    }
  }
  let bytes = 0;
  let lines = 0;
  for (const data of chunks) {
    bytes += data.length;
    for (let at = data.indexOf(10); at !== -1; at = data.indexOf(10, at + 1)) {
      lines++;
    }
  }
  console.log(JSON.stringify({ client: "ts", unary_s: unary, stream_s: stream, stream_bytes: bytes, stream_lines: lines }));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
