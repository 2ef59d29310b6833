package notify

import (
	"context"
	"testing"

	"github.com/affix-rotator/affix-rotator/internal/secret/secrettest"
)

// TestNothingPrintsTheKeys walks the Notifier, its workers, its options
// and its keys through every printer: none shows a signing key's bytes.
func TestNothingPrintsTheKeys(t *testing.T) {
	const raw = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	keys, err := ParseKeys(raw)
	if err != nil {
		t.Fatal(err)
	}
	b, err := decodeKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	n := New(Options{Endpoints: []Endpoint{{Name: "n", URL: "https://hooks.example/x", Keys: keys}}})
	t.Cleanup(func() { _ = n.Close(context.Background()) })
	for name, v := range map[string]any{
		"Key": keys[0], "[]Key": keys, "*Notifier": n, "Notifier": struct{ n Notifier }{}, "worker": *n.workers[0],
		"*worker": n.workers[0], "Options": n.opt, "Endpoint": n.opt.Endpoints[0],
	} {
		secrettest.AssertNotPrinted(t, name, v, string(b), raw[len(KeyPrefix):])
	}
}
