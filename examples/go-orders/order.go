package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
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
// the Rust example's types; the text of an error differs (serde_json adds line and column).
//
// encoding/json alone would be laxer than serde: it matches field names case-insensitively,
// takes null for a string or number as "leave it empty", lets a repeated field win and reads
// structs from objects only. Splitting a struct into its raw fields first (structFields) and then
// decoding each field by name keeps the Rust example's rules with the standard library only.
func parseOrder(payload []byte) (order, error) {
	if !utf8.Valid(payload) {
		return order{}, errors.New("invalid unicode code point")
	}
	fields, err := structFields(payload, "struct Order", "order_id", "customer", "seq", "items", "payment")
	if err != nil {
		return order{}, err
	}
	var o order
	if err := required(fields, "order_id", &o.orderID); err != nil {
		return order{}, err
	}
	if err := required(fields, "customer", &o.customer); err != nil {
		return order{}, err
	}
	if raw, ok := fields["seq"]; ok {
		if err := value(raw, "seq", &o.seq); err != nil {
			return order{}, err
		}
	}
	rawItems, ok := fields["items"]
	if !ok {
		return order{}, errors.New("missing field `items`")
	}
	var list []json.RawMessage
	if err := value(rawItems, "items", &list); err != nil {
		return order{}, err
	}
	for _, raw := range list {
		it, err := parseItem(raw)
		if err != nil {
			return order{}, err
		}
		o.items = append(o.items, it)
	}
	if raw, ok := fields["payment"]; ok && !isNull(raw) {
		var payment string
		if err := value(raw, "payment", &payment); err != nil {
			return order{}, err
		}
		o.payment = &payment
	}
	return o, nil
}

func parseItem(raw json.RawMessage) (item, error) {
	fields, err := structFields(raw, "struct Item", "sku", "qty", "price_cents")
	if err != nil {
		return item{}, err
	}
	var it item
	if err := required(fields, "sku", &it.sku); err != nil {
		return item{}, err
	}
	if err := required(fields, "qty", &it.qty); err != nil {
		return item{}, err
	}
	if err := required(fields, "price_cents", &it.priceCents); err != nil {
		return item{}, err
	}
	return it, nil
}

// structFields reads a struct the way serde's derive does: from a JSON object by exact field name
// (unknown fields skipped, a known one given twice refused) or from a JSON array by position.
// A value must be the whole input: anything after it is refused, as serde_json refuses it.
func structFields(raw []byte, what string, names ...string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	start, err := dec.Token()
	if err != nil {
		return nil, err
	}
	out := make(map[string]json.RawMessage, len(names))
	switch start {
	case json.Delim('{'):
		for dec.More() {
			key, err := dec.Token()
			if err != nil {
				return nil, err
			}
			var value json.RawMessage
			if err := dec.Decode(&value); err != nil {
				return nil, err
			}
			name := key.(string) // a key inside an object is always a string
			if !slices.Contains(names, name) {
				continue
			}
			if _, seen := out[name]; seen {
				return nil, fmt.Errorf("duplicate field `%s`", name)
			}
			out[name] = value
		}
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if i == len(names) {
				return nil, fmt.Errorf("invalid length, expected %s with %d elements", what, len(names))
			}
			var value json.RawMessage
			if err := dec.Decode(&value); err != nil {
				return nil, err
			}
			out[names[i]] = value
		}
	case nil:
		return nil, fmt.Errorf("invalid type: null, expected %s", what)
	default:
		return nil, fmt.Errorf("invalid type: %v, expected %s", start, what)
	}
	if _, err := dec.Token(); err != nil { // the closing } or ]
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing characters")
	}
	return out, nil
}

// required decodes field name, which must be present and not null.
func required(fields map[string]json.RawMessage, name string, into any) error {
	raw, ok := fields[name]
	if !ok {
		return fmt.Errorf("missing field `%s`", name)
	}
	return value(raw, name, into)
}

// value decodes one field's value, which may not be null. Plain strings and integers, most of
// an order, are read directly: json.Unmarshal costs microseconds a call in Wasm. structFields
// has already checked the value's syntax and parseOrder its UTF-8.
func value(raw json.RawMessage, name string, into any) error {
	if isNull(raw) {
		return fmt.Errorf("invalid type: null for field `%s`", name)
	}
	switch into := into.(type) {
	case *string:
		if len(raw) >= 2 && raw[0] == '"' && bytes.IndexByte(raw, '\\') < 0 {
			*into = string(raw[1 : len(raw)-1])
			return nil
		}
	case *uint32:
		if n, err := strconv.ParseUint(string(raw), 10, 32); err == nil {
			*into = uint32(n)
			return nil
		}
	case *uint64:
		if n, err := strconv.ParseUint(string(raw), 10, 64); err == nil {
			*into = n
			return nil
		}
	}
	// Everything else, and the error of anything that does not fit.
	if err := json.Unmarshal(raw, into); err != nil {
		return fmt.Errorf("field `%s`: %w", name, err)
	}
	return nil
}

func isNull(raw []byte) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}
