package weir

import "time"

// Header is one message header. A name may appear more than once in a message's headers.
type Header struct {
	Name  string
	Value string
}

// Message is one delivery of an input message. Every field is the handler's own copy: it may
// be kept after the call returns.
type Message struct {
	// Subject the message was published on, without the partition token that the stream's
	// subject transform put in front of it (orders.c42.created).
	Subject string
	// Payload is the message body, unchanged.
	Payload []byte
	// Headers the publisher set, in the order they arrived.
	Headers []Header
	// Stream is the name of the input stream.
	Stream string
	// StreamSeq is the message's sequence number in the input stream.
	StreamSeq uint64
	// Partition is the partition this message belongs to, 0..partitions.
	Partition uint32
	// DeliveryAttempt counts deliveries including this one: 1 first, 2 on the first retry.
	DeliveryAttempt uint32
	// PublishedAt is when the stream stored the message.
	PublishedAt time.Time
}

// Header returns the first value of header name (case-sensitive), if present.
func (m *Message) Header(name string) (string, bool) {
	for _, h := range m.Headers {
		if h.Name == name {
			return h.Value, true
		}
	}
	return "", false
}

// Config is the deployment's configuration (`weir deploy --config key=value`), each key once,
// sorted by key (the deployment record keeps a map). It is handed to the setup function
// registered with [Handle].
type Config struct {
	pairs [][2]string
}

// NewConfig builds a Config from key/value pairs, as weir does before calling the setup
// function; handler tests use it to exercise their setup.
func NewConfig(pairs ...[2]string) Config {
	return Config{pairs: pairs}
}

// Get returns the value of key; when a key was given more than once, the last one counts.
func (c Config) Get(key string) (string, bool) {
	for i := len(c.pairs) - 1; i >= 0; i-- {
		if c.pairs[i][0] == key {
			return c.pairs[i][1], true
		}
	}
	return "", false
}

// GetOr returns the value of key, or def if it was not set.
func (c Config) GetOr(key, def string) string {
	if v, ok := c.Get(key); ok {
		return v
	}
	return def
}

// Pairs returns every key/value pair, in order.
func (c Config) Pairs() [][2]string {
	return append([][2]string(nil), c.pairs...)
}
