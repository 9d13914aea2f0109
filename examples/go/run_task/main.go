// Command run_task runs a shell command as a Flow task, streams its output, waits for it and
// prints how it ended.
//
//	cd examples/go && go run ./run_task ["shell command"]    (flowd must be running: `flow daemon start`)
//
// It talks to the daemon at $FLOW_HOME/flowd.sock (default ~/.flow). The last line is always
// `state=<TaskState> exit_code=<n>`; it exits 0 once the task is terminal, whatever its outcome
// (exit status 1 means a call failed).
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	flowclient "flow.local/clients/go"
	flowapiv1 "flow.local/gen/go/flowapi/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

func main() {
	shell := "echo hello from flow; echo bye from flow; exit 3"
	if len(os.Args) > 1 {
		shell = os.Args[1]
	}
	if err := run(context.Background(), shell); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, shell string) error {
	flow, err := flowclient.Dial("") // $FLOW_HOME/flowd.sock
	if err != nil {
		return err
	}
	defer flow.Close()

	// request_id makes the submission idempotent: a retry with the same id never launches twice.
	created, err := flow.Tasks.CreateTask(ctx, &flowapiv1.CreateTaskRequest{
		Spec:      &flowapiv1.TaskSpec{Shell: &shell, Name: "go-example"},
		RequestId: newRequestID(),
	})
	if err != nil {
		return err
	}
	task := created.GetTask()
	fmt.Println("created", task.GetName())

	// Follow the output until the task is terminal; the stream ends (io.EOF) by itself then.
	logs, err := flow.Tasks.StreamTaskLogs(ctx, &flowapiv1.StreamTaskLogsRequest{Name: task.GetName(), Follow: true})
	if err != nil {
		return err
	}
	atLineStart := true
	for {
		chunk, err := logs.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		data := chunk.GetData()
		if _, err := os.Stdout.Write(data); err != nil {
			return err
		}
		if len(data) > 0 {
			atLineStart = data[len(data)-1] == '\n'
		}
	}
	if !atLineStart {
		fmt.Println() // the task's last line had no newline: keep ours on its own line
	}

	// WaitTask waits on the server for at most its timeout (capped at 60 s): ask until terminal.
	for !flowclient.IsTerminal(task.GetState()) {
		waited, err := flow.Tasks.WaitTask(ctx, &flowapiv1.WaitTaskRequest{
			Name: task.GetName(), Timeout: durationpb.New(30 * time.Second),
		})
		if err != nil {
			return err
		}
		task = waited.GetTask()
	}
	exitCode := "none"
	if task.ExitCode != nil {
		exitCode = fmt.Sprint(task.GetExitCode())
	}
	fmt.Printf("state=%s exit_code=%s\n", task.GetState(), exitCode)
	return nil
}

// newRequestID returns a random (version 4) UUID.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails on Linux, per crypto/rand
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
