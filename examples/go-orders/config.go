package main

import (
	"errors"
	"math"
	"time"
)

// parseMillis reads a number of milliseconds as Rust's u64::from_str does, with the same error
// texts, so that a refused configuration reads the same in both examples: an optional leading
// '+', then decimal digits only.
func parseMillis(s string) (time.Duration, error) {
	if s == "" {
		return 0, errors.New("cannot parse integer from empty string")
	}
	digits := s
	if digits[0] == '+' && len(digits) > 1 {
		digits = digits[1:]
	}
	var ms uint64
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		if c < '0' || c > '9' {
			return 0, errors.New("invalid digit found in string")
		}
		if ms > (math.MaxUint64-uint64(c-'0'))/10 {
			return 0, errors.New("number too large to fit in target type")
		}
		ms = ms*10 + uint64(c-'0')
	}
	// The Rust example saturates at u64::MAX nanoseconds; a Go Duration stops at
	// math.MaxInt64 (292 years), which is as good as forever for a retry delay.
	if ms > math.MaxInt64/uint64(time.Millisecond) {
		return time.Duration(math.MaxInt64), nil
	}
	return time.Duration(ms) * time.Millisecond, nil
}
