package notify_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/notify"
)

// TestShortKeysRefused: a key shorter than 24 bytes once decoded is refused
// by ParseKey (which names the length) and by Verify, even with a request
// signed with that key; 24 bytes are accepted.
func TestShortKeysRefused(t *testing.T) {
	for _, n := range []int{1, 16, 23, 24} {
		raw := notify.KeyPrefix + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", n)))
		_, perr := notify.ParseKey(raw)
		// Sign with the key bytes directly: what a sender holding the short key would send.
		id, ts, body := "msg_1", time.Now(), []byte(`{"a":1}`)
		h := http.Header{}
		h.Set(notify.HeaderID, id)
		h.Set(notify.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
		h.Set(notify.HeaderSignature, sign([]byte(strings.Repeat("k", n)), id, ts, body))
		verr := notify.Verify(raw, h, body, ts, time.Minute)
		if n < notify.MinKeyBytes {
			if perr == nil || !strings.Contains(perr.Error(), "bytes once decoded") {
				t.Errorf("%d-byte key: ParseKey: %v", n, perr)
			}
			if !errors.Is(verr, notify.ErrShortKey) {
				t.Errorf("%d-byte key: Verify: %v", n, verr)
			}
			continue
		}
		if perr != nil || verr != nil {
			t.Errorf("%d-byte key: ParseKey %v, Verify %v", n, perr, verr)
		}
	}
}

// sign is the Standard Webhooks v1 signature, computed here with any key.
func sign(key []byte, id string, ts time.Time, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(ts.Unix(), 10) + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}
