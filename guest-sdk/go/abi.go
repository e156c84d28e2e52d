package weir

import (
	"encoding/binary"
	"errors"
	"time"
)

// The memory layout of weir:handler@0.2.0's types under the component model's canonical ABI
// (CanonicalABI.md: alignment, elem_size, load and store of records, variants, strings and
// lists). Integers are little-endian. A string or list<T> is (pointer u32, length u32), the
// length counted in bytes for strings and in elements for lists.
//
// How each function crosses:
//
//	init(config: list<tuple<string, string>>) -> result<_, string>
//	    core: init(ptr, len i32) -> i32: 2 flat parameters; the result flattens to 3 values,
//	    more than one, so the guest returns a pointer to it (resultSize bytes).
//	handle(msg: message) -> outcome
//	    core: handle(12 flat parameters) -> i32: the record flattens to 12 values (four
//	    strings or lists of 2 each, then u64, u32, u32, u64), within the limit of 16, so it
//	    is passed flat; the outcome flattens to 3 values and is returned by pointer.
//	publish(subject: string, payload: list<u8>, headers: list<header>) -> result<_, string>
//	    core import: 6 flat parameters and a 7th, the address where the host stores the
//	    result (an import's results beyond one value are written to memory the caller gives).
//	log(level: level, message: string)
//	    core import: level as its discriminant, then the string: 3 parameters.
//	state.get(key: string) -> option<list<u8>>
//	    core import: the string, then the address of the result (3 flat values).
//	state.set(key: string, value: list<u8>) -> result<_, state-error>
//	state.delete(key: string) -> result<_, state-error>
//	    core imports: the strings and lists, then the address of the result (3 flat values:
//	    two discriminants and the payload).
//	state.keys(prefix: string, after: option<string>, limit: u32) -> list<string>
//	    core import: 6 flat parameters (the option as discriminant, pointer, length), then the
//	    address of the result (a list: 2 values).
const (
	// Every variant (outcome, result, option) starts with its discriminant, a u8 here.
	discriminantAt = 0

	// header and tuple<string, string>: two strings at 0 and 8; size 16, alignment 4.
	pairSize = 16

	// variant outcome { ack, retry(option<duration>), reject(string) }: the discriminant
	// (u8, three cases) at 0; the payload at 8, the largest case alignment (option<u64>: 8).
	// retry's option<u64> is itself a discriminant at 8 and the u64 at 16. Size 24,
	// alignment 8.
	outcomeSize       = 24
	retryHasDelayAt   = 8
	retryDelayAt      = 16
	rejectReasonPtrAt = 8
	rejectReasonLenAt = 12

	// result<_, string>: the discriminant (0 ok, 1 error) at 0, the error string at 4.
	// Size 12, alignment 4.
	resultSize     = 12
	resultErrPtrAt = 4
	resultErrLenAt = 8

	// option<list<u8>>: the discriminant (0 none, 1 some) at 0, the list at 4. Size 12,
	// alignment 4.
	optionBytesSize  = 12
	optionBytesPtrAt = 4
	optionBytesLenAt = 8

	// result<_, state-error>: the discriminant at 0; the error at 8, itself a variant whose
	// discriminant is at 8 and whose payload (u64, or u32 for too-many-writes) is at 16, the
	// largest case alignment being 8. Size 24, alignment 8.
	stateResultSize   = 24
	stateErrorKindAt  = 8
	stateErrorLimitAt = 16

	// list<T>: pointer at 0, length at 4. Size 8, alignment 4. A string in a list is the same.
	listSize = 8
)

// span is a string's or list's place in linear memory.
type span struct {
	ptr, len uint32
}

// decodeString copies the string at s out of the arena.
func decodeString(a *arena, s span) string {
	return string(a.view(s.ptr, s.len))
}

// decodeBytes copies the list<u8> at s out of the arena; the copy outlives the call.
func decodeBytes(a *arena, s span) []byte {
	out := make([]byte, s.len)
	copy(out, a.view(s.ptr, s.len))
	return out
}

// decodePairs copies a list of two-string records (header, tuple<string, string>).
func decodePairs(a *arena, list span) [][2]string {
	if list.len == 0 {
		return nil
	}
	if uint64(list.len)*pairSize > 1<<32 {
		panic("weir: the host passed a list longer than linear memory")
	}
	records := a.view(list.ptr, list.len*pairSize)
	pairs := make([][2]string, list.len)
	for i := range pairs {
		r := records[i*pairSize:]
		pairs[i][0] = decodeString(a, span{le32(r[0:]), le32(r[4:])})
		pairs[i][1] = decodeString(a, span{le32(r[8:]), le32(r[12:])})
	}
	return pairs
}

// decodeConfig reads init's parameter.
func decodeConfig(a *arena, list span) Config {
	return Config{pairs: decodePairs(a, list)}
}

