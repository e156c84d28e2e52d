package main

import "testing"

func TestAMessageIsShouted(t *testing.T) {
	loud, err := shout([]byte("hello, weir"))
	if err != nil || string(loud) != "HELLO, WEIR" {
		t.Fatalf("shout = %q, %v", loud, err)
	}
}

func TestAnEmptyMessageIsRefused(t *testing.T) {
	if _, err := shout(nil); err == nil || err.Error() != "empty message" {
		t.Fatalf("shout(nil) = %v, want the error \"empty message\"", err)
	}
}
