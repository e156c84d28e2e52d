package main

import (
	"strings"
	"testing"
	"time"

	"weir.dev/weir"
)

// The expectations below are what the Rust example (examples/orders) does with the same
// input: its decision logic and types, run under serde_json 1.0.154, printed them. A reject
// for malformed JSON is compared up to "malformed order:", since serde_json's error texts
// (with line and column) are its own.

func message(payload string, delivery uint32) weir.Message {
	return weir.Message{
		Subject:         "orders.created",
		Payload:         []byte(payload),
		Stream:          "ORDERS",
		StreamSeq:       17,
		Partition:       3,
		DeliveryAttempt: delivery,
	}
}

func newTestOrders(t *testing.T, pairs ...[2]string) *orders {
	t.Helper()
	o, err := newOrders(weir.NewConfig(pairs...))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestWellFormedOrdersArePublishedAsTheRustExamplePublishesThem(t *testing.T) {
	cases := []struct {
		name, payload string
		delivery      uint32
		subject, json string
	}{
		{"two items", `{"order_id":"o-1","customer":"c42","seq":7,"items":[{"sku":"A","qty":2,"price_cents":1500},{"sku":"B","qty":1,"price_cents":999}]}`, 1,
			"enriched.c42", `{"order_id":"o-1","customer":"c42","seq":7,"total_cents":3999,"item_count":3,"skus":["A","B"],"tier":"standard","region":"eu-west","partition":3,"stream_seq":17,"delivery_attempt":1}`},
		{"silver from 10000, unknown fields ignored", `{"order_id":"o-2","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":10000}],"payment":"paid","extra":[1,{"x":null}]}`, 1,
			"enriched.c1", `{"order_id":"o-2","customer":"c1","seq":0,"total_cents":10000,"item_count":1,"skus":["A"],"tier":"silver","region":"eu-west","partition":3,"stream_seq":17,"delivery_attempt":1}`},
		{"silver to 99999", `{"order_id":"o-3","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":99999}]}`, 1,
			"enriched.c1", `{"order_id":"o-3","customer":"c1","seq":0,"total_cents":99999,"item_count":1,"skus":["A"],"tier":"silver","region":"eu-west","partition":3,"stream_seq":17,"delivery_attempt":1}`},
		{"gold from 100000", `{"order_id":"o-4","customer":"c1","items":[{"sku":"A","qty":4,"price_cents":25000}]}`, 2,
			"enriched.c1", `{"order_id":"o-4","customer":"c1","seq":0,"total_cents":100000,"item_count":4,"skus":["A"],"tier":"gold","region":"eu-west","partition":3,"stream_seq":17,"delivery_attempt":2}`},
		{"escapes as serde_json writes them", "{\"order_id\":\"q\\\"b\\\\s\\u0001\\u001f\u2028é<>&\\b\\f\\n\\r\\t\x7f\",\"customer\":\"ü\",\"items\":[{\"sku\":\"€\",\"qty\":1,\"price_cents\":1}]}", 1,
			"enriched.ü", "{\"order_id\":\"q\\\"b\\\\s\\u0001\\u001f\u2028é<>&\\b\\f\\n\\r\\t\x7f\",\"customer\":\"ü\",\"seq\":0,\"total_cents\":1,\"item_count\":1,\"skus\":[\"€\"],\"tier\":\"standard\",\"region\":\"eu-west\",\"partition\":3,\"stream_seq\":17,\"delivery_attempt\":1}"},
		{"pending payment clears on the third delivery", `{"order_id":"o-6","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":"pending"}`, 3,
			"enriched.c1", `{"order_id":"o-6","customer":"c1","seq":0,"total_cents":1,"item_count":1,"skus":["A"],"tier":"standard","region":"eu-west","partition":3,"stream_seq":17,"delivery_attempt":3}`},
		{"null payment is none", `{"order_id":"o-7","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":null}`, 1,
			"enriched.c1", `{"order_id":"o-7","customer":"c1","seq":0,"total_cents":1,"item_count":1,"skus":["A"],"tier":"standard","region":"eu-west","partition":3,"stream_seq":17,"delivery_attempt":1}`},
		{"sums wrap like the release build", `{"order_id":"o-8","customer":"c1","items":[{"sku":"A","qty":4294967295,"price_cents":18446744073709551615},{"sku":"B","qty":2,"price_cents":1}]}`, 1,
			"enriched.c1", `{"order_id":"o-8","customer":"c1","seq":0,"total_cents":18446744069414584323,"item_count":1,"skus":["A","B"],"tier":"gold","region":"eu-west","partition":3,"stream_seq":17,"delivery_attempt":1}`},
		{"structs given as arrays", `["o-16","c1",1,[["A",1,2]],null]`, 1,
			"enriched.c1", `{"order_id":"o-16","customer":"c1","seq":1,"total_cents":2,"item_count":1,"skus":["A"],"tier":"standard","region":"eu-west","partition":3,"stream_seq":17,"delivery_attempt":1}`},
	}
	h := newTestOrders(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			outcome, out := h.decide(message(c.payload, c.delivery))
			if !outcome.IsAck() || out == nil {
				t.Fatalf("outcome %v, publication %v; want ack with a publication", outcome, out)
			}
			if out.subject != c.subject {
				t.Errorf("subject %q, want %q", out.subject, c.subject)
			}
			if string(out.payload) != c.json {
				t.Errorf("payload\n got %s\nwant %s", out.payload, c.json)
			}
		})
	}
}

