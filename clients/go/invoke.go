package flowclient

// Calling a Python function as a task from Go (README.md, "Functions: FlowApp and invoke").

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	flowapiv1 "flow.local/gen/go/flowapi/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// InvokeOptions tune Invoke; nil (or the zero value) runs on flowd's default provider, on the CPU.
type InvokeOptions struct {
	// Spec is a base spec (instance_type, env, max_run_time_hours, ...); Invoke copies it and sets
	// the code and the function call.
	Spec *flowapiv1.TaskSpec
	// Python is the interpreter that runs the function in the task; "" means python3 on its PATH.
	Python string
	// Provider is e.g. "local"; "" means flowd's default.
	Provider string
}

// RemoteCallError is what the Python function raised, as the task reported it. A function that
// could not be called at all (missing file or function, arguments it cannot take) reports Type
// "__main__.CallError". Failed flowd calls return an *Error instead.
type RemoteCallError struct {
	// Task is the task's resource name, "tasks/{task_id}".
	Task string
	// Type is the exception's qualified class, e.g. "builtins.TypeError".
	Type string
	// Message is str() of the exception.
	Message string
	// Traceback is the formatted traceback, as the task printed it.
	Traceback string
}

func (e *RemoteCallError) Error() string {
	return fmt.Sprintf("%s: the function raised %s: %s", e.Task, e.Type, e.Message)
}

// Invoke runs function(*args, **kwargs) from the Python file path (relative to root) in a task
// that runs in a snapshot of root, waits for it, and returns what it returned, decoded from JSON
// (nil, bool, float64, string, []any or map[string]any). args and kwargs hold the same kinds of
// values (and Go integers); see structpb.NewValue. When the function raised, the error is a
// *RemoteCallError (use errors.As); when a call to flowd failed, an *Error (e.g.
// TASK_EXECUTION_FAILED: the task ended without a result, such as when it was cancelled).
// Unlike the Python SDK, nothing is checked before submitting: a wrong path, name or signature
// comes back as the task's error.
func (c *Client) Invoke(
	ctx context.Context, root, path, function string, args []any, kwargs map[string]any, options *InvokeOptions,
) (any, error) {
	if options == nil {
		options = &InvokeOptions{}
	}
	argList, err := structpb.NewList(args)
	if err != nil {
		return nil, fmt.Errorf("args: %w", err)
	}
	kwargStruct, err := structpb.NewStruct(kwargs)
	if err != nil {
		return nil, fmt.Errorf("kwargs: %w", err)
	}
	codeRoot, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	digest, err := c.UploadCode(ctx, codeRoot)
	if err != nil {
		return nil, err
	}
	spec := &flowapiv1.TaskSpec{}
	if options.Spec != nil {
		spec = proto.Clone(options.Spec).(*flowapiv1.TaskSpec)
	}
	if spec.Name == "" {
		spec.Name = strings.ReplaceAll(function, "_", "-")
		spec.Name = spec.Name[:min(len(spec.Name), 63)]
	}
	spec.UploadCode = true
	spec.CodeRoot = codeRoot
	spec.CodeDigest = digest
	spec.FunctionCall = &flowapiv1.FunctionCall{
		Path:     path,
		Function: function,
		Args:     argList,
		Kwargs:   kwargStruct,
		Encoding: flowapiv1.ValueEncoding_VALUE_ENCODING_JSON,
		Python:   options.Python,
	}
	created, err := c.Tasks.CreateTask(ctx, &flowapiv1.CreateTaskRequest{
		Spec:      spec,
		RequestId: newRequestID(), // a retried create never launches twice
		Provider:  options.Provider,
	})
	if err != nil {
		return nil, err
	}
	task := created.GetTask()
	// WaitTask waits on the server for at most its timeout (capped at 60 s): ask until terminal.
	for !IsTerminal(task.GetState()) {
		waited, err := c.Tasks.WaitTask(ctx, &flowapiv1.WaitTaskRequest{
			Name: task.GetName(), Timeout: durationpb.New(30 * time.Second),
		})
		if err != nil {
			return nil, err
		}
		if waited.GetTask() != nil {
			task = waited.GetTask()
		}
	}
	result, err := c.Tasks.GetTaskResult(ctx, &flowapiv1.GetTaskResultRequest{Name: task.GetName()})
	if err != nil {
		return nil, err
	}
	if remote := result.GetError(); remote != nil {
		return nil, &RemoteCallError{
			Task: task.GetName(), Type: remote.GetType(), Message: remote.GetMessage(), Traceback: remote.GetTraceback(),
		}
	}
	if result.GetEncoding() == flowapiv1.ValueEncoding_VALUE_ENCODING_PICKLE {
		return nil, fmt.Errorf("%s returned a pickled value, which only Python reads", task.GetName())
	}
	return result.GetJsonValue().AsInterface(), nil
}

// newRequestID returns a random (version 4) UUID.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails on Linux, per crypto/rand
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
