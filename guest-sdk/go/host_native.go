//go:build !wasip1

package weir

import (
	"errors"
	"fmt"
	"os"
)

// Outside a wasip1 build there is no weir host: this lets `go test` run a handler's own logic
// natively. Publish says so instead of pretending to have sent anything, and log lines go to
// standard error.

var errNoHost = errors.New("weir: Publish needs the weir host; build with GOOS=wasip1 GOARCH=wasm")

func hostPublish(string, []byte, []Header) error { return errNoHost }

func hostLog(level Level, message string) {
	fmt.Fprintf(os.Stderr, "weir log (level %d): %s\n", level, message)
}
