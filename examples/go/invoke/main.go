// Command invoke calls a Python function as a Flow task from Go: examples/train.py's train_model,
// once with good arguments (prints its JSON result) and once with a bad one (prints what it raised).
//
//	cd examples/go && go run ./invoke [CODE_ROOT]    (flowd must be running: `flow daemon start`)
//
// CODE_ROOT is the directory whose snapshot the task runs in; by default the repository's
// `examples/` directory, found from this source file's location as compiled (not from the
// current directory; a binary built with -trimpath must be given it). It must hold train.py.
// Output, one `key=value` per line:
//
//	snapshot=sha256:...                                the code snapshot's digest
//	result={"accuracy":0.1813,"loss":1.62}             the JSON result, keys sorted
//	remote_error type=builtins.TypeError message=...   what the second call raised
//	remote_traceback=File ".../train.py", line N, in train_model   where it raised
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	flowclient "flow.local/clients/go"
)

func main() {
	if err := run(context.Background(), codeRoot()); err != nil {
		var remote *flowclient.RemoteCallError
		if errors.As(err, &remote) {
			fmt.Fprintf(os.Stderr, "error: %v\n%s", err, remote.Traceback)
		} else {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		os.Exit(1)
	}
}

// codeRoot is the first argument, else examples/ (two directories above this file).
func codeRoot() string {
	if len(os.Args) > 1 {
		return os.Args[1]
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func run(ctx context.Context, root string) error {
	flow, err := flowclient.Dial("") // $FLOW_HOME/flowd.sock
	if err != nil {
		return err
	}
	defer flow.Close()

	// Invoke uploads the snapshot itself; this shows its digest (only new files are ever sent).
	snapshot, err := flow.UploadCode(ctx, root)
	if err != nil {
		return err
	}
	fmt.Printf("snapshot=%s\n", snapshot)

	result, err := flow.Invoke(ctx, root, "train.py", "train_model",
		[]any{"s3://bucket/data"}, map[string]any{"epochs": 2, "steps": 1}, nil)
	if err != nil {
		return err
	}
	text, err := sortedJSON(result)
	if err != nil {
		return err
	}
	fmt.Printf("result=%s\n", text)

	_, err = flow.Invoke(ctx, root, "train.py", "train_model",
		[]any{"s3://bucket/data"}, map[string]any{"epochs": "not a number"}, nil)
	var remote *flowclient.RemoteCallError
	if !errors.As(err, &remote) {
		return fmt.Errorf("train_model(epochs='not a number') did not raise: %v", err)
	}
	fmt.Printf("remote_error type=%s message=%s\n", remote.Type, remote.Message)
	last := "(none)"
	for _, line := range strings.Split(remote.Traceback, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "File ") {
			last = strings.TrimSpace(line)
		}
	}
	fmt.Printf("remote_traceback=%s\n", last)
	return nil
}

// sortedJSON is compact JSON with object keys sorted (encoding/json sorts map keys) and no HTML
// escaping, so that every language prints the same line.
func sortedJSON(value any) (string, error) {
	var out bytes.Buffer
	encoder := json.NewEncoder(&out)
	encoder.SetEscapeHTML(false)
	if err := encoder.Encode(value); err != nil {
		return "", err
	}
	return strings.TrimSuffix(out.String(), "\n"), nil
}
