//go:build !wasip1

package weir

import (
	"slices"
	"strings"
)

// Outside a wasip1 build, State is a map in this process, for `go test`: writes take effect at
// once (there is no call to ack), and keys are checked as weir checks them.
var nativeState = map[string][]byte{}

func stateGet(key string) ([]byte, bool) {
	value, ok := nativeState[key]
	return slices.Clone(value), ok
}

func stateSet(key string, value []byte) error {
	if !validKey(key) {
		return &StateError{Kind: StateInvalidKey}
	}
	nativeState[key] = slices.Clone(value)
	return nil
}

func stateDelete(key string) error {
	if !validKey(key) {
		return &StateError{Kind: StateInvalidKey}
	}
	delete(nativeState, key)
	return nil
}

func stateKeys(prefix string, after *string, limit int) []string {
	var keys []string
	for key := range nativeState {
		if strings.HasPrefix(key, prefix) && (after == nil || key > *after) {
			keys = append(keys, key)
		}
	}
	slices.Sort(keys)
	if len(keys) > limit {
		keys = keys[:limit]
	}
	return keys
}

func resetState() { clear(nativeState) }

func validKey(key string) bool { return len(key) > 0 && len(key) <= 256 }
