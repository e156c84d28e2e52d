package weir

import "testing"

// testArena is an arena over a plain buffer whose first byte stands at linear-memory address
// base, as it would in a wasm build.
func testArena(size int, base uint32) *arena {
	return &arena{mem: newArenaBuffer(size), base: base}
}

func TestReallocHandsOutAlignedBlocksOneAfterAnother(t *testing.T) {
	a := testArena(64, 0x1000)
	steps := []struct{ align, size, want uint32 }{
		{1, 3, 0x1000},  // a string
		{4, 16, 0x1004}, // a list of one header: aligned up from 0x1003
		{1, 1, 0x1014},
		{8, 8, 0x1018}, // aligned up from 0x1015
		{1, 0, 0x1020}, // an empty list still gets an address, at the end
	}
	for _, s := range steps {
		if got := a.realloc(0, 0, s.align, s.size); got != s.want {
			t.Fatalf("realloc(align %d, size %d) = %#x, want %#x", s.align, s.size, got, s.want)
		}
	}
}

func TestReallocFailsWithAnAddressTheHostRefusesWhenTheArenaIsFull(t *testing.T) {
	a := testArena(32, 0x1000)
	if got := a.realloc(0, 0, 1, 32); got != 0x1000 {
		t.Fatalf("filling the arena: %#x", got)
	}
	if got := a.realloc(0, 0, 1, 1); got != reallocFailed {
		t.Errorf("one byte past the end: %#x, want %#x", got, reallocFailed)
	}
	a.reset()
	if got := a.realloc(0, 0, 1, 33); got != reallocFailed {
		t.Errorf("more than the arena: %#x, want %#x", got, reallocFailed)
	}
	if got := a.realloc(0, 0, 1, 0xFFFF_FFFF); got != reallocFailed {
		t.Errorf("a size that overflows 32 bits: %#x, want %#x", got, reallocFailed)
	}
	if got := a.realloc(0, 0, 3, 1); got != reallocFailed {
		t.Errorf("an alignment that is not a power of two: %#x", got)
	}
	if reallocFailed%8 != 0 {
		t.Errorf("the failure address must pass the host's alignment check and fail its bounds check")
	}
}

func TestResetStartsTheNextCallAtTheBeginning(t *testing.T) {
	a := testArena(32, 0x2000)
	a.realloc(0, 0, 1, 20)
	a.reset()
	if got := a.realloc(0, 0, 1, 32); got != 0x2000 {
		t.Errorf("after reset: %#x, want the whole arena from 0x2000", got)
	}
}

func TestReallocOfAnOldBlockCopiesItsBytes(t *testing.T) {
	a := testArena(64, 0x1000)
	old := a.realloc(0, 0, 1, 4)
	copy(a.view(old, 4), "abcd")
	grown := a.realloc(old, 4, 1, 8)
	if got := string(a.view(grown, 4)); got != "abcd" || grown == old {
		t.Errorf("grown block at %#x holds %q, want a new block holding abcd", grown, got)
	}
	if got := a.realloc(0x0800, 4, 1, 8); got != reallocFailed {
		t.Errorf("an old block outside the arena: %#x", got)
	}
}

func TestViewRefusesMemoryOutsideTheArena(t *testing.T) {
	a := testArena(16, 0x1000)
	for _, c := range []struct{ ptr, n uint32 }{{0x0FFF, 1}, {0x1000, 17}, {0x1010, 1}, {0xFFFF_FFFF, 2}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("view(%#x, %d) did not panic", c.ptr, c.n)
				}
			}()
			a.view(c.ptr, c.n)
		}()
	}
	if got := a.view(0x1000, 16); len(got) != 16 {
		t.Errorf("the whole arena: %d bytes", len(got))
	}
}

func TestTheDefaultArenaHoldsAMaximalMessageWithAHundredHeaders(t *testing.T) {
	a := testArena(arenaBytesFor(MaxMessageBytes), 0x10000)
	// As the host lowers a message: subject, payload, the header list, each name and value,
	// then the stream name.
	headerText := 0
	sizes := []struct{ align, size uint32 }{{1, 200}, {1, 0}, {4, 100 * pairSize}}
	for i := 0; i < 100; i++ {
		sizes = append(sizes, struct{ align, size uint32 }{1, 20}, struct{ align, size uint32 }{1, 60})
		headerText += 20 + 60 + 4
	}
	sizes[1].size = uint32(MaxMessageBytes - headerText)
	sizes = append(sizes, struct{ align, size uint32 }{1, 32})
	for _, s := range sizes {
		if a.realloc(0, 0, s.align, s.size) == reallocFailed {
			t.Fatalf("realloc(%d) failed after %d bytes", s.size, a.used)
		}
	}
}

func TestTheDefaultArenaHoldsAMaximalMessageOfEmptyHeaders(t *testing.T) {
	a := testArena(arenaBytesFor(MaxMessageBytes), 0x10000)
	// The most headers a message can have: "NATS/1.0\r\n", then "a:\r\n" each, then "\r\n".
	headers := (MaxMessageBytes - 12) / 4
	sizes := []struct{ align, size uint32 }{{1, 200}, {1, 0}, {4, uint32(headers) * pairSize}}
	for i := 0; i < headers; i++ {
		sizes = append(sizes, struct{ align, size uint32 }{1, 1}, struct{ align, size uint32 }{1, 0})
	}
	sizes = append(sizes, struct{ align, size uint32 }{1, 32})
	for _, s := range sizes {
		if a.realloc(0, 0, s.align, s.size) == reallocFailed {
			t.Fatalf("realloc(%d) failed after %d bytes", s.size, a.used)
		}
	}
}
