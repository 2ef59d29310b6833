package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: any input is accepted or rejected with an error; never a panic
// or a hang.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("..", "..", "config.example.yaml")); err == nil {
		f.Add(b)
	}
	f.Add([]byte(minimal))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("clients: [{<<: {name: a}}]\n"))
	f.Add([]byte("vault: {auth: {method: approle, approle: {role_id: r, secret_id_env: X}}}\n" + minimal))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, "fuzz.yaml")
		if err == nil && (c == nil || len(c.Clients) == 0) {
			t.Fatal("accepted a config without clients")
		}
	})
}
