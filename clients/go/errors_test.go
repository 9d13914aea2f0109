package flowclient

import (
	"fmt"
	"testing"

	flowapiv1 "flow.local/gen/go/flowapi/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestAsErrorDecodesFlowdDetails(t *testing.T) {
	st, err := status.New(codes.InvalidArgument, "Invalid task configuration: 1 problem").WithDetails(
		&errdetails.ErrorInfo{Reason: "VALIDATION_FAILED", Domain: ErrorDomain, Metadata: map[string]string{"k": "v"}},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "num_instances", Description: "must be at least 1 (got -1)"},
		}},
		&flowapiv1.ErrorSuggestions{Suggestions: []string{"give the number of nodes, e.g. 1"}},
	)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := AsError(fmt.Errorf("wrapped: %w", convert(st.Err(), "/x/flowd.sock")))
	if !ok {
		t.Fatal("AsError found no *Error")
	}
	if got.Code != codes.InvalidArgument || got.CodeName() != "INVALID_ARGUMENT" || got.Reason != "VALIDATION_FAILED" {
		t.Errorf("code/reason: %v %q %q", got.Code, got.CodeName(), got.Reason)
	}
	if len(got.Violations) != 1 || got.Violations[0] != (FieldViolation{"num_instances", "must be at least 1 (got -1)"}) {
		t.Errorf("violations: %v", got.Violations)
	}
	if len(got.Suggestions) != 1 || got.Metadata["k"] != "v" {
		t.Errorf("suggestions/metadata: %v %v", got.Suggestions, got.Metadata)
	}
	if status.Code(got) != codes.InvalidArgument {
		t.Errorf("status.Code(*Error) = %v", status.Code(got))
	}
}

func TestForeignErrorInfoIsNotAReason(t *testing.T) {
	st, _ := status.New(codes.Unavailable, "down").WithDetails(&errdetails.ErrorInfo{Reason: "X", Domain: "other"})
	got, _ := AsError(convert(st.Err(), "/x/flowd.sock"))
	if got.Reason != "" || got.Message != "no flowd is listening on /x/flowd.sock (start it with `flow daemon start`): down" {
		t.Errorf("got %q %q", got.Reason, got.Message)
	}
	if _, ok := AsError(nil); ok {
		t.Error("AsError(nil) reported an error")
	}
}
