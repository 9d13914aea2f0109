// Command bench is the Go side of bench/bench_clients.py: it times GetTask round trips and full
// reads of a finished task's log over flowd's Unix socket, and prints the raw timings as one JSON
// object.
//
//	bench SOCKET TASK_NAME [UNARY_CALLS=500] [STREAM_READS=5]
//
// Output: {"client", "unary_s": [...], "stream_s": [...], "stream_bytes", "stream_lines"}; the
// byte and line counts are of the last read and are checked by the caller, after the timing.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	flowclient "flow.local/clients/go"
	flowapiv1 "flow.local/gen/go/flowapi/v1"
)

type result struct {
	Client      string    `json:"client"`
	UnaryS      []float64 `json:"unary_s"`
	StreamS     []float64 `json:"stream_s"`
	StreamBytes int       `json:"stream_bytes"`
	StreamLines int       `json:"stream_lines"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func intArg(args []string, i, fallback int) (int, error) {
	if len(args) <= i {
		return fallback, nil
	}
	return strconv.Atoi(args[i])
}

func run(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: bench SOCKET TASK_NAME [UNARY_CALLS] [STREAM_READS]")
	}
	socket, name := args[0], args[1]
	calls, err := intArg(args, 2, 500)
	if err != nil {
		return err
	}
	reads, err := intArg(args, 3, 5)
	if err != nil {
		return err
	}
	flow, err := flowclient.Dial(socket)
	if err != nil {
		return err
	}
	defer flow.Close()
	ctx := context.Background()
	get := &flowapiv1.GetTaskRequest{Name: name}
	for range 20 {
		if _, err := flow.Tasks.GetTask(ctx, get); err != nil {
			return err
		}
	}
	out := result{Client: "go"}
	for range calls {
		started := time.Now()
		if _, err := flow.Tasks.GetTask(ctx, get); err != nil {
			return err
		}
		out.UnaryS = append(out.UnaryS, time.Since(started).Seconds())
	}

	var chunks [][]byte
	for i := range reads + 1 { // the first read warms up
		chunks = chunks[:0]
		started := time.Now()
		logs, err := flow.Tasks.StreamTaskLogs(ctx, &flowapiv1.StreamTaskLogsRequest{Name: name})
		if err != nil {
			return err
		}
		for {
			chunk, err := logs.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			chunks = append(chunks, chunk.GetData())
		}
		if i > 0 {
			out.StreamS = append(out.StreamS, time.Since(started).Seconds())
		}
	}
	for _, data := range chunks {
		out.StreamBytes += len(data)
		out.StreamLines += bytes.Count(data, []byte{'\n'})
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}
