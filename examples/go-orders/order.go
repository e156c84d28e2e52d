package main

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// order is an input event, read as the Rust example's serde derive reads it: field names match
// exactly, unknown fields are ignored, seq defaults to 0, payment may be absent or null, and
// every other field is required and may not be null.
type order struct {
	orderID  string
	customer string
	// seq is the publisher's per-customer counter, carried through so order can be checked.
	seq     uint64
	items   []item
	payment *string
}

type item struct {
	sku        string
	qty        uint32
	priceCents uint64
}

// parseOrder decodes a payload into an order, accepting and refusing what serde_json does for
// the Rust example's types; the text of an error differs.
//
// encoding/json would not do: it matches field names case-insensitively, takes null for a
// string or number as "leave it empty", lets a repeated field win, reads structs from objects
// only, turns invalid UTF-8 and lone surrogate escapes into U+FFFD where serde_json refuses
// them (in the strings it keeps) and stops at 10000 levels of nesting where serde_json skips
// an unknown field's value however deep it goes. So the payload is read by hand, as
// serde_json::from_slice reads it.
func parseOrder(payload []byte) (order, error) {
	r := reader{b: payload}
	o, err := r.order()
	if err != nil {
		return order{}, err
	}
	if r.peek() != end {
		return order{}, r.errorf("trailing characters")
	}
	return o, nil
}

// order reads the Rust example's Order.
func (r *reader) order() (order, error) {
	var o order
	err := r.structOf("struct Order", []field{
		{name: "order_id", read: func() (err error) { o.orderID, err = r.string(); return }},
		{name: "customer", read: func() (err error) { o.customer, err = r.string(); return }},
		{name: "seq", optional: true, read: func() (err error) { o.seq, err = r.unsigned(math.MaxUint64); return }},
		{name: "items", read: func() (err error) { o.items, err = r.items(); return }},
		{name: "payment", optional: true, read: func() (err error) { o.payment, err = r.optionalString(); return }},
	})
	return o, err
}

// items reads Order.items, a Vec<Item>.
func (r *reader) items() ([]item, error) {
	if !r.eat('[') {
		return nil, r.errorf("invalid type, expected a sequence")
	}
	var items []item
	if r.eat(']') {
		return items, nil
	}
	for {
		var it item
		err := r.structOf("struct Item", []field{
			{name: "sku", read: func() (err error) { it.sku, err = r.string(); return }},
			{name: "qty", read: func() error {
				qty, err := r.unsigned(math.MaxUint32)
				it.qty = uint32(qty)
				return err
			}},
			{name: "price_cents", read: func() (err error) { it.priceCents, err = r.unsigned(math.MaxUint64); return }},
		})
		if err != nil {
			return nil, err
		}
		items = append(items, it)
		if r.eat(']') {
			return items, nil
		}
		if !r.eat(',') {
			return nil, r.errorf("expected `,` or `]`")
		}
	}
}

// optionalString reads an Option<String>: null is None.
func (r *reader) optionalString() (*string, error) {
	if r.literal("null") {
		return nil, nil
	}
	s, err := r.string()
	return &s, err
}

// field is a field of a struct: its name in JSON, whether it may be left out (it then keeps its
// zero value, the Rust field's default) and how its value is read.
type field struct {
	name     string
	optional bool
	read     func() error
}

// structOf reads a struct the way serde's derive does: from a JSON object by exact field name
// (unknown fields skipped, a known one given twice refused) or from a JSON array by position.
func (r *reader) structOf(what string, fields []field) error {
	seen := make([]bool, len(fields))
	switch {
	case r.eat('{'):
		if r.eat('}') {
			break
		}
		for {
			name, err := r.string()
			if err != nil {
				return err
			}
			if !r.eat(':') {
				return r.errorf("expected `:`")
			}
			k := fieldIndex(fields, name)
			switch {
			case k < 0:
				err = r.skipValue()
			case seen[k]:
				err = r.errorf("duplicate field `%s`", name)
			default:
				seen[k] = true
				err = fields[k].read()
			}
			if err != nil {
				return err
			}
			if r.eat('}') {
				break
			}
			if !r.eat(',') {
				return r.errorf("expected `,` or `}`")
			}
		}
	case r.eat('['):
		for k := range fields {
			if r.peek() == ']' {
				break
			}
			if k > 0 && !r.eat(',') {
				return r.errorf("expected `,` or `]`")
			}
			seen[k] = true
			if err := fields[k].read(); err != nil {
				return err
			}
		}
		if !r.eat(']') {
			return r.errorf("expected `]`: %s has %d fields", what, len(fields))
		}
	default:
		return r.errorf("invalid type, expected %s", what)
	}
	for k, f := range fields {
		if !seen[k] && !f.optional {
			return r.errorf("missing field `%s`", f.name)
		}
	}
	return nil
}

