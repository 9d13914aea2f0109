// Command conformance checks tests/conformance/instance_types.json through the daemon's own
// validation:
//
//	cd clients/go && go run ./cmd/conformance ../../tests/conformance/instance_types.json   (FLOW_HOME selects the daemon)
//
// For each vector it sends CreateTask(validate_only, spec.instance_type = input, command ["true"]).
// An {input, error_reason} vector must fail with INVALID_ARGUMENT and that ErrorInfo reason. An
// {input, canonical} vector must succeed (only "cpu" can on a machine without that GPU, and then
// the task's instance_type is the canonical name) or fail with RESOURCE_NOT_AVAILABLE: never with
// VALIDATION_FAILED. The input "" cannot be sent: in proto3 an empty string is an unset field,
// which means "run on the CPUs". Prints one line per mismatch, then the summary line
// `conformance: N vectors, M checked, K mismatches`; exits 1 on any mismatch.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	flowclient "flow.local/clients/go"
	flowapiv1 "flow.local/gen/go/flowapi/v1"
	"google.golang.org/grpc/codes"
)

type vector struct {
	Input       string  `json:"input"`
	Canonical   *string `json:"canonical"`
	ErrorReason *string `json:"error_reason"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: conformance VECTORS.json")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	var vectors []vector
	if err := json.Unmarshal(raw, &vectors); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	flow, err := flowclient.Dial("")
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(2)
	}
	defer flow.Close()

	checked, mismatches := 0, 0
	for _, v := range vectors {
		if v.Input == "" {
			continue // not expressible on the wire (see above)
		}
		checked++
		problem, err := verdict(flow, v)
		if err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(2)
		}
		if problem != "" {
			mismatches++
			expected := ""
			if v.ErrorReason != nil {
				expected = *v.ErrorReason
			} else {
				expected = fmt.Sprintf("valid (%s)", *v.Canonical)
			}
			input, _ := json.Marshal(v.Input)
			fmt.Printf("mismatch: input=%s expected %s, got %s\n", input, expected, problem)
		}
	}
	fmt.Printf("conformance: %d vectors, %d checked, %d mismatches\n", len(vectors), checked, mismatches)
	if mismatches > 0 {
		os.Exit(1)
	}
}

// verdict returns "" when flowd answered as the vector says, else what it did instead. An error
// means the call failed without an answer from flowd (no daemon, a broken connection).
func verdict(flow *flowclient.Client, v vector) (string, error) {
	reply, err := flow.Tasks.CreateTask(context.Background(), &flowapiv1.CreateTaskRequest{
		Spec:         &flowapiv1.TaskSpec{InstanceType: v.Input, Command: []string{"true"}},
		ValidateOnly: true,
	})
	if err == nil {
		placed := reply.GetTask().GetInstanceType()
		switch {
		case v.ErrorReason != nil:
			return fmt.Sprintf("accepted (instance_type %q)", placed), nil
		case placed == "" || (*v.Canonical == "cpu" && placed != "cpu"):
			return fmt.Sprintf("accepted with instance_type %q", placed), nil
		}
		return "", nil
	}
	flowErr, ok := flowclient.AsError(err)
	if !ok || flowErr.Reason == "" {
		return "", err
	}
	outcome := fmt.Sprintf("%s %s: %s", flowErr.CodeName(), flowErr.Reason, strings.SplitN(flowErr.Message, "\n", 2)[0])
	if v.ErrorReason != nil {
		if flowErr.Code == codes.InvalidArgument && flowErr.Reason == *v.ErrorReason {
			return "", nil
		}
		return outcome, nil
	}
	if flowErr.Reason == "RESOURCE_NOT_AVAILABLE" {
		return "", nil
	}
	return outcome, nil
}
