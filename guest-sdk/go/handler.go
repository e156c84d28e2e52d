package weir

import "errors"

// Handler decides what becomes of one delivery of a message. Messages it publishes with
// [Publish] during the call are sent only if it returns [Ack].
type Handler func(msg Message) Outcome

// Setup builds the handler from the deployment's configuration. weir calls it once for each
// new instance (one per partition), before the first message. An error refuses the
// configuration: `weir deploy` reports it and stores nothing.
type Setup func(cfg Config) (Handler, error)

var (
	setup   Setup
	handler Handler
)

// Handle registers the handler's setup function. Call it from an init function of package
// main; the module's exports find it there when weir initializes the instance.
func Handle(s Setup) {
	setup = s
}

// errNoSetup is the configuration error of a module that never called [Handle].
var errNoSetup = errors.New("weir: no handler registered: call weir.Handle from an init function of package main")

// initialize runs the registered setup: the body of the world's `init` export.
func initialize(cfg Config) error {
	if setup == nil {
		return errNoSetup
	}
	h, err := setup(cfg)
	if err != nil {
		return err
	}
	if h == nil {
		return errors.New("weir: the setup function returned no handler and no error")
	}
	handler = h
	return nil
}

// handle runs the handler: the body of the world's `handle` export. weir calls `handle` only
// after `init` succeeded; otherwise this panics, which traps and discards the instance.
func handle(msg Message) Outcome {
	if handler == nil {
		panic("weir: handle called before init succeeded")
	}
	return handler(msg)
}
