//go:build wasip1 && !tinygo

package weir

// The realloc exports, for mainline Go. A //go:wasmexport function runs on the calling
// goroutine, without a scheduler pass; nosplit keeps it from growing its stack, and so from
// reaching the scheduler and the collector.

//go:wasmexport cabi_realloc
//go:nosplit
func cabiRealloc(oldPtr, oldSize, align, newSize uint32) uint32 {
	return args.realloc(oldPtr, oldSize, align, newSize)
}

//go:wasmexport cabi_realloc_adapter
//go:nosplit
func cabiReallocAdapter(oldPtr, oldSize, align, newSize uint32) uint32 {
	return reallocAdapter(oldPtr, oldSize, align, newSize)
}
