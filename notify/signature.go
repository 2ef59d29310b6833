package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/secret"
)

// Standard Webhooks headers (https://www.standardwebhooks.com/).
const (
	HeaderID        = "webhook-id"        // the event's id: the same on every retry (an idempotency key)
	HeaderTimestamp = "webhook-timestamp" // unix seconds of this attempt
	HeaderSignature = "webhook-signature" // space-separated "v1,<base64 HMAC-SHA256>"
)

// KeyPrefix starts a Standard Webhooks symmetric signing key: "whsec_"
// followed by the key's bytes in standard base64.
const KeyPrefix = "whsec_"

// Key lengths the sender accepts, in bytes once decoded (the specification
// asks for at least 24).
const (
	MinKeyBytes = 24
	MaxKeyBytes = 64
)

// DefaultTolerance is how far a webhook-timestamp may be from the
// verifier's clock when Verify is given no tolerance.
const DefaultTolerance = 5 * time.Minute

// Errors of Verify. They never hold a key or a signature.
var (
	ErrMissingHeader = errors.New("webhook: missing webhook-id, webhook-timestamp or webhook-signature header")
	ErrBadTimestamp  = errors.New("webhook: webhook-timestamp is not a unix time in seconds")
	ErrStale         = errors.New("webhook: webhook-timestamp is too far from now (a replay, or a clock off)")
	ErrNoMatch       = errors.New("webhook: no signature matches")
	// ErrShortKey: the verifier's own key is shorter than MinKeyBytes (or
	// longer than MaxKeyBytes): a guessable key proves nothing.
	ErrShortKey = errors.New("webhook: the signing key is not 24 to 64 bytes once decoded")
)

// Key is an HMAC-SHA256 signing key. It prints as [REDACTED] by every
// path (fmt verbs, reflection through an unexported field, JSON, YAML,
// text, gob, zap, slog): its bytes are kept in a secret.Value.
type Key struct{ v secret.Value }

// bytes returns the key itself, for signing.
func (k Key) bytes() []byte { return []byte(k.v.Reveal()) }

// Reveal returns the key's bytes. Use it only to sign, or to tell a
// redactor what to remove.
func (k Key) Reveal() []byte { return k.bytes() }

// String implements fmt.Stringer without revealing the key.
func (Key) String() string { return secret.Redacted }

// GoString implements fmt.GoStringer without revealing the key.
func (Key) GoString() string { return "notify.Key(" + secret.Redacted + ")" }

// Format implements fmt.Formatter: every verb prints the redacted form.
func (k Key) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(k.GoString()))
		return
	}
	_, _ = f.Write([]byte(k.String()))
}

// LogValue implements slog.LogValuer without revealing the key.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

// MarshalText implements encoding.TextMarshaler without revealing the key.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// MarshalJSON implements json.Marshaler without revealing the key.
func (k Key) MarshalJSON() ([]byte, error) { return []byte(`"` + k.String() + `"`), nil }

// MarshalYAML implements yaml.Marshaler without revealing the key.
func (k Key) MarshalYAML() (any, error) { return k.String(), nil }

// GobEncode implements gob.GobEncoder without revealing the key.
func (k Key) GobEncode() ([]byte, error) { return []byte(k.String()), nil }

// ParseKey decodes a signing key written the Standard Webhooks way,
// "whsec_" + base64 (the prefix may be left out), and checks its length
// (MinKeyBytes to MaxKeyBytes). Its errors never quote the key.
func ParseKey(s string) (Key, error) {
	b, err := decodeKey(s)
	if err != nil {
		return Key{}, err
	}
	if len(b) < MinKeyBytes || len(b) > MaxKeyBytes {
		return Key{}, fmt.Errorf("the key is %d bytes once decoded; give %d to %d random bytes, e.g. `echo %s$(head -c 32 /dev/urandom | base64)`", len(b), MinKeyBytes, MaxKeyBytes, KeyPrefix)
	}
	return Key{v: secret.New(string(b))}, nil
}

// ParseKeys parses one or more keys separated by spaces (several while a
// key is being changed: each signs every webhook, and a receiver accepts
// any of the signatures).
func ParseKeys(s string) ([]Key, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return nil, errors.New("no key: give " + KeyPrefix + "<base64>")
	}
	keys := make([]Key, 0, len(fields))
	for i, f := range fields {
		k, err := ParseKey(f)
		if err != nil {
			if len(fields) > 1 {
				return nil, fmt.Errorf("key %d of %d: %w", i+1, len(fields), err)
			}
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func decodeKey(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, KeyPrefix))
	if err != nil || len(b) == 0 {
		// The base64 error names a byte offset only, but say nothing of
		// the value at all.
		return nil, fmt.Errorf("not a Standard Webhooks key: expected %s followed by standard base64", KeyPrefix)
	}
	return b, nil
}

// signature returns "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>".
func signature(key []byte, id, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Sign returns the webhook-signature header value for body sent with id at
// ts: one "v1,…" signature per key, separated by spaces.
func Sign(keys []Key, id string, ts time.Time, body []byte) string {
	t := strconv.FormatInt(ts.Unix(), 10)
	sigs := make([]string, len(keys))
	for i, k := range keys {
		sigs[i] = signature(k.bytes(), id, t, body)
	}
	return strings.Join(sigs, " ")
}

// Verify checks a webhook the Standard Webhooks way, for consumers of
// affix-rotator's notifications (and its tests): secret is the signing key
// ("whsec_" + base64, the prefix optional), header the request's headers,
// body the raw request body, exactly as received (not re-encoded JSON).
// A secret of fewer than MinKeyBytes (or more than MaxKeyBytes) bytes once
// decoded is refused (ErrShortKey): a short key is guessable.
// The webhook-timestamp must be within tolerance of now, either way
// (DefaultTolerance when tolerance <= 0), so that a captured request
// cannot be replayed later; and one of the space-separated signatures of
// webhook-signature must be a v1 signature made with secret (compared in
// constant time; signatures of other versions are skipped). Deduplicate on
// the webhook-id header: a retried or repeated event keeps its id.
func Verify(secret string, header http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := decodeKey(secret)
	if err != nil {
		return fmt.Errorf("webhook: secret: %w", err)
	}
	if len(key) < MinKeyBytes || len(key) > MaxKeyBytes {
		return fmt.Errorf("%w (it is %d)", ErrShortKey, len(key))
	}
	id, ts, sigs := header.Get(HeaderID), header.Get(HeaderTimestamp), header.Get(HeaderSignature)
	if id == "" || ts == "" || sigs == "" {
		return ErrMissingHeader
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrBadTimestamp
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	want := []byte(signature(key, id, ts, body))
	for _, s := range strings.Fields(sigs) {
		if !strings.HasPrefix(s, "v1,") {
			continue
		}
		if hmac.Equal([]byte(s), want) {
			return nil
		}
	}
	return ErrNoMatch
}
