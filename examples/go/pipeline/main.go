// Command pipeline runs a two-step pipeline: the second task starts only once the first has
// completed (depends_on, with Slurm's afterok); flowd holds it meanwhile, or cancels it if the
// first does not complete.
//
//	cd examples/go && go run ./pipeline ["first step's shell command"]    (flowd must be running)
//
// It prints each task as it is created, what the second waits for, then how each ended:
// `<task id>: state=<TaskState> reason=<state_reason>`.
package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strings"
	"time"

	flowclient "flow.local/clients/go"
	flowapiv1 "flow.local/gen/go/flowapi/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

func main() {
	first := "sleep 1; echo step one"
	if len(os.Args) > 1 {
		first = os.Args[1]
	}
	if err := run(context.Background(), first); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, first string) error {
	flow, err := flowclient.Dial("") // $FLOW_HOME/flowd.sock
	if err != nil {
		return err
	}
	defer flow.Close()

	created, err := flow.Tasks.CreateTask(ctx, &flowapiv1.CreateTaskRequest{
		Spec:      &flowapiv1.TaskSpec{Shell: &first, Name: "step-one"},
		RequestId: newRequestID(),
	})
	if err != nil {
		return err
	}
	one := created.GetTask()
	fmt.Println("created", one.GetTaskId())

	second := "echo step two"
	created, err = flow.Tasks.CreateTask(ctx, &flowapiv1.CreateTaskRequest{
		Spec: &flowapiv1.TaskSpec{
			Shell: &second,
			Name:  "step-two",
			DependsOn: []*flowapiv1.Dependency{
				{TaskId: one.GetTaskId(), Condition: flowapiv1.DependencyCondition_DEPENDENCY_CONDITION_AFTER_OK},
			},
			Priority: 5,
		},
		RequestId: newRequestID(),
	})
	if err != nil {
		return err
	}
	two := created.GetTask()
	var after []string
	for _, d := range two.GetSpec().GetDependsOn() {
		after = append(after, d.GetTaskId()+":"+d.GetCondition().String())
	}
	fmt.Printf("created %s after %s\n", two.GetTaskId(), strings.Join(after, ","))
	fmt.Printf("%s: state=%s reason=%s\n", two.GetTaskId(), two.GetState(), two.GetStateReason())
	for _, task := range []*flowapiv1.Task{one, two} {
		ended, err := waitFor(ctx, flow, task)
		if err != nil {
			return err
		}
		fmt.Printf("%s: state=%s reason=%s\n", ended.GetTaskId(), ended.GetState(), ended.GetStateReason())
	}
	return nil
}

// waitFor asks WaitTask, which waits on the server for at most its timeout (capped at 60 s),
// until the task is terminal.
func waitFor(ctx context.Context, flow *flowclient.Client, task *flowapiv1.Task) (*flowapiv1.Task, error) {
	for !flowclient.IsTerminal(task.GetState()) {
		waited, err := flow.Tasks.WaitTask(ctx, &flowapiv1.WaitTaskRequest{
			Name: task.GetName(), Timeout: durationpb.New(30 * time.Second),
		})
		if err != nil {
			return nil, err
		}
		task = waited.GetTask()
	}
	return task, nil
}

// newRequestID returns a random (version 4) UUID.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails on Linux, per crypto/rand
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
