// A failed flowd call as a typed error. flowd sends every non-OK status as a google.rpc.Status
// with exactly one google.rpc.ErrorInfo (reason, domain "flow", metadata), a google.rpc.BadRequest
// listing field violations when the request was invalid, and flowapi.v1.ErrorSuggestions.
// Connect decodes the Status; this file picks those three details out of it.
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "../../../gen/ts/google/rpc/error_details_pb.js";
import { ErrorSuggestionsSchema } from "../../../gen/ts/flowapi/v1/error_reason_pb.js";

/** The domain of every ErrorInfo flowd sends. */
export const ERROR_DOMAIN = "flow";

/** One invalid request field, e.g. {field: "num_instances", description: "must be at least 1 (got -1); ..."}. */
export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

/**
 * What any call to flowd throws (a ConnectError, so Connect passes it through unchanged).
 * `reason` is the ErrorInfo reason, one of the flowapi.v1.ErrorReason names without the prefix
 * ("VALIDATION_FAILED", "TASK_NOT_FOUND", "RESOURCE_NOT_AVAILABLE", ...), or "" when the status
 * did not come from flowd (e.g. the socket is missing: code Unavailable).
 */
export class FlowError extends ConnectError {
  readonly reason: string;
  readonly suggestions: readonly string[];
  readonly violations: readonly FieldViolation[];
  readonly errorMetadata: Readonly<Record<string, string>>;

  private constructor(cause: ConnectError) {
    // `name` stays "ConnectError": Connect recognizes its errors by name and shape
    // (ConnectError[Symbol.hasInstance]) and would otherwise re-wrap this one, losing the fields.
    super(cause.rawMessage, cause.code, cause.metadata, undefined, cause);
    this.details = cause.details;
    const info = cause.findDetails(ErrorInfoSchema).find((i) => i.domain === ERROR_DOMAIN);
    this.reason = info?.reason ?? "";
    this.errorMetadata = { ...(info?.metadata ?? {}) };
    this.suggestions = cause.findDetails(ErrorSuggestionsSchema).flatMap((s) => s.suggestions);
    this.violations = cause
      .findDetails(BadRequestSchema)
      .flatMap((b) => b.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
  }

  /** The status code's gRPC name, e.g. "INVALID_ARGUMENT". */
  get codeName(): string {
    return Code[this.code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
  }

  /** A real prototype check: the inherited ConnectError check accepts any ConnectError. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === "object" && value !== null && Object.prototype.isPrototypeOf.call(FlowError.prototype, value);
  }

  /** Any error thrown by a Connect call (or anything else) as a FlowError. */
  static from(error: unknown): FlowError {
    if (error instanceof FlowError) {
      return error;
    }
    return new FlowError(ConnectError.from(error));
  }
}
