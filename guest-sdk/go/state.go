package weir

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// State is the partition's state: keys and values weir keeps for this deployment and
// partition, which outlive the instance, the node and the version.
//
// A call sees its own writes at once. They take effect only if the call returns [Ack], and
// then exactly once: weir commits them together with the fact that the message was applied,
// before it acknowledges the message. A retry, a rejection or a trap drops them.
//
//	total, _ := weir.State.GetUint64("total")
//	if err := weir.State.SetUint64("total", total+amount); err != nil {
//		return weir.Reject(err.Error())
//	}
//
// Keys are UTF-8 strings of 1 to 256 bytes. A write over the tenant's quotas is refused with a
// [*StateError] that says which; the call goes on. Outside GOOS=wasip1 (`go test`), State is a
// map in memory, so that a handler's logic can be tested natively.
var State stateStore

type stateStore struct{}

// StateErrorKind says which rule refused a write; the values are the discriminants of
// `variant state-error` in wit/handler.wit.
type StateErrorKind uint8

const (
	// StateInvalidKey: the key is empty or longer than 256 bytes.
	StateInvalidKey StateErrorKind = iota
	// StateValueTooLarge: the value is larger than the tenant allows (Limit bytes).
	StateValueTooLarge
	// StateTooManyKeys: the partition would hold more keys than the tenant allows (Limit).
	StateTooManyKeys
	// StateTooManyBytes: the partition's keys and values would take more bytes than the
	// tenant allows (Limit).
	StateTooManyBytes
	// StateTooManyWrites: the call has written as many keys as one call may (Limit).
	StateTooManyWrites
)

// StateError is why a write to [State] was refused.
type StateError struct {
	Kind  StateErrorKind
	Limit uint64
}

func (e *StateError) Error() string {
	switch e.Kind {
	case StateInvalidKey:
		return "invalid state key: use 1 to 256 bytes"
	case StateValueTooLarge:
		return fmt.Sprintf("state value larger than the tenant's limit of %d bytes", e.Limit)
	case StateTooManyKeys:
		return fmt.Sprintf("the partition would hold more than the tenant's %d state keys", e.Limit)
	case StateTooManyBytes:
		return fmt.Sprintf("the partition's state would take more than the tenant's %d bytes", e.Limit)
	case StateTooManyWrites:
		return fmt.Sprintf("this call has already written %d state keys, the most one may", e.Limit)
	default:
		return fmt.Sprintf("state write refused (kind %d)", e.Kind)
	}
}

// maxKeysPage is the most keys one listing call returns, as the host allows.
const maxKeysPage = 1000

// Get returns the value of key, and whether it has one.
func (stateStore) Get(key string) ([]byte, bool) { return stateGet(key) }

// Set sets key to value, if this call acks.
func (stateStore) Set(key string, value []byte) error { return stateSet(key, value) }

// Delete removes key, if this call acks.
func (stateStore) Delete(key string) error { return stateDelete(key) }

// Keys returns every key that starts with prefix, in byte order.
func (stateStore) Keys(prefix string) []string {
	var keys []string
	var after *string
	for {
		page := stateKeys(prefix, after, maxKeysPage)
		keys = append(keys, page...)
		if len(page) < maxKeysPage {
			return keys
		}
		last := page[len(page)-1]
		after = &last
	}
}

// GetString returns the value of key as text.
func (s stateStore) GetString(key string) (string, bool) {
	value, ok := s.Get(key)
	return string(value), ok
}

// SetString sets key to value as text.
func (s stateStore) SetString(key, value string) error { return s.Set(key, []byte(value)) }

// GetUint64 returns the number at key, written by [stateStore.SetUint64]; false if key has
// none or it is not a number.
func (s stateStore) GetUint64(key string) (uint64, bool) {
	text, ok := s.GetString(key)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(text, 10, 64)
	return n, err == nil
}

// SetUint64 sets key to n, written as decimal text (so that `weir state get` shows it).
func (s stateStore) SetUint64(key string, n uint64) error {
	return s.SetString(key, strconv.FormatUint(n, 10))
}

// GetJSON decodes the value of key into v; false if key has none.
func (s stateStore) GetJSON(key string, v any) (bool, error) {
	value, ok := s.Get(key)
	if !ok {
		return false, nil
	}
	return true, json.Unmarshal(value, v)
}

// SetJSON sets key to v encoded as JSON.
func (s stateStore) SetJSON(key string, v any) error {
	value, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("cannot encode the value of %q as JSON: %w", key, err)
	}
	return s.Set(key, value)
}

// ResetState empties [State] in a native build (`go test`), between tests. On a node it does
// nothing: the state is weir's.
func ResetState() { resetState() }
