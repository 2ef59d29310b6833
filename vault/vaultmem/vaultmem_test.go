package vaultmem_test

import (
	"testing"

	"github.com/affix-rotator/affix-rotator/vault/storetest"
	"github.com/affix-rotator/affix-rotator/vault/vaultmem"
)

func TestContract(t *testing.T) {
	s := vaultmem.New("secret")
	n := 0
	storetest.Run(t, storetest.Backend{
		Store: s,
		Put: func(t *testing.T, path string, data map[string]any) {
			if _, err := s.Put(path, data, -1); err != nil {
				t.Fatal(err)
			}
		},
		Delete:         func(_ *testing.T, path string) { s.Delete(path) },
		DeleteVersions: func(_ *testing.T, path string, versions ...int) { s.DeleteVersions(path, versions...) },
		Destroy:        func(_ *testing.T, path string, versions ...int) { s.Destroy(path, versions...) },
		SetMaxVersions: func(_ *testing.T, path string, n int) { s.SetMaxVersions(path, n) },
		Path:           func(*testing.T) string { n++; return "p" + string(rune('a'+n%26)) + string(rune('a'+n/26)) },
	})
}

func TestLatest(t *testing.T) {
	s := vaultmem.New("secret")
	if d, v, del := s.Latest("p"); d != nil || v != 0 || del {
		t.Fatalf("empty path: %v %d %v", d, v, del)
	}
	if _, err := s.Put("p", map[string]any{"client_secret": "a"}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put("p", map[string]any{"client_secret": "b"}, 1); err != nil {
		t.Fatal(err)
	}
	d, v, del := s.Latest("p")
	if d["client_secret"] != "b" || v != 2 || del {
		t.Fatalf("got version %d deleted %v", v, del)
	}
	d["client_secret"] = "x" // a copy
	s.Delete("p")
	if d, v, del := s.Latest("p"); d != nil || v != 2 || !del {
		t.Fatalf("after delete: version %d deleted %v", v, del)
	}
}
