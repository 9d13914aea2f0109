// Connecting to flowd: one daemon per user, listening on the Unix socket $FLOW_HOME/flowd.sock
// (FLOW_HOME defaults to ~/.flow), speaking gRPC over HTTP/2.
import { connect } from "node:net";
import { homedir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CodeService } from "../../../gen/ts/flowapi/v1/code_service_pb.js";
import { DaemonService } from "../../../gen/ts/flowapi/v1/daemon_service_pb.js";
import { InstanceService } from "../../../gen/ts/flowapi/v1/instance_service_pb.js";
import { TaskService } from "../../../gen/ts/flowapi/v1/task_service_pb.js";
import { uploadCode } from "./code.js";
import { FlowError } from "./errors.js";
import { invoke, type InvokeOptions } from "./invoke.js";

/** $FLOW_HOME (with a leading ~ expanded), else ~/.flow; always absolute. */
export function flowHome(env: NodeJS.ProcessEnv = process.env): string {
  let home = env.FLOW_HOME || join(homedir(), ".flow");
  if (home === "~" || home.startsWith("~/")) {
    home = join(homedir(), home.slice(1));
  }
  return isAbsolute(home) ? home : resolve(home);
}

/** The daemon's socket: $FLOW_HOME/flowd.sock. */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(flowHome(env), "flowd.sock");
}

const NO_DAEMON = new Set(["ENOENT", "ECONNREFUSED"]);

/** A refused or missing socket, as Unavailable with a hint, instead of Connect's Internal. */
function noDaemon(error: unknown, socketPath: string): FlowError | undefined {
  const cause = error instanceof ConnectError ? error.cause : error;
  const code = typeof cause === "object" && cause !== null && "code" in cause ? cause.code : undefined;
  if (typeof code !== "string" || !NO_DAEMON.has(code)) {
    return undefined;
  }
  const message = `no flowd is listening on ${socketPath} (${code}); start it with \`flow daemon start\``;
  return FlowError.from(new ConnectError(message, Code.Unavailable, undefined, undefined, cause));
}

/** Rethrows every failed call, unary or streaming, as a FlowError with decoded details. */
function flowErrors(socketPath: string): Interceptor {
  const rethrow = (error: unknown): never => {
    throw noDaemon(error, socketPath) ?? FlowError.from(error);
  };
  return (next) => async (request) => {
    const response = await next(request).catch(rethrow);
    if (!response.stream) {
      return response;
    }
    const messages = response.message;
    return {
      ...response,
      message: (async function* () {
        try {
          yield* messages;
        } catch (error) {
          rethrow(error);
        }
      })(),
    };
  };
}

/** A gRPC transport over the Unix socket (the URL names only the HTTP/2 authority). */
export function createFlowTransport(socketPath: string = defaultSocketPath()): Transport {
  return createGrpcTransport({
    baseUrl: "http://localhost",
    nodeOptions: { createConnection: () => connect(socketPath) },
    interceptors: [flowErrors(socketPath)],
  });
}

/** Typed clients for each flowd service, and two helpers; every failed call throws a FlowError. */
export interface FlowClients {
  readonly tasks: Client<typeof TaskService>;
  readonly instances: Client<typeof InstanceService>;
  readonly daemon: Client<typeof DaemonService>;
  readonly code: Client<typeof CodeService>;
  readonly socketPath: string;
  /** Uploads a snapshot of the directory `root` and returns its digest for TaskSpec.codeDigest (see code.ts). */
  uploadCode(root: string): Promise<string>;
  /**
   * Runs `fn(*args, **kwargs)` from the Python file `path` (relative to `root`) as a task in a
   * snapshot of `root` and returns its JSON result; throws a RemoteCallError when it raised.
   */
  invoke(
    root: string,
    path: string,
    fn: string,
    args?: readonly JsonValue[],
    kwargs?: JsonObject,
    options?: InvokeOptions,
  ): Promise<JsonValue>;
}

/**
 * Clients for the daemon at `socketPath` (default $FLOW_HOME/flowd.sock). Connecting is lazy:
 * a missing daemon shows up as a FlowError with code Unavailable on the first call. Unlike the
 * Python SDK, this does not start flowd; run `flow daemon start` (or `flowd`) first.
 */
export function connectFlow(socketPath: string = defaultSocketPath()): FlowClients {
  const transport = createFlowTransport(socketPath);
  const services = {
    tasks: createClient(TaskService, transport),
    instances: createClient(InstanceService, transport),
    daemon: createClient(DaemonService, transport),
    code: createClient(CodeService, transport),
    socketPath,
  };
  return {
    ...services,
    uploadCode: (root) => uploadCode(services.code, root),
    invoke: (root, path, fn, args, kwargs, options) => invoke(services, root, path, fn, args, kwargs, options),
  };
}
