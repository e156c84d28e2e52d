package weir

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"time"
)

// hostWriter lowers values into an arena the way the host does: realloc, then store.
type hostWriter struct {
	t *testing.T
	a *arena
}

func (w hostWriter) bytes(b []byte, align uint32) span {
	ptr := w.a.realloc(0, 0, align, uint32(len(b)))
	if ptr == reallocFailed {
		w.t.Fatalf("realloc of %d bytes failed", len(b))
	}
	copy(w.a.view(ptr, uint32(len(b))), b)
	return span{ptr, uint32(len(b))}
}

func (w hostWriter) string(s string) span { return w.bytes([]byte(s), 1) }

// pairs lowers a list<tuple<string, string>>: the list first, then each string, stored into
// the records by (pointer, length) at 0, 4, 8 and 12.
func (w hostWriter) pairs(pairs [][2]string) span {
	list := w.bytes(make([]byte, len(pairs)*pairSize), 4)
	for i, p := range pairs {
		name, value := w.string(p[0]), w.string(p[1])
		r := w.a.view(list.ptr+uint32(i*pairSize), pairSize)
		binary.LittleEndian.PutUint32(r[0:], name.ptr)
		binary.LittleEndian.PutUint32(r[4:], name.len)
		binary.LittleEndian.PutUint32(r[8:], value.ptr)
		binary.LittleEndian.PutUint32(r[12:], value.len)
	}
	return span{list.ptr, uint32(len(pairs))}
}

func TestAMessageLoweredByTheHostDecodesIntoItsOwnCopy(t *testing.T) {
	a := testArena(4096, 0x8000)
	w := hostWriter{t, a}
	f := flatMessage{
		subject:          w.string("orders.c42.créé"),
		payload:          w.bytes([]byte{0, 1, 2, 0xff}, 1),
		headers:          w.pairs([][2]string{{"Nats-Msg-Id", "m-1"}, {"x-ünï", "välue ✓"}, {"Nats-Msg-Id", ""}}),
		stream:           w.string("ORDERS"),
		streamSeq:        1<<40 + 5,
		partition:        7,
		deliveryAttempt:  2,
		publishedAtNanos: 1_700_000_000_123_456_789,
	}
	msg := decodeMessage(a, f)
	want := Message{
		Subject: "orders.c42.créé",
		Payload: []byte{0, 1, 2, 0xff},
		Headers: []Header{{"Nats-Msg-Id", "m-1"}, {"x-ünï", "välue ✓"}, {"Nats-Msg-Id", ""}},
		Stream:  "ORDERS", StreamSeq: 1<<40 + 5, Partition: 7, DeliveryAttempt: 2,
		PublishedAt: time.Unix(1_700_000_000, 123_456_789),
	}
	if !reflect.DeepEqual(msg, want) {
		t.Fatalf("decoded\n %#v\nwant\n %#v", msg, want)
	}
	// The arena is reused for the next call: the message must not share its memory.
	clear(a.mem)
	if !reflect.DeepEqual(msg, want) {
		t.Errorf("the message changed when the arena was overwritten")
	}
	if v, ok := msg.Header("Nats-Msg-Id"); !ok || v != "m-1" {
		t.Errorf("Header: %q %v, want the first value", v, ok)
	}
}

func TestAnEmptyMessageDecodes(t *testing.T) {
	a := testArena(64, 0x8000)
	msg := decodeMessage(a, flatMessage{payload: span{0x8000, 0}})
	if msg.Subject != "" || len(msg.Payload) != 0 || msg.Headers != nil {
		t.Errorf("%#v", msg)
	}
}

func TestConfigKeepsOrderAndTheLastValueOfAKeyCounts(t *testing.T) {
	a := testArena(1024, 0x100)
	w := hostWriter{t, a}
	cfg := decodeConfig(a, w.pairs([][2]string{{"region", "eu"}, {"pending_delay", "5"}, {"region", "us"}}))
	if v, ok := cfg.Get("region"); !ok || v != "us" {
		t.Errorf("Get(region) = %q %v", v, ok)
	}
	if v := cfg.GetOr("absent", "dflt"); v != "dflt" {
		t.Errorf("GetOr = %q", v)
	}
	if _, ok := cfg.Get("absent"); ok {
		t.Errorf("Get(absent) found a value")
	}
	if got := cfg.Pairs(); len(got) != 3 || got[1] != [2]string{"pending_delay", "5"} {
		t.Errorf("Pairs = %v", got)
	}
}

// Layouts per the canonical ABI: outcome is 24 bytes, discriminant at 0, payload at 8;
// retry's option<u64> has its own discriminant at 8 and the value at 16.
func TestOutcomesEncodeToTheCanonicalLayout(t *testing.T) {
	le := func(words ...uint64) []byte {
		b := make([]byte, 0, 24)
		for _, w := range words {
			b = binary.LittleEndian.AppendUint64(b, w)
		}
		return b
	}
	cases := []struct {
		name   string
		o      Outcome
		reason span
		want   []byte
	}{
		{"ack", Ack(), span{}, le(0, 0, 0)},
		{"retry", Retry(), span{}, le(1, 0, 0)},
		{"retry after", RetryAfter(1500 * time.Millisecond), span{}, le(1, 1, 1_500_000_000)},
		{"negative delay", RetryAfter(-time.Second), span{}, le(1, 1, 0)},
		{"reject", Reject("bad"), span{0x1234, 3}, le(2, 0x0000_0003_0000_1234, 0)},
	}
	for _, c := range cases {
		dst := make([]byte, outcomeSize)
		for i := range dst {
			dst[i] = 0xAA // what a previous call left
		}
		encodeOutcome(dst, c.o, c.reason)
		if !reflect.DeepEqual(dst, c.want) {
			t.Errorf("%s: % x, want % x", c.name, dst, c.want)
		}
	}
}

func TestResultsEncodeAndDecodeToTheCanonicalLayout(t *testing.T) {
	dst := make([]byte, resultSize)
	encodeResult(dst, errors.New("no"), span{0x40, 2})
	if want := []byte{1, 0, 0, 0, 0x40, 0, 0, 0, 2, 0, 0, 0}; !reflect.DeepEqual(dst, want) {
		t.Errorf("error result: % x, want % x", dst, want)
	}
	encodeResult(dst, nil, span{})
	if want := make([]byte, resultSize); !reflect.DeepEqual(dst, want) {
		t.Errorf("ok result: % x", dst)
	}

	a := testArena(64, 0x40)
	msg := hostWriter{t, a}.string("subject not allowed")
	src := []byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(src[4:], msg.ptr)
	binary.LittleEndian.PutUint32(src[8:], msg.len)
	if err := decodeResult(a, src); err == nil || err.Error() != "subject not allowed" {
		t.Errorf("error result decoded as %v", err)
	}
	if err := decodeResult(a, make([]byte, resultSize)); err != nil {
		t.Errorf("ok result decoded as %v", err)
	}
}

func TestHeadersForPublishAreFourWordsEach(t *testing.T) {
	addr := map[string]span{"a": {0x10, 1}, "bb": {0x20, 2}, "": {0, 0}}
	words := encodeHeaders([]Header{{"a", "bb"}, {"bb", ""}}, func(s string) span { return addr[s] })
	want := []uint32{0x10, 1, 0x20, 2, 0x20, 2, 0, 0}
	if !reflect.DeepEqual(words, want) {
		t.Errorf("%v, want %v", words, want)
	}
}
