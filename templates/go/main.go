// {{name}}: a weir stream handler. weir hands it the messages of each partition of its input
// stream one at a time, in order; for each it publishes the payload in capitals to
// <output_prefix>.<subject> and acks, or rejects an empty message (it becomes a dead letter).
//
// Configuration (weir deploy --config key=value): output_prefix, by default "out".
package main

import (
	"bytes"
	"errors"

	"weir.dev/weir"
)

func init() {
	weir.Handle(setup)
}

// main is never called: the module is a reactor, and weir calls its exports.
func main() {}

// setup builds one instance's handler from the deployment's configuration.
func setup(cfg weir.Config) (weir.Handler, error) {
	prefix := cfg.GetOr("output_prefix", "out")
	if prefix == "" {
		return nil, errors.New("output_prefix must not be empty")
	}
	return func(msg weir.Message) weir.Outcome {
		loud, err := shout(msg.Payload)
		if err != nil {
			return weir.Reject(err.Error())
		}
		if err := weir.Publish(prefix+"."+msg.Subject, loud); err != nil {
			// A refused publish fails the call whatever it answers; say why.
			return weir.Reject(err.Error())
		}
		return weir.Ack()
	}, nil
}

// shout is the payload in capitals (ASCII letters only), or why there is nothing to shout.
func shout(payload []byte) ([]byte, error) {
	if len(payload) == 0 {
		return nil, errors.New("empty message")
	}
	return bytes.ToUpper(payload), nil
}
