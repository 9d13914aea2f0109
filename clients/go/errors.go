package flowclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"

	flowapiv1 "flow.local/gen/go/flowapi/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the domain of every google.rpc.ErrorInfo flowd sends.
const ErrorDomain = "flow"

// FieldViolation is one invalid request field, e.g. {"num_instances", "must be at least 1 (got -1); ..."}.
type FieldViolation struct {
	Field       string
	Description string
}

// Error is a failed flowd call. flowd sends every non-OK status as a google.rpc.Status with
// exactly one google.rpc.ErrorInfo (reason, domain "flow", metadata), a google.rpc.BadRequest
// listing field violations when the request was invalid, and flowapi.v1.ErrorSuggestions.
type Error struct {
	// Code is the gRPC status code, e.g. codes.InvalidArgument.
	Code codes.Code
	// Reason is the ErrorInfo reason: a flowapi.v1.ErrorReason name without its prefix
	// ("VALIDATION_FAILED", "TASK_NOT_FOUND", "RESOURCE_NOT_AVAILABLE", ...), or "" when the
	// status did not come from flowd (e.g. no daemon: codes.Unavailable).
	Reason      string
	Message     string
	Suggestions []string
	Violations  []FieldViolation
	Metadata    map[string]string
	status      *status.Status
}

func (e *Error) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("flowd: %s: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("flowd: %s (%s): %s", e.Reason, e.Code, e.Message)
}

// CodeName spells the status code as the gRPC specification does, e.g. "INVALID_ARGUMENT".
func (e *Error) CodeName() string {
	var name strings.Builder
	for i, r := range e.Code.String() {
		if i > 0 && unicode.IsUpper(r) {
			name.WriteByte('_')
		}
		name.WriteRune(unicode.ToUpper(r))
	}
	return name.String()
}

// GRPCStatus keeps status.FromError and status.Code working on an *Error.
func (e *Error) GRPCStatus() *status.Status {
	return e.status
}

// AsError returns err as an *Error: as is when it is one, decoded from its gRPC status
// otherwise. It returns nil, false for a nil error or one that carries no status.
func AsError(err error) (*Error, bool) {
	if err == nil {
		return nil, false
	}
	var flowErr *Error
	if errors.As(err, &flowErr) {
		return flowErr, true
	}
	st, ok := status.FromError(err)
	if !ok {
		return nil, false
	}
	return fromStatus(st), true
}

func fromStatus(st *status.Status) *Error {
	out := &Error{Code: st.Code(), Message: st.Message(), Metadata: map[string]string{}, status: st}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			if d.GetDomain() == ErrorDomain {
				out.Reason = d.GetReason()
				for k, v := range d.GetMetadata() {
					out.Metadata[k] = v
				}
			}
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				out.Violations = append(out.Violations, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		case *flowapiv1.ErrorSuggestions:
			out.Suggestions = append(out.Suggestions, d.GetSuggestions()...)
		}
	}
	return out
}

// convert turns a failed call's error into an *Error, with a hint when no daemon answered.
func convert(err error, socketPath string) error {
	if err == nil || err == io.EOF {
		return err
	}
	out, ok := AsError(err)
	if !ok {
		return err
	}
	if out.Code == codes.Unavailable && out.Reason == "" {
		out.Message = fmt.Sprintf("no flowd is listening on %s (start it with `flow daemon start`): %s", socketPath, out.Message)
	}
	return out
}

func unaryErrors(socketPath string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return convert(invoker(ctx, method, req, reply, cc, opts...), socketPath)
	}
}

func streamErrors(socketPath string) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		stream, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, convert(err, socketPath)
		}
		return &errorStream{ClientStream: stream, socketPath: socketPath}, nil
	}
}

// errorStream converts the errors of a stream's receives and sends (io.EOF stays io.EOF).
type errorStream struct {
	grpc.ClientStream
	socketPath string
}

func (s *errorStream) RecvMsg(m any) error {
	return convert(s.ClientStream.RecvMsg(m), s.socketPath)
}

func (s *errorStream) SendMsg(m any) error {
	return convert(s.ClientStream.SendMsg(m), s.socketPath)
}
