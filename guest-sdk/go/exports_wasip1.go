//go:build wasip1

package weir

import "unsafe"

// The world's exports, under the core names wit-component expects for functions exported by
// the world itself: "init" and "handle" here, "cabi_realloc" and, for the WASI adapter,
// "cabi_realloc_adapter" in realloc_go.go and realloc_tinygo.go. There is no cabi_post_init or
// cabi_post_handle: the return areas are static, and the strings they point at stay
// referenced until the next call replaces them, so there is nothing to free after the host
// has read a result (and post-return code, like realloc, may not call out of the component).

var (
	// args is where the host writes each call's arguments; see arena.
	args arena

	// handleResult and initResult are the return areas of the two exports: static, so that
	// returning a result allocates nothing, and typed so that they are aligned as the
	// canonical ABI requires (outcome 8, result 4).
	handleResult [outcomeSize / 8]uint64
	initResult   [resultSize / 4]uint32

	// returnedText keeps alive the reject reason or init error a return area points at, until
	// the host has read it.
	returnedText string
)

func init() {
	args.reserve(arenaBytesFor(MaxMessageBytes))
}

// reserve makes the arena hold at least n bytes. It allocates, so it runs only where
// allocating is allowed: package initialization and the end of each export, after reset.
func (a *arena) reserve(n int) {
	if len(a.mem) >= n {
		return
	}
	a.mem = newArenaBuffer(n)
	a.base = uint32(uintptr(unsafe.Pointer(unsafe.SliceData(a.mem))))
	a.used = 0
}

// endCall releases the call's arguments and makes room for the next call's, possibly raised
// by the handler changing MaxMessageBytes.
func endCall() {
	args.reset()
	args.reserve(arenaBytesFor(MaxMessageBytes))
}

//go:wasmexport init
func exportInit(configPtr, configLen uint32) uint32 {
	cfg := decodeConfig(&args, span{configPtr, configLen})
	err := initialize(cfg)
	returnedText = ""
	if err != nil {
		returnedText = err.Error()
	}
	area := unsafe.Slice((*byte)(unsafe.Pointer(&initResult[0])), resultSize)
	encodeResult(area, err, stringSpan(returnedText))
	endCall()
	return addressOf(unsafe.Pointer(&initResult[0]))
}

//go:wasmexport handle
func exportHandle(
	subjectPtr, subjectLen, payloadPtr, payloadLen, headersPtr, headersLen, streamPtr, streamLen uint32,
	streamSeq uint64, partition, deliveryAttempt uint32, publishedAtNanos uint64,
) uint32 {
	msg := decodeMessage(&args, flatMessage{
		subject:          span{subjectPtr, subjectLen},
		payload:          span{payloadPtr, payloadLen},
		headers:          span{headersPtr, headersLen},
		stream:           span{streamPtr, streamLen},
		streamSeq:        streamSeq,
		partition:        partition,
		deliveryAttempt:  deliveryAttempt,
		publishedAtNanos: publishedAtNanos,
	})
	// The message is a copy: the handler may keep it, and the arena is free for the next
	// call's arguments as soon as this one returns.
	outcome := handle(msg)
	returnedText = outcome.reason
	area := unsafe.Slice((*byte)(unsafe.Pointer(&handleResult[0])), outcomeSize)
	encodeOutcome(area, outcome, stringSpan(returnedText))
	endCall()
	return addressOf(unsafe.Pointer(&handleResult[0]))
}

// addressOf is p as a linear-memory address. Go's wasm port has 64-bit pointers over a 32-bit
// memory; TinyGo's are 32-bit already.
//
//go:nosplit
func addressOf(p unsafe.Pointer) uint32 {
	return uint32(uintptr(p))
}

// stringSpan is where s's bytes are in linear memory. The caller keeps s alive.
func stringSpan(s string) span {
	if len(s) == 0 {
		return span{}
	}
	return span{addressOf(unsafe.Pointer(unsafe.StringData(s))), uint32(len(s))}
}
