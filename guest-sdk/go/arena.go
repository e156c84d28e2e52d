package weir

import "unsafe"

// MaxMessageBytes is the largest input message, payload plus headers as NATS counts them,
// that this handler can take; the default is NATS's default max_payload. The memory the host
// writes a call's arguments into is reserved from it, 17/4 times as much, when the instance
// starts and checked again after every call. A handler for a stream with a larger
// max_payload raises it in an init function of package main (or in its setup function): a
// message beyond what was reserved traps before the handler sees it.
var MaxMessageBytes = 1 << 20

// arenaBytesFor is how much argument memory a message of up to maxMessage bytes can need.
//
// The host writes the subject, the payload, the header list (16 bytes per header: two strings
// of pointer and length), each header's name and value, and the stream name. On the wire a
// header costs at least 3 bytes more than its name and value ("Name:value\r\n"; NATS needs no
// space) and has a name of at least one byte, so the worst header is a one-byte name with an
// empty value: 4 bytes on the wire, 17 in the arena. Every message is thus at most 17/4 times
// its wire size here. The 64 KiB on top hold the subject and stream name (not counted in
// max_payload), alignment, and the error strings of failed Publish calls.
func arenaBytesFor(maxMessage int) int {
	return maxMessage*17/4 + 64<<10
}

// reallocFailed is what cabi_realloc returns when the arena cannot hold a request: an
// 8-aligned address beyond any linear memory an instance can have, so the host's own bounds
// check traps at once ("realloc return: beyond end of memory"). Trapping there needs no Go
// runtime and no WASI call, neither of which is allowed inside cabi_realloc.
const reallocFailed uint32 = 0xFFFF_FFF8

// arena is the memory cabi_realloc hands to the host for a call's arguments.
//
// Why not the Go heap: the host calls cabi_realloc while it lowers arguments, where the
// canonical ABI forbids the guest to call out of the component. Go's allocator may start or
// assist a garbage collection, and the collector reads the clock and polls through WASI
// imports: the call then traps with "cannot leave component instance". So cabi_realloc never
// calls the allocator; it bumps an offset in a buffer reserved earlier, in code that may
// allocate (package initialization, and the end of each export). The buffer is pointer-free
// (never scanned) and stays referenced (never freed); Go's collectors, mainline and TinyGo,
// do not move objects, so its address is stable.
//
// Only the host's lowering uses this arena. The WASI adapter also asks the module for memory,
// but memory it keeps for the instance's lifetime, through cabi_realloc_adapter
// (adapter_wasip1.go): were it served here, the next reset would hand it out again.
//
// Lifetime: everything allocated belongs to the call in progress. The exports copy what they
// keep into Go values and then reset the arena, before the host lowers the next call's
// arguments. Publish's error strings, which the host also writes here, are copied at once.
//
// Bound: one call's arguments must fit [arenaBytesFor]([MaxMessageBytes]), 4.25 MiB + 64 KiB by
// default; a larger message traps (the instance is recycled, the message retried and, after
// the deployment's maximum deliveries, dead-lettered). Reserving eagerly costs linear memory
// the instance never touches unless a message needs it; growing lazily cannot work, because
// the first call to need the room is the one whose arguments do not fit.
type arena struct {
	mem  []byte // the reserved buffer; replaced only by reserve, never inside realloc
	base uint32 // linear-memory address of mem[0], 8-aligned
	used uint32 // bytes of mem handed out in the current call
}

// newArenaBuffer allocates n bytes (rounded up to 8) as pointer-free words, so that the buffer
// starts 8-aligned: the largest alignment a weir:handler type has.
func newArenaBuffer(n int) []byte {
	words := make([]uint64, (n+7)/8)
	if len(words) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8)
}

// realloc serves the canonical ABI's cabi_realloc(old_ptr, old_size, align, new_size) from the
// arena: a fresh block when oldPtr is 0, otherwise a new block holding the old one's bytes.
// It allocates nothing and calls only the runtime's memmove (copy), which is what makes it
// safe to run where the guest may not leave the component. nosplit: without a stack check it
// cannot be preempted into the scheduler, and from there into the collector.
//
//go:nosplit
func (a *arena) realloc(oldPtr, oldSize, align, newSize uint32) uint32 {
	if align == 0 || align&(align-1) != 0 {
		return reallocFailed
	}
	capacity := uint64(len(a.mem))
	start := uint64(a.base) + uint64(a.used)
	start = (start + uint64(align) - 1) &^ (uint64(align) - 1)
	at := start - uint64(a.base)
	if at > capacity || uint64(newSize) > capacity-at {
		return reallocFailed
	}
	if oldPtr != 0 {
		old := uint64(oldPtr) - uint64(a.base)
		if oldPtr < a.base || old > capacity || uint64(oldSize) > capacity-old {
			return reallocFailed
		}
		n := uint64(min(oldSize, newSize))
		copy(a.mem[at:at+n], a.mem[old:old+n])
	}
	a.used = uint32(at) + newSize
	return uint32(start)
}

// reset frees everything handed out, for the next call.
func (a *arena) reset() {
	a.used = 0
}

// view returns the n bytes at linear-memory address ptr, which must lie in the arena: the host
// passes only addresses it got from realloc. Anything else is a host bug and panics (a trap).
func (a *arena) view(ptr, n uint32) []byte {
	if n == 0 {
		return nil
	}
	off := uint64(ptr) - uint64(a.base)
	if ptr < a.base || off > uint64(len(a.mem)) || uint64(n) > uint64(len(a.mem))-off {
		panic("weir: the host passed memory outside the argument arena")
	}
	return a.mem[off : off+uint64(n)]
}
