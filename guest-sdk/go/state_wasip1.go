//go:build wasip1

package weir

import (
	"encoding/binary"
	"runtime"
	"unsafe"
)

// The imports of interface weir:handler/state@0.2.0, with their core signatures (see the
// layout in abi.go). What the host returns (a value's bytes, the keys) it writes into the
// argument arena through cabi_realloc; each function copies it out at once and gives the
// arena back to where it was, so that a call may read as much state as it likes.

//go:wasmimport weir:handler/state@0.2.0 get
func importStateGet(key unsafe.Pointer, keyLen uint32, result unsafe.Pointer)

//go:wasmimport weir:handler/state@0.2.0 set
func importStateSet(key unsafe.Pointer, keyLen uint32, value unsafe.Pointer, valueLen uint32, result unsafe.Pointer)

//go:wasmimport weir:handler/state@0.2.0 delete
func importStateDelete(key unsafe.Pointer, keyLen uint32, result unsafe.Pointer)

//go:wasmimport weir:handler/state@0.2.0 keys
func importStateKeys(prefix unsafe.Pointer, prefixLen uint32, hasAfter uint32, after unsafe.Pointer,
	afterLen uint32, limit uint32, result unsafe.Pointer)

var (
	// The return areas, static and aligned as the canonical ABI requires.
	getResult   [optionBytesSize / 4]uint32
	writeResult [stateResultSize / 8]uint64
	keysResult  [listSize / 4]uint32
)

func stateGet(key string) ([]byte, bool) {
	mark := args.used
	defer func() { args.used = mark }()
	importStateGet(unsafe.Pointer(unsafe.StringData(key)), uint32(len(key)), unsafe.Pointer(&getResult[0]))
	runtime.KeepAlive(key)
	return decodeOptionBytes(&args, unsafe.Slice((*byte)(unsafe.Pointer(&getResult[0])), optionBytesSize))
}

func stateSet(key string, value []byte) error {
	importStateSet(
		unsafe.Pointer(unsafe.StringData(key)), uint32(len(key)),
		unsafe.Pointer(unsafe.SliceData(value)), uint32(len(value)),
		unsafe.Pointer(&writeResult[0]),
	)
	runtime.KeepAlive(key)
	runtime.KeepAlive(value)
	return decodeStateResult(unsafe.Slice((*byte)(unsafe.Pointer(&writeResult[0])), stateResultSize))
}

func stateDelete(key string) error {
	importStateDelete(unsafe.Pointer(unsafe.StringData(key)), uint32(len(key)), unsafe.Pointer(&writeResult[0]))
	runtime.KeepAlive(key)
	return decodeStateResult(unsafe.Slice((*byte)(unsafe.Pointer(&writeResult[0])), stateResultSize))
}

func stateKeys(prefix string, after *string, limit int) []string {
	mark := args.used
	defer func() { args.used = mark }()
	var hasAfter uint32
	var afterText string
	if after != nil {
		hasAfter, afterText = 1, *after
	}
	importStateKeys(
		unsafe.Pointer(unsafe.StringData(prefix)), uint32(len(prefix)),
		hasAfter, unsafe.Pointer(unsafe.StringData(afterText)), uint32(len(afterText)),
		uint32(limit), unsafe.Pointer(&keysResult[0]),
	)
	runtime.KeepAlive(prefix)
	runtime.KeepAlive(afterText)
	list := unsafe.Slice((*byte)(unsafe.Pointer(&keysResult[0])), listSize)
	return decodeStrings(&args, span{binary.LittleEndian.Uint32(list[0:]), binary.LittleEndian.Uint32(list[4:])})
}

func resetState() {}