func TestBadOrdersAreRejectedAsTheRustExampleRejectsThem(t *testing.T) {
	cases := []struct{ name, payload, reason string }{
		{"no items", `{"order_id":"o-5","customer":"c1","items":[]}`, "order o-5 has no items"},
		{"not JSON", `not json`, "malformed order:"},
		{"null string", `{"order_id":null,"customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}]}`, "malformed order:"},
		{"names match exactly", `{"ORDER_ID":"o-9","order_id":"o-9","Customer":"x","items":[{"sku":"A","qty":1,"price_cents":1}]}`, "malformed order: missing field `customer`"},
		{"null seq", `{"order_id":"o-10","customer":"c1","seq":null,"items":[{"sku":"A","qty":1,"price_cents":1}]}`, "malformed order:"},
		{"negative qty", `{"order_id":"o-11","customer":"c1","items":[{"sku":"A","qty":-1,"price_cents":1}]}`, "malformed order:"},
		{"fractional qty", `{"order_id":"o-12","customer":"c1","items":[{"sku":"A","qty":1.0,"price_cents":1}]}`, "malformed order:"},
		{"invalid UTF-8", "{\"order_id\":\"o-\xff\",\"customer\":\"c1\",\"items\":[{\"sku\":\"A\",\"qty\":1,\"price_cents\":1}]}", "malformed order:"},
		{"trailing characters", `{"order_id":"o-13","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}]} x`, "malformed order:"},
		{"null items", `{"order_id":"o-14","customer":"c1","items":null}`, "malformed order:"},
		{"null order", `null`, "malformed order:"},
		{"payment not a string", `{"order_id":"o-15","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":5}`, "malformed order:"},
		{"a field given twice", `{"order_id":"o-17","order_id":"o-17b","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}]}`, "malformed order: duplicate field `order_id`"},
		{"array too long", `["o-18","c1",1,[["A",1,2]],null,5]`, "malformed order:"},
		// A key of Order or Item is read as a string, whether the field is known or not, and
		// serde_json checks every string it reads: UTF-8, surrogate escapes in pairs.
		{"lone surrogate in an unknown key", `{"order_id":"o","customer":"c","items":[{"sku":"A","qty":1,"price_cents":1}],"\ud800":1}`, "malformed order:"},
		{"lone trailing surrogate in an unknown key", `{"order_id":"o","customer":"c","items":[{"sku":"A","qty":1,"price_cents":1}],"\udc00":1}`, "malformed order:"},
		{"lone surrogate in an unknown key of an item", `{"order_id":"o","customer":"c","items":[{"sku":"A","qty":1,"price_cents":1,"\ud800":1}]}`, "malformed order:"},
		{"invalid UTF-8 in an unknown key", "{\"order_id\":\"o\",\"customer\":\"c\",\"items\":[{\"sku\":\"A\",\"qty\":1,\"price_cents\":1}],\"\xff\":1}", "malformed order:"},
		{"lone surrogate in order_id", `{"order_id":"\ud800","customer":"c","items":[{"sku":"A","qty":1,"price_cents":1}]}`, "malformed order:"},
		{"leading surrogate without a trailing one", `{"order_id":"\ud83d\u0041","customer":"c","items":[{"sku":"A","qty":1,"price_cents":1}]}`, "malformed order:"},
		{"lone surrogate in customer", `{"order_id":"o","customer":"\udc00","items":[{"sku":"A","qty":1,"price_cents":1}]}`, "malformed order:"},
		{"lone surrogate in a sku", `{"order_id":"o","customer":"c","items":[{"sku":"\ud800","qty":1,"price_cents":1}]}`, "malformed order:"},
		{"lone surrogate in payment", `{"order_id":"o","customer":"c","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":"\ud800"}`, "malformed order:"},
		// serde_json reads -0 as a floating-point number, which no integer field takes.
		{"qty -0", `{"order_id":"o","customer":"c","items":[{"sku":"A","qty":-0,"price_cents":1}]}`, "malformed order:"},
		{"price_cents -0", `{"order_id":"o","customer":"c","items":[{"sku":"A","qty":1,"price_cents":-0}]}`, "malformed order:"},
		{"seq -0", `{"order_id":"o","customer":"c","seq":-0,"items":[{"sku":"A","qty":1,"price_cents":1}]}`, "malformed order:"},
		{"qty with an exponent", `{"order_id":"o","customer":"c","items":[{"sku":"A","qty":1e0,"price_cents":1}]}`, "malformed order:"},
		{"a raw control character in a skipped string", "{\"order_id\":\"o\",\"customer\":\"c\",\"items\":[{\"sku\":\"A\",\"qty\":1,\"price_cents\":1}],\"x\":\"\x01\"}", "malformed order:"},
		{"a trailing comma in a skipped array", `{"order_id":"o","customer":"c","items":[{"sku":"A","qty":1,"price_cents":1}],"x":[1,]}`, "malformed order:"},
		{"a lone minus in a skipped value", `{"order_id":"o","customer":"c","items":[{"sku":"A","qty":1,"price_cents":1}],"x":-}`, "malformed order:"},
		{"a repeated unknown field does not hide that there are no items", `{"order_id":"o","customer":"c","items":[],"x":1,"x":2}`, "order o has no items"},
	}
	h := newTestOrders(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			outcome, out := h.decide(message(c.payload, 1))
			reason, ok := outcome.IsReject()
			if !ok || out != nil {
				t.Fatalf("outcome %v, publication %v; want a reject", outcome, out)
			}
			if !strings.HasPrefix(reason, c.reason) {
				t.Errorf("reason %q, want it to start with %q", reason, c.reason)
			}
		})
	}
}