// flatMessage is handle's parameter as the host passes it: the record's 12 flat values.
type flatMessage struct {
	subject, payload, headers, stream span
	streamSeq                         uint64
	partition, deliveryAttempt        uint32
	publishedAtNanos                  uint64
}

// decodeMessage copies a message out of the arena into Go values.
func decodeMessage(a *arena, f flatMessage) Message {
	var headers []Header
	for _, p := range decodePairs(a, f.headers) {
		headers = append(headers, Header{Name: p[0], Value: p[1]})
	}
	return Message{
		Subject:         decodeString(a, f.subject),
		Payload:         decodeBytes(a, f.payload),
		Headers:         headers,
		Stream:          decodeString(a, f.stream),
		StreamSeq:       f.streamSeq,
		Partition:       f.partition,
		DeliveryAttempt: f.deliveryAttempt,
		PublishedAt:     time.Unix(0, int64(f.publishedAtNanos)),
	}
}

// encodeOutcome writes o into dst (outcomeSize bytes, 8-aligned in linear memory). reason is
// where the reject reason's bytes are; the caller keeps them alive until the host has read them.
func encodeOutcome(dst []byte, o Outcome, reason span) {
	clear(dst[:outcomeSize])
	dst[discriminantAt] = byte(o.kind)
	switch o.kind {
	case kindRetry:
		if o.hasDelay {
			dst[retryHasDelayAt] = 1
			binary.LittleEndian.PutUint64(dst[retryDelayAt:], uint64(o.delay))
		}
	case kindReject:
		binary.LittleEndian.PutUint32(dst[rejectReasonPtrAt:], reason.ptr)
		binary.LittleEndian.PutUint32(dst[rejectReasonLenAt:], reason.len)
	}
}

// encodeResult writes result<_, string> into dst (resultSize bytes, 4-aligned): ok when err is
// nil, otherwise the error whose text is at msg.
func encodeResult(dst []byte, err error, msg span) {
	clear(dst[:resultSize])
	if err == nil {
		return
	}
	dst[discriminantAt] = 1
	binary.LittleEndian.PutUint32(dst[resultErrPtrAt:], msg.ptr)
	binary.LittleEndian.PutUint32(dst[resultErrLenAt:], msg.len)
}

// decodeResult reads the result<_, string> the host stored for an import; the error's text is
// in the arena, and is copied.
func decodeResult(a *arena, src []byte) error {
	switch src[discriminantAt] {
	case 0:
		return nil
	case 1:
		return errors.New(decodeString(a, span{le32(src[resultErrPtrAt:]), le32(src[resultErrLenAt:])}))
	default:
		panic("weir: the host returned an invalid result discriminant")
	}
}

// encodeHeaders lays out a list<header> as 32-bit words, four a header, for publish. addr
// gives each string's place in linear memory; the caller keeps the strings alive for the call.
func encodeHeaders(headers []Header, addr func(string) span) []uint32 {
	words := make([]uint32, 0, 4*len(headers))
	for _, h := range headers {
		name, value := addr(h.Name), addr(h.Value)
		words = append(words, name.ptr, name.len, value.ptr, value.len)
	}
	return words
}

// decodeOptionBytes reads the option<list<u8>> the host stored for state.get, copying the bytes
// out of the arena.
func decodeOptionBytes(a *arena, src []byte) ([]byte, bool) {
	switch src[discriminantAt] {
	case 0:
		return nil, false
	case 1:
		return decodeBytes(a, span{le32(src[optionBytesPtrAt:]), le32(src[optionBytesLenAt:])}), true
	default:
		panic("weir: the host returned an invalid option discriminant")
	}
}

// decodeStateResult reads the result<_, state-error> the host stored for a state write.
func decodeStateResult(src []byte) error {
	switch src[discriminantAt] {
	case 0:
		return nil
	case 1:
	default:
		panic("weir: the host returned an invalid result discriminant")
	}
	kind := StateErrorKind(src[stateErrorKindAt])
	var limit uint64
	switch kind {
	case StateInvalidKey:
	case StateTooManyWrites:
		limit = uint64(le32(src[stateErrorLimitAt:]))
	case StateValueTooLarge, StateTooManyKeys, StateTooManyBytes:
		limit = binary.LittleEndian.Uint64(src[stateErrorLimitAt:])
	default:
		panic("weir: the host returned an invalid state-error discriminant")
	}
	return &StateError{Kind: kind, Limit: limit}
}

// decodeStrings copies a list<string> out of the arena.
func decodeStrings(a *arena, list span) []string {
	if list.len == 0 {
		return nil
	}
	if uint64(list.len)*listSize > 1<<32 {
		panic("weir: the host passed a list longer than linear memory")
	}
	records := a.view(list.ptr, list.len*listSize)
	out := make([]string, list.len)
	for i := range out {
		r := records[i*listSize:]
		out[i] = decodeString(a, span{le32(r[0:]), le32(r[4:])})
	}
	return out
}

func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
