package main

// The conformance vectors run natively, through the SDK's stand-ins (host_native.go): a check
// of the guest's own logic before the authoritative run through the real host
// (runtime/tests/integration/conformance.rs). Natively:
//
//   - weir.Publish has no host and always fails, so the handler's publish field is replaced by
//     one that records what it is given;
//   - weir.Log writes "weir log (level N): text" lines to standard error, which the test reads
//     back;
//   - nothing refuses a publish, so the "output refused" vectors (the host refuses the publish
//     and fails the call, whatever the guest answers) are skipped;
//   - a trap is a panic that the test recovers, and the instance simply goes on: there is no
//     instance to start again.

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"weir.dev/weir"
)

type vectors struct {
	Init []struct {
		Name   string      `json:"name"`
		Config [][2]string `json:"config"`
		Expect struct {
			Logs    [][2]string `json:"logs"`
			Refused *string     `json:"refused"`
		} `json:"expect"`
	} `json:"init"`
	Handle struct {
		Config  [][2]string `json:"config"`
		Vectors []struct {
			Name    string        `json:"name"`
			Message vectorMessage `json:"message"`
			Expect  struct {
				Outcome string         `json:"outcome"`
				Outputs []vectorOutput `json:"outputs"`
				Logs    [][2]string    `json:"logs"`
			} `json:"expect"`
		} `json:"vectors"`
	} `json:"handle"`
}

type vectorMessage struct {
	Subject         string      `json:"subject"`
	Payload         *string     `json:"payload"`
	PayloadHex      *string     `json:"payload_hex"`
	Headers         [][2]string `json:"headers"`
	Stream          *string     `json:"stream"`
	StreamSeq       uint64      `json:"stream_seq"`
	Partition       uint32      `json:"partition"`
	DeliveryAttempt *uint32     `json:"delivery_attempt"`
	PublishedAt     *uint64     `json:"published_at"`
}

type vectorOutput struct {
	Subject    string      `json:"subject"`
	Payload    *string     `json:"payload"`
	PayloadHex *string     `json:"payload_hex"`
	Headers    [][2]string `json:"headers"`
}

