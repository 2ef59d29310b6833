// Package secret holds credential values (client secrets, API keys) in a
// type that refuses to print itself. fmt verbs, zap fields, JSON and text
// marshalling all render "[REDACTED]"; the only way to the value is Reveal,
// which callers use exactly where the value must travel (the Vault record,
// the Affix request body, the Authorization header).
package secret

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// Redacted is what a Value prints as.
const Redacted = "[REDACTED]"

// Value is a secret string. Its zero value is empty.
type Value struct{ v string }

// New wraps s.
func New(s string) Value { return Value{v: s} }

// Reveal returns the secret itself. Use it only to send or store the value.
func (s Value) Reveal() string { return s.v }

// IsZero reports whether the value is empty.
func (s Value) IsZero() bool { return s.v == "" }

// Equal reports whether two values hold the same secret.
func (s Value) Equal(o Value) bool { return s.v == o.v }

// String implements fmt.Stringer without revealing the value.
func (s Value) String() string {
	if s.v == "" {
		return ""
	}
	return Redacted
}

// GoString implements fmt.GoStringer without revealing the value.
func (s Value) GoString() string { return "secret.Value(" + Redacted + ")" }

// Format implements fmt.Formatter so that every verb (%v %+v %#v %s %q %x)
// prints the redacted form.
func (s Value) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(s.GoString()))
		return
	}
	_, _ = f.Write([]byte(s.String()))
}

// MarshalText implements encoding.TextMarshaler (and so JSON and YAML)
// without revealing the value.
func (s Value) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Generate returns a new client secret from the operating system's CSPRNG in
// the shape Affix issues its own (four groups of eight lower-case hex digits,
// "ffffffff-ffffffff-ffffffff-ffffffff"): 128 bits of entropy, which meets
// RFC 6819 §5.1.4.2.2, in an alphabet every consumer can carry unquoted.
func Generate() (Value, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Value{}, fmt.Errorf("secret: read random bytes: %w", err)
	}
	h := hex.EncodeToString(b[:])
	return Value{v: h[0:8] + "-" + h[8:16] + "-" + h[16:24] + "-" + h[24:32]}, nil
}