func TestAnUnknownFieldIsSkippedAsSerdeJSONSkipsIt(t *testing.T) {
	order := func(extra string) string {
		return `{"order_id":"o","customer":"c","items":[{"sku":"A","qty":1,"price_cents":1}]` + extra + `}`
	}
	cases := []struct{ name, payload string }{
		{"given twice", order(`,"x":1,"x":2`)},
		{"with a key repeated inside", order(`,"x":{"a":1,"a":[{"b":1,"b":2}]}`)},
		{"given twice in an item", `{"order_id":"o","customer":"c","items":[{"sku":"A","z":1,"qty":1,"price_cents":1,"z":2}]}`},
		{"given twice in an item given as an array", `["o","c",0,[{"sku":"A","qty":1,"price_cents":1,"z":1,"z":2}]]`},
		{"with invalid UTF-8 in a string", order(",\"x\":\"\xff\xfe\xed\xa0\x80\"")},
		{"with invalid UTF-8 in a key inside", order(",\"x\":{\"\xff\":1}")},
		{"with a lone surrogate escape in a string", order(`,"x":["\ud800","\udc00x"]`)},
		{"with a lone surrogate escape in a key inside", order(`,"x":{"\ud800":1}`)},
		{"nested 100000 deep", order(`,"x":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000))},
		{"with a number of 5000 digits", order(`,"x":` + strings.Repeat("9", 5000) + `e-` + strings.Repeat("9", 5000))},
		{"of every kind", order(` , "a" : [ null , true , false , -0 , 1.5E+3 , "" , { } , [ ] ] ,` + "\t\n\r" + `"b":{"c":-1e-9}`)},
	}
	h := newTestOrders(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			outcome, out := h.decide(message(c.payload, 1))
			if !outcome.IsAck() || out == nil {
				t.Fatalf("outcome %v, publication %v; want ack with a publication", outcome, out)
			}
			if want := `{"order_id":"o","customer":"c","seq":0,"total_cents":1,`; !strings.HasPrefix(string(out.payload), want) {
				t.Errorf("payload %s, want it to start with %s", out.payload, want)
			}
		})
	}
}

func TestAPendingPaymentIsRetriedAfterPendingDelayUntilTheThirdDelivery(t *testing.T) {
	o := newTestOrders(t, [2]string{"pending_delay", "750"})
	pending := `{"order_id":"o-6","customer":"c1","items":[{"sku":"A","qty":1,"price_cents":1}],"payment":"pending"}`
	for _, delivery := range []uint32{1, 2} {
		outcome, out := o.decide(message(pending, delivery))
		delay, hasDelay, ok := outcome.IsRetry()
		if !ok || !hasDelay || delay != 750*time.Millisecond || out != nil {
			t.Errorf("delivery %d: %v, publication %v; want retry after 750ms", delivery, outcome, out)
		}
	}
	if outcome, _ := o.decide(message(pending, 3)); !outcome.IsAck() {
		t.Errorf("delivery 3: %v, want ack", outcome)
	}
}

func TestOutputPrefixAndRegionDefaultAndCanBeSet(t *testing.T) {
	o := newTestOrders(t)
	if o.outputPrefix != "enriched" || o.region != "eu-west" || o.pendingDelay != 200*time.Millisecond {
		t.Errorf("defaults: %+v", *o)
	}
	o = newTestOrders(t, [2]string{"output_prefix", "out"}, [2]string{"region", "us"}, [2]string{"region", "ap"})
	_, out := o.decide(message(`{"order_id":"o","customer":"c9","items":[{"sku":"A","qty":1,"price_cents":1}]}`, 1))
	if out == nil || out.subject != "out.c9" || !strings.Contains(string(out.payload), `"region":"ap"`) {
		t.Errorf("configured: %+v", out)
	}
}

func TestPendingDelayIsReadLikeTheRustExampleReadsIt(t *testing.T) {
	for _, c := range []struct {
		delay string
		want  time.Duration
		err   string
	}{
		{"200", 200 * time.Millisecond, ""},
		{"+5", 5 * time.Millisecond, ""},
		{"", 0, "pending_delay must be a number of milliseconds: cannot parse integer from empty string"},
		{"+", 0, "pending_delay must be a number of milliseconds: invalid digit found in string"},
		{"-1", 0, "pending_delay must be a number of milliseconds: invalid digit found in string"},
		{" 1", 0, "pending_delay must be a number of milliseconds: invalid digit found in string"},
		{"1_0", 0, "pending_delay must be a number of milliseconds: invalid digit found in string"},
		{"18446744073709551615", time.Duration(1<<63 - 1), ""},
		{"18446744073709551616", 0, "pending_delay must be a number of milliseconds: number too large to fit in target type"},
		// Read left to right, as Rust reads it: too large before the bad digit is reached.
		{"99999999999999999999x", 0, "pending_delay must be a number of milliseconds: number too large to fit in target type"},
		{"1844674407370955161x", 0, "pending_delay must be a number of milliseconds: invalid digit found in string"},
		{"9223372036854", 9223372036854 * time.Millisecond, ""},
	} {
		o, err := newOrders(weir.NewConfig([2]string{"pending_delay", c.delay}))
		if c.err != "" {
			if err == nil || err.Error() != c.err {
				t.Errorf("pending_delay %q: error %v, want %q", c.delay, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("pending_delay %q: %v", c.delay, err)
			continue
		}
		if o.pendingDelay != c.want {
			t.Errorf("pending_delay %q: %v, want %v", c.delay, o.pendingDelay, c.want)
		}
	}
}
