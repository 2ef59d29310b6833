// Package secret holds credential values (client secrets, API keys, tokens)
// in a type that cannot print itself by any path. fmt verbs (%p and %d
// included), zap fields, slog attributes, JSON, YAML, text and gob all
// render "[REDACTED]"; the only way to the value is Reveal, which callers
// use exactly where the value must travel (the Vault record, the Affix
// request body, the Authorization header).
//
// A Value sits in many unexported struct fields, which fmt prints by
// reflection without calling the field's methods. So a Value does not hold
// its bytes directly: it holds a pointer (printed as an address), and the
// bytes behind it are XOR-masked with a pad drawn at start from the
// operating system's CSPRNG, so that even a printer that follows the
// pointer shows only masked bytes.
package secret

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
)

// Redacted is what a Value prints as.
const Redacted = "[REDACTED]"

// pad masks every Value's bytes (cycled). It is the same for every Value
// of the process, so that equal secrets are equal under reflect.DeepEqual.
var pad = func() [64]byte {
	var p [64]byte
	if _, err := rand.Read(p[:]); err != nil {
		panic("secret: read random bytes for the mask: " + err.Error())
	}
	return p
}()

// sealed holds the masked bytes of a Value.
type sealed struct{ masked []byte }

// Value is a secret string. Its zero value is empty.
type Value struct{ p *sealed }

func mask(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = c ^ pad[i%len(pad)]
	}
	return out
}

// New wraps s.
func New(s string) Value {
	if s == "" {
		return Value{}
	}
	return Value{p: &sealed{masked: mask([]byte(s))}}
}

// Reveal returns the secret itself. Use it only to send or store the value.
func (s Value) Reveal() string {
	if s.p == nil {
		return ""
	}
	return string(mask(s.p.masked))
}

// IsZero reports whether the value is empty.
func (s Value) IsZero() bool { return s.p == nil || len(s.p.masked) == 0 }

// Equal reports whether two values hold the same secret (in constant time
// for values of the same length).
func (s Value) Equal(o Value) bool {
	return subtle.ConstantTimeCompare([]byte(s.Reveal()), []byte(o.Reveal())) == 1
}

// String implements fmt.Stringer without revealing the value: "" for the
// zero value, Redacted otherwise.
func (s Value) String() string {
	if s.IsZero() {
		return ""
	}
	return Redacted
}

// GoString implements fmt.GoStringer without revealing the value.
func (s Value) GoString() string { return "secret.Value(" + Redacted + ")" }

// Format implements fmt.Formatter so that every verb (%v %+v %#v %s %q %x
// %d …) prints the redacted form. (%p never reaches a Formatter; fmt then
// prints the Value's pointer, an address.)
func (s Value) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(s.GoString()))
		return
	}
	_, _ = f.Write([]byte(s.String()))
}

// LogValue implements slog.LogValuer without revealing the value.
func (s Value) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText implements encoding.TextMarshaler without revealing the
// value.
func (s Value) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalJSON implements json.Marshaler without revealing the value.
func (s Value) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// MarshalYAML implements yaml.Marshaler without revealing the value.
func (s Value) MarshalYAML() (any, error) { return s.String(), nil }

// GobEncode implements gob.GobEncoder without revealing the value: a Value
// travels in gob as its redacted form, as in JSON.
func (s Value) GobEncode() ([]byte, error) { return []byte(s.String()), nil }

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
	return New(h[0:8] + "-" + h[8:16] + "-" + h[16:24] + "-" + h[24:32]), nil
}
