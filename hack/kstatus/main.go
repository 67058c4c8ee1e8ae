// kstatus reads Kubernetes objects as JSON (one object, or a list) on stdin and prints, per object, what
// sigs.k8s.io/cli-utils' kstatus computes for it: the status Flux's health checks, `kubectl wait`-style
// tooling and kpt read. Built by hack/kstatus.sh into ~/.cache/llmfleet/bin; used by the tests only.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	var input any
	data, err := io.ReadAll(os.Stdin)
	if err == nil {
		err = utiljson.Unmarshal(data, &input) // integers as int64, as the API machinery has them
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: stdin is not JSON:", err)
		os.Exit(2)
	}
	objects, ok := input.([]any)
	if !ok {
		objects = []any{input}
	}
	out := make([]result, 0, len(objects))
	for i, o := range objects {
		m, ok := o.(map[string]any)
		if !ok {
			fmt.Fprintf(os.Stderr, "kstatus: item %d is not an object\n", i)
			os.Exit(2)
		}
		res, err := status.Compute(&unstructured.Unstructured{Object: m})
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: item %d: %v\n", i, err)
			os.Exit(1)
		}
		out = append(out, result{Status: res.Status.String(), Message: res.Message})
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
