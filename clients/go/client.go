// Package flowclient connects Go programs to flowd, Flow's per-user daemon. The generated code
// (flow.local/gen/go/flowapi/v1, from proto/ by `make gen`) is the API; this package adds only
// what it lacks: the default socket ($FLOW_HOME/flowd.sock), a dialer for it, *Error (a failed
// call's google.rpc.Status details decoded), code snapshots (UploadCode) and calls of Python
// functions as tasks (Invoke).
package flowclient

import (
	"os"
	"path/filepath"
	"strings"

	flowapiv1 "flow.local/gen/go/flowapi/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// FlowHome is $FLOW_HOME (a leading ~ expanded), else ~/.flow, made absolute.
func FlowHome() string {
	home := os.Getenv("FLOW_HOME")
	user, _ := os.UserHomeDir()
	switch {
	case home == "":
		home = filepath.Join(user, ".flow")
	case home == "~" || strings.HasPrefix(home, "~/"):
		home = filepath.Join(user, home[1:])
	}
	if abs, err := filepath.Abs(home); err == nil {
		home = abs
	}
	return home
}

// DefaultSocketPath is where the user's flowd listens: $FLOW_HOME/flowd.sock.
func DefaultSocketPath() string {
	return filepath.Join(FlowHome(), "flowd.sock")
}

// Client holds one connection to flowd and a client for each of its services. Every failed call
// returns an *Error (use AsError); a missing daemon is codes.Unavailable with a hint.
type Client struct {
	Conn      *grpc.ClientConn
	Tasks     flowapiv1.TaskServiceClient
	Instances flowapiv1.InstanceServiceClient
	Daemon    flowapiv1.DaemonServiceClient
	Code      flowapiv1.CodeServiceClient
	// SocketPath is the socket this client talks to.
	SocketPath string
}

// Dial connects to the flowd listening on socketPath ("" means DefaultSocketPath()). Connecting
// is lazy: a missing daemon shows up on the first call. Unlike the Python SDK it does not start
// flowd; run `flow daemon start` (or `flowd`) first. Extra options are passed to grpc.NewClient.
func Dial(socketPath string, options ...grpc.DialOption) (*Client, error) {
	if socketPath == "" {
		socketPath = DefaultSocketPath()
	}
	if abs, err := filepath.Abs(socketPath); err == nil {
		socketPath = abs
	}
	options = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(unaryErrors(socketPath)),
		grpc.WithChainStreamInterceptor(streamErrors(socketPath)),
	}, options...)
	conn, err := grpc.NewClient("unix://"+socketPath, options...)
	if err != nil {
		return nil, err
	}
	return &Client{
		Conn:       conn,
		Tasks:      flowapiv1.NewTaskServiceClient(conn),
		Instances:  flowapiv1.NewInstanceServiceClient(conn),
		Daemon:     flowapiv1.NewDaemonServiceClient(conn),
		Code:       flowapiv1.NewCodeServiceClient(conn),
		SocketPath: socketPath,
	}, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	return c.Conn.Close()
}

// IsTerminal reports whether a task in this state is done for good.
func IsTerminal(state flowapiv1.TaskState) bool {
	switch state {
	case flowapiv1.TaskState_TASK_STATE_COMPLETED, flowapiv1.TaskState_TASK_STATE_FAILED,
		flowapiv1.TaskState_TASK_STATE_CANCELLED, flowapiv1.TaskState_TASK_STATE_PREEMPTED:
		return true
	}
	return false
}
