// The totals example in Go, with the behaviour of examples/totals (Rust) output for output:
// per-customer running totals kept in weir's state, exactly once.
//
// For each order event (the same JSON as the orders example's):
//
//   - the customer's running total (total/<customer>, in cents) grows by the order's total;
//     each time it passes another multiple of milestone_cents, a milestone is published to
//     <output_prefix>.<customer>.milestone;
//   - the customer's orders are counted per one-minute window of the message's publish time
//     (window/<customer>); when an order of a later minute arrives, the finished window is
//     published to <output_prefix>.<customer>.window;
//   - malformed JSON, or an order without items, is rejected: it becomes a dead letter, and
//     changes nothing.
//
// Configuration: output_prefix (default totals), milestone_cents (default 100000).
//
// Build (mainline Go, or TinyGo):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o go-totals.wasm .
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"weir.dev/weir"
)

func init() {
	weir.Handle(setup)
}

// main is never called: the module is a reactor, and weir calls its exports.
func main() {}

type totals struct {
	outputPrefix   string
	milestoneCents uint64
}

func setup(cfg weir.Config) (weir.Handler, error) {
	t, err := newTotals(cfg)
	if err != nil {
		return nil, err
	}
	return t.handle, nil
}

func newTotals(cfg weir.Config) (*totals, error) {
	milestone, err := strconv.ParseUint(cfg.GetOr("milestone_cents", "100000"), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("milestone_cents must be a whole number of cents: %w", err)
	}
	if milestone == 0 {
		return nil, errors.New("milestone_cents must be more than 0")
	}
	return &totals{outputPrefix: cfg.GetOr("output_prefix", "totals"), milestoneCents: milestone}, nil
}

type order struct {
	Customer *string `json:"customer"`
	Items    *[]item `json:"items"`
}

type item struct {
	Qty        uint32 `json:"qty"`
	PriceCents uint64 `json:"price_cents"`
}

// window is a customer's orders in one minute, as kept in state.
type window struct {
	Minute uint64 `json:"minute"`
	Orders uint64 `json:"orders"`
}

type milestone struct {
	Customer       string `json:"customer"`
	TotalCents     uint64 `json:"total_cents"`
	MilestoneCents uint64 `json:"milestone_cents"`
	StreamSeq      uint64 `json:"stream_seq"`
}

type windowDone struct {
	Customer string `json:"customer"`
	Start    uint64 `json:"start"`
	Orders   uint64 `json:"orders"`
}

func (t *totals) handle(msg weir.Message) weir.Outcome {
	var o order
	if err := json.Unmarshal(msg.Payload, &o); err != nil || o.Customer == nil || o.Items == nil {
		if err == nil {
			err = errors.New("missing field")
		}
		return weir.Reject("malformed order: " + err.Error())
	}
	if len(*o.Items) == 0 {
		return weir.Reject("order has no items")
	}
	var amount uint64
	for _, i := range *o.Items {
		amount += uint64(i.Qty) * i.PriceCents
	}
	if err := t.count(*o.Customer, amount, msg); err != nil {
		// A write over the tenant's state quotas: the message is a dead letter rather than
		// half counted. (A refused publish fails the whole call, which is retried.)
		return weir.Reject(err.Error())
	}
	return weir.Ack()
}

func (t *totals) count(customer string, amount uint64, msg weir.Message) error {
	totalKey := "total/" + customer
	before, _ := weir.State.GetUint64(totalKey)
	total := before + amount
	if err := weir.State.SetUint64(totalKey, total); err != nil {
		return err
	}
	if before/t.milestoneCents != total/t.milestoneCents {
		m := milestone{
			Customer:       customer,
			TotalCents:     total,
			MilestoneCents: total / t.milestoneCents * t.milestoneCents,
			StreamSeq:      msg.StreamSeq,
		}
		if err := t.publish(customer, "milestone", m); err != nil {
			return err
		}
	}

	windowKey := "window/" + customer
	minute := uint64(msg.PublishedAt.UnixNano()) / 60_000_000_000
	var w window
	found, err := weir.State.GetJSON(windowKey, &w)
	switch {
	case err != nil:
		return fmt.Errorf("unreadable window of %s: %w", customer, err)
	case found && w.Minute >= minute:
		w.Orders++
	case found:
		done := windowDone{Customer: customer, Start: w.Minute * 60, Orders: w.Orders}
		if err := t.publish(customer, "window", done); err != nil {
			return err
		}
		w = window{Minute: minute, Orders: 1}
	default:
		w = window{Minute: minute, Orders: 1}
	}
	return weir.State.SetJSON(windowKey, w)
}

func (t *totals) publish(customer, what string, value any) error {
	payload, err := json.Marshal(value)
	if err != nil {
		return err
	}
	return weir.Publish(t.outputPrefix+"."+customer+"."+what, payload)
}
