// The orders example in Go, with the behaviour of examples/orders (Rust) message for message:
// one JSON order event in, one enriched event out.
//
//   - a well-formed order is enriched (total, item count, tier, region) and published to
//     <output_prefix>.<customer>, then acked;
//   - malformed JSON, or an order without items, is rejected: it becomes a dead letter;
//   - an order whose payment is still "pending" asks to be retried after pending_delay (the
//     payment clears by the third delivery), holding back later orders of its partition.
//
// Configuration: output_prefix (default enriched), region (default eu-west), pending_delay in
// milliseconds (default 200).
//
// Build (mainline Go, or TinyGo):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o go-orders.wasm .
//	tinygo build -target=wasip1 -buildmode=c-shared -o go-orders.wasm .
package main

import (
	"fmt"
	"time"

	"weir.dev/weir"
)

func init() {
	weir.Handle(setup)
}

// main is never called: the module is a reactor, and weir calls its exports.
func main() {}

// orders is one partition's handler, built from the deployment's configuration.
type orders struct {
	outputPrefix string
	region       string
	pendingDelay time.Duration
}

func setup(cfg weir.Config) (weir.Handler, error) {
	o, err := newOrders(cfg)
	if err != nil {
		return nil, err
	}
	return o.handle, nil
}

func newOrders(cfg weir.Config) (*orders, error) {
	delay, err := parseMillis(cfg.GetOr("pending_delay", "200"))
	if err != nil {
		return nil, fmt.Errorf("pending_delay must be a number of milliseconds: %w", err)
	}
	return &orders{
		outputPrefix: cfg.GetOr("output_prefix", "enriched"),
		region:       cfg.GetOr("region", "eu-west"),
		pendingDelay: delay,
	}, nil
}

func (o *orders) handle(msg weir.Message) weir.Outcome {
	outcome, out := o.decide(msg)
	if out == nil {
		return outcome
	}
	if err := weir.Publish(out.subject, out.payload); err != nil {
		// The call has already failed and will be retried; the outcome does not matter.
		return weir.Retry()
	}
	return outcome
}

// publication is a message the handler publishes before it acks.
type publication struct {
	subject string
	payload []byte
}

// decide is the handler short of publishing: the outcome, and with Ack the message to publish
// first. Kept apart so that tests run it natively, where there is no host to publish to.
func (o *orders) decide(msg weir.Message) (weir.Outcome, *publication) {
	order, err := parseOrder(msg.Payload)
	if err != nil {
		return weir.Reject("malformed order: " + err.Error()), nil
	}
	if len(order.items) == 0 {
		return weir.Reject(fmt.Sprintf("order %s has no items", order.orderID)), nil
	}
	if order.payment != nil && *order.payment == "pending" && msg.DeliveryAttempt < 3 {
		weir.Infof("order %s: payment pending, retrying", order.orderID)
		return weir.RetryAfter(o.pendingDelay), nil
	}
	return weir.Ack(), &publication{
		subject: o.outputPrefix + "." + order.customer,
		payload: enrich(order, o.region, msg).json(),
	}
}
