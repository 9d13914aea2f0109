// Command validation_error shows what a rejected request looks like: flowd validates every field
// at once and names each problem, and flowclient.AsError decodes that from the gRPC status
// (google.rpc ErrorInfo + BadRequest + flowapi.v1.ErrorSuggestions).
//
//	cd examples/go && go run ./validation_error    (flowd must be running: `flow daemon start`)
package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	flowclient "flow.local/clients/go"
	flowapiv1 "flow.local/gen/go/flowapi/v1"
)

func main() {
	flow, err := flowclient.Dial("") // $FLOW_HOME/flowd.sock
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	defer flow.Close()

	_, err = flow.Tasks.CreateTask(context.Background(), &flowapiv1.CreateTaskRequest{
		Spec: &flowapiv1.TaskSpec{
			Name: "bad name!", InstanceType: "a1000", NumInstances: -1, Command: []string{"true"},
		},
		ValidateOnly: true,
	})
	if err == nil {
		fmt.Fprintln(os.Stderr, "error: flowd accepted an invalid spec")
		os.Exit(1)
	}
	flowErr, ok := flowclient.AsError(err)
	if !ok || flowErr.Reason == "" {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	fmt.Printf("code=%s reason=%s\n", flowErr.CodeName(), flowErr.Reason)
	fmt.Printf("message: %s\n", strings.SplitN(flowErr.Message, "\n", 2)[0])
	for _, v := range flowErr.Violations {
		fmt.Printf("violation: %s: %s\n", v.Field, v.Description)
	}
	for _, tip := range flowErr.Suggestions {
		fmt.Printf("suggestion: %s\n", tip)
	}
}
