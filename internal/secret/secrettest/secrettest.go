// Package secrettest checks, for tests, that a value holding secrets
// prints none of them by any path a program could print it: every fmt
// verb (%p and %d included, with and without flags), JSON, YAML, gob, zap
// and slog. It looks for each secret raw and in the forms those printers
// give bytes (hex, decimal byte lists, base64, Go-quoted).
package secrettest

import (
	"bytes"
	"encoding/base64"
	"encoding/gob"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.yaml.in/yaml/v3"
)

// Verbs are the fmt formats every value is printed with.
var Verbs = []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%p", "%T %v", "%10.3v", "% x"}

// Outputs returns what each printer makes of v, keyed by printer name.
// A printer that refuses v (an error, a panic) gives its error text.
func Outputs(v any) map[string]string {
	out := map[string]string{}
	for _, verb := range Verbs {
		out["fmt "+verb] = fmt.Sprintf(verb, v)
	}
	out["fmt Sprint"] = fmt.Sprint(v)
	out["fmt Sprintln"] = fmt.Sprintln(v)
	try := func(name string, f func() (string, error)) {
		defer func() {
			if r := recover(); r != nil {
				out[name] = fmt.Sprint("panic: ", r)
			}
		}()
		s, err := f()
		if err != nil {
			s += " error: " + err.Error()
		}
		out[name] = s
	}
	try("json", func() (string, error) { b, err := json.Marshal(v); return string(b), err })
	try("yaml", func() (string, error) { b, err := yaml.Marshal(v); return string(b), err })
	try("gob", func() (string, error) {
		var b bytes.Buffer
		err := gob.NewEncoder(&b).Encode(v)
		return b.String(), err
	})
	try("zap", func() (string, error) {
		var b bytes.Buffer
		enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
		log := zap.New(zapcore.NewCore(enc, zapcore.AddSync(&b), zapcore.DebugLevel))
		log.Info("m", zap.Any("any", v), zap.Reflect("reflect", v), zap.String("sprint", fmt.Sprint(v)))
		return b.String(), nil
	})
	try("slog", func() (string, error) {
		var b bytes.Buffer
		slog.New(slog.NewJSONHandler(&b, nil)).Info("m", "v", v)
		slog.New(slog.NewTextHandler(&b, nil)).Info("m", "v", v)
		return b.String(), nil
	})
	return out
}

// Forms returns s as the printers above may render its bytes: raw, Go
// quoted, hex (both cases, with and without spaces), as a decimal byte
// list, and base64 (standard and URL, padded or not).
func Forms(s string) map[string]string {
	b := []byte(s)
	dec := make([]string, len(b))
	for i, c := range b {
		dec[i] = strconv.Itoa(int(c))
	}
	hx := hex.EncodeToString(b)
	spaced := make([]string, len(b))
	for i := range b {
		spaced[i] = hx[2*i : 2*i+2]
	}
	q := strconv.Quote(s)
	return map[string]string{
		"raw":        s,
		"quoted":     q[1 : len(q)-1],
		"hex":        hx,
		"HEX":        strings.ToUpper(hx),
		"hex spaced": strings.Join(spaced, " "),
		"decimal":    strings.Join(dec, " "),
		"decimal,":   strings.Join(dec, ", "),
		"base64":     base64.StdEncoding.EncodeToString(b),
		"base64raw":  base64.RawStdEncoding.EncodeToString(b),
		"base64url":  base64.RawURLEncoding.EncodeToString(b),
	}
}

// AssertNotPrinted fails t for every printer of v whose output holds one
// of secrets in one of its Forms. Secrets should be at least 8 bytes long,
// so that a match cannot be chance.
func AssertNotPrinted(t testing.TB, name string, v any, secrets ...string) {
	t.Helper()
	outs := Outputs(v)
	for _, s := range secrets {
		if len(s) < 8 {
			t.Fatalf("secrettest: secret %d bytes long: give at least 8", len(s))
		}
		for form, f := range Forms(s) {
			for printer, o := range outs {
				if strings.Contains(o, f) {
					t.Errorf("%s: %s prints a secret (%s form): %.300q", name, printer, form, o)
				}
			}
		}
	}
}
