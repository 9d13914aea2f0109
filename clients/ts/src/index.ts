// @flow/client: the generated flowapi.v1 code (gen/ts, from proto/ by `make gen`) plus the thin
// layer it lacks: the default socket, a Unix-socket transport, FlowError, code upload and invoke.
export type { JsonObject, JsonValue } from "@bufbuild/protobuf";
export * from "../../../gen/ts/flowapi/v1/code_service_pb.js";
export * from "../../../gen/ts/flowapi/v1/daemon_service_pb.js";
export * from "../../../gen/ts/flowapi/v1/error_reason_pb.js";
export * from "../../../gen/ts/flowapi/v1/instance_service_pb.js";
export * from "../../../gen/ts/flowapi/v1/task_pb.js";
export * from "../../../gen/ts/flowapi/v1/task_service_pb.js";
export { connectFlow, createFlowTransport, defaultSocketPath, flowHome, type FlowClients } from "./connection.js";
export { CHUNK_BYTES, digestOf, manifestBytes, type ManifestEntry } from "./code.js";
export { ERROR_DOMAIN, FlowError, type FieldViolation } from "./errors.js";
export { RemoteCallError, type InvokeOptions } from "./invoke.js";
export { isTerminal, stateName } from "./task.js";
