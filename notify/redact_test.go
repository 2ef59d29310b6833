package notify_test

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/redact"
	"github.com/affix-rotator/affix-rotator/notify"
)

// TestPayloadsAreRedacted: an event whose data carries outside text
// echoing a secret (URL-encoded, base64) reaches the receiver redacted,
// and still signed.
func TestPayloadsAreRedacted(t *testing.T) {
	const key = "AFX+api/key=with&signs"
	rc := newReceiver(t, nil)
	n := newNotifier(t, nil, notify.Options{
		Endpoints: []notify.Endpoint{{Name: "r", URL: rc.srv.URL, Keys: keys(t)}},
		Redact:    redact.New(key).String,
	})
	last := "affix: 403; message: blocked key=" + url.QueryEscape(key) + " h=" + base64.StdEncoding.EncodeToString([]byte("Authorization: "+key))
	n.Send(notify.Message{Type: notify.EventRotationFailed, Time: time.Now(), Data: map[string]string{"last_error": last}})
	if err := flush(t, n, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	got := rc.received()
	if len(got) != 1 {
		t.Fatalf("received %d", len(got))
	}
	body := string(got[0].body)
	for _, f := range []string{key, url.QueryEscape(key), base64.StdEncoding.EncodeToString([]byte("Authorization: " + key))} {
		if strings.Contains(body, f) {
			t.Errorf("payload holds %q: %s", f, body)
		}
	}
	if !strings.Contains(body, "[REDACTED]") {
		t.Errorf("nothing redacted: %s", body)
	}
}