func fieldIndex(fields []field, name string) int {
	for k, f := range fields {
		if f.name == name {
			return k
		}
	}
	return -1
}

// reader is a cursor over a payload, reading JSON as serde_json::from_slice reads it.
type reader struct {
	b []byte
	i int
}

// end is what peek returns at the end of the payload: no byte.
const end = -1

// errorf is an error at the cursor, with serde_json's line and column.
func (r *reader) errorf(format string, args ...any) error {
	done := r.b[:min(r.i, len(r.b))]
	line := bytes.Count(done, []byte{'\n'}) + 1
	column := len(done) - bytes.LastIndexByte(done, '\n')
	return fmt.Errorf(format+" at line %d column %d", append(args, line, column)...)
}

// peek skips whitespace and returns the next byte, not taken, or end.
func (r *reader) peek() int {
	for ; r.i < len(r.b); r.i++ {
		switch c := r.b[r.i]; c {
		case ' ', '\n', '\t', '\r':
		default:
			return int(c)
		}
	}
	return end
}

// eat takes c if it comes next (after whitespace).
func (r *reader) eat(c byte) bool {
	if r.peek() != int(c) {
		return false
	}
	r.i++
	return true
}

// literal takes word (null, true or false) if it comes next.
func (r *reader) literal(word string) bool {
	r.peek()
	if !bytes.HasPrefix(r.b[r.i:], []byte(word)) {
		return false
	}
	r.i += len(word)
	return true
}

// string reads a string that is kept (a key or a string field): valid UTF-8, surrogate
// escapes in pairs.
func (r *reader) string() (string, error) {
	if r.peek() != '"' {
		return "", r.errorf("invalid type, expected a string")
	}
	s, err := r.scanString(true)
	return string(s), err
}

// scanString reads a string from its opening quote: its text if keep, else only its syntax as
// serde_json checks a string it skips (escapes well-formed, no control characters; neither
// its UTF-8 nor its surrogate escapes).
func (r *reader) scanString(keep bool) ([]byte, error) {
	r.i++ // the opening quote
	var text []byte
	for {
		start := r.i
		for r.i < len(r.b) && r.b[r.i] != '"' && r.b[r.i] != '\\' && r.b[r.i] >= 0x20 {
			r.i++
		}
		if keep {
			if !utf8.Valid(r.b[start:r.i]) {
				return nil, r.errorf("invalid unicode code point")
			}
			text = append(text, r.b[start:r.i]...)
		}
		if r.i == len(r.b) {
			return nil, r.errorf("EOF while parsing a string")
		}
		c := r.b[r.i]
		r.i++
		switch c {
		case '"':
			return text, nil
		case '\\':
		default:
			return nil, r.errorf("control character (\\u0000-\\u001F) found while parsing a string")
		}
		if r.i == len(r.b) {
			return nil, r.errorf("EOF while parsing a string")
		}
		escape := r.b[r.i]
		r.i++
		var ch rune
		switch escape {
		case '"', '\\', '/':
			ch = rune(escape)
		case 'b':
			ch = '\b'
		case 'f':
			ch = '\f'
		case 'n':
			ch = '\n'
		case 'r':
			ch = '\r'
		case 't':
			ch = '\t'
		case 'u':
			var err error
			if ch, err = r.unicodeEscape(keep); err != nil {
				return nil, err
			}
		default:
			return nil, r.errorf("invalid escape")
		}
		if keep {
			text = utf8.AppendRune(text, ch)
		}
	}
}

// unicodeEscape reads the hex digits of a \u escape. Of a string that is kept, a surrogate
// must be a leading one followed by an escaped trailing one: the two make one character.
func (r *reader) unicodeEscape(keep bool) (rune, error) {
	n, err := r.hex4()
	if err != nil || !keep || !utf16.IsSurrogate(n) {
		return n, err
	}
	if n >= 0xdc00 || !bytes.HasPrefix(r.b[r.i:], []byte(`\u`)) {
		return 0, r.errorf("lone surrogate in hex escape")
	}
	r.i += 2
	low, err := r.hex4()
	if err != nil {
		return 0, err
	}
	if n = utf16.DecodeRune(n, low); n == utf8.RuneError {
		return 0, r.errorf("lone surrogate in hex escape")
	}
	return n, nil
}

