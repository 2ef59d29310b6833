package notify_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/notify"
)

// The published Standard Webhooks test vector: standard-webhooks/standard-webhooks,
// libraries/go/webhook_test.go, TestWebhookSign (the same values are in the
// PHP, JavaScript and other libraries' tests).
const (
	vectorKey       = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorPayload   = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	// A well-formed v1 signature that is not the vector's (from the same
	// tests' "invalid signature" case).
	otherSignature = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
)

// TestSignMatchesTheStandardWebhooksVector: our signer reproduces the
// reference implementation's signature byte for byte, so any Standard
// Webhooks library verifies what we send.
func TestSignMatchesTheStandardWebhooksVector(t *testing.T) {
	keys, err := notify.ParseKeys(vectorKey)
	if err != nil {
		t.Fatal(err)
	}
	got := notify.Sign(keys, vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorPayload))
	if got != vectorSignature {
		t.Fatalf("signature %s, want %s", got, vectorSignature)
	}
	// Without the prefix the key is the same.
	keys2, err := notify.ParseKeys(strings.TrimPrefix(vectorKey, notify.KeyPrefix))
	if err != nil || notify.Sign(keys2, vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorPayload)) != vectorSignature {
		t.Fatalf("key without the whsec_ prefix: %v", err)
	}
}

func vectorHeader(sig string, ts int64) http.Header {
	h := http.Header{}
	h.Set(notify.HeaderID, vectorID)
	h.Set(notify.HeaderTimestamp, fmt.Sprint(ts))
	h.Set(notify.HeaderSignature, sig)
	return h
}

// TestVerifyVector: Verify accepts the published vector (at its own time)
// and refuses every alteration of it.
func TestVerifyVector(t *testing.T) {
	at := time.Unix(vectorTimestamp, 0)
	tol := 5 * time.Minute
	body := []byte(vectorPayload)
	cases := []struct {
		name   string
		secret string
		header http.Header
		body   []byte
		now    time.Time
		want   error
	}{
		{"the vector", vectorKey, vectorHeader(vectorSignature, vectorTimestamp), body, at, nil},
		{"without prefix", strings.TrimPrefix(vectorKey, "whsec_"), vectorHeader(vectorSignature, vectorTimestamp), body, at, nil},
		{"several signatures, one valid", vectorKey, vectorHeader(otherSignature+" v2,"+strings.TrimPrefix(otherSignature, "v1,")+" "+vectorSignature+" "+otherSignature, vectorTimestamp), body, at, nil},
		{"valid at the edge of the tolerance", vectorKey, vectorHeader(vectorSignature, vectorTimestamp), body, at.Add(tol), nil},
		{"wrong signature", vectorKey, vectorHeader(otherSignature, vectorTimestamp), body, at, notify.ErrNoMatch},
		{"right signature under another version", vectorKey, vectorHeader("v2,"+strings.TrimPrefix(vectorSignature, "v1,"), vectorTimestamp), body, at, notify.ErrNoMatch},
		{"body changed", vectorKey, vectorHeader(vectorSignature, vectorTimestamp), []byte(`{"test": 2432232315}`), at, notify.ErrNoMatch},
		{"body re-encoded", vectorKey, vectorHeader(vectorSignature, vectorTimestamp), []byte(`{"test":2432232314}`), at, notify.ErrNoMatch},
		{"timestamp changed (still fresh)", vectorKey, vectorHeader(vectorSignature, vectorTimestamp+1), body, at, notify.ErrNoMatch},
		{"other key", "whsec_" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", vectorHeader(vectorSignature, vectorTimestamp), body, at, notify.ErrNoMatch},
		{"stale", vectorKey, vectorHeader(vectorSignature, vectorTimestamp), body, at.Add(tol + time.Second), notify.ErrStale},
		{"from the future", vectorKey, vectorHeader(vectorSignature, vectorTimestamp), body, at.Add(-tol - time.Second), notify.ErrStale},
		{"today (replayed)", vectorKey, vectorHeader(vectorSignature, vectorTimestamp), body, time.Now(), notify.ErrStale},
		{"timestamp not a number", vectorKey, vectorHeader(vectorSignature, 0), body, at, notify.ErrBadTimestamp},
		{"no signature", vectorKey, vectorHeader("", vectorTimestamp), body, at, notify.ErrMissingHeader},
	}
	cases[13].header.Set(notify.HeaderTimestamp, "1614265330.5")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := notify.Verify(c.secret, c.header, c.body, c.now, tol)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("Verify: %v, want %v", err, c.want)
			}
		})
	}
	h := vectorHeader(vectorSignature, vectorTimestamp)
	h.Del(notify.HeaderID)
	if err := notify.Verify(vectorKey, h, body, at, tol); !errors.Is(err, notify.ErrMissingHeader) {
		t.Fatalf("no webhook-id: %v", err)
	}
	if err := notify.Verify("whsec_!!", vectorHeader(vectorSignature, vectorTimestamp), body, at, tol); err == nil {
		t.Fatal("a secret that is not base64 was accepted")
	}
}

// TestSignSeveralKeys: with two keys (a key being changed) both signatures
// are sent, and a receiver holding either verifies.
func TestSignSeveralKeys(t *testing.T) {
	other := "whsec_" + strings.Repeat("QUJD", 8) // 24 bytes
	keys, err := notify.ParseKeys(vectorKey + "  " + other)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(vectorTimestamp, 0)
	sig := notify.Sign(keys, vectorID, now, []byte(vectorPayload))
	if !strings.HasPrefix(sig, vectorSignature+" v1,") {
		t.Fatalf("signature header %q", sig)
	}
	for _, k := range []string{vectorKey, other} {
		if err := notify.Verify(k, vectorHeader(sig, vectorTimestamp), []byte(vectorPayload), now, 0); err != nil {
			t.Fatalf("verify with one of the keys: %v", err)
		}
	}
}

// TestParseKeyRefusesAndNeverQuotes: short, long and non-base64 keys are
// refused, and the message never holds the key.
func TestParseKeyRefusesAndNeverQuotes(t *testing.T) {
	for _, k := range []string{
		"whsec_c2hvcnQ=",                      // 5 bytes
		"whsec_" + strings.Repeat("QUJD", 30), // 90 bytes
		"whsec_not*base64*at*all*SECRETVALUE", // not base64
		"",
	} {
		_, err := notify.ParseKeys(k)
		if err == nil {
			t.Fatalf("key %q accepted", k)
		}
		if k != "" && strings.Contains(err.Error(), strings.TrimPrefix(k, "whsec_")) {
			t.Fatalf("the error quotes the key: %v", err)
		}
	}
	k, _ := notify.ParseKey(vectorKey)
	if s := fmt.Sprintf("%v %+v %#v %s", k, k, k, k); strings.Contains(s, "MfKQ") {
		t.Fatalf("a Key prints itself: %s", s)
	}
}
