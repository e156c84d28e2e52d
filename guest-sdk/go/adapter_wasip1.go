//go:build wasip1

package weir

import "unsafe"

// Memory for the WASI adapter, which `weir deploy` puts between this module and the host to
// turn WASI preview1 calls (all the Go runtime makes) into WASI 0.2.
//
// The adapter has no memory of its own: it takes its shadow stack and its state, one 64 KiB
// block each for wasmtime 48's adapter, from the module, once, the first time the Go runtime
// calls WASI, which is early in _initialize, before any package is initialized. wit-component
// gives it the module's cabi_realloc_adapter export when there is one (cabi_realloc
// otherwise), so this module exports one that hands out a static buffer: its blocks must live
// as long as the instance, unlike the per-call arguments in args, and it must work before the
// Go heap and this package are initialized. Like cabi_realloc, it allocates nothing and never
// calls out.

// adapterBytes leaves room for an adapter that asks for twice what today's does.
const adapterBytes = 4 << 16

// adapterMemory is in the module's zero-initialized data: no allocation, and a fixed address.
// The empty uint64 array aligns the buffer to 8, the alignment the adapter asks for.
var adapterMemory struct {
	_     [0]uint64
	bytes [adapterBytes]byte
}

// adapterUsed is how much of adapterMemory the adapter has been given. An integer, so that
// updating it needs no write barrier.
var adapterUsed uint32

// reallocAdapter serves cabi_realloc_adapter from adapterMemory.
//
//go:nosplit
func reallocAdapter(oldPtr, oldSize, align, newSize uint32) uint32 {
	a := arena{
		mem:  adapterMemory.bytes[:],
		base: addressOf(unsafe.Pointer(&adapterMemory.bytes[0])),
		used: adapterUsed,
	}
	ptr := a.realloc(oldPtr, oldSize, align, newSize)
	adapterUsed = a.used
	return ptr
}
