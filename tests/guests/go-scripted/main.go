// A Go test guest the integration tests drive by payload, for what the orders example never
// does:
//
//	panic TEXT    panics with TEXT (a trap for the host)
//	churn MIB     allocates MIB mebibytes in 64 KiB pieces, keeping none, then acks: the
//	              collector has to run inside the call
//	anything else acks
package main

import (
	"strconv"
	"strings"

	"weir.dev/weir"
)

func init() {
	weir.Handle(func(weir.Config) (weir.Handler, error) { return handle, nil })
}

func main() {}

// sink keeps the compiler from proving the allocations dead.
var sink []byte

func handle(msg weir.Message) weir.Outcome {
	command, arg, _ := strings.Cut(string(msg.Payload), " ")
	switch command {
	case "panic":
		panic(arg)
	case "churn":
		mib, err := strconv.Atoi(arg)
		if err != nil {
			return weir.Reject("churn takes a number of MiB: " + err.Error())
		}
		for i := 0; i < mib*16; i++ {
			sink = make([]byte, 64<<10)
			sink[i%len(sink)] = byte(i)
		}
		sink = nil
	}
	return weir.Ack()
}
