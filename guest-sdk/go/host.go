package weir

import "fmt"

// Level is how much a log line matters; the values are the discriminants of `enum level` in
// wit/handler.wit.
type Level uint8

const (
	LevelTrace Level = iota
	LevelDebug
	LevelInfo
	LevelWarn
	LevelError
)

// Publish buffers a message to subject, sent only if this call ends in [Ack]. It fails when
// the subject is not among the deployment's allowed outputs or is reserved ($…, _INBOX…,
// weir.…), a header is weir's (Nats-*, KV-Operation) or invalid, or a per-call limit is
// reached; the whole call then fails and is retried, so a handler usually returns [Retry] on
// error.
func Publish(subject string, payload []byte, headers ...Header) error {
	return hostPublish(subject, payload, headers)
}

// Log writes a line to the node's log, tagged with tenant, handler, partition and stream
// sequence. Lines beyond the node's rate limit are dropped and counted.
func Log(level Level, message string) {
	hostLog(level, message)
}

// Logf is [Log] with a format.
func Logf(level Level, format string, args ...any) {
	hostLog(level, fmt.Sprintf(format, args...))
}

// Debugf logs at [LevelDebug].
func Debugf(format string, args ...any) { Logf(LevelDebug, format, args...) }

// Infof logs at [LevelInfo].
func Infof(format string, args ...any) { Logf(LevelInfo, format, args...) }

// Warnf logs at [LevelWarn].
func Warnf(format string, args ...any) { Logf(LevelWarn, format, args...) }
