// Package redact removes secrets from text that came from outside (an
// Affix or Vault error, a proxy's or a WAF's error page, a network error)
// before it is logged, served on /status, written in a record's
// last_error or sent in a webhook. It finds each secret raw and in the
// forms such text carries it in: URL-encoded (query and path escaping,
// either case of hex), HTML-escaped (named and numeric entities),
// JSON-escaped, and base64 (standard and URL alphabets, padded or not, at
// any alignment within a longer base64 text).
package redact

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/affix-rotator/affix-rotator/internal/secret"
)

// MinEncoded is the shortest secret whose encoded forms (not the raw one)
// are looked for: the base64 of a shorter one is too short to be told from
// chance.
const MinEncoded = 6

// Forms returns the forms of s that Redact looks for, longest first (the
// empty string has none).
func Forms(s string) []string {
	if s == "" {
		return nil
	}
	forms := []string{s}
	if len(s) >= MinEncoded {
		forms = append(forms, encodings(s)...)
	}
	seen := map[string]bool{}
	out := forms[:0]
	for _, f := range forms {
		if f != "" && !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

var pctHex = regexp.MustCompile(`%[0-9A-F]{2}`)

func encodings(s string) []string {
	var out []string
	for _, e := range []string{url.QueryEscape(s), url.PathEscape(s)} {
		out = append(out, e, pctHex.ReplaceAllStringFunc(e, strings.ToLower))
	}
	out = append(out, html.EscapeString(s), template.HTMLEscapeString(s), entities(s, "&#%d;"), entities(s, "&#x%x;"), entities(s, "&#x%X;"))
	for _, escapeHTML := range []bool{true, false} {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(escapeHTML)
		if enc.Encode(s) == nil {
			j := strings.TrimSpace(b.String())
			out = append(out, j[1:len(j)-1])
		}
	}
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		out = append(out, base64Cores(enc, s)...)
	}
	return out
}

// entities writes every rune of s as a numeric character reference.
func entities(s, format string) string {
	var b strings.Builder
	for _, r := range s {
		fmt.Fprintf(&b, format, r)
	}
	return b.String()
}

// base64Cores returns, for each of the three alignments s may have within
// a longer encoded text, the characters of its encoding that depend on s
// alone: whatever surrounds s, its base64 holds one of them.
func base64Cores(enc *base64.Encoding, s string) []string {
	var out []string
	n := len(s)
	for k := 0; k < 3; k++ {
		buf := make([]byte, k+n+2)
		copy(buf[k:], s)
		e := enc.EncodeToString(buf)
		from, to := (8*k+5)/6, 8*(k+n)/6 // characters wholly inside s's bits
		if to-from >= 4 {
			out = append(out, e[from:to])
		}
	}
	return out
}

// Set is the secrets in play, and redacts them from text. Its methods are
// safe for concurrent use; the zero Set holds none.
type Set struct {
	// Min, when positive, is the shortest secret added: a set applied to
	// all of a process's output (its logs) would otherwise turn a test's
	// one-letter key into "[REDACTED]" in every word. Set it before Add.
	Min int

	mu    sync.RWMutex
	forms []string // longest first
}

// New returns a Set holding secrets.
func New(secrets ...string) *Set {
	s := &Set{}
	s.Add(secrets...)
	return s
}

// Add adds secrets (empty ones are ignored).
func (s *Set) Add(secrets ...string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range secrets {
		if len(v) >= s.Min {
			s.forms = append(s.forms, Forms(v)...)
		}
	}
	slices.SortStableFunc(s.forms, func(a, b string) int { return len(b) - len(a) })
	s.forms = slices.Compact(s.forms)
}

// AddValues adds the values' secrets.
func (s *Set) AddValues(values ...secret.Value) {
	for _, v := range values {
		s.Add(v.Reveal())
	}
}

// String replaces every form of every secret of the set in text by
// secret.Redacted. A nil Set returns text unchanged.
func (s *Set) String(text string) string {
	if s == nil {
		return text
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return replace(text, s.forms)
}

// String redacts secrets from text, as a Set of them would.
func String(text string, secrets ...string) string { return New(secrets...).String(text) }

// replace replaces the forms until none is left: a replacement can join
// text into a form already passed (a secret that holds "[REDACTED]").
func replace(text string, forms []string) string {
	for range 16 {
		prev := text
		for _, f := range forms {
			if strings.Contains(text, f) {
				text = strings.ReplaceAll(text, f, secret.Redacted)
			}
		}
		if text == prev {
			break
		}
	}
	return text
}

// Writer redacts every write to w: one write is one log entry, as zap
// writes them, so a secret is never split between two writes.
type Writer struct {
	W   interface{ Write([]byte) (int, error) }
	Set *Set
}

// Write writes p to the underlying writer, redacted; it reports len(p)
// on success, as callers expect.
func (w Writer) Write(p []byte) (int, error) {
	if _, err := w.W.Write([]byte(w.Set.String(string(p)))); err != nil {
		return 0, err
	}
	return len(p), nil
}
