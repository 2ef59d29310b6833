package secret

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func TestValueNeverPrints(t *testing.T) {
	s := New("hunter2-very-secret")
	type holder struct {
		S   Value
		Ptr *Value
	}
	h := holder{S: s, Ptr: &s}
	outs := []string{
		fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x %X %d", s, s, s, s, s, s, s, s),
		fmt.Sprintf("%v %+v %#v", h, h, h), s.String(), s.GoString(),
		fmt.Sprint(fmt.Errorf("wrapped: %w", fmt.Errorf("%v", s))),
	}
	j, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(j))
	for _, o := range outs {
		if strings.Contains(o, "hunter2") {
			t.Errorf("secret leaked in %q", o)
		}
	}
	if s.Reveal() != "hunter2-very-secret" {
		t.Fatalf("Reveal = %q", s.Reveal())
	}
}

func TestGenerate(t *testing.T) {
	shape := regexp.MustCompile(`^[0-9a-f]{8}(-[0-9a-f]{8}){3}$`)
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		v, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		if !shape.MatchString(v.Reveal()) {
			t.Fatalf("bad shape %q", v.Reveal())
		}
		if seen[v.Reveal()] {
			t.Fatalf("duplicate secret after %d draws", i)
		}
		seen[v.Reveal()] = true
	}
}
