//go:build wasip1 && tinygo

package weir

// The realloc exports, for TinyGo. TinyGo wraps every //go:wasmexport function in a new
// goroutine and a scheduler pass, which allocate and may read the clock: neither is allowed
// while the host lowers arguments, and before package initialization (when the WASI adapter
// first asks for memory) the wrapper refuses to run at all. A plain //export has no wrapper;
// TinyGo's own wasip2 runtime exports its cabi_realloc the same way.

//export cabi_realloc
func cabiRealloc(oldPtr, oldSize, align, newSize uint32) uint32 {
	return args.realloc(oldPtr, oldSize, align, newSize)
}

//export cabi_realloc_adapter
func cabiReallocAdapter(oldPtr, oldSize, align, newSize uint32) uint32 {
	return reallocAdapter(oldPtr, oldSize, align, newSize)
}