// hex4 reads the four hex digits of a \u escape.
func (r *reader) hex4() (rune, error) {
	if len(r.b)-r.i < 4 {
		r.i = len(r.b)
		return 0, r.errorf("EOF while parsing a string")
	}
	// With base 16 given, ParseUint takes hex digits only: no sign, prefix or underscore.
	n, err := strconv.ParseUint(string(r.b[r.i:r.i+4]), 16, 16)
	if err != nil {
		return 0, r.errorf("invalid escape")
	}
	r.i += 4
	return rune(n), nil
}

// number takes a JSON number, however long, and says whether it is plain digits: no sign,
// fraction or exponent.
func (r *reader) number() (digits []byte, plain bool, err error) {
	r.peek()
	start := r.i
	plain = !r.next('-')
	first := r.i
	switch n := r.digits(); {
	case n == 0:
		return nil, false, r.errorf("expected value")
	case n > 1 && r.b[first] == '0':
		return nil, false, r.errorf("invalid number")
	}
	if r.next('.') {
		plain = false
		if r.digits() == 0 {
			return nil, false, r.errorf("invalid number")
		}
	}
	if r.next('e') || r.next('E') {
		plain = false
		if !r.next('+') {
			r.next('-')
		}
		if r.digits() == 0 {
			return nil, false, r.errorf("invalid number")
		}
	}
	return r.b[start:r.i], plain, nil
}

// next takes c if it is the very next byte (inside a token: no whitespace skipped).
func (r *reader) next(c byte) bool {
	if r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return false
}

// digits takes the decimal digits that come next and says how many.
func (r *reader) digits() int {
	start := r.i
	for r.i < len(r.b) && '0' <= r.b[r.i] && r.b[r.i] <= '9' {
		r.i++
	}
	return r.i - start
}

// unsigned reads an integer field (u32, u64) up to largest: plain digits only. A sign, a
// fraction or an exponent makes the number one serde_json gives the field as signed or
// floating point, which it does not take: -0 included.
func (r *reader) unsigned(largest uint64) (uint64, error) {
	digits, plain, err := r.number()
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(string(digits), 10, 64)
	if !plain || err != nil || n > largest {
		return 0, r.errorf("invalid value, expected an integer up to %d", largest)
	}
	return n, nil
}

// skipValue skips one value of any kind, as serde_json skips an unknown field's: however deeply
// it nests (serde_json sets no limit there), its keys repeated or not, its strings' UTF-8 and
// surrogate escapes unchecked.
func (r *reader) skipValue() error {
	var closers []byte // what closes each array and object the value has open, innermost last
	for {
		switch {
		case r.eat('['):
			if !r.eat(']') {
				closers = append(closers, ']')
				continue
			}
		case r.eat('{'):
			if !r.eat('}') {
				closers = append(closers, '}')
				if err := r.skipKey(); err != nil {
					return err
				}
				continue
			}
		default:
			if err := r.skipScalar(); err != nil {
				return err
			}
		}
		// A value is done: close what it ends, then take the comma before the next one.
		for len(closers) > 0 {
			closer := closers[len(closers)-1]
			if r.eat(closer) {
				closers = closers[:len(closers)-1]
				continue
			}
			if !r.eat(',') {
				return r.errorf("expected `,` or `%c`", closer)
			}
			if closer == '}' {
				if err := r.skipKey(); err != nil {
					return err
				}
			}
			break
		}
		if len(closers) == 0 {
			return nil
		}
	}
}

// skipScalar skips a string, a number, true, false or null.
func (r *reader) skipScalar() error {
	if r.peek() == '"' {
		_, err := r.scanString(false)
		return err
	}
	if r.literal("null") || r.literal("true") || r.literal("false") {
		return nil
	}
	_, _, err := r.number()
	return err
}

// skipKey skips an object's key and the colon after it.
func (r *reader) skipKey() error {
	if r.peek() != '"' {
		return r.errorf("key must be a string")
	}
	if _, err := r.scanString(false); err != nil {
		return err
	}
	if !r.eat(':') {
		return r.errorf("expected `:`")
	}
	return nil
}