func loadVectors(t *testing.T) vectors {
	t.Helper()
	raw, err := os.ReadFile("../../conformance/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// bytesOf is a vector's payload: payload as UTF-8, or payload_hex, or none.
func bytesOf(t *testing.T, text, hexText *string) []byte {
	t.Helper()
	switch {
	case text != nil:
		return []byte(*text)
	case hexText != nil:
		b, err := hex.DecodeString(*hexText)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return []byte{}
}

func headersOf(pairs [][2]string) []weir.Header {
	var headers []weir.Header
	for _, p := range pairs {
		headers = append(headers, weir.Header{Name: p[0], Value: p[1]})
	}
	return headers
}

// message is what the SDK hands the handler for a vector's message, with the README's
// defaults for the fields not given.
func message(t *testing.T, m vectorMessage) weir.Message {
	msg := weir.Message{
		Subject:         m.Subject,
		Payload:         bytesOf(t, m.Payload, m.PayloadHex),
		Headers:         headersOf(m.Headers),
		Stream:          "IN",
		StreamSeq:       m.StreamSeq,
		Partition:       m.Partition,
		DeliveryAttempt: 1,
	}
	publishedAt := uint64(1700000000000000000)
	if m.Stream != nil {
		msg.Stream = *m.Stream
	}
	if m.DeliveryAttempt != nil {
		msg.DeliveryAttempt = *m.DeliveryAttempt
	}
	if m.PublishedAt != nil {
		publishedAt = *m.PublishedAt
	}
	// As the SDK's exports make it from the wire's u64.
	msg.PublishedAt = time.Unix(0, int64(publishedAt))
	return msg
}

// outcomeText writes an outcome as the vectors do.
func outcomeText(o weir.Outcome) string {
	if o.IsAck() {
		return "ack"
	}
	if delay, hasDelay, ok := o.IsRetry(); ok {
		switch {
		case !hasDelay:
			return "retry"
		case delay%time.Millisecond == 0:
			return fmt.Sprintf("retry %dms", delay.Milliseconds())
		default:
			return fmt.Sprintf("retry %dns", delay.Nanoseconds())
		}
	}
	reason, _ := o.IsReject()
	return "reject " + reason
}

var levelNames = []string{"trace", "debug", "info", "warn", "error"}

// captureLogs runs f and returns the lines it logged, read back from the native stand-in's
// standard error, as [level, text].
func captureLogs(t *testing.T, f func()) [][2]string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	read := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		read <- b
	}()
	func() {
		defer func() { os.Stderr = stderr; w.Close() }()
		f()
	}()
	var logs [][2]string
	for _, line := range strings.Split(strings.TrimSuffix(string(<-read), "\n"), "\n") {
		if line == "" {
			continue
		}
		var level int
		var text string
		prefix, text, ok := strings.Cut(line, "): ")
		if _, err := fmt.Sscanf(prefix, "weir log (level %d", &level); !ok || err != nil || level >= len(levelNames) {
			t.Fatalf("not a log line of the native stand-in: %q", line)
		}
		logs = append(logs, [2]string{levelNames[level], text})
	}
	return logs
}

// recorded is one publish the handler made.
type recorded struct {
	subject string
	payload []byte
	headers []weir.Header
}

func TestInitVectors(t *testing.T) {
	for _, v := range loadVectors(t).Init {
		t.Run(v.Name, func(t *testing.T) {
			var err error
			logs := captureLogs(t, func() { _, err = setup(weir.NewConfig(v.Config...)) })
			if v.Expect.Refused != nil {
				if err == nil || err.Error() != *v.Expect.Refused {
					t.Errorf("refusal %v, want %q", err, *v.Expect.Refused)
				}
			} else if err != nil {
				t.Errorf("refused: %v", err)
			}
			if !slices.Equal(logs, v.Expect.Logs) {
				t.Errorf("logs %q, want %q", logs, v.Expect.Logs)
			}
		})
	}
}

func TestHandleVectors(t *testing.T) {
	table := loadVectors(t).Handle
	var guest *conformance
	captureLogs(t, func() {
		var err error
		if guest, err = newConformance(weir.NewConfig(table.Config...)); err != nil {
			t.Fatal(err)
		}
	})
	// One instance for the whole table, as the suite has, its publish replaced by a recorder.
	var outputs []recorded
	guest.publish = func(subject string, payload []byte, headers ...weir.Header) error {
		outputs = append(outputs, recorded{subject, slices.Clone(payload), slices.Clone(headers)})
		return nil
	}

	for _, v := range table.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			if v.Expect.Outcome == "output refused" {
				t.Skip("only the real host refuses a publish")
			}
			outputs = nil
			msg := message(t, v.Message)
			var outcome string
			logs := captureLogs(t, func() {
				defer func() {
					if recover() != nil {
						outcome = "trap"
					}
				}()
				outcome = outcomeText(guest.handle(msg))
			})
			if outcome != v.Expect.Outcome {
				t.Errorf("outcome %q, want %q", outcome, v.Expect.Outcome)
			}
			if outcome == "trap" {
				return // a trap's outputs and log lines are the host's to discard
			}
			if len(outputs) != len(v.Expect.Outputs) {
				t.Fatalf("%d outputs, want %d: %+v", len(outputs), len(v.Expect.Outputs), outputs)
			}
			for i, want := range v.Expect.Outputs {
				got := outputs[i]
				if got.subject != want.Subject {
					t.Errorf("output %d: subject %q, want %q", i, got.subject, want.Subject)
				}
				if payload := bytesOf(t, want.Payload, want.PayloadHex); string(got.payload) != string(payload) {
					t.Errorf("output %d: payload %q, want %q", i, got.payload, payload)
				}
				if headers := headersOf(want.Headers); !slices.Equal(got.headers, headers) {
					t.Errorf("output %d: headers %q, want %q", i, got.headers, headers)
				}
			}
			if !slices.Equal(logs, v.Expect.Logs) {
				t.Errorf("logs %q, want %q", logs, v.Expect.Logs)
			}
		})
	}
}

// A refused publish is rejected with "refused: " and the SDK's error text, word for word (an
// empty text included), though the host fails such a call whatever it answers.
func TestARefusedPublishIsRejectedWithTheSDKsText(t *testing.T) {
	for _, text := range []string{"subject elsewhere.x is not an allowed output", ""} {
		guest := &conformance{publish: func(string, []byte, ...weir.Header) error { return errors.New(text) }}
		for _, subject := range []string{"conformance.publish-to", "conformance.echo.x", "conformance.many", "conformance.describe"} {
			outcome := guest.handle(weir.Message{Subject: subject, Payload: []byte("1")})
			if reason, ok := outcome.IsReject(); !ok || reason != "refused: "+text {
				t.Errorf("%s refused with %q: %v", subject, text, outcome)
			}
		}
	}
}

// Without its publish field replaced, the guest publishes through the SDK, which natively has
// no host: the publish is refused with the SDK's text.
func TestNativelyTheSDKRefusesEveryPublish(t *testing.T) {
	var handler weir.Handler
	captureLogs(t, func() {
		var err error
		if handler, err = setup(weir.NewConfig()); err != nil {
			t.Fatal(err)
		}
	})
	outcome := handler(weir.Message{Subject: "conformance.publish-to", Payload: []byte("out.ok")})
	if reason, ok := outcome.IsReject(); !ok || !strings.HasPrefix(reason, "refused: weir: Publish needs the weir host") {
		t.Errorf("%v", outcome)
	}
}
