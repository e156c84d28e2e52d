package weir

import (
	"errors"
	"testing"
)

func TestInitRunsTheRegisteredSetupAndHandleItsHandler(t *testing.T) {
	t.Cleanup(func() { setup, handler = nil, nil })
	if err := initialize(Config{}); !errors.Is(err, errNoSetup) {
		t.Errorf("init without Handle: %v", err)
	}
	Handle(func(cfg Config) (Handler, error) {
		if _, ok := cfg.Get("fail"); ok {
			return nil, errors.New("refused")
		}
		prefix := cfg.GetOr("prefix", "p")
		return func(msg Message) Outcome { return Reject(prefix + msg.Subject) }, nil
	})
	if err := initialize(NewConfig([2]string{"fail", "1"})); err == nil || err.Error() != "refused" {
		t.Errorf("a refused configuration: %v", err)
	}
	if err := initialize(NewConfig([2]string{"prefix", "x."})); err != nil {
		t.Fatal(err)
	}
	if reason, ok := handle(Message{Subject: "s"}).IsReject(); !ok || reason != "x.s" {
		t.Errorf("handle: %q %v", reason, ok)
	}
}

func TestHandleBeforeInitPanics(t *testing.T) {
	t.Cleanup(func() { setup, handler = nil, nil })
	defer func() {
		if recover() == nil {
			t.Error("handle without init did not panic")
		}
	}()
	handle(Message{})
}
