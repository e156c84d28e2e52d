package main

import (
	"encoding/json"
	"testing"
	"time"

	"weir.dev/weir"
)

func orderJSON(customer string, qty, price uint64) []byte {
	return []byte(`{"order_id":"o","customer":"` + customer + `","items":[{"sku":"s","qty":` +
		jsonNumber(qty) + `,"price_cents":` + jsonNumber(price) + `}]}`)
}

func jsonNumber(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func at(seconds int64) time.Time { return time.Unix(seconds, 0) }

// Natively, weir.State is a map (and Publish reports that there is no host, so these orders
// pass no milestone and end no window): the test reads the state back.
func TestTotalsAndWindowsAreKeptPerCustomer(t *testing.T) {
	weir.ResetState()
	tot, err := newTotals(weir.NewConfig([2]string{"milestone_cents", "1000"}))
	if err != nil {
		t.Fatal(err)
	}
	for i, payload := range [][]byte{orderJSON("c1", 2, 300), orderJSON("c2", 1, 50), orderJSON("c1", 1, 300)} {
		msg := weir.Message{Payload: payload, StreamSeq: uint64(i + 1), PublishedAt: at(120 + int64(i))}
		if outcome := tot.handle(msg); !outcome.IsAck() {
			t.Fatalf("order %d: %v", i, outcome)
		}
	}
	if total, _ := weir.State.GetUint64("total/c1"); total != 900 {
		t.Errorf("c1 total = %d, want 900", total)
	}
	if total, _ := weir.State.GetUint64("total/c2"); total != 50 {
		t.Errorf("c2 total = %d", total)
	}
	var w window
	if found, err := weir.State.GetJSON("window/c2", &w); !found || err != nil || w != (window{Minute: 2, Orders: 1}) {
		t.Errorf("c2 window = %+v %v %v", w, found, err)
	}
}

func TestMalformedOrdersAreRejectedAndChangeNothing(t *testing.T) {
	weir.ResetState()
	tot, _ := newTotals(weir.NewConfig())
	for _, payload := range []string{`{"customer":"c1"`, `{"customer":"c1","items":[]}`, `{"items":[]}`} {
		if _, rejected := tot.handle(weir.Message{Payload: []byte(payload)}).IsReject(); !rejected {
			t.Errorf("%s was not rejected", payload)
		}
	}
	if keys := weir.State.Keys(""); len(keys) != 0 {
		t.Errorf("state changed: %v", keys)
	}
}

func TestAConfigurationWithoutAMilestoneIsRefused(t *testing.T) {
	for _, value := range []string{"0", "ten"} {
		if _, err := newTotals(weir.NewConfig([2]string{"milestone_cents", value})); err == nil {
			t.Errorf("milestone_cents=%s accepted", value)
		}
	}
}
