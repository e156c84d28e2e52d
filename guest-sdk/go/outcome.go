package weir

import "time"

// Outcome is what the handler made of a message; weir turns it into a JetStream
// acknowledgement. Make one with [Ack], [Retry], [RetryAfter] or [Reject].
type Outcome struct {
	kind     outcomeKind
	hasDelay bool
	delay    time.Duration
	reason   string
}

// outcomeKind numbers the cases in the order of `variant outcome` in wit/handler.wit: the
// numbers are the variant's discriminants on the wire.
type outcomeKind uint8

const (
	kindAck outcomeKind = iota
	kindRetry
	kindReject
)

// Ack: done. weir publishes this call's outputs, waits until they are stored, then
// acknowledges the message.
func Ack() Outcome { return Outcome{kind: kindAck} }

// Retry: this call's outputs are dropped and the message is delivered again after the
// deployment's backoff for this attempt. The partition waits for it.
func Retry() Outcome { return Outcome{kind: kindRetry} }

// RetryAfter is [Retry] after delay instead of the deployment's backoff. A negative delay
// counts as zero.
func RetryAfter(delay time.Duration) Outcome {
	return Outcome{kind: kindRetry, hasDelay: true, delay: max(delay, 0)}
}

// Reject: never retry. This call's outputs are dropped and the message is terminated with
// reason; it becomes a dead letter and the partition moves on.
func Reject(reason string) Outcome { return Outcome{kind: kindReject, reason: reason} }

// IsAck reports whether the outcome is [Ack].
func (o Outcome) IsAck() bool { return o.kind == kindAck }

// IsRetry reports whether the outcome is a retry, and its delay if it names one.
func (o Outcome) IsRetry() (delay time.Duration, hasDelay bool, ok bool) {
	return o.delay, o.hasDelay, o.kind == kindRetry
}

// IsReject reports whether the outcome is [Reject], and its reason.
func (o Outcome) IsReject() (reason string, ok bool) {
	return o.reason, o.kind == kindReject
}

// String describes the outcome for logs and test failures.
func (o Outcome) String() string {
	switch o.kind {
	case kindAck:
		return "ack"
	case kindRetry:
		if o.hasDelay {
			return "retry after " + o.delay.String()
		}
		return "retry"
	default:
		return "reject: " + o.reason
	}
}
