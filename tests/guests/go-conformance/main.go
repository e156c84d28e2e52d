// The Go conformance guest: does what tests/conformance/README.md says, through guest-sdk/go,
// so that tests/conformance/vectors.json holds the Go SDK to the behaviour of every other SDK.
//
// Build (mainline Go):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o go-conformance.wasm .
package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"weir.dev/weir"
)

func init() {
	weir.Handle(setup)
}

// main is never called: the module is a reactor, and weir calls its exports.
func main() {}

// conformance is one instance's handler: the configuration it was initialized with.
type conformance struct {
	config weir.Config
	// publish is weir.Publish. It is a field only so that the native test can see what the
	// handler publishes: outside wasip1 the SDK's Publish has no host and always fails.
	publish func(subject string, payload []byte, headers ...weir.Header) error
}

// setup is what weir calls for each new instance, with the deployment's configuration.
func setup(cfg weir.Config) (weir.Handler, error) {
	c, err := newConformance(cfg)
	if err != nil {
		return nil, err
	}
	return c.handle, nil
}

// newConformance refuses a configuration with a key "refuse", with that key's value word for
// word, and otherwise logs the configuration and keeps it.
func newConformance(cfg weir.Config) (*conformance, error) {
	if reason, ok := cfg.Get("refuse"); ok {
		return nil, errors.New(reason)
	}
	line := "config"
	for _, pair := range cfg.Pairs() {
		line += " " + pair[0] + "=" + pair[1]
	}
	weir.Log(weir.LevelInfo, line)
	return &conformance{config: cfg, publish: weir.Publish}, nil
}

// handle does what the subject's second token says (conformance.<action>.<rest>).
func (c *conformance) handle(msg weir.Message) weir.Outcome {
	_, tail, _ := strings.Cut(msg.Subject, ".")
	action, rest, _ := strings.Cut(tail, ".")
	text := string(msg.Payload)

	switch action {
	case "ack":
		return weir.Ack()
	case "retry":
		return weir.Retry()
	case "retry-after":
		delay, err := parseMillis(text)
		if err != nil {
			return weir.Reject("not a number of milliseconds: " + text)
		}
		return weir.RetryAfter(delay)
	case "reject":
		return weir.Reject(text)
	case "echo":
		return published(c.publish("out."+rest, msg.Payload, msg.Headers...))
	case "describe":
		return published(c.publish("out.describe", []byte(c.describe(msg))))
	case "log":
		for _, h := range msg.Headers {
			level, ok := levels[h.Name]
			if !ok {
				return weir.Reject("unknown level " + h.Name)
			}
			weir.Log(level, h.Value)
		}
		return weir.Ack()
	case "publish-to":
		return published(c.publish(text, nil))
	case "many":
		count, err := strconv.ParseUint(text, 10, 32)
		if err != nil {
			return weir.Reject("not a count: " + text)
		}
		for i := range count {
			n := strconv.FormatUint(i, 10)
			if err := c.publish("out.many."+n, []byte(n)); err != nil {
				return published(err)
			}
		}
		return weir.Ack()
	case "trap":
		panic("trap requested: " + text)
	default:
		return weir.Reject("unknown action " + action)
	}
}

// describe is every field of msg and the configuration, one line each.
func (c *conformance) describe(msg weir.Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "subject %s\n", msg.Subject)
	fmt.Fprintf(&b, "stream %s\n", msg.Stream)
	fmt.Fprintf(&b, "seq %d\n", msg.StreamSeq)
	fmt.Fprintf(&b, "partition %d\n", msg.Partition)
	fmt.Fprintf(&b, "attempt %d\n", msg.DeliveryAttempt)
	// The SDK gives a time.Time; the wire has a u64 of nanoseconds, which UnixNano gives back.
	fmt.Fprintf(&b, "published-at %d\n", uint64(msg.PublishedAt.UnixNano()))
	fmt.Fprintf(&b, "payload %d\n", len(msg.Payload))
	if utf8.Valid(msg.Payload) {
		fmt.Fprintf(&b, "text %s\n", msg.Payload)
	} else {
		b.WriteString("text (not UTF-8)\n")
	}
	for _, h := range msg.Headers {
		fmt.Fprintf(&b, "header %s: %s\n", h.Name, h.Value)
	}
	if name, ok := msg.Header("first"); ok {
		value, found := msg.Header(name)
		if !found {
			value = "(none)"
		}
		fmt.Fprintf(&b, "first %s: %s\n", name, value)
	}
	for _, pair := range c.config.Pairs() {
		fmt.Fprintf(&b, "config %s=%s\n", pair[0], pair[1])
	}
	return b.String()
}

// published is ack if the publish was taken, else a rejection that says why. (When the host
// refuses a publish it fails the call anyway; the rejection is what the handler answers.)
func published(err error) weir.Outcome {
	if err != nil {
		return weir.Reject("refused: " + err.Error())
	}
	return weir.Ack()
}

var levels = map[string]weir.Level{
	"trace": weir.LevelTrace,
	"debug": weir.LevelDebug,
	"info":  weir.LevelInfo,
	"warn":  weir.LevelWarn,
	"error": weir.LevelError,
}

// parseMillis reads a decimal number of milliseconds. A time.Duration ends at about 292 years
// (math.MaxInt64 nanoseconds); a longer delay is that long.
func parseMillis(text string) (time.Duration, error) {
	ms, err := strconv.ParseUint(text, 10, 64)
	if err != nil {
		return 0, err
	}
	if ms > math.MaxInt64/uint64(time.Millisecond) {
		return time.Duration(math.MaxInt64), nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}
