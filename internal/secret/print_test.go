package secret_test

import (
	"testing"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/secret/secrettest"
)

// TestValueUnprintable: a Value, a pointer to one, a slice of them and
// structs holding them in unexported and exported fields print no byte of
// the secret through any printer; Equal and Reveal still work.
func TestValueUnprintable(t *testing.T) {
	const s = "hunter2-very-secret-value"
	v := secret.New(s)
	type inner struct{ v secret.Value }
	type holder struct {
		a  secret.Value
		B  secret.Value
		p  *secret.Value
		in inner
		l  []secret.Value
	}
	h := holder{a: v, B: v, p: &v, in: inner{v}, l: []secret.Value{v}}
	for name, x := range map[string]any{"Value": v, "*Value": &v, "[]Value": []secret.Value{v}, "holder": h, "*holder": &h} {
		secrettest.AssertNotPrinted(t, name, x, s)
	}
	if v.Reveal() != s || !v.Equal(secret.New(s)) || v.Equal(secret.New("other")) || v.IsZero() || !secret.New("").IsZero() {
		t.Fatal("Reveal, Equal or IsZero broken")
	}
}
