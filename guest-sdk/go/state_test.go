package weir

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

// Layouts per the canonical ABI, as the host stores them for the state imports.
func TestStateResultsDecodeFromTheCanonicalLayout(t *testing.T) {
	a := testArena(1024, 0x100)
	w := hostWriter{t, a}

	value := w.bytes([]byte("42"), 1)
	some := make([]byte, optionBytesSize)
	some[0] = 1
	binary.LittleEndian.PutUint32(some[4:], value.ptr)
	binary.LittleEndian.PutUint32(some[8:], value.len)
	if got, ok := decodeOptionBytes(a, some); !ok || string(got) != "42" {
		t.Errorf("some = %q %v", got, ok)
	}
	if got, ok := decodeOptionBytes(a, make([]byte, optionBytesSize)); ok || got != nil {
		t.Errorf("none = %q %v", got, ok)
	}

	refused := func(kind byte, limit []byte) []byte {
		r := make([]byte, stateResultSize)
		r[0], r[8] = 1, kind
		copy(r[16:], limit)
		return r
	}
	u64 := binary.LittleEndian.AppendUint64(nil, 1<<40)
	u32 := binary.LittleEndian.AppendUint32(nil, 100)
	for _, c := range []struct {
		src  []byte
		want *StateError
	}{
		{refused(0, nil), &StateError{Kind: StateInvalidKey}},
		{refused(1, u64), &StateError{Kind: StateValueTooLarge, Limit: 1 << 40}},
		{refused(3, u64), &StateError{Kind: StateTooManyBytes, Limit: 1 << 40}},
		{refused(4, u32), &StateError{Kind: StateTooManyWrites, Limit: 100}},
	} {
		var got *StateError
		if err := decodeStateResult(c.src); !errors.As(err, &got) || *got != *c.want {
			t.Errorf("decoded %v, want %v", err, c.want)
		}
	}
	if err := decodeStateResult(make([]byte, stateResultSize)); err != nil {
		t.Errorf("ok decoded as %v", err)
	}

	// list<string>: the list of (pointer, length) records, then each string.
	list := w.bytes(make([]byte, 2*listSize), 4)
	for i, key := range []string{"a", "b.c"} {
		s := w.string(key)
		r := a.view(list.ptr+uint32(i*listSize), listSize)
		binary.LittleEndian.PutUint32(r[0:], s.ptr)
		binary.LittleEndian.PutUint32(r[4:], s.len)
	}
	if got := decodeStrings(a, span{list.ptr, 2}); !reflect.DeepEqual(got, []string{"a", "b.c"}) {
		t.Errorf("keys = %v", got)
	}
}

func TestStateRefusalsSayWhichQuota(t *testing.T) {
	err := &StateError{Kind: StateTooManyKeys, Limit: 10}
	if got := err.Error(); got != "the partition would hold more than the tenant's 10 state keys" {
		t.Errorf("%q", got)
	}
}

// Natively, State is a map, so that a handler's logic runs under `go test`.
func TestStateWorksNativelyForTests(t *testing.T) {
	ResetState()
	if _, ok := State.GetUint64("total"); ok {
		t.Fatal("a fresh state has a total")
	}
	for _, key := range []string{"total", "b", "a.x", "a.y"} {
		if err := State.SetUint64(key, 7); err != nil {
			t.Fatal(err)
		}
	}
	if n, ok := State.GetUint64("total"); !ok || n != 7 {
		t.Errorf("total = %d %v", n, ok)
	}
	if err := State.Delete("b"); err != nil {
		t.Fatal(err)
	}
	if got := State.Keys("a."); !reflect.DeepEqual(got, []string{"a.x", "a.y"}) {
		t.Errorf("keys = %v", got)
	}
	var invalid *StateError
	if err := State.Set("", nil); !errors.As(err, &invalid) || invalid.Kind != StateInvalidKey {
		t.Errorf("empty key: %v", err)
	}
	ResetState()
}
