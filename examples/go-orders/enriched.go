package main

import (
	"strconv"

	"weir.dev/weir"
)

// enriched is the output event. json writes its fields in this order, as the Rust example's
// serde derive does.
type enriched struct {
	orderID         string
	customer        string
	seq             uint64
	totalCents      uint64
	itemCount       uint32
	skus            []string
	tier            string
	region          string
	partition       uint32
	streamSeq       uint64
	deliveryAttempt uint32
}

// enrich computes the output for an order. Sums wrap on overflow, as the Rust example's do in
// its release build.
func enrich(o order, region string, msg weir.Message) enriched {
	e := enriched{
		orderID:         o.orderID,
		customer:        o.customer,
		seq:             o.seq,
		region:          region,
		partition:       msg.Partition,
		streamSeq:       msg.StreamSeq,
		deliveryAttempt: msg.DeliveryAttempt,
	}
	for _, it := range o.items {
		e.totalCents += uint64(it.qty) * it.priceCents
		e.itemCount += it.qty
		e.skus = append(e.skus, it.sku)
	}
	switch {
	case e.totalCents < 10_000:
		e.tier = "standard"
	case e.totalCents < 100_000:
		e.tier = "silver"
	default:
		e.tier = "gold"
	}
	return e
}

// json encodes e byte for byte as serde_json::to_vec does: compact, fields in declaration
// order, strings escaped by jsonString.
func (e enriched) json() []byte {
	b := make([]byte, 0, 256)
	b = append(b, `{"order_id":`...)
	b = jsonString(b, e.orderID)
	b = append(b, `,"customer":`...)
	b = jsonString(b, e.customer)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, e.seq, 10)
	b = append(b, `,"total_cents":`...)
	b = strconv.AppendUint(b, e.totalCents, 10)
	b = append(b, `,"item_count":`...)
	b = strconv.AppendUint(b, uint64(e.itemCount), 10)
	b = append(b, `,"skus":[`...)
	for i, sku := range e.skus {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonString(b, sku)
	}
	b = append(b, `],"tier":`...)
	b = jsonString(b, e.tier)
	b = append(b, `,"region":`...)
	b = jsonString(b, e.region)
	b = append(b, `,"partition":`...)
	b = strconv.AppendUint(b, uint64(e.partition), 10)
	b = append(b, `,"stream_seq":`...)
	b = strconv.AppendUint(b, e.streamSeq, 10)
	b = append(b, `,"delivery_attempt":`...)
	b = strconv.AppendUint(b, uint64(e.deliveryAttempt), 10)
	return append(b, '}')
}

// jsonString appends s as a JSON string the way serde_json writes one: only the quote, the
// backslash and control characters are escaped (\b \t \n \f \r by name, the rest as \u00xx in
// lower-case hex); everything else, U+2028 and U+2029 included, is written as it is. This is
// why the example does not use encoding/json, which also escapes <, >, & and U+2028/U+2029.
func jsonString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			b = append(b, '\\', '"')
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
