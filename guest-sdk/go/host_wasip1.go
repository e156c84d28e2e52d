//go:build wasip1

package weir

import (
	"runtime"
	"unsafe"
)

// The world's imports, interface weir:handler/host@0.2.0, with their core signatures (see
// abi.go). Go passes an unsafe.Pointer parameter as a 32-bit address and keeps what it points
// at alive for the call.

//go:wasmimport weir:handler/host@0.2.0 publish
func importPublish(subject unsafe.Pointer, subjectLen uint32, payload unsafe.Pointer, payloadLen uint32,
	headers unsafe.Pointer, headersLen uint32, result unsafe.Pointer)

//go:wasmimport weir:handler/host@0.2.0 log
func importLog(level uint32, message unsafe.Pointer, messageLen uint32)

// publishResult is where the host stores publish's result<_, string>: static, 4-aligned.
var publishResult [resultSize / 4]uint32

func hostPublish(subject string, payload []byte, headers []Header) error {
	words := encodeHeaders(headers, stringSpan)
	var list unsafe.Pointer
	if len(words) > 0 {
		list = unsafe.Pointer(&words[0])
	}
	importPublish(
		unsafe.Pointer(unsafe.StringData(subject)), uint32(len(subject)),
		unsafe.Pointer(unsafe.SliceData(payload)), uint32(len(payload)),
		list, uint32(len(headers)),
		unsafe.Pointer(&publishResult[0]),
	)
	// words holds the header strings' addresses as integers, which do not keep them alive.
	runtime.KeepAlive(headers)
	return decodeResult(&args, unsafe.Slice((*byte)(unsafe.Pointer(&publishResult[0])), resultSize))
}

func hostLog(level Level, message string) {
	importLog(uint32(level), unsafe.Pointer(unsafe.StringData(message)), uint32(len(message)))
}
