package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretFileWarnings: a key file group or others may read is warned
// about, through a symbolic link too, naming its key; a 0600 or 0400 file
// and a missing one are not.
func TestSecretFileWarnings(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("k\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(file("wide", 0o666), link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"0644", file("a", 0o644), "is mode 0644"},
		{"0640", file("b", 0o640), "is mode 0640"},
		{"0666 behind a symlink", link, "(through a symbolic link) is mode 0666"},
		{"0600", file("c", 0o600), ""},
		{"0400", file("d", 0o400), ""},
		{"missing", filepath.Join(dir, "none"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(minimal+"affix:\n  api_key_file: "+tc.path+"\n"), "t.yaml")
			if err != nil {
				t.Fatal(err)
			}
			ws := c.SecretFileWarnings()
			switch {
			case tc.want == "" && len(ws) > 0:
				t.Fatalf("warned: %v", ws)
			case tc.want != "" && (len(ws) != 1 || !strings.Contains(ws[0].Error(), tc.want) || ws[0].Key != "affix.api_key_file"):
				t.Fatalf("warnings %v, want one for affix.api_key_file saying %q", ws, tc.want)
			}
		})
	}
}

// TestConfigSizeBound: a config file over MaxConfigSize is refused before
// it is parsed, with an error that says why.
func TestConfigSizeBound(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.yaml")
	big := minimal + "# " + strings.Repeat("x", MaxConfigSize) + "\n"
	if err := os.WriteFile(p, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), "larger than 4 MiB") {
		t.Fatalf("Load of a %d-byte file: %v", len(big), err)
	}
	ok := filepath.Join(t.TempDir(), "ok.yaml")
	if err := os.WriteFile(ok, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(ok); err != nil {
		t.Fatal(err)
	}
}
