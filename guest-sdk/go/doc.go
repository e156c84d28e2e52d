// Package weir is the Go SDK for weir stream handlers: a handler function over a [Message]
// that returns an [Outcome], built into a WebAssembly core module that `weir deploy` turns into
// a `weir:handler@0.2.0` component.
//
//	package main
//
//	import "weir.dev/weir"
//
//	func init() {
//		weir.Handle(func(cfg weir.Config) (weir.Handler, error) {
//			prefix := cfg.GetOr("output_prefix", "enriched")
//			return func(msg weir.Message) weir.Outcome {
//				if err := weir.Publish(prefix+"."+msg.Subject, msg.Payload); err != nil {
//					return weir.Retry()
//				}
//				return weir.Ack()
//			}, nil
//		})
//	}
//
//	func main() {}
//
// Build with mainline Go (1.24 or later) or TinyGo (0.36 or later); both make a WASI
// preview1 reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o handler.wasm .
//	tinygo build -target=wasip1 -buildmode=c-shared -o handler.wasm .
//
// One instance serves one partition: the handler sees that partition's messages one at a time,
// in stream order, so state captured by the handler is per partition and never shared. It
// lasts as long as the instance; what must outlive it (running totals, windows, what was seen)
// belongs in [State], which weir keeps per partition and changes exactly once per acknowledged
// message. Goroutines run only while a call is in progress; nothing runs between messages.
//
// The package uses the standard library only. The canonical-ABI glue for the world is written
// by hand: abi.go holds the memory layout, arena.go the memory the host writes arguments into
// (and why it is not taken from the Go heap at call time), exports_wasip1.go and
// host_wasip1.go and state_wasip1.go the exports and imports themselves, realloc_go.go and realloc_tinygo.go the
// allocator exports (which each compiler must export its own way), adapter_wasip1.go the
// memory the WASI adapter keeps. Outside GOOS=wasip1 the package builds too, so that `go test` runs a
// handler's logic natively; Publish then reports that there is no host.
package weir
